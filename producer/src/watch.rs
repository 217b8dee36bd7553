//! The live source: LIST then WATCH the Events API, as client-go's reflector does, with what
//! real API servers do to watchers handled explicitly:
//!
//! - events.k8s.io/v1 when the server has it, core/v1 otherwise;
//! - paged LISTs (`limit`/`continue`), and a restarted LIST when a continue token expires;
//! - watch from the LIST's resourceVersion with bookmarks, resuming from the last seen
//!   resourceVersion after a disconnect or a failed watch request, and a new session (a
//!   restarted process, a new leader) from the resourceVersion of the newest heartbeat;
//! - a 403 reported as such (the process is not ready, saying what was refused) and retried;
//! - 410 Gone (as an HTTP status or as an ERROR event in the stream) starts a new LIST;
//! - a watch that the server accepts with 200 and closes at once with no event, again and again
//!   (what kubernetes#104171 describes for a too-old resourceVersion), also starts a new LIST
//!   after `source.empty_watch_limit` such sessions, instead of spinning forever;
//! - an object or a line that cannot be read is logged and counted, and the watch goes on.
//!
//! Objects are passed on as JSON; the session decides what to publish, so duplicates from
//! relists and re-watches are harmless.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{ListParams, WatchParams};
use kube::core::{ObjectList, Request, WatchEvent};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::SourceSettings;
use crate::source::SourceEvent;

/// Which Events API is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsApi {
    /// events.k8s.io/v1.
    EventsV1,
    /// core/v1, for servers without the events.k8s.io group (or when configured).
    CoreV1,
}

impl EventsApi {
    pub fn label(&self) -> &'static str {
        match self {
            EventsApi::EventsV1 => "events.k8s.io/v1",
            EventsApi::CoreV1 => "v1",
        }
    }

    fn path(&self, namespace: Option<&str>) -> String {
        let base = match self {
            EventsApi::EventsV1 => "/apis/events.k8s.io/v1",
            EventsApi::CoreV1 => "/api/v1",
        };
        match namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/events"),
            None => format!("{base}/events"),
        }
    }
}

/// Picks the API per `source.api`: with `auto`, events.k8s.io/v1 unless the server answers 404
/// for the group.
pub async fn discover(client: &kube::Client, setting: &str) -> Result<EventsApi, kube::Error> {
    match setting {
        "v1" => Ok(EventsApi::CoreV1),
        "events.k8s.io/v1" => Ok(EventsApi::EventsV1),
        _ => match client.list_api_group_resources("events.k8s.io/v1").await {
            Ok(list) if list.resources.iter().any(|r| r.name == "events") => Ok(EventsApi::EventsV1),
            Ok(_) => Ok(EventsApi::CoreV1),
            Err(e) if is_status(&e, 404) => Ok(EventsApi::CoreV1),
            Err(e) => Err(e),
        },
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// What to tell a person when the API server refuses a call for lack of permission (403), or
/// `None` for any other error. The server's message names the user, the verb and the resource.
pub fn refusal(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) if s.code == 403 => Some(format!(
            "Kubernetes refused the producer's call ({}): grant the verb to its ServiceAccount (deploy/base/rbac.yaml lists what it needs)",
            s.message
        )),
        _ => None,
    }
}

/// Starts list/watch loops (one per namespace, or one for all) feeding one channel. With
/// `resume`, the resourceVersion the previous session's last heartbeat recorded, each loop
/// first watches from there, so that the versions written while no producer watched (a
/// SIGKILL, a handover) are read too: a LIST would show only each object's newest version.
/// When the server no longer has that history (410 Gone), it lists.
pub fn start(
    client: kube::Client,
    api: EventsApi,
    settings: &SourceSettings,
    resume: Option<String>,
    stop: CancellationToken,
) -> mpsc::Receiver<SourceEvent> {
    let (tx, rx) = mpsc::channel(crate::source::CHANNEL_CAPACITY);
    let scopes: Vec<Option<String>> = watched_scopes(settings);
    for scope in scopes {
        let w = Watcher {
            client: client.clone(),
            api,
            scope,
            settings: settings.clone(),
            resume: resume.clone(),
            tx: tx.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move { w.run().await });
    }
    rx
}

/// One scope per watched namespace, or one for all. A namespace list also watches `default`
/// when `cluster_scoped_events` is on: the API server files the events of cluster-scoped objects
/// (Nodes, PersistentVolumes) there, and the filter drops that namespace's other events.
pub fn watched_scopes(settings: &SourceSettings) -> Vec<Option<String>> {
    if settings.namespaces.is_empty() {
        return vec![None];
    }
    let mut scopes: Vec<Option<String>> = settings.namespaces.iter().cloned().map(Some).collect();
    if settings.cluster_scoped_events && !settings.namespaces.iter().any(|n| n == "default") {
        scopes.push(Some("default".into()));
    }
    scopes
}

struct Watcher {
    client: kube::Client,
    api: EventsApi,
    scope: Option<String>,
    settings: SourceSettings,
    resume: Option<String>,
    tx: mpsc::Sender<SourceEvent>,
    stop: CancellationToken,
}

/// Why a watch session ended.
enum WatchEnd {
    /// The stream ended or broke; resume from the last resourceVersion.
    Resume { events: u64 },
    /// The watch request itself failed (the server unreachable, restarting, or refusing):
    /// retry from the same resourceVersion after a pause. Listing again would lose the versions
    /// written meanwhile that a watch from there still has.
    Failed,
    /// 410 Gone: the resourceVersion is too old; LIST again.
    Gone,
    /// The receiver or `stop` ended the source.
    Stopped,
}

impl Watcher {
    async fn send(&self, ev: SourceEvent) -> bool {
        tokio::select! {
            r = self.tx.send(ev) => r.is_ok(),
            _ = self.stop.cancelled() => false,
        }
    }

    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stop.cancelled() => false,
        }
    }

    async fn run(self) {
        let path = self.api.path(self.scope.as_deref());
        let mut rv: Option<String> = self.resume.clone();
        if let Some(v) = &rv {
            tracing::info!(path, resource_version = v, "resuming the watch where the last heartbeat left it");
            metrics::counter!("kev_producer_watch_resumed_total").increment(1);
            let at = SourceEvent::Position { scope: self.scope.clone(), resource_version: v.clone() };
            if !self.send(at).await {
                return;
            }
        }
        let mut empty_watches = 0u32;
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let version = match rv.clone() {
                Some(v) => v,
                None => match self.list(&path).await {
                    Ok(Some(v)) => {
                        backoff = Duration::from_millis(100);
                        rv = Some(v.clone());
                        v
                    }
                    Ok(None) => return,
                    Err(e) => {
                        metrics::counter!("kev_producer_watch_restarts_total", "reason" => "list_error").increment(1);
                        if let Some(refused) = refusal(&e) {
                            if !self.send(SourceEvent::Refused(refused)).await {
                                return;
                            }
                        }
                        tracing::warn!(path, error = %e, retry_in = ?backoff, "LIST failed");
                        if !self.pause(backoff).await {
                            return;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                },
            };
            let started = Instant::now();
            match self.watch(&path, &version, &mut rv).await {
                WatchEnd::Stopped => return,
                WatchEnd::Gone => {
                    metrics::counter!("kev_producer_watch_gone_total").increment(1);
                    metrics::counter!("kev_producer_watch_restarts_total", "reason" => "gone").increment(1);
                    tracing::info!(path, resource_version = version, "410 Gone: listing again");
                    rv = None;
                    empty_watches = 0;
                }
                WatchEnd::Failed => {
                    metrics::counter!("kev_producer_watch_restarts_total", "reason" => "watch_error").increment(1);
                    if !self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                WatchEnd::Resume { events } => {
                    if events > 0 {
                        empty_watches = 0;
                        backoff = Duration::from_millis(100);
                        metrics::counter!("kev_producer_watch_restarts_total", "reason" => "closed").increment(1);
                        continue;
                    }
                    // Closed with nothing in it. Once is a timeout or a proxy; again and again,
                    // quickly, is the server refusing the resourceVersion without saying 410.
                    if started.elapsed() < Duration::from_secs(30) {
                        empty_watches += 1;
                    }
                    metrics::counter!("kev_producer_watch_restarts_total", "reason" => "empty").increment(1);
                    if empty_watches >= self.settings.empty_watch_limit.max(1) {
                        tracing::warn!(
                            path,
                            resource_version = version,
                            empty_watches,
                            "watch keeps closing with no event: listing again"
                        );
                        rv = None;
                        empty_watches = 0;
                    }
                    if !self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// LISTs every page; returns the list's resourceVersion, or `None` when stopped.
    async fn list(&self, path: &str) -> Result<Option<String>, kube::Error> {
        'restart: loop {
            if !self.send(SourceEvent::ListStart { scope: self.scope.clone() }).await {
                return Ok(None);
            }
            let mut continue_token: Option<String> = None;
            loop {
                let mut lp = ListParams::default().limit(self.settings.page_size.max(1));
                lp.field_selector = self.settings.field_selector.clone();
                lp.label_selector = self.settings.label_selector.clone();
                lp.continue_token = continue_token.clone();
                let req = Request::new(path).list(&lp).map_err(kube::Error::BuildRequest)?;
                let list: ObjectList<Value> = match self.client.request(req).await {
                    Ok(l) => l,
                    // An expired continue token: the list must start over.
                    Err(e) if continue_token.is_some() && is_status(&e, 410) => {
                        tracing::info!(path, "continue token expired; listing again from the start");
                        continue 'restart;
                    }
                    Err(e) => return Err(e),
                };
                // A list's items carry no apiVersion and kind (the list says them once), while
                // a watch's objects do; every version is published whole, the way it is watched.
                let kind = list.types.kind.strip_suffix("List").unwrap_or_default();
                for mut object in list.items {
                    with_type(&mut object, &list.types.api_version, kind);
                    if !self.send(SourceEvent::Object { object, deleted: false }).await {
                        return Ok(None);
                    }
                }
                continue_token = list.metadata.continue_.filter(|c| !c.is_empty());
                if continue_token.is_none() {
                    let version = list.metadata.resource_version.unwrap_or_default();
                    let end = SourceEvent::ListEnd { scope: self.scope.clone(), resource_version: version.clone() };
                    if !self.send(end).await {
                        return Ok(None);
                    }
                    return Ok(Some(version));
                }
            }
        }
    }

    async fn watch(&self, path: &str, version: &str, rv: &mut Option<String>) -> WatchEnd {
        let mut wp = WatchParams::default().timeout(290);
        wp.field_selector = self.settings.field_selector.clone();
        wp.label_selector = self.settings.label_selector.clone();
        let req = match Request::new(path).watch(&wp, version) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the watch request");
                return WatchEnd::Failed;
            }
        };
        let stream = match self.client.request_events::<Value>(req).await {
            Ok(s) => s,
            Err(e) if is_status(&e, 410) => return WatchEnd::Gone,
            Err(e) => {
                if let Some(refused) = refusal(&e) {
                    if !self.send(SourceEvent::Refused(refused)).await {
                        return WatchEnd::Stopped;
                    }
                }
                tracing::warn!(path, error = %e, "watch request failed");
                return WatchEnd::Failed;
            }
        };
        if !self.send(SourceEvent::Watching { scope: self.scope.clone() }).await {
            return WatchEnd::Stopped;
        }
        tokio::pin!(stream);
        let mut events = 0u64;
        loop {
            let item = tokio::select! {
                i = stream.next() => i,
                _ = self.stop.cancelled() => return WatchEnd::Stopped,
            };
            let Some(item) = item else { return WatchEnd::Resume { events } };
            let (object, deleted) = match item {
                Ok(WatchEvent::Added(o)) | Ok(WatchEvent::Modified(o)) => (o, false),
                Ok(WatchEvent::Deleted(o)) => (o, true),
                Ok(WatchEvent::Bookmark(b)) => {
                    events += 1;
                    metrics::counter!("kev_producer_watch_bookmarks_total").increment(1);
                    *rv = Some(b.metadata.resource_version.clone());
                    let at = SourceEvent::Position {
                        scope: self.scope.clone(),
                        resource_version: b.metadata.resource_version,
                    };
                    if !self.send(at).await {
                        return WatchEnd::Stopped;
                    }
                    continue;
                }
                Ok(WatchEvent::Error(status)) if status.code == 410 => return WatchEnd::Gone,
                Ok(WatchEvent::Error(status)) => {
                    tracing::warn!(path, code = status.code, message = status.message, "watch error event");
                    return WatchEnd::Resume { events };
                }
                Err(e) if is_status(&e, 410) => return WatchEnd::Gone,
                Err(kube::Error::SerdeError(e)) => {
                    metrics::counter!("kev_producer_events_invalid_total", "reason" => "malformed_watch_line")
                        .increment(1);
                    tracing::warn!(path, error = %e, "skipping a watch line that is not a watch event");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(path, error = %e, "watch stream broke");
                    return WatchEnd::Resume { events };
                }
            };
            events += 1;
            if let Some(v) = object.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                *rv = Some(v.to_string());
            }
            let version = rv.clone();
            if !self.send(SourceEvent::Object { object, deleted }).await {
                return WatchEnd::Stopped;
            }
            // After the object: a heartbeat that names this position comes after its record.
            if let Some(v) = version {
                if !self.send(SourceEvent::Position { scope: self.scope.clone(), resource_version: v }).await {
                    return WatchEnd::Stopped;
                }
            }
        }
    }
}

/// Sets `apiVersion` and `kind` on an object that has none, as client-go's decoder does for a
/// list's items.
fn with_type(object: &mut Value, api_version: &str, kind: &str) {
    let Some(o) = object.as_object_mut() else { return };
    if api_version.is_empty() || kind.is_empty() {
        return;
    }
    let absent = |v: Option<&Value>| v.is_none_or(|v| v.as_str().is_none_or(str::is_empty));
    if absent(o.get("apiVersion")) {
        o.insert("apiVersion".into(), Value::String(api_version.to_string()));
    }
    if absent(o.get("kind")) {
        o.insert("kind".into(), Value::String(kind.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_items_get_the_lists_api_version_and_kind_and_keep_their_own() {
        let mut item = serde_json::json!({"metadata": {"name": "e"}});
        with_type(&mut item, "events.k8s.io/v1", "Event");
        assert_eq!((item["apiVersion"].as_str(), item["kind"].as_str()), (Some("events.k8s.io/v1"), Some("Event")));
        let mut own = serde_json::json!({"apiVersion": "v1", "kind": "Event"});
        with_type(&mut own, "events.k8s.io/v1", "Other");
        assert_eq!((own["apiVersion"].as_str(), own["kind"].as_str()), (Some("v1"), Some("Event")));
    }

    #[test]
    fn a_namespace_list_also_watches_default_for_cluster_scoped_objects() {
        let mut s = SourceSettings::default();
        assert_eq!(watched_scopes(&s), vec![None]);
        s.namespaces = vec!["team-a".into()];
        assert_eq!(watched_scopes(&s), vec![Some("team-a".into()), Some("default".into())]);
        s.cluster_scoped_events = false;
        assert_eq!(watched_scopes(&s), vec![Some("team-a".into())]);
        s.cluster_scoped_events = true;
        s.namespaces = vec!["default".into(), "b".into()];
        assert_eq!(watched_scopes(&s), vec![Some("default".into()), Some("b".into())]);
    }
}
