//! `mstctl`: the command-line client of mst-dossiers.
//!
//! Mint local tokens (shared-secret setups: the embedded default, compose), load procedures, and
//! probe a service's standard health check (container health checks). Errors are printed with
//! every field violation, so a person can act on them.

#![forbid(unsafe_code)]

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
    /// Procedures of the forms service.
    Procedure {
        #[command(subcommand)]
        command: ProcedureCommand,
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
        target: Target,
    },
}

/// Where to send a command and as whom.
#[derive(Debug, clap::Args)]
struct Target {
    /// Address of the forms service.
    #[arg(long, env = "MST_FORMS_URL", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Bearer token to use (default: one minted for --as with the admin role).
    #[arg(long, env = "MST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Email of the admin a token is minted for when --token is absent.
    #[arg(long = "as", default_value = "admin@mst.local")]
    as_email: String,
}

impl Target {
    fn bearer(&self) -> anyhow::Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => {
                let mut env = Env::from_process();
                let settings = AuthSettings::from_env(&mut env);
                env.finish()?;
                mst_kit::auth::mint_for(
                    &settings,
                    &self.as_email,
                    &[Role::Admin],
                    Duration::from_secs(600),
                )?
            }
        };
        Ok(format!("Bearer {token}").parse()?)
    }

    async fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        tonic::transport::Endpoint::from_shared(self.addr.clone())?
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", self.addr))
    }
}

/// A status as a person can act on it: the message, then every field violation.
fn explain(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    let mut out = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            out.push_str(&format!("\n  - {} : {}", v.field, v.description));
        }
    }
    if let Some(info) = status.get_details_error_info() {
        out.push_str(&format!("\n  ({})", info.reason));
    }
    out
}

async fn load_procedure(
    builtin: Option<String>,
    file: Option<std::path::PathBuf>,
    publish: bool,
    target: Target,
) -> anyhow::Result<bool> {
    use mst_proto::forms::load_procedure_request::Source;
    use mst_proto::forms::procedure_admin_service_client::ProcedureAdminServiceClient;
    let source = match (builtin, file) {
        (Some(id), _) => Source::BuiltinId(id),
        (None, Some(path)) => {
            let json = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            Source::Definition(
                mst_proto::json::decode("mst.forms.v1.ProcedureDefinition", &json).map_err(
                    |e| anyhow::anyhow!("{} is not a procedure definition: {e}", path.display()),
                )?,
            )
        }
        (None, None) => anyhow::bail!("give --builtin or --file"),
    };
    let mut request = tonic::Request::new(mst_proto::forms::LoadProcedureRequest {
        source: Some(source),
        publish,
    });
    request
        .metadata_mut()
        .insert("authorization", target.bearer()?);
    let response = ProcedureAdminServiceClient::new(target.channel().await?)
        .load_procedure(request)
        .await
        .map_err(|s| anyhow::anyhow!(explain(&s)))?
        .into_inner();
    let outcome = mst_proto::forms::LoadOutcome::try_from(response.outcome)
        .map(|o| o.as_str_name())
        .unwrap_or("?");
    let procedure = response.procedure.unwrap_or_default();
    println!(
        "{outcome}: {} « {} » (version {}, published revision {})",
        procedure.id,
        procedure.title,
        procedure.version,
        if procedure.published_revision_id.is_empty() {
            "none"
        } else {
            &procedure.published_revision_id
        }
    );
    Ok(true)
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Token {
            email,
            roles,
            ttl_hours,
        } => {
            let mut env = Env::from_process();
            let settings = AuthSettings::from_env(&mut env);
            env.finish().map_err(anyhow::Error::from).and_then(|()| {
                let token = mst_kit::auth::mint_for(
                    &settings,
                    &email,
                    &roles,
                    Duration::from_secs(ttl_hours * 3600),
                )?;
                println!("{token}");
                Ok(true)
            })
        }
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
                    target,
                },
        } => load_procedure(builtin, file, publish, target).await,
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
