//! The messagerie service of mst-dossiers: dossier threads, notification preferences and every outgoing email (DESIGN.md §2).
//!
//! [`App::build`] starts it on its settings — database (migrated when asked), JetStream
//! streams and outbox relay, token verifier — and [`App::local_addr`] tells where its gRPC server
//! listens (health and reflection included), so tests can start it in-process on port 0.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use mst_kit::Shutdown;
use mst_kit::config::{CommonSettings, Env};
use mst_kit::grpc::GrpcServer;
use mst_kit::service::{Infra, RunService};

/// Service name: database, consumer and log identity.
pub const SERVICE: &str = "messagerie";
/// Default gRPC address of the embedded setup.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50053);

/// Settings of the messagerie service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What every service reads.
    pub common: CommonSettings,
}

impl Settings {
    /// Reads the settings; problems are recorded in `env`.
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            common: CommonSettings::from_env(env, SERVICE, DEFAULT_ADDR),
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
}

impl App {
    /// Starts the plumbing; the gRPC server serves once [`RunService::run`] is called.
    pub async fn build(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
        let infra = Infra::start(settings.common, shutdown).await?;
        Ok(Self { infra })
    }

    /// The same on an already bound listener.
    pub async fn build_on(
        settings: Settings,
        listener: tokio::net::TcpListener,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let infra = Infra::start_on(settings.common, listener, shutdown).await?;
        Ok(Self { infra })
    }

    /// Where the gRPC server listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.infra.local_addr()
    }
}

impl RunService for App {
    async fn run(self) -> anyhow::Result<()> {
        self.infra
            .serve(GrpcServer::new(mst_proto::FILE_DESCRIPTOR_SET))
            .await
    }
}
