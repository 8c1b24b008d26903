//! `mstctl`: the command-line client of mst-dossiers.
//!
//! Mint local tokens (shared-secret setups: the embedded default, compose), load procedures,
//! import the roster, look at the dashboard and the dossiers, run any transition, export, follow
//! the event feed, and probe a service's health. Every gRPC command authenticates with `--token`,
//! or mints a short token for `--as EMAIL` with the shared secret. Errors are printed with every
//! field violation, so a person can act on them.

#![forbid(unsafe_code)]

mod client;
mod demo;
mod dossier;
mod events;
mod export;
mod message;
mod procedure;
mod roster;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mst_kit::auth::{AuthSettings, Role};
use mst_kit::config::Env;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Command-line client of mst-dossiers.
#[derive(Debug, Parser)]
#[command(name = "mstctl", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    caller: client::Caller,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint a bearer token signed with the shared secret the services verify
    /// (MST_AUTH_JWT_SECRET, MST_AUTH_ISSUER, MST_AUTH_AUDIENCE; embedded defaults when unset).
    Token {
        /// Email address of the caller (the token's subject).
        #[arg(long)]
        email: String,
        /// Role granted; repeat for several (promoteur, instructeur, expert, ambassadeur, admin).
        #[arg(long = "role", required = true)]
        roles: Vec<Role>,
        /// Validity in hours.
        #[arg(long, default_value_t = 12)]
        ttl_hours: u64,
    },
    /// Procedures of the forms service (admin).
    Procedure {
        #[command(subcommand)]
        command: ProcedureCommand,
    },
    /// The roster: groupes instructeurs and declared instructeurs (admin).
    Roster {
        #[command(flatten)]
        addr: dossier::InstructionAddr,
        #[command(subcommand)]
        command: roster::RosterCommand,
    },
    /// Dashboard, lists, one dossier, follows and transitions (instructeur).
    Dossier {
        #[command(flatten)]
        addr: dossier::InstructionAddr,
        #[command(subcommand)]
        command: dossier::DossierCommand,
    },
    /// A dossier's thread: read it, post a message with attachments (instructeur by default).
    Message {
        #[command(flatten)]
        addr: message::MessagerieAddr,
        #[command(subcommand)]
        command: message::MessageCommand,
    },
    /// Export the dossiers of a procedure as CSV or XLSX (instructeur).
    Export {
        #[command(flatten)]
        addr: dossier::InstructionAddr,
        #[command(flatten)]
        args: export::ExportArgs,
    },
    /// Play the guide on a running deployment (the embedded stack by default): three promoteurs,
    /// their Projets and Actions deposited, accepted and published; prints the timeline, the
    /// emails sent and the fiches on the public map.
    Demo(demo::DemoArgs),
    /// The event feed (JetStream).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Ask a service's standard gRPC health check; exits 0 when it answers SERVING.
    Health {
        /// Address of the service, e.g. http://127.0.0.1:50051.
        #[arg(long)]
        addr: String,
        /// Service name to check (empty: the server as a whole).
        #[arg(long, default_value = "")]
        service: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ProcedureCommand {
    /// Create or update a procedure from a definition (a shipped one, or a file in the proto3
    /// JSON mapping of mst.forms.v1.ProcedureDefinition), optionally publishing it. Loading the
    /// same definition again changes nothing.
    Load {
        /// A shipped definition: mst-2024-projet or mst-2024-action.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        builtin: Option<String>,
        /// A definition file (JSON).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Publish the loaded revision.
        #[arg(long)]
        publish: bool,
        #[command(flatten)]
        addr: procedure::FormsAddr,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Print events as they are published, one JSON line each (Ctrl-C to stop).
    Follow(events::FollowArgs),
}

async fn health(addr: String, service: String, timeout: Duration) -> anyhow::Result<bool> {
    let channel = tonic::transport::Endpoint::from_shared(addr.clone())?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {addr}: {e}"))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await?
        .into_inner()
        .status();
    println!("{}", status.as_str_name());
    Ok(status == ServingStatus::Serving)
}

fn token(email: &str, roles: &[Role], ttl_hours: u64) -> anyhow::Result<bool> {
    let mut env = Env::from_process();
    let settings = AuthSettings::from_env(&mut env);
    env.finish()?;
    let token = mst_kit::auth::mint_for(
        &settings,
        email,
        roles,
        Duration::from_secs(ttl_hours * 3600),
    )?;
    println!("{token}");
    Ok(true)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let caller = &cli.caller;
    let result = match cli.command {
        Command::Token {
            email,
            roles,
            ttl_hours,
        } => token(&email, &roles, ttl_hours),
        Command::Health {
            addr,
            service,
            timeout_secs,
        } => health(addr, service, Duration::from_secs(timeout_secs)).await,
        Command::Procedure {
            command:
                ProcedureCommand::Load {
                    builtin,
                    file,
                    publish,
                    addr,
                },
        } => procedure::load(builtin, file, publish, &addr, caller).await,
        Command::Roster { addr, command } => roster::run(command, &addr, caller).await,
        Command::Dossier { addr, command } => dossier::run(command, &addr, caller).await,
        Command::Export { addr, args } => export::run(args, &addr, caller).await,
        Command::Message { addr, command } => message::run(command, &addr, caller).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Events {
            command: EventsCommand::Follow(args),
        } => events::follow(args).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("mstctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}
