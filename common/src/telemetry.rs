//! Logs, metrics and the `/metrics`, `/healthz`, `/readyz` endpoints.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Where `/metrics`, `/healthz` and `/readyz` are served: the `http` section of both binaries'
/// config.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Listen address. Default `0.0.0.0:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self { listen: default_listen() }
    }
}

/// Starts logging to stderr. `RUST_LOG` filters (default `info`); `json` picks JSON lines for
/// log shippers over human-readable text.
pub fn init_logging(json: bool) {
    init_logging_at(json, "info");
}

/// As [`init_logging`], with another default level: the first-run command keeps the terminal
/// for its own lines and logs only warnings unless `RUST_LOG` asks for more.
pub fn init_logging_at(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests run many components in one
            // process); the handle still renders this recorder's view.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Liveness and readiness, with the reason a person reads at `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    reason: Mutex<String>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { ready: AtomicBool::new(false), reason: Mutex::new("starting".into()) })
    }

    pub fn set_ready(&self, ready: bool, reason: impl Into<String>) {
        let reason = reason.into();
        let was = self.ready.swap(ready, Ordering::SeqCst);
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if was != ready || *r != reason {
            tracing::info!(ready, reason = %reason, "readiness changed");
        }
        *r = reason;
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> String {
        self.reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `cancel`. Returns the bound
/// address (port 0 picks a free one).
pub async fn serve(addr: SocketAddr, health: Arc<Health>, cancel: CancellationToken) -> std::io::Result<SocketAddr> {
    let metrics = metrics_handle();
    let upkeep = metrics.clone();
    let upkeep_cancel = cancel.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep.run_upkeep(),
                _ = upkeep_cancel.cancelled() => break,
            }
        }
    });
    let app = Router::new()
        .route("/metrics", get(|State(s): State<AppState>| async move { s.metrics.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AppState>| async move {
                let status = if s.health.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, s.health.reason())
            }),
        )
        .with_state(AppState { metrics, health });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await;
    });
    Ok(bound)
}
