//! The `qmp` binary against real servers started by the tests: exec, events, shell, demo, exit statuses.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use serde_json::Value;

fn qmp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qmp")).args(args).output().expect("run qmp")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn exec_prints_json_and_key_values_build_arguments() {
    let server = require!(QemuServer::storage_daemon());
    let sock = server.socket_path().to_str().expect("utf-8 path");
    let out = qmp(&["-s", sock, "exec", "query-version"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["qemu"]["major"], server.version().major);

    let out = qmp(&["-s", sock, "-c", "exec", "blockdev-add", "driver=null-co", "node-name=n0", "size=4096"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "{}");
    let out = qmp(&["-s", sock, "exec", "query-named-block-nodes", r#"{"flat": true}"#]);
    let nodes: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(nodes[0]["node-name"], "n0");
}

#[test]
fn exit_statuses() {
    let server = require!(QemuServer::storage_daemon());
    let sock = server.socket_path().to_str().expect("utf-8 path");
    let out = qmp(&["-s", sock, "exec", "no-such-command"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("CommandNotFound"));
    let out = qmp(&["-s", sock, "exec", "blockdev-add", "novalue"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = qmp(&["-s", "/nonexistent/qmp.sock", "exec", "query-version"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

#[test]
fn shell_reads_piped_commands_and_shows_events() {
    let server = require!(QemuServer::system());
    let sock = server.socket_path().to_str().expect("utf-8 path");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["-s", sock, "-c", "shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let script = "query-status\nstop\nnope\n{\"exec-oob\": \"query-yank\"}\n# a comment\nquery-status\n";
    child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("every stdout line is JSON")).collect();
    assert_eq!(lines[0]["status"], "running");
    // In arrival order: QEMU sends STOP before the reply to `stop` (see shared/corpus/qsys-events-runstate.json).
    assert_eq!(lines[1]["event"], "STOP");
    assert_eq!(lines[2], serde_json::json!({}));
    assert!(lines[3].is_array(), "query-yank: {}", lines[3]);
    assert_eq!(lines[4]["status"], "paused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("CommandNotFound"));
}

#[test]
fn events_filtered_and_counted() {
    use qmp_tests::fake_server::{event, FakeServer, Step};
    let mut server = FakeServer::spawn(vec![
        Step::SendGreeting,
        Step::AnswerNegotiation,
        Step::Send([event("STOP", None), event("RESUME", None), event("STOP", Some(r#"{"x": 1}"#))].concat()),
        Step::Silence,
    ]);
    let sock = server.socket_path().to_str().expect("utf-8 path").to_owned();
    let out = qmp(&["-s", &sock, "events", "--name", "STOP", "--count", "2"]);
    assert!(out.status.success(), "{out:?}");
    let events: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e["event"] == "STOP"));
    assert_eq!(events[1]["data"], serde_json::json!({"x": 1}));
    assert!(events[0]["timestamp"]["microseconds"].is_i64());
    server.join().expect("script ran");
}

#[test]
fn guest_agent_exec() {
    let server = require!(QemuServer::guest_agent());
    let sock = server.socket_path().to_str().expect("utf-8 path");
    let out = qmp(&["--ga", "-s", sock, "exec", "guest-sync", "id=99"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "99");
}

#[test]
fn demo_runs_against_its_own_daemon() {
    let _ = require!(QemuServer::storage_daemon());
    let out = qmp(&["demo"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("JOB_STATUS_CHANGE"), "{text}");
    assert!(text.contains("CommandNotFound"), "{text}");
    assert!(text.contains("closed"), "{text}");
}
