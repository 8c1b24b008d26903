//! A real SMTP sink per test: `python3 -m aiosmtpd` with the `Mailbox` handler on a free port,
//! storing every message it accepts in a Maildir that the test reads back with
//! [`SmtpSink::messages`] / [`SmtpSink::wait_for`]. It can be taken down and brought back on the
//! same port with the same Maildir, to test how mail delivery rides out an SMTP outage.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::mail::ReceivedMail;
use crate::process::{POLL_INTERVAL, START_DEADLINE, find_program, free_port, log_tail};

const INSTALL_HINT: &str = "install it with `pip install aiosmtpd`";
/// How many fresh ports [`SmtpSink::start`] tries when another process takes the one it picked.
const PORT_ATTEMPTS: usize = 3;
/// How often [`SmtpSink::wait_for`] reads the Maildir.
const MAIL_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long one readiness probe waits for the `220` banner.
const BANNER_TIMEOUT: Duration = Duration::from_secs(2);

/// A running (or stopped) aiosmtpd SMTP sink owned by one test, listening on 127.0.0.1.
///
/// Dropping it kills the sink and removes its Maildir.
pub struct SmtpSink {
    // Declared before `dir` so the process is killed before its directory is removed.
    child: Option<Child>,
    port: u16,
    python: PathBuf,
    dir: TempDir,
    /// Whether messages are kept in the Maildir (else accepted and discarded).
    keep: bool,
}

impl SmtpSink {
    /// Starts `python3 -m aiosmtpd -n -l 127.0.0.1:<free port> -c aiosmtpd.handlers.Mailbox
    /// <tmp>/Maildir` and returns once the port answers with an SMTP `220` banner.
    ///
    /// Fails when aiosmtpd is not installed (`pip install aiosmtpd`) or not ready within 30 s.
    pub async fn start() -> anyhow::Result<Self> {
        Self::launched(true).await
    }

    /// The same SMTP server with aiosmtpd's `Sink` handler: it accepts every message and keeps
    /// none ([`SmtpSink::messages`] stays empty). Writing the Maildir costs the Python process
    /// most of its time per message; benchmarks use this one to measure the senders.
    pub async fn start_discarding() -> anyhow::Result<Self> {
        Self::launched(false).await
    }

    async fn launched(keep: bool) -> anyhow::Result<Self> {
        let python = find_program("python3", &format!("install Python 3, then {INSTALL_HINT}"))?;
        let dir = tempfile::Builder::new()
            .prefix("mst-smtp-")
            .tempdir()
            .context("creating the SMTP sink temporary directory")?;
        for sub in ["new", "cur", "tmp"] {
            let path = dir.path().join("Maildir").join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let mut attempt = 1;
        loop {
            let port = free_port()?;
            match launch(&python, dir.path(), port, keep).await {
                Ok(child) => {
                    tracing::debug!(port, dir = %dir.path().display(), "SMTP sink ready");
                    return Ok(Self {
                        child: Some(child),
                        port,
                        python,
                        dir,
                        keep,
                    });
                }
                // The free port was taken between our probe and the sink's bind: pick another.
                Err(err)
                    if attempt < PORT_ATTEMPTS
                        && format!("{err:#}")
                            .to_lowercase()
                            .contains("address already in use") =>
                {
                    tracing::debug!(port, "SMTP sink port taken, retrying");
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The host to send to: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The SMTP port; the same across [`stop`](Self::stop) and [`start_again`](Self::start_again).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Maildir the sink writes to (received messages are in its `new/`).
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }

    /// Whether the sink process is running (it was started and has not been stopped or died).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Kills the sink and waits for it to exit; received messages are kept. Stopping a stopped
    /// sink does nothing.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("killing the SMTP sink")?;
            tracing::debug!(port = self.port, "SMTP sink stopped");
        }
        Ok(())
    }

    /// Starts the stopped sink again on the same port with the same Maildir, and waits until it
    /// answers. Fails if it is still running.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("the SMTP sink on port {} is already running", self.port);
        }
        let child = launch(&self.python, self.dir.path(), self.port, self.keep)
            .await
            .with_context(|| format!("starting the SMTP sink again on port {}", self.port))?;
        self.child = Some(child);
        tracing::debug!(port = self.port, "SMTP sink ready again");
        Ok(())
    }

    /// Every message received so far, oldest first (by file time, then name).
    pub async fn messages(&self) -> anyhow::Result<Vec<ReceivedMail>> {
        let new = self.maildir().join("new");
        let mut entries = tokio::fs::read_dir(&new)
            .await
            .with_context(|| format!("reading {}", new.display()))?;
        let mut files: Vec<(SystemTime, PathBuf)> = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .with_context(|| format!("reading {}", new.display()))?
        {
            let metadata = entry
                .metadata()
                .await
                .context("reading a message's metadata")?;
            if metadata.is_file() {
                let modified = metadata.modified().context("reading a message's mtime")?;
                files.push((modified, entry.path()));
            }
        }
        files.sort();
        let mut messages = Vec::with_capacity(files.len());
        for (_, path) in files {
            let bytes = tokio::fs::read(&path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            messages.push(ReceivedMail::parse(
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        Ok(messages)
    }

    /// Polls the Maildir every 20 ms until at least `count` messages satisfy `predicate`, and
    /// returns the matching ones (oldest first). Fails after `timeout`, listing what was received.
    pub async fn wait_for<P>(
        &self,
        predicate: P,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReceivedMail>>
    where
        P: Fn(&ReceivedMail) -> bool,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let past_deadline = Instant::now() >= deadline;
            let received = self.messages().await?;
            let matching: Vec<ReceivedMail> =
                received.iter().filter(|m| predicate(m)).cloned().collect();
            if matching.len() >= count {
                return Ok(matching);
            }
            if past_deadline {
                let mut listing = String::new();
                for mail in &received {
                    let _ = write!(listing, "\n  to {:?}, subject {:?}", mail.to, mail.subject);
                }
                bail!(
                    "expected at least {count} matching message(s) within {timeout:?}, {} matched; \
                     received {} message(s):{listing}",
                    matching.len(),
                    received.len()
                );
            }
            tokio::time::sleep_until((Instant::now() + MAIL_POLL_INTERVAL).min(deadline)).await;
        }
    }
}

/// Spawns aiosmtpd on `port` with its Maildir under `dir` (or discarding what it accepts when
/// not `keep`), and waits until it sends its banner.
async fn launch(python: &Path, dir: &Path, port: u16, keep: bool) -> anyhow::Result<Child> {
    let log = dir.join("aiosmtpd.log");
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let offset = stderr.metadata().map(|m| m.len()).unwrap_or(0);
    let mut command = Command::new(python);
    command.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
    if keep {
        command
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.join("Maildir"));
    } else {
        command.args(["-c", "aiosmtpd.handlers.Sink"]);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {} -m aiosmtpd", python.display()))?;

    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().context("polling the SMTP sink")? {
            let output = log_since(&log, offset);
            if output.contains("No module named aiosmtpd") {
                bail!("the Python module aiosmtpd is missing: {INSTALL_HINT}");
            }
            bail!(
                "aiosmtpd exited ({status}) before it was ready on port {port}; output:\n{output}"
            );
        }
        if answers_banner(port).await {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            // Best effort: the error below is what matters.
            let _ = child.kill().await;
            bail!(
                "aiosmtpd was not ready on port {port} within {START_DEADLINE:?}; output:\n{}",
                log_since(&log, offset)
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Whether 127.0.0.1:`port` accepts a connection and greets with `220`.
async fn answers_banner(port: u16) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        let mut banner = String::new();
        BufReader::new(&mut stream)
            .read_line(&mut banner)
            .await
            .ok()?;
        // Polite, so the sink does not log a dropped connection; failure is irrelevant.
        let _ = stream.write_all(b"QUIT\r\n").await;
        Some(banner.starts_with("220"))
    };
    matches!(
        tokio::time::timeout(BANNER_TIMEOUT, probe).await,
        Ok(Some(true))
    )
}

/// What the log holds after byte `offset`.
fn log_since(log: &Path, offset: u64) -> String {
    let all = log_tail(log, usize::MAX);
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
    all.get(start..).unwrap_or(&all).to_owned()
}
