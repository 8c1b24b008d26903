//! The oscars service of mst-dossiers: the OSCARS fiches made from accepted dossiers, the ambassadeurs' work and the public feed (DESIGN.md §2).
//!
//! [`App::build`] starts it on its settings — database (migrated when asked), JetStream
//! streams and outbox relay, token verifier, the durable consumer of `dossier.status_changed`
//! (and of its own feed, for replays) — and [`App::local_addr`] tells where its gRPC server
//! listens (`OscarsService`, `OscarsPublicService`, health and reflection), so tests can start it
//! in-process on port 0. Layout: `mapping` (dossier → fiche), `store` (tables), `app` (use
//! cases), `events` (consumer), `grpc` (handlers), `ratelimit` (public API). See README.md.

#![forbid(unsafe_code)]
pub mod app;
pub mod events;
pub mod grpc;
pub mod mapping;
pub mod ratelimit;
pub mod store;

use std::net::SocketAddr;

use mst_kit::Shutdown;
use mst_kit::config::{CommonSettings, Env};
use mst_kit::grpc::GrpcServer;
use mst_kit::service::{Infra, RunService};

/// Service name: database, consumer and log identity.
pub const SERVICE: &str = "oscars";
/// Default gRPC address of the embedded setup.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50054);

/// Settings of the oscars service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What every service reads.
    pub common: CommonSettings,
    /// The forms service (`MST_FORMS_URL`), read for the content of accepted dossiers.
    pub forms_url: String,
    /// Name of the durable consumer (`MST_OSCARS_CONSUMER`, default `oscars`). A new name on an
    /// empty database replays the stream from the start and rebuilds every fiche.
    pub consumer: String,
    /// Requests per second per client address on the public API (`MST_OSCARS_PUBLIC_RATE`,
    /// default 20; 0 disables the limit).
    pub public_rate: f64,
    /// Requests a client may make at once (`MST_OSCARS_PUBLIC_BURST`, default 40).
    pub public_burst: f64,
}

impl Settings {
    /// Reads the settings; problems are recorded in `env`.
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            common: CommonSettings::from_env(env, SERVICE, DEFAULT_ADDR),
            forms_url: env.or("MST_FORMS_URL", "http://127.0.0.1:50051".to_owned()),
            consumer: env.or("MST_OSCARS_CONSUMER", SERVICE.to_owned()),
            public_rate: env.or("MST_OSCARS_PUBLIC_RATE", 20.0),
            public_burst: env.or("MST_OSCARS_PUBLIC_BURST", 40.0),
        }
    }
}

impl AsRef<CommonSettings> for Settings {
    fn as_ref(&self) -> &CommonSettings {
        &self.common
    }
}

/// A started oscars service.
#[derive(Debug)]
pub struct App {
    infra: Infra,
    oscars: app::Oscars,
    limiter: ratelimit::RateLimiter,
}

impl App {
    /// Starts the plumbing and the consumer; the gRPC server serves once [`RunService::run`] is
    /// called.
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
        let forms = mst_kit::grpc::peer_channel(&settings.forms_url)?;
        let forms =
            mst_proto::forms::forms_internal_service_client::FormsInternalServiceClient::with_interceptor(
                forms, token,
            );
        let consumer = settings.consumer.clone();
        let limiter = ratelimit::RateLimiter::new(settings.public_rate, settings.public_burst);
        let infra = Infra::start_on(settings.common, listener, shutdown).await?;
        let oscars = app::Oscars::new(infra.db.clone(), infra.relay.clone(), forms);
        infra.spawn_consumer(
            events::spec(&consumer),
            events::OscarsEvents::new(oscars.clone()),
        );
        Ok(Self {
            infra,
            oscars,
            limiter,
        })
    }

    /// Where the gRPC server listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.infra.local_addr()
    }

    /// The use cases.
    pub fn oscars(&self) -> app::Oscars {
        self.oscars.clone()
    }
}

impl RunService for App {
    async fn run(self) -> anyhow::Result<()> {
        use mst_proto::oscars::oscars_public_service_server::OscarsPublicServiceServer;
        use mst_proto::oscars::oscars_service_server::OscarsServiceServer;
        let auth = self.infra.auth.clone();
        let server = GrpcServer::new(mst_proto::FILE_DESCRIPTOR_SET)
            .add_service(OscarsServiceServer::with_interceptor(
                grpc::Api::new(self.oscars.clone()),
                auth.interceptor(),
            ))
            .add_service(OscarsPublicServiceServer::new(grpc::PublicApi::new(
                self.oscars.clone(),
                self.limiter.clone(),
            )));
        self.infra.serve(server).await
    }
}
