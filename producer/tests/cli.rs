//! The binary's own surface: help, and refusing bad configuration with a clear message.
//! (These tests also make cargo build the binary the end-to-end tests in `tests/` run.)

use std::process::Command;

/// The binary with no `KEV_` variables from the caller's environment: every `KEV_` variable is
/// a setting, so a stray one would be refused and the test would not test what it says.
fn producer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kev-producer"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KEV_")) {
        c.env_remove(k);
    }
    c
}

#[test]
fn help_names_the_commands() {
    let out = producer().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("replay"), "{text}");
    assert!(text.contains("--embedded"), "{text}");
}

#[test]
fn unknown_config_key_is_refused_by_name() {
    let out = producer().args(["--set", "kafka.bootstrap=x", "replay", "x.json"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bootstrap"), "{err}");
}

#[test]
fn bad_leader_timings_are_refused_with_the_reason() {
    let out = producer()
        .args([
            "--set",
            "leader_election.enabled=true",
            "--set",
            "leader_election.renew_deadline_s=20",
            "replay",
            "x.json",
        ])
        .env("KEV_HTTP__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("renew_deadline_s"), "{err}");
}

#[test]
fn the_config_file_variable_is_not_taken_for_a_setting() {
    let dir = std::env::temp_dir().join(format!("kev-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kev.toml");
    std::fs::write(&file, "cluster_id = \"from-file\"\n[leader_election]\nenabled = true\nrenew_deadline_s = 99\n")
        .unwrap();
    let out = producer().args(["replay", "x.json"]).env("KEV_CONFIG", &file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // The file was read (its bad timing is what is refused), and KEV_CONFIG itself is no setting.
    assert!(err.contains("renew_deadline_s (99)"), "{err}");
    assert!(!err.contains("unknown field `config`"), "{err}");
}
