//! Kubernetes manifests as the tests read them: `kustomize build` of a directory, parsed.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

/// Each document of a multi-document YAML text, as JSON values.
pub fn yaml_docs(text: &[u8]) -> Vec<Value> {
    serde_norway::Deserializer::from_slice(text).map(|d| Value::deserialize(d).unwrap()).collect()
}

/// `kustomize build dir`, with the pinned kustomize `scripts/prerequisites.sh` caches (or the
/// one `KUSTOMIZE_BIN` names), else `kubectl kustomize` (kubectl 1.21 and later embed
/// kustomize 4 or 5).
pub fn render(dir: &Path) -> Vec<Value> {
    let pinned = crate::cached("KUSTOMIZE_BIN", "kustomize-4.5.4/kustomize");
    let mut command = if pinned.is_file() {
        let mut c = Command::new(pinned);
        c.arg("build");
        c
    } else {
        let mut c = Command::new("kubectl");
        c.arg("kustomize");
        c
    };
    let out = command
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kustomize ({e}): scripts/prerequisites.sh --for-tests installs it"));
    assert!(
        out.status.success(),
        "kustomize build {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&out.stdout)
}
