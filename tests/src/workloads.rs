//! What the node tests run besides kev: busybox (Debian's busybox-static, in an image built
//! here) as a web server with probes, or as a container that fails.

use serde_json::{json, Value};

use crate::images::{ImageSpec, BUSYBOX_TAG};

/// The test workloads' image: `/bin/busybox APPLET ...`.
pub fn busybox_image() -> ImageSpec {
    ImageSpec::busybox(&busybox_reference(), &["/bin/busybox"])
}

fn busybox_reference() -> String {
    format!("kev.local/busybox:{BUSYBOX_TAG}")
}

/// A pod spec of one container running `script` in busybox's shell, as an unprivileged user
/// with a read-only root and an `emptyDir` at `/www`, with no cluster DNS to resolve through
/// (the sandbox has none). With `probes`, HTTP readiness and liveness probes ask port 8080 for
/// `/index.html` every second.
pub fn pod_spec(script: &str, probes: bool) -> Value {
    let mut container = json!({
        "name": "main",
        "image": busybox_reference(),
        "imagePullPolicy": "Never",
        "args": ["sh", "-c", script],
        "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
        "volumeMounts": [{"name": "www", "mountPath": "/www"}],
    });
    if probes {
        let probe =
            json!({"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1, "failureThreshold": 3});
        container["readinessProbe"] = probe.clone();
        container["livenessProbe"] = probe;
    }
    json!({
        "dnsPolicy": "Default",
        "terminationGracePeriodSeconds": 1,
        "containers": [container],
        "volumes": [{"name": "www", "emptyDir": {}}],
    })
}

/// Deployment `web` (label `app=web`): `replicas` busybox HTTP servers whose probes ask the
/// server itself.
pub fn web(replicas: i32) -> Value {
    json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": pod_spec("echo ok > /www/index.html && exec busybox httpd -f -p 8080 -h /www", true),
            },
        },
    })
}

/// A bare pod whose container prints a line and exits with 3, again after each restart.
pub fn failing_pod(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": pod_spec("echo failing; exit 3", false)})
}
