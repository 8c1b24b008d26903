//! Instructeur commands over `InstructionService`: the dashboard, lists, one dossier, follows
//! and every transition.

use clap::{Subcommand, ValueEnum};
use mst_kit::auth::Role;
use mst_proto::events as ev;
use mst_proto::instruction as pb;
use mst_proto::instruction::instruction_service_client::InstructionServiceClient;
use tonic::transport::Channel;

use crate::client::{Caller, channel, explain, json};

/// Where the instruction service listens.
#[derive(Debug, Clone, clap::Args)]
pub struct InstructionAddr {
    /// Address of the instruction service.
    #[arg(
        long = "instruction-url",
        env = "MST_INSTRUCTION_URL",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    pub url: String,
}

impl InstructionAddr {
    pub async fn client(&self) -> anyhow::Result<InstructionServiceClient<Channel>> {
        Ok(InstructionServiceClient::new(channel(&self.url).await?)
            .max_decoding_message_size(64 * 1024 * 1024))
    }
}

/// A tab of the instructeur's list.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TabArg {
    /// Deposited, followed by nobody, not decided.
    ASuivre,
    /// Followed by me, not decided.
    Suivis,
    /// Decided.
    Traites,
    /// Every deposited dossier not archived.
    Tous,
    /// Archived.
    Archives,
}

impl TabArg {
    pub fn pb(self) -> pb::DossierTab {
        match self {
            TabArg::ASuivre => pb::DossierTab::ASuivre,
            TabArg::Suivis => pb::DossierTab::Suivis,
            TabArg::Traites => pb::DossierTab::Traites,
            TabArg::Tous => pb::DossierTab::Tous,
            TabArg::Archives => pb::DossierTab::Archives,
        }
    }
}

/// A dossier status, as filters name it.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    EnConstruction,
    EnInstruction,
    Accepte,
    Refuse,
    SansSuite,
}

impl StatusArg {
    pub fn pb(self) -> ev::DossierStatus {
        match self {
            StatusArg::EnConstruction => ev::DossierStatus::EnConstruction,
            StatusArg::EnInstruction => ev::DossierStatus::EnInstruction,
            StatusArg::Accepte => ev::DossierStatus::Accepte,
            StatusArg::Refuse => ev::DossierStatus::Refuse,
            StatusArg::SansSuite => ev::DossierStatus::SansSuite,
        }
    }
}

/// The list filters (also used by exports).
#[derive(Debug, Clone, clap::Args)]
pub struct Filter {
    /// Only these statuses (repeat).
    #[arg(long = "status")]
    pub statuses: Vec<StatusArg>,
    /// Only dossiers I follow.
    #[arg(long)]
    pub followed_by_me: bool,
    /// Only these groupes (ids; repeat).
    #[arg(long = "groupe")]
    pub groupes: Vec<String>,
    /// Free text: number, title or structure name.
    #[arg(long, default_value = "")]
    pub text: String,
}

impl Filter {
    pub fn pb(&self) -> pb::DossierFilter {
        pb::DossierFilter {
            statuses: self.statuses.iter().map(|s| s.pb() as i32).collect(),
            followed_by_me: self.followed_by_me,
            deposited_after: None,
            deposited_before: None,
            groupe_ids: self.groupes.clone(),
            text: self.text.clone(),
        }
    }
}

/// A transition of DESIGN.md §3.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TransitionArg {
    PasserEnInstruction,
    RepasserEnConstruction,
    DemanderCorrection,
    Accepter,
    Refuser,
    ClasserSansSuite,
    RepasserEnInstruction,
    Archiver,
    Desarchiver,
}

#[derive(Debug, Subcommand)]
pub enum DossierCommand {
    /// The counters of my groupes (à suivre, suivis, traités, tous, archivés).
    Dashboard {
        /// Only this procedure.
        #[arg(long)]
        procedure: Option<String>,
    },
    /// List the dossiers of a procedure, one line each.
    List {
        /// Procedure id (e.g. mst-2024-projet).
        #[arg(long)]
        procedure: String,
        /// Tab.
        #[arg(long, value_enum, default_value = "tous")]
        tab: TabArg,
        #[command(flatten)]
        filter: Filter,
        /// Rows per page.
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        /// Follow the pages to the end.
        #[arg(long)]
        all: bool,
    },
    /// One dossier with its history, as JSON.
    Show {
        /// Dossier number.
        number: i64,
    },
    /// Follow a dossier.
    Follow {
        /// Dossier number.
        number: i64,
    },
    /// Stop following a dossier.
    Unfollow {
        /// Dossier number.
        number: i64,
    },
    /// Run a transition (the dossier's current version is used unless --expected-version).
    Transition {
        /// Dossier number.
        number: i64,
        /// Transition.
        #[arg(value_enum)]
        transition: TransitionArg,
        /// Motivation of a decision (required to refuse or classer sans suite).
        #[arg(long, default_value = "")]
        motivation: String,
        /// Message to the promoteur (correction request, back en construction, re-examination).
        #[arg(long, default_value = "")]
        message: String,
        /// Upload id of a justificatif uploaded beforehand.
        #[arg(long, default_value = "")]
        justificatif_upload_id: String,
        /// Version the command applies to (default: the current one).
        #[arg(long)]
        expected_version: Option<i64>,
    },
}

pub async fn run(
    command: DossierCommand,
    addr: &InstructionAddr,
    caller: &Caller,
) -> anyhow::Result<bool> {
    let mut client = addr.client().await?;
    let role = Role::Instructeur;
    match command {
        DossierCommand::Dashboard { procedure } => {
            let entries = client
                .get_dashboard(caller.request(
                    role,
                    pb::GetDashboardRequest {
                        procedure_id: procedure.unwrap_or_default(),
                    },
                )?)
                .await
                .map_err(|s| explain(&s))?
                .into_inner()
                .entries;
            println!(
                "{:<24} {:<36} {:>9} {:>7} {:>7} {:>7} {:>8}",
                "procédure", "groupe", "à suivre", "suivis", "traités", "tous", "archivés"
            );
            for e in entries {
                let c = e.counters.unwrap_or_default();
                println!(
                    "{:<24} {:<36} {:>9} {:>7} {:>7} {:>7} {:>8}",
                    e.procedure.map(|p| p.id).unwrap_or_default(),
                    e.groupe.map(|g| g.label).unwrap_or_default(),
                    c.a_suivre,
                    c.suivis,
                    c.traites,
                    c.tous,
                    c.archives
                );
            }
        }
        DossierCommand::List {
            procedure,
            tab,
            filter,
            page_size,
            all,
        } => {
            let mut token = String::new();
            let mut header = true;
            loop {
                let page = client
                    .list_dossiers(caller.request(
                        role,
                        pb::ListDossiersRequest {
                            procedure_id: procedure.clone(),
                            tab: tab.pb() as i32,
                            filter: Some(filter.pb()),
                            sort: None,
                            columns: Vec::new(),
                            page_size,
                            page_token: token.clone(),
                        },
                    )?)
                    .await
                    .map_err(|s| explain(&s))?
                    .into_inner();
                if header {
                    let total = if page.total_count_capped {
                        format!("plus de {}", page.total_count)
                    } else {
                        page.total_count.to_string()
                    };
                    println!("{total} dossier(s)");
                    let labels: Vec<&str> = page.columns.iter().map(|c| c.label.as_str()).collect();
                    println!("{:>8}  {:<16}  {}", "n°", "statut", labels.join(" | "));
                    header = false;
                }
                for row in &page.rows {
                    let status = ev::DossierStatus::try_from(row.status)
                        .map(|s| s.as_str_name().trim_start_matches("DOSSIER_STATUS_"))
                        .unwrap_or("?")
                        .to_lowercase();
                    let cells: Vec<&str> = row.cells.iter().map(|c| c.text.as_str()).collect();
                    println!("{:>8}  {:<16}  {}", row.number, status, cells.join(" | "));
                }
                if !all || page.next_page_token.is_empty() {
                    if !page.next_page_token.is_empty() {
                        println!("… more: add --all");
                    }
                    break;
                }
                token = page.next_page_token;
            }
        }
        DossierCommand::Show { number } => {
            let d = dossier(&mut client, caller, number).await?;
            println!("{}", json("mst.instruction.v1.Dossier", &d)?);
        }
        DossierCommand::Follow { number } => {
            client
                .follow_dossier(caller.request(role, pb::FollowDossierRequest { number })?)
                .await
                .map_err(|s| explain(&s))?;
            println!("dossier {number}: suivi");
        }
        DossierCommand::Unfollow { number } => {
            client
                .unfollow_dossier(caller.request(role, pb::UnfollowDossierRequest { number })?)
                .await
                .map_err(|s| explain(&s))?;
            println!("dossier {number}: plus suivi");
        }
        DossierCommand::Transition {
            number,
            transition,
            motivation,
            message,
            justificatif_upload_id,
            expected_version,
        } => {
            let expected_version = match expected_version {
                Some(v) => v,
                None => dossier(&mut client, caller, number).await?.version,
            };
            let after = transition_call(
                &mut client,
                caller,
                Transition {
                    number,
                    expected_version,
                    transition,
                    motivation,
                    message,
                    justificatif_upload_id,
                },
            )
            .await?;
            let status = ev::DossierStatus::try_from(after.status)
                .map(|s| s.as_str_name())
                .unwrap_or("?");
            println!(
                "dossier {number}: {status} (version {}{})",
                after.version,
                if after.archived { ", archivé" } else { "" }
            );
        }
    }
    Ok(true)
}

async fn dossier(
    client: &mut InstructionServiceClient<Channel>,
    caller: &Caller,
    number: i64,
) -> anyhow::Result<pb::Dossier> {
    client
        .get_dossier(caller.request(Role::Instructeur, pb::GetDossierRequest { number })?)
        .await
        .map_err(|s| explain(&s))?
        .into_inner()
        .dossier
        .ok_or_else(|| anyhow::anyhow!("no dossier in the answer"))
}

/// One transition to run.
#[derive(Debug, Clone)]
pub struct Transition {
    pub number: i64,
    pub expected_version: i64,
    pub transition: TransitionArg,
    pub motivation: String,
    pub message: String,
    pub justificatif_upload_id: String,
}

/// Runs a transition; the dossier after it.
pub async fn transition_call(
    client: &mut InstructionServiceClient<Channel>,
    caller: &Caller,
    t: Transition,
) -> anyhow::Result<pb::Dossier> {
    let role = Role::Instructeur;
    let Transition {
        number,
        expected_version,
        transition,
        motivation,
        message,
        justificatif_upload_id,
    } = t;
    // Each arm: the request of that RPC, sent with the instructeur's bearer.
    macro_rules! call {
        ($method:ident, $request:expr) => {
            client
                .$method(caller.request(role, $request)?)
                .await
                .map(|r| r.into_inner().dossier)
        };
    }
    let answer = match transition {
        TransitionArg::PasserEnInstruction => call!(
            passer_en_instruction,
            pb::PasserEnInstructionRequest {
                number,
                expected_version,
            }
        ),
        TransitionArg::RepasserEnConstruction => call!(
            repasser_en_construction,
            pb::RepasserEnConstructionRequest {
                number,
                expected_version,
                message,
            }
        ),
        TransitionArg::DemanderCorrection => call!(
            demander_correction,
            pb::DemanderCorrectionRequest {
                number,
                expected_version,
                message,
                reason: ev::CorrectionReason::Incomplete as i32,
            }
        ),
        TransitionArg::Accepter => call!(
            accepter,
            pb::AccepterRequest {
                number,
                expected_version,
                motivation,
                justificatif_upload_id,
            }
        ),
        TransitionArg::Refuser => call!(
            refuser,
            pb::RefuserRequest {
                number,
                expected_version,
                motivation,
                justificatif_upload_id,
            }
        ),
        TransitionArg::ClasserSansSuite => call!(
            classer_sans_suite,
            pb::ClasserSansSuiteRequest {
                number,
                expected_version,
                motivation,
                justificatif_upload_id,
            }
        ),
        TransitionArg::RepasserEnInstruction => call!(
            repasser_en_instruction,
            pb::RepasserEnInstructionRequest {
                number,
                expected_version,
                message,
            }
        ),
        TransitionArg::Archiver => call!(
            archive_dossier,
            pb::ArchiveDossierRequest {
                number,
                expected_version,
            }
        ),
        TransitionArg::Desarchiver => call!(
            unarchive_dossier,
            pb::UnarchiveDossierRequest {
                number,
                expected_version,
            }
        ),
    };
    answer
        .map_err(|s| explain(&s))?
        .ok_or_else(|| anyhow::anyhow!("no dossier in the answer"))
}
