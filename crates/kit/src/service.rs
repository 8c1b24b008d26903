//! The runtime every service shares: bind, connect, migrate, publish, consume, serve, drain.
//!
//! [`Infra::start`] binds the gRPC listener first (so port 0 works in tests and the address is
//! known before anything else starts), connects the database and applies migrations when asked,
//! connects NATS and ensures the streams, builds the token verifier, and starts the outbox relay.
//! Services add their consumers with [`Infra::spawn_consumer`] and finally [`Infra::serve`] their
//! gRPC routes until shutdown. [`main`] is the whole `main` of a service binary.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use mst_bus::{Bus, BusSettings, Consumer, ConsumerSpec, Handler, Relay, RelayHandle};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::config::{CommonSettings, Env};
use crate::grpc::GrpcServer;
use crate::shutdown::Shutdown;

/// Connections and background tasks of a running service.
#[derive(Debug)]
pub struct Infra {
    /// The service's settings.
    pub settings: CommonSettings,
    /// Database pool.
    pub db: DatabaseConnection,
    /// NATS / JetStream.
    pub bus: Bus,
    /// Wakes the relay after a commit that wrote events.
    pub relay: RelayHandle,
    /// Bearer-token verifier.
    pub auth: Authenticator,
    /// Shutdown signal and task tracker.
    pub shutdown: Shutdown,
    listener: TcpListener,
}

impl Infra {
    /// Starts the plumbing of `settings.service`, listening on `settings.grpc_addr`.
    pub async fn start(settings: CommonSettings, shutdown: Shutdown) -> anyhow::Result<Self> {
        let listener = crate::grpc::bind(settings.grpc_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.grpc_addr))?;
        Self::start_on(settings, listener, shutdown).await
    }

    /// Starts the plumbing on an already bound listener (tests and the embedded runner bind every
    /// service first, so that services can be given each other's addresses).
    pub async fn start_on(
        settings: CommonSettings,
        listener: TcpListener,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let service = settings.service;
        let db = crate::db::connect(&settings.database)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the {service} database: {e}"))?;
        if settings.database.migrate_on_start {
            mst_migrations::run(service, &db, mst_migrations::Command::Up)
                .await
                .map_err(|e| anyhow::anyhow!("{service} migrations failed: {e}"))?;
        }
        let mut bus_settings = BusSettings::new(
            settings.nats.url.clone(),
            settings.nats.stream.clone(),
            settings.nats.subject_prefix.clone(),
        );
        bus_settings.replicas = settings.nats.replicas;
        bus_settings.client_name = format!("mst-{service}");
        let bus = Bus::connect(bus_settings).await.map_err(|e| {
            anyhow::anyhow!("cannot set up JetStream at {}: {e}", settings.nats.url)
        })?;
        if settings.auth.uses_dev_secret() {
            tracing::warn!(
                "verifying tokens with the embedded development secret: set MST_AUTH_JWT_SECRET or MST_AUTH_OIDC_ISSUER_URL beyond one machine"
            );
        }
        let auth = Authenticator::new(settings.auth.clone()).await?;
        shutdown.spawn(auth.clone().run_key_refresh(shutdown.token()));

        let relay = Relay::new(db.clone(), bus.clone());
        let relay_handle = relay.handle();
        shutdown.spawn(relay.run(shutdown.token()));

        Ok(Self {
            settings,
            db,
            bus,
            relay: relay_handle,
            auth,
            shutdown,
            listener,
        })
    }

    /// The address the gRPC server listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts a durable consumer, tracked by the shutdown.
    pub fn spawn_consumer<H: Handler>(&self, spec: ConsumerSpec, handler: H) {
        let consumer = Consumer::new(self.db.clone(), self.bus.clone(), spec, handler);
        self.shutdown.spawn(consumer.run(self.shutdown.token()));
    }

    /// Serves `server` until shutdown, then closes the database pool. The in-flight calls and
    /// the tracked tasks (relay, consumers) drain together, within one grace period from the
    /// moment shutdown starts; the pool closes after both.
    pub async fn serve(self, server: GrpcServer) -> anyhow::Result<()> {
        let grace = self.settings.shutdown_grace;
        let served = async {
            let result = server
                .serve(self.listener, self.shutdown.clone(), grace)
                .await;
            // A server that failed stops the rest too.
            self.shutdown.trigger();
            result
        };
        let drained = async {
            self.shutdown.cancelled().await;
            self.shutdown.drain(grace).await;
        };
        let (result, ()) = tokio::join!(served, drained);
        // Closing waits for connections still checked out: a task that outlived the grace
        // period may hold one, and must not hold the exit.
        match tokio::time::timeout(POOL_CLOSE_WAIT, self.db.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "closing the database pool"),
            Err(_) => tracing::warn!("a database connection is still in use; exiting anyway"),
        }
        result
    }
}

/// How long a stopping service waits for the database pool to close after draining.
const POOL_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The `main` of a service binary: reads settings (exiting with every problem listed), starts
/// telemetry, builds the service with `build`, serves until SIGTERM/SIGINT, drains, flushes traces.
pub async fn main<S, A, B, R>(read: impl FnOnce(&mut Env) -> S, build: B) -> anyhow::Result<()>
where
    S: AsRef<CommonSettings>,
    B: FnOnce(S, Shutdown) -> A,
    A: Future<Output = anyhow::Result<R>>,
    R: RunService,
{
    crate::install_crypto_provider();
    let mut env = Env::from_process();
    let settings = read(&mut env);
    if let Err(error) = env.finish() {
        eprintln!("{error}");
        std::process::exit(2);
    }
    let telemetry = crate::telemetry::init(&settings.as_ref().telemetry)?;
    let grace = settings.as_ref().shutdown_grace;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let result = match build(settings, shutdown.clone()).await {
        // Serving drains within the grace period itself.
        Ok(app) => app.run().await,
        Err(error) => {
            shutdown.trigger();
            shutdown.drain(grace).await;
            Err(error)
        }
    };
    if let Err(error) = &result {
        tracing::error!(error = format!("{error:#}"), "service failed");
    }
    telemetry.shutdown().await;
    result
}

/// A built service that can run until shutdown.
pub trait RunService {
    /// Serves until shutdown.
    fn run(self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

#[cfg(test)]
mod tests {
    use sea_orm::TransactionTrait as _;

    use super::*;

    #[tokio::test]
    async fn a_task_that_ignores_the_shutdown_and_holds_a_connection_does_not_hold_the_exit() {
        let nats = mst_testkit::NatsServer::start().await.unwrap();
        let db = mst_testkit::TestDb::new().await.unwrap();
        let mut env = Env::from_map([
            ("MST_DATABASE_URL", db.url().to_owned()),
            ("MST_NATS_URL", nats.url()),
            ("MST_SHUTDOWN_GRACE_SECS", "1".to_owned()),
        ]);
        let settings = CommonSettings::from_env(&mut env, "forms", ([127, 0, 0, 1], 0).into());
        env.finish().unwrap();
        let listener = crate::grpc::bind(settings.grpc_addr).await.unwrap();
        let shutdown = Shutdown::new();
        let infra = Infra::start_on(settings, listener, shutdown.clone())
            .await
            .unwrap();
        let (holding, held) = tokio::sync::oneshot::channel();
        let pool = infra.db.clone();
        infra.shutdown.spawn(async move {
            let _txn = pool.begin().await.unwrap();
            holding.send(()).unwrap();
            std::future::pending::<()>().await;
        });
        held.await.unwrap();
        let serving =
            tokio::spawn(infra.serve(GrpcServer::new(tonic_health::pb::FILE_DESCRIPTOR_SET)));

        shutdown.trigger();
        // Without the bounds, the drain gives up after the grace period but closing the pool
        // waits for the held connection forever.
        let served = tokio::time::timeout(Duration::from_secs(30), serving)
            .await
            .expect("the service exits although a task still holds a connection")
            .unwrap();
        assert!(served.is_ok(), "{served:?}");
    }
}
