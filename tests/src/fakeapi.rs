//! A fake Kubernetes API server that speaks the real list/watch protocol for Events and the
//! Lease API, fed with real event objects.
//!
//! What it does like kube-apiserver: a global resourceVersion that every write bumps; LIST
//! with `limit`/`continue` and the list's resourceVersion; WATCH from a resourceVersion as a
//! chunked stream of JSON lines (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR); 410 Gone for a
//! resourceVersion older than the last compaction (as an ERROR event in the stream, or as the
//! 200-then-close of kubernetes#104171 when that fault is set); the same stored Event served as
//! core/v1 or events.k8s.io/v1 (converted as the API server converts); the discovery document of
//! events.k8s.io/v1 (or 404, to exercise the fallback); Leases with compare-and-swap on
//! resourceVersion (409 Conflict).
//!
//! Faults are switches a test flips: close every watch after N events, answer the next watches
//! with 200 and an immediate close, write a malformed line and an object without a uid.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// One version of an object as the server produced it.
#[derive(Debug, Clone)]
pub struct Version {
    pub rv: u64,
    pub kind: &'static str,
    /// The object as stored (core/v1 shape), with its resourceVersion set.
    pub object: Value,
}

#[derive(Default)]
struct Faults {
    /// Close each watch stream after this many events (a dropped connection).
    drop_watch_after: Option<usize>,
    /// Answer this many next watches from a too-old resourceVersion with 200 and an immediate
    /// close instead of a 410 ERROR event (kubernetes#104171).
    close_empty: u32,
    /// Write a line that is not JSON and an Event without a uid into the next watch.
    malformed_next_watch: bool,
}

#[derive(Default)]
struct ApiState {
    rv: u64,
    /// uid -> current object (core/v1 shape).
    objects: BTreeMap<String, Value>,
    history: Vec<Version>,
    compacted_before: u64,
    faults: Faults,
    leases: BTreeMap<(String, String), Value>,
    /// Request lines ("GET /apis/...?watch=1...") for assertions.
    requests: Vec<String>,
    watches_served: usize,
    gone_sent: usize,
    /// Bumped to close every open watch.
    drop_generation: u64,
    /// (uid, resourceVersion) of every version sent to a client in a LIST or a WATCH. A version
    /// superseded before any LIST or WATCH showed it is invisible to clients, as on a real
    /// server, so it is not owed to the topic.
    served: std::collections::HashSet<(String, u64)>,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<ApiState>>,
    rv_tx: Arc<watch::Sender<u64>>,
    events_v1: bool,
    pub url: String,
    cancel: CancellationToken,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Params {
    watch: Option<String>,
    resource_version: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    timeout_seconds: Option<u64>,
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

impl FakeApi {
    /// Starts the server. With `events_v1` false, the events.k8s.io group is not served (an
    /// old cluster), so clients must fall back to core/v1.
    pub async fn start(events_v1: bool) -> FakeApi {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (rv_tx, _) = watch::channel(0);
        let cancel = CancellationToken::new();
        let api = FakeApi { state: Arc::default(), rv_tx: Arc::new(rv_tx), events_v1, url, cancel: cancel.clone() };
        let app = Router::new()
            .route("/apis/events.k8s.io/v1", get(discovery))
            .route("/api/v1/events", get(events_all))
            .route("/api/v1/namespaces/{ns}/events", get(events_ns))
            .route("/apis/events.k8s.io/v1/events", get(events_all))
            .route("/apis/events.k8s.io/v1/namespaces/{ns}/events", get(events_ns))
            .route("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", axum::routing::post(lease_create))
            .route("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}", get(lease_get).put(lease_put))
            .layer(axum::middleware::from_fn_with_state(api.clone(), record_request))
            .with_state(api.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await;
        });
        api
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }

    fn write(&self, kind: &'static str, uid: &str, mut object: Value) -> u64 {
        let rv = {
            let mut s = self.state.lock().unwrap();
            s.rv += 1;
            let rv = s.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            if kind == "DELETED" {
                s.objects.remove(uid);
            } else {
                s.objects.insert(uid.to_string(), object.clone());
            }
            s.history.push(Version { rv, kind, object });
            rv
        };
        self.rv_tx.send_replace(rv);
        rv
    }

    /// Creates or updates an Event (a real object; its `_source` provenance field is removed,
    /// as a real API server would not have it). Returns the new resourceVersion.
    pub fn apply(&self, mut object: Value) -> u64 {
        if let Value::Object(m) = &mut object {
            m.remove("_source");
        }
        let object = to_core(object);
        let uid = object["metadata"]["uid"].as_str().unwrap().to_string();
        let kind = if self.state.lock().unwrap().objects.contains_key(&uid) { "MODIFIED" } else { "ADDED" };
        self.write(kind, &uid, object)
    }

    /// Bumps an Event's count by `by` (a repeat), as the kubelet's event recorder does.
    pub fn bump(&self, uid: &str, by: i64) -> u64 {
        let mut object = self.state.lock().unwrap().objects.get(uid).cloned().expect("known uid");
        let count = object["count"].as_i64().unwrap_or(1) + by;
        object["count"] = json!(count);
        // An event that is a series repeats through its series, as events.k8s.io recorders do.
        if let Some(series) = object.get_mut("series").and_then(Value::as_object_mut) {
            let n = series.get("count").and_then(Value::as_i64).unwrap_or(1) + by;
            series.insert("count".into(), json!(n));
        }
        if let Some(last) = object["lastTimestamp"].as_str().and_then(kev_schemas::time::parse_micros) {
            object["lastTimestamp"] = json!(kev_schemas::time::format_micros(last + 60_000_000));
        }
        self.write("MODIFIED", uid, object)
    }

    /// Deletes an Event (its TTL ran out).
    pub fn delete(&self, uid: &str) -> u64 {
        let object = self.state.lock().unwrap().objects.get(uid).cloned().expect("known uid");
        self.write("DELETED", uid, object)
    }

    /// Forgets history: a watch from any resourceVersion before now gets 410 Gone.
    pub fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        s.compacted_before = s.rv + 1;
    }

    pub fn set_drop_watch_after(&self, n: Option<usize>) {
        self.state.lock().unwrap().faults.drop_watch_after = n;
    }

    /// Closes every open watch now, as a load balancer or API server restart does.
    pub fn drop_watches(&self) {
        self.state.lock().unwrap().drop_generation += 1;
        self.rv_tx.send_modify(|_| {});
    }

    pub fn set_close_empty(&self, n: u32) {
        self.state.lock().unwrap().faults.close_empty = n;
    }

    pub fn set_malformed_next_watch(&self) {
        self.state.lock().unwrap().faults.malformed_next_watch = true;
    }

    /// Every version the server produced, in resourceVersion order.
    pub fn history(&self) -> Vec<Version> {
        self.state.lock().unwrap().history.clone()
    }

    /// The versions some LIST or WATCH response carried, in resourceVersion order: what a
    /// client can have seen, and so what the raw topic must hold.
    pub fn served_history(&self) -> Vec<Version> {
        let s = self.state.lock().unwrap();
        s.history.iter().filter(|v| s.served.contains(&(uid_of(&v.object), v.rv))).cloned().collect()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn watches_served(&self) -> usize {
        self.state.lock().unwrap().watches_served
    }

    pub fn gone_sent(&self) -> usize {
        self.state.lock().unwrap().gone_sent
    }

    /// The holder of a Lease, if any.
    pub fn lease_holder(&self, ns: &str, name: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.leases
            .get(&(ns.to_string(), name.to_string()))
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    }

    /// The object as this server serves it in the given API.
    pub fn serve_as(&self, object: &Value, path: &str) -> Value {
        served(object.clone(), path.starts_with("/apis/events.k8s.io/"))
    }
}

fn uid_of(object: &Value) -> String {
    object["metadata"]["uid"].as_str().unwrap_or_default().to_string()
}

async fn record_request(
    State(api): State<FakeApi>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!("{} {}", req.method(), req.uri());
    api.state.lock().unwrap().requests.push(line);
    next.run(req).await
}

async fn discovery(State(api): State<FakeApi>) -> Response {
    if !api.events_v1 {
        return status(404, "NotFound", "the server could not find the requested resource");
    }
    Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "events.k8s.io/v1",
        "resources": [{"name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
                       "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                       "shortNames": ["ev"]}]
    }))
    .into_response()
}

async fn events_all(State(api): State<FakeApi>, uri: axum::http::Uri, Query(p): Query<Params>) -> Response {
    events(api, uri.path().to_string(), None, p).await
}

async fn events_ns(
    State(api): State<FakeApi>,
    uri: axum::http::Uri,
    Path(ns): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    events(api, uri.path().to_string(), Some(ns), p).await
}

fn in_scope(object: &Value, ns: &Option<String>) -> bool {
    ns.as_deref().is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
}

async fn events(api: FakeApi, path: String, ns: Option<String>, p: Params) -> Response {
    let v1 = path.starts_with("/apis/events.k8s.io/");
    if v1 && !api.events_v1 {
        return status(404, "NotFound", "the server could not find the requested resource");
    }
    let api_version = if v1 { "events.k8s.io/v1" } else { "v1" };
    if p.watch.as_deref().is_some_and(|w| w == "1" || w == "true") {
        return watch_stream(api, v1, ns, p).await;
    }
    // LIST, paginated. The continue token is "<snapshot rv>:<index>"; a snapshot older than the
    // last compaction has expired (410), as etcd's does.
    let mut s = api.state.lock().unwrap();
    let (snapshot, start) = match p.continue_token.as_deref() {
        Some(c) => {
            let (rv, idx) = c.split_once(':').unwrap_or(("0", "0"));
            (rv.parse::<u64>().unwrap_or(0), idx.parse::<usize>().unwrap_or(0))
        }
        None => (s.rv, 0),
    };
    if snapshot < s.compacted_before.saturating_sub(1) && p.continue_token.is_some() {
        return status(410, "Expired", "the provided continue parameter is too old");
    }
    // Items as of the snapshot: replay history up to it.
    let mut at: BTreeMap<String, Value> = BTreeMap::new();
    for v in s.history.iter().take_while(|v| v.rv <= snapshot) {
        let uid = v.object["metadata"]["uid"].as_str().unwrap().to_string();
        if v.kind == "DELETED" {
            at.remove(&uid);
        } else {
            at.insert(uid, v.object.clone());
        }
    }
    let items: Vec<Value> = at.into_values().filter(|o| in_scope(o, &ns)).collect();
    let limit = p.limit.unwrap_or(usize::MAX).max(1);
    let page: Vec<Value> = items.iter().skip(start).take(limit).map(|o| served(o.clone(), v1)).collect();
    for o in &page {
        let rv = o["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
        s.served.insert((uid_of(o), rv));
    }
    let next = start + page.len();
    let mut metadata = json!({"resourceVersion": snapshot.to_string()});
    if next < items.len() {
        metadata["continue"] = json!(format!("{snapshot}:{next}"));
    }
    // Like the real apiserver, a list names apiVersion and kind once, not on its items.
    let page: Vec<Value> = page
        .into_iter()
        .map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    Json(json!({"kind": "EventList", "apiVersion": api_version, "metadata": metadata, "items": page})).into_response()
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut s = serde_json::to_string(&json!({"type": kind, "object": object})).unwrap();
    s.push('\n');
    Bytes::from(s)
}

async fn watch_stream(api: FakeApi, v1: bool, ns: Option<String>, p: Params) -> Response {
    let from: u64 = p.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(290));
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let (compacted, close_empty, drop_after, malformed, generation) = {
        let mut s = api.state.lock().unwrap();
        s.watches_served += 1;
        let close_empty = from < s.compacted_before && s.faults.close_empty > 0;
        if close_empty {
            s.faults.close_empty -= 1;
        }
        let malformed = std::mem::take(&mut s.faults.malformed_next_watch);
        (from < s.compacted_before, close_empty, s.faults.drop_watch_after, malformed, s.drop_generation)
    };
    let api_version = if v1 { "events.k8s.io/v1" } else { "v1" };
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    if close_empty {
        drop(tx); // 200, then the stream ends with nothing in it
        return Response::builder().header("content-type", "application/json").body(Body::from_stream(body)).unwrap();
    }
    if compacted {
        api.state.lock().unwrap().gone_sent += 1;
        let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410});
        let _ = tx.try_send(line("ERROR", gone));
        drop(tx);
        return Response::builder().header("content-type", "application/json").body(Body::from_stream(body)).unwrap();
    }
    let mut rv_rx = api.rv_tx.subscribe();
    tokio::spawn(async move {
        if malformed {
            let _ = tx.send(Bytes::from_static(b"{\"type\":\"ADDED\",\"object\":this is not json}\n")).await;
            let bad = json!({"apiVersion": api_version, "kind": "Event", "metadata": {"name": "no-uid", "namespace": "default"}});
            let _ = tx.send(line("ADDED", bad)).await;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next = from;
        let mut sent = 0usize;
        loop {
            let pending: Vec<Version> = {
                let s = api.state.lock().unwrap();
                if s.drop_generation != generation {
                    return; // dropped by the test
                }
                s.history.iter().filter(|v| v.rv > next).cloned().collect()
            };
            for v in pending {
                next = v.rv;
                if !in_scope(&v.object, &ns) {
                    continue;
                }
                if drop_after.is_some_and(|n| sent >= n) {
                    return; // the connection drops mid-stream
                }
                api.state.lock().unwrap().served.insert((uid_of(&v.object), v.rv));
                let object = served(v.object, v1);
                if tx.send(line(v.kind, object)).await.is_err() {
                    return;
                }
                sent += 1;
            }
            tokio::select! {
                r = rv_rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    let bookmark = json!({"kind": "Event", "apiVersion": api_version, "metadata": {"resourceVersion": next.to_string()}});
                    if tx.send(line("BOOKMARK", bookmark)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(Body::from_stream(body))
        .unwrap()
}

/// Fields that have one name in core/v1 and another in events.k8s.io/v1, as the API server
/// converts between them: (core/v1, events.k8s.io/v1).
const RENAMED: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("count", "deprecatedCount"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("reportingComponent", "reportingController"),
];

/// Renames fields by `pick(core, v1) -> (from, to)` and sets `apiVersion`.
fn convert(
    v: Value,
    pick: fn(&(&'static str, &'static str)) -> (&'static str, &'static str),
    api_version: &str,
) -> Value {
    let Value::Object(mut m) = v else { return v };
    let mut out = serde_json::Map::new();
    for pair in &RENAMED {
        let (from, to) = pick(pair);
        if let Some(x) = m.remove(from) {
            out.insert(to.into(), x);
        }
    }
    out.extend(m);
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// An object as the server serves it in `api` (events.k8s.io/v1 when `v1`): the real server
/// always names apiVersion and kind on the objects of a watch or a GET, whatever the stored
/// object (a dump's may lack them) says.
fn served(object: Value, v1: bool) -> Value {
    if v1 {
        return to_events_v1(object);
    }
    let Value::Object(mut m) = object else { return object };
    m.entry("apiVersion").or_insert(json!("v1"));
    m.insert("kind".into(), json!("Event"));
    Value::Object(m)
}

/// Converts a stored Event to core/v1, as the API server does for an events.k8s.io/v1 object.
pub fn to_core(v: Value) -> Value {
    if v["apiVersion"] != "events.k8s.io/v1" {
        return v;
    }
    convert(v, |(core, v1)| (*v1, *core), "v1")
}

/// Converts a core/v1 Event to events.k8s.io/v1, as the API server does.
pub fn to_events_v1(v: Value) -> Value {
    convert(v, |(core, v1)| (*core, *v1), "events.k8s.io/v1")
}

async fn lease_get(State(api): State<FakeApi>, Path((ns, name)): Path<(String, String)>) -> Response {
    match api.state.lock().unwrap().leases.get(&(ns, name.clone())) {
        Some(l) => Json(l.clone()).into_response(),
        None => status(404, "NotFound", &format!("leases.coordination.k8s.io \"{name}\" not found")),
    }
}

async fn lease_create(State(api): State<FakeApi>, Path(ns): Path<String>, Json(mut lease): Json<Value>) -> Response {
    let name = lease["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let mut s = api.state.lock().unwrap();
    if s.leases.contains_key(&(ns.clone(), name.clone())) {
        return status(409, "AlreadyExists", &format!("leases.coordination.k8s.io \"{name}\" already exists"));
    }
    s.rv += 1;
    lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
    lease["metadata"]["namespace"] = json!(ns);
    s.leases.insert((ns, name), lease.clone());
    (StatusCode::CREATED, Json(lease)).into_response()
}

async fn lease_put(
    State(api): State<FakeApi>,
    Path((ns, name)): Path<(String, String)>,
    Json(mut lease): Json<Value>,
) -> Response {
    let mut s = api.state.lock().unwrap();
    let key = (ns, name.clone());
    let Some(current) = s.leases.get(&key) else {
        return status(404, "NotFound", &format!("leases.coordination.k8s.io \"{name}\" not found"));
    };
    if lease["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return status(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version and try again",
        );
    }
    s.rv += 1;
    lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
    s.leases.insert(key, lease.clone());
    Json(lease).into_response()
}
