//! The four services as separate processes (`mst-service`, this package's binary), each with its
//! own database, on one real `nats-server`, sending mail to a real SMTP sink: what a deployment
//! runs, for the end-to-end scenario and the chaos suite (kill -9 a service, start it again).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mst_testkit::{NatsServer, Postgres, SmtpSink, TestDb, unique_prefix, wait_until};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The services, in start order (forms and instruction call each other lazily).
pub const SERVICES: [&str; 4] = ["forms", "instruction", "messagerie", "oscars"];

/// One service process.
pub struct ServiceProcess {
    /// forms, instruction, messagerie or oscars.
    pub name: &'static str,
    /// Where its gRPC server listens.
    pub addr: SocketAddr,
    child: Option<tokio::process::Child>,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// A database of its own (`None` on a cluster the caller owns: [`ProcessStack::start_on`]).
    _db: Option<TestDb>,
}

impl ServiceProcess {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// NATS, the SMTP sink and the four service processes.
pub struct ProcessStack {
    /// The NATS server.
    pub nats: NatsServer,
    /// The SMTP sink the messagerie sends to.
    pub smtp: SmtpSink,
    /// Stream name (upper case) and subject prefix of this stack.
    pub prefix: String,
    /// The processes, in [`SERVICES`] order.
    pub services: Vec<ServiceProcess>,
    binary: PathBuf,
    dir: tempfile::TempDir,
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

impl ProcessStack {
    /// Starts everything with `binary` (pass `env!("CARGO_BIN_EXE_mst-service")`); `extra`
    /// settings go to every service after the defaults. Returns once each answers its health
    /// check SERVING.
    pub async fn start(binary: impl AsRef<Path>, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with_db(binary, extra, None).await
    }

    /// The same, each service with a fresh database on `postgres`, a cluster the caller owns
    /// (and may stop and restart: the chaos suite does).
    pub async fn start_on(
        binary: impl AsRef<Path>,
        extra: &[(&str, &str)],
        postgres: &Postgres,
    ) -> anyhow::Result<Self> {
        Self::start_with_db(binary, extra, Some(postgres)).await
    }

    async fn start_with_db(
        binary: impl AsRef<Path>,
        extra: &[(&str, &str)],
        postgres: Option<&Postgres>,
    ) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let smtp = SmtpSink::start().await?;
        let prefix = unique_prefix();
        let dir = tempfile::tempdir()?;
        let mut addrs = Vec::new();
        for _ in SERVICES {
            addrs.push(free_addr()?);
        }
        let url = |i: usize| format!("http://{}", addrs[i]);
        let mut services = Vec::new();
        for (i, name) in SERVICES.into_iter().enumerate() {
            let (db, db_url) = match postgres {
                Some(pg) => (None, pg.create_database().await?),
                None => {
                    let db = TestDb::new().await?;
                    let url = db.url().to_owned();
                    (Some(db), url)
                }
            };
            let mut env: Vec<(String, String)> = [
                ("MST_GRPC_ADDR", addrs[i].to_string()),
                ("MST_DATABASE_URL", db_url),
                ("MST_MIGRATE_ON_START", "true".to_owned()),
                ("MST_NATS_URL", nats.url()),
                ("MST_NATS_STREAM", prefix.to_uppercase()),
                ("MST_NATS_SUBJECT_PREFIX", prefix.clone()),
                ("MST_SHUTDOWN_GRACE_SECS", "5".to_owned()),
                ("MST_FORMS_URL", url(0)),
                ("MST_INSTRUCTION_URL", url(1)),
                (
                    "MST_ATTACHMENTS_DIR",
                    dir.path().join(name).to_string_lossy().into_owned(),
                ),
                (
                    "MST_SMTP_URL",
                    format!("smtp://{}:{}", smtp.host(), smtp.port()),
                ),
                ("MST_MESSAGE_NOTIFY_DELAY_MS", "1000".to_owned()),
                ("MST_MAIL_RETRY_BASE_MS", "100".to_owned()),
                ("MST_MAIL_RETRY_MAX_MS", "1000".to_owned()),
                ("MST_MAIL_POLL_MS", "100".to_owned()),
                ("MST_DIGEST_SCHEDULER", "false".to_owned()),
                ("MST_CLOSING_CHECK_SECS", "0".to_owned()),
                ("RUST_LOG", "info".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            env.extend(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            services.push(ServiceProcess {
                name,
                addr: addrs[i],
                child: None,
                env,
                log: dir.path().join(format!("{name}.log")),
                _db: db,
            });
        }
        let mut stack = Self {
            nats,
            smtp,
            prefix,
            services,
            binary: binary.as_ref().to_owned(),
            dir,
        };
        for name in SERVICES {
            stack.spawn(name)?;
        }
        for name in SERVICES {
            stack.wait_serving(name).await?;
        }
        Ok(stack)
    }

    fn index(&self, name: &str) -> anyhow::Result<usize> {
        self.services
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| anyhow::anyhow!("no service {name}"))
    }

    /// The process of `name`.
    pub fn service(&self, name: &str) -> &ServiceProcess {
        &self.services[self.index(name).unwrap_or(0)]
    }

    /// Where the services keep their files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name)?;
        let service = &mut self.services[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&service.log)?;
        let child = tokio::process::Command::new(&self.binary)
            .arg(service.name)
            .envs(service.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.binary.display()))?;
        service.child = Some(child);
        Ok(())
    }

    /// Waits until `name` answers its health check SERVING (30 s at most).
    pub async fn wait_serving(&self, name: &str) -> anyhow::Result<()> {
        let url = self.service(name).url();
        wait_until(Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                let channel = tonic::transport::Endpoint::from_shared(url)
                    .ok()?
                    .connect()
                    .await
                    .ok()?;
                let status = HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                    .ok()?
                    .into_inner()
                    .status();
                (status == ServingStatus::Serving).then_some(())
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{name} is not serving: {e}\n{}", self.log(name)))
    }

    /// Kills `name` at once (SIGKILL: no drain, no goodbye).
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name)?;
        if let Some(mut child) = self.services[i].child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts `name` again (after [`ProcessStack::kill`]) and waits until it serves.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.kill(name).await?;
        self.spawn(name)?;
        self.wait_serving(name).await
    }

    /// What `name` wrote to its log so far.
    pub fn log(&self, name: &str) -> String {
        self.index(name)
            .ok()
            .and_then(|i| std::fs::read_to_string(&self.services[i].log).ok())
            .unwrap_or_default()
    }

    /// Stops every service with SIGTERM (they drain), waiting at most `grace` for each.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        for service in &mut self.services {
            if let Some(mut child) = service.child.take() {
                if let Some(pid) = child.id() {
                    let _ = tokio::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()
                        .await;
                }
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    child.kill().await?;
                }
            }
        }
        Ok(())
    }
}
