//! Benchmark of the instruction service on PostgreSQL (printed, not asserted): see BENCHMARKS.md.
//!
//! `MST_TEST_DB=postgres cargo bench -p mst-e2e --bench instruction` (add `-- --quick`, or set
//! `MST_BENCH_QUICK=1`, for a small run).
//!
//! It starts its own throw-away PostgreSQL 15 cluster with the durable defaults (`fsync=on`,
//! `synchronous_commit=on`; the test kit's clusters run with `fsync=off`), a `nats-server`, and
//! the forms and instruction services in-process (messagerie and oscars are not started: they
//! consume the events on their own machines in production, and would only take CPU here), then:
//! 1. deposits N dossiers through forms over gRPC, and has K instructeur clients pass them
//!    en instruction then accept them, each an RPC of `InstructionService` with a real token;
//! 2. runs the same transaction shape in raw SQL (UPDATE one dossier + INSERT one traitement +
//!    INSERT one ~1 KB outbox row) with K connections on the same cluster;
//! 3. bulk-inserts dossiers (with what `sync_dossier` would have written in `dashboard_members`
//!    and `dashboard_counters`) up to 10k, 100k and 1M, and times `Instruction::dashboard` and a
//!    filtered, text-searched `list_dossiers` page at each size;
//! 4. exports the 1M dossiers as CSV through `Instruction::export`, with its time and the peak RSS
//!    of this process (forms and instruction both live in it).

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use mst_e2e::bench::{
    Cluster, bearer, channel, definition, ms, percentile, proc_status_kib, set, with,
};
use mst_instruction::app::Instruction;
use mst_instruction::app::board::{ListRequest, SortKey, Tab};
use mst_instruction::app::export::{ExportRequest, Format};
use mst_instruction::domain::Status;
use mst_instruction::store::board::Buckets;
use mst_kit::Shutdown;
use mst_kit::auth::{Principal, Role};
use mst_kit::config::Env;
use mst_kit::service::RunService as _;
use mst_proto::forms as fpb;
use mst_proto::forms::forms_service_client::FormsServiceClient;
use mst_proto::forms::procedure_admin_service_client::ProcedureAdminServiceClient;
use mst_proto::instruction as ipb;
use mst_proto::instruction::instruction_service_client::InstructionServiceClient;
use mst_proto::instruction::roster_service_client::RosterServiceClient;
use mst_testkit::{NatsServer, unique_prefix};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement, TransactionTrait};
use tokio::task::JoinSet;

const ADMIN: &str = "admin@cnamts.example";
const OWNER: &str = "marie.dupont@asso-souffle.example";
const INSTRUCTEUR: &str = "paul.martin@cpam13.example";
const PROCEDURE: &str = "bench";
/// Numbers of the bulk-inserted dossiers start here (forms numbers its own from 1).
const BULK_BASE: i64 = 10_000_000;

struct Plan {
    quick: bool,
    /// Dossiers deposited through forms, each then instructed and accepted.
    deposited: usize,
    /// Concurrent clients (gRPC instructeurs, raw SQL connections, depositors).
    clients: usize,
    /// Raw SQL baseline duration.
    raw_duration: Duration,
    /// Board sizes.
    sizes: Vec<i64>,
    dashboard_calls: usize,
    list_calls: usize,
    /// Only part 3 (`--board-only`): the board at each size, without the gRPC transitions, the
    /// raw baseline and the export.
    board_only: bool,
}

impl Plan {
    fn from_args() -> Self {
        let board_only = std::env::args().any(|a| a == "--board-only");
        let quick = std::env::args().any(|a| a == "--quick")
            || std::env::var("MST_BENCH_QUICK").is_ok_and(|v| v == "1");
        if quick {
            Plan {
                quick,
                deposited: 200,
                clients: 16,
                raw_duration: Duration::from_secs(3),
                sizes: vec![10_000],
                dashboard_calls: 200,
                list_calls: 20,
                board_only,
            }
        } else {
            Plan {
                quick,
                deposited: 3_000,
                clients: 16,
                raw_duration: Duration::from_secs(15),
                sizes: vec![10_000, 100_000, 1_000_000],
                dashboard_calls: 200,
                list_calls: 50,
                board_only,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Forms and instruction in-process on the durable cluster.

struct Services {
    forms_url: String,
    instruction_url: String,
    instruction: Instruction,
    shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _files: tempfile::TempDir,
}

async fn start_services(cluster: &Cluster, nats: &NatsServer) -> anyhow::Result<Services> {
    mst_e2e::init_telemetry();
    let prefix = unique_prefix();
    let shutdown = Shutdown::new();
    let files = tempfile::tempdir()?;
    let forms_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let instruction_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let forms_url = format!("http://{}", forms_listener.local_addr()?);
    let instruction_url = format!("http://{}", instruction_listener.local_addr()?);
    let env = |db: String, name: &str| {
        Env::from_map([
            ("MST_DATABASE_URL", db),
            ("MST_NATS_URL", nats.url()),
            ("MST_NATS_STREAM", prefix.to_uppercase()),
            ("MST_NATS_SUBJECT_PREFIX", prefix.clone()),
            ("MST_SHUTDOWN_GRACE_SECS", "5".to_owned()),
            ("MST_FORMS_URL", forms_url.clone()),
            ("MST_INSTRUCTION_URL", instruction_url.clone()),
            (
                "MST_ATTACHMENTS_DIR",
                files.path().join(name).to_string_lossy().into_owned(),
            ),
        ])
    };
    let mut e = env(cluster.create_database("forms").await?, "forms");
    let settings = mst_forms::Settings::from_env(&mut e);
    e.finish()?;
    let forms = mst_forms::App::build_on(settings, forms_listener, shutdown.clone()).await?;
    let forms_task = tokio::spawn(forms.run());
    let mut e = env(cluster.create_database("instruction").await?, "instruction");
    let settings = mst_instruction::Settings::from_env(&mut e);
    e.finish()?;
    let app =
        mst_instruction::App::build_on(settings, instruction_listener, shutdown.clone()).await?;
    let instruction = app.instruction();
    let instruction_task = tokio::spawn(app.run());
    Ok(Services {
        forms_url,
        instruction_url,
        instruction,
        shutdown,
        tasks: vec![forms_task, instruction_task],
        _files: files,
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn principal(email: &str, role: Role) -> Principal {
    Principal {
        email: email.to_owned(),
        name: None,
        roles: BTreeSet::from([role]),
    }
}

fn answers(i: usize) -> Vec<fpb::ChampPatch> {
    use fpb::champ_value::Value as V;
    vec![
        set("titre", None, V::Text(format!("Mois sans tabac n{i}"))),
        set("siret", None, V::Siret("73282932000074".into())),
        set("departement", None, V::Departement("13".into())),
        set(
            "description",
            None,
            V::Text("Stands d'information au marché.".into()),
        ),
        fpb::ChampPatch {
            field_id: "budget".into(),
            row: None,
            operation: Some(fpb::champ_patch::Operation::AddRow("l1".into())),
        },
        set("poste", Some("l1"), V::Text("Affiches".into())),
        set("montant", Some("l1"), V::Decimal("1200.50".into())),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. Transitions through gRPC

async fn setup_procedure(s: &Services) -> anyhow::Result<String> {
    let admin = bearer(ADMIN, &[Role::Admin])?;
    ProcedureAdminServiceClient::new(channel(&s.forms_url).await?)
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
    let mut roster = RosterServiceClient::new(channel(&s.instruction_url).await?);
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
    roster
        .add_instructeur(with(
            &admin,
            ipb::AddInstructeurRequest {
                email: INSTRUCTEUR.into(),
                groupe_id: groupe.id.clone(),
                name: "Paul Martin".into(),
            },
        ))
        .await?;
    Ok(groupe.id)
}

/// Deposits `n` dossiers through forms with `clients` concurrent promoteurs; returns their
/// numbers and instruction versions.
async fn deposit_many(s: &Services, n: usize, clients: usize) -> anyhow::Result<Vec<(i64, i64)>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for c in 0..clients {
        let next = next.clone();
        let forms = FormsServiceClient::new(channel(&s.forms_url).await?);
        let mut instruction = InstructionServiceClient::new(channel(&s.instruction_url).await?);
        let owner = bearer(&format!("{c}.{OWNER}"), &[Role::Promoteur])?;
        let instructeur = bearer(INSTRUCTEUR, &[Role::Instructeur])?;
        set.spawn(async move {
            let mut forms = forms;
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
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
                let d = forms
                    .update_dossier(with(
                        &owner,
                        fpb::UpdateDossierRequest {
                            number: d.number,
                            expected_version: d.version,
                            patches: answers(i),
                        },
                    ))
                    .await?
                    .into_inner()
                    .dossier
                    .context("no dossier")?;
                forms
                    .deposit_dossier(with(
                        &owner,
                        fpb::DepositDossierRequest {
                            number: d.number,
                            expected_version: d.version,
                        },
                    ))
                    .await?;
                let v = instruction
                    .get_dossier(with(
                        &instructeur,
                        ipb::GetDossierRequest { number: d.number },
                    ))
                    .await?
                    .into_inner()
                    .dossier
                    .context("no dossier")?
                    .version;
                out.push((d.number, v));
            }
            anyhow::Ok(out)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    Ok(all)
}

struct Rate {
    count: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Rate {
    fn per_sec(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

async fn transitions(
    s: &Services,
    dossiers: Vec<(i64, i64)>,
    clients: usize,
) -> anyhow::Result<Rate> {
    let dossiers = Arc::new(dossiers);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    let mut prepared = Vec::new();
    for _ in 0..clients {
        prepared.push((
            InstructionServiceClient::new(channel(&s.instruction_url).await?),
            bearer(INSTRUCTEUR, &[Role::Instructeur])?,
        ));
    }
    let start = Instant::now();
    for (mut client, auth) in prepared {
        let (dossiers, next) = (dossiers.clone(), next.clone());
        set.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(number, version)) = dossiers.get(i) else {
                    break;
                };
                let t = Instant::now();
                let d = client
                    .passer_en_instruction(with(
                        &auth,
                        ipb::PasserEnInstructionRequest {
                            number,
                            expected_version: version,
                        },
                    ))
                    .await?
                    .into_inner()
                    .dossier
                    .context("no dossier")?;
                latencies.push(t.elapsed());
                let t = Instant::now();
                client
                    .accepter(with(
                        &auth,
                        ipb::AccepterRequest {
                            number,
                            expected_version: d.version,
                            motivation: "Projet conforme au cahier des charges.".into(),
                            justificatif_upload_id: String::new(),
                        },
                    ))
                    .await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(r) = set.join_next().await {
        latencies.extend(r??);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(Rate {
        count: latencies.len(),
        elapsed,
        latencies,
    })
}

// ---------------------------------------------------------------------------------------------
// 2. Raw SQL baseline

async fn raw_baseline(
    cluster: &Cluster,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Rate> {
    let url = cluster.create_database("raw").await?;
    let db = Database::connect(&url).await?;
    db.execute_unprepared(
        "CREATE TABLE dossiers (number BIGINT PRIMARY KEY, status VARCHAR(16) NOT NULL, \
           version BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);
         CREATE TABLE traitements (id VARCHAR(64) PRIMARY KEY, dossier_number BIGINT NOT NULL, \
           from_status VARCHAR(16) NOT NULL, to_status VARCHAR(16) NOT NULL, \
           actor_email VARCHAR(254) NOT NULL, motivation TEXT NOT NULL, at TIMESTAMPTZ NOT NULL);
         CREATE INDEX traitements_dossier ON traitements (dossier_number);
         CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, event_id VARCHAR(64) NOT NULL UNIQUE, \
           subject VARCHAR(255) NOT NULL, payload BYTEA NOT NULL, created_at TIMESTAMPTZ NOT NULL, \
           published_at TIMESTAMPTZ);
         INSERT INTO dossiers SELECT g, 'en_construction', 1, now() FROM generate_series(1, 100000) g;",
    )
    .await?;
    db.close().await?;
    let payload = vec![0x5a_u8; 1024];
    let mut set = JoinSet::new();
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    for c in 0..clients {
        let conn = Database::connect(&url).await?;
        let payload = payload.clone();
        set.spawn(async move {
            let mut latencies = Vec::new();
            let mut i: i64 = 0;
            while Instant::now() < deadline {
                let number = 1 + (c as i64 + i * clients as i64) % 100_000;
                i += 1;
                let t = Instant::now();
                let txn = conn.begin().await?;
                let pg = sea_orm::DatabaseBackend::Postgres;
                txn.execute_raw(Statement::from_sql_and_values(
                    pg,
                    "UPDATE dossiers SET status = 'en_instruction', version = version + 1, \
                     updated_at = now() WHERE number = $1",
                    [number.into()],
                ))
                .await?;
                txn.execute_raw(Statement::from_sql_and_values(
                    pg,
                    "INSERT INTO traitements VALUES ($1, $2, 'en_construction', 'en_instruction', \
                     $3, '', now())",
                    [
                        uuid::Uuid::now_v7().to_string().into(),
                        number.into(),
                        INSTRUCTEUR.into(),
                    ],
                ))
                .await?;
                txn.execute_raw(Statement::from_sql_and_values(
                    pg,
                    "INSERT INTO outbox (event_id, subject, payload, created_at) \
                     VALUES ($1, 'bench.dossier.en_instruction', $2, now())",
                    [
                        uuid::Uuid::now_v7().to_string().into(),
                        payload.clone().into(),
                    ],
                ))
                .await?;
                txn.commit().await?;
                latencies.push(t.elapsed());
            }
            conn.close().await?;
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(r) = set.join_next().await {
        latencies.extend(r??);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(Rate {
        count: latencies.len(),
        elapsed,
        latencies,
    })
}

// ---------------------------------------------------------------------------------------------
// 3. Board at 10k / 100k / 1M

/// Inserts bulk dossiers `from..to` (offsets from [`BULK_BASE`]) with their members, a follow by
/// the instructeur on 1 in 100 undecided ones, then recomputes the procedure's counters from the
/// members — what `sync_dossier` would have left.
async fn bulk_insert(
    db: &DatabaseConnection,
    groupe: &str,
    from: i64,
    to: i64,
) -> anyhow::Result<()> {
    let (a, b) = (BULK_BASE + from + 1, BULK_BASE + to);
    let pg = sea_orm::DatabaseBackend::Postgres;
    // Status by g % 10: 0-3 en_construction, 4-6 en_instruction, 7-8 accepte, 9 refuse; 1 in 50
    // decided ones archived.
    let status = "CASE WHEN g % 10 < 4 THEN 'en_construction' WHEN g % 10 < 7 THEN 'en_instruction' \
                  WHEN g % 10 < 9 THEN 'accepte' ELSE 'refuse' END";
    let sql = format!(
        "INSERT INTO dossiers (number, procedure_id, revision_id, owner_email, status, version, \
           archived, correction_pending, groupe_id, title, structure_name, siret, region_code, \
           departement_code, cpam, content_version, created_at, deposited_at, en_instruction_at, \
           decided_at, archived_at, updated_at, deleted) \
         SELECT g, $1, 'r1', 'owner' || (g % 5000) || '@asso.example', {status}, 3, \
           (g % 10 >= 7 AND g % 50 = 7), false, $2, \
           'Projet ' || (ARRAY['tabac','alcool','nutrition','sport','sommeil'])[1 + g % 5] || ' n' || g, \
           'Association ' || (g % 20000), '73282932000074', '93', '13', \
           'CPAM des Bouches-du-Rhône (13)', 2, \
           now() - (g % 1000) * interval '1 hour', now() - (g % 1000) * interval '1 hour', \
           CASE WHEN g % 10 >= 4 THEN now() END, CASE WHEN g % 10 >= 7 THEN now() END, \
           CASE WHEN g % 10 >= 7 AND g % 50 = 7 THEN now() END, now(), false \
         FROM generate_series({a}::bigint, {b}::bigint) g"
    );
    db.execute_raw(Statement::from_sql_and_values(
        pg,
        &sql,
        [PROCEDURE.into(), groupe.into()],
    ))
    .await?;
    db.execute_unprepared(&format!(
        "INSERT INTO follows (dossier_number, email, followed_at) \
         SELECT number, '{INSTRUCTEUR}', now() FROM dossiers \
         WHERE number BETWEEN {a} AND {b} AND number % 100 = 1 \
           AND status IN ('en_construction', 'en_instruction')"
    ))
    .await?;
    // Buckets::of: archived → ARCHIVES; else TOUS, + TRAITES if decided, + A_SUIVRE if undecided
    // and followed by nobody.
    let (a_suivre, traites, tous, archives) = (
        Buckets::A_SUIVRE,
        Buckets::TRAITES,
        Buckets::TOUS,
        Buckets::ARCHIVES,
    );
    db.execute_unprepared(&format!(
        "INSERT INTO dashboard_members (dossier_number, procedure_id, groupe_id, mask) \
         SELECT d.number, d.procedure_id, COALESCE(d.groupe_id, ''), \
           CASE WHEN d.archived THEN {archives} \
                WHEN d.status IN ('accepte', 'refuse', 'sans_suite') THEN {tous} | {traites} \
                WHEN EXISTS (SELECT 1 FROM follows f WHERE f.dossier_number = d.number \
                             AND f.unfollowed_at IS NULL) THEN {tous} \
                ELSE {tous} | {a_suivre} END \
         FROM dossiers d WHERE d.number BETWEEN {a} AND {b}"
    ))
    .await?;
    // The benchmark's instructeur's « suivis »: his follows of undecided, non-archived dossiers.
    db.execute_unprepared(&format!(
        "INSERT INTO dashboard_suivis_members (dossier_number, email, procedure_id, groupe_id) \
         SELECT d.number, f.email, d.procedure_id, COALESCE(d.groupe_id, '') \
         FROM follows f JOIN dossiers d ON d.number = f.dossier_number \
         WHERE d.number BETWEEN {a} AND {b} AND f.unfollowed_at IS NULL AND NOT d.archived \
           AND d.status IN ('en_construction', 'en_instruction')"
    ))
    .await?;
    db.execute_unprepared(
        "DELETE FROM dashboard_suivis; \
         INSERT INTO dashboard_suivis (email, procedure_id, groupe_id, n) \
         SELECT email, procedure_id, groupe_id, COUNT(*) FROM dashboard_suivis_members \
         GROUP BY email, procedure_id, groupe_id",
    )
    .await?;
    db.execute_raw(Statement::from_sql_and_values(
        pg,
        "DELETE FROM dashboard_counters WHERE procedure_id = $1",
        [PROCEDURE.into()],
    ))
    .await?;
    let mut counters =
        String::from("INSERT INTO dashboard_counters (procedure_id, groupe_id, bucket, n) ");
    let selects: Vec<String> = Buckets::NAMED
        .iter()
        .map(|(bit, name)| {
            format!(
                "SELECT procedure_id, groupe_id, '{name}', count(*) FROM dashboard_members \
                 WHERE procedure_id = '{PROCEDURE}' AND mask & {bit} <> 0 \
                 GROUP BY procedure_id, groupe_id"
            )
        })
        .collect();
    counters.push_str(&selects.join(" UNION ALL "));
    db.execute_unprepared(&counters).await?;
    db.execute_unprepared("ANALYZE").await?;
    Ok(())
}

/// Times `calls` sequential calls of `f`; returns the sorted durations and the last result.
async fn time_calls<F, Fut>(calls: usize, mut f: F) -> anyhow::Result<(Vec<Duration>, i64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<i64>>,
{
    let mut out = Vec::with_capacity(calls);
    let mut last = 0;
    for _ in 0..calls {
        let t = Instant::now();
        last = f().await?;
        out.push(t.elapsed());
    }
    out.sort();
    Ok((out, last))
}

/// The list pages timed at each size: (label, request).
fn list_requests() -> Vec<(&'static str, ListRequest)> {
    let base = ListRequest {
        procedure_id: PROCEDURE.into(),
        tab: Tab::Tous,
        statuses: Vec::new(),
        followed_by_me: false,
        deposited_after: None,
        deposited_before: None,
        groupe_ids: Vec::new(),
        text: String::new(),
        sort: SortKey::UpdatedAt,
        descending: true,
        columns: Vec::new(),
        page_size: 50,
        page_token: String::new(),
    };
    vec![
        ("tab « tous », 50 rows by updated_at desc", base.clone()),
        (
            "en_instruction + text « tabac » (1 in 5), 50 rows by updated_at desc",
            ListRequest {
                statuses: vec![Status::EnInstruction],
                text: "tabac".into(),
                ..base.clone()
            },
        ),
        (
            "text « association 1234 » (rare), 50 rows by updated_at desc",
            ListRequest {
                text: "association 1234".into(),
                ..base
            },
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// 4. Export

fn vm_hwm_kib() -> Option<u64> {
    proc_status_kib("self", "VmHWM")
}

fn vm_rss_kib() -> Option<u64> {
    proc_status_kib("self", "VmRSS")
}

async fn export(i: &Instruction, format: Format) -> anyhow::Result<(Duration, u64, u64, u64)> {
    // Resets the peak RSS to the current RSS ("5" > clear_refs, Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = vm_rss_kib().unwrap_or(0);
    let t = Instant::now();
    let mut e = i
        .export(
            &principal(INSTRUCTEUR, Role::Instructeur),
            ExportRequest {
                procedure_id: PROCEDURE.into(),
                format,
                tab: Tab::Tous,
                statuses: Vec::new(),
                followed_by_me: false,
                deposited_after: None,
                deposited_before: None,
                groupe_ids: Vec::new(),
                text: String::new(),
                repetition_field_id: None,
                include_annotations: false,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("export: {e:?}"))?;
    let mut bytes = 0u64;
    while let Some(chunk) = e.body.next().await {
        bytes += chunk
            .map_err(|e| anyhow::anyhow!("export stream: {e:?}"))?
            .len() as u64;
    }
    let elapsed = t.elapsed();
    Ok((elapsed, bytes, before, vm_hwm_kib().unwrap_or(0)))
}

// ---------------------------------------------------------------------------------------------

async fn run(plan: Plan) -> anyhow::Result<()> {
    let total = Instant::now();
    let cluster = Cluster::start()?;
    let nats = NatsServer::start().await?;
    let s = start_services(&cluster, &nats).await?;
    let settings = Database::connect(cluster.url("instruction")).await?;
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
        shown.push(format!("{name}={}", row.try_get_by_index::<String>(0)?));
    }
    println!(
        "# mst-dossiers instruction benchmark ({}; {} cores; profile {})",
        if plan.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    println!("PostgreSQL: {}", shown.join(", "));

    // 1.
    let groupe = setup_procedure(&s).await?;
    if !plan.board_only {
        let t = Instant::now();
        let dossiers = deposit_many(&s, plan.deposited, plan.clients).await?;
        println!(
            "prepared {} deposited dossiers through forms gRPC in {:.1} s ({:.0} deposits/s, create+update+deposit+get, {} clients)",
            dossiers.len(),
            t.elapsed().as_secs_f64(),
            dossiers.len() as f64 / t.elapsed().as_secs_f64(),
            plan.clients
        );
        let grpc = transitions(&s, dossiers, plan.clients).await?;
        println!(
            "1. gRPC transitions (PasserEnInstruction then Accepter), {} clients: {} transitions in {:.1} s = {:.0} transitions/s; latency p50 {} p99 {}",
            plan.clients,
            grpc.count,
            grpc.elapsed.as_secs_f64(),
            grpc.per_sec(),
            ms(percentile(&grpc.latencies, 0.5)),
            ms(percentile(&grpc.latencies, 0.99)),
        );

        // 2.
        let raw = raw_baseline(&cluster, plan.clients, plan.raw_duration).await?;
        println!(
            "2. raw SQL baseline (UPDATE + INSERT traitement + INSERT 1 KB outbox), {} connections: {} tx in {:.1} s = {:.0} tx/s; latency p50 {} p99 {}; gRPC/raw = {:.2}",
            plan.clients,
            raw.count,
            raw.elapsed.as_secs_f64(),
            raw.per_sec(),
            ms(percentile(&raw.latencies, 0.5)),
            ms(percentile(&raw.latencies, 0.99)),
            grpc.per_sec() / raw.per_sec(),
        );
    }

    // 3.
    let db = s.instruction.db().clone();
    let who = principal(INSTRUCTEUR, Role::Instructeur);
    let mut inserted = 0;
    for &size in &plan.sizes {
        let t = Instant::now();
        bulk_insert(&db, &groupe, inserted, size).await?;
        inserted = size;
        let load = t.elapsed();
        let (dash, tous) = time_calls(plan.dashboard_calls, || async {
            let e = s
                .instruction
                .dashboard(&who, Some(PROCEDURE))
                .await
                .map_err(|e| anyhow::anyhow!("dashboard: {e:?}"))?;
            Ok(e.iter().map(|e| e.counts.tous).sum::<i64>())
        })
        .await?;
        println!(
            "3. {size} bulk dossiers (loaded in {:.1} s; counter « tous » = {tous}): dashboard p50 {} p99 {} ({} calls)",
            load.as_secs_f64(),
            ms(percentile(&dash, 0.5)),
            ms(percentile(&dash, 0.99)),
            dash.len(),
        );
        for (label, request) in list_requests() {
            let (list, total_count) = time_calls(plan.list_calls, || async {
                let page = s
                    .instruction
                    .list_dossiers(&who, request.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("list: {e:?}"))?;
                Ok(if page.total_count_capped {
                    -page.total_count
                } else {
                    page.total_count
                })
            })
            .await?;
            let total = if total_count < 0 {
                format!("more than {}", -total_count)
            } else {
                total_count.to_string()
            };
            println!(
                "   list {label} (total_count {total}): p50 {} p99 {} ({} calls)",
                ms(percentile(&list, 0.5)),
                ms(percentile(&list, 0.99)),
                list.len(),
            );
        }
        if plan.board_only && size == *plan.sizes.last().unwrap_or(&0) {
            s.shutdown.trigger();
            println!("total {:.0} s (board only)", total.elapsed().as_secs_f64());
            return Ok(());
        }
    }

    // 4.
    match export(&s.instruction, Format::Csv).await {
        Ok((elapsed, bytes, before, peak)) => println!(
            "4. CSV export of the « tous » tab ({inserted} bulk + {} gRPC dossiers; forms holds answers only for the gRPC ones): {:.1} s, {:.1} MB, {:.0} rows/s; RSS before {} MiB, peak during {} MiB",
            plan.deposited,
            elapsed.as_secs_f64(),
            bytes as f64 / 1e6,
            (inserted as f64 + plan.deposited as f64) / elapsed.as_secs_f64(),
            before / 1024,
            peak / 1024,
        ),
        Err(e) => println!("4. export not measured: {e:#}"),
    }

    s.shutdown.trigger();
    for task in s.tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    println!("total {:.0} s", total.elapsed().as_secs_f64());
    drop(cluster);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if mst_testkit::Backend::from_env()? != mst_testkit::Backend::Postgres {
        eprintln!("this benchmark runs on PostgreSQL: set MST_TEST_DB=postgres");
        return Ok(());
    }
    let plan = Plan::from_args();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(plan))
}
