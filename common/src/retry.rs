//! Waiting on a dependency that is not there yet (Kafka starting after kev, a wrong address
//! being fixed) without exiting: the process stays up, not ready, and says what it waits on.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::shutdown::sleep_or_stop;
use crate::telemetry::Health;

/// The first pause between attempts; it doubles up to [`MAX_PAUSE`].
pub const FIRST_PAUSE: Duration = Duration::from_millis(200);
pub const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds. Readiness names `stage` meanwhile (unless the process is
/// ready already, for a dependency met again later); after each failure, it says the error too
/// (what a person reads at `/readyz`; the log says it too), and the next attempt waits a pause
/// that doubles from [`FIRST_PAUSE`] to [`MAX_PAUSE`]. An error that `is_final` calls final (a
/// refusal no retry can fix) is returned at once; `Ok(None)` when `stop` is cancelled.
pub async fn until_done<T, E, F, Fut>(
    stage: &str,
    health: &Health,
    stop: &CancellationToken,
    mut attempt: F,
    is_final: impl Fn(&E) -> bool,
) -> Result<Option<T>, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = FIRST_PAUSE;
    if !health.is_ready() {
        health.set_ready(false, stage);
    }
    loop {
        match attempt().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if is_final(&e) => return Err(e),
            Err(e) => {
                metrics::counter!("kev_dependency_retries_total", "stage" => stage.to_string()).increment(1);
                tracing::warn!(stage, error = %e, retry_in = ?pause, "not there yet; retrying");
                health.set_ready(false, format!("{stage}: {e} (retrying)"));
                if sleep_or_stop(pause, stop).await {
                    return Ok(None);
                }
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// How often [`until_present`] looks again: files are cheap to check, and the kubelet fills a
/// volume in on its own schedule (a minute or so after the Secret appears), so a doubling pause
/// would only add to that.
pub const FILES_PAUSE: Duration = Duration::from_secs(2);

/// Waits until `missing` names nothing: files a service reads at start that come from Secret
/// volumes mounted optional (the kubelet fills them in once the Secret exists). Meanwhile the
/// process serves `/readyz` as not ready with what is missing, and logs it whenever that
/// changes, instead of exiting into a crash loop; each look counts in
/// `kev_dependency_retries_total{stage="mounted credentials"}`. False when `stop` is cancelled.
pub async fn until_present(health: &Health, stop: &CancellationToken, missing: impl Fn() -> Vec<String>) -> bool {
    const STAGE: &str = "mounted credentials";
    let mut said: Option<String> = None;
    loop {
        let now = missing();
        if now.is_empty() {
            if said.is_some() {
                tracing::info!(stage = STAGE, "every file is there now");
                health.set_ready(false, "starting");
            }
            return true;
        }
        let why = now.join("; ");
        metrics::counter!("kev_dependency_retries_total", "stage" => STAGE).increment(1);
        if said.as_deref() != Some(why.as_str()) {
            tracing::warn!(stage = STAGE, missing = %why, retry_every = ?FILES_PAUSE, "waiting for files from Secrets");
            health.set_ready(false, format!("{STAGE}: {why} (waiting)"));
            said = Some(why);
        }
        if sleep_or_stop(FILES_PAUSE, stop).await {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_saying_why_until_done_and_returns_a_final_error_at_once() {
        let health = Health::new();
        let stop = CancellationToken::new();
        let mut calls = 0;
        let got = until_done(
            "Kafka at x:9",
            &health,
            &stop,
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(format!("attempt {n} failed"))
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| false,
        )
        .await;
        assert_eq!(got, Ok(Some(3)));
        assert_eq!(health.reason(), "Kafka at x:9: attempt 2 failed (retrying)");
        assert!(!health.is_ready());
        let refused: Result<Option<()>, String> =
            until_done("s", &health, &stop, || async { Err("refused".to_string()) }, |e| e == "refused").await;
        assert_eq!(refused, Err("refused".to_string()));
        stop.cancel();
        let stopped: Result<Option<()>, String> =
            until_done("s", &health, &stop, || async { Err("down".to_string()) }, |_| false).await;
        assert_eq!(stopped, Ok(None));
    }

    /// Files appear after two looks, 2 s apart: the wait says what is missing meanwhile, then
    /// no longer; a cancelled wait returns false.
    #[tokio::test(start_paused = true)]
    async fn until_present_waits_for_the_files_saying_which() {
        let health = Health::new();
        let stop = CancellationToken::new();
        let looks = std::cell::Cell::new(0);
        let seen = std::cell::RefCell::new(Vec::new());
        let started = tokio::time::Instant::now();
        let missing = || {
            looks.set(looks.get() + 1);
            seen.borrow_mut().push(health.reason());
            if looks.get() < 3 {
                vec!["registry.password_file /p: no such file".to_string()]
            } else {
                Vec::new()
            }
        };
        assert!(until_present(&health, &stop, missing).await);
        assert_eq!(looks.get(), 3);
        assert_eq!(started.elapsed(), 2 * FILES_PAUSE);
        assert_eq!(seen.borrow()[2], "mounted credentials: registry.password_file /p: no such file (waiting)");
        assert_eq!(health.reason(), "starting", "what was missing is no longer said once it is there");
        stop.cancel();
        assert!(!until_present(&health, &stop, || vec!["x".to_string()]).await);
    }
}
