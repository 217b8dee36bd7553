//! Test harness: an Apache Kafka broker process, a real schema registry process (Apicurio) and
//! the registry test double, the fake Kubernetes API server, a real kube-apiserver with etcd, a
//! real node (kubelet, containerd, scheduler and controller-manager in a network namespace of the
//! tests' own), the kev binaries, the real event data. Shared by every end-to-end test in
//! `tests/tests`.

pub mod bench;
pub mod broker;
pub mod data;
pub mod expect;
pub mod fakeapi;
pub mod helm;
pub mod images;
pub mod kubeapi;
pub mod manifests;
pub mod node;
pub mod outputs;
pub mod plain_http;
pub mod procs;
pub mod registry;
pub mod sandbox;
pub mod scale;
pub mod tls;
pub mod wait;
pub mod workloads;

/// Where `scripts/prerequisites.sh` caches what the tests run (`KEV_CACHE_DIR`, default
/// `~/.cache/kev`): `sub` below it, unless the variable `overridden_by` names another place.
pub fn cached(overridden_by: &str, sub: &str) -> std::path::PathBuf {
    if let Ok(p) = std::env::var(overridden_by) {
        return p.into();
    }
    let cache = std::env::var("KEV_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/kev"));
    cache.join(sub)
}

/// The repository's root (the Dockerfile, `deploy/`, `tests/deploy/`).
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Logs for tests, filtered by `RUST_LOG` (default warnings only).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}
