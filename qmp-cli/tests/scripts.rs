//! `qmp` as a script sees it: a closed stdout, a server that quits, the errors that say what is wrong (within
//! the connect timeout), `--help`, completion scripts and the man page.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use support::{qmp, raw_command, Qemu, TempDir};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `qmp ARGS | head -1` under bash with pipefail; returns the pipeline's output and both statuses.
fn into_head(args: &str) -> (Output, String) {
    let script = format!(
        "set -o pipefail; '{}' {args} | head -1; echo \"status ${{PIPESTATUS[*]}}\"",
        env!("CARGO_BIN_EXE_qmp")
    );
    let out = Command::new("bash").args(["-c", &script]).output().expect("bash");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

#[test]
fn exec_into_a_closed_pipe_exits_0_quietly() {
    let server = require!(QemuServer::storage_daemon());
    let sock = server.socket_path().to_str().expect("utf-8 path");
    let (out, text) = into_head(&format!("-s {sock} exec query-qmp-schema"));
    assert_eq!(text, "[\nstatus 0 0\n", "{out:?}");
    assert_eq!(stderr(&out), "", "no panic, no message");
}

#[test]
fn events_into_a_closed_pipe_ends_without_waiting_for_another_event() {
    let dir = TempDir::new("events-pipe");
    let sockets = [dir.path().join("a.sock"), dir.path().join("b.sock")];
    let Some(qemu) = Qemu::system(&sockets) else { return };
    // Two events come (STOP, RESUME), then nothing: qmp must notice that head has gone without a third.
    let trigger_sock = sockets[1].clone();
    let trigger = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        raw_command(&trigger_sock, r#"{"execute": "stop"}"#);
        raw_command(&trigger_sock, r#"{"execute": "cont"}"#);
    });
    let start = Instant::now();
    let (out, text) = into_head(&format!("-s {} events", qemu.socket(0)));
    trigger.join().expect("trigger");
    assert!(text.starts_with("{\"event\":\"STOP\""), "{text}");
    assert!(text.ends_with("status 0 0\n"), "{text} {out:?}");
    assert_eq!(stderr(&out), "");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
}

#[test]
fn events_ends_with_0_when_the_server_quits() {
    let dir = TempDir::new("events-quit");
    let sockets = [dir.path().join("a.sock"), dir.path().join("b.sock")];
    let Some(mut qemu) = Qemu::system(&sockets) else { return };
    let events = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["-s", qemu.socket(0), "events"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(500)); // let it connect; a late connect fails the test loudly
    raw_command(&sockets[1], r#"{"execute": "quit"}"#);
    assert!(qemu.wait_exit(Duration::from_secs(30)), "QEMU did not quit");
    let out = events.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("SHUTDOWN"), "{out:?}");
}

#[test]
fn another_client_holding_the_monitor_is_named_within_the_timeout() {
    let server = require!(QemuServer::storage_daemon());
    let _holder = server.connect().expect("first client");
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let out = qmp(&["-t", "1", "-s", server.socket_path().to_str().expect("utf-8"), "exec", "query-version"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stderr(&out).contains("another client probably holds this monitor"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn ga_pointed_at_a_qmp_monitor_says_so() {
    let server = require!(QemuServer::storage_daemon());
    let start = Instant::now();
    let out = qmp(&["--ga", "-t", "5", "-s", server.socket_path().to_str().expect("utf-8"), "exec", "guest-ping"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stderr(&out).contains("is a QMP monitor, not a guest agent"), "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
}

#[test]
fn qmp_pointed_at_a_guest_agent_suggests_ga() {
    let server = require!(QemuServer::guest_agent());
    let out = qmp(&["-t", "1", "-s", server.socket_path().to_str().expect("utf-8"), "exec", "query-version"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stderr(&out).contains("no QMP greeting within 1s") && stderr(&out).contains("--ga"), "{}", stderr(&out));
}

#[test]
fn a_peer_that_is_not_a_qmp_server_is_named() {
    use qmp_tests::fake_server::{FakeServer, Step};
    let mut server = FakeServer::spawn(vec![Step::Send(b"{\"hello\": \"world\"}\n".to_vec()), Step::Silence]);
    let out = qmp(&["-t", "5", "-s", server.socket_path().to_str().expect("utf-8"), "exec", "query-version"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stderr(&out).contains("is not a QMP server"), "{}", stderr(&out));
    drop(server.join());
}

#[test]
fn paths_that_are_not_sockets_are_named() {
    let dir = TempDir::new("not-sockets");
    let file = dir.path().join("plain");
    std::fs::write(&file, "x").expect("write");
    let cases = [
        (dir.path().to_path_buf(), "is a directory, not a socket"),
        (file, "is a regular file, not a socket"),
        (dir.path().join("missing.sock"), "no such socket"),
    ];
    for (path, expected) in cases {
        let out = qmp(&["-s", path.to_str().expect("utf-8"), "exec", "query-version"]);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert!(stderr(&out).contains(expected), "{path:?}: {}", stderr(&out));
    }
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let out = qmp(&["-s", stale.to_str().expect("utf-8"), "exec", "query-version"]);
    assert!(stderr(&out).contains("nobody is listening"), "{}", stderr(&out));
}

#[test]
fn help_shows_examples_and_exit_statuses_and_subcommands_only_their_options() {
    let help = String::from_utf8(qmp(&["--help"]).stdout).expect("utf-8");
    assert!(help.contains("Examples:") && help.contains("qmp -s /run/vm.qmp shell"), "{help}");
    assert!(help.contains("Exit status:") && help.contains("3  connection error"), "{help}");
    for sub in ["events", "demo", "completions"] {
        let help = String::from_utf8(qmp(&[sub, "--help"]).stdout).expect("utf-8");
        assert!(!help.contains("--socket") && !help.contains("--ga"), "{sub}: {help}");
    }
    let out = qmp(&["-s", "/tmp/x.sock", "demo"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn completions_and_man_page_come_from_the_same_definitions() {
    let bash = qmp(&["completions", "bash"]);
    assert!(bash.status.success());
    let bash = String::from_utf8(bash.stdout).expect("utf-8");
    assert!(bash.contains("_qmp()") && bash.contains("--socket") && bash.contains("events"), "{bash}");
    let zsh = String::from_utf8(qmp(&["completions", "zsh"]).stdout).expect("utf-8");
    assert!(zsh.starts_with("#compdef qmp"), "{zsh}");
    let man = qmp(&["man"]);
    assert!(man.status.success());
    let man = String::from_utf8(man.stdout).expect("utf-8");
    assert!(man.contains(".TH qmp") && man.contains("Exit status:") && man.contains("completions"), "{man}");
}
