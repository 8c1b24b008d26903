//! The end-to-end harness: the four services started in-process on port 0, each on its own fresh
//! database (SQLite or PostgreSQL per `MST_TEST_DB`), all on one real `nats-server` with a unique
//! stream and subject prefix.

#![forbid(unsafe_code)]

pub mod bench;
pub mod processes;
pub mod support;

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use mst_kit::Shutdown;
use mst_kit::config::Env;
use mst_kit::service::RunService as _;
use mst_testkit::{NatsServer, SmtpSink, TestDb, unique_prefix};
use tokio::task::JoinHandle;

/// Installs the global tracing subscriber (logs at `warn` unless `RUST_LOG` says otherwise, and
/// the OpenTelemetry layer so trace ids exist) once per test process.
pub fn init_telemetry() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut env = Env::from_map([(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,mst_kit::service=error".into()),
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

/// Where each service of a running stack listens (in-process [`Stack`] or
/// [`processes::ProcessStack`]); the [`support`] helpers take either.
pub trait Services {
    /// `http://addr` of `name` (forms, instruction, messagerie, oscars).
    fn url(&self, name: &str) -> String;
    /// The NATS server's URL.
    fn nats_url(&self) -> String;
    /// Subject prefix (the stream is its upper case).
    fn prefix(&self) -> &str;
}

impl Services for Stack {
    fn url(&self, name: &str) -> String {
        self.service(name).url()
    }
    fn nats_url(&self) -> String {
        self.nats.url()
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Services for processes::ProcessStack {
    fn url(&self, name: &str) -> String {
        self.service(name).url()
    }
    fn nats_url(&self) -> String {
        self.nats.url()
    }
    fn prefix(&self) -> &str {
        &self.prefix
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
    /// The instruction use cases (the workflow's public API is driven through them until its
    /// gRPC service is served).
    pub instruction: mst_instruction::app::Instruction,
    /// The SMTP sink the messagerie sends to (stop and start it to simulate an outage).
    pub smtp: SmtpSink,
    /// The messagerie use cases (tests trigger the daily digest through them).
    pub messagerie: mst_messagerie::app::Messagerie,
    /// The forms service's resolver of stale freeze holds (run on demand by tests).
    pub forms_freezes: mst_forms::freeze::StaleFreezes,
    _files: tempfile::TempDir,
}

impl Stack {
    /// Starts NATS and the four services, each knowing the others' addresses. The closing-date
    /// scheduler is off (`MST_CLOSING_CHECK_SECS=0`): tests drive it.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// The same with more settings for every service (they override the defaults above).
    pub async fn start_with(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        init_telemetry();
        let nats = NatsServer::start().await?;
        let prefix = unique_prefix();
        let shutdown = Shutdown::new();
        let files = tempfile::tempdir()?;
        let smtp = SmtpSink::start().await?;
        let names = ["forms", "instruction", "messagerie", "oscars"];
        let mut listeners = Vec::new();
        for _ in names {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
        }
        let url = |i: usize| -> anyhow::Result<String> {
            Ok(format!("http://{}", listeners[i].local_addr()?))
        };
        let (forms_url, instruction_url) = (url(0)?, url(1)?);
        let mut services = Vec::new();
        let mut instruction = None;
        let mut messagerie = None;
        let mut forms_freezes = None;
        for (name, listener) in names.into_iter().zip(listeners) {
            let db = TestDb::new().await?;
            let mut env = Env::from_map([
                ("MST_DATABASE_URL", db.url().to_owned()),
                ("MST_NATS_URL", nats.url()),
                ("MST_NATS_STREAM", prefix.to_uppercase()),
                ("MST_NATS_SUBJECT_PREFIX", prefix.clone()),
                // A service stops within this plus 1 s (calls in flight and tasks drain
                // together, then the pool closes): well inside the 10 s the tests give `stop`.
                ("MST_SHUTDOWN_GRACE_SECS", "3".to_owned()),
                ("MST_FORMS_URL", forms_url.clone()),
                ("MST_INSTRUCTION_URL", instruction_url.clone()),
                (
                    "MST_ATTACHMENTS_DIR",
                    files.path().join(name).to_string_lossy().into_owned(),
                ),
                ("MST_CLOSING_CHECK_SECS", "0".to_owned()),
            ]);
            for (key, value) in extra {
                env.set(*key, *value);
            }
            let addr = listener.local_addr()?;
            let task = match name {
                "forms" => {
                    let settings = mst_forms::Settings::from_env(&mut env);
                    std::mem::take(&mut env).finish()?;
                    let app =
                        mst_forms::App::build_on(settings, listener, shutdown.clone()).await?;
                    forms_freezes = Some(app.stale_freezes());
                    tokio::spawn(app.run())
                }
                "instruction" => {
                    let settings = mst_instruction::Settings::from_env(&mut env);
                    std::mem::take(&mut env).finish()?;
                    let app = mst_instruction::App::build_on(settings, listener, shutdown.clone())
                        .await?;
                    instruction = Some(app.instruction());
                    tokio::spawn(app.run())
                }
                "messagerie" => {
                    // Real SMTP to the sink; short delays so tests stay fast (the digest is
                    // triggered by the tests, not by the clock).
                    env.set(
                        "MST_SMTP_URL",
                        format!("smtp://{}:{}", smtp.host(), smtp.port()),
                    );
                    env.set("MST_MESSAGE_NOTIFY_DELAY_MS", "1000");
                    env.set("MST_MAIL_RETRY_BASE_MS", "100");
                    env.set("MST_MAIL_RETRY_MAX_MS", "500");
                    env.set("MST_MAIL_POLL_MS", "100");
                    env.set("MST_DIGEST_SCHEDULER", "false");
                    let settings = mst_messagerie::Settings::from_env(&mut env);
                    std::mem::take(&mut env).finish()?;
                    let app =
                        mst_messagerie::App::build_on(settings, listener, shutdown.clone()).await?;
                    messagerie = Some(app.messagerie());
                    tokio::spawn(app.run())
                }
                _ => {
                    let settings = mst_oscars::Settings::from_env(&mut env);
                    std::mem::take(&mut env).finish()?;
                    let app =
                        mst_oscars::App::build_on(settings, listener, shutdown.clone()).await?;
                    tokio::spawn(app.run())
                }
            };
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
            instruction: instruction.ok_or_else(|| anyhow::anyhow!("instruction did not start"))?,
            smtp,
            messagerie: messagerie.ok_or_else(|| anyhow::anyhow!("messagerie did not start"))?,
            forms_freezes: forms_freezes.ok_or_else(|| anyhow::anyhow!("forms did not start"))?,
            _files: files,
        })
    }

    /// Where the services store files (`<dir>/<service>`).
    pub fn files_dir(&self) -> &std::path::Path {
        self._files.path()
    }

    /// The running service called `name`.
    pub fn service(&self, name: &str) -> &Running {
        self.services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or(&self.services[0])
    }

    /// Triggers shutdown and waits for every service to drain (at most `grace`).
    pub async fn stop(self, grace: Duration) -> anyhow::Result<()> {
        self.shutdown.trigger();
        // Wait for every service, then name each one that failed and how.
        let mut failures = Vec::new();
        for s in self.services {
            match tokio::time::timeout(grace, s.task).await {
                Err(_) => failures.push(format!("{} did not stop within {grace:?}", s.name)),
                Ok(Err(join)) => failures.push(format!("{}: {join}", s.name)),
                Ok(Ok(Err(error))) => failures.push(format!("{} failed: {error:#}", s.name)),
                Ok(Ok(Ok(()))) => {}
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", failures.join("; "))
        }
    }
}
