//! A real kube-apiserver and its etcd as processes on 127.0.0.1, for the producer's tests, or
//! inside a [`Sandbox`] as the control plane of a real node (`crate::node`).
//!
//! Built from the Go module proxy by `scripts/prerequisites.sh --for-tests` (pinned by
//! `scripts/kube/*/go.mod`) into `~/.cache/kev/kube-<version>-etcd-<version>`. The harness
//! makes a CA, the apiserver's serving certificate and a service-account key (rcgen, ECDSA
//! P-256, which the apiserver accepts for service-account tokens), an admin bearer token in
//! `system:masters`, starts etcd (`--unsafe-no-fsync`) and the apiserver with RBAC on ports it
//! picks, and waits for `/readyz`. It can restart the apiserver, SIGKILL it, and compact etcd
//! (through etcd's gRPC gateway) to force 410 Gone.
//!
//! What the apiserver does differently from the fake API server, found on v1.35.8: Events have
//! no watch cache unless one is sized for them (`--watch-cache-sizes=events#N`), so a watch of
//! events is served from etcd and gets no periodic bookmarks; events.k8s.io/v1 refuses an event
//! without `eventTime`, `reportingController`, `reportingInstance` and `action`, a note over
//! 1,024 characters, a type other than Normal or Warning, and any change of those fields after
//! creation (core/v1 allows the change); core/v1 refuses an `involvedObject.namespace` other
//! than the event's own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use serde_json::{json, Value};
use tokio_rustls::rustls::pki_types;

use crate::broker::free_port;
use crate::sandbox::{Sandbox, KUBERNETES_SERVICE_IP, NODE_IP, SERVICE_RANGE};
use crate::tls::TestCa;

/// The versions `scripts/kube/*/go.mod` pin, as the cache directory names them.
pub const KUBE_VERSION: &str = "v1.35.8";
pub const ETCD_VERSION: &str = "v3.6.17";

/// Where the binaries are: `KEV_KUBE_BIN`, or the prerequisites' cache.
pub fn kube_bin() -> PathBuf {
    crate::cached("KEV_KUBE_BIN", &format!("kube-{KUBE_VERSION}-etcd-{ETCD_VERSION}"))
}

/// Runs `binary` of the kube cache with `args`, inside `sandbox` when there is one, its output
/// appended to `log`.
pub fn spawn(sandbox: Option<&Sandbox>, binary: &str, args: &[String], log: &Path) -> Child {
    let mut command = Sandbox::command_in(sandbox, kube_bin().join(binary));
    command.args(args);
    crate::sandbox::spawn_logged(command, log)
}

/// How the apiserver runs.
#[derive(Debug, Clone, Default)]
pub struct KubeOptions {
    /// Sizes a watch cache for events (`--watch-cache-sizes=events#1000`): watches are then
    /// served from it and get bookmarks. Off, as the apiserver ships, they come from etcd.
    pub events_watch_cache: bool,
    /// `--watch-cache=false`: no watch cache for any resource.
    pub no_watch_cache: bool,
    /// Runs etcd and the apiserver inside this sandbox as the control plane of a real node
    /// (`crate::node`): reachable on the node's address too, with the admission plugins,
    /// Service range, endpoint reconciler and Node authorizer a cluster has, and a client
    /// certificate for the kubelets. Their ports are forwarded to the machine's 127.0.0.1.
    pub sandbox: Option<Arc<Sandbox>>,
}

/// etcd and a kube-apiserver. Both killed on drop.
pub struct KubeApi {
    etcd: Option<Child>,
    apiserver: Option<Child>,
    pub port: u16,
    etcd_port: u16,
    dir: PathBuf,
    ca: TestCa,
    admin_token: String,
    options: KubeOptions,
}

impl KubeApi {
    /// Starts etcd and the apiserver, keeping their data and logs under `dir/kube`.
    pub fn start(dir: &Path, options: KubeOptions) -> KubeApi {
        let bin = kube_bin();
        assert!(
            bin.join("kube-apiserver").is_file() && bin.join("etcd").is_file(),
            "no kube-apiserver and etcd in {} (run scripts/prerequisites.sh --for-tests, or set KEV_KUBE_BIN)",
            bin.display()
        );
        let dir = dir.join("kube");
        std::fs::create_dir_all(dir.join("etcd-data")).unwrap();
        let ca = match options.sandbox {
            None => TestCa::new("kube-apiserver"),
            // What a pod reaches it by, on the node's address or through the Service.
            Some(_) => TestCa::for_names(
                "kube-apiserver",
                &[
                    "127.0.0.1",
                    "localhost",
                    NODE_IP,
                    KUBERNETES_SERVICE_IP,
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ],
            ),
        };
        std::fs::write(dir.join("ca.crt"), &ca.ca_pem).unwrap();
        std::fs::write(dir.join("apiserver.crt"), &ca.server_cert_pem).unwrap();
        std::fs::write(dir.join("apiserver.key"), &ca.server_key_pem).unwrap();
        let sa = KeyPair::generate().unwrap();
        std::fs::write(dir.join("sa.key"), sa.serialize_pem()).unwrap();
        std::fs::write(dir.join("sa.pub"), sa.public_key_pem()).unwrap();
        let admin_token = format!("kev-admin-{:016x}", rand::random::<u64>());
        std::fs::write(dir.join("tokens.csv"), format!("{admin_token},kev-admin,kev-admin-uid,\"system:masters\"\n"))
            .unwrap();
        let mut api = KubeApi {
            etcd: None,
            apiserver: None,
            port: free_port(),
            etcd_port: free_port(),
            dir,
            ca,
            admin_token,
            options,
        };
        if let Some(sandbox) = &api.options.sandbox {
            sandbox.forward(api.etcd_port);
            sandbox.forward(api.port);
            let kubelet_client = api.ca.client_in("kube-apiserver-kubelet-client", Some("system:masters"));
            std::fs::write(api.dir.join("kubelet-client.crt"), kubelet_client.cert_pem).unwrap();
            std::fs::write(api.dir.join("kubelet-client.key"), kubelet_client.key_pem).unwrap();
        }
        api.start_etcd();
        api.start_apiserver();
        api
    }

    fn start_etcd(&mut self) {
        let peer = free_port();
        let url = format!("http://127.0.0.1:{}", self.etcd_port);
        let args = [
            "--name=kev".to_string(),
            format!("--data-dir={}", self.dir.join("etcd-data").display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster=kev=http://127.0.0.1:{peer}"),
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ];
        self.etcd = Some(spawn(self.options.sandbox.as_deref(), "etcd", &args, &self.dir.join("etcd.log")));
        let started = Instant::now();
        let health = format!("http://127.0.0.1:{}/health", self.etcd_port);
        while !crate::plain_http::get_ok(&health).is_some_and(|b| b.contains("\"health\":\"true\"")) {
            assert!(started.elapsed() < Duration::from_secs(60), "etcd not healthy in 60 s: {}", self.log("etcd.log"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_apiserver(&mut self) {
        let d = |f: &str| self.dir.join(f).display().to_string();
        let mut args = vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
            format!("--secure-port={}", self.port),
            format!("--tls-cert-file={}", d("apiserver.crt")),
            format!("--tls-private-key-file={}", d("apiserver.key")),
            format!("--client-ca-file={}", d("ca.crt")),
            format!("--token-auth-file={}", d("tokens.csv")),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
        ];
        if self.options.sandbox.is_some() {
            // Inside the sandbox every address is the tests' own: the node's, for its pods.
            args.extend([
                "--bind-address=0.0.0.0".into(),
                format!("--advertise-address={NODE_IP}"),
                format!("--service-cluster-ip-range={SERVICE_RANGE}"),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                format!("--kubelet-client-certificate={}", d("kubelet-client.crt")),
                format!("--kubelet-client-key={}", d("kubelet-client.key")),
                format!("--kubelet-certificate-authority={}", d("ca.crt")),
                // Otherwise logs and exec resolve the node's name through the machine's resolver.
                "--kubelet-preferred-address-types=InternalIP".into(),
            ]);
        } else {
            args.extend([
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=RBAC".into(),
                // No controller manager runs: nothing would make the ServiceAccounts' tokens the
                // admission plugin waits for, and 127.0.0.1 may not be an endpoint of `kubernetes`.
                "--disable-admission-plugins=ServiceAccount".into(),
                "--endpoint-reconciler-type=none".into(),
            ]);
        }
        if self.options.events_watch_cache {
            args.push("--watch-cache-sizes=events#1000".into());
        }
        if self.options.no_watch_cache {
            args.push("--watch-cache=false".into());
        }
        self.apiserver =
            Some(spawn(self.options.sandbox.as_deref(), "kube-apiserver", &args, &self.dir.join("apiserver.log")));
        let started = Instant::now();
        loop {
            if let Some(status) = self.apiserver.as_mut().unwrap().try_wait().unwrap() {
                panic!("kube-apiserver exited with {status}: {}", self.log("apiserver.log"));
            }
            if self.ready() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "kube-apiserver not ready in 120 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `/readyz` answers 200 to the admin.
    fn ready(&self) -> bool {
        self.get_raw("/readyz").is_some()
    }

    /// A GET of `path` as the admin, blocking and outside any runtime (the harness waits on
    /// processes from plain code): the status and the body, whatever the status.
    pub fn get_with_status(&self, path: &str) -> Option<(u16, Vec<u8>)> {
        let out = Command::new("curl")
            .args(["-s", "-w", "%{http_code}", "--cacert"])
            .arg(self.dir.join("ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {}", self.admin_token)])
            .arg(format!("{}{path}", self.url()))
            .output()
            .ok()?;
        // curl writes the three digits of the status after the body.
        let at = out.stdout.len().checked_sub(3)?;
        let status = std::str::from_utf8(&out.stdout[at..]).ok()?.parse().ok()?;
        Some((status, out.stdout[..at].to_vec()))
    }

    /// The body of a GET of `path` as the admin when the answer was 2xx.
    pub fn get_raw(&self, path: &str) -> Option<Vec<u8>> {
        self.get_with_status(path).filter(|(status, _)| (200..300).contains(status)).map(|(_, body)| body)
    }

    /// [`KubeApi::get_raw`] of an object, parsed.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.get_raw(path).and_then(|b| serde_json::from_slice(&b).ok())
    }

    fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A client configuration with `token` as its bearer token.
    pub fn config_with_token(&self, token: &str) -> kube::Config {
        use pki_types::pem::PemObject;
        let ca = pki_types::CertificateDer::from_pem_slice(self.ca.ca_pem.as_bytes()).unwrap();
        let mut c = kube::Config::new(self.url().parse().unwrap());
        c.root_cert = Some(vec![ca.to_vec()]);
        c.auth_info.token = Some(token.to_string().into());
        c
    }

    /// The admin's client (`system:masters`).
    pub fn admin(&self) -> kube::Client {
        kube::Client::try_from(self.config_with_token(&self.admin_token)).unwrap()
    }

    /// A kubeconfig file for a process, with `token` (the admin's when `None`).
    pub fn kubeconfig(&self, token: Option<&str>) -> PathBuf {
        let token = token.unwrap_or(&self.admin_token);
        self.write_kubeconfig(&format!("token: {token}"))
    }

    /// A kubeconfig file for a cluster component: user `user` in `group` by a client
    /// certificate the apiserver's CA signs, as kubeadm gives the kubelet, the scheduler and the
    /// controller-manager.
    pub fn kubeconfig_for(&self, user: &str, group: Option<&str>) -> PathBuf {
        let cert = self.ca.client_in(user, group);
        let file = user.replace(':', "-");
        let (crt, key) = (self.dir.join(format!("{file}.crt")), self.dir.join(format!("{file}.key")));
        std::fs::write(&crt, cert.cert_pem).unwrap();
        std::fs::write(&key, cert.key_pem).unwrap();
        self.write_kubeconfig(&format!("client-certificate: {}\n    client-key: {}", crt.display(), key.display()))
    }

    fn write_kubeconfig(&self, user: &str) -> PathBuf {
        let path = self.dir.join(format!("kubeconfig-{:08x}", rand::random::<u32>()));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kev\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: kev\n  user:\n    {user}\ncontexts:\n- name: kev\n  context: {{cluster: kev, user: kev}}\n\
             current-context: kev\n",
            self.url(),
            self.dir.join("ca.crt").display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The CA that signs the apiserver's and the components' certificates.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// Where its certificates, keys and logs are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILLs the apiserver (etcd keeps running).
    pub fn kill_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the apiserver again on the same port and etcd, and waits until it is ready.
    pub fn start_apiserver_again(&mut self) {
        assert!(self.apiserver.is_none(), "the apiserver is running");
        self.start_apiserver();
    }

    /// Compacts etcd's history up to `revision` (an object's resourceVersion is its etcd
    /// revision): a watch from before it then ends with 410 Gone.
    pub fn compact(&self, revision: u64) {
        let body = format!("{{\"revision\": \"{revision}\", \"physical\": true}}");
        let url = format!("http://127.0.0.1:{}/v3/kv/compaction", self.etcd_port);
        let answer = crate::plain_http::call("POST", &url, Some(&body));
        let done = answer.as_ref().is_ok_and(|(status, body)| *status == 200 && body.contains("header"));
        assert!(done, "compaction to {revision}: {answer:?}");
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        for c in [self.apiserver.take(), self.etcd.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes events as components do and keeps what the apiserver returns for every version, read
/// back with a GET through events.k8s.io/v1 (the API the producer discovers and watches).
pub struct EventWriter {
    pub client: kube::Client,
    namespaces: BTreeSet<String>,
    /// Every version written, as the apiserver returns it (with `read_back`).
    pub versions: Vec<Value>,
    /// (uid, resourceVersion, when its write was answered) of every write.
    pub written: Vec<(String, String, Instant)>,
    read_back: bool,
    /// What had to change in a real event for the apiserver to take it, and how often.
    pub adapted: BTreeMap<&'static str, usize>,
}

/// A valid qualified name for `reportingController`: the dump's component when it is one.
fn controller_name(component: Option<&str>) -> String {
    let ok = |s: &str| {
        !s.is_empty()
            && s.split('/').count() <= 2
            && s.split('/').all(|p| {
                !p.is_empty()
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && p.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && p.ends_with(|c: char| c.is_ascii_alphanumeric())
            })
    };
    component.filter(|c| ok(c)).map_or_else(|| "kev.test/replayer".to_string(), str::to_string)
}

impl EventWriter {
    pub fn new(client: kube::Client) -> EventWriter {
        EventWriter {
            client,
            namespaces: BTreeSet::new(),
            versions: Vec::new(),
            written: Vec::new(),
            read_back: true,
            adapted: BTreeMap::new(),
        }
    }

    /// A writer that keeps only the (uid, resourceVersion, when) of each write, from the write's
    /// answer, without reading it back: for load, where the GET would double the requests.
    pub fn without_read_back(client: kube::Client) -> EventWriter {
        EventWriter { read_back: false, ..EventWriter::new(client) }
    }

    fn adapt(&mut self, why: &'static str) {
        *self.adapted.entry(why).or_default() += 1;
    }

    pub async fn send(&self, method: &str, path: &str, content_type: &str, body: &Value) -> Result<Value, kube::Error> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("Content-Type", content_type)
            .body(serde_json::to_vec(body).unwrap())
            .unwrap();
        self.client.request::<Value>(req).await
    }

    pub async fn get(&self, path: &str) -> Value {
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        self.client.request::<Value>(req).await.unwrap()
    }

    pub async fn namespace(&mut self, ns: &str) {
        if self.namespaces.insert(ns.to_string()) {
            let r =
                self.send("POST", "/api/v1/namespaces", "application/json", &json!({"metadata": {"name": ns}})).await;
            match r {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => panic!("creating namespace {ns}: {e}"),
            }
        }
    }

    /// Notes a write the server answered with `answer`, and keeps the events.k8s.io/v1 view of
    /// the event as it is now (with `read_back`).
    async fn read_back(&mut self, ns: &str, name: &str, answer: &Value) {
        let at = Instant::now();
        let meta = &answer["metadata"];
        let key = |k: &str| meta[k].as_str().unwrap_or_default().to_string();
        self.written.push((key("uid"), key("resourceVersion"), at));
        if self.read_back {
            let v = self.get(&format!("/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}")).await;
            self.versions.push(v);
        }
    }

    /// A real core/v1 event created through core/v1 as the kubelet does: the dump's fields less
    /// what the server assigns. Returns its namespace and name, or `None` when its name is taken.
    pub async fn create_core(&mut self, source: &Value) -> Option<(String, String)> {
        let mut e = source.clone();
        let o = e.as_object_mut().unwrap();
        o.remove("_source");
        let name = source["metadata"]["name"].as_str().unwrap().to_string();
        let mut ns = source["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let involved_ns = source["involvedObject"]["namespace"].as_str().unwrap_or_default().to_string();
        if involved_ns.is_empty() {
            // A cluster-scoped object's events live in `default`: the server refuses an
            // involvedObject namespace that is not the event's own, and an empty one elsewhere.
            if ns != "default" {
                self.adapt("event of a cluster-scoped object moved to namespace default");
            }
            ns = "default".into();
        } else if involved_ns != ns {
            self.adapt("event namespace set to its object's (the server refuses a mismatch)");
            ns = involved_ns;
        }
        o.insert("metadata".into(), json!({"name": name, "namespace": ns}));
        if !matches!(source["type"].as_str(), Some("Normal" | "Warning")) {
            self.adapt("type other than Normal or Warning set to Warning");
            o.insert("type".into(), json!("Warning"));
        }
        self.namespace(&ns).await;
        let answer = match self.send("POST", &format!("/api/v1/namespaces/{ns}/events"), "application/json", &e).await {
            Ok(a) => a,
            Err(kube::Error::Api(a)) if a.code == 409 => {
                self.adapt("skipped: an event of the same name exists already");
                return None;
            }
            Err(err) => panic!("creating core/v1 event {ns}/{name}: {err}\n{e}"),
        };
        self.read_back(&ns, &name, &answer).await;
        Some((ns, name))
    }

    /// A repeat, as the kubelet's event recorder makes it: count and lastTimestamp by PATCH.
    pub async fn bump_core(&mut self, ns: &str, name: &str, at: &str) {
        let now = self.get(&format!("/api/v1/namespaces/{ns}/events/{name}")).await;
        let count = now["count"].as_i64().unwrap_or(1) + 1;
        let patch = json!({"count": count, "lastTimestamp": at});
        let answer = self
            .send("PATCH", &format!("/api/v1/namespaces/{ns}/events/{name}"), "application/merge-patch+json", &patch)
            .await
            .unwrap();
        self.read_back(ns, name, &answer).await;
    }

    /// A real event recreated through events.k8s.io/v1 as a current controller writes it:
    /// eventTime, reportingController and reportingInstance and action are required there.
    pub async fn create_v1(&mut self, source: &Value, name: &str) -> (String, String) {
        let involved = &source["involvedObject"];
        let ns = match involved["namespace"].as_str() {
            Some(ns) if !ns.is_empty() => ns.to_string(),
            _ => "default".to_string(),
        };
        let at = source["eventTime"]
            .as_str()
            .or(source["lastTimestamp"].as_str())
            .or(source["metadata"]["creationTimestamp"].as_str())
            .unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(at).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let component =
            source["reportingComponent"].as_str().filter(|c| !c.is_empty()).or(source["source"]["component"].as_str());
        let controller = controller_name(component);
        if Some(controller.as_str()) != component {
            self.adapt("reportingController set to kev.test/replayer (none, or not a qualified name)");
        }
        let mut note = source["message"].as_str().unwrap_or_default().to_string();
        if note.len() > 1024 {
            self.adapt("note cut to 1,024 bytes (events.k8s.io/v1's limit)");
            let mut end = 1024;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        let ty = source["type"].as_str().filter(|t| matches!(*t, "Normal" | "Warning")).unwrap_or("Warning");
        let instance = source["reportingInstance"]
            .as_str()
            .filter(|i| !i.is_empty())
            .or(source["source"]["host"].as_str())
            .unwrap_or("kev-test");
        let e = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "eventTime": at,
            "reportingController": controller,
            "reportingInstance": instance,
            "action": source["action"].as_str().filter(|a| !a.is_empty()).or(source["reason"].as_str()).unwrap_or("Unknown"),
            "reason": source["reason"].as_str().unwrap_or("Unknown"),
            "note": note,
            "type": ty,
            "regarding": involved,
        });
        self.namespace(&ns).await;
        let answer = self
            .send("POST", &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"), "application/json", &e)
            .await
            .unwrap_or_else(|err| panic!("creating events.k8s.io/v1 event {ns}/{name}: {err}\n{e}"));
        self.read_back(&ns, name, &answer).await;
        (ns, name.to_string())
    }

    /// Events the test did not write (the apiserver records some of its own, such as in
    /// `default` at start-up), as they stand now: they are published too. Returns their reasons.
    pub async fn adopt_others(&mut self) -> Vec<String> {
        let ours: BTreeSet<String> =
            self.versions.iter().map(|v| v["metadata"]["uid"].as_str().unwrap_or_default().to_string()).collect();
        let list = self.get("/apis/events.k8s.io/v1/events").await;
        let mut reasons = Vec::new();
        for mut item in list["items"].as_array().cloned().unwrap_or_default() {
            if ours.contains(item["metadata"]["uid"].as_str().unwrap_or_default()) {
                continue;
            }
            item["apiVersion"] = json!("events.k8s.io/v1");
            item["kind"] = json!("Event");
            reasons.push(format!("{} {}", item["reportingController"], item["reason"]));
            self.versions.push(item);
        }
        reasons
    }

    /// A repeat through events.k8s.io/v1: the series, as the new event recorder updates it.
    pub async fn bump_series(&mut self, ns: &str, name: &str, count: i64, at: &str) {
        let patch = json!({"series": {"count": count, "lastObservedTime": at}});
        let path = format!("/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}");
        let answer = self.send("PATCH", &path, "application/merge-patch+json", &patch).await.unwrap();
        self.read_back(ns, name, &answer).await;
    }
}
