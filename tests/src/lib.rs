//! The end-to-end harness: the four services started in-process on port 0, each on its own fresh
//! database (SQLite or PostgreSQL per `MST_TEST_DB`), all on one real `nats-server` with a unique
//! stream and subject prefix.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use mst_kit::Shutdown;
use mst_kit::config::Env;
use mst_kit::service::RunService as _;
use mst_testkit::{NatsServer, TestDb, unique_prefix};
use tokio::task::JoinHandle;

/// Installs the global tracing subscriber (logs at `warn` unless `RUST_LOG` says otherwise, and
/// the OpenTelemetry layer so trace ids exist) once per test process.
pub fn init_telemetry() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut env = Env::from_map([(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )]);
        let settings = mst_kit::telemetry::TelemetrySettings::from_env(&mut env, "e2e");
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let _ = mst_kit::telemetry::install(&settings, provider);
    });
}

/// One started service.
pub struct Running {
    /// Service name.
    pub name: &'static str,
    /// gRPC address.
    pub addr: SocketAddr,
    /// Its serving task; resolves after shutdown and drain.
    pub task: JoinHandle<anyhow::Result<()>>,
    _db: TestDb,
}

impl Running {
    /// `http://addr`, for tonic endpoints.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The four services on one NATS.
pub struct Stack {
    /// The NATS server.
    pub nats: NatsServer,
    /// Stream name and subject prefix of this stack.
    pub prefix: String,
    /// forms, instruction, messagerie, oscars — in that order.
    pub services: Vec<Running>,
    /// Stops every service.
    pub shutdown: Shutdown,
}

impl Stack {
    /// Starts NATS and the four services.
    pub async fn start() -> anyhow::Result<Self> {
        init_telemetry();
        let nats = NatsServer::start().await?;
        let prefix = unique_prefix();
        let shutdown = Shutdown::new();
        let mut services = Vec::new();
        for name in ["forms", "instruction", "messagerie", "oscars"] {
            let db = TestDb::new().await?;
            let mut env = Env::from_map([
                ("MST_GRPC_ADDR", "127.0.0.1:0".to_owned()),
                ("MST_DATABASE_URL", db.url().to_owned()),
                ("MST_NATS_URL", nats.url()),
                ("MST_NATS_STREAM", prefix.to_uppercase()),
                ("MST_NATS_SUBJECT_PREFIX", prefix.clone()),
                ("MST_SHUTDOWN_GRACE_SECS", "5".to_owned()),
            ]);
            let (addr, task) = start_service(name, &mut env, shutdown.clone()).await?;
            services.push(Running {
                name,
                addr,
                task,
                _db: db,
            });
        }
        Ok(Self {
            nats,
            prefix,
            services,
            shutdown,
        })
    }

    /// Triggers shutdown and waits for every service to drain (at most `grace`).
    pub async fn stop(self, grace: Duration) -> anyhow::Result<()> {
        self.shutdown.trigger();
        for s in self.services {
            tokio::time::timeout(grace, s.task)
                .await
                .map_err(|_| anyhow::anyhow!("{} did not stop within {grace:?}", s.name))???;
        }
        Ok(())
    }
}

async fn start_service(
    name: &str,
    env: &mut Env,
    shutdown: Shutdown,
) -> anyhow::Result<(SocketAddr, JoinHandle<anyhow::Result<()>>)> {
    macro_rules! start {
        ($krate:ident) => {{
            let settings = $krate::Settings::from_env(env);
            std::mem::take(env).finish()?;
            let app = $krate::App::build(settings, shutdown).await?;
            (app.local_addr()?, tokio::spawn(app.run()))
        }};
    }
    let started = match name {
        "forms" => start!(mst_forms),
        "instruction" => start!(mst_instruction),
        "messagerie" => start!(mst_messagerie),
        "oscars" => start!(mst_oscars),
        other => anyhow::bail!("unknown service {other}"),
    };
    Ok(started)
}
