//! The forms service of mst-dossiers: procedures, form revisions and dossier content from brouillon to deposit (DESIGN.md §2).
//!
//! [`App::build`] starts it on its settings — database (migrated when asked), JetStream
//! streams and outbox relay, token verifier — and [`App::local_addr`] tells where its gRPC server
//! listens (health and reflection included), so tests can start it in-process on port 0.

#![forbid(unsafe_code)]

pub mod app;
pub mod builtin;
pub mod deposit;
/// The forms domain, in its own light crate (`crates/forms-domain`) so the fuzz targets build it
/// alone.
pub use mst_forms_domain as domain;
pub mod events;
pub mod freeze;
pub use mst_kit::files;
pub mod grpc;
pub mod pdf;
pub mod render;
pub mod store;

use std::net::SocketAddr;

use mst_kit::Shutdown;
use mst_kit::config::{CommonSettings, Env};
use mst_kit::grpc::GrpcServer;
use mst_kit::service::{Infra, RunService};

/// Service name: database, consumer and log identity.
pub const SERVICE: &str = "forms";
/// Default gRPC address of the embedded setup.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50051);

/// What to do with the shipped procedures at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtins {
    /// Nothing (production: an admin loads them with `mstctl`).
    Off,
    /// Load them as drafts.
    Load,
    /// Load and publish them.
    Publish,
}

/// Settings of the forms service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What every service reads.
    pub common: CommonSettings,
    /// The instruction service (`MST_INSTRUCTION_URL`), for deposits.
    pub instruction_url: String,
    /// Where attachments are stored (`MST_ATTACHMENTS_DIR`) when `files_s3` is `None`.
    pub attachments_dir: std::path::PathBuf,
    /// An S3-compatible bucket for attachments instead (`MST_FILES_URL`, `s3://bucket/prefix`,
    /// with the `AWS_*` variables).
    pub files_s3: Option<files::S3Config>,
    /// Largest attachment in bytes (`MST_MAX_FILE_BYTES`, default 20 MB).
    pub max_file_bytes: u64,
    /// Shipped procedures at start (`MST_BUILTIN_PROCEDURES`: off, load, publish).
    pub builtins: Builtins,
    /// Closing date applied to the shipped procedures (`MST_BUILTIN_CLOSING_AT`: `keep` the
    /// definition's, `none`, or an RFC 3339 instant).
    pub builtin_closing_at: Option<Option<chrono::DateTime<chrono::Utc>>>,
    /// Age after which a freeze hold whose transition never committed is released
    /// (`MST_FREEZE_RELEASE_AFTER_SECS`, default 300, at least twice [`freeze::FREEZE_LEASE`]).
    pub freeze_release_after: std::time::Duration,
}

impl Settings {
    /// Reads the settings; problems are recorded in `env`.
    pub fn from_env(env: &mut Env) -> Self {
        let common = CommonSettings::from_env(env, SERVICE, DEFAULT_ADDR);
        let builtins = match env
            .raw("MST_BUILTIN_PROCEDURES")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("off") => Builtins::Off,
            Some("load") => Builtins::Load,
            Some("publish") => Builtins::Publish,
            Some(other) => {
                env.issue(
                    "MST_BUILTIN_PROCEDURES",
                    format!("expected off, load or publish, got {other:?}"),
                );
                Builtins::Off
            }
        };
        let builtin_closing_at = match env
            .raw("MST_BUILTIN_CLOSING_AT")
            .map(str::to_owned)
            .as_deref()
        {
            None | Some("keep") => None,
            Some("none") => Some(None),
            Some(at) => match chrono::DateTime::parse_from_rfc3339(at) {
                Ok(at) => Some(Some(at.with_timezone(&chrono::Utc))),
                Err(e) => {
                    env.issue(
                        "MST_BUILTIN_CLOSING_AT",
                        format!("expected keep, none or an RFC 3339 instant: {e}"),
                    );
                    None
                }
            },
        };
        let freeze_release_after = env.seconds(
            "MST_FREEZE_RELEASE_AFTER_SECS",
            std::time::Duration::from_secs(300),
        );
        if freeze_release_after < 2 * freeze::FREEZE_LEASE {
            env.issue(
                "MST_FREEZE_RELEASE_AFTER_SECS",
                format!(
                    "must be at least {} s (twice the instruction service's freeze lease)",
                    2 * freeze::FREEZE_LEASE.as_secs()
                ),
            );
        }
        Self {
            freeze_release_after,
            instruction_url: env.or("MST_INSTRUCTION_URL", "http://127.0.0.1:50052".to_owned()),
            attachments_dir: env
                .or("MST_ATTACHMENTS_DIR", "data/forms-files".to_owned())
                .into(),
            files_s3: files::S3Config::from_env(env),
            max_file_bytes: env.or("MST_MAX_FILE_BYTES", files::DEFAULT_MAX_BYTES),
            builtins,
            builtin_closing_at,
            common,
        }
    }
}

impl AsRef<CommonSettings> for Settings {
    fn as_ref(&self) -> &CommonSettings {
        &self.common
    }
}

/// A started forms service.
#[derive(Debug)]
pub struct App {
    infra: Infra,
    api: grpc::Api,
    stale_freezes: freeze::StaleFreezes,
}

impl App {
    /// Starts the plumbing, loads the shipped procedures when asked, and starts the consumer;
    /// the gRPC server serves once [`RunService::run`] is called.
    pub async fn build(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
        let listener = mst_kit::grpc::bind(settings.common.grpc_addr).await?;
        Self::build_on(settings, listener, shutdown).await
    }

    /// The same on an already bound listener.
    pub async fn build_on(
        settings: Settings,
        listener: tokio::net::TcpListener,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let files = file_store(&settings)?;
        let token = mst_kit::auth::ServiceToken::for_service(&settings.common.auth, SERVICE)?;
        let instruction = mst_kit::grpc::peer_channel(&settings.instruction_url)?;
        let infra = Infra::start_on(settings.common.clone(), listener, shutdown).await?;
        let forms = app::Forms::new(
            infra.db.clone(),
            infra.relay.clone(),
            domain::referentiel::Referentiel::official(),
            files,
        )
        .with_instruction(instruction.clone(), token.clone());
        if settings.builtins != Builtins::Off {
            load_builtins(
                &forms,
                settings.builtins == Builtins::Publish,
                settings.builtin_closing_at,
            )
            .await?;
        }
        infra.spawn_consumer(events::spec(), events::StatusMirror::new(forms.clone()));
        let stale_freezes =
            freeze::StaleFreezes::new(forms.clone(), instruction.clone(), token.clone());
        infra.shutdown.spawn(stale_freezes.clone().run(
            std::time::Duration::from_secs(60),
            settings.freeze_release_after,
            infra.shutdown.token(),
        ));
        let api = grpc::Api::new(forms, deposit::Deposits::new(instruction, token));
        Ok(Self {
            infra,
            api,
            stale_freezes,
        })
    }

    /// The stale-freeze resolver this service runs every minute (tests run it on demand).
    pub fn stale_freezes(&self) -> freeze::StaleFreezes {
        self.stale_freezes.clone()
    }

    /// Where the gRPC server listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.infra.local_addr()
    }
}

/// The attachments store the settings name: the S3-compatible bucket of `MST_FILES_URL` when
/// set, else the directory `MST_ATTACHMENTS_DIR`.
pub fn file_store(settings: &Settings) -> anyhow::Result<files::FileStore> {
    files::FileStore::from_config(
        settings.files_s3.as_ref(),
        &settings.attachments_dir,
        settings.max_file_bytes,
    )
}

/// Loads (and publishes) the shipped procedures, as the service itself.
async fn load_builtins(
    forms: &app::Forms,
    publish: bool,
    closing_at: Option<Option<chrono::DateTime<chrono::Utc>>>,
) -> anyhow::Result<()> {
    let system = mst_kit::auth::Principal {
        email: format!("{SERVICE}@services.mst.local"),
        name: None,
        roles: [mst_kit::auth::Role::Admin, mst_kit::auth::Role::System].into(),
    };
    for id in builtin::IDS {
        let def =
            builtin::definition(id).ok_or_else(|| anyhow::anyhow!("unknown builtin {id}"))??;
        let mut def = grpc::convert::procedure_definition(def, "definition")
            .map_err(|v| anyhow::anyhow!("shipped procedure {id} is invalid: {v:?}"))?;
        if let Some(at) = closing_at {
            def.closing_at = at;
        }
        let (_, _, outcome) = forms
            .load_procedure(&system, def, publish)
            .await
            .map_err(|e| anyhow::anyhow!("loading {id}: {e}"))?;
        tracing::info!(
            procedure = id,
            ?outcome,
            publish,
            "shipped procedure loaded"
        );
    }
    Ok(())
}

impl RunService for App {
    async fn run(self) -> anyhow::Result<()> {
        use mst_proto::forms::forms_internal_service_server::FormsInternalServiceServer;
        use mst_proto::forms::forms_service_server::FormsServiceServer;
        use mst_proto::forms::procedure_admin_service_server::ProcedureAdminServiceServer;
        use tonic::service::interceptor::InterceptedService;
        let auth = self.infra.auth.clone();
        let limit = 4 * 1024 * 1024;
        let server = GrpcServer::new(mst_proto::FILE_DESCRIPTOR_SET)
            .add_service(InterceptedService::new(
                FormsServiceServer::new(self.api.clone()).max_decoding_message_size(limit),
                auth.interceptor(),
            ))
            .add_service(ProcedureAdminServiceServer::with_interceptor(
                self.api.clone(),
                auth.interceptor(),
            ))
            .add_service(FormsInternalServiceServer::with_interceptor(
                self.api.clone(),
                auth.interceptor(),
            ));
        self.infra.serve(server).await
    }
}
