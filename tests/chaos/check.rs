//! The end of a run: wait (bounded) until the stack is quiet, then check every invariant from the
//! outside — forms, instruction, messagerie and oscars over gRPC, the event stream and the
//! consumers over JetStream, the emails in the SMTP sink — and count.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use mst_e2e::Services as _;
use mst_e2e::processes::{ProcessStack, SERVICES};
use mst_e2e::support::{INSTRUCTEUR, admin, as_, promoteur};
use mst_kit::auth::Role;
use mst_proto::Event as _;
use mst_proto::events as ev;
use mst_proto::forms as fpb;
use mst_proto::instruction as ipb;
use mst_proto::messagerie as mpb;
use mst_proto::oscars as opb;

use crate::Profile;
use crate::faults::Injected;
use crate::workload::{Clients, Outcome, Progress, Urls, row_value};
use std::sync::atomic::Ordering;

/// What the final check found.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub dossiers: usize,
    pub saves_checked: usize,
    pub traitements: usize,
    pub status_events: usize,
    pub events_published_twice: usize,
    pub status_emails: usize,
    pub emails_received: usize,
    pub distinct_message_ids: usize,
    pub resent_same_message_id: usize,
    pub deliveries: usize,
    pub thread_entries: usize,
    pub accepted: usize,
    pub fiches_live: usize,
    pub fiches_withdrawn: usize,
    pub consumers: Vec<(String, u64, usize)>,
    pub dead_letters: u64,
    pub final_status: BTreeMap<String, usize>,
}

/// Polls until the consumers are drained and no email waits, then checks; repeats while the check
/// finds problems, until `profile.quiesce` has passed. Returns the last report and how long it
/// took to be quiet.
pub async fn until_quiet(
    profile: &Profile,
    stack: &ProcessStack,
    urls: &Urls,
    outcome: &Outcome,
) -> (Report, Duration) {
    let start = Instant::now();
    let clients = Clients::new(urls);
    loop {
        let over = start.elapsed() > profile.quiesce;
        if over || quiet(urls, &clients).await.unwrap_or(false) {
            let report = match check(stack, urls, &clients, outcome).await {
                Ok(r) => r,
                Err(e) => Report {
                    problems: vec![format!("the check could not run: {e:#}")],
                    ..Report::default()
                },
            };
            if report.problems.is_empty() || over {
                return (report, start.elapsed());
            }
            println!(
                "chaos: not settled yet after {:.0} s ({} problem(s), first: {})",
                start.elapsed().as_secs_f64(),
                report.problems.len(),
                report.problems[0]
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn jetstream(urls: &Urls) -> anyhow::Result<async_nats::jetstream::Context> {
    let client = async_nats::connect(urls.nats_url()).await?;
    Ok(async_nats::jetstream::new(client))
}

/// Every durable consumer of the event stream: (name, num_pending, num_ack_pending).
async fn consumers(urls: &Urls) -> anyhow::Result<Vec<(String, u64, usize)>> {
    let js = jetstream(urls).await?;
    let stream = js.get_stream(urls.prefix().to_uppercase()).await?;
    let infos: Vec<_> = stream.consumers().try_collect().await?;
    Ok(infos
        .into_iter()
        .filter(|i| i.config.durable_name.is_some())
        .map(|i| (i.name, i.num_pending, i.num_ack_pending))
        .collect())
}

async fn quiet(urls: &Urls, clients: &Clients) -> anyhow::Result<bool> {
    let drained = consumers(urls)
        .await?
        .iter()
        .all(|(_, pending, acks)| *pending == 0 && *acks == 0);
    let queued = clients
        .messagerie
        .clone()
        .list_deliveries(admin(mpb::ListDeliveriesRequest {
            statuses: vec![mpb::DeliveryStatus::Queued as i32],
            page_size: 1,
            ..Default::default()
        }))
        .await?
        .into_inner()
        .deliveries;
    Ok(drained && queued.is_empty())
}

/// Every `DossierStatusChanged` on the stream, read by an ephemeral consumer of the test.
async fn status_events(urls: &Urls) -> anyhow::Result<Vec<ev::DossierStatusChanged>> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let js = jetstream(urls).await?;
    let stream = js.get_stream(urls.prefix().to_uppercase()).await?;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            filter_subject: mst_bus::subjects::full(
                urls.prefix(),
                ev::DossierStatusChanged::SUBJECT,
            ),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await?;
    // Its pending count at creation is how many there are.
    let total = usize::try_from(consumer.info().await?.num_pending)?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await?;
    let mut out = Vec::new();
    while out.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| anyhow::anyhow!("reading the status events: {} of {total}", out.len()))?
            .ok_or_else(|| anyhow::anyhow!("the status events ended early"))??;
        out.push(prost::Message::decode(m.payload.as_ref())?);
    }
    Ok(out)
}

/// Every item of a paged list: `page(token)` answers one page's items and the next token
/// (empty after the last page).
async fn all_pages<T, F, Fut>(mut page: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = page(token).await?;
        out.extend(items);
        if next.is_empty() {
            return Ok(out);
        }
        token = next;
    }
}

async fn all_deliveries(clients: &Clients) -> anyhow::Result<Vec<mpb::Delivery>> {
    all_pages(|page_token| {
        let mut c = clients.messagerie.clone();
        async move {
            let page = c
                .list_deliveries(admin(mpb::ListDeliveriesRequest {
                    page_size: 500,
                    page_token,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            Ok((page.deliveries, page.next_page_token))
        }
    })
    .await
}

async fn all_fiches(clients: &Clients) -> anyhow::Result<Vec<ev::Fiche>> {
    all_pages(|page_token| {
        let mut c = clients.oscars.clone();
        async move {
            let page = c
                .list_work_queue(admin(opb::ListWorkQueueRequest {
                    filter: Some(opb::WorkQueueFilter {
                        statuses: vec![
                            ev::FicheStatus::Importe as i32,
                            ev::FicheStatus::EnCours as i32,
                            ev::FicheStatus::Visible as i32,
                            ev::FicheStatus::Retiree as i32,
                        ],
                        region_code: "93".into(),
                        ..Default::default()
                    }),
                    page_size: 500,
                    page_token,
                }))
                .await?
                .into_inner();
            Ok((page.fiches, page.next_page_token))
        }
    })
    .await
}

async fn thread(
    clients: &Clients,
    owner: &str,
    number: i64,
) -> anyhow::Result<Vec<mpb::ThreadEntry>> {
    all_pages(|page_token| {
        let mut c = clients.messagerie.clone();
        let request = promoteur(
            owner,
            mpb::ListMessagesRequest {
                number,
                page_size: 100,
                page_token,
            },
        );
        async move {
            let page = c.list_messages(request).await?.into_inner();
            Ok((page.entries, page.next_page_token))
        }
    })
    .await
}

/// What one dossier looks like at the end, read from three services.
struct Seen {
    number: i64,
    owner: String,
    forms: fpb::Dossier,
    instruction: ipb::Dossier,
    thread: Vec<mpb::ThreadEntry>,
}

async fn check(
    stack: &ProcessStack,
    urls: &Urls,
    clients: &Clients,
    outcome: &Outcome,
) -> anyhow::Result<Report> {
    let mut r = Report {
        dossiers: outcome.numbers.len(),
        ..Report::default()
    };
    let p = &mut r.problems;

    // Per dossier: the content (forms), the status and its history (instruction), the thread.
    let seen: Vec<anyhow::Result<Seen>> = futures::stream::iter(outcome.numbers.iter().cloned())
        .map(|(number, owner)| {
            let c = clients.clone();
            async move {
                let forms = c
                    .forms
                    .clone()
                    .get_dossier(promoteur(&owner, fpb::GetDossierRequest { number }))
                    .await?
                    .into_inner()
                    .dossier
                    .ok_or_else(|| anyhow::anyhow!("no forms dossier {number}"))?;
                let instruction = c
                    .instruction
                    .clone()
                    .get_dossier(as_(
                        INSTRUCTEUR,
                        &[Role::Instructeur],
                        ipb::GetDossierRequest { number },
                    ))
                    .await?
                    .into_inner()
                    .dossier
                    .ok_or_else(|| anyhow::anyhow!("no instruction dossier {number}"))?;
                let thread = thread(&c, &owner, number).await?;
                anyhow::Ok(Seen {
                    number,
                    owner,
                    forms,
                    instruction,
                    thread,
                })
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let seen: Vec<Seen> = seen.into_iter().collect::<anyhow::Result<_>>()?;
    let by_number: HashMap<i64, &Seen> = seen.iter().map(|s| (s.number, s)).collect();

    // I2: every acknowledged autosave is there, with its value.
    for save in &outcome.saves {
        r.saves_checked += 1;
        let Some(s) = by_number.get(&save.number) else {
            p.push(format!("I2: dossier {} not read", save.number));
            continue;
        };
        debug_assert_eq!(s.owner, save.owner);
        if s.forms.version < save.version {
            p.push(format!(
                "I2: dossier {} is at version {} below the acknowledged {}",
                save.number, s.forms.version, save.version
            ));
        }
        if row_value(&s.forms, &save.row_id).as_deref() != Some(save.value.as_str()) {
            p.push(format!(
                "I2: dossier {}: the acknowledged save of row {} is lost",
                save.number, save.row_id
            ));
        }
    }

    // Status changes: instruction's history against the events on the stream.
    let events = status_events(urls).await?;
    let mut by_event: HashMap<String, &ev::DossierStatusChanged> = HashMap::new();
    let mut events_of: HashMap<i64, Vec<&ev::DossierStatusChanged>> = HashMap::new();
    for e in &events {
        let id = e
            .metadata
            .as_ref()
            .map(|m| m.event_id.clone())
            .unwrap_or_default();
        if by_event.insert(id, e).is_some() {
            r.events_published_twice += 1;
            continue;
        }
        events_of.entry(e.number).or_default().push(e);
    }
    r.status_events = by_event.len();
    for s in &seen {
        *r.final_status
            .entry(format!("{:?}", s.instruction.status()))
            .or_default() += 1;
        r.traitements += s.instruction.traitements.len();
        let mut committed: Vec<i64> = s
            .instruction
            .traitements
            .iter()
            .map(|t| t.status_version)
            .collect();
        committed.sort_unstable();
        let mut published: Vec<i64> = events_of
            .get(&s.number)
            .map(|es| es.iter().map(|e| e.status_version).collect())
            .unwrap_or_default();
        published.sort_unstable();
        if committed != published {
            p.push(format!(
                "dossier {}: status versions committed {committed:?}, published {published:?}",
                s.number
            ));
        }
    }

    // Emails: one delivery per (status event, recipient), sent, received under its Message-ID.
    let deliveries = all_deliveries(clients).await?;
    r.deliveries = deliveries.len();
    let mut per_event_recipient: HashMap<(String, String), Vec<&mpb::Delivery>> = HashMap::new();
    for d in &deliveries {
        if d.status() != mpb::DeliveryStatus::Sent {
            p.push(format!(
                "delivery {} to {} ({}) is {:?} after {} attempt(s): {}",
                d.id,
                d.recipient,
                d.template,
                d.status(),
                d.attempts,
                d.last_error
            ));
        }
        for source in &d.source_event_ids {
            per_event_recipient
                .entry((source.clone(), d.recipient.to_lowercase()))
                .or_default()
                .push(d);
        }
    }
    let received = stack.smtp.messages().await?;
    r.emails_received = received.len();
    let mut in_sink: HashMap<String, usize> = HashMap::new();
    for m in &received {
        let id = m
            .header("Message-ID")
            .unwrap_or_default()
            .trim_matches(['<', '>'])
            .to_owned();
        *in_sink.entry(id).or_default() += 1;
    }
    r.distinct_message_ids = in_sink.len();
    r.resent_same_message_id = in_sink.values().map(|n| n - 1).sum();
    let known: HashSet<&str> = deliveries.iter().map(|d| d.message_id.as_str()).collect();
    for id in in_sink.keys() {
        if !known.contains(id.as_str()) {
            p.push(format!("an email with Message-ID {id} matches no delivery"));
        }
    }
    for d in &deliveries {
        if d.status() == mpb::DeliveryStatus::Sent && !in_sink.contains_key(&d.message_id) {
            p.push(format!(
                "delivery {} ({} to {}) is sent but the sink never received it",
                d.id, d.template, d.recipient
            ));
        }
    }
    for s in &seen {
        let Some(es) = events_of.get(&s.number) else {
            continue;
        };
        let mut automatic: HashMap<&str, usize> = HashMap::new();
        for entry in &s.thread {
            if let Some(mpb::thread_entry::Content::AutomaticEmail(a)) = &entry.content {
                *automatic.entry(a.source_event_id.as_str()).or_default() += 1;
            }
        }
        for e in es {
            let id = e
                .metadata
                .as_ref()
                .map(|m| m.event_id.as_str())
                .unwrap_or_default();
            let recipients: HashSet<String> = std::iter::once(e.owner_email.to_lowercase())
                .chain(e.invitee_emails.iter().map(|i| i.to_lowercase()))
                .collect();
            for to in recipients {
                match per_event_recipient
                    .get(&(id.to_owned(), to.clone()))
                    .map(Vec::as_slice)
                {
                    Some([_one]) => r.status_emails += 1,
                    None | Some([]) => p.push(format!(
                        "dossier {} status version {}: no email to {to}",
                        s.number, e.status_version
                    )),
                    Some(many) => p.push(format!(
                        "dossier {} status version {}: {} emails to {to}",
                        s.number,
                        e.status_version,
                        many.len()
                    )),
                }
            }
            match automatic.get(id).copied().unwrap_or(0) {
                1 => r.thread_entries += 1,
                n => p.push(format!(
                    "dossier {} status version {}: {n} thread entries",
                    s.number, e.status_version
                )),
            }
        }
    }

    // I3 fiches: one per accepted dossier; none live for the others.
    let fiches = all_fiches(clients).await?;
    let mut fiches_of: HashMap<i64, Vec<&ev::Fiche>> = HashMap::new();
    for f in &fiches {
        fiches_of.entry(f.dossier_number).or_default().push(f);
    }
    for s in &seen {
        let fs = fiches_of.get(&s.number).map(Vec::as_slice).unwrap_or(&[]);
        let accepted = s.instruction.status() == ev::DossierStatus::Accepte;
        if accepted {
            r.accepted += 1;
        }
        match (accepted, fs) {
            (true, [f]) if f.status() != ev::FicheStatus::Retiree => r.fiches_live += 1,
            (false, []) => {}
            (false, [f]) if f.status() == ev::FicheStatus::Retiree => r.fiches_withdrawn += 1,
            (_, fs) => p.push(format!(
                "dossier {} ({:?}): fiches {:?}",
                s.number,
                s.instruction.status(),
                fs.iter().map(|f| f.status()).collect::<Vec<_>>()
            )),
        }
    }

    // Consumers and the dead-letter stream.
    r.consumers = consumers(urls).await?;
    for (name, pending, acks) in &r.consumers {
        if *pending != 0 || *acks != 0 {
            p.push(format!(
                "consumer {name}: {pending} pending, {acks} unacknowledged"
            ));
        }
    }
    let js = jetstream(urls).await?;
    let mut dead = js
        .get_stream(format!("{}_DEADLETTER", urls.prefix().to_uppercase()))
        .await?;
    r.dead_letters = dead.info().await?.state.messages;
    if r.dead_letters != 0 {
        p.push(format!("{} dead-lettered event(s)", r.dead_letters));
    }
    Ok(r)
}

/// How long the run took.
pub struct Timing {
    /// The workload (with the faults).
    pub workload: Duration,
    /// From the end of the workload to a clean check.
    pub quiet_after: Duration,
    /// When the run started.
    pub started: Instant,
}

impl Report {
    pub fn print(
        &self,
        profile: &Profile,
        outcome: &Outcome,
        injected: &[Injected],
        progress: &Progress,
        timing: Timing,
    ) {
        let Timing {
            workload,
            quiet_after,
            started,
        } = timing;
        let mut out = String::new();
        let _ = writeln!(out, "chaos: ---------------------------------------------");
        let _ = writeln!(out, "chaos: seed {}", profile.seed);
        let _ = writeln!(
            out,
            "chaos: dossiers {} (final: {:?})",
            self.dossiers, self.final_status
        );
        let _ = writeln!(
            out,
            "chaos: autosaves acknowledged {} (all checked: {})",
            outcome.saves.len(),
            self.saves_checked
        );
        let _ = writeln!(
            out,
            "chaos: status changes committed {} / events on the stream {} (published twice {})",
            self.traitements, self.status_events, self.events_published_twice
        );
        let _ = writeln!(
            out,
            "chaos: status emails {} ; deliveries {} ; emails received {} ({} Message-IDs, {} re-sent under the same Message-ID)",
            self.status_emails,
            self.deliveries,
            self.emails_received,
            self.distinct_message_ids,
            self.resent_same_message_id
        );
        let _ = writeln!(
            out,
            "chaos: thread entries (automatic emails) {}",
            self.thread_entries
        );
        let _ = writeln!(
            out,
            "chaos: accepted {} ; fiches live {} ; withdrawn {}",
            self.accepted, self.fiches_live, self.fiches_withdrawn
        );
        let _ = writeln!(
            out,
            "chaos: consumers {:?} ; dead letters {}",
            self.consumers, self.dead_letters
        );
        let _ = writeln!(
            out,
            "chaos: client retries {} ; unknown outcomes that had landed {} ; INTERNAL answers {} ; saves refused while still frozen {} ; transitions refused by a dead transition's hold {} ; transitions acknowledged {}",
            progress.retries.load(Ordering::Relaxed),
            progress.landed_unacknowledged.load(Ordering::Relaxed),
            progress.internal.load(Ordering::Relaxed),
            progress.frozen_retries.load(Ordering::Relaxed),
            progress.held.load(Ordering::Relaxed),
            progress.transitions_acked.load(Ordering::Relaxed)
        );
        for note in progress.notes.lock().unwrap().iter() {
            let _ = writeln!(out, "chaos: note: {note}");
        }
        let _ = writeln!(out, "chaos: faults injected {}:", injected.len());
        for i in injected {
            let _ = writeln!(
                out,
                "chaos:   {:>7.1} s  {} ({:.1} s)",
                i.at.as_secs_f64(),
                i.what,
                i.lasted.as_secs_f64()
            );
        }
        let _ = writeln!(
            out,
            "chaos: workload {:.1} s ; quiet {:.1} s later ; total {:.1} s ; problems {}",
            workload.as_secs_f64(),
            quiet_after.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            self.problems.len()
        );
        print!("{out}");
    }
}

/// The last lines each process wrote.
pub fn print_logs(stack: &ProcessStack) {
    for name in SERVICES {
        let log = stack.log(name);
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(60)..];
        println!(
            "===== {name} (last {} lines) =====\n{}",
            tail.len(),
            tail.join("\n")
        );
    }
    let nats = std::fs::read_to_string(stack.nats.log_path()).unwrap_or_default();
    let lines: Vec<&str> = nats.lines().collect();
    println!(
        "===== nats-server =====\n{}",
        lines[lines.len().saturating_sub(30)..].join("\n")
    );
}
