//! The faults, at random moments of the workload (a seeded plan: each fault fires once the given
//! share of dossiers is done): SIGKILL of each service then a restart, a restart of nats-server
//! (killed, store kept), a restart of PostgreSQL, the SMTP sink down for a while. The SMTP outage
//! runs alongside the other faults.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mst_e2e::processes::{ProcessStack, SERVICES};
use mst_testkit::Postgres;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::Mutex;

use crate::Profile;
use crate::workload::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Kill(&'static str),
    Nats,
    Postgres,
    Smtp,
}

/// When (share of the dossiers done) each fault fires, in order.
pub fn plan(profile: &Profile) -> Vec<(f64, Fault)> {
    let mut rng = StdRng::seed_from_u64(profile.seed);
    // A round per 2 500 dossiers: the full run kills every service four times.
    let rounds = (profile.dossiers / 2500).max(1);
    let mut plan: Vec<(f64, Fault)> = Vec::new();
    for _ in 0..rounds {
        for name in SERVICES {
            plan.push((rng.random_range(0.03..0.9), Fault::Kill(name)));
        }
        plan.push((rng.random_range(0.03..0.9), Fault::Nats));
        plan.push((rng.random_range(0.03..0.9), Fault::Postgres));
    }
    // One SMTP outage (it lasts a minute: it starts early enough to end within the run).
    plan.push((rng.random_range(0.05..0.4), Fault::Smtp));
    plan.sort_by(|a, b| a.0.total_cmp(&b.0));
    plan
}

/// One injected fault: when it started and how long it lasted.
#[derive(Debug, Clone)]
pub struct Injected {
    pub at: Duration,
    pub what: String,
    pub lasted: Duration,
}

async fn reached(progress: &Progress, total: usize, share: f64) {
    let target = (share * total as f64).ceil() as usize;
    while progress.done.load(Ordering::Relaxed) < target
        && !progress.finished.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the plan against the stack; returns what was done, in order.
pub async fn inject(
    profile: &Profile,
    plan: Vec<(f64, Fault)>,
    stack: &Mutex<ProcessStack>,
    pg: &Postgres,
    progress: &Progress,
    started: Instant,
) -> anyhow::Result<Vec<Injected>> {
    let mut rng = StdRng::seed_from_u64(profile.seed.rotate_left(17));
    let (smtp, others): (Vec<_>, Vec<_>) = plan.into_iter().partition(|(_, f)| *f == Fault::Smtp);
    let smtp_outage = async {
        let mut done = Vec::new();
        for (share, _) in smtp {
            reached(progress, profile.dossiers, share).await;
            let at = started.elapsed();
            stack.lock().await.smtp.stop().await?;
            tokio::time::sleep(profile.smtp_outage).await;
            stack.lock().await.smtp.start_again().await?;
            done.push(Injected {
                at,
                what: "SMTP sink down".into(),
                lasted: started.elapsed() - at,
            });
        }
        anyhow::Ok(done)
    };
    let sequence = async {
        let mut done = Vec::new();
        for (share, fault) in others {
            reached(progress, profile.dossiers, share).await;
            let down = Duration::from_millis(rng.random_range(200..3000));
            let at = started.elapsed();
            let what = match fault {
                Fault::Kill(name) => {
                    let mut s = stack.lock().await;
                    s.kill(name).await?;
                    tokio::time::sleep(down).await;
                    s.restart(name).await?;
                    format!("kill -9 {name}, restarted")
                }
                Fault::Nats => {
                    let mut s = stack.lock().await;
                    s.nats.stop().await?;
                    tokio::time::sleep(down).await;
                    s.nats.start_again().await?;
                    "nats-server killed, restarted".to_owned()
                }
                Fault::Postgres => {
                    pg.stop().await?;
                    tokio::time::sleep(down).await;
                    pg.start_again().await?;
                    "PostgreSQL stopped, restarted".to_owned()
                }
                Fault::Smtp => unreachable!("the SMTP outage runs on its own"),
            };
            println!("chaos: {:>7.1} s  {what}", at.as_secs_f64());
            done.push(Injected {
                at,
                what,
                lasted: started.elapsed() - at,
            });
        }
        anyhow::Ok(done)
    };
    let (smtp, mut done) = tokio::try_join!(smtp_outage, sequence)?;
    done.extend(smtp);
    done.sort_by_key(|i| i.at);
    Ok(done)
}
