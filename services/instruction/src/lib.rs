//! The instruction service of mst-dossiers: the dossier status state machine, the roster, routing to groupes, the instructeurs' dashboard and decisions (DESIGN.md §2–§3).
//!
//! [`App::build`] starts it on its settings — database (migrated when asked), JetStream
//! streams and outbox relay, token verifier — and [`App::local_addr`] tells where its gRPC server
//! listens (health and reflection included), so tests can start it in-process on port 0.

#![forbid(unsafe_code)]
pub mod app;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod store;

use std::net::SocketAddr;

use mst_kit::Shutdown;
use mst_kit::config::{CommonSettings, Env};
use mst_kit::grpc::GrpcServer;
use mst_kit::service::{Infra, RunService};

/// Service name: database, consumer and log identity.
pub const SERVICE: &str = "instruction";
/// Default gRPC address of the embedded setup.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50052);

/// Settings of the instruction service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What every service reads.
    pub common: CommonSettings,
    /// The forms service (`MST_FORMS_URL`), for the freeze of invariant I1.
    pub forms_url: String,
    /// Where justificatifs and avis files are stored (`MST_ATTACHMENTS_DIR`).
    pub attachments_dir: std::path::PathBuf,
    /// An S3-compatible bucket instead (`MST_FILES_URL`).
    pub files_s3: Option<mst_kit::files::S3Config>,
    /// Largest file in bytes (`MST_MAX_FILE_BYTES`, default 20 MB).
    pub max_file_bytes: u64,
    /// How often the closing-date scheduler looks for procedures whose closing date has passed
    /// (`MST_CLOSING_CHECK_SECS`, default 60; 0 turns it off, e.g. when another replica or a
    /// test drives it).
    pub closing_check_every: std::time::Duration,
}

impl Settings {
    /// Reads the settings; problems are recorded in `env`.
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            common: CommonSettings::from_env(env, SERVICE, DEFAULT_ADDR),
            forms_url: env.or("MST_FORMS_URL", "http://127.0.0.1:50051".to_owned()),
            attachments_dir: env
                .or("MST_ATTACHMENTS_DIR", "data/instruction-files".to_owned())
                .into(),
            files_s3: mst_kit::files::S3Config::from_env(env),
            max_file_bytes: env.or("MST_MAX_FILE_BYTES", mst_kit::files::DEFAULT_MAX_BYTES),
            closing_check_every: env
                .seconds("MST_CLOSING_CHECK_SECS", std::time::Duration::from_secs(60)),
        }
    }
}

impl AsRef<CommonSettings> for Settings {
    fn as_ref(&self) -> &CommonSettings {
        &self.common
    }
}

/// A started instruction service.
#[derive(Debug)]
pub struct App {
    infra: Infra,
    instruction: app::Instruction,
    files: mst_kit::files::FileStore,
}

impl App {
    /// Starts the plumbing and the consumer of forms' events; the gRPC server serves once
    /// [`RunService::run`] is called.
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
        let token = mst_kit::auth::ServiceToken::for_service(&settings.common.auth, SERVICE)?;
        let files = mst_kit::files::FileStore::from_config(
            settings.files_s3.as_ref(),
            &settings.attachments_dir,
            settings.max_file_bytes,
        )?;
        let forms = mst_kit::grpc::peer_channel(&settings.forms_url)?;
        let infra = Infra::start_on(settings.common, listener, shutdown).await?;
        let instruction = app::Instruction::new(
            infra.db.clone(),
            infra.relay.clone(),
            app::FormsFreeze::new(forms, token),
        );
        infra.spawn_consumer(
            events::spec(),
            events::FormsEvents::new(instruction.clone()),
        );
        if !settings.closing_check_every.is_zero() {
            infra.shutdown.spawn(
                instruction
                    .clone()
                    .run_closing_scheduler(settings.closing_check_every, infra.shutdown.token()),
            );
        }
        Ok(Self {
            infra,
            instruction,
            files,
        })
    }

    /// Where the gRPC server listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.infra.local_addr()
    }

    /// The use cases (tests drive the workflow through them until its public API is served).
    pub fn instruction(&self) -> app::Instruction {
        self.instruction.clone()
    }
}

impl RunService for App {
    async fn run(self) -> anyhow::Result<()> {
        use mst_proto::instruction::instruction_internal_service_server::InstructionInternalServiceServer;
        use mst_proto::instruction::instruction_service_server::InstructionServiceServer;
        use mst_proto::instruction::roster_service_server::RosterServiceServer;
        let auth = self.infra.auth.clone();
        let server = GrpcServer::new(mst_proto::FILE_DESCRIPTOR_SET)
            .add_service(InstructionInternalServiceServer::with_interceptor(
                grpc::InternalApi::new(self.instruction.clone()),
                auth.interceptor(),
            ))
            .add_service(InstructionServiceServer::with_interceptor(
                grpc::service::Api::new(self.instruction.clone(), self.files.clone()),
                auth.interceptor(),
            ))
            .add_service(RosterServiceServer::with_interceptor(
                grpc::roster::RosterApi::new(self.instruction.clone()),
                auth.interceptor(),
            ));
        self.infra.serve(server).await
    }
}
