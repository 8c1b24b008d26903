//! The messagerie service of mst-dossiers: dossier threads, notification preferences and every outgoing email (DESIGN.md §2).
//!
//! [`App::build`] starts it on its settings — database (migrated when asked), JetStream
//! streams and outbox relay, token verifier, the consumer of the events that notify someone,
//! the mail sender and the notice scheduler — and [`App::local_addr`] tells where its gRPC
//! server listens (health and reflection included), so tests can start it in-process on port 0.

#![forbid(unsafe_code)]

pub mod app;
pub mod events;
pub mod grpc;
pub mod smtp;
pub mod store;
pub mod templates;

use std::net::SocketAddr;
use std::time::Duration;

use mst_kit::Shutdown;
use mst_kit::config::{CommonSettings, Env};
use mst_kit::grpc::GrpcServer;
use mst_kit::service::{Infra, RunService};

/// Service name: database, consumer and log identity.
pub const SERVICE: &str = "messagerie";
/// Default gRPC address of the embedded setup.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50053);
/// Default sender of every email.
pub const DEFAULT_FROM: &str = "Mois sans tabac <ne-pas-repondre@mois-sans-tabac.example>";

/// Settings of the messagerie service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What every service reads.
    pub common: CommonSettings,
    /// The instruction service (`MST_INSTRUCTION_URL`): access checks and instructeur lists.
    pub instruction_url: String,
    /// Where mail goes: `MST_SMTP_URL`, else the folder `MST_MAIL_DIR`.
    pub transport: smtp::Transport,
    /// Sender (`MST_MAIL_FROM`).
    pub from: lettre::message::Mailbox,
    /// Delays, retries, polling.
    pub timing: app::Timing,
    /// Where attachments are stored (`MST_ATTACHMENTS_DIR`).
    pub attachments_dir: std::path::PathBuf,
    /// An S3-compatible bucket instead (`MST_FILES_URL`).
    pub files_s3: Option<mst_kit::files::S3Config>,
    /// Largest attachment in bytes (`MST_MAX_FILE_BYTES`, default 20 MB).
    pub max_file_bytes: u64,
}

impl Settings {
    /// Reads the settings; problems are recorded in `env`.
    pub fn from_env(env: &mut Env) -> Self {
        let pool_size: usize = env.or("MST_SMTP_POOL_SIZE", 4);
        let transport = match env.raw("MST_SMTP_URL").map(str::to_owned) {
            Some(url) if !url.trim().is_empty() => {
                match smtp::SmtpSettings::parse(url.trim(), pool_size) {
                    Ok(mut s) => {
                        if let Some(path) = env.raw("MST_SMTP_CA_FILE").map(str::to_owned) {
                            match std::fs::read(&path) {
                                Ok(pem) => s.extra_roots_pem = Some(pem),
                                Err(e) => env.issue("MST_SMTP_CA_FILE", format!("{path}: {e}")),
                            }
                        }
                        smtp::Transport::Smtp(s)
                    }
                    Err(problem) => {
                        env.issue("MST_SMTP_URL", problem);
                        smtp::Transport::Folder("data/messagerie-mail".into())
                    }
                }
            }
            _ => smtp::Transport::Folder(
                env.or("MST_MAIL_DIR", "data/messagerie-mail".to_owned())
                    .into(),
            ),
        };
        let from_raw = env.or("MST_MAIL_FROM", DEFAULT_FROM.to_owned());
        let from = match from_raw.parse() {
            Ok(m) => m,
            Err(e) => {
                env.issue("MST_MAIL_FROM", format!("not a mailbox: {e}"));
                DEFAULT_FROM.parse().expect("the default sender parses")
            }
        };
        let millis =
            |env: &mut Env, var: &str, default: u64| Duration::from_millis(env.or(var, default));
        let timing = app::Timing {
            message_delay: millis(env, "MST_MESSAGE_NOTIFY_DELAY_MS", 5 * 60 * 1000),
            retry_base: millis(env, "MST_MAIL_RETRY_BASE_MS", 2000),
            retry_max: millis(env, "MST_MAIL_RETRY_MAX_MS", 10 * 60 * 1000),
            max_attempts: env.or("MST_MAIL_MAX_ATTEMPTS", 40),
            poll: millis(env, "MST_MAIL_POLL_MS", 1000),
            digest_scheduler: env.flag("MST_DIGEST_SCHEDULER", true),
        };
        Self {
            common: CommonSettings::from_env(env, SERVICE, DEFAULT_ADDR),
            instruction_url: env.or("MST_INSTRUCTION_URL", "http://127.0.0.1:50052".to_owned()),
            transport,
            from,
            timing,
            attachments_dir: env
                .or("MST_ATTACHMENTS_DIR", "data/messagerie-files".to_owned())
                .into(),
            files_s3: mst_kit::files::S3Config::from_env(env),
            max_file_bytes: env.or("MST_MAX_FILE_BYTES", mst_kit::files::DEFAULT_MAX_BYTES),
        }
    }
}

impl AsRef<CommonSettings> for Settings {
    fn as_ref(&self) -> &CommonSettings {
        &self.common
    }
}

/// A started messagerie service.
#[derive(Debug)]
pub struct App {
    infra: Infra,
    messagerie: app::Messagerie,
}

impl App {
    /// Starts the plumbing, the consumer, the sender and the scheduler; the gRPC server serves
    /// once [`RunService::run`] is called.
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
        let instruction = mst_kit::grpc::peer_channel(&settings.instruction_url)?;
        let instruction =
            mst_proto::instruction::instruction_internal_service_client::InstructionInternalServiceClient::with_interceptor(
                instruction,
                token,
            );
        match &settings.transport {
            smtp::Transport::Smtp(s) => {
                tracing::info!(host = %s.host, port = s.port, security = ?s.security, "sending mail over SMTP")
            }
            smtp::Transport::Folder(dir) => {
                tracing::info!(dir = %dir.display(), "no MST_SMTP_URL: writing mail to a local folder")
            }
        }
        let mailer = smtp::Mailer::new(settings.transport.clone(), settings.from.clone());
        let infra = Infra::start_on(settings.common, listener, shutdown).await?;
        let messagerie = app::Messagerie::new(
            infra.db.clone(),
            infra.relay.clone(),
            mailer,
            files,
            instruction,
            settings.timing,
        );
        infra.spawn_consumer(events::spec(), events::Events::new(messagerie.clone()));
        infra
            .shutdown
            .spawn(messagerie.clone().run_sender(infra.shutdown.token()));
        infra
            .shutdown
            .spawn(messagerie.clone().run_scheduler(infra.shutdown.token()));
        infra
            .shutdown
            .spawn(messagerie.clone().run_resolver(infra.shutdown.token()));
        Ok(Self { infra, messagerie })
    }

    /// Where the gRPC server listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.infra.local_addr()
    }

    /// The use cases (tests trigger the daily digest through them).
    pub fn messagerie(&self) -> app::Messagerie {
        self.messagerie.clone()
    }
}

impl RunService for App {
    async fn run(self) -> anyhow::Result<()> {
        use mst_proto::messagerie::messagerie_service_server::MessagerieServiceServer;
        let auth = self.infra.auth.clone();
        let server = GrpcServer::new(mst_proto::FILE_DESCRIPTOR_SET).add_service(
            MessagerieServiceServer::with_interceptor(
                grpc::Api::new(self.messagerie.clone()),
                auth.interceptor(),
            ),
        );
        self.infra.serve(server).await
    }
}
