//! The instruction workflow through the real services (forms freeze included): the whole
//! transition table of the domain (every consistent state × command × actor, procedure open,
//! and the commands the closing date changes with the procedure closed), each accepted row
//! publishing exactly one event and each refused row nothing; and the dashboard counters checked
//! against a recount through a random sequence of transitions, decisions included.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{PullConsumer, pull};
use mst_e2e::Stack;
use mst_instruction::app::board::Counts;
use mst_instruction::app::{AppError, DepositInput, Headline};
use mst_instruction::domain::table::{TableRow, transition_table};
use mst_instruction::domain::{
    ActorKind, Command, CommandKind, CorrectionReason, ErrorCategory, EventKind, Message,
    Motivation, StateKey, Status,
};
use mst_instruction::store::{dossier, procedure};
use mst_kit::auth::{Principal, Role};
use mst_proto::Event as _;
use mst_proto::events as ev;
use mst_proto::forms as pb;
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, Statement};
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::support::*;

const INVITEE: &str = "invite@association.example";
const OTHER: &str = "autre@association.example";
const INSTRUCTEUR_75: &str = "claire.durand@cpam75.example";
const UNDECLARED: &str = "inconnu@cpam13.example";
const SYSTEM: &str = "instruction";

fn person(email: &str, role: Role) -> Principal {
    Principal {
        email: email.into(),
        name: None,
        roles: [role].into(),
    }
}

/// The caller standing for each actor kind of the domain table.
fn principal(actor: ActorKind) -> Principal {
    match actor {
        ActorKind::Owner => person(OWNER, Role::Promoteur),
        ActorKind::Invitee => person(INVITEE, Role::Promoteur),
        ActorKind::InstructeurOfGroupe => person(INSTRUCTEUR, Role::Instructeur),
        ActorKind::InstructeurOtherGroupe => person(INSTRUCTEUR_75, Role::Instructeur),
        ActorKind::UndeclaredInstructeur => person(UNDECLARED, Role::Instructeur),
        ActorKind::Admin => person(ADMIN, Role::Admin),
        ActorKind::System => person(SYSTEM, Role::System),
        ActorKind::Other => person(OTHER, Role::Promoteur),
    }
}

/// Counts the workflow events on the stack's stream, one pull consumer per subject (never
/// fetched from, so `num_pending` is the number of messages published on the subject).
struct Events {
    consumers: BTreeMap<&'static str, PullConsumer>,
}

const SUBJECTS: [&str; 4] = [
    ev::DossierStatusChanged::SUBJECT,
    ev::DossierCorrectionResolved::SUBJECT,
    ev::DossierArchived::SUBJECT,
    ev::DossierUnarchived::SUBJECT,
];

impl Events {
    async fn new(stack: &Stack) -> Self {
        let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
        let stream = js.get_stream(stack.prefix.to_uppercase()).await.unwrap();
        let mut consumers = BTreeMap::new();
        for subject in SUBJECTS {
            let consumer = stream
                .create_consumer(pull::Config {
                    filter_subject: format!("{}.{subject}", stack.prefix),
                    inactive_threshold: Duration::from_secs(3600),
                    ..Default::default()
                })
                .await
                .unwrap();
            consumers.insert(subject, consumer);
        }
        Self { consumers }
    }

    async fn counts(&mut self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for (subject, consumer) in &mut self.consumers {
            out.insert(*subject, consumer.info().await.unwrap().num_pending);
        }
        out
    }

    /// The counts once every event the instruction service committed so far is on the stream
    /// (its outbox is empty: the relay marks a row only after the PubAck), so that a command's
    /// own events are not mixed with the stragglers of the set-up that reached its state.
    async fn quiet(&mut self, db: &sea_orm::DatabaseConnection) -> BTreeMap<&'static str, u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while mst_bus::outbox::pending(db).await.unwrap() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.counts().await
    }

    /// Waits until the counts reach `expected` (at most 10 s), lets a straggler show up, and
    /// returns the counts then.
    async fn settle(
        &mut self,
        expected: &BTreeMap<&'static str, u64>,
    ) -> BTreeMap<&'static str, u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.counts().await;
            if SUBJECTS.iter().all(|s| now[s] >= expected[s]) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.counts().await
    }
}

/// The subject of the one event an accepted command publishes.
fn subject_of(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::StatusChanged(_) => ev::DossierStatusChanged::SUBJECT,
        EventKind::CorrectionResolved => ev::DossierCorrectionResolved::SUBJECT,
        EventKind::Archived { .. } => ev::DossierArchived::SUBJECT,
        EventKind::Unarchived { .. } => ev::DossierUnarchived::SUBJECT,
    }
}

async fn row(db: &DatabaseConnection, number: i64) -> dossier::Model {
    dossier::Entity::find_by_id(number)
        .one(db)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("dossier {number} unknown to instruction"))
}

fn key_of(row: &dossier::Model) -> StateKey {
    StateKey {
        status: Status::ALL
            .into_iter()
            .find(|s| s.as_str() == row.status)
            .unwrap(),
        archived: row.archived,
        correction_pending: row.correction_pending,
    }
}

/// The observed outcome: accepted, or the refusal's category and (for state errors) reason.
type Observed = Result<(), (ErrorCategory, String)>;

fn from_app(e: AppError) -> (ErrorCategory, String) {
    match e {
        AppError::NotFound(..) => (ErrorCategory::NotFound, String::new()),
        AppError::Forbidden(_) => (ErrorCategory::PermissionDenied, String::new()),
        AppError::WrongState { reason, .. } => {
            (ErrorCategory::FailedPrecondition, reason.to_owned())
        }
        other => panic!("unexpected error {other:?}"),
    }
}

fn from_status(s: &tonic::Status) -> (ErrorCategory, String) {
    match s.code() {
        Code::NotFound => (ErrorCategory::NotFound, String::new()),
        Code::PermissionDenied => (ErrorCategory::PermissionDenied, String::new()),
        Code::FailedPrecondition => (
            ErrorCategory::FailedPrecondition,
            s.get_details_error_info()
                .map(|i| i.reason)
                .unwrap_or_default(),
        ),
        _ => panic!("unexpected status {s:?}"),
    }
}

fn expected(row: &TableRow) -> Observed {
    match &row.outcome {
        Ok(_) => Ok(()),
        Err(e) => Err((
            e.category(),
            if e.category() == ErrorCategory::FailedPrecondition {
                e.reason().to_owned()
            } else {
                String::new()
            },
        )),
    }
}

/// Deposits (or resubmits) through forms as `who`.
async fn deposit_as(stack: &Stack, who: &str, number: i64) -> Result<(), tonic::Status> {
    let version = owners_view(stack, number).await.version;
    deposit(stack, who, number, version).await.map(|_| ())
}

/// Runs `command` as `actor` on `number` through the services.
async fn run(
    stack: &Stack,
    procedure_id: &str,
    number: i64,
    actor: ActorKind,
    command: CommandKind,
    uploads: bool,
) -> Observed {
    let db = stack.instruction.db();
    let before = row(db, number).await;
    match (command, actor) {
        // The real path of a deposit: the promoteur's DepositDossier on forms, which records it
        // through RecordDeposit (the service picks deposit or resolution by the state).
        (
            CommandKind::Deposer | CommandKind::ResolveCorrection,
            ActorKind::Owner | ActorKind::Invitee | ActorKind::Other,
        ) => deposit_as(stack, principal(actor).email.as_str(), number)
            .await
            .map_err(|s| from_status(&s)),
        // Anyone else can only reach instruction's deposit entry point directly, on his own
        // behalf.
        (CommandKind::Deposer | CommandKind::ResolveCorrection, _) => {
            let who = principal(actor);
            stack
                .instruction
                .record_deposit(
                    &who,
                    DepositInput {
                        number,
                        deposit_id: uuid::Uuid::now_v7().to_string(),
                        procedure: ev::ProcedureRef {
                            id: procedure_id.into(),
                            title: "Démarche de test".into(),
                            kind: ev::DossierKind::Projet as i32,
                        },
                        revision_id: before.revision_id.clone(),
                        owner_email: who.email.clone(),
                        invitee_emails: vec![],
                        content_version: before.content_version,
                        headline: Headline {
                            title: before.title.clone(),
                            structure_name: before.structure_name.clone(),
                            siret: before.siret.clone(),
                            region_code: before.region_code.clone(),
                            departement_code: before.departement_code.clone(),
                            cpam: before.cpam.clone(),
                        },
                        created_at: before.created_at,
                    },
                )
                .await
                .map(|_| ())
                .map_err(from_app)
        }
        _ => {
            let sample = sample_command(stack, number, command, uploads).await;
            stack
                .instruction
                .transition(&principal(actor), number, before.version, sample)
                .await
                .map(|_| ())
                .map_err(from_app)
        }
    }
}

/// The domain's sample of `command`. The sample justificatif is only a reference: with
/// `uploads`, an accepted decision gets a real upload instead (a refused one is decided before
/// the upload is looked at).
async fn sample_command(
    stack: &Stack,
    number: i64,
    command: CommandKind,
    uploads: bool,
) -> Command {
    let mut sample = command.sample();
    if let (Command::Refuser { justificatif, .. }, true) = (&mut sample, uploads) {
        *justificatif = Some(upload_justificatif(stack, number).await);
    }
    sample
}

/// Uploads a justificatif for a decision on `number` as the instructeur of its groupe.
async fn upload_justificatif(stack: &Stack, number: i64) -> mst_instruction::domain::FileRef {
    use mst_proto::instruction as ipb;
    use mst_proto::instruction::instruction_service_client::InstructionServiceClient;
    use mst_proto::instruction::upload_justificatif_request::Payload;
    let pdf = b"%PDF-1.4\n% decision\n".to_vec();
    let mut client = InstructionServiceClient::new(
        tonic::transport::Endpoint::from_shared(stack.service("instruction").url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let upload = client
        .upload_justificatif(as_(
            INSTRUCTEUR,
            &[Role::Instructeur],
            tokio_stream::iter(vec![
                ipb::UploadJustificatifRequest {
                    payload: Some(Payload::Metadata(ipb::UploadJustificatifMetadata {
                        number,
                        file_name: "decision.pdf".into(),
                        content_type: "application/pdf".into(),
                        size_bytes: pdf.len() as i64,
                    })),
                },
                ipb::UploadJustificatifRequest {
                    payload: Some(Payload::Chunk(pdf)),
                },
            ]),
        ))
        .await
        .unwrap()
        .into_inner();
    stack
        .instruction
        .justificatif_for_decision(number, &upload.upload_id)
        .await
        .unwrap()
}

/// A dossier of `procedure_id` with complete answers and an invitee, brought to `key` along
/// the domain's `path_from_brouillon`.
async fn reach(stack: &Stack, procedure_id: &str, key: StateKey) -> i64 {
    let d = create(stack, OWNER, procedure_id).await;
    let number = d.number;
    forms(stack)
        .await
        .invite_to_dossier(promoteur(
            OWNER,
            pb::InviteToDossierRequest {
                number,
                invitee_email: INVITEE.into(),
                message: String::new(),
            },
        ))
        .await
        .unwrap();
    update(
        stack,
        OWNER,
        number,
        owners_view(stack, number).await.version,
        complete_answers(),
    )
    .await
    .unwrap();
    let db = stack.instruction.db().clone();
    // Instruction learns of the brouillon from forms' event.
    mst_testkit::wait_until(Duration::from_secs(20), || {
        let db = db.clone();
        async move {
            dossier::Entity::find_by_id(number)
                .one(&db)
                .await
                .ok()
                .flatten()
        }
    })
    .await
    .unwrap();
    for command in key.path_from_brouillon().unwrap() {
        match command {
            CommandKind::Deposer | CommandKind::ResolveCorrection => {
                deposit_as(stack, OWNER, number).await.unwrap();
            }
            _ => {
                let version = row(&db, number).await.version;
                stack
                    .instruction
                    .transition(
                        &principal(command.performer().sample_actor()),
                        number,
                        version,
                        sample_command(stack, number, *command, true).await,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{key:?}: {command}: {e:?}"));
            }
        }
    }
    assert_eq!(key_of(&row(&db, number).await), key);
    number
}

/// Whether the services can run this row on its own: forms' DepositDossier stands for both
/// Deposer and ResolveCorrection (the state picks), so for the owner only the row of the
/// command the state picks is observable.
fn observable(r: &TableRow) -> bool {
    let owner_deposit = r.actor == ActorKind::Owner
        && matches!(
            r.command,
            CommandKind::Deposer | CommandKind::ResolveCorrection
        );
    !owner_deposit || r.before.deposit_command().kind() == r.command
}

struct Tally {
    accepted: usize,
    refused: usize,
    skipped: usize,
}

/// Runs `r` on `number` and checks the outcome, the state and the events.
async fn check_row(
    stack: &Stack,
    events: &mut Events,
    procedure_id: &str,
    number: i64,
    r: &TableRow,
    tally: &mut Tally,
) {
    let db = stack.instruction.db();
    let label = format!(
        "{:?} closed={} {} {}",
        r.key, r.procedure_closed, r.actor, r.command
    );
    let before = row(db, number).await;
    let counts = events.quiet(db).await;
    let observed = run(
        stack,
        procedure_id,
        number,
        r.actor,
        r.command,
        r.outcome.is_ok(),
    )
    .await;
    let mut want_outcome = expected(r);
    // Forms answers a stranger as for a dossier that does not exist (he learns nothing): the
    // domain's FORBIDDEN surfaces as NOT_FOUND on forms' DepositDossier.
    if r.actor == ActorKind::Other
        && matches!(
            r.command,
            CommandKind::Deposer | CommandKind::ResolveCorrection
        )
        && want_outcome == Err((ErrorCategory::PermissionDenied, String::new()))
    {
        want_outcome = Err((ErrorCategory::NotFound, String::new()));
    }
    assert_eq!(observed, want_outcome, "{label}");
    let after = row(db, number).await;
    let mut want = counts.clone();
    match &r.outcome {
        Ok(t) => {
            tally.accepted += 1;
            assert_eq!(key_of(&after), t.state.key(), "{label}");
            assert_eq!(after.version, before.version + 1, "{label}");
            *want.get_mut(subject_of(&t.event.kind)).unwrap() += 1;
            assert_eq!(
                events.settle(&want).await,
                want,
                "{label}: exactly one event"
            );
        }
        Err(_) => {
            tally.refused += 1;
            assert_eq!(
                (key_of(&after), after.version),
                (key_of(&before), before.version),
                "{label}: a refusal changes nothing"
            );
            assert_eq!(
                events.counts().await,
                want,
                "{label}: a refusal publishes nothing"
            );
        }
    }
}

async fn add_groupe(stack: &Stack, label: &str, cpam: &str, dep: &str, emails: &[&str]) -> String {
    let mut client = roster(stack).await;
    let groupe = client
        .create_groupe(admin(mst_proto::instruction::CreateGroupeRequest {
            label: label.into(),
            cpam_values: vec![cpam.into()],
            departement_codes: vec![dep.into()],
            is_default: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .groupe
        .unwrap();
    for email in emails {
        client
            .add_instructeur(admin(mst_proto::instruction::AddInstructeurRequest {
                email: (*email).into(),
                groupe_id: groupe.id.clone(),
                name: (*email).into(),
            }))
            .await
            .unwrap();
    }
    groupe.id
}

async fn close_procedure(stack: &Stack, procedure_id: &str) {
    let procedure = forms(stack)
        .await
        .get_procedure(admin(pb::GetProcedureRequest {
            procedure_id: procedure_id.into(),
            include_published_revision: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .procedure
        .unwrap();
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    forms_admin(stack)
        .await
        .update_procedure(admin(pb::UpdateProcedureRequest {
            procedure_id: procedure_id.into(),
            expected_version: procedure.version,
            procedure: Some(pb::Procedure {
                closing_at: Some(past.into()),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["closing_at".into()],
            }),
        }))
        .await
        .unwrap();
    let db = stack.instruction.db().clone();
    let id = procedure_id.to_owned();
    mst_testkit::wait_until(Duration::from_secs(20), || {
        let (db, id) = (db.clone(), id.clone());
        async move {
            procedure::Entity::find_by_id(id)
                .one(&db)
                .await
                .ok()
                .flatten()
                .and_then(|p| p.closing_at)
        }
    })
    .await
    .unwrap();
}

fn shared_of(shared: &[(StateKey, i64)], key: StateKey) -> i64 {
    shared.iter().find(|(k, _)| *k == key).unwrap().1
}

#[tokio::test]
async fn every_triple_of_the_transition_table_behaves_as_specified_through_the_services() {
    let started = Instant::now();
    let stack = Stack::start().await.unwrap();
    publish_test_procedure(&stack, "test-table").await;
    publish_test_procedure(&stack, "test-table-closed").await;
    roster_cpam13(&stack).await;
    add_groupe(
        &stack,
        "CPAM de Paris",
        "CPAM de Paris (75)",
        "75",
        &[INSTRUCTEUR_75],
    )
    .await;
    let mut events = Events::new(&stack).await;
    let now = chrono::Utc::now();
    let mut tally = Tally {
        accepted: 0,
        refused: 0,
        skipped: 0,
    };

    // Procedure open: every row. One dossier per state for the refusals (they change nothing),
    // a fresh one per accepted row.
    let open: Vec<TableRow> = transition_table(now)
        .filter(|r| !r.procedure_closed)
        .collect();
    for key in StateKey::ALL {
        if key.path_from_brouillon().is_none() {
            continue;
        }
        let shared = reach(&stack, "test-table", key).await;
        for r in open.iter().filter(|r| r.key == key) {
            if !observable(r) {
                tally.skipped += 1;
                continue;
            }
            let number = if r.outcome.is_ok() {
                reach(&stack, "test-table", key).await
            } else {
                shared
            };
            check_row(&stack, &mut events, "test-table", number, r, &mut tally).await;
        }
    }

    // Procedure closed: only deposits and the automatic passage depend on the closing date.
    let closed: Vec<TableRow> = transition_table(now)
        .filter(|r| r.procedure_closed)
        .collect();
    let depends = |c: CommandKind| {
        matches!(
            c,
            CommandKind::Deposer
                | CommandKind::ResolveCorrection
                | CommandKind::PasserEnInstructionAuto
        )
    };
    for r in closed.iter().filter(|r| !depends(r.command)) {
        let twin = open
            .iter()
            .find(|o| (o.key, o.actor, o.command) == (r.key, r.actor, r.command))
            .unwrap();
        assert_eq!(
            r.outcome, twin.outcome,
            "{r:?}: the closing date matters only to deposits and the automatic passage"
        );
    }
    let mut shared: Vec<(StateKey, i64)> = Vec::new();
    let mut fresh = Vec::new();
    for key in StateKey::ALL {
        if key.path_from_brouillon().is_none() {
            continue;
        }
        shared.push((key, reach(&stack, "test-table-closed", key).await));
        for r in closed.iter().filter(|r| r.key == key && depends(r.command)) {
            // The automatic passage runs through the scheduler, below, on the shared dossiers.
            if r.outcome.is_ok()
                && r.command != CommandKind::PasserEnInstructionAuto
                && observable(r)
            {
                fresh.push((reach(&stack, "test-table-closed", key).await, r));
            }
        }
    }
    close_procedure(&stack, "test-table-closed").await;
    for r in closed.iter().filter(|r| depends(r.command)) {
        if !observable(r) {
            tally.skipped += 1;
        } else if r.outcome.is_err() {
            check_row(
                &stack,
                &mut events,
                "test-table-closed",
                shared_of(&shared, r.key),
                r,
                &mut tally,
            )
            .await;
        }
    }
    let fresh_numbers: Vec<i64> = fresh.iter().map(|(n, _)| *n).collect();
    for (number, r) in fresh {
        check_row(
            &stack,
            &mut events,
            "test-table-closed",
            number,
            r,
            &mut tally,
        )
        .await;
    }
    // The scheduler: every en_construction dossier of the closed procedure passes, each with
    // one event (the rows PasserEnInstructionAuto × system × en_construction, pending or not).
    let db = stack.instruction.db();
    let auto: Vec<&TableRow> = closed
        .iter()
        .filter(|r| r.command == CommandKind::PasserEnInstructionAuto && r.outcome.is_ok())
        .collect();
    assert!(
        auto.iter()
            .all(|r| r.actor == ActorKind::System && r.key.status == Status::EnConstruction)
    );
    let mut waiting = Vec::new();
    for number in shared.iter().map(|(_, n)| *n).chain(fresh_numbers) {
        let d = row(db, number).await;
        if d.status == Status::EnConstruction.as_str() {
            waiting.push((number, d.clone()));
        }
    }
    for r in &auto {
        let number = shared_of(&shared, r.key);
        assert!(waiting.iter().any(|(n, _)| *n == number), "{r:?}");
    }
    let mut want = events.counts().await;
    let moved = stack
        .instruction
        .close_due_procedures(chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(moved, waiting.len());
    *want.get_mut(ev::DossierStatusChanged::SUBJECT).unwrap() += moved as u64;
    assert_eq!(
        events.settle(&want).await,
        want,
        "one event per automatic passage"
    );
    for (number, before) in &waiting {
        let after = row(db, *number).await;
        assert_eq!(
            (key_of(&after), after.version),
            (StateKey::plain(Status::EnInstruction), before.version + 1),
            "dossier {number}"
        );
    }
    tally.accepted += auto.len();
    assert_eq!(
        stack
            .instruction
            .close_due_procedures(chrono::Utc::now())
            .await
            .unwrap(),
        0
    );

    println!(
        "transition table through the services: {} accepted, {} refused, {} not observable separately (owner deposit vs resolution), {:.1} s",
        tally.accepted,
        tally.refused,
        tally.skipped,
        started.elapsed().as_secs_f64()
    );
    stack.stop(Duration::from_secs(10)).await.unwrap();
}

// ---- dashboard counters through a random sequence ----

const PROC_BOARD: &str = "test-board";
const BRUNO: &str = "bruno.petit@cpam13.example";
const CLARA: &str = "clara.nord@cpam59.example";

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query")
        .expect("row");
    row.try_get_by_index::<i64>(0).expect("count")
}

/// The counters of a groupe recounted from scratch with plain COUNT queries.
async fn recount(db: &DatabaseConnection, groupe: &str, me: &str) -> Counts {
    let base = format!(
        "FROM dossiers d WHERE d.procedure_id = '{PROC_BOARD}' AND d.groupe_id = '{groupe}' \
         AND d.status <> 'brouillon' AND NOT d.deleted"
    );
    let open = "SELECT f.dossier_number FROM follows f WHERE f.unfollowed_at IS NULL";
    let undecided = "d.status IN ('en_construction', 'en_instruction')";
    Counts {
        a_suivre: scalar(
            db,
            &format!(
                "SELECT COUNT(*) {base} AND NOT d.archived AND {undecided} \
                 AND d.number NOT IN ({open})"
            ),
        )
        .await,
        suivis: scalar(
            db,
            &format!(
                "SELECT COUNT(*) {base} AND NOT d.archived AND {undecided} \
                 AND d.number IN ({open} AND f.email = '{me}')"
            ),
        )
        .await,
        traites: scalar(
            db,
            &format!(
                "SELECT COUNT(*) {base} AND NOT d.archived \
                 AND d.status IN ('accepte', 'refuse', 'sans_suite')"
            ),
        )
        .await,
        tous: scalar(db, &format!("SELECT COUNT(*) {base} AND NOT d.archived")).await,
        archives: scalar(db, &format!("SELECT COUNT(*) {base} AND d.archived")).await,
    }
}

async fn dashboard(stack: &Stack, who: &str, groupe: &str) -> Counts {
    stack
        .instruction
        .dashboard(&person(who, Role::Instructeur), Some(PROC_BOARD))
        .await
        .expect("dashboard")
        .into_iter()
        .find(|e| e.groupe_id == groupe)
        .map(|e| e.counts)
        .unwrap_or_default()
}

/// xorshift64*: a reproducible sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Follow,
    Unfollow,
    Resubmit,
    Command(CommandKind),
}

/// The steps that make sense in `key` (a random one is picked most of the time).
fn sensible(key: StateKey) -> Vec<Step> {
    use CommandKind as C;
    let mut steps = vec![Step::Follow, Step::Unfollow];
    match (key.status, key.archived, key.correction_pending) {
        (Status::EnConstruction, _, true) => steps.push(Step::Resubmit),
        (Status::EnConstruction, _, false) => steps.push(Step::Command(C::PasserEnInstruction)),
        (Status::EnInstruction, _, _) => steps.extend(
            [
                C::RepasserEnConstruction,
                C::DemanderCorrection,
                C::Accepter,
                C::Refuser,
                C::ClasserSansSuite,
            ]
            .map(Step::Command),
        ),
        (_, true, _) => steps.push(Step::Command(C::Unarchive)),
        (_, false, _) => steps.extend([C::RepasserEnInstruction, C::Archive].map(Step::Command)),
    }
    steps
}

const ALL_STEPS: [Step; 12] = [
    Step::Follow,
    Step::Unfollow,
    Step::Resubmit,
    Step::Command(CommandKind::PasserEnInstruction),
    Step::Command(CommandKind::RepasserEnConstruction),
    Step::Command(CommandKind::DemanderCorrection),
    Step::Command(CommandKind::Accepter),
    Step::Command(CommandKind::Refuser),
    Step::Command(CommandKind::ClasserSansSuite),
    Step::Command(CommandKind::RepasserEnInstruction),
    Step::Command(CommandKind::Archive),
    Step::Command(CommandKind::Unarchive),
];

fn command(kind: CommandKind, rng: &mut Rng) -> Command {
    match kind {
        CommandKind::RepasserEnConstruction => Command::RepasserEnConstruction { message: None },
        CommandKind::DemanderCorrection => Command::DemanderCorrection {
            message: Message::parse("Merci de compléter le budget.").unwrap(),
            reason: CorrectionReason::Incomplete,
        },
        CommandKind::Accepter => Command::Accepter {
            motivation: None,
            justificatif: None,
        },
        CommandKind::Refuser => Command::Refuser {
            motivation: Motivation::parse("Hors du champ de l'appel à projets.").unwrap(),
            justificatif: None,
        },
        CommandKind::ClasserSansSuite => Command::ClasserSansSuite {
            motivation: Motivation::parse("Le porteur a renoncé.").unwrap(),
            justificatif: None,
        },
        CommandKind::RepasserEnInstruction => Command::RepasserEnInstruction {
            message: rng.chance(50).then(|| Message::parse("Réexamen.").unwrap()),
        },
        other => other.sample(),
    }
}

async fn new_deposit(stack: &Stack, in_13: bool) -> i64 {
    let d = create(stack, OWNER, PROC_BOARD).await;
    let mut answers = complete_answers();
    if !in_13 {
        answers.push(set(
            "departement",
            pb::champ_value::Value::Departement("59".into()),
        ));
    }
    let d = update(stack, OWNER, d.number, d.version, answers)
        .await
        .unwrap();
    deposit(stack, OWNER, d.number, d.version).await.unwrap();
    d.number
}

#[tokio::test]
async fn dashboard_counters_stay_exact_through_1000_random_transitions_including_decisions() {
    const STEPS: usize = 1_000;
    let stack = Stack::start().await.unwrap();
    publish_test_procedure(&stack, PROC_BOARD).await;
    let g13 = roster_cpam13(&stack).await;
    let g59 = add_groupe(
        &stack,
        "CPAM des Flandres",
        "CPAM des Flandres (59)",
        "59",
        &[CLARA],
    )
    .await;
    // Bruno joins the groupe 13 too.
    roster(&stack)
        .await
        .add_instructeur(admin(mst_proto::instruction::AddInstructeurRequest {
            email: BRUNO.into(),
            groupe_id: g13.clone(),
            name: "Bruno Petit".into(),
        }))
        .await
        .unwrap();
    let people = [(INSTRUCTEUR, &g13), (BRUNO, &g13), (CLARA, &g59)];
    let db = stack.instruction.db().clone();
    let mut rng = Rng(0x5eed_c0de_2026);
    let mut numbers: Vec<i64> = Vec::new();
    let mut tally: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let started = Instant::now();
    for step in 0..STEPS {
        let what;
        let ok;
        if numbers.is_empty() || rng.below(8) == 0 {
            numbers.push(new_deposit(&stack, rng.chance(65)).await);
            what = "deposer".to_owned();
            ok = true;
        } else {
            let number = numbers[rng.below(numbers.len())];
            let before = row(&db, number).await;
            let choice = if rng.chance(85) {
                let steps = sensible(key_of(&before));
                steps[rng.below(steps.len())]
            } else {
                ALL_STEPS[rng.below(ALL_STEPS.len())]
            };
            // Mostly an instructeur of the dossier's groupe; sometimes anyone of the three.
            let who = if rng.chance(80) {
                let mine: Vec<&str> = people
                    .iter()
                    .filter(|(_, g)| before.groupe_id.as_deref() == Some(g.as_str()))
                    .map(|(e, _)| *e)
                    .collect();
                mine[rng.below(mine.len())]
            } else {
                people[rng.below(people.len())].0
            };
            let me = person(who, Role::Instructeur);
            let result: Result<(), String> = match choice {
                Step::Follow | Step::Unfollow => stack
                    .instruction
                    .set_follow(&me, number, choice == Step::Follow)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}")),
                Step::Resubmit => deposit_as(&stack, OWNER, number)
                    .await
                    .map_err(|s| format!("{s:?}")),
                Step::Command(kind) => stack
                    .instruction
                    .transition(&me, number, before.version, command(kind, &mut rng))
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        assert!(
                            matches!(e, AppError::NotFound(..) | AppError::WrongState { .. }),
                            "step {step}: {kind} on {number}: {e:?}"
                        );
                        format!("{e:?}")
                    }),
            };
            what = match choice {
                Step::Follow => "follow".to_owned(),
                Step::Unfollow => "unfollow".to_owned(),
                Step::Resubmit => "resubmit".to_owned(),
                Step::Command(k) => k.as_str().to_owned(),
            };
            ok = result.is_ok();
            if let Err(e) = &result {
                let after = row(&db, number).await;
                assert_eq!(
                    (key_of(&after), after.version),
                    (key_of(&before), before.version),
                    "step {step}: refused {what} changed the dossier: {e}"
                );
            }
        }
        let t = tally.entry(what).or_default();
        if ok {
            t.0 += 1;
        } else {
            t.1 += 1;
        }
        for (who, groupe) in &people {
            assert_eq!(
                dashboard(&stack, who, groupe).await,
                recount(&db, groupe, who).await,
                "step {step}, {who}"
            );
        }
    }
    let mut by_status = BTreeMap::new();
    for number in &numbers {
        let d = row(&db, *number).await;
        *by_status
            .entry(format!(
                "{}{}",
                d.status,
                if d.archived { "+archived" } else { "" }
            ))
            .or_insert(0) += 1;
    }
    println!(
        "{STEPS} random steps in {:.1} s; (accepted, refused) per step kind: {tally:?}; final states: {by_status:?}",
        started.elapsed().as_secs_f64()
    );
    stack.stop(Duration::from_secs(10)).await.unwrap();
}
