//! The kev binaries as processes, to be killed like a crashed pod.

use std::path::PathBuf;

/// The path of a binary of this workspace, built by `cargo test --workspace` (the producer
/// package's own integration tests make cargo build it before any test runs). A run of one
/// test file (`cargo test --workspace --test enricher_e2e`) does not rebuild it: run `cargo
/// build --workspace --bins` first, or the test exercises the binary of an older build.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// A command running binary `name`, without the `KEV_` variables of the test's own
/// environment ([`without_kev_env`]). The enricher keeps its topics forever
/// (`KEV_TOPICS__RETENTION_MS=-1`): its records carry the dumps' event times, years old, and
/// Kafka deletes by record time, so the default 7-day retention would delete them within a
/// minute of their writing.
pub fn command(name: &str) -> std::process::Command {
    let mut c = std::process::Command::new(binary(name));
    without_kev_env(&mut c);
    if name == "kev-enricher" {
        c.env("KEV_TOPICS__RETENTION_MS", "-1");
    }
    c
}

/// Removes from `command` every `KEV_` variable it would inherit. The harness's own
/// (`KEV_CACHE_DIR`, `KEV_KAFKA_LIBS`, `KEV_KUBE_BIN`, …) share the binaries' prefix, and the
/// binaries refuse a `KEV_` variable that is no setting: a test sets what a binary is to read.
pub fn without_kev_env(command: &mut std::process::Command) -> &mut std::process::Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("KEV_") {
            command.env_remove(k);
        }
    }
    command
}

/// Runs `command` to its end with its output piped, killed after `limit`. Returns the output,
/// how long it ran, and whether it had to be killed. The pipes are drained while it runs: a
/// child that prints more than a pipe holds (64 KiB) would otherwise block until killed.
pub fn run_to_end(
    mut command: std::process::Command,
    limit: std::time::Duration,
) -> (std::process::Output, std::time::Duration, bool) {
    use std::io::Read;
    use std::process::Stdio;
    let started = std::time::Instant::now();
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("starting a binary");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit && !killed {
            let _ = child.kill();
            killed = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let output = std::process::Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() };
    (output, started.elapsed(), killed)
}
