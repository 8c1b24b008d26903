//! A throw-away PostgreSQL 15 cluster: `initdb` + `pg_ctl` in a temporary directory, listening on
//! 127.0.0.1 on a free port, trust authentication, `fsync=off` (tests only).
//!
//! [`Postgres::shared`] starts one cluster per test process and hands each test its own database
//! ([`Postgres::create_database`]); [`Postgres::start`] gives a test a cluster of its own, for tests
//! that stop or restart PostgreSQL without disturbing the others.
//!
//! PostgreSQL refuses to run as root: when this process is root, every PostgreSQL binary runs as
//! user `postgres` through `runuser -u postgres --` and the directory is chowned to it.
//!
//! Cleanup. A dedicated cluster is stopped and its directory removed when dropped. The shared one
//! lives in a `static`, which is never dropped, so every cluster also gets a watchdog: a small
//! `sh` loop, in its own process group and deaf to SIGINT/SIGHUP (so a Ctrl-C of `cargo test`
//! does not kill it first), that polls the test process every 0.5 s and, once it is gone, stops
//! the cluster (`pg_ctl -m immediate stop`) and removes the directory. It is the one child process
//! that is deliberately not killed on drop: it must outlive the test process.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use sea_orm::{ConnectOptions, ConnectionTrait, Database};
use tokio::sync::{Mutex, OnceCell};

use crate::process::{
    START_DEADLINE, find_program, free_port, is_root, log_tail, require_executable,
};

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const INSTALL_HINT: &str = "install PostgreSQL 15 with `apt-get install -y postgresql-15`";
/// How many fresh ports [`Postgres::start`] tries when another process takes the one it picked.
const PORT_ATTEMPTS: usize = 3;

/// The cluster shared by every test of this process.
static SHARED: OnceCell<Postgres> = OnceCell::const_new();

/// The watchdog: waits for process `$1` to disappear (or become a zombie), or for directory `$2`
/// to be removed, then runs the stop command (`$3…`) and removes `$2`.
const WATCHDOG_SCRIPT: &str = r#"trap '' INT HUP
pid=$1; dir=$2; shift 2
while [ -d "$dir" ] && kill -0 "$pid" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' "/proc/$pid/status"; do
  sleep 0.5
done
"$@" >/dev/null 2>&1
rm -rf "$dir""#;

/// A throw-away PostgreSQL 15 cluster (superuser `postgres`, trust authentication).
pub struct Postgres {
    port: u16,
    /// Holds `data/` (the cluster), `pg.log` and the Unix socket.
    dir: PathBuf,
    /// `Some(runuser)` when the binaries must run as user `postgres`.
    runuser: Option<PathBuf>,
    /// Serializes stop/start; `true` while the server runs.
    running: Mutex<bool>,
    watchdog: Option<std::process::Child>,
}

impl Postgres {
    /// The cluster shared by all tests of this process, started on first use. Give each test its
    /// own database with [`create_database`](Self::create_database); never stop or restart this
    /// one (other tests use it concurrently): use [`Postgres::start`] for that.
    pub async fn shared() -> anyhow::Result<&'static Postgres> {
        SHARED
            .get_or_try_init(Self::start)
            .await
            .context("starting the shared PostgreSQL test cluster")
    }

    /// Creates and starts a cluster of its own, on a free port; stopped and removed on drop.
    ///
    /// Fails when PostgreSQL 15 is not installed (`apt-get install -y postgresql-15`).
    pub async fn start() -> anyhow::Result<Postgres> {
        let bin = Path::new(BIN_DIR);
        for tool in ["initdb", "pg_ctl"] {
            require_executable(&bin.join(tool), INSTALL_HINT)?;
        }
        let runuser = if is_root() {
            Some(find_program(
                "runuser",
                "PostgreSQL refuses to run as root and `runuser` (util-linux) is needed to run it as user postgres",
            )?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("mst-pg-")
            .tempdir()
            .context("creating the PostgreSQL temporary directory")?
            // From here on `Postgres`'s Drop and the watchdog own the directory's removal.
            .keep();
        let mut pg = Postgres {
            port: 0,
            dir,
            runuser,
            running: Mutex::new(false),
            watchdog: None,
        };
        if pg.runuser.is_some() {
            run(
                tokio::process::Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&pg.dir),
                "chown of the PostgreSQL directory to user postgres",
            )
            .await?;
        }
        pg.spawn_watchdog()?;

        let data = pg.data_dir();
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .args(["--no-sync", "--no-instructions"]);
        run(&mut initdb, "initdb").await?;

        let mut attempt = 1;
        loop {
            pg.port = free_port()?;
            match pg.pg_ctl_start().await {
                Ok(()) => break,
                // The free port was taken between our probe and the server's bind: pick another.
                Err(err)
                    if attempt < PORT_ATTEMPTS
                        && log_tail(&pg.log_path(), 4096)
                            .to_lowercase()
                            .contains("address already in use") =>
                {
                    tracing::debug!(port = pg.port, error = %err, "PostgreSQL port taken, retrying");
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
        *pg.running.get_mut() = true;
        tracing::debug!(port = pg.port, dir = %pg.dir.display(), "PostgreSQL test cluster ready");
        Ok(pg)
    }

    /// The port the cluster listens on (127.0.0.1); the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name`: `postgres://postgres@127.0.0.1:PORT/NAME`.
    pub fn url_for(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The URL of the maintenance database `postgres`.
    pub fn admin_url(&self) -> String {
        self.url_for("postgres")
    }

    /// Creates a database with a unique name (`t_<uuid>`) and returns its URL.
    pub async fn create_database(&self) -> anyhow::Result<String> {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut options = ConnectOptions::new(self.admin_url());
        options
            .max_connections(1)
            .min_connections(0)
            .sqlx_logging(false);
        let admin = Database::connect(options).await.with_context(|| {
            format!(
                "connecting to the PostgreSQL test cluster on port {}",
                self.port
            )
        })?;
        // The name is ours (letters, digits, underscore): nothing to escape.
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name}"))?;
        admin
            .close()
            .await
            .context("closing the admin connection")?;
        Ok(self.url_for(&name))
    }

    /// Stops the server (`pg_ctl -m fast stop`: connections are closed, the data is kept).
    /// Stopping a stopped server does nothing.
    pub async fn stop(&self) -> anyhow::Result<()> {
        let mut running = self.running.lock().await;
        if *running {
            let mut stop = self.command("pg_ctl");
            stop.arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "stop"]);
            run(&mut stop, "pg_ctl stop").await?;
            *running = false;
            tracing::debug!(port = self.port, "PostgreSQL test cluster stopped");
        }
        Ok(())
    }

    /// Starts the stopped server again, same port and same data. Starting a running server does
    /// nothing.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let mut running = self.running.lock().await;
        if !*running {
            self.pg_ctl_start()
                .await
                .with_context(|| format!("starting PostgreSQL again on port {}", self.port))?;
            *running = true;
            tracing::debug!(port = self.port, "PostgreSQL test cluster ready again");
        }
        Ok(())
    }

    /// [`stop`](Self::stop) (fast) then [`start_again`](Self::start_again): same port, same data.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("pg.log")
    }

    /// `pg_ctl start -w` on `self.port`; pg_ctl itself polls until the server accepts connections.
    async fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=500",
            self.port,
            self.dir.display()
        );
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", &START_DEADLINE.as_secs().to_string()])
            .arg("-o")
            .arg(options)
            .arg("start");
        run(&mut start, "pg_ctl start")
            .await
            .with_context(|| format!("PostgreSQL log:\n{}", log_tail(&self.log_path(), 2048)))
    }

    /// The argument vector running PostgreSQL tool `tool`, through runuser when we are root.
    fn argv(&self, tool: &str) -> Vec<OsString> {
        let tool = Path::new(BIN_DIR).join(tool).into_os_string();
        match &self.runuser {
            Some(runuser) => vec![
                runuser.clone().into_os_string(),
                "-u".into(),
                "postgres".into(),
                "--".into(),
                tool,
            ],
            None => vec![tool],
        }
    }

    /// A command running PostgreSQL tool `tool` from the cluster directory (a working directory
    /// user postgres can enter).
    fn command(&self, tool: &str) -> tokio::process::Command {
        let argv = self.argv(tool);
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    fn spawn_watchdog(&mut self) -> anyhow::Result<()> {
        let mut stop = self.argv("pg_ctl");
        stop.extend(["-D".into(), self.data_dir().into_os_string()]);
        stop.extend(["-m", "immediate", "-w", "stop"].map(OsString::from));
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("mst-pg-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .args(stop)
            .current_dir(&self.dir)
            // Out of the terminal's foreground process group: a Ctrl-C must not reach it.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the PostgreSQL cleanup watchdog (sh)")?;
        self.watchdog = Some(child);
        Ok(())
    }
}

impl Drop for Postgres {
    /// Stops the cluster, removes its directory and ends its watchdog (which would otherwise do
    /// the same once the test process exits). Blocking, which is acceptable in a test harness.
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let argv = self.argv("pg_ctl");
        let _ = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %err, "could not remove the PostgreSQL test directory");
        }
    }
}

/// Runs `command` to completion, failing with its output when it exits unsuccessfully.
async fn run(command: &mut tokio::process::Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
