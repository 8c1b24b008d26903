//! What the benchmarks share: a durable throw-away PostgreSQL cluster (the TOOLCHAIN.md recipe
//! *without* `-c fsync=off`), authenticated gRPC requests, percentiles and memory readings.
//! Benchmarks print figures; nothing here asserts a speed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::bail;
use sea_orm::{ConnectionTrait as _, Database};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use mst_kit::auth::Role;
use mst_proto::forms as fpb;

/// PostgreSQL 15's binaries on Debian.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL command of [`PG_BIN`], run as `postgres` when this process is root (PostgreSQL
/// refuses to run as root).
pub fn pg_command(tool: &str) -> Command {
    let path = Path::new(PG_BIN).join(tool);
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let mut c = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    };
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// A throw-away PostgreSQL 15 cluster with the durable defaults (`fsync=on`,
/// `synchronous_commit=on`), `shared_buffers=512MB`, `max_connections=300`; stopped and removed
/// on drop.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    /// initdb + pg_ctl start on a free port.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mst-bench-pg-")
            .tempdir()?
            .keep();
        let _ = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let cluster = Cluster { dir, port };
        let status = pg_command("initdb")
            .current_dir(&cluster.dir)
            .arg("-D")
            .arg(cluster.dir.join("data"))
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync", "--no-instructions"])
            .status()?;
        if !status.success() {
            bail!("initdb failed");
        }
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=300 -c shared_buffers=512MB",
            cluster.port,
            cluster.dir.display()
        );
        let status = pg_command("pg_ctl")
            .current_dir(&cluster.dir)
            .arg("-D")
            .arg(cluster.dir.join("data"))
            .arg("-l")
            .arg(cluster.dir.join("pg.log"))
            .args(["-w", "-o", &options, "start"])
            .status()?;
        if !status.success() {
            bail!("pg_ctl start failed, see {}/pg.log", cluster.dir.display());
        }
        Ok(cluster)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where it keeps its data and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name`; returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let admin = Database::connect(self.url("postgres")).await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        admin.close().await?;
        Ok(self.url(name))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .current_dir(&self.dir)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `Bearer <dev token>` for `email` with `roles`, valid one hour.
pub fn bearer(email: &str, roles: &[Role]) -> anyhow::Result<MetadataValue<Ascii>> {
    let token = mst_kit::auth::mint_dev(email, roles, Duration::from_secs(3600))?;
    Ok(format!("Bearer {token}").parse()?)
}

/// `message` with the `authorization` header `auth`.
pub fn with<T>(auth: &MetadataValue<Ascii>, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("authorization", auth.clone());
    r
}

/// A connected channel to `url`.
pub async fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect()
        .await?)
}

/// The `p` quantile (0..=1) of sorted values (nearest rank); zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `12.34 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `p50 … / p99 … / max …` of unsorted latencies (sorted in place).
pub fn summary(latencies: &mut [Duration]) -> String {
    latencies.sort();
    format!(
        "n {} · p50 {} · p99 {} · max {}",
        latencies.len(),
        ms(percentile(latencies, 0.50)),
        ms(percentile(latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default())
    )
}

/// A `kB` line (`VmHWM`, `VmRSS`…) of `/proc/<pid>/status` (`pid` = `self` for this process).
pub fn proc_status_kib(pid: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The benchmarks' procedure `id`: a title, a SIRET, a département (routing), a description and
/// a repetition of budget lines.
pub fn definition(id: &str) -> anyhow::Result<fpb::ProcedureDefinition> {
    let json = format!(
        r#"{{"id":"{id}","title":"Démarche de banc d'essai","description":"Benchmark","kind":"DOSSIER_KIND_PROJET",
        "estimatedFillingTime":"600s",
        "fields":[
          {{"id":"titre","label":"Titre du projet","type":"FIELD_TYPE_TEXT","required":true,"purpose":"FIELD_PURPOSE_TITLE","text":{{"maxLength":200}}}},
          {{"id":"siret","label":"SIRET","type":"FIELD_TYPE_SIRET","required":true,"purpose":"FIELD_PURPOSE_SIRET"}},
          {{"id":"departement","label":"Département","type":"FIELD_TYPE_DEPARTEMENT","required":true,"purpose":"FIELD_PURPOSE_DEPARTEMENT"}},
          {{"id":"description","label":"Description","type":"FIELD_TYPE_TEXTAREA","required":true}},
          {{"id":"budget","label":"Budget","type":"FIELD_TYPE_REPETITION","required":true,
            "children":[{{"id":"poste","label":"Poste","type":"FIELD_TYPE_TEXT","required":true}},
                        {{"id":"montant","label":"Montant","type":"FIELD_TYPE_DECIMAL","required":true,"number":{{"min":"0","maxDecimalPlaces":2}}}}]}}
        ]}}"#
    );
    mst_proto::json::decode("mst.forms.v1.ProcedureDefinition", &json)
        .map_err(|e| anyhow::anyhow!("procedure definition: {e:?}"))
}

/// Sets `field` (in row `row` of the repetition `budget`) to `value`.
pub fn set(field: &str, row: Option<&str>, value: fpb::champ_value::Value) -> fpb::ChampPatch {
    fpb::ChampPatch {
        field_id: field.into(),
        row: row.map(|r| fpb::RowRef {
            repetition_field_id: "budget".into(),
            row_id: r.into(),
        }),
        operation: Some(fpb::champ_patch::Operation::Set(fpb::ChampValue {
            value: Some(value),
        })),
    }
}
