//! The binary's own surface: help, and refusing bad configuration with a clear message.
//! (These tests also make cargo build the binary the end-to-end tests in `tests/` run.)

use std::process::Command;

fn producer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kev-producer"))
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
