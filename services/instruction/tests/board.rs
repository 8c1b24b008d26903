//! The instructeur dashboard and lists, on the database chosen by `MST_TEST_DB` (SQLite by
//! default, PostgreSQL with `MST_TEST_DB=postgres`): tab counters and list pages for a small
//! realistic set, and the counters checked against a recount through a random sequence of
//! 1,000 deposits, follows and unfollows.

use std::collections::BTreeSet;

use chrono::Utc;
use mst_bus::RelayHandle;
use mst_instruction::app::board::{self, Counts, ListRequest, SortKey, Tab};
use mst_instruction::app::roster::NewGroupe;
use mst_instruction::app::{AppError, DepositInput, FormsFreeze, Headline, Instruction};
use mst_kit::auth::{Principal, Role};
use mst_kit::config::DatabaseSettings;
use mst_migrations::MigratorTrait;
use mst_proto::events as ev;
use mst_testkit::TestDb;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

/// Whether the workflow calls `board::sync_dossier` itself (the lead wires it into
/// `commit_transition`, `set_follow`, `record_deposit`, `on_dossier_deleted`). Until then the
/// tests call it after each use case — it is idempotent, so doing both is harmless.
const HOOKS_WIRED: bool = true;

const PROCEDURE: &str = "proc-mst";
const G13_CPAM: &str = "CPAM des Bouches-du-Rhône (13)";
const G59_CPAM: &str = "CPAM des Flandres (59)";

struct TestApp {
    instruction: Instruction,
    g13: String,
    g59: String,
    _db: TestDb,
}

impl TestApp {
    fn db(&self) -> &DatabaseConnection {
        self.instruction.db()
    }

    async fn sync(&self, number: i64) {
        if !HOOKS_WIRED {
            board::sync_dossier(self.db(), number).await.expect("sync");
        }
    }
}

fn person(email: &str, roles: &[Role]) -> Principal {
    Principal {
        email: email.to_owned(),
        name: None,
        roles: roles.iter().copied().collect::<BTreeSet<_>>(),
    }
}

fn admin() -> Principal {
    person("admin@mst.test", &[Role::Admin])
}

fn system() -> Principal {
    person("forms@mst.internal", &[Role::System])
}

const ALICE: &str = "alice@assurance-maladie.fr";
const BRUNO: &str = "bruno@assurance-maladie.fr";
const CLARA: &str = "clara@assurance-maladie.fr";

fn instructeur(email: &str) -> Principal {
    person(email, &[Role::Instructeur])
}

async fn spawn_app() -> TestApp {
    let test_db = TestDb::new().await.expect("test database");
    let db = mst_kit::db::connect(&DatabaseSettings {
        url: test_db.url().to_owned(),
        max_connections: 4,
        migrate_on_start: false,
    })
    .await
    .expect("connect");
    mst_migrations::instruction::Migrator::up(&db, None)
        .await
        .expect("migrate");
    let instruction = Instruction::new(db, RelayHandle::default(), FormsFreeze::unconfigured());
    let mut ids = Vec::new();
    for (label, cpam, dep) in [
        ("CPAM des Bouches-du-Rhône", G13_CPAM, "13"),
        ("CPAM des Flandres", G59_CPAM, "59"),
    ] {
        let g = instruction
            .create_groupe(
                &admin(),
                NewGroupe {
                    label: label.into(),
                    cpam_values: vec![cpam.into()],
                    departement_codes: vec![dep.into()],
                    is_default: false,
                },
            )
            .await
            .expect("groupe");
        ids.push(g.id);
    }
    let (g13, g59) = (ids[0].clone(), ids[1].clone());
    for (email, g) in [(ALICE, &g13), (BRUNO, &g13), (CLARA, &g59)] {
        instruction
            .add_instructeur(&admin(), email, g, "")
            .await
            .expect("instructeur");
    }
    TestApp {
        instruction,
        g13,
        g59,
        _db: test_db,
    }
}

fn deposit_input(number: i64, title: &str, structure: &str, in_13: bool) -> DepositInput {
    let (cpam, dep) = if in_13 {
        (G13_CPAM, "13")
    } else {
        (G59_CPAM, "59")
    };
    DepositInput {
        number,
        deposit_id: format!("dep-{number}"),
        procedure: ev::ProcedureRef {
            id: PROCEDURE.into(),
            title: "Mon soutien territorial".into(),
            kind: ev::DossierKind::Projet as i32,
        },
        revision_id: "rev-1".into(),
        owner_email: format!("porteur{number}@example.org"),
        invitee_emails: vec![],
        content_version: 1,
        headline: Headline {
            title: title.into(),
            structure_name: structure.into(),
            siret: "12345678901234".into(),
            region_code: "93".into(),
            departement_code: dep.into(),
            cpam: cpam.into(),
        },
        created_at: Utc::now(),
    }
}

async fn deposit(app: &TestApp, number: i64, title: &str, structure: &str, in_13: bool) {
    app.instruction
        .record_deposit(&system(), deposit_input(number, title, structure, in_13))
        .await
        .expect("deposit");
    app.sync(number).await;
}

async fn follow(app: &TestApp, email: &str, number: i64, on: bool) -> Result<(), AppError> {
    app.instruction
        .set_follow(&instructeur(email), number, on)
        .await?;
    app.sync(number).await;
    Ok(())
}

async fn counts(app: &TestApp, who: &str, groupe: &str) -> Counts {
    app.instruction
        .dashboard(&instructeur(who), Some(PROCEDURE))
        .await
        .expect("dashboard")
        .into_iter()
        .find(|e| e.groupe_id == groupe)
        .map(|e| e.counts)
        .unwrap_or_default()
}

fn list(tab: Tab) -> ListRequest {
    ListRequest {
        procedure_id: PROCEDURE.into(),
        tab,
        statuses: vec![],
        followed_by_me: false,
        deposited_after: None,
        deposited_before: None,
        groupe_ids: vec![],
        text: String::new(),
        sort: SortKey::Number,
        descending: false,
        columns: vec![],
        page_size: 0,
        page_token: String::new(),
    }
}

async fn numbers(app: &TestApp, who: &str, req: ListRequest) -> Vec<i64> {
    app.instruction
        .list_dossiers(&instructeur(who), req)
        .await
        .expect("list")
        .rows
        .iter()
        .map(|r| r.row.number)
        .collect()
}

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
        "FROM dossiers d WHERE d.procedure_id = '{PROCEDURE}' AND d.groupe_id = '{groupe}' \
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

#[tokio::test]
async fn the_dashboard_and_the_tabs_show_the_dossiers_of_my_groupes_only() {
    let app = spawn_app().await;
    deposit(
        &app,
        101,
        "Maison de santé",
        "Association Soins pour tous",
        true,
    )
    .await;
    deposit(&app, 102, "Bus santé", "Commune de Martigues", true).await;
    deposit(&app, 103, "Centre de prévention", "Mutuelle du Sud", true).await;
    deposit(&app, 201, "Équipe mobile", "Association du Nord", false).await;
    follow(&app, ALICE, 101, true).await.expect("follow");
    follow(&app, BRUNO, 102, true).await.expect("follow");

    let alice = counts(&app, ALICE, &app.g13).await;
    assert_eq!(
        alice,
        Counts {
            a_suivre: 1,
            suivis: 1,
            traites: 0,
            tous: 3,
            archives: 0
        }
    );
    assert_eq!(alice, recount(app.db(), &app.g13, ALICE).await);
    // Alice's dashboard has no line for the Flandres groupe.
    let lines = app
        .instruction
        .dashboard(&instructeur(ALICE), None)
        .await
        .expect("dashboard");
    assert!(lines.iter().all(|e| e.groupe_id == app.g13));
    assert_eq!(counts(&app, CLARA, &app.g59).await.a_suivre, 1);

    assert_eq!(
        numbers(&app, ALICE, list(Tab::Tous)).await,
        vec![101, 102, 103]
    );
    assert_eq!(numbers(&app, ALICE, list(Tab::ASuivre)).await, vec![103]);
    assert_eq!(numbers(&app, ALICE, list(Tab::Suivis)).await, vec![101]);
    assert_eq!(numbers(&app, BRUNO, list(Tab::Suivis)).await, vec![102]);
    assert!(numbers(&app, ALICE, list(Tab::Traites)).await.is_empty());
    assert_eq!(numbers(&app, CLARA, list(Tab::Tous)).await, vec![201]);

    // Free text, case-insensitive, on the title, the structure and the number.
    let mut by_text = list(Tab::Tous);
    by_text.text = "MARTIGUES".into();
    assert_eq!(numbers(&app, ALICE, by_text.clone()).await, vec![102]);
    by_text.text = "103".into();
    assert_eq!(numbers(&app, ALICE, by_text).await, vec![103]);

    // Pages of one, descending, through the cursor.
    let mut req = list(Tab::Tous);
    req.page_size = 1;
    req.descending = true;
    let mut seen = Vec::new();
    loop {
        let page = app
            .instruction
            .list_dossiers(&instructeur(ALICE), req.clone())
            .await
            .expect("page");
        assert_eq!(page.total_count, 3);
        seen.extend(page.rows.iter().map(|r| r.row.number));
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    assert_eq!(seen, vec![103, 102, 101]);

    // A cursor is bound to its query.
    let first = app
        .instruction
        .list_dossiers(&instructeur(ALICE), {
            let mut r = list(Tab::Tous);
            r.page_size = 1;
            r
        })
        .await
        .expect("page");
    let mut other = list(Tab::ASuivre);
    other.page_token = first.next_page_token;
    assert!(matches!(
        app.instruction
            .list_dossiers(&instructeur(ALICE), other)
            .await,
        Err(AppError::BadRequest(_))
    ));

    // Another groupe's id in the filter is refused; an undeclared instructeur sees nothing.
    let mut foreign = list(Tab::Tous);
    foreign.groupe_ids = vec![app.g59.clone()];
    assert!(matches!(
        app.instruction
            .list_dossiers(&instructeur(ALICE), foreign)
            .await,
        Err(AppError::BadRequest(_))
    ));
    assert!(matches!(
        app.instruction
            .dashboard(&instructeur("inconnu@example.org"), None)
            .await,
        Err(AppError::Forbidden(_))
    ));
}

#[tokio::test]
async fn column_preferences_are_validated_saved_and_used_by_the_list() {
    let app = spawn_app().await;
    deposit(&app, 101, "Maison de santé", "Association", true).await;
    let alice = instructeur(ALICE);
    let (available, selected) = app
        .instruction
        .column_preferences(&alice, PROCEDURE)
        .await
        .expect("get");
    assert_eq!(available.len(), board::COLUMNS.len());
    assert_eq!(selected, board::DEFAULT_COLUMNS.map(String::from).to_vec());
    for wrong in [
        vec!["nope".to_owned()],
        vec!["number".to_owned(), "number".to_owned()],
        (0..21).map(|_| "number".to_owned()).collect(),
    ] {
        assert!(matches!(
            app.instruction
                .update_column_preferences(&alice, PROCEDURE, wrong)
                .await,
            Err(AppError::BadRequest(_))
        ));
    }
    assert!(matches!(
        app.instruction
            .update_column_preferences(&alice, "inconnue", vec!["number".into()])
            .await,
        Err(AppError::NotFound(..))
    ));
    let chosen = vec!["title".to_owned(), "number".to_owned()];
    let saved = app
        .instruction
        .update_column_preferences(&alice, PROCEDURE, chosen.clone())
        .await
        .expect("update");
    assert_eq!(saved, chosen);
    let page = app
        .instruction
        .list_dossiers(&alice, list(Tab::Tous))
        .await
        .expect("list");
    let ids: Vec<&str> = page.columns.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["title", "number"]);
    assert_eq!(page.rows[0].cells[0].1, "Maison de santé");
    assert_eq!(page.rows[0].cells[1].1, "101");
}

/// Covers deposits (new dossiers, routed to either groupe), follows and unfollows by three
/// instructeurs (refused ones included: another groupe's dossier), i.e. the à suivre / suivis /
/// tous buckets; status changes past en_construction need the forms freeze, not configured here.
/// A tiny deterministic generator (xorshift64*), so the sequence is reproducible.
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

#[tokio::test]
async fn counters_stay_exact_through_a_random_sequence_of_1000_transitions() {
    let app = spawn_app().await;
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut deposited: Vec<i64> = Vec::new();
    let mut next = 1_000_i64;
    for step in 0..1_000 {
        if deposited.is_empty() || rng.below(4) == 0 {
            next += 1;
            deposit(&app, next, "Projet", "Structure", rng.chance(60)).await;
            deposited.push(next);
        } else {
            let number = deposited[rng.below(deposited.len())];
            let who = [ALICE, BRUNO, CLARA][rng.below(3)];
            match follow(&app, who, number, rng.chance(60)).await {
                Ok(()) | Err(AppError::NotFound(..)) => {}
                Err(e) => panic!("step {step}: {e:?}"),
            }
        }
        for (who, groupe) in [(ALICE, &app.g13), (BRUNO, &app.g13), (CLARA, &app.g59)] {
            assert_eq!(
                counts(&app, who, groupe).await,
                recount(app.db(), groupe, who).await,
                "step {step}, {who}"
            );
        }
    }
}

fn spec(app: &TestApp, tab: Tab) -> mst_instruction::store::board::ListSpec {
    mst_instruction::store::board::ListSpec {
        procedure_id: PROCEDURE.into(),
        groupes: vec![app.g13.clone()],
        me: ALICE.into(),
        tab,
        statuses: vec![],
        followed_by_me: false,
        deposited_after: None,
        deposited_before: None,
        words: vec![],
        sort: SortKey::Number,
        descending: false,
    }
}

#[tokio::test]
async fn a_whole_tab_is_counted_exactly_and_a_filtered_list_up_to_the_cap() {
    use mst_instruction::domain::Status;
    use mst_instruction::store::board::count;

    let app = spawn_app().await;
    for n in 301..=306 {
        deposit(&app, n, "Atelier tabac", "Association Souffle", true).await;
    }
    deposit(&app, 307, "Atelier tabac", "Association du Nord", false).await;
    for n in [301, 302] {
        follow(&app, ALICE, n, true).await.expect("follow");
    }
    follow(&app, BRUNO, 303, true).await.expect("follow");
    let db = app.db();

    // Whole tabs: the maintained counters, whatever the cap.
    for (tab, want) in [
        (Tab::Tous, 6),
        (Tab::ASuivre, 3),
        (Tab::Suivis, 2),
        (Tab::Traites, 0),
    ] {
        assert_eq!(
            count(db, &spec(&app, tab), 1).await.expect("count"),
            (want, false),
            "{tab:?}"
        );
    }
    // Filters: counted up to the cap, then « more than ».
    let mut by_status = spec(&app, Tab::Tous);
    by_status.statuses = vec![Status::EnConstruction];
    assert_eq!(count(db, &by_status, 3).await.expect("count"), (3, true));
    assert_eq!(count(db, &by_status, 6).await.expect("count"), (6, false));
    let mut by_text = spec(&app, Tab::Suivis);
    by_text.words = vec!["tabac".into()];
    assert_eq!(count(db, &by_text, 1).await.expect("count"), (1, true));
    assert_eq!(count(db, &by_text, 2).await.expect("count"), (2, false));
    by_text.words = vec!["introuvable".into()];
    assert_eq!(count(db, &by_text, 1).await.expect("count"), (0, false));

    // Through the use case: the tab's total is exact and not capped.
    let page = app
        .instruction
        .list_dossiers(&instructeur(ALICE), list(Tab::Tous))
        .await
        .expect("list");
    assert_eq!((page.total_count, page.total_count_capped), (6, false));
}

#[tokio::test]
async fn the_suivis_counters_are_rebuilt_from_the_follows_when_the_migration_runs() {
    let app = spawn_app().await;
    for n in 401..=404 {
        deposit(&app, n, "Projet", "Structure", n % 2 == 0).await;
    }
    for (who, n) in [(ALICE, 402), (ALICE, 404), (BRUNO, 404), (CLARA, 401)] {
        follow(&app, who, n, true).await.expect("follow");
    }
    follow(&app, ALICE, 404, false).await.expect("unfollow");
    let before = [
        counts(&app, ALICE, &app.g13).await,
        counts(&app, BRUNO, &app.g13).await,
        counts(&app, CLARA, &app.g59).await,
    ];
    assert_eq!(
        before.map(|c| c.suivis),
        [1, 1, 1],
        "maintained by the use cases"
    );
    // Roll the step back (its tables go) and apply it again on existing dossiers and follows.
    mst_migrations::instruction::Migrator::down(app.db(), Some(1))
        .await
        .expect("down");
    mst_migrations::instruction::Migrator::up(app.db(), None)
        .await
        .expect("up");
    let after = [
        counts(&app, ALICE, &app.g13).await,
        counts(&app, BRUNO, &app.g13).await,
        counts(&app, CLARA, &app.g59).await,
    ];
    assert_eq!(after, before);
    assert_eq!(after[0], recount(app.db(), &app.g13, ALICE).await);
}

/// The status events dossier `number` enqueued, in order.
async fn status_events(app: &TestApp, number: i64) -> Vec<ev::DossierStatusChanged> {
    use mst_bus::outbox::entity as outbox;
    use mst_proto::Event as _;
    use prost::Message as _;
    use sea_orm::{EntityTrait as _, QueryOrder as _};
    outbox::Entity::find()
        .order_by_asc(outbox::Column::Seq)
        .all(app.db())
        .await
        .expect("outbox")
        .into_iter()
        .filter(|r| r.subject == ev::DossierStatusChanged::SUBJECT)
        .map(|r| ev::DossierStatusChanged::decode(r.payload.as_slice()).expect("payload"))
        .filter(|e| e.number == number)
        .collect()
}

/// The deposit's status event names the invitees forms sent with the deposit, even one whose
/// invitation has not reached instruction yet (invited just before depositing): messagerie emails
/// the deposit to them and keeps them in its projection for the later emails.
#[tokio::test]
async fn a_deposit_event_names_the_invitees_forms_sent_with_it() {
    let app = spawn_app().await;
    let mut input = deposit_input(77, "Souffle", "Asso", true);
    input.invitee_emails = vec!["lucie.bernard@asso-souffle.example".into()];
    app.instruction
        .record_deposit(&system(), input)
        .await
        .expect("deposit");
    let deposit = status_events(&app, 77)
        .await
        .pop()
        .expect("the deposit's status event");
    assert_eq!(
        deposit.invitee_emails,
        vec!["lucie.bernard@asso-souffle.example".to_owned()]
    );
}

/// Forms replays a deposit whose answer it did not get (instruction unreachable, or no answer
/// within the call's timeout) with the same deposit id: the replay answers the first outcome and
/// commits nothing more — one traitement, one status event.
#[tokio::test]
async fn a_replayed_deposit_answers_its_first_outcome_and_changes_nothing() {
    let app = spawn_app().await;
    let first = app
        .instruction
        .record_deposit(&system(), deposit_input(78, "Souffle", "Asso", true))
        .await
        .expect("deposit");
    let replay = app
        .instruction
        .record_deposit(&system(), deposit_input(78, "Souffle", "Asso", true))
        .await
        .expect("replay");
    assert_eq!(replay.status_version, first.status_version);
    assert_eq!(replay.deposited_at, first.deposited_at);
    assert_eq!(replay.groupe, first.groupe);
    assert!(!replay.correction_resolved);
    assert_eq!(status_events(&app, 78).await.len(), 1);
}
