//! Waiting on a condition the tests can observe, never on a fixed time.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 250 ms until it returns `Some`; after `limit`, fails with `what` and what
/// `context` says then (the pods' states and logs, say).
pub async fn until<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
    context: impl AsyncFnOnce() -> String,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if started.elapsed() > limit {
            panic!("{what}: not within {limit:?}\n{}", context().await);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
