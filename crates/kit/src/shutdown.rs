//! Graceful shutdown: one cancellation token, one task tracker, a grace period.
//!
//! Every long-running task of a service (gRPC server, outbox relay, consumers, key refresh) is
//! spawned on the [`Shutdown`]'s tracker and watches its token. On SIGTERM or SIGINT the token is
//! cancelled, health turns NOT_SERVING, and [`Shutdown::drain`] waits for the tasks up to the grace
//! period. No task is ever detached.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The shutdown signal and the tasks that must finish before exit.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// A fresh, not yet triggered, shutdown.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token tasks watch.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// A child token: cancelled with this one, or alone (to stop one component).
    pub fn child_token(&self) -> CancellationToken {
        self.token.child_token()
    }

    /// Whether shutdown was requested.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Requests shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Resolves when shutdown is requested.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// Spawns a tracked task.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Triggers shutdown when SIGTERM or SIGINT (Ctrl-C) arrives, in a tracked task.
    pub fn trigger_on_signals(&self) {
        let this = self.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = wait_for_signal() => this.trigger(),
                () = this.cancelled() => {}
            }
        });
    }

    /// Waits for every tracked task, at most `grace`; returns whether they all finished.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        let finished = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        if !finished {
            tracing::warn!(
                remaining = self.tracker.len(),
                grace_secs = grace.as_secs(),
                "tasks still running after the grace period; exiting anyway"
            );
        }
        finished
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tasks_that_watch_the_token() {
        let shutdown = Shutdown::new();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (token, flag) = (shutdown.token(), done.clone());
        shutdown.spawn(async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        shutdown.trigger();
        assert!(shutdown.drain(Duration::from_secs(5)).await);
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn drain_gives_up_after_the_grace_period() {
        let shutdown = Shutdown::new();
        shutdown.spawn(std::future::pending::<()>());
        shutdown.trigger();
        assert!(!shutdown.drain(Duration::from_millis(50)).await);
    }
}
