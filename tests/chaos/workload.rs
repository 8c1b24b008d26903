//! The workload: concurrent promoteurs and instructeurs driving dossiers over gRPC like real
//! clients during faults. An answer lost to a fault (UNAVAILABLE, a transport error, a timeout) is
//! an unknown outcome: the client reads the state back and decides — creation is idempotent by
//! its request id, saves and transitions carry the expected version. Only autosaves that returned
//! OK are recorded for the I2 check.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use mst_e2e::Services;
use mst_e2e::processes::ProcessStack;
use mst_e2e::support::{
    INSTRUCTEUR, admin, as_, complete_answers, promoteur, set, test_definition,
};
use mst_kit::auth::Role;
use mst_proto::events as ev;
use mst_proto::forms as fpb;
use mst_proto::forms::forms_service_client::FormsServiceClient;
use mst_proto::instruction as ipb;
use mst_proto::instruction::instruction_service_client::InstructionServiceClient;
use mst_proto::messagerie::messagerie_service_client::MessagerieServiceClient;
use mst_proto::oscars::oscars_service_client::OscarsServiceClient;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::Profile;

/// The test procedure's id.
pub const PROCEDURE: &str = "chaos";
/// How long one operation may keep retrying before the run is declared stuck: longer than a
/// freeze hold left by a transition that never committed lives (forms releases it after
/// `MST_FREEZE_RELEASE_AFTER_SECS`, 120 s here, on its next one-minute round).
const OP_DEADLINE: Duration = Duration::from_secs(300);
/// Pause between two attempts after an unknown outcome.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Where the services listen (the stack itself is behind the fault injector's lock).
#[derive(Debug, Clone)]
pub struct Urls {
    services: Vec<(String, String)>,
    nats: String,
    prefix: String,
}

impl Urls {
    pub fn of(stack: &ProcessStack) -> Self {
        Self {
            services: stack
                .services
                .iter()
                .map(|s| (s.name.to_owned(), s.url()))
                .collect(),
            nats: stack.nats.url(),
            prefix: stack.prefix.clone(),
        }
    }
}

impl Services for Urls {
    fn url(&self, name: &str) -> String {
        self.services
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, u)| u.clone())
            .unwrap_or_default()
    }
    fn nats_url(&self) -> String {
        self.nats.clone()
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// What the run starts from: the published procedure and the CPAM 13 groupe with its instructeur.
pub struct Setup;

pub async fn setup(stack: &ProcessStack) -> Setup {
    // The test procedure with a région (the fiche of an accepted dossier is filed under it).
    let mut definition = test_definition(PROCEDURE);
    definition.fields.push(
        mst_proto::json::decode(
            "mst.forms.v1.FieldDefinition",
            r#"{"id":"region","label":"Région","type":"FIELD_TYPE_REGION","required":true,"purpose":"FIELD_PURPOSE_REGION"}"#,
        )
        .unwrap(),
    );
    let outcome = mst_e2e::support::forms_admin(stack)
        .await
        .load_procedure(admin(fpb::LoadProcedureRequest {
            source: Some(fpb::load_procedure_request::Source::Definition(definition)),
            publish: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .outcome;
    assert_eq!(outcome, fpb::LoadOutcome::Created as i32);
    mst_e2e::support::roster_cpam13(stack).await;
    Setup
}

/// Lazily connected clients: a channel reconnects by itself once its server is back.
#[derive(Clone)]
pub struct Clients {
    pub forms: FormsServiceClient<Channel>,
    pub instruction: InstructionServiceClient<Channel>,
    pub messagerie: MessagerieServiceClient<Channel>,
    pub oscars: OscarsServiceClient<Channel>,
}

fn lazy(url: String) -> Channel {
    tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(15))
        .connect_lazy()
}

impl Clients {
    pub fn new(urls: &Urls) -> Self {
        Self {
            forms: FormsServiceClient::new(lazy(urls.url("forms")))
                .max_decoding_message_size(64 * 1024 * 1024),
            instruction: InstructionServiceClient::new(lazy(urls.url("instruction")))
                .max_decoding_message_size(64 * 1024 * 1024),
            messagerie: MessagerieServiceClient::new(lazy(urls.url("messagerie")))
                .max_decoding_message_size(64 * 1024 * 1024),
            oscars: OscarsServiceClient::new(lazy(urls.url("oscars")))
                .max_decoding_message_size(64 * 1024 * 1024),
        }
    }
}

/// An answer that says nothing about whether the call took effect.
pub fn unknown_outcome(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

/// The `google.rpc.ErrorInfo` reason of an error.
fn reason(s: &Status) -> Option<&'static str> {
    use tonic_types::StatusExt as _;
    let info = s.get_error_details().error_info()?.reason.clone();
    ["DOSSIER_FROZEN"].into_iter().find(|r| *r == info)
}

/// Counters shared by the clients and the fault injector.
#[derive(Default)]
pub struct Progress {
    /// Dossiers driven to their end.
    pub done: AtomicUsize,
    /// Calls repeated after an unknown outcome.
    pub retries: AtomicU64,
    /// Unknown outcomes that turned out to have taken effect (read back).
    pub landed_unacknowledged: AtomicU64,
    /// INTERNAL answers (retried; a fault should give UNAVAILABLE).
    pub internal: AtomicU64,
    /// Saves refused as frozen right after "repasser en construction" (forms not yet unfrozen).
    pub frozen_retries: AtomicU64,
    /// Transitions refused because a transition that never committed (its instruction process
    /// was killed, or its rollback was lost) still holds the freeze in forms.
    pub held: AtomicU64,
    /// Transitions and deposits acknowledged.
    pub transitions_acked: AtomicU64,
    /// Set once the workload is over.
    pub finished: std::sync::atomic::AtomicBool,
    /// A few answers worth reading (first ones of each kind).
    pub notes: Mutex<Vec<String>>,
}

impl Progress {
    fn note(&self, what: String) {
        let mut notes = self.notes.lock().unwrap();
        if notes.len() < 10 && !notes.contains(&what) {
            notes.push(what);
        }
    }
}

/// An autosave that returned OK: its row must be readable with its value at the end (I2).
#[derive(Debug, Clone)]
pub struct AckedSave {
    pub number: i64,
    pub owner: String,
    pub row_id: String,
    pub value: String,
    pub version: i64,
}

/// What the workload did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub numbers: Vec<(i64, String)>,
    pub saves: Vec<AckedSave>,
}

/// Drives `profile.dossiers` dossiers, `profile.concurrency` at a time.
pub async fn run(
    profile: &Profile,
    urls: &Urls,
    _setup: &Setup,
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    let clients = Clients::new(urls);
    let saves = Mutex::new(Vec::new());
    let results: Vec<anyhow::Result<(i64, String)>> = futures::stream::iter(0..profile.dossiers)
        .map(|i| {
            let d = Driver {
                c: clients.clone(),
                progress,
                saves: &saves,
                rng: StdRng::seed_from_u64(
                    profile.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                ),
                owner: format!("promoteur{:03}@chaos.example", i % 97),
            };
            d.drive()
        })
        .buffer_unordered(profile.concurrency)
        .collect()
        .await;
    progress.finished.store(true, Ordering::SeqCst);
    let mut outcome = Outcome {
        saves: saves.into_inner().unwrap_or_default(),
        ..Outcome::default()
    };
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(n) => outcome.numbers.push(n),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!(
            "{} dossier(s) could not be driven; first: {}",
            errors.len(),
            errors[..errors.len().min(5)].join(" | ")
        );
    }
    Ok(outcome)
}

fn instructeur<T>(message: T) -> tonic::Request<T> {
    as_(INSTRUCTEUR, &[Role::Instructeur], message)
}

/// A workflow step of the instructeur.
#[derive(Debug, Clone, Copy)]
enum Step {
    PasserEnInstruction,
    RepasserEnConstruction,
    DemanderCorrection,
    Accepter,
    Refuser,
    ClasserSansSuite,
    RepasserEnInstruction,
}

impl Step {
    fn statuses(self) -> (ev::DossierStatus, ev::DossierStatus) {
        use ev::DossierStatus as S;
        match self {
            Step::PasserEnInstruction => (S::EnConstruction, S::EnInstruction),
            Step::RepasserEnConstruction | Step::DemanderCorrection => {
                (S::EnInstruction, S::EnConstruction)
            }
            Step::Accepter => (S::EnInstruction, S::Accepte),
            Step::Refuser => (S::EnInstruction, S::Refuse),
            Step::ClasserSansSuite => (S::EnInstruction, S::SansSuite),
            Step::RepasserEnInstruction => (S::Accepte, S::EnInstruction),
        }
    }
}

struct Driver<'a> {
    c: Clients,
    progress: &'a Progress,
    saves: &'a Mutex<Vec<AckedSave>>,
    rng: StdRng,
    owner: String,
}

impl Driver<'_> {
    fn retried(&self) {
        self.progress.retries.fetch_add(1, Ordering::Relaxed);
    }

    async fn pause(&self) {
        tokio::time::sleep(RETRY_PAUSE).await;
    }

    /// Counts an answer that says nothing of the outcome (or INTERNAL, counted apart) and waits
    /// before the call is tried again.
    async fn unknown(&self, s: &Status) {
        if s.code() == Code::Internal {
            self.progress.internal.fetch_add(1, Ordering::Relaxed);
        }
        self.retried();
        self.pause().await;
    }

    /// Calls `f` until it gives an answer that is not an unknown outcome (reads, idempotent
    /// calls).
    async fn idempotent<T, F, Fut>(&self, what: &str, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = tokio::time::Instant::now() + OP_DEADLINE;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(s) if unknown_outcome(&s) || s.code() == Code::Internal => {
                    if tokio::time::Instant::now() > deadline {
                        anyhow::bail!("{what}: still failing after {OP_DEADLINE:?}: {s:?}");
                    }
                    self.unknown(&s).await;
                }
                Err(s) => anyhow::bail!("{what}: {s:?}"),
            }
        }
    }

    async fn forms_dossier(&self, number: i64) -> anyhow::Result<fpb::Dossier> {
        let owner = self.owner.clone();
        self.idempotent("GetDossier (forms)", || {
            let mut c = self.c.forms.clone();
            let r = promoteur(&owner, fpb::GetDossierRequest { number });
            async move { c.get_dossier(r).await }
        })
        .await?
        .into_inner()
        .dossier
        .ok_or_else(|| anyhow::anyhow!("no dossier in GetDossier"))
    }

    async fn instruction_dossier(&self, number: i64) -> anyhow::Result<ipb::Dossier> {
        self.idempotent("GetDossier (instruction)", || {
            let mut c = self.c.instruction.clone();
            let r = instructeur(ipb::GetDossierRequest { number });
            async move { c.get_dossier(r).await }
        })
        .await?
        .into_inner()
        .dossier
        .ok_or_else(|| anyhow::anyhow!("no dossier in GetDossier"))
    }

    async fn drive(mut self) -> anyhow::Result<(i64, String)> {
        let request_id = uuid::Uuid::from_u128(self.rng.random()).to_string();
        let owner = self.owner.clone();
        let created = self
            .idempotent("CreateDossier", || {
                let mut c = self.c.forms.clone();
                let r = promoteur(
                    &owner,
                    fpb::CreateDossierRequest {
                        procedure_id: PROCEDURE.into(),
                        request_id: request_id.clone(),
                    },
                );
                async move { c.create_dossier(r).await }
            })
            .await?
            .into_inner()
            .dossier
            .ok_or_else(|| anyhow::anyhow!("no dossier in CreateDossier"))?;
        let n = created.number;
        let mut version = created.version;
        let result = self.path(n, &mut version).await;
        self.progress.done.fetch_add(1, Ordering::Relaxed);
        result.map_err(|e| e.context(format!("dossier {n}")))?;
        Ok((n, owner))
    }

    async fn path(&mut self, n: i64, version: &mut i64) -> anyhow::Result<()> {
        let saves = self.rng.random_range(2..=5);
        for i in 0..saves {
            let mut patches = if i == 0 {
                let mut all = complete_answers();
                all.push(set("region", fpb::champ_value::Value::Region("93".into())));
                all
            } else {
                Vec::new()
            };
            patches.extend(row_patches(n, &format!("s{i}")));
            self.autosave(n, version, patches, &format!("s{i}")).await?;
        }
        self.deposit(n, version, false).await?;
        self.step(n, Step::PasserEnInstruction).await?;
        let detour: f64 = self.rng.random();
        if detour < 0.15 {
            self.step(n, Step::RepasserEnConstruction).await?;
            self.autosave(n, version, row_patches(n, "back"), "back")
                .await?;
            self.step(n, Step::PasserEnInstruction).await?;
        } else if detour < 0.30 {
            self.step(n, Step::DemanderCorrection).await?;
            self.autosave(n, version, row_patches(n, "fix"), "fix")
                .await?;
            self.deposit(n, version, true).await?;
            self.step(n, Step::PasserEnInstruction).await?;
        }
        let decision: f64 = self.rng.random();
        if decision < 0.45 {
            self.step(n, Step::Accepter).await?;
        } else if decision < 0.70 {
            self.step(n, Step::Refuser).await?;
        } else if decision < 0.85 {
            self.step(n, Step::ClasserSansSuite).await?;
        } else {
            // Accepted, re-opened (the fiche is withdrawn), refused.
            self.step(n, Step::Accepter).await?;
            self.step(n, Step::RepasserEnInstruction).await?;
            self.step(n, Step::Refuser).await?;
        }
        Ok(())
    }

    /// One autosave adding budget row `row` (its `poste` is the value checked at the end).
    async fn autosave(
        &self,
        n: i64,
        version: &mut i64,
        patches: Vec<fpb::ChampPatch>,
        row: &str,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + OP_DEADLINE;
        let mut attempted = false;
        loop {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "autosave {row}: no answer within {OP_DEADLINE:?}"
            );
            if attempted {
                // Did the unanswered save land? Then it is done (but not acknowledged).
                let current = self.forms_dossier(n).await?;
                if row_value(&current, row).is_some() {
                    self.progress
                        .landed_unacknowledged
                        .fetch_add(1, Ordering::Relaxed);
                    *version = current.version;
                    return Ok(());
                }
                *version = current.version;
            }
            let mut c = self.c.forms.clone();
            let r = promoteur(
                &self.owner,
                fpb::UpdateDossierRequest {
                    number: n,
                    expected_version: *version,
                    patches: patches.clone(),
                },
            );
            match c.update_dossier(r).await {
                Ok(saved) => {
                    let saved = saved
                        .into_inner()
                        .dossier
                        .ok_or_else(|| anyhow::anyhow!("no dossier in UpdateDossier"))?;
                    *version = saved.version;
                    self.saves.lock().unwrap().push(AckedSave {
                        number: n,
                        owner: self.owner.clone(),
                        row_id: row.to_owned(),
                        value: poste(n, row),
                        version: saved.version,
                    });
                    return Ok(());
                }
                Err(s) if unknown_outcome(&s) || s.code() == Code::Internal => {
                    attempted = true;
                    self.unknown(&s).await;
                }
                Err(s) if s.code() == Code::Aborted => attempted = true,
                // Right after "repasser en construction" forms may not have heard of it yet
                // (the unfreeze call or the status event was lost to a fault): the promoteur
                // tries again, as the UI would.
                Err(s) if s.code() == Code::FailedPrecondition => {
                    self.progress.frozen_retries.fetch_add(1, Ordering::Relaxed);
                    if self.progress.notes.lock().unwrap().len() < 10 {
                        let f = self.forms_dossier(n).await?;
                        let i = self.instruction_dossier(n).await?;
                        self.progress.note(format!(
                            "autosave {row} refused: {} (forms: {:?} frozen {}; instruction: {:?} v{})",
                            s.message(),
                            f.status(),
                            f.frozen,
                            i.status(),
                            i.version
                        ));
                    }
                    attempted = true;
                    self.pause().await;
                }
                Err(s) => anyhow::bail!("autosave {row}: {s:?}"),
            }
        }
    }

    /// The promoteur's deposit (or resubmission after a correction request).
    async fn deposit(&self, n: i64, version: &mut i64, resubmit: bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + OP_DEADLINE;
        let mut attempted = false;
        loop {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "deposit: no answer within {OP_DEADLINE:?}"
            );
            if attempted {
                // Instruction owns the status: it says whether the deposit happened.
                if let Ok(d) = self.try_instruction_dossier(n).await {
                    let done = if resubmit {
                        d.pending_correction.is_none()
                    } else {
                        d.status() != ev::DossierStatus::Brouillon
                    };
                    if done {
                        self.progress
                            .landed_unacknowledged
                            .fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                }
                *version = self.forms_dossier(n).await?.version;
            }
            let mut c = self.c.forms.clone();
            let r = promoteur(
                &self.owner,
                fpb::DepositDossierRequest {
                    number: n,
                    expected_version: *version,
                },
            );
            match c.deposit_dossier(r).await {
                Ok(_) => {
                    self.progress
                        .transitions_acked
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(s) if unknown_outcome(&s) || s.code() == Code::Internal => {
                    attempted = true;
                    self.unknown(&s).await;
                }
                Err(s) if matches!(s.code(), Code::Aborted | Code::FailedPrecondition) => {
                    attempted = true;
                    self.pause().await;
                }
                Err(s) => anyhow::bail!("deposit: {s:?}"),
            }
        }
    }

    /// The instruction view, or NOT_FOUND while instruction has no deposit (a brouillon).
    async fn try_instruction_dossier(&self, n: i64) -> Result<ipb::Dossier, Status> {
        let mut c = self.c.instruction.clone();
        c.get_dossier(instructeur(ipb::GetDossierRequest { number: n }))
            .await?
            .into_inner()
            .dossier
            .ok_or_else(|| Status::not_found("no dossier"))
    }

    /// One instructeur transition at the version just read; after an unknown outcome the status
    /// read back decides.
    async fn step(&self, n: i64, step: Step) -> anyhow::Result<()> {
        let (from, to) = step.statuses();
        let deadline = tokio::time::Instant::now() + OP_DEADLINE;
        let mut attempted = false;
        loop {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{step:?}: no answer within {OP_DEADLINE:?}"
            );
            let d = self.instruction_dossier(n).await?;
            if attempted && d.status() == to {
                self.progress
                    .landed_unacknowledged
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            anyhow::ensure!(
                d.status() == from,
                "{step:?}: the dossier is {:?}, expected {from:?}",
                d.status()
            );
            match self.call(n, step, d.version).await {
                Ok(()) => {
                    self.progress
                        .transitions_acked
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(s) if unknown_outcome(&s) || s.code() == Code::Internal => {
                    attempted = true;
                    self.unknown(&s).await;
                }
                Err(s) if s.code() == Code::Aborted => attempted = true,
                Err(s) if reason(&s) == Some("DOSSIER_FROZEN") => {
                    // Held by an earlier attempt that never committed: forms releases the hold
                    // once it is sure that attempt can no longer commit. The instructeur tries
                    // again later.
                    self.progress.held.fetch_add(1, Ordering::Relaxed);
                    self.progress
                        .note(format!("{step:?} refused: {}", s.message()));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(s) => anyhow::bail!("{step:?}: {s:?}"),
            }
        }
    }

    async fn call(&self, number: i64, step: Step, expected_version: i64) -> Result<(), Status> {
        let mut c = self.c.instruction.clone();
        let motivation = "Motivation de la décision (chaos).".to_owned();
        match step {
            Step::PasserEnInstruction => c
                .passer_en_instruction(instructeur(ipb::PasserEnInstructionRequest {
                    number,
                    expected_version,
                }))
                .await
                .map(drop),
            Step::RepasserEnConstruction => c
                .repasser_en_construction(instructeur(ipb::RepasserEnConstructionRequest {
                    number,
                    expected_version,
                    message: "Merci de compléter le budget.".into(),
                }))
                .await
                .map(drop),
            Step::DemanderCorrection => c
                .demander_correction(instructeur(ipb::DemanderCorrectionRequest {
                    number,
                    expected_version,
                    message: "Une ligne de budget manque.".into(),
                    reason: ev::CorrectionReason::Incomplete as i32,
                }))
                .await
                .map(drop),
            Step::Accepter => c
                .accepter(instructeur(ipb::AccepterRequest {
                    number,
                    expected_version,
                    motivation,
                    justificatif_upload_id: String::new(),
                }))
                .await
                .map(drop),
            Step::Refuser => c
                .refuser(instructeur(ipb::RefuserRequest {
                    number,
                    expected_version,
                    motivation,
                    justificatif_upload_id: String::new(),
                }))
                .await
                .map(drop),
            Step::ClasserSansSuite => c
                .classer_sans_suite(instructeur(ipb::ClasserSansSuiteRequest {
                    number,
                    expected_version,
                    motivation,
                    justificatif_upload_id: String::new(),
                }))
                .await
                .map(drop),
            Step::RepasserEnInstruction => c
                .repasser_en_instruction(instructeur(ipb::RepasserEnInstructionRequest {
                    number,
                    expected_version,
                    message: String::new(),
                }))
                .await
                .map(drop),
        }
    }
}

/// The value written in budget row `row` of dossier `n`.
pub fn poste(n: i64, row: &str) -> String {
    format!("Poste {row} du dossier {n}")
}

/// Adds budget row `row` with its two required answers.
fn row_patches(n: i64, row: &str) -> Vec<fpb::ChampPatch> {
    use mst_e2e::support::{add_row, set_in_row, text};
    vec![
        add_row("budget", row),
        set_in_row("budget", row, "poste", text(&poste(n, row))),
        set_in_row(
            "budget",
            row,
            "montant",
            fpb::champ_value::Value::Decimal("100.00".into()),
        ),
    ]
}

/// The `poste` of budget row `row`, if the row exists.
pub fn row_value(d: &fpb::Dossier, row: &str) -> Option<String> {
    let budget = d.champs.iter().find(|c| c.field_id == "budget")?;
    let Some(fpb::champ_value::Value::Repetition(rep)) =
        budget.value.as_ref().and_then(|v| v.value.as_ref())
    else {
        return None;
    };
    let r = rep.rows.iter().find(|r| r.row_id == row)?;
    let poste = r.champs.iter().find(|c| c.field_id == "poste")?;
    match poste.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(fpb::champ_value::Value::Text(t)) => Some(t.clone()),
        _ => Some(String::new()),
    }
}
