//! `mstctl`: the command-line client of mst-dossiers.
//!
//! For now: mint local tokens (shared-secret setups: the embedded default, compose) and probe a
//! service's standard health check (container health checks). Admin, ambassadeur and demo commands
//! come with the services' APIs.

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
