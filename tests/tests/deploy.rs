//! The deployment files, checked with the real tools (tests/tests/kev_on_node.rs installs them on
//! a real node): kustomize renders every overlay, Helm the chart with its default and production
//! values, and each object must parse into its k8s-openapi type without losing a field; the configuration each Deployment mounts must load
//! into the binary's own config type and agree with the manifests (replicas and leader
//! election, Lease name and Role, ports, mounted secrets); the alert rules pass `promtool` and
//! name only metrics the code emits; docker-compose.yml names only images, variables and ports
//! that the binaries and the README know.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kev_enricher::partition::EngineSpec;
use kev_enricher::EnricherConfig;
use kev_producer::ProducerConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const OVERLAYS: [&str; 3] = ["deploy/base", "deploy/overlays/dev", "deploy/overlays/prod"];

/// Every way a user deploys kev, rendered: the kustomize overlays and the Helm chart, with its
/// defaults and with `values-prod.yaml`, released into the namespace the overlays use.
fn renders() -> Vec<(String, Vec<Value>)> {
    let mut all: Vec<(String, Vec<Value>)> = OVERLAYS.iter().map(|d| (d.to_string(), render(d))).collect();
    let helm = kev_tests::helm::Helm::new();
    all.push(("helm chart".into(), helm.template("kev", "kev", &[])));
    let prod = kev_tests::helm::chart().join("values-prod.yaml");
    all.push(("helm chart, values-prod.yaml".into(), helm.template("kev", "kev", &["-f", prod.to_str().unwrap()])));
    all
}

use kev_tests::repo;

/// Runs a tool the prerequisites install; a missing tool fails the test with what to do.
fn run(tool: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(tool)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}): scripts/prerequisites.sh --for-tests installs it"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn render(dir: &str) -> Vec<Value> {
    kev_tests::manifests::render(&repo().join(dir))
}

fn kind(o: &Value) -> (&str, &str, &str) {
    (
        o["apiVersion"].as_str().unwrap_or(""),
        o["kind"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or(""),
    )
}

fn objects<'a>(objs: &'a [Value], want: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objs.iter().filter(move |o| o["kind"] == want)
}

/// The first place where `typed` (the object after a round trip through its API type) differs
/// from `raw`: a field the type does not know is dropped by the parse, so a misspelt or
/// misplaced field shows up here.
fn first_difference(raw: &Value, typed: &Value, at: &str) -> Option<String> {
    match (raw, typed) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| match b.get(k) {
            Some(w) => first_difference(v, w, &format!("{at}.{k}")),
            None => Some(format!("{at}.{k}")),
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            a.iter().zip(b).enumerate().find_map(|(n, (v, w))| first_difference(v, w, &format!("{at}[{n}]")))
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => None,
        _ if raw == typed => None,
        _ => Some(at.to_string()),
    }
}

fn parses_as<T: DeserializeOwned + Serialize>(o: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(o.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).unwrap();
    match first_difference(o, &back, "") {
        None => Ok(()),
        Some(path) => Err(format!("field {path} is not part of the type (misspelt or misplaced?)")),
    }
}

fn typed<T: DeserializeOwned>(o: &Value) -> T {
    serde_json::from_value(o.clone()).unwrap()
}

#[test]
fn every_overlay_renders_and_each_object_parses_into_its_api_type() {
    for (dir, objs) in renders() {
        let mut kinds = BTreeSet::new();
        for o in &objs {
            let (api, k, name) = kind(o);
            let parsed = match (api, k) {
                ("v1", "Namespace") => parses_as::<Namespace>(o),
                ("v1", "ServiceAccount") => parses_as::<ServiceAccount>(o),
                ("v1", "ConfigMap") => parses_as::<ConfigMap>(o),
                ("v1", "Service") => parses_as::<Service>(o),
                ("apps/v1", "Deployment") => parses_as::<Deployment>(o),
                ("policy/v1", "PodDisruptionBudget") => parses_as::<PodDisruptionBudget>(o),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => parses_as::<ClusterRole>(o),
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => parses_as::<ClusterRoleBinding>(o),
                ("rbac.authorization.k8s.io/v1", "Role") => parses_as::<Role>(o),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => parses_as::<RoleBinding>(o),
                // Prometheus Operator CRDs have no k8s-openapi type: checked by meaning below.
                ("monitoring.coreos.com/v1", "ServiceMonitor" | "PrometheusRule") => Ok(()),
                _ => Err("a kind this test does not know: add its type here".into()),
            };
            if let Err(e) = parsed {
                panic!("{dir}: {api} {k} {name}: {e}");
            }
            if k != "Namespace" && !k.starts_with("Cluster") {
                assert_eq!(o["metadata"]["namespace"], "kev", "{dir}: {k} {name} outside the namespace");
            }
            kinds.insert(k.to_string());
        }
        for k in ["ServiceAccount", "ClusterRole", "Role", "Deployment", "Service", "PodDisruptionBudget"] {
            assert!(kinds.contains(k), "{dir} renders no {k}");
        }
        // A Helm release goes into a namespace made for it (`--create-namespace`).
        assert_eq!(kinds.contains("Namespace"), !dir.starts_with("helm"), "{dir}: the Namespace");
    }
    let prod: BTreeSet<String> = render("deploy/overlays/prod").iter().map(|o| kind(o).1.to_string()).collect();
    assert!(prod.contains("ServiceMonitor") && prod.contains("PrometheusRule"), "prod has monitoring");
}

/// The producer may only read Events and hold its own Lease; the enricher talks to no API.
#[test]
fn rbac_is_least_privilege() {
    for (dir, objs) in renders() {
        for o in objects(&objs, "ClusterRole") {
            let role: ClusterRole = typed(o);
            for rule in role.rules.unwrap_or_default() {
                assert_eq!(rule.resources.as_deref(), Some(&["events".to_string()][..]), "{dir}: {rule:?}");
                let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
                assert!(verbs.is_subset(&BTreeSet::from(["get", "list", "watch"])), "{dir}: {rule:?}");
            }
        }
        for o in objects(&objs, "Role") {
            let role: Role = typed(o);
            for rule in role.rules.unwrap_or_default() {
                assert_eq!(rule.api_groups.as_deref(), Some(&["coordination.k8s.io".to_string()][..]));
                assert_eq!(rule.resources.as_deref(), Some(&["leases".to_string()][..]));
                if rule.resource_names.is_none() {
                    assert_eq!(rule.verbs, ["create"], "{dir}: only create may go unnamed");
                }
            }
        }
        let bound: Vec<String> = objects(&objs, "ClusterRoleBinding")
            .chain(objects(&objs, "RoleBinding"))
            .flat_map(|b| b["subjects"].as_array().cloned().unwrap_or_default())
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect();
        assert!(bound.iter().all(|s| s == "kev-producer"), "{dir}: only the producer is bound: {bound:?}");
    }
}

/// What the restricted Pod Security Standard asks, and probes on the port the binary serves.
#[test]
fn containers_run_locked_down() {
    for (dir, objs) in renders() {
        for o in objects(&objs, "Deployment") {
            let d: Deployment = typed(o);
            let name = d.metadata.name.clone().unwrap();
            let pod = d.spec.unwrap().template.spec.unwrap();
            let psc = pod.security_context.unwrap();
            assert_eq!(psc.run_as_non_root, Some(true), "{dir} {name}");
            assert!(psc.run_as_user.is_some_and(|u| u != 0), "{dir} {name}");
            // A Secret mounted without "others may read" is the container's to read only
            // through the group the kubelet gives the volume (fsGroup), as its files are
            // root's: found on the real node, where such a Secret could not be read.
            for v in pod.volumes.iter().flatten() {
                let Some(secret) = &v.secret else { continue };
                if secret.default_mode.unwrap_or(0o644) & 0o004 == 0 {
                    assert!(
                        psc.fs_group.is_some() && psc.fs_group == psc.run_as_group,
                        "{dir} {name}: Secret volume {} (mode {:o}) unreadable by group {:?} without fsGroup",
                        v.name,
                        secret.default_mode.unwrap_or(0o644),
                        psc.run_as_group
                    );
                }
            }
            for c in &pod.containers {
                let sc = c.security_context.clone().unwrap();
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{dir} {name}");
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{dir} {name}");
                assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]), "{dir} {name}");
                assert!(c.resources.as_ref().and_then(|r| r.limits.as_ref()).is_some_and(|l| l.contains_key("memory")));
                let ports: Vec<_> = c.ports.iter().flatten().filter_map(|p| p.name.clone()).collect();
                for probe in [&c.liveness_probe, &c.readiness_probe] {
                    let port = probe.as_ref().unwrap().http_get.as_ref().unwrap().port.clone();
                    let k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(port) = port else {
                        panic!("{dir} {name}: probe by number")
                    };
                    assert!(ports.contains(&port), "{dir} {name}: probe port {port} not declared");
                }
            }
        }
    }
}

/// The configuration a Deployment runs with, as its binary would read it: the file its
/// `KEV_CONFIG` names (from the mounted ConfigMap) under the container's `KEV_` variables.
struct Mounted {
    deployment: Deployment,
    container: Container,
    file: PathBuf,
    vars: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

fn mounted(objs: &[Value], deployment: &str) -> Mounted {
    let d: Deployment = typed(objects(objs, "Deployment").find(|o| kind(o).2 == deployment).unwrap());
    let pod = d.spec.clone().unwrap().template.spec.unwrap();
    let c = pod.containers[0].clone();
    let env = c.env.clone().unwrap_or_default();
    let path = env.iter().find(|e| e.name == "KEV_CONFIG").and_then(|e| e.value.clone()).expect("KEV_CONFIG");
    let path = Path::new(&path);
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| path.starts_with(&m.mount_path))
        .unwrap_or_else(|| panic!("{deployment}: nothing mounted at {}", path.display()));
    let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).unwrap();
    let cm_name = &volume.config_map.as_ref().expect("the config is a ConfigMap").name;
    let cm: ConfigMap = typed(objects(objs, "ConfigMap").find(|o| kind(o).2 == cm_name).unwrap());
    let key = path.strip_prefix(&mount.mount_path).unwrap().to_str().unwrap();
    let text = cm.data.unwrap()[key].clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(key);
    std::fs::write(&file, text).unwrap();
    // Values from the downward API are known only in the pod: any value will do here.
    let vars = env
        .iter()
        .filter(|e| e.name.starts_with("KEV_"))
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_else(|| "from-the-pod".into())))
        .collect();
    Mounted { deployment: d, container: c, file, vars, _dir: dir }
}

impl Mounted {
    fn load<T: DeserializeOwned>(&self) -> T {
        kev_common::config::load_from_vars(Some(&self.file), &[], self.vars.clone()).unwrap_or_else(|e| {
            panic!("{}: {e}", self.file.display());
        })
    }

    fn replicas(&self) -> i32 {
        self.deployment.spec.as_ref().unwrap().replicas.unwrap_or(1)
    }

    fn http_port(&self) -> i32 {
        self.container.ports.iter().flatten().find(|p| p.name.as_deref() == Some("http")).unwrap().container_port
    }

    /// A path the config reads a secret from must be on a Secret volume of the container.
    fn assert_secret_mounted(&self, path: &Path, what: &str) {
        let pod = self.deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let mount = self.container.volume_mounts.iter().flatten().find(|m| path.starts_with(&m.mount_path));
        let mount = mount.unwrap_or_else(|| panic!("{what} {} is not mounted", path.display()));
        let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).unwrap();
        assert!(volume.secret.is_some(), "{what} {} is not on a Secret volume", path.display());
    }

    fn assert_secrets_mounted(&self, kafka: &kev_common::kafka::KafkaSettings, registry_password: Option<&Path>) {
        assert!(
            !kafka.properties.keys().any(|k| kev_common::kafka::is_secret_property(k) && k != "ssl.ca.location"),
            "a secret in the ConfigMap: {kafka:?}"
        );
        if let Some(dir) = &kafka.secret_properties_dir {
            self.assert_secret_mounted(dir, "kafka.secret_properties_dir");
        }
        if let Some(ca) = kafka.properties.get("ssl.ca.location") {
            self.assert_secret_mounted(Path::new(ca), "ssl.ca.location");
        }
        if let Some(p) = registry_password {
            self.assert_secret_mounted(p, "registry.password_file");
        }
    }
}

#[test]
fn each_deployment_runs_with_a_config_its_binary_accepts_and_that_fits_the_manifests() {
    for (dir, objs) in renders() {
        let p = mounted(&objs, "kev-producer");
        let cfg: ProducerConfig = p.load();
        cfg.validate().unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(p.replicas() == 1 || cfg.leader_election.enabled, "{dir}: replicas without leader election");
        let role: Role = typed(objects(&objs, "Role").next().unwrap());
        let named: Vec<String> =
            role.rules.unwrap().into_iter().flat_map(|r| r.resource_names.unwrap_or_default()).collect();
        assert!(named.contains(&cfg.lease_name()), "{dir}: the Role does not name Lease {}", cfg.lease_name());
        assert_eq!(i32::from(cfg.http.listen.port()), p.http_port(), "{dir}: producer port");
        p.assert_secrets_mounted(&cfg.kafka, cfg.registry.password_file.as_deref());

        let e = mounted(&objs, "kev-enricher");
        let cfg: EnricherConfig = e.load();
        EngineSpec::load(&cfg).unwrap_or_else(|err| panic!("{dir}: {err}"));
        assert!(e.replicas() <= cfg.topics.partitions, "{dir}: enricher replicas beyond the partitions idle");
        assert_eq!(i32::from(cfg.http.listen.port()), e.http_port(), "{dir}: enricher port");
        e.assert_secrets_mounted(&cfg.kafka, cfg.registry.password_file.as_deref());
        assert_eq!(
            e.deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap().automount_service_account_token,
            Some(false),
            "{dir}: the enricher needs no API token"
        );
    }
}

/// Metric names the code emits, read from its `counter!`/`gauge!`/`histogram!` calls.
fn emitted_metrics() -> BTreeMap<String, &'static str> {
    let call = regex::Regex::new(r#"(counter|gauge|histogram)!\(\s*"([a-z0-9_]+)""#).unwrap();
    let mut out = BTreeMap::new();
    for krate in ["common", "producer", "enricher"] {
        for entry in std::fs::read_dir(repo().join(krate).join("src")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for c in call.captures_iter(&text) {
                let kind = match &c[1] {
                    "counter" => "counter",
                    "gauge" => "gauge",
                    _ => "histogram",
                };
                out.insert(c[2].to_string(), kind);
            }
        }
    }
    out
}

/// Every `kev_*` series an expression reads is one the code emits (histograms by their
/// `_bucket`/`_sum`/`_count` series), and every `kev:*` one is a recording rule.
fn assert_known_series(expr: &str, emitted: &BTreeMap<String, &str>, recorded: &BTreeSet<String>, at: &str) {
    let series = regex::Regex::new(r"\bkev[_:][a-z0-9_:]+").unwrap();
    for m in series.find_iter(expr) {
        let name = m.as_str();
        let known = if name.starts_with("kev:") {
            recorded.contains(name)
        } else {
            emitted.contains_key(name)
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s).is_some_and(|base| emitted.get(base) == Some(&"histogram")))
        };
        assert!(known, "{at}: {name} is neither emitted by the code nor recorded: {expr}");
    }
}

#[test]
fn alert_rules_pass_promtool_and_read_only_metrics_the_code_emits() {
    let objs = render("deploy/overlays/prod");
    let rule = objects(&objs, "PrometheusRule").next().expect("a PrometheusRule");
    let spec = &rule["spec"];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, serde_norway::to_string(spec).unwrap()).unwrap();
    let checked = run("promtool", &["check", "rules", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&checked.stdout).contains("SUCCESS"));

    let emitted = emitted_metrics();
    let rules: Vec<&Value> =
        spec["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    let recorded: BTreeSet<String> = rules.iter().filter_map(|r| r["record"].as_str()).map(String::from).collect();
    let alerts: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for want in ["KevProducerStale", "KevEnricherLagHigh", "KevEnricherDeadLetters", "KevIncidentRateHigh"] {
        assert!(alerts.contains(want), "no alert {want}: {alerts:?}");
    }
    for r in &rules {
        let at = r["alert"].as_str().or(r["record"].as_str()).unwrap();
        assert_known_series(r["expr"].as_str().unwrap(), &emitted, &recorded, at);
        if r["alert"].is_string() {
            assert!(r["labels"]["severity"].is_string() && r["annotations"]["summary"].is_string(), "{at}");
        }
    }

    // The dashboard, as the Grafana sidecar gets it.
    let cm: ConfigMap = typed(objects(&objs, "ConfigMap").find(|o| kind(o).2 == "kev-grafana-dashboard").unwrap());
    assert_eq!(cm.metadata.labels.unwrap()["grafana_dashboard"], "1");
    let dashboard: Value = serde_json::from_str(&cm.data.unwrap()["kev.json"]).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    for e in exprs {
        assert_known_series(&e, &emitted, &recorded, "dashboard");
    }

    // The ServiceMonitor scrapes the Services the base defines, on a port they have.
    let services: Vec<Service> = objects(&objs, "Service").map(typed).collect();
    for sm in objects(&objs, "ServiceMonitor") {
        let want = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
        let selected: Vec<&Service> = services
            .iter()
            .filter(|s| {
                let labels = s.metadata.labels.clone().unwrap_or_default();
                want.iter().all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
            })
            .collect();
        assert_eq!(selected.len(), 2, "the ServiceMonitor selects both Services");
        for ep in sm["spec"]["endpoints"].as_array().unwrap() {
            let port = ep["port"].as_str().unwrap();
            for s in &selected {
                assert!(s.spec.as_ref().unwrap().ports.iter().flatten().any(|p| p.name.as_deref() == Some(port)));
            }
            assert_eq!(ep["path"], "/metrics");
        }
    }
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            m.values().for_each(|v| collect_exprs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The stages `docker build --target` can pick, and that they end as an unprivileged user.
fn dockerfile_stages() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let from = regex::Regex::new(r"(?m)^FROM \S+ AS (\S+)$").unwrap();
    assert!(text.contains("USER 65532:65532"));
    for copy in regex::Regex::new(r"(?m)^COPY (\S+) ").unwrap().captures_iter(&text) {
        assert!(repo().join(&copy[1]).exists() || copy[1].starts_with("--from") || &copy[1] == ".", "{}", &copy[1]);
    }
    from.captures_iter(&text).map(|c| c[1].to_string()).collect()
}

#[test]
fn compose_names_only_what_the_binaries_and_the_readme_know() {
    let compose: Value =
        serde_norway::from_str(&std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let services = compose["services"].as_object().unwrap();
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for want in ["kafka", "schema-registry", "kev-producer", "kev-enricher", "prometheus"] {
        assert!(names.contains(want), "compose has no {want}");
    }
    let stages = dockerfile_stages();
    for (name, s) in services {
        let image = s["image"].as_str().unwrap_or_else(|| panic!("{name} has no image"));
        assert!(readme.contains(image), "README does not name the image {image} of {name}");
        let env: Vec<(String, String)> = s["environment"]
            .as_object()
            .map(|m| {
                m.iter().map(|(k, v)| (k.clone(), v.as_str().map(String::from).unwrap_or(v.to_string()))).collect()
            })
            .unwrap_or_default();
        let Some(target) = s["build"]["target"].as_str() else { continue };
        assert!(stages.contains(target), "{name}: no Dockerfile stage {target}");
        for (k, _) in &env {
            assert!(k.starts_with("KEV_"), "{name}: {k} is not a kev setting");
            assert!(readme.contains(k.as_str()), "README's configuration reference lacks {k}");
        }
        let url = |v: &str| -> (String, u16) {
            let hostport = v.trim_start_matches("http://").trim_end_matches('/');
            let (h, p) = hostport.rsplit_once(':').unwrap();
            (h.to_string(), p.parse().unwrap())
        };
        let (http_port, kafka, registry) = match target {
            "producer" => {
                let c: ProducerConfig = kev_common::config::load_from_vars(None, &[], env.clone()).unwrap();
                c.validate().unwrap();
                (c.http.listen.port(), c.kafka.bootstrap_servers, c.registry.url)
            }
            "enricher" => {
                let c: EnricherConfig = kev_common::config::load_from_vars(None, &[], env.clone()).unwrap();
                EngineSpec::load(&c).unwrap();
                (c.http.listen.port(), c.kafka.bootstrap_servers, c.registry.url)
            }
            other => panic!("{name}: unknown target {other}"),
        };
        let published: Vec<String> =
            s["ports"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        assert!(published.iter().any(|p| p.ends_with(&format!(":{http_port}"))), "{name} publishes {published:?}");
        for (host, port) in [url(&kafka), url(&registry)] {
            assert!(names.contains(host.as_str()), "{name} connects to {host}, not a compose service");
            let listens = services[&host]["environment"]
                .as_object()
                .unwrap()
                .values()
                .any(|v| v.as_str().is_some_and(|v| v.contains(&format!(":{port}"))));
            assert!(listens, "{name} connects to {host}:{port}, where {host} does not listen");
        }
        // The command is one the binary takes: clap refuses an unknown subcommand or flag
        // before it gets to --help.
        let command: Vec<&str> = s["command"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        let binary = kev_tests::procs::binary(&format!("kev-{target}"));
        let out = Command::new(&binary).args(&command).arg("--help").output().unwrap();
        assert!(out.status.success(), "{name}: {command:?}: {}", String::from_utf8_lossy(&out.stderr));
        for arg in &command {
            if let Some(file) = arg.strip_prefix("/usr/share/kev/") {
                assert!(repo().join("tests/data").join(file).exists(), "{name}: {arg} is not in the image");
            }
        }
    }
    // Prometheus scrapes the kev services on the port they serve.
    let prom = std::fs::read_to_string(repo().join("deploy/compose/prometheus.yml")).unwrap();
    run("promtool", &["check", "config", "deploy/compose/prometheus.yml"]);
    for svc in ["kev-producer", "kev-enricher"] {
        assert!(prom.contains(&format!("\"{svc}:8080\"")), "prometheus does not scrape {svc}");
    }
}

/// Dotted paths of every setting, from a config's defaults, as the README writes them: a map
/// (such as `kafka.properties`) is `kafka.properties.<name>`.
fn setting_paths(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if m.is_empty() => out.push(format!("{at}.<name>")),
        Value::Object(m) => {
            for (k, v) in m {
                let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                setting_paths(v, &path, out);
            }
        }
        _ => out.push(at.to_string()),
    }
}

#[test]
fn readme_documents_every_setting_with_its_variable() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut paths = Vec::new();
    setting_paths(&serde_json::to_value(ProducerConfig::default()).unwrap(), "", &mut paths);
    setting_paths(&serde_json::to_value(EnricherConfig::default()).unwrap(), "", &mut paths);
    assert!(paths.len() > 40, "{paths:?}");
    for path in paths {
        let var = format!("KEV_{}", path.to_uppercase().replace('.', "__"));
        let key = format!("`{path}`");
        assert!(readme.contains(&format!("| {key} | `{var}")), "README's configuration reference lacks {key} ({var})");
    }
}

#[test]
fn readme_lists_every_metric_the_code_emits() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let metrics = emitted_metrics();
    assert!(metrics.len() > 30, "{metrics:?}");
    for name in metrics.keys() {
        assert!(readme.contains(&format!("`{name}`")) || readme.contains(&format!("`{name}{{")), "README lacks {name}");
    }
}
