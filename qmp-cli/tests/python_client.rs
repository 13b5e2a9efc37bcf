//! A real client we did not write: Python's `qemu.qmp` (and its `qmp-shell`) against `qmp serve`.
//!
//! The virtualenv holding qemu.qmp is found through `$QMP_TEST_PYTHON_VENV` (`.ci/run` creates it in
//! `target/venv`). Without it the test prints `SKIPPED:`, or fails under `QMP_TEST_REQUIRE_ALL=1`.
//! `tests/python/qemu_qmp_client.py` connects, negotiates (qemu.qmp enables oob), runs commands, receives
//! STOP/RESUME events and QEMU's errors, and runs an OOB command, over a unix socket and over TCP
//! (`qmp --tcp 127.0.0.1:0 serve`); `qmp-shell` runs a few commands through a pipe.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const VENV_ENV: &str = "QMP_TEST_PYTHON_VENV";

struct Served {
    child: Child,
    /// The unix socket's path, or `tcp:HOST:PORT`.
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `qmp serve` with a script, on a unix socket in a temporary directory or, with `tcp`, on a free port of
/// 127.0.0.1 (read from the address it prints on stderr).
fn serve(tcp: bool) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("fake.sock");
    let script = dir.path().join("script.json");
    std::fs::write(&script, r#"{"x-ping": {"return": {"pong": true}, "oob": true}}"#).expect("script");
    let mut command = Command::new(env!("CARGO_BIN_EXE_qmp"));
    if tcp {
        command.args(["--tcp", "127.0.0.1:0"]).stderr(Stdio::piped());
    } else {
        command.arg("-s").arg(&socket).stderr(Stdio::null());
    }
    let mut child =
        command.arg("serve").arg("--script").arg(&script).stdin(Stdio::null()).spawn().expect("spawn qmp serve");
    if tcp {
        let mut line = String::new();
        BufReader::new(child.stderr.take().expect("stderr")).read_line(&mut line).expect("read stderr");
        let address = line.trim().rsplit_once(" on ").map(|(_, a)| a.to_owned());
        let address = address.filter(|a| a.starts_with("tcp:")).unwrap_or_else(|| panic!("no address in {line:?}"));
        return Served { child, address, _dir: dir };
    }
    qmp_tests::listening::wait_listening(&socket, Duration::from_secs(10), "qmp serve");
    Served { child, address: socket.to_str().expect("utf-8 path").to_owned(), _dir: dir }
}

/// The virtualenv with qemu.qmp, or `None` after a loud skip (a failure under QMP_TEST_REQUIRE_ALL=1).
fn venv() -> Option<PathBuf> {
    let found = std::env::var_os(VENV_ENV).map(PathBuf::from).filter(|v| v.join("bin/python").exists());
    if found.is_none() {
        let why = format!("${VENV_ENV} does not name a virtualenv with qemu.qmp (.ci/run creates target/venv)");
        assert!(!qmp_tests::servers::require_all(), "{why}, and QMP_TEST_REQUIRE_ALL=1 makes that a failure");
        eprintln!("SKIPPED: {}: {why}", std::thread::current().name().unwrap_or("?"));
    }
    found
}

/// Runs tests/python/qemu_qmp_client.py against `qmp serve` and checks what it printed.
fn run_python_client(tcp: bool) {
    let Some(venv) = venv() else { return };
    let served = serve(tcp);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/qemu_qmp_client.py");
    let out = Command::new(venv.join("bin/python")).arg(script).arg(&served.address).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "qemu.qmp client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let transport = if tcp { "transport: tcp" } else { "transport: unix" };
    for line in [
        transport,
        "events: STOP, RESUME",
        "Parameter 'node-name' is missing",
        "oob: x-ping answered out of band",
        "ok",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn qemu_qmp_connects_negotiates_runs_commands_events_errors_and_oob() {
    run_python_client(false);
}

#[test]
fn qemu_qmp_over_tcp_against_qmp_serve_tcp() {
    run_python_client(true);
}

#[test]
fn qmp_shell_runs_commands_through_a_pipe() {
    let Some(venv) = venv() else { return };
    let served = serve(false);
    let mut shell = Command::new(venv.join("bin/python"))
        .arg(venv.join("bin/qmp-shell"))
        .arg(&served.address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qmp-shell");
    shell
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"query-status\nstop\nquery-status\nblockdev-del\nblockdev-del node-name=n0\nno-such\n")
        .expect("write");
    let out = shell.wait_with_output().expect("qmp-shell output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        r#"{"return": {"status": "running", "running": true}}"#,
        r#"{"return": {"status": "paused", "running": false}}"#,
        r#"{"error": {"class": "GenericError", "desc": "Parameter 'node-name' is missing"}}"#,
        r#"{"error": {"class": "CommandNotFound", "desc": "The command no-such has not been found"}}"#,
    ] {
        assert!(stdout.contains(line), "missing {line} in:\n{stdout}");
    }
}
