//! Where events come from: a live watch (`watch`) or a dump replay (here). Both feed the same
//! publishing session through a bounded channel, so a slow Kafka slows the source down instead
//! of growing memory.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dump;

/// What a source reports to the publishing session.
#[derive(Debug)]
pub enum SourceEvent {
    /// An Event object as the API server (or the dump) has it.
    Object { object: Value, deleted: bool },
    /// A complete LIST of `scope` (a namespace, or all when `None`) begins; the objects until
    /// the matching `ListEnd` are everything the server holds there.
    ListStart { scope: Option<String> },
    /// The LIST of `scope` is complete at this resourceVersion.
    ListEnd { scope: Option<String>, resource_version: String },
    /// The watch of `scope` has reached this resourceVersion: a bookmark, an event, or the
    /// resourceVersion it resumed from.
    Position { scope: Option<String>, resource_version: String },
    /// The watch of `scope` was accepted: the API server allows the list and the watch.
    Watching { scope: Option<String> },
    /// The API server refused the list or watch (403: RBAC): what it said. The source keeps
    /// retrying; the producer is not ready until a list or watch goes through.
    Refused(String),
}

/// Which clock stamps heartbeats and `observed_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockKind {
    /// The machine's clock: a live watch.
    Wall,
    /// The newest replayed event time: a replay, so that downstream windows close as they
    /// would have live, however fast the replay runs.
    EventTime,
}

/// Channel capacity between a source and the session: small, so backpressure is immediate.
pub const CHANNEL_CAPACITY: usize = 256;

/// Replays dump files in event-time order at `speed` (0 = as fast as possible).
pub fn replay(
    files: Vec<PathBuf>,
    speed: f64,
    max_gap: Duration,
    cancel: CancellationToken,
) -> Result<mpsc::Receiver<SourceEvent>, dump::DumpError> {
    let mut objects = Vec::new();
    for f in &files {
        let d = dump::read(f)?;
        for (line, reason) in &d.unreadable {
            metrics::counter!("kev_producer_events_invalid_total", "reason" => "unreadable_line").increment(1);
            tracing::warn!(file = %f.display(), line, reason, "skipping a line of the dump that is not JSON");
        }
        tracing::info!(file = %f.display(), objects = d.objects.len(), "read dump");
        objects.extend(d.objects);
    }
    dump::sort_by_event_time(&mut objects);
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(async move {
        let mut previous: Option<i64> = None;
        for object in objects {
            if speed > 0.0 {
                let time = dump::event_time(&object);
                if let (Some(prev), Some(t)) = (previous, time) {
                    let gap = Duration::from_micros((t - prev).max(0) as u64).div_f64(speed).min(max_gap);
                    tokio::select! {
                        _ = tokio::time::sleep(gap) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
                previous = time.or(previous);
            }
            tokio::select! {
                r = tx.send(SourceEvent::Object { object, deleted: false }) => if r.is_err() { return },
                _ = cancel.cancelled() => return,
            }
        }
    });
    Ok(rx)
}
