//! Helm v4 as the tests run it: the binary `scripts/prerequisites.sh` builds at the version
//! `scripts/helm/go.mod` pins, with its config, cache and data homes in a directory of the
//! test's own (Helm writes there; nothing lands in the machine's `~/.config` or `~/.cache`).

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// The pinned Helm binary (or the one `HELM_BIN` names).
pub fn binary() -> PathBuf {
    let go_mod = std::fs::read_to_string(crate::repo().join("scripts/helm/go.mod")).expect("scripts/helm/go.mod");
    let version = go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("helm.sh/helm/v4 "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("helm.sh/helm/v4 in scripts/helm/go.mod");
    crate::cached("HELM_BIN", &format!("helm-{version}/helm"))
}

/// kev's chart.
pub fn chart() -> PathBuf {
    crate::repo().join("deploy/helm/kev")
}

/// A Helm with homes of its own, removed on drop.
pub struct Helm {
    home: tempfile::TempDir,
}

impl Default for Helm {
    fn default() -> Self {
        Self::new()
    }
}

impl Helm {
    pub fn new() -> Self {
        Self { home: tempfile::tempdir().unwrap() }
    }

    /// `helm args…` with this Helm's homes, not yet run.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new(binary());
        for (var, sub) in [("HELM_CONFIG_HOME", "config"), ("HELM_CACHE_HOME", "cache"), ("HELM_DATA_HOME", "data")] {
            c.env(var, self.home.path().join(sub));
        }
        c.args(args);
        c
    }

    /// Runs `helm args…`, whatever its exit status.
    pub fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = self.command(args);
        c.output().unwrap_or_else(|e| {
            panic!("cannot run {:?} ({e}): scripts/prerequisites.sh --for-tests builds it", binary())
        })
    }

    /// Runs `helm args…` and fails the test, with Helm's words, if it fails.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.output(&args);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `helm template release <chart> -n namespace extra…`, parsed.
    pub fn template(&self, release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
        let chart = chart();
        let mut args = vec!["template", release, chart.to_str().unwrap(), "--namespace", namespace];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        crate::manifests::yaml_docs(&out.stdout).into_iter().filter(|v| !v.is_null()).collect()
    }
}
