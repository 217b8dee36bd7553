//! A real one-node Kubernetes cluster, contained in a [`Sandbox`]: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and a kubelet (v1.35.8, built from the Go module proxy
//! by `scripts/prerequisites.sh`), running pods through Debian's containerd, runc and CNI plugins.
//!
//! Each component authenticates as it does in a kubeadm cluster: a client certificate from the
//! apiserver's CA for `system:node:<name>` (Node authorizer and NodeRestriction), for
//! `system:kube-scheduler` and for `system:kube-controller-manager` (which gives its controllers
//! ServiceAccount credentials); the kubelet serves a certificate of the same CA and authorizes
//! the apiserver's calls by webhook. Pods get projected ServiceAccount tokens.
//!
//! What this machine kind needs of it (`../shared/REAL-COMPONENTS.md`, "A real node"):
//! - cgroup v1: the kubelet refuses it unless `failCgroupV1: false`, and uses `cgroupfs`
//!   (containerd 1.6 reports no cgroup driver). Its pods live under a cgroup root of their own
//!   (`/kev-node-<random>` in every hierarchy), made before it starts and removed at the end;
//! - root without CAP_SYS_RESOURCE: no process may lower its `oom_score_adj`, so containerd
//!   restricts it (`restrict_oom_score_adj`) and the kubelet leaves its own (`oomScoreAdj: 0`);
//! - no registry: the pod sandbox ("pause") image and every test image are built here
//!   ([`crate::images`]) and imported into containerd; pods use `imagePullPolicy: Never`.
//!
//! [`Node::start`] returns once the node is Ready and schedulable. Drop stops everything by pid
//! (the kubelet first, so it restarts nothing), kills what is left in the pods' cgroups and in
//! the sandbox (containerd's shims), and removes the cgroups; the sandbox's namespaces and mounts
//! end with their last process. [`MachineState`] is what a test compares before and after.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::images::ImageSpec;
use crate::kubeapi::{kube_bin, spawn, KubeApi, KubeOptions};
use crate::sandbox::{
    all_pids, children_of, kill, proc_stat, spawn_logged, wait_gone, Sandbox, KUBELET_SYSCTLS, NODE_IP, POD_RANGE,
};

/// The node's name.
pub const NODE_NAME: &str = "kev-node";

/// Where the cgroup hierarchies are mounted.
const CGROUP_FS: &str = "/sys/fs/cgroup";
/// The prefix of the node's cgroup root, in every hierarchy.
const CGROUP_PREFIX: &str = "kev-node-";

/// The cluster. Everything it started is stopped on drop.
pub struct Node {
    /// etcd and the apiserver, inside the sandbox; their ports are forwarded to 127.0.0.1.
    pub api: KubeApi,
    sandbox: Arc<Sandbox>,
    /// containerd, the controller-manager, the scheduler and the kubelet, by name.
    processes: Vec<(&'static str, Child)>,
    dir: PathBuf,
    cgroup_root: String,
}

impl Node {
    /// Starts the cluster under `dir` and waits until the node is Ready and schedulable, with
    /// the pause image and `images` imported into containerd.
    pub fn start(dir: &Path, images: &[ImageSpec]) -> Node {
        let bin = kube_bin();
        for b in ["kubelet", "kube-scheduler", "kube-controller-manager"] {
            assert!(bin.join(b).is_file(), "no {b} in {} (run scripts/prerequisites.sh --for-tests)", bin.display());
        }
        remove_stale_cgroups();
        let sandbox = Arc::new(Sandbox::create(dir));
        let api = KubeApi::start(dir, KubeOptions { sandbox: Some(sandbox.clone()), ..Default::default() });
        let dir = dir.join("node");
        std::fs::create_dir_all(&dir).unwrap();
        let cgroup_root = format!("{CGROUP_PREFIX}{:08x}", rand::random::<u32>());
        let mut node = Node { api, sandbox, processes: Vec::new(), dir, cgroup_root };
        node.make_cgroup_root();
        node.start_containerd();
        node.import(&ImageSpec::pause());
        for image in images {
            node.import(image);
        }
        node.start_control_plane();
        node.start_kubelet();
        node.start_kube_proxy();
        node.wait_ready();
        node
    }

    fn log_file(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }

    /// The last lines of a component's log (`containerd`, `kubelet`, `kube-scheduler`,
    /// `kube-controller-manager`).
    pub fn log(&self, component: &str) -> String {
        let text = std::fs::read_to_string(self.log_file(component)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The cgroup root in every hierarchy; the cpuset one takes its parent's CPUs and memory
    /// nodes, which a new cpuset cgroup does not inherit.
    fn make_cgroup_root(&self) {
        for h in hierarchies() {
            let root = h.join(&self.cgroup_root);
            std::fs::create_dir(&root).unwrap_or_else(|e| panic!("making {}: {e}", root.display()));
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(h.join(f)) {
                    std::fs::write(root.join(f), v.trim()).unwrap();
                }
            }
        }
    }

    fn start_containerd(&mut self) {
        let d = self.dir.display();
        let cni = self.dir.join("cni");
        std::fs::create_dir_all(&cni).unwrap();
        // ptp: one veth per pod into the node's namespace, a route per pod; no masquerade.
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "kev",
            "plugins": [{
                "type": "ptp",
                "ipMasq": false,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_RANGE}]], "routes": [{"dst": "0.0.0.0/0"}]},
            }],
        });
        std::fs::write(cni.join("10-kev.conflist"), conflist.to_string()).unwrap();
        let config = format!(
            r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
# The plugin that would unpack into /opt/containerd on the machine.
disabled_plugins = ["io.containerd.internal.v1.opt"]
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
            sock = self.socket().display(),
            pause = ImageSpec::pause().reference,
            cni = cni.display(),
        );
        let path = self.dir.join("containerd.toml");
        std::fs::write(&path, config).unwrap();
        // containerd starts each shim through a process that exits at once, so the shims are
        // orphans; tini, a subreaper, reaps them (PID 1 on this machine kind reaps late, and a
        // test would leave zombies behind). It passes SIGTERM on to containerd.
        let args = ["-s", "--", "containerd", "--config", &path.display().to_string()].map(String::from);
        let child = self.spawn_in_sandbox("tini", &args, "containerd");
        self.processes.push(("containerd", child));
        self.wait_for("containerd to answer", Duration::from_secs(30), |n| n.ctr(&["version"]).status.success());
    }

    /// Runs a program of the machine's inside the sandbox, its output in `log`'s log.
    fn spawn_in_sandbox(&self, program: &str, args: &[String], log: &str) -> Child {
        let mut command = self.sandbox.command(program);
        command.args(args);
        spawn_logged(command, &self.log_file(log))
    }

    /// `ctr` against the node's containerd, in the namespace the CRI uses.
    fn ctr(&self, args: &[&str]) -> std::process::Output {
        let socket = self.socket();
        self.sandbox
            .command("ctr")
            .arg("--address")
            .arg(socket)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Builds `image` (unless cached) and imports it into the node's containerd.
    pub fn import(&self, image: &ImageSpec) {
        let archive = image.archive(&self.sandbox);
        let out = self.ctr(&["images", "import", &archive.display().to_string()]);
        assert!(out.status.success(), "importing {}: {}", archive.display(), String::from_utf8_lossy(&out.stderr));
        let listed = self.ctr(&["images", "list", "--quiet"]);
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(
            listed.lines().any(|l| l == image.reference),
            "{} is not among containerd's images after the import: {listed}",
            image.reference
        );
    }

    /// What the scheduler and the controller-manager share: acting (and checking callers) as
    /// `user` by its kubeconfig, serving on the sandbox's 127.0.0.1 at `port`, one instance.
    fn component_args(&self, user: &str, port: u16) -> Vec<String> {
        let kubeconfig = self.api.kubeconfig_for(user, None).display().to_string();
        vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            "--leader-elect=false".into(),
        ]
    }

    fn start_control_plane(&mut self) {
        let ca = self.api.dir().join("ca.crt").display().to_string();
        let sa_key = self.api.dir().join("sa.key").display().to_string();
        let args = self.component_args("system:kube-scheduler", 10259);
        let child = spawn(Some(&self.sandbox), "kube-scheduler", &args, &self.log_file("kube-scheduler"));
        self.processes.push(("kube-scheduler", child));
        let mut args = self.component_args("system:kube-controller-manager", 10257);
        args.extend([
            // Each controller acts as its own ServiceAccount, as in kubeadm's clusters.
            "--use-service-account-credentials=true".into(),
            // Otherwise the kube-root-ca.crt ConfigMap in every namespace has an empty CA.
            format!("--root-ca-file={ca}"),
            format!("--service-account-private-key-file={sa_key}"),
            "--cluster-name=kev".into(),
            // The default is under /usr/libexec on the machine, which it would create.
            "--flex-volume-plugin-dir=/var/lib/kubelet/volume-plugins".into(),
        ]);
        let child =
            spawn(Some(&self.sandbox), "kube-controller-manager", &args, &self.log_file("kube-controller-manager"));
        self.processes.push(("kube-controller-manager", child));
    }

    fn start_kubelet(&mut self) {
        let serving = self.api.ca().server(&[NODE_IP, NODE_NAME]);
        let (crt, key) = (self.dir.join("kubelet.crt"), self.dir.join("kubelet.key"));
        std::fs::write(&crt, serving.cert_pem).unwrap();
        std::fs::write(&key, serving.key_pem).unwrap();
        let resolv = self.dir.join("resolv.conf");
        // No nameserver: nothing inside may resolve names through the machine's.
        std::fs::write(&resolv, "# no nameserver inside the sandbox\n").unwrap();
        let config = serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": false,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": format!("/{}", self.cgroup_root),
            "oomScoreAdj": 0,
            "containerRuntimeEndpoint": format!("unix://{}", self.socket().display()),
            "address": NODE_IP,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "tlsCertFile": crt,
            "tlsPrivateKeyFile": key,
            "authentication": {
                "anonymous": {"enabled": false},
                "webhook": {"enabled": true},
                "x509": {"clientCAFile": self.api.dir().join("ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "resolvConf": resolv,
            // The default is under /usr/libexec on the machine.
            "volumePluginDir": "/var/lib/kubelet/volume-plugins",
            "serializeImagePulls": false,
            "rotateCertificates": false,
            // The machine's disk is shared with builds: the default thresholds (imagefs 15%
            // free, nodefs 10%) would taint the node with disk pressure, and image GC (at 85%
            // used) would remove the images built here, as the machine fills, not as the test
            // does. Only a nearly full disk or memory evicts here.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
        });
        let path = self.dir.join("kubelet.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let kubeconfig = self.api.kubeconfig_for(&format!("system:node:{NODE_NAME}"), Some("system:nodes"));
        let args: Vec<String> = vec![
            format!("--config={}", path.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--node-ip={NODE_IP}"),
            format!("--hostname-override={NODE_NAME}"),
            "--v=1".into(),
        ];
        let child = spawn(Some(&self.sandbox), "kubelet", &args, &self.log_file("kubelet"));
        self.processes.push(("kubelet", child));
    }

    /// kube-proxy in iptables mode, so that Services work in the node's namespace (pods reach
    /// the apiserver through `kubernetes.default`, as in any cluster). It leaves the machine-wide
    /// conntrack settings as they are.
    fn start_kube_proxy(&mut self) {
        let kubeconfig = self.api.kubeconfig_for("system:kube-proxy", None);
        let config = serde_json::json!({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": kubeconfig},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": POD_RANGE,
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
        });
        let path = self.dir.join("kube-proxy.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let args = vec![format!("--config={}", path.display()), "--v=1".to_string()];
        let child = spawn(Some(&self.sandbox), "kube-proxy", &args, &self.log_file("kube-proxy"));
        self.processes.push(("kube-proxy", child));
    }

    /// The node is Ready and the node-lifecycle controller has lifted the not-ready taint the
    /// kubelet registers it with.
    fn wait_ready(&mut self) {
        self.wait_for("the node to be Ready and schedulable", Duration::from_secs(120), |n| {
            let Some(node) = n.api.get(&format!("/api/v1/nodes/{NODE_NAME}")) else { return false };
            let ready = node["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            let tainted = node["spec"]["taints"]
                .as_array()
                .is_some_and(|ts| ts.iter().any(|t| t["key"] == "node.kubernetes.io/not-ready"));
            ready && !tainted
        });
    }

    /// Waits until `done`, failing with the components' logs after `limit` or when one of them
    /// has exited.
    fn wait_for(&mut self, what: &str, limit: Duration, done: impl Fn(&Node) -> bool) {
        let started = Instant::now();
        loop {
            if done(self) {
                return;
            }
            let exited = self.processes.iter_mut().find_map(|(name, c)| c.try_wait().unwrap().map(|s| (*name, s)));
            if let Some((name, status)) = exited {
                panic!("waiting for {what}: {name} exited with {status}:\n{}", self.log(name));
            }
            if started.elapsed() > limit {
                let logs: Vec<String> =
                    self.processes.iter().map(|(name, _)| format!("--- {name}\n{}", self.log(name))).collect();
                panic!("{what}: not within {limit:?}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every event the apiserver holds, through events.k8s.io/v1 (the API the producer
    /// watches), each with its apiVersion and kind as a watch returns them.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let list = self.api.get("/apis/events.k8s.io/v1/events").expect("listing events");
        let mut items = list["items"].as_array().cloned().unwrap_or_default();
        for item in &mut items {
            item["apiVersion"] = serde_json::json!("events.k8s.io/v1");
            item["kind"] = serde_json::json!("Event");
        }
        items
    }

    /// The admin's client.
    pub fn client(&self) -> kube::Client {
        self.api.admin()
    }

    /// The sandbox the node runs in.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// SIGKILLs the processes of one container (`containerd://<id>`, as a pod's status names
    /// it), as a crash or the kernel's OOM killer would end them: the kubelet sees it exit.
    /// Returns how many processes it killed.
    pub fn kill_container(&self, container_id: &str) -> usize {
        self.signal_container(container_id, libc::SIGKILL)
    }

    /// Sends `signal` to every process of the container `container_id` (`SIGSTOP` freezes it
    /// without its knowing, `SIGCONT` wakes it). Returns how many processes it signalled.
    pub fn signal_container(&self, container_id: &str, signal: libc::c_int) -> usize {
        let id = container_id.rsplit("://").next().unwrap_or(container_id);
        let dirs: Vec<PathBuf> =
            cgroup_dirs(&self.cgroup_root).into_iter().filter(|d| d.file_name().is_some_and(|n| n == id)).collect();
        let pids = processes_in(&dirs);
        for &pid in &pids {
            // SAFETY: kill(2) with a pid and a signal number has no memory effects.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
        pids.len()
    }

    /// SIGKILLs every process in the node's cgroups (the pods' containers; their shims reap
    /// them) until none is left.
    fn kill_pods(&self) {
        let started = Instant::now();
        loop {
            let pids = cgroup_processes(&self.cgroup_root);
            if pids.is_empty() || started.elapsed() > Duration::from_secs(30) {
                return;
            }
            for &pid in &pids {
                kill(pid);
            }
            wait_gone(&pids);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The kubelet first, so that it restarts nothing; containerd (under tini) last.
        let mut processes: Vec<(&str, Child)> = self.processes.drain(..).collect();
        let containerd = processes.iter().position(|(n, _)| *n == "containerd").map(|i| processes.remove(i).1);
        for (_, mut child) in processes.into_iter().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_pods();
        if let Some(mut tini) = containerd {
            // Under tini: containerd, its shims (orphans tini adopted) and whatever either is
            // running. containerd is stopped first so it starts nothing more; the rest is
            // killed and reaped by tini while tini lives; then containerd goes, and tini with it.
            let containerd_pid = children_of(tini.id())
                .into_iter()
                .find(|&p| proc_stat(p).is_some_and(|(comm, _, _)| comm == "containerd"));
            if let Some(pid) = containerd_pid {
                // SAFETY: kill(2) with a pid and a signal number.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
            }
            let started = Instant::now();
            loop {
                // containerd's own finished children wait for it (stopped) to reap them; they
                // pass to tini with it.
                let waiting_on_containerd: Vec<u32> = containerd_pid
                    .map(|c| children_of(c).into_iter().filter(|&p| is_zombie(p)).collect())
                    .unwrap_or_default();
                let others: Vec<u32> = descendants(tini.id())
                    .into_iter()
                    .filter(|p| Some(*p) != containerd_pid && !waiting_on_containerd.contains(p))
                    .collect();
                if others.is_empty() {
                    break;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    eprintln!("containerd's shims and their children {others:?} still there after 10 s");
                    break;
                }
                for &pid in &others {
                    kill(pid);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(pid) = containerd_pid {
                kill(pid);
            }
            let _ = tini.wait();
        }
        // Anything else the node started outside the harness's sight (etcd and the apiserver
        // too, and a broker or registry in the sandbox: their owners' drops reap them).
        for pid in self.sandbox.processes() {
            kill(pid);
        }
        remove_cgroup_tree(&self.cgroup_root);
    }
}

/// Whether `pid` has exited and waits for its parent to reap it.
fn is_zombie(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, state, _)| state == 'Z')
}

/// Every process below `pid` (children, theirs, and so on), zombies included.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        for c in children_of(p) {
            out.push(c);
            next.push(c);
        }
    }
    out
}

/// The cgroup hierarchies mounted under `/sys/fs/cgroup` (v1 controllers, the named systemd
/// one, and the cgroup2 mount beside them).
fn hierarchies() -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .filter_map(|l| {
            let (before, after) = l.split_once(" - ")?;
            let fstype = after.split_whitespace().next()?;
            let mount_point = before.split_whitespace().nth(4)?;
            ((fstype == "cgroup" || fstype == "cgroup2") && mount_point.starts_with(CGROUP_FS))
                .then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// Every cgroup directory below `root` in every hierarchy, deepest first.
fn cgroup_dirs(root: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
        out.push(dir.to_path_buf());
    }
    let mut dirs = Vec::new();
    for h in hierarchies() {
        let top = h.join(root);
        if top.is_dir() {
            walk(&top, &mut dirs);
        }
    }
    dirs
}

/// The pids in any cgroup below `root`.
fn cgroup_processes(root: &str) -> Vec<u32> {
    processes_in(&cgroup_dirs(root))
}

/// The pids in the cgroups `dirs`.
fn processes_in(dirs: &[PathBuf]) -> Vec<u32> {
    let mut pids: Vec<u32> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<u32>>())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes every cgroup below `root`, deepest first; a cgroup whose last process is still
/// exiting refuses for a moment, so it is tried again for up to 30 s.
fn remove_cgroup_tree(root: &str) {
    let started = Instant::now();
    loop {
        let left: Vec<PathBuf> = cgroup_dirs(root).into_iter().filter(|d| std::fs::remove_dir(d).is_err()).collect();
        if left.is_empty() {
            return;
        }
        if started.elapsed() > Duration::from_secs(30) {
            eprintln!("cgroups left behind: {left:?}");
            return;
        }
        for pid in cgroup_processes(root) {
            kill(pid);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every node's cgroup root (`kev-node-*`) in every hierarchy, sorted by name, then hierarchy.
fn node_cgroup_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = hierarchies()
        .iter()
        .filter_map(|h| std::fs::read_dir(h).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(CGROUP_PREFIX)))
        .collect();
    roots.sort_by(|a, b| (a.file_name(), a).cmp(&(b.file_name(), b)));
    roots
}

/// Removes the empty cgroup roots of an earlier run that was itself killed before its drop:
/// those over ten minutes old, so that a node starting beside this one (tests run in parallel
/// outside `scripts/test.sh`) keeps its root while its kubelet is not up yet.
fn remove_stale_cgroups() {
    let mut roots: Vec<String> =
        node_cgroup_roots().iter().filter_map(|p| p.file_name()?.to_str().map(str::to_string)).collect();
    roots.dedup();
    let old = |root: &str| {
        hierarchies().iter().all(|h| {
            std::fs::metadata(h.join(root))
                .and_then(|m| m.modified())
                .map_or(true, |t| t.elapsed().unwrap_or_default() > Duration::from_secs(600))
        })
    };
    for root in roots {
        if old(&root) && cgroup_processes(&root).is_empty() {
            for d in cgroup_dirs(&root) {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// What a node could leave behind on the machine, read from the machine's side: the kernel
/// tunables the kubelet writes, the mounts, the network interfaces and namespaces, the node's
/// cgroups and the fixed paths its components write when not kept from them.
#[derive(Debug, PartialEq, Eq)]
pub struct MachineState {
    pub sysctls: Vec<(String, String)>,
    pub mounts: Vec<String>,
    pub links: Vec<String>,
    pub node_cgroups: Vec<PathBuf>,
    pub paths: Vec<(String, bool)>,
    /// The names of orphaned zombie processes (their parent is PID 1, which on this machine kind
    /// reaps late): a process of the node that nobody reaped.
    pub zombies: Vec<String>,
}

impl MachineState {
    pub fn read() -> MachineState {
        let sysctls = KUBELET_SYSCTLS
            .iter()
            .map(|s| (s.to_string(), std::fs::read_to_string(format!("/proc/sys/{s}")).unwrap_or_default()))
            .collect();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
            .collect();
        mounts.sort();
        let mut links: Vec<String> = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        links.sort();
        let node_cgroups = node_cgroup_roots();
        let paths = [
            "/run/containerd",
            "/run/netns",
            "/run/containers",
            "/run/runc",
            "/var/lib/kubelet",
            "/var/lib/cni",
            "/var/lib/containerd",
            "/var/lib/containers",
            "/var/log/pods",
            "/var/log/containers",
            "/etc/cni",
            "/opt/containerd",
            "/opt/cni",
            "/usr/libexec/kubernetes",
            "/etc/kubernetes",
        ]
        .iter()
        .map(|p| (p.to_string(), Path::new(p).exists()))
        .collect();
        let mut zombies: Vec<String> = all_pids()
            .into_iter()
            .filter_map(proc_stat)
            .filter(|(_, state, ppid)| *state == 'Z' && *ppid == 1)
            .map(|(comm, _, _)| comm)
            .collect();
        zombies.sort();
        MachineState { sysctls, mounts, links, node_cgroups, paths, zombies }
    }
}

/// Applies `objects` (as `kustomize build` renders them) with server-side apply, as
/// `kubectl apply --server-side` does: each kind's resource found by discovery, namespaces and
/// CRD-free kinds first in the order given.
pub async fn apply(client: &kube::Client, objects: &[serde_json::Value]) {
    use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
    for o in objects {
        let (api_version, kind) = (o["apiVersion"].as_str().unwrap(), o["kind"].as_str().unwrap());
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("no resource for {api_version} {kind}: {e}"));
        let name = o["metadata"]["name"].as_str().unwrap();
        let api: Api<DynamicObject> = match (caps.scope, o["metadata"]["namespace"].as_str()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            (kube::discovery::Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
            (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        api.patch(name, &PatchParams::apply("kev-tests").force(), &Patch::Apply(o))
            .await
            .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
    }
}
