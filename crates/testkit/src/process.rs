//! Small helpers shared by the service launchers: finding a program on `PATH`, picking a free
//! port, knowing whether we run as root, and quoting a log file into an error message.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// How often readiness is polled: short enough that a test waits a few milliseconds at most
/// longer than needed, long enough not to burn a core on a 2-core machine.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long a service gets to become ready. Generous because other engineers' builds share the
/// machine's two cores; a healthy service is ready in well under a second.
pub(crate) const START_DEADLINE: Duration = Duration::from_secs(30);

/// Looks `name` up on `PATH`, failing with `install_hint` when it is not there.
pub(crate) fn find_program(name: &str, install_hint: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .with_context(|| format!("`{name}` is not on PATH: {install_hint}"))
}

/// Returns `path` itself when it is an executable file, or an error carrying `install_hint`.
pub(crate) fn require_executable(path: &Path, install_hint: &str) -> anyhow::Result<()> {
    if is_executable(path) {
        Ok(())
    } else {
        bail!("`{}` not found: {install_hint}", path.display())
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A TCP port on 127.0.0.1 that was free a moment ago. The listener is released before the
/// service binds it, so another process could take it in between: callers retry on a bind error.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener
        .local_addr()
        .context("reading the bound port")?
        .port())
}

/// Whether this process runs with effective uid 0 (PostgreSQL refuses to run as root).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The last `max` bytes of a log file, for error messages; empty when it cannot be read.
pub(crate) fn log_tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(_) => String::new(),
    }
}
