//! Isolation and polling helpers: a unique prefix per test (stream names, subjects) and a
//! "poll until it holds, with a deadline" loop, so that no test sleeps for a fixed time.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

/// How often [`wait_until`] polls its condition.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(15);

/// A short unique string usable as a NATS stream name, a subject token or a table/database name
/// suffix: `t` followed by 12 lowercase hex digits (48 random bits), e.g. `t3f9a0c12be47`.
pub fn unique_prefix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}", &id[..12])
}

/// Polls `condition` every 15 ms until it returns `Some(value)`, and returns that value; fails
/// once `timeout` has passed. The condition is always evaluated at least once, and once more at
/// the deadline, so a condition that holds just in time is not reported as a failure.
///
/// ```no_run
/// # async fn demo(count: impl Fn() -> usize) -> anyhow::Result<()> {
/// use std::time::Duration;
/// let count = &count;
/// let n = mst_testkit::wait_until(Duration::from_secs(5), || async move {
///     let n = count();
///     (n >= 3).then_some(n)
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn wait_until<T, F, Fut>(timeout: Duration, mut condition: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let past_deadline = Instant::now() >= deadline;
        if let Some(value) = condition().await {
            return Ok(value);
        }
        if past_deadline {
            bail!("condition still not met after {timeout:?}");
        }
        tokio::time::sleep_until((Instant::now() + WAIT_POLL_INTERVAL).min(deadline)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn unique_prefix_is_a_short_valid_token_and_differs_each_time() {
        let a = unique_prefix();
        let b = unique_prefix();
        assert_ne!(a, b);
        assert_eq!(a.len(), 13);
        assert!(a.starts_with('t'));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[tokio::test]
    async fn wait_until_returns_the_value_once_the_condition_holds() {
        let calls = &AtomicUsize::new(0);
        let value = wait_until(Duration::from_secs(5), || async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n >= 3).then_some(n)
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn wait_until_fails_after_the_deadline() {
        let err = wait_until(Duration::from_millis(50), || async { None::<()> })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not met"), "{err}");
    }
}
