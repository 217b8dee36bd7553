//! The Helm chart (deploy/helm/kev) against its own tools and against the kustomize files it
//! mirrors: `helm lint --strict` passes, its values schema refuses what the chart does not
//! know, and it renders the objects `deploy/base` and `deploy/overlays/prod` render, field for
//! field, apart from the differences listed in [`normalized`] (each one a reason, not a drift).
//! tests/tests/deploy.rs checks the chart's objects as it checks the overlays'; kev_on_node.rs
//! installs and upgrades it on a real node.

use std::collections::BTreeMap;

use kev_tests::helm::{chart, Helm};
use serde_json::Value;

/// Labels only Helm adds (its bookkeeping, and the release on pod templates).
const HELM_LABELS: [&str; 4] =
    ["app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version", "helm.sh/chart"];

fn key(o: &Value) -> (String, String) {
    (o["kind"].as_str().unwrap_or("").to_string(), o["metadata"]["name"].as_str().unwrap_or("").to_string())
}

/// A text that holds YAML or JSON, parsed, so that comments and key order do not count.
fn parsed_data(data: &mut Value) {
    if let Some(data) = data.as_object_mut() {
        for v in data.values_mut() {
            let text = v.as_str().unwrap_or("").to_string();
            if let Some(doc) = kev_tests::manifests::yaml_docs(text.as_bytes()).into_iter().next() {
                *v = doc;
            }
        }
    }
}

fn drop_labels(labels: &mut Value) {
    if let Some(m) = labels.as_object_mut() {
        for l in HELM_LABELS {
            m.remove(l);
        }
    }
}

fn sort_by_name(list: &mut Value) {
    if let Some(items) = list.as_array_mut() {
        items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    }
}

/// An object with what may differ between the two renders taken out, each for a reason:
/// - Helm's own labels, and the pod template's `checksum/config`: the chart rolls pods on a
///   config change by that annotation, kustomize by a hash in the ConfigMap's name (dropped
///   here from the ConfigMaps the Deployments name);
/// - the chart's ClusterRole and binding carry the namespace in their names (two releases in
///   two namespaces do not claim one cluster-scoped object);
/// - config files compare parsed (comments and key order aside), volumes and mounts by name.
fn normalized(mut o: Value, generated: &BTreeMap<String, String>) -> Value {
    let meta = &mut o["metadata"];
    drop_labels(&mut meta["labels"]);
    if let Some(name) = meta["name"].as_str() {
        let name = generated.get(name).cloned().unwrap_or_else(|| name.to_string());
        let name = name.strip_suffix("-kev").filter(|n| n.ends_with("events-reader")).unwrap_or(&name).to_string();
        meta["name"] = Value::String(name);
    }
    if o["kind"] == "ClusterRoleBinding" {
        o["roleRef"]["name"] = Value::String("kev-producer-events-reader".into());
    }
    if o["kind"] == "ConfigMap" {
        parsed_data(&mut o["data"]);
    }
    if o["kind"] == "Deployment" {
        let template = &mut o["spec"]["template"];
        drop_labels(&mut template["metadata"]["labels"]);
        if let Some(a) = template["metadata"]["annotations"].as_object_mut() {
            a.remove("checksum/config");
            if a.is_empty() {
                template["metadata"].as_object_mut().unwrap().remove("annotations");
            }
        }
        let pod = &mut template["spec"];
        for v in pod["volumes"].as_array_mut().into_iter().flatten() {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                let cm = generated.get(cm).cloned().unwrap_or_else(|| cm.to_string());
                v["configMap"]["name"] = Value::String(cm);
            }
        }
        sort_by_name(&mut pod["volumes"]);
        for c in pod["containers"].as_array_mut().into_iter().flatten() {
            sort_by_name(&mut c["volumeMounts"]);
        }
    }
    o
}

/// kustomize's generated ConfigMap names (`kev-producer-5t8h…`) to the generator's name.
fn generated_names(objs: &[Value]) -> BTreeMap<String, String> {
    objs.iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .filter_map(|o| {
            let name = o["metadata"]["name"].as_str()?;
            let (base, hash) = name.rsplit_once('-')?;
            (hash.len() == 10 && (base == "kev-producer" || base == "kev-enricher")).then(|| (name.into(), base.into()))
        })
        .collect()
}

/// Every path at which `a` and `b` differ, with both values.
fn differences(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            let null = Value::Null;
            for k in keys {
                differences(x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), &format!("{at}/{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, &format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("{at}: kustomize {a} / helm {b}")),
        _ => {}
    }
}

/// Compares the two renders object by object; `only_in_kustomize` names what the chart leaves
/// out on purpose.
fn assert_same_objects(kustomize: Vec<Value>, helm: Vec<Value>, only_in_kustomize: &[&str], what: &str) {
    let generated = generated_names(&kustomize);
    let by_key = |objs: Vec<Value>, generated: &BTreeMap<String, String>| -> BTreeMap<(String, String), Value> {
        objs.into_iter().map(|o| normalized(o, generated)).map(|o| (key(&o), o)).collect()
    };
    let mut kustomize = by_key(kustomize, &generated);
    let helm = by_key(helm, &BTreeMap::new());
    for kind in only_in_kustomize {
        kustomize.retain(|(k, _), _| k != kind);
    }
    let k_keys: Vec<_> = kustomize.keys().collect();
    let h_keys: Vec<_> = helm.keys().collect();
    assert_eq!(k_keys, h_keys, "{what}: the objects rendered (kustomize, then helm)");
    let mut diffs = Vec::new();
    for (k, a) in &kustomize {
        differences(a, &helm[k], &format!("{} {}", k.0, k.1), &mut diffs);
    }
    assert!(diffs.is_empty(), "{what}: the chart and kustomize differ:\n{}", diffs.join("\n"));
}

#[test]
fn the_chart_lints_strictly_with_its_default_and_production_values() {
    let helm = Helm::new();
    let chart = chart();
    let chart = chart.to_str().unwrap();
    helm.run(["lint", "--strict", chart]);
    let prod = format!("{chart}/values-prod.yaml");
    helm.run(["lint", "--strict", chart, "-f", &prod]);
}

/// A misspelt or mistyped value fails the install, saying where, instead of being ignored.
#[test]
fn the_values_schema_refuses_what_the_chart_does_not_know() {
    let helm = Helm::new();
    let chart = chart();
    for (set, says) in [
        ("producer.replica=3", "additional properties 'replica' not allowed"),
        ("topics.partitions=three", "/topics/partitions"),
        ("registry.url=schema-registry:8081", "/registry/url"),
        ("producer.image.pullPolicy=Sometimes", "/producer/image/pullPolicy"),
    ] {
        let out = helm.output(["template", "kev", chart.to_str().unwrap(), "--set", set]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "--set {set}: {err}");
    }
}

#[test]
fn the_chart_renders_what_the_kustomize_base_renders() {
    let kustomize = kev_tests::manifests::render(&kev_tests::repo().join("deploy/base"));
    // The base leaves the image tag to its overlays; the chart's default is its appVersion.
    let helm: Vec<Value> = Helm::new()
        .template("kev", "kev", &[])
        .into_iter()
        .map(|mut o| {
            if o["kind"] == "Deployment" {
                for c in o["spec"]["template"]["spec"]["containers"].as_array_mut().unwrap() {
                    let image = c["image"].as_str().unwrap().trim_end_matches(":0.1.0").to_string();
                    c["image"] = Value::String(image);
                }
            }
            o
        })
        .collect();
    // The chart makes no Namespace: Helm releases into one that exists or that
    // `--create-namespace` makes.
    assert_same_objects(kustomize, helm, &["Namespace"], "deploy/base vs the chart's defaults");
}

#[test]
fn the_chart_with_its_production_values_renders_what_the_prod_overlay_renders() {
    let kustomize = kev_tests::manifests::render(&kev_tests::repo().join("deploy/overlays/prod"));
    let prod = chart().join("values-prod.yaml");
    let helm = Helm::new().template("kev", "kev", &["-f", prod.to_str().unwrap()]);
    assert_same_objects(kustomize, helm, &["Namespace"], "deploy/overlays/prod vs values-prod.yaml");
}

/// Two releases in two namespaces of one cluster: no object of one is an object of the other.
#[test]
fn releases_in_two_namespaces_share_no_object() {
    let helm = Helm::new();
    let named = |ns: &str| -> Vec<(String, String, String)> {
        helm.template("kev", ns, &[])
            .iter()
            .map(|o| {
                let (kind, name) = key(o);
                (kind, o["metadata"]["namespace"].as_str().unwrap_or("").to_string(), name)
            })
            .collect()
    };
    let a = named("team-a");
    let b = named("team-b");
    let shared: Vec<_> = a.iter().filter(|o| b.contains(o)).collect();
    assert!(shared.is_empty(), "claimed by both releases: {shared:?}");
}
