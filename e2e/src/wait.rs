//! Bounded polling.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio::time::Instant;

/// How often [`wait_for`] polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Calls `f` every [`POLL_INTERVAL`] until it returns `Ok(Some(value))`, and returns that
/// value. `Ok(None)` means "not yet"; an error is remembered and polling goes on. A call
/// that is still running when `timeout` expires is abandoned, so the wait is bounded even
/// if `f` hangs. On timeout the error names `what` and the last error seen.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error: Option<anyhow::Error> = None;
    loop {
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => {}
            Ok(Err(err)) => last_error = Some(err),
            Err(_elapsed) => break,
        }
        if Instant::now() + POLL_INTERVAL > deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Err(timed_out(what, timeout, last_error))
}

fn timed_out(what: &str, timeout: Duration, last_error: Option<anyhow::Error>) -> anyhow::Error {
    let last = last_error.map_or_else(|| "none".to_owned(), |err| format!("{err:#}"));
    anyhow!(
        "timed out after {}s waiting for {what}; last error: {last}",
        timeout.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

    #[tokio::test]
    async fn returns_the_first_value() {
        let mut calls = 0;
        let value = wait_for("three calls", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move { Ok((n >= 3).then_some(n)) }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_error() {
        let err = wait_for::<(), _, _>("the moon", Duration::from_millis(350), || async {
            bail!("still dark")
        })
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 0.35s waiting for the moon; last error: still dark"
        );
    }

    #[tokio::test]
    async fn a_hanging_call_is_still_bounded() {
        let started = Instant::now();
        let err = wait_for::<(), _, _>("nothing", Duration::from_millis(200), || {
            std::future::pending()
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(err.to_string().ends_with("last error: none"), "{err}");
    }
}
