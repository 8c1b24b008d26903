//! Admin commands over `RosterService`: import the CNAMTS roster CSV, add or remove one
//! instructeur, list groupes and instructeurs.

use clap::Subcommand;
use mst_kit::auth::Role;
use mst_proto::instruction as pb;
use mst_proto::instruction::roster_service_client::RosterServiceClient;

use crate::client::{Caller, channel, explain};
use crate::dossier::InstructionAddr;

/// Bytes per message of a streamed upload.
const CHUNK: usize = 256 * 1024;

#[derive(Debug, Subcommand)]
pub enum RosterCommand {
    /// Import a roster CSV (`email;groupe;nom`, `;` or `,`): prints the report of every line.
    Import {
        /// The CSV file.
        file: std::path::PathBuf,
        /// Check and report without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Create the groupes the file names that do not exist yet.
        #[arg(long)]
        create_missing_groupes: bool,
    },
    /// Declare one instructeur in a groupe.
    Add {
        /// Email.
        email: String,
        /// Groupe id.
        #[arg(long)]
        groupe: String,
        /// Name shown to colleagues.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Remove one instructeur from a groupe (his follows there end).
    Remove {
        /// Email.
        email: String,
        /// Groupe id.
        #[arg(long)]
        groupe: String,
    },
    /// The groupes instructeurs.
    Groupes,
    /// The declared instructeurs.
    Instructeurs {
        /// Only this groupe.
        #[arg(long, default_value = "")]
        groupe: String,
    },
}

pub async fn run(
    command: RosterCommand,
    addr: &InstructionAddr,
    caller: &Caller,
) -> anyhow::Result<bool> {
    let mut client = RosterServiceClient::new(channel(&addr.url).await?);
    let role = Role::Admin;
    match command {
        RosterCommand::Import {
            file,
            dry_run,
            create_missing_groupes,
        } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let mut messages = vec![pb::ImportRosterRequest {
                payload: Some(pb::import_roster_request::Payload::Metadata(
                    pb::ImportRosterMetadata {
                        file_name: file
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        dry_run,
                        create_missing_groupes,
                    },
                )),
            }];
            messages.extend(bytes.chunks(CHUNK).map(|c| pb::ImportRosterRequest {
                payload: Some(pb::import_roster_request::Payload::Chunk(c.to_vec())),
            }));
            let report = client
                .import_roster(caller.request(role, futures::stream::iter(messages))?)
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            for line in &report.lines {
                let outcome = pb::RosterLineOutcome::try_from(line.outcome)
                    .map(|o| {
                        o.as_str_name()
                            .trim_start_matches("ROSTER_LINE_OUTCOME_")
                            .to_lowercase()
                    })
                    .unwrap_or_default();
                let reason = if line.reason.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", line.reason)
                };
                println!(
                    "ligne {:>4}  {:<10} {} ({}){reason}",
                    line.line, outcome, line.email, line.groupe
                );
            }
            println!(
                "{}{} ajouté(s), {} mis à jour, {} inchangé(s), {} rejeté(s)",
                if report.dry_run { "[essai] " } else { "" },
                report.added,
                report.updated,
                report.unchanged,
                report.rejected
            );
            Ok(report.rejected == 0)
        }
        RosterCommand::Add {
            email,
            groupe,
            name,
        } => {
            let r = client
                .add_instructeur(caller.request(
                    role,
                    pb::AddInstructeurRequest {
                        email: email.clone(),
                        groupe_id: groupe.clone(),
                        name,
                    },
                )?)
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            println!(
                "{email}: {} dans {groupe}",
                if r.added {
                    "ajouté"
                } else {
                    "déjà présent"
                }
            );
            Ok(true)
        }
        RosterCommand::Remove { email, groupe } => {
            client
                .remove_instructeur(caller.request(
                    role,
                    pb::RemoveInstructeurRequest {
                        email: email.clone(),
                        groupe_id: groupe.clone(),
                    },
                )?)
                .await
                .map_err(|s| explain(&s))?;
            println!("{email}: retiré de {groupe}");
            Ok(true)
        }
        RosterCommand::Groupes => {
            let mut token = String::new();
            loop {
                let page = client
                    .list_groupes(caller.request(
                        role,
                        pb::ListGroupesRequest {
                            page_size: 200,
                            page_token: token.clone(),
                        },
                    )?)
                    .await
                    .map_err(|s| explain(&s))?
                    .into_inner();
                for g in &page.groupes {
                    println!(
                        "{:<38} {:<40} {:>3} instructeur(s)  départements {}{}",
                        g.id,
                        g.label,
                        g.instructeur_count,
                        g.departement_codes.join(","),
                        if g.is_default { "  (par défaut)" } else { "" }
                    );
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            Ok(true)
        }
        RosterCommand::Instructeurs { groupe } => {
            let mut token = String::new();
            loop {
                let page = client
                    .list_instructeurs(caller.request(
                        role,
                        pb::ListInstructeursRequest {
                            groupe_id: groupe.clone(),
                            email_prefix: String::new(),
                            page_size: 200,
                            page_token: token.clone(),
                        },
                    )?)
                    .await
                    .map_err(|s| explain(&s))?
                    .into_inner();
                for i in &page.instructeurs {
                    let groupes: Vec<&str> = i.groupes.iter().map(|g| g.label.as_str()).collect();
                    println!("{:<40} {:<28} {}", i.email, i.name, groupes.join(", "));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            Ok(true)
        }
    }
}
