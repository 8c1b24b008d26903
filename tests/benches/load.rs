//! End-to-end load benchmark (printed, not asserted): see BENCHMARKS.md, « Load ».
//!
//! `cargo bench -p mst-e2e --bench load` (add `-- --quick` for a ~1 minute run).
//!
//! It starts a durable throw-away PostgreSQL 15 cluster (`fsync=on`), a `nats-server`, an
//! aiosmtpd SMTP sink and the four services as separate processes (`mst-service`, release
//! build, their default settings), then:
//! 0. measures the raw limits of the machine: pgbench with the transaction shape of a status
//!    change (UPDATE one row + INSERT one 1 KB outbox row) and JetStream publishes awaiting their
//!    PubAck (pipelined, then one at a time);
//! 1. has E editors autosave their brouillon once a second each (500 by default): autosave
//!    latency;
//! 2. at a fixed offered rate of status changes: promoteurs create, fill and deposit dossiers,
//!    instructeurs open them, pass them en instruction and decide (6 in 10 accepted, 3 refused,
//!    1 classé sans suite); each dossier makes 3 status changes. Then waits until every email is
//!    accepted by the SMTP sink and every accepted dossier is an OSCARS fiche, and reports
//!    commit→email and commit→fiche latencies and the consumers' lag;
//! 3. the same closed-loop with W workers (saturation): status changes per second end to end,
//!    from the first command to the last email or fiche of the phase;
//! 4. the peak RSS of each service process.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use mst_e2e::bench::{
    Cluster, bearer, channel, definition, pg_command, proc_status_kib, set, summary, with,
};
use mst_kit::auth::Role;
use mst_proto::forms as fpb;
use mst_proto::forms::forms_service_client::FormsServiceClient;
use mst_proto::forms::procedure_admin_service_client::ProcedureAdminServiceClient;
use mst_proto::instruction as ipb;
use mst_proto::instruction::instruction_service_client::InstructionServiceClient;
use mst_proto::instruction::roster_service_client::RosterServiceClient;
use mst_testkit::{NatsServer, SmtpSink, unique_prefix, wait_until};
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection, Statement};
use tokio::task::JoinSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

const ADMIN: &str = "admin@cnamts.example";
const PROCEDURE: &str = "bench";
const SERVICES: [&str; 4] = ["forms", "instruction", "messagerie", "oscars"];

struct Plan {
    editors: usize,
    editor_duration: Duration,
    /// Offered status changes per second in phase 2.
    rate: f64,
    rate_duration: Duration,
    workers: usize,
    saturation_duration: Duration,
    raw_duration: Duration,
    instructeurs: usize,
}

impl Plan {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse::<f64>().ok())
        };
        let quick = args.iter().any(|a| a == "--quick");
        let secs = |s: f64| Duration::from_secs_f64(s);
        let mut plan = if quick {
            Plan {
                editors: 100,
                editor_duration: secs(5.0),
                rate: 60.0,
                rate_duration: secs(5.0),
                workers: 16,
                saturation_duration: secs(5.0),
                raw_duration: secs(3.0),
                instructeurs: 4,
            }
        } else {
            Plan {
                editors: 500,
                editor_duration: secs(20.0),
                rate: 150.0,
                rate_duration: secs(20.0),
                workers: 48,
                saturation_duration: secs(20.0),
                raw_duration: secs(10.0),
                instructeurs: 8,
            }
        };
        if let Some(v) = value("--editors") {
            plan.editors = v as usize;
        }
        if let Some(v) = value("--rate") {
            plan.rate = v;
        }
        if let Some(v) = value("--workers") {
            plan.workers = v as usize;
        }
        if let Some(v) = value("--seconds") {
            plan.editor_duration = secs(v);
            plan.rate_duration = secs(v);
            plan.saturation_duration = secs(v);
        }
        plan
    }
}

// ---------------------------------------------------------------------------------------------
// The system: four service processes on the durable cluster, NATS and the SMTP sink.

struct Process {
    name: &'static str,
    url: String,
    child: tokio::process::Child,
}

struct System {
    cluster: Cluster,
    nats: NatsServer,
    smtp: SmtpSink,
    prefix: String,
    processes: Vec<Process>,
    dbs: HashMap<&'static str, DatabaseConnection>,
    dir: tempfile::TempDir,
}

impl System {
    async fn start() -> anyhow::Result<Self> {
        let cluster = Cluster::start()?;
        let nats = NatsServer::start().await?;
        let smtp = SmtpSink::start_discarding().await?;
        let prefix = unique_prefix();
        let dir = tempfile::tempdir()?;
        let binary = env!("CARGO_BIN_EXE_mst-service");
        let mut addrs = Vec::new();
        for _ in SERVICES {
            addrs.push(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?);
        }
        let mut processes = Vec::new();
        let mut dbs = HashMap::new();
        for (i, name) in SERVICES.into_iter().enumerate() {
            let url = cluster.create_database(name).await?;
            let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
            let child = tokio::process::Command::new(binary)
                .arg(name)
                .env("MST_GRPC_ADDR", addrs[i].to_string())
                .env("MST_DATABASE_URL", &url)
                .env("MST_MIGRATE_ON_START", "true")
                .env("MST_NATS_URL", nats.url())
                .env("MST_NATS_STREAM", prefix.to_uppercase())
                .env("MST_NATS_SUBJECT_PREFIX", &prefix)
                .env("MST_FORMS_URL", format!("http://{}", addrs[0]))
                .env("MST_INSTRUCTION_URL", format!("http://{}", addrs[1]))
                .env("MST_ATTACHMENTS_DIR", dir.path().join(name))
                .env(
                    "MST_SMTP_URL",
                    format!("smtp://{}:{}", smtp.host(), smtp.port()),
                )
                .env("MST_DIGEST_SCHEDULER", "false")
                .env("MST_BUILTIN_PROCEDURES", "off")
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {binary} {name}"))?;
            processes.push(Process {
                name,
                url: format!("http://{}", addrs[i]),
                child,
            });
            // Migrations run at start: connect once the service answers.
            let p = processes.last().context("no process")?;
            let target = p.url.clone();
            wait_until(Duration::from_secs(60), || {
                let target = target.clone();
                async move { channel(&target).await.ok() }
            })
            .await
            .with_context(|| {
                let log = std::fs::read_to_string(dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                format!("{name} did not start:\n{log}")
            })?;
            dbs.insert(name, Database::connect(&url).await?);
        }
        Ok(Self {
            cluster,
            nats,
            smtp,
            prefix,
            processes,
            dbs,
            dir,
        })
    }

    fn url(&self, name: &str) -> String {
        self.processes
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.url.clone())
            .unwrap_or_default()
    }

    fn db(&self, name: &str) -> &DatabaseConnection {
        &self.dbs[name]
    }

    /// The last warnings and errors `name` logged.
    fn problems(&self, name: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .map(|l| {
                // The message and error are at the end of the line.
                let chars: Vec<char> = l.chars().collect();
                chars[chars.len().saturating_sub(300)..].iter().collect()
            })
            .collect();
        lines[lines.len().saturating_sub(8)..].to_vec()
    }

    fn peak_rss_mib(&self) -> Vec<(&'static str, f64)> {
        self.processes
            .iter()
            .map(|p| {
                let kib = p
                    .child
                    .id()
                    .and_then(|pid| proc_status_kib(&pid.to_string(), "VmHWM"))
                    .unwrap_or(0);
                (p.name, kib as f64 / 1024.0)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Set-up: the benchmark's procedure and a groupe of instructeurs for département 13.

/// What a promoteur types, in three autosaves.
fn autosaves(i: usize) -> [Vec<fpb::ChampPatch>; 3] {
    use fpb::champ_value::Value as V;
    [
        vec![
            set("titre", None, V::Text(format!("Mois sans tabac n{i}"))),
            set("siret", None, V::Siret("73282932000074".into())),
        ],
        vec![
            set("departement", None, V::Departement("13".into())),
            set(
                "description",
                None,
                V::Text("Stands d'information et ateliers d'aide à l'arrêt au marché.".into()),
            ),
        ],
        vec![
            fpb::ChampPatch {
                field_id: "budget".into(),
                row: None,
                operation: Some(fpb::champ_patch::Operation::AddRow("l1".into())),
            },
            set("poste", Some("l1"), V::Text("Affiches".into())),
            set("montant", Some("l1"), V::Decimal("1200.50".into())),
        ],
    ]
}

fn instructeur(k: usize) -> String {
    format!("instructeur{k}@cpam13.example")
}

async fn set_up(system: &System, plan: &Plan) -> anyhow::Result<()> {
    let admin = bearer(ADMIN, &[Role::Admin])?;
    ProcedureAdminServiceClient::new(channel(&system.url("forms")).await?)
        .load_procedure(with(
            &admin,
            fpb::LoadProcedureRequest {
                source: Some(fpb::load_procedure_request::Source::Definition(definition(
                    PROCEDURE,
                )?)),
                publish: true,
            },
        ))
        .await?;
    let mut roster = RosterServiceClient::new(channel(&system.url("instruction")).await?);
    let groupe = roster
        .create_groupe(with(
            &admin,
            ipb::CreateGroupeRequest {
                label: "CPAM des Bouches-du-Rhône".into(),
                cpam_values: vec!["CPAM des Bouches-du-Rhône (13)".into()],
                departement_codes: vec!["13".into()],
                is_default: false,
            },
        ))
        .await?
        .into_inner()
        .groupe
        .context("no groupe")?;
    for k in 0..plan.instructeurs {
        roster
            .add_instructeur(with(
                &admin,
                ipb::AddInstructeurRequest {
                    email: instructeur(k),
                    groupe_id: groupe.id.clone(),
                    name: format!("Instructeur {k}"),
                },
            ))
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 0. Raw limits

fn pgbench(cluster: &Cluster, clients: usize, duration: Duration) -> anyhow::Result<(f64, String)> {
    let script = cluster.dir().join("status_change.sql");
    std::fs::write(
        &script,
        "\\set n random(1, 100000)\n\
         BEGIN;\n\
         UPDATE dossiers SET status = 'en_instruction', version = version + 1, updated_at = now() WHERE number = :n;\n\
         INSERT INTO outbox (event_id, subject, payload, created_at) VALUES (gen_random_uuid()::text, 'bench.dossier.status_changed', convert_to(repeat('x', 1024), 'UTF8'), now());\n\
         END;\n",
    )?;
    let _ = std::process::Command::new("chmod")
        .arg("a+r")
        .arg(&script)
        .status();
    let output = pg_command("pgbench")
        .stdout(Stdio::piped())
        .args(["-n", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &cluster.port().to_string()])
        .args(["-c", &clients.to_string(), "-j", "2"])
        .args(["-T", &duration.as_secs().max(1).to_string()])
        .arg("-f")
        .arg(&script)
        .arg("raw")
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("pgbench printed no tps:\n{text}"))?;
    let latency = text
        .lines()
        .find(|l| l.starts_with("latency average"))
        .unwrap_or("")
        .to_owned();
    Ok((tps, latency))
}

async fn raw_postgres(
    cluster: &Cluster,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<(f64, String)> {
    let url = cluster.create_database("raw").await?;
    let db = Database::connect(&url).await?;
    db.execute_unprepared(
        "CREATE TABLE dossiers (number BIGINT PRIMARY KEY, status VARCHAR(16) NOT NULL, \
           version BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);
         CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, event_id VARCHAR(64) NOT NULL UNIQUE, \
           subject VARCHAR(255) NOT NULL, payload BYTEA NOT NULL, created_at TIMESTAMPTZ NOT NULL, \
           published_at TIMESTAMPTZ);
         INSERT INTO dossiers SELECT g, 'en_construction', 1, now() FROM generate_series(1, 100000) g;",
    )
    .await?;
    db.execute_unprepared("VACUUM ANALYZE dossiers").await?;
    db.close().await?;
    tokio::task::block_in_place(|| pgbench(cluster, clients, duration))
}

/// JetStream publishes of 1 KB awaiting each PubAck, with `window` publishes in flight.
async fn raw_jetstream(
    nats: &NatsServer,
    window: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    let name = format!("RAW{window}");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("raw{window}.>")],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let payload = bytes_of(1024);
    let subject = format!("raw{window}.dossier.status_changed");
    let start = Instant::now();
    let mut acked = 0usize;
    let mut inflight = FuturesUnordered::new();
    while start.elapsed() < duration {
        while inflight.len() < window {
            inflight.push(
                js.publish(subject.clone(), payload.clone())
                    .await?
                    .into_future(),
            );
        }
        if let Some(ack) = inflight.next().await {
            ack?;
            acked += 1;
        }
    }
    while let Some(ack) = inflight.next().await {
        ack?;
        acked += 1;
    }
    let rate = acked as f64 / start.elapsed().as_secs_f64();
    js.delete_stream(&name).await?;
    Ok(rate)
}

/// Emails accepted per second by the SMTP sink through messagerie's own mailer (pooled
/// connections, TCP_NODELAY), `concurrency` at a time: the ceiling of the email path.
async fn raw_smtp(smtp: &SmtpSink, concurrency: usize, duration: Duration) -> anyhow::Result<f64> {
    use mst_messagerie::smtp::{Mailer, Outgoing, SmtpSettings, Transport};
    let settings = SmtpSettings::parse(
        &format!("smtp://{}:{}", smtp.host(), smtp.port()),
        concurrency,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let mailer = Arc::new(Mailer::new(
        Transport::Smtp(settings),
        "Mois sans tabac <ne-pas-repondre@mst.example>".parse()?,
    ));
    let text = "Bonjour,\n\nVotre dossier n° 123 a été accepté.\n".repeat(20);
    let start = Instant::now();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for w in 0..concurrency {
        let (mailer, sent, text) = (mailer.clone(), sent.clone(), text.clone());
        set.spawn(async move {
            let mut i = 0;
            while start.elapsed() < duration {
                i += 1;
                let mail = Outgoing {
                    to: format!("promoteur{w}@asso.example"),
                    message_id: format!("raw-{w}-{i}@mst.example"),
                    rendered: mst_messagerie::templates::Rendered {
                        template: "raw".into(),
                        subject: "Votre dossier n° 123 a été accepté".into(),
                        text: text.clone(),
                        html: format!("<p>{text}</p>"),
                    },
                };
                mailer
                    .send(&mail)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    mailer.close().await;
    Ok(sent.load(std::sync::atomic::Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn bytes_of(n: usize) -> bytes::Bytes {
    bytes::Bytes::from(vec![b'x'; n])
}

// ---------------------------------------------------------------------------------------------
// Clients and what they record.

#[derive(Clone)]
struct Clients {
    forms: Vec<FormsServiceClient<Channel>>,
    instruction: Vec<InstructionServiceClient<Channel>>,
    promoteurs: Arc<Vec<MetadataValue<Ascii>>>,
    instructeurs: Arc<Vec<MetadataValue<Ascii>>>,
}

impl Clients {
    async fn connect(system: &System, plan: &Plan, channels: usize) -> anyhow::Result<Self> {
        let mut forms = Vec::new();
        let mut instruction = Vec::new();
        for _ in 0..channels {
            forms.push(FormsServiceClient::new(
                channel(&system.url("forms")).await?,
            ));
            instruction.push(InstructionServiceClient::new(
                channel(&system.url("instruction")).await?,
            ));
        }
        let mut promoteurs = Vec::new();
        for p in 0..200 {
            promoteurs.push(bearer(
                &format!("promoteur{p}@asso.example"),
                &[Role::Promoteur],
            )?);
        }
        let mut instructeurs = Vec::new();
        for k in 0..plan.instructeurs {
            instructeurs.push(bearer(&instructeur(k), &[Role::Instructeur])?);
        }
        Ok(Self {
            forms,
            instruction,
            promoteurs: Arc::new(promoteurs),
            instructeurs: Arc::new(instructeurs),
        })
    }
}

#[derive(Default)]
struct Record {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    /// (dossier, status reached) of every status change a client saw acknowledged.
    changes: Vec<(i64, &'static str)>,
    errors: BTreeMap<String, usize>,
}

type Shared = Arc<Mutex<Record>>;

fn note(record: &Shared, what: &'static str, took: Duration) {
    if let Ok(mut r) = record.lock() {
        r.latencies.entry(what).or_default().push(took);
    }
}

fn changed(record: &Shared, number: i64, status: &'static str) {
    if let Ok(mut r) = record.lock() {
        r.changes.push((number, status));
    }
}

fn failed(record: &Shared, what: &str, status: &tonic::Status) {
    if let Ok(mut r) = record.lock() {
        *r.errors
            .entry(format!("{what}: {:?} {}", status.code(), status.message()))
            .or_default() += 1;
    }
}

macro_rules! timed {
    ($record:expr, $what:expr, $call:expr) => {{
        let t = Instant::now();
        match $call.await {
            Ok(r) => {
                note($record, $what, t.elapsed());
                r.into_inner()
            }
            Err(status) => {
                failed($record, $what, &status);
                return Ok(());
            }
        }
    }};
}

/// One dossier's life: created, filled in three autosaves, deposited, opened by an instructeur,
/// passed en instruction and decided.
async fn lifecycle(c: &Clients, i: usize, record: &Shared) -> anyhow::Result<()> {
    let lane = i % c.forms.len();
    let mut forms = c.forms[lane].clone();
    let mut instruction = c.instruction[lane].clone();
    let owner = &c.promoteurs[i % c.promoteurs.len()];
    let instructeur = &c.instructeurs[i % c.instructeurs.len()];
    let d = timed!(
        record,
        "create",
        forms.create_dossier(with(
            owner,
            fpb::CreateDossierRequest {
                procedure_id: PROCEDURE.into(),
                request_id: uuid::Uuid::now_v7().to_string(),
            },
        ))
    )
    .dossier
    .context("no dossier")?;
    let (number, mut version) = (d.number, d.version);
    for patches in autosaves(i) {
        version = timed!(
            record,
            "autosave",
            forms.update_dossier(with(
                owner,
                fpb::UpdateDossierRequest {
                    number,
                    expected_version: version,
                    patches,
                },
            ))
        )
        .dossier
        .context("no dossier")?
        .version;
    }
    timed!(
        record,
        "deposit",
        forms.deposit_dossier(with(
            owner,
            fpb::DepositDossierRequest {
                number,
                expected_version: version,
            },
        ))
    );
    changed(record, number, "en_construction");
    let d = timed!(
        record,
        "get_dossier",
        instruction.get_dossier(with(instructeur, ipb::GetDossierRequest { number }))
    )
    .dossier
    .context("no dossier")?;
    let d = timed!(
        record,
        "passer_en_instruction",
        instruction.passer_en_instruction(with(
            instructeur,
            ipb::PasserEnInstructionRequest {
                number,
                expected_version: d.version,
            },
        ))
    )
    .dossier
    .context("no dossier")?;
    changed(record, number, "en_instruction");
    let version = d.version;
    match i % 10 {
        0..=5 => {
            timed!(
                record,
                "decide",
                instruction.accepter(with(
                    instructeur,
                    ipb::AccepterRequest {
                        number,
                        expected_version: version,
                        motivation: "Projet conforme au cahier des charges.".into(),
                        justificatif_upload_id: String::new(),
                    },
                ))
            );
            changed(record, number, "accepte");
        }
        6..=8 => {
            timed!(
                record,
                "decide",
                instruction.refuser(with(
                    instructeur,
                    ipb::RefuserRequest {
                        number,
                        expected_version: version,
                        motivation: "Le budget dépasse le plafond de l'appel à projets.".into(),
                        justificatif_upload_id: String::new(),
                    },
                ))
            );
            changed(record, number, "refuse");
        }
        _ => {
            timed!(
                record,
                "decide",
                instruction.classer_sans_suite(with(
                    instructeur,
                    ipb::ClasserSansSuiteRequest {
                        number,
                        expected_version: version,
                        motivation: "Le promoteur a retiré son projet.".into(),
                        justificatif_upload_id: String::new(),
                    },
                ))
            );
            changed(record, number, "sans_suite");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Autosave latency with E concurrent editors

async fn editors(system: &System, plan: &Plan) -> anyhow::Result<()> {
    let clients = Clients::connect(system, plan, 8).await?;
    // Their brouillons, created up front.
    let mut dossiers = Vec::new();
    for chunk in (0..plan.editors).collect::<Vec<_>>().chunks(32) {
        let mut set = JoinSet::new();
        for &e in chunk {
            let mut forms = clients.forms[e % clients.forms.len()].clone();
            let owner = clients.promoteurs[e % clients.promoteurs.len()].clone();
            set.spawn(async move {
                let d = forms
                    .create_dossier(with(
                        &owner,
                        fpb::CreateDossierRequest {
                            procedure_id: PROCEDURE.into(),
                            request_id: String::new(),
                        },
                    ))
                    .await?
                    .into_inner()
                    .dossier
                    .context("no dossier")?;
                anyhow::Ok((e, d.number, d.version))
            });
        }
        while let Some(r) = set.join_next().await {
            dossiers.push(r??);
        }
    }
    let record: Shared = Arc::default();
    let start = tokio::time::Instant::now();
    let deadline = start + plan.editor_duration;
    let mut tasks = JoinSet::new();
    for (e, number, version) in dossiers {
        let mut forms = clients.forms[e % clients.forms.len()].clone();
        let owner = clients.promoteurs[e % clients.promoteurs.len()].clone();
        let record = record.clone();
        let editors = plan.editors;
        tasks.spawn(async move {
            let mut version = version;
            // Spread the editors over the second.
            let mut next = start + Duration::from_secs_f64(e as f64 / editors as f64);
            let mut n = 0;
            while next < deadline {
                tokio::time::sleep_until(next).await;
                n += 1;
                let t = Instant::now();
                let r = forms
                    .update_dossier(with(
                        &owner,
                        fpb::UpdateDossierRequest {
                            number,
                            expected_version: version,
                            patches: vec![set(
                                "description",
                                None,
                                fpb::champ_value::Value::Text(format!(
                                    "Stands d'information au marché, version {n}."
                                )),
                            )],
                        },
                    ))
                    .await;
                match r {
                    Ok(d) => {
                        note(&record, "autosave", t.elapsed());
                        version = d.into_inner().dossier.map_or(version, |d| d.version);
                    }
                    Err(status) => failed(&record, "autosave", &status),
                }
                next += Duration::from_secs(1);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let mut r = std::mem::take(&mut *record.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let lat = r.latencies.entry("autosave").or_default();
    println!(
        "  {} editors, one autosave a second each for {:.0} s: {:.0} autosaves/s · {}",
        plan.editors,
        plan.editor_duration.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        summary(lat)
    );
    print_errors(&r.errors);
    Ok(())
}

fn print_errors(errors: &BTreeMap<String, usize>) {
    for (what, n) in errors {
        println!("  ERRORS {n} × {what}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2 and 3. Status changes, end to end

/// Largest pending / ack-pending count seen per durable consumer while sampling.
#[derive(Default)]
struct Lag {
    max: BTreeMap<String, (u64, u64)>,
}

async fn sample_lag(
    nats_url: String,
    stream: String,
    lag: Arc<Mutex<Lag>>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let client = async_nats::connect(nats_url).await?;
    let js = async_nats::jetstream::new(client);
    let s = js.get_stream(&stream).await?;
    loop {
        let names: Vec<String> = s
            .consumer_names()
            .filter_map(|n| async { n.ok() })
            .collect()
            .await;
        for name in names {
            if let Ok(info) = s.consumer_info(&name).await {
                let mut l = lag.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                let e = l.max.entry(name).or_default();
                e.0 = e.0.max(info.num_pending);
                e.1 = e.1.max(info.num_ack_pending as u64);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

async fn drained(system: &System, stream: &str) -> anyhow::Result<bool> {
    let client = async_nats::connect(system.nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    let s = js.get_stream(stream).await?;
    let names: Vec<String> = s
        .consumer_names()
        .filter_map(|n| async { n.ok() })
        .collect()
        .await;
    for name in names {
        let info = s.consumer_info(&name).await?;
        if info.num_pending > 0 || info.num_ack_pending > 0 {
            return Ok(false);
        }
    }
    let unsent = count(
        system.db("messagerie"),
        "SELECT count(*) AS n FROM outgoing_mails WHERE status <> 'sent'",
    )
    .await?;
    let outbox = [
        system.db("forms"),
        system.db("instruction"),
        system.db("messagerie"),
        system.db("oscars"),
    ];
    let mut pending = 0;
    for db in outbox {
        pending += mst_bus::outbox::pending(db).await?;
    }
    Ok(unsent == 0 && pending == 0)
}

async fn count(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .context("no row")?;
    Ok(row.try_get::<i64>("", "n")?)
}

fn template_of(status: &str) -> &'static str {
    match status {
        "en_construction" => "dossier_depose",
        "en_instruction" => "dossier_en_instruction",
        "accepte" => "dossier_accepte",
        "refuse" => "dossier_refuse",
        _ => "dossier_sans_suite",
    }
}

async fn times(
    db: &DatabaseConnection,
    sql: &str,
) -> anyhow::Result<HashMap<(i64, String), DateTime<Utc>>> {
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?;
    let mut out = HashMap::new();
    for row in rows {
        let number: i64 = row.try_get("", "number")?;
        let key: String = row.try_get("", "k")?;
        let at: DateTime<Utc> = row.try_get("", "at")?;
        out.entry((number, key))
            .and_modify(|t: &mut DateTime<Utc>| *t = (*t).min(at))
            .or_insert(at);
    }
    Ok(out)
}

struct Outcome {
    changes: usize,
    e2e_rate: f64,
}

/// Runs lifecycles (`rate` per second offered, or `workers` closed loops when `rate` is None)
/// for `duration`, waits until everything is delivered, and prints what happened.
async fn status_changes(
    system: &System,
    plan: &Plan,
    rate: Option<f64>,
    duration: Duration,
    first: usize,
) -> anyhow::Result<Outcome> {
    let clients = Clients::connect(system, plan, 16).await?;
    let record: Shared = Arc::default();
    let lag = Arc::new(Mutex::new(Lag::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn(sample_lag(
        system.nats.url(),
        system.prefix.to_uppercase(),
        lag.clone(),
        stop.clone(),
    ));
    let started = Utc::now();
    let start = Instant::now();
    let mut set = JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(first));
    match rate {
        Some(rate) => {
            // Open loop: one lifecycle (3 status changes) every 3 / rate seconds.
            let mut tick = tokio::time::interval(Duration::from_secs_f64(3.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while start.elapsed() < duration {
                tick.tick().await;
                let (c, r) = (clients.clone(), record.clone());
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                set.spawn(async move { lifecycle(&c, i, &r).await });
            }
        }
        None => {
            for _ in 0..plan.workers {
                let (c, r, next) = (clients.clone(), record.clone(), next.clone());
                set.spawn(async move {
                    while start.elapsed() < duration {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        lifecycle(&c, i, &r).await?;
                    }
                    anyhow::Ok(())
                });
            }
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let commands_done = start.elapsed();
    let stream = system.prefix.to_uppercase();
    let waited = Instant::now();
    wait_until(Duration::from_secs(600), || async {
        drained(system, &stream).await.ok().filter(|d| *d)
    })
    .await
    .context("the system did not drain within 10 minutes")?;
    let drain = waited.elapsed();
    stop.cancel();
    let _ = sampler.await;
    let mut r = std::mem::take(&mut *record.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);

    // When each status change committed (its traitement), reached the SMTP sink, became a fiche.
    let since = started.to_rfc3339();
    let committed = times(
        system.db("instruction"),
        &format!(
            "SELECT dossier_number AS number, to_status AS k, at FROM traitements WHERE at >= '{since}'"
        ),
    )
    .await?;
    let mailed = times(
        system.db("messagerie"),
        &format!(
            "SELECT number, template AS k, sent_at AS at FROM outgoing_mails \
             WHERE status = 'sent' AND queued_at >= '{since}'"
        ),
    )
    .await?;
    let imported = times(
        system.db("oscars"),
        &format!(
            "SELECT dossier_number AS number, 'fiche' AS k, imported_at AS at FROM oscars_fiches \
             WHERE imported_at >= '{since}'"
        ),
    )
    .await?;
    let mut to_email = Vec::new();
    let mut to_fiche = Vec::new();
    let mut last = started;
    let mut missing = BTreeMap::<&str, usize>::new();
    for &(number, status) in &r.changes {
        let Some(&at) = committed.get(&(number, status.to_owned())) else {
            *missing.entry("traitement").or_default() += 1;
            continue;
        };
        match mailed.get(&(number, template_of(status).to_owned())) {
            Some(&sent) => {
                to_email.push((sent - at).to_std().unwrap_or_default());
                last = last.max(sent);
            }
            None => *missing.entry("email").or_default() += 1,
        }
        if status == "accepte" {
            match imported.get(&(number, "fiche".to_owned())) {
                Some(&fiche) => {
                    to_fiche.push((fiche - at).to_std().unwrap_or_default());
                    last = last.max(fiche);
                }
                None => *missing.entry("fiche").or_default() += 1,
            }
        }
    }
    let n = r.changes.len();
    let window = (last - started).to_std().unwrap_or_default();
    let e2e_rate = n as f64 / window.as_secs_f64().max(1e-9);
    let offered = rate.map_or(format!("{} closed-loop workers", plan.workers), |r| {
        format!("offered {r:.0} status changes/s")
    });
    println!(
        "  {offered} for {:.0} s: {n} status changes acknowledged ({:.0}/s while commanding); \
         the last email or fiche {:.2} s after the first command (drain {:.2} s after the last command)",
        duration.as_secs_f64(),
        n as f64 / commands_done.as_secs_f64(),
        window.as_secs_f64(),
        drain.as_secs_f64(),
    );
    println!(
        "  END TO END: {e2e_rate:.0} status changes/s (committed, consumed, email accepted by the SMTP sink, fiche imported for acceptances)"
    );
    println!("  commit → email accepted: {}", summary(&mut to_email));
    println!("  commit → fiche imported: {}", summary(&mut to_fiche));
    for (what, lat) in r.latencies.iter_mut() {
        println!("  rpc {what:<22} {}", summary(lat));
    }
    if !missing.is_empty() {
        println!("  MISSING {missing:?}");
    }
    print_errors(&r.errors);
    let lag = lag.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    for (consumer, (pending, ack_pending)) in &lag.max {
        println!(
            "  consumer {consumer:<28} max lag {pending} pending, {ack_pending} unacknowledged"
        );
    }
    Ok(Outcome {
        changes: n,
        e2e_rate,
    })
}

// ---------------------------------------------------------------------------------------------

async fn run(plan: Plan) -> anyhow::Result<()> {
    let total = Instant::now();
    let system = System::start().await?;
    let settings = system.db("instruction");
    let mut shown = Vec::new();
    for name in [
        "fsync",
        "synchronous_commit",
        "shared_buffers",
        "server_version",
    ] {
        let row = settings
            .query_one_raw(Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                format!("SHOW {name}"),
            ))
            .await?
            .context("SHOW")?;
        shown.push(format!("{name}={}", row.try_get::<String>("", name)?));
    }
    println!("PostgreSQL: {}", shown.join(", "));
    set_up(&system, &plan).await?;

    println!("\n0. Raw limits of this machine");
    let (tps, latency) = raw_postgres(&system.cluster, 16, plan.raw_duration).await?;
    println!(
        "  pgbench, UPDATE one row + INSERT one 1 KB outbox row, 16 clients: {tps:.0} tx/s ({latency})"
    );
    let pipelined = raw_jetstream(&system.nats, 256, plan.raw_duration).await?;
    let one = raw_jetstream(&system.nats, 1, plan.raw_duration).await?;
    println!(
        "  JetStream publish 1 KB awaiting PubAck: {pipelined:.0} msg/s with 256 in flight, {one:.0} msg/s one at a time"
    );

    let smtp = raw_smtp(&system.smtp, 4, plan.raw_duration).await?;
    println!(
        "  SMTP sink (aiosmtpd with its Sink handler, one Python process) through messagerie's mailer, 4 connections: {smtp:.0} emails/s"
    );

    println!("\n1. Autosave");
    editors(&system, &plan).await?;

    println!("\n2. Fixed offered rate");
    status_changes(
        &system,
        &plan,
        Some(plan.rate),
        plan.rate_duration,
        1_000_000,
    )
    .await?;

    println!("\n3. Saturation");
    let sat = status_changes(&system, &plan, None, plan.saturation_duration, 2_000_000).await?;
    println!(
        "  ratio end-to-end / raw PostgreSQL: {:.3} ({:.0} / {tps:.0}); {} status changes",
        sat.e2e_rate / tps,
        sat.e2e_rate,
        sat.changes
    );

    println!("\n4. Peak RSS per service");
    for (name, mib) in system.peak_rss_mib() {
        println!("  {name:<12} {mib:.1} MiB");
    }
    for p in &system.processes {
        let problems = system.problems(p.name);
        if !problems.is_empty() {
            println!(
                "--- {}: last warnings and errors ---\n{}",
                p.name,
                problems.join("\n")
            );
        }
    }
    println!("total {:.0} s", total.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let plan = Plan::from_args();
    if !PathBuf::from(mst_e2e::bench::PG_BIN)
        .join("pgbench")
        .exists()
    {
        bail!("pgbench is missing: apt-get install postgresql-15 (the CI tools install it)");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(plan))
}
