//! A development Schema Registry: the subset of Confluent Schema Registry's REST API that
//! `schema_registry_converter` calls, in memory.
//!
//! It serves the first-run command (no external services) and the tests, where it stands in for
//! the real server, which cannot run here. It keeps nothing across restarts and checks no
//! compatibility: it is not for production. Point kev at a real registry there.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Store {
    /// Schema text by id; ids start at 1 and are shared across subjects, as Confluent does.
    schemas: Vec<String>,
    /// Subject -> ids of its versions, oldest first.
    subjects: BTreeMap<String, Vec<u32>>,
}

/// A running development registry. Dropping the handle does not stop it; cancel the token.
#[derive(Clone)]
pub struct DevRegistry {
    store: Arc<Mutex<Store>>,
    unavailable: Arc<AtomicBool>,
    pub url: String,
}

#[derive(Deserialize)]
struct Register {
    schema: String,
}

impl DevRegistry {
    /// Starts the registry on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr, cancel: CancellationToken) -> std::io::Result<Self> {
        Self::start_with_basic_auth(addr, None, cancel).await
    }

    /// Starts the registry answering 401 to calls without these basic-auth credentials (user,
    /// password), as a registry behind authentication does.
    pub async fn start_with_basic_auth(
        addr: SocketAddr,
        credentials: Option<(&str, &str)>,
        cancel: CancellationToken,
    ) -> std::io::Result<Self> {
        use base64::Engine as _;
        let expected = credentials
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let reg = DevRegistry { store: Arc::default(), unavailable: Arc::default(), url };
        let app = Router::new()
            .route("/subjects", get(list_subjects))
            .route("/subjects/{subject}", post(lookup))
            .route("/subjects/{subject}/versions", post(register).get(list_versions))
            .route("/subjects/{subject}/versions/{version}", get(get_version))
            .route("/schemas/ids/{id}", get(get_by_id))
            .with_state(reg.clone())
            .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
                let expected = expected.clone();
                async move {
                    let given = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                    match &expected {
                        Some(e) if given != Some(e.as_str()) => {
                            (StatusCode::UNAUTHORIZED, Json(json!({"error_code": 401, "message": "Unauthorized"})))
                                .into_response()
                        }
                        _ => next.run(req).await,
                    }
                }
            }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await;
        });
        Ok(reg)
    }

    /// While set, every call answers 503, as a registry that is down behind a load balancer.
    pub fn set_unavailable(&self, down: bool) {
        self.unavailable.store(down, Ordering::SeqCst);
    }

    /// Registers `schema` under `subject` directly, returning its id (for tests).
    pub fn register(&self, subject: &str, schema: &str) -> u32 {
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let id = match s.schemas.iter().position(|x| x == schema) {
            Some(i) => i as u32 + 1,
            None => {
                s.schemas.push(schema.to_string());
                s.schemas.len() as u32
            }
        };
        let versions = s.subjects.entry(subject.to_string()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        id
    }

    /// The store, or `None` while switched to unavailable.
    fn store(&self) -> Option<std::sync::MutexGuard<'_, Store>> {
        if self.unavailable.load(Ordering::SeqCst) {
            return None;
        }
        Some(self.store.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (status, Json(json!({"error_code": code, "message": message}))).into_response()
}

fn unavailable() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, 50301, "registry unavailable (test switch)")
}

fn not_found(what: &str) -> Response {
    let code = if what == "subject" {
        40401
    } else if what == "version" {
        40402
    } else {
        40403
    };
    error(StatusCode::NOT_FOUND, code, &format!("{what} not found"))
}

async fn register(State(reg): State<DevRegistry>, Path(subject): Path<String>, Json(body): Json<Register>) -> Response {
    if reg.store().is_none() {
        return unavailable();
    }
    let id = reg.register(&subject, &body.schema);
    Json(json!({ "id": id })).into_response()
}

async fn lookup(State(reg): State<DevRegistry>, Path(subject): Path<String>, Json(body): Json<Register>) -> Response {
    let Some(s) = reg.store() else {
        return unavailable();
    };
    let Some(versions) = s.subjects.get(&subject) else {
        return not_found("subject");
    };
    match versions.iter().position(|id| s.schemas[*id as usize - 1] == body.schema) {
        Some(i) => Json(json!({"subject": subject, "version": i + 1, "id": versions[i], "schema": body.schema}))
            .into_response(),
        None => not_found("schema"),
    }
}

async fn list_subjects(State(reg): State<DevRegistry>) -> Response {
    match reg.store() {
        Some(s) => Json(s.subjects.keys().cloned().collect::<Vec<_>>()).into_response(),
        None => unavailable(),
    }
}

async fn list_versions(State(reg): State<DevRegistry>, Path(subject): Path<String>) -> Response {
    let Some(s) = reg.store() else {
        return unavailable();
    };
    match s.subjects.get(&subject) {
        Some(v) => Json((1..=v.len()).collect::<Vec<_>>()).into_response(),
        None => not_found("subject"),
    }
}

async fn get_version(State(reg): State<DevRegistry>, Path((subject, version)): Path<(String, String)>) -> Response {
    let Some(s) = reg.store() else {
        return unavailable();
    };
    let Some(versions) = s.subjects.get(&subject) else {
        return not_found("subject");
    };
    let index = match version.as_str() {
        "latest" => versions.len().checked_sub(1),
        v => v.parse::<usize>().ok().and_then(|v| v.checked_sub(1)).filter(|i| *i < versions.len()),
    };
    let Some(i) = index else {
        return not_found("version");
    };
    let id = versions[i];
    Json(json!({"subject": subject, "version": i + 1, "id": id, "schema": s.schemas[id as usize - 1]})).into_response()
}

async fn get_by_id(State(reg): State<DevRegistry>, Path(id): Path<u32>) -> Response {
    let Some(s) = reg.store() else {
        return unavailable();
    };
    match id.checked_sub(1).and_then(|i| s.schemas.get(i as usize)) {
        Some(schema) => Json(json!({ "schema": schema })).into_response(),
        None => not_found("schema"),
    }
}
