//! A network and mount namespace of the tests' own, where a real node and its control plane run
//! without touching the machine's network, mounts or kernel settings.
//!
//! One `sleep` process holds both namespaces (`unshare --net --mount --propagation private`);
//! every other process enters them with `nsenter`, which execs, so the harness's child is the
//! process itself and is stopped by its pid. Not `ip netns exec`: it remounts `/sys` and hides
//! the cgroup hierarchies the kubelet needs. Inside:
//! - `lo`, and a bridge with no ports that carries the node's address with the Service range
//!   routed to it; no default route, so nothing inside reaches an address outside;
//! - a tmpfs over `/run` and test directories over `/var/lib` and `/var/log`, where containerd,
//!   runc, the CNI plugins, buildah and the kubelet keep state at fixed paths;
//! - files over the kernel tunables the kubelet sets machine-wide ([`KUBELET_SYSCTLS`]), so its
//!   writes land in them and the machine keeps its own values.
//!
//! The test process reaches servers inside through [`Sandbox::forward`]: a port on the machine's
//! 127.0.0.1 whose connections are made from inside the network namespace. The namespaces, and
//! every mount in them, end with the last process in them.

use std::fs::File;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The node's address, on the bridge inside the sandbox.
pub const NODE_IP: &str = "10.250.0.1";
/// The Service range, routed to the node's bridge (the apiserver's `kubernetes` Service is its
/// first address).
pub const SERVICE_RANGE: &str = "10.96.0.0/12";
/// The first address of [`SERVICE_RANGE`].
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// Pod addresses, handed out by the CNI plugin `host-local`.
pub const POD_RANGE: &str = "10.244.0.0/24";

/// The kernel tunables (under `/proc/sys`) the kubelet writes at start-up, machine-wide unless
/// kept from it (`setupKernelTunables` in its container manager).
pub const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// The namespaces, held by one process. Everything still inside is killed on drop.
pub struct Sandbox {
    holder: Mutex<Option<Child>>,
    holder_pid: u32,
    mount_ns: String,
    dir: PathBuf,
    forwards: Mutex<Vec<Forward>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("holder_pid", &self.holder_pid).field("dir", &self.dir).finish()
    }
}

impl Sandbox {
    /// Makes the namespaces and lays out their network, mounts and tunables, keeping what the
    /// mounts cover under `dir/sandbox`.
    pub fn create(dir: &Path) -> Sandbox {
        let dir = dir.join("sandbox");
        for d in ["var-lib", "var-log", "sysctl"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let holder = Command::new("unshare")
            .args(["--net", "--mount", "--propagation", "private", "--", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("starting unshare (util-linux)");
        let holder_pid = holder.id();
        // unshare makes the namespaces, makes every mount private, then execs sleep: once the
        // holder is `sleep`, nothing mounted inside can propagate to the machine.
        let started = Instant::now();
        while proc_stat(holder_pid).is_none_or(|(comm, _, _)| comm != "sleep") {
            assert!(started.elapsed() < Duration::from_secs(10), "unshare did not start its holder in 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mount_ns = std::fs::read_link(format!("/proc/{holder_pid}/ns/mnt")).unwrap().display().to_string();
        assert_ne!(
            std::fs::read_link("/proc/self/ns/mnt").unwrap().display().to_string(),
            mount_ns,
            "unshare made no mount namespace"
        );
        let sandbox =
            Sandbox { holder: Mutex::new(Some(holder)), holder_pid, mount_ns, dir, forwards: Mutex::default() };
        // Private again, in case: a mount made here must never reach the machine.
        let mut script = String::from("set -e\nmount --make-rprivate /\nmount -t tmpfs -o mode=755 tmpfs /run\n");
        let d = sandbox.dir.display();
        script += &format!("mount --bind {d}/var-lib /var/lib\nmount --bind {d}/var-log /var/log\n");
        for s in KUBELET_SYSCTLS {
            let file = format!("{d}/sysctl/{}", s.replace('/', "."));
            script += &format!("cat /proc/sys/{s} > {file}\nmount --bind {file} /proc/sys/{s}\n");
        }
        script += &format!(
            "ip link set lo up\nip link add k8snode0 type bridge\nip link set k8snode0 up\n\
             ip addr add {NODE_IP}/32 dev k8snode0\nip route add {SERVICE_RANGE} dev k8snode0\n"
        );
        sandbox.sh(&script);
        sandbox
    }

    /// The directory the sandbox's mounts come from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `program` run inside the namespaces.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", self.holder_pid)).args(["--net", "--mount", "--"]).arg(program);
        c
    }

    /// `program` run inside `sandbox` when there is one, else on the machine.
    pub fn command_in(sandbox: Option<&Sandbox>, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match sandbox {
            Some(s) => s.command(program),
            None => Command::new(program),
        }
    }

    /// Runs a shell script inside and returns its standard output; panics with its output if
    /// it fails.
    pub fn sh(&self, script: &str) -> String {
        let out = self.command("sh").args(["-c", script]).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "in the sandbox, `{script}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Makes `port` of the machine's 127.0.0.1 reach `port` of 127.0.0.1 inside the sandbox,
    /// for as long as the sandbox lives. The port must be free on the machine (any port is free
    /// inside: the namespace is new). The same number on both sides lets a server advertise
    /// one address that works from either (Kafka's listeners).
    pub fn forward(&self, port: u16) {
        self.forward_to(port, port);
    }

    /// Makes `port` of the machine's 127.0.0.1 reach `inside` of 127.0.0.1 inside the sandbox.
    pub fn forward_to(&self, port: u16, inside: u16) {
        let netns = File::open(format!("/proc/{}/ns/net", self.holder_pid)).unwrap();
        self.forwards.lock().unwrap().push(Forward::start(port, inside, netns));
    }

    /// The pids of every process in the sandbox's mount namespace but its holder: the node's
    /// processes, and those they started (containerd's shims) that the harness never saw.
    pub fn processes(&self) -> Vec<u32> {
        let in_sandbox = |pid: u32| {
            std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|ns| ns.display().to_string() == self.mount_ns)
        };
        all_pids().into_iter().filter(|&p| p != self.holder_pid && in_sandbox(p)).collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.forwards.lock().unwrap().clear();
        // Whatever is still inside (the harness stops what it started first) goes with it.
        for pid in self.processes() {
            kill(pid);
        }
        if let Some(mut holder) = self.holder.lock().unwrap().take() {
            let _ = holder.kill();
            let _ = holder.wait();
        }
    }
}

/// Starts `command` with no input and its output appended to `log`.
pub fn spawn_logged(mut command: Command, log: &Path) -> Child {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", command.get_program()))
}

/// SIGKILLs `pid`; a process that is gone already is not an error.
pub fn kill(pid: u32) {
    // SAFETY: kill(2) with a pid and a signal number has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// From `/proc/<pid>/stat`: the command name, the state letter and the parent's pid.
pub fn proc_stat(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let (head, rest) = stat.rsplit_once(") ")?;
    let comm = head.split_once(" (")?.1.to_string();
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((comm, state, fields.next()?.parse().ok()?))
}

/// Every pid on the machine.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc").unwrap().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

/// The pids whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    all_pids().into_iter().filter(|&p| proc_stat(p).is_some_and(|(_, _, ppid)| ppid == parent)).collect()
}

/// Waits up to 10 s until none of `pids` is a process any more (their parent has reaped them).
pub fn wait_gone(pids: &[u32]) -> bool {
    let started = Instant::now();
    while pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) {
        if started.elapsed() > Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A listener on the machine's 127.0.0.1 whose connections are made from inside a network
/// namespace: the accepting thread enters the namespace (`setns` changes the calling thread
/// only), so each outgoing socket it creates belongs to it. Stops when dropped.
struct Forward {
    stop: Arc<AtomicBool>,
    port: u16,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forward {
    fn start(port: u16, inside: u16, netns: File) -> Forward {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("forwarding port {port}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns(2) on an open namespace descriptor; it changes this thread alone.
            let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                match TcpStream::connect(("127.0.0.1", inside)) {
                    Ok(server) => splice(client, server),
                    Err(_) => drop(client),
                }
            }
        });
        Forward { stop, port, thread: Some(thread) }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies both ways between `a` and `b` until each side has ended, on two threads.
fn splice(a: TcpStream, b: TcpStream) {
    let pump = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        });
    };
    pump(a.try_clone().unwrap(), b.try_clone().unwrap());
    pump(b, a);
}
