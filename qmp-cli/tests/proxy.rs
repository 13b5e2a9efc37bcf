//! `qmp proxy` against a real qemu-storage-daemon 10: the policy decides per unix peer uid (a client of another
//! uid, run with setpriv as `nobody`, is refused before any greeting; an admitted one is limited to its rule),
//! the socket's mode follows the policy, and an invalid policy stops the proxy before it starts.
#![cfg(feature = "proxy")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use qmp_tests::require;
use qmp_tests::servers::QemuServer;

const NOBODY: u32 = 65534;

fn qmp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qmp"))
}

/// `qmp -s SOCKET ARGS...` run as `nobody`.
fn as_nobody(socket: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"), "--clear-groups".into()])
        .arg(env!("CARGO_BIN_EXE_qmp"))
        .args(["-t", "3", "-s"])
        .arg(socket)
        .args(args)
        .output()
        .expect("setpriv")
}

/// A proxy child, killed when dropped.
struct ProxyProcess(Child);

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_proxy(upstream: impl AsRef<std::ffi::OsStr>, listen: &Path, policy: &str, extra: &[&str]) -> ProxyProcess {
    let policy_path = listen.with_extension("toml");
    std::fs::write(&policy_path, policy).expect("policy");
    let child = qmp()
        .args(["proxy", "--upstream"])
        .arg(upstream)
        .arg("--listen")
        .arg(listen)
        .arg("--policy")
        .arg(&policy_path)
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .expect("qmp proxy");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listen.exists() {
        assert!(Instant::now() < deadline, "the proxy did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    ProxyProcess(child)
}

/// A directory others may enter (the proxy's socket decides who connects).
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

#[test]
fn the_policy_decides_per_peer_uid() {
    let server = require!(QemuServer::storage_daemon());
    let dir = shared_dir();
    let listen = dir.path().join("proxy.sock");
    let policy = format!(
        "[[rule]]\nname = \"root\"\nuid = 0\nprofile = \"full\"\n\n\
         [[rule]]\nname = \"other-user\"\nuid = {}\nprofile = \"read-only\"\n",
        NOBODY - 1
    );
    let _proxy = start_proxy(server.socket_path(), &listen, &policy, &[]);
    let mode = std::fs::metadata(&listen).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "a policy admitting other users opens the socket to them");

    // nobody matches no rule: refused before any greeting (the client sees the connection closed).
    let refused = as_nobody(&listen, &["exec", "query-status"]);
    assert_eq!(refused.status.code(), Some(3), "{}", String::from_utf8_lossy(&refused.stderr));
    // root (us) matches the first rule.
    let ok = qmp().arg("-s").arg(&listen).args(["exec", "query-version"]).output().expect("qmp");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn a_read_only_user_runs_queries_and_nothing_else() {
    let server = require!(QemuServer::storage_daemon());
    let dir = shared_dir();
    let listen = dir.path().join("proxy.sock");
    let policy = format!("[[rule]]\nname = \"viewer\"\nuid = {NOBODY}\nprofile = \"read-only\"\n");
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.to_str().expect("utf-8 path");
    let _proxy = start_proxy(server.socket_path(), &listen, &policy, &["--audit", audit_arg, "--audit-arguments"]);
    let query = as_nobody(&listen, &["exec", "query-named-block-nodes"]);
    assert!(query.status.success(), "{}", String::from_utf8_lossy(&query.stderr));
    let add = as_nobody(&listen, &["exec", "blockdev-add", "driver=null-co", "node-name=n0"]);
    assert_eq!(add.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&add.stderr)
            .contains("GenericError: The command blockdev-add is denied by the proxy policy 'viewer'"),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let missing = as_nobody(&listen, &["exec", "query-no-such-thing"]);
    assert_eq!(missing.status.code(), Some(1));
    // One audit line per command: who, which rule, what, how it ended.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let summary: Vec<(&str, &str)> =
        lines.iter().map(|l| (l["command"].as_str().unwrap_or(""), l["result"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        summary,
        [("query-named-block-nodes", "ok"), ("blockdev-add", "denied"), ("query-no-such-thing", "CommandNotFound")]
    );
    for line in &lines {
        assert_eq!(
            (line["identity"]["uid"].as_u64(), line["rule"].as_str()),
            (Some(u64::from(NOBODY)), Some("viewer"))
        );
        assert!(line["duration_us"].is_u64() && line["time"].is_f64(), "{line}");
    }
    assert_eq!(lines[1]["arguments"], serde_json::json!({"driver": "null-co", "node-name": "n0"}));
}

#[test]
fn without_a_policy_the_socket_is_owner_only() {
    let server = require!(QemuServer::storage_daemon());
    let dir = shared_dir();
    let listen = dir.path().join("proxy.sock");
    let _proxy = ProxyProcess(
        qmp()
            .args(["proxy", "--upstream"])
            .arg(server.socket_path())
            .arg("--listen")
            .arg(&listen)
            .stderr(Stdio::null())
            .spawn()
            .expect("qmp proxy"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listen.exists() {
        assert!(Instant::now() < deadline, "the proxy did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(std::fs::metadata(&listen).expect("socket").permissions().mode() & 0o777, 0o600);
    let out = qmp().arg("-s").arg(&listen).args(["exec", "query-version"]).output().expect("qmp");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_invalid_policy_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("bad.toml");
    std::fs::write(&policy, "[[rule]]\nname = \"x\"\nallow = [\"query-*\"]\ndeny = [\"stop\"]\n").expect("write");
    let out = qmp()
        .args(["proxy", "--upstream", "/nonexistent/qmp.sock", "--listen"])
        .arg(dir.path().join("p.sock"))
        .arg("--policy")
        .arg(&policy)
        .output()
        .expect("qmp proxy");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml") && stderr.contains("rule 'x'") && stderr.contains("only one of"), "{stderr}");
    assert!(!dir.path().join("p.sock").exists());
}

/// A plain client of the proxy: one CRLF line per message.
struct Line {
    stream: std::os::unix::net::UnixStream,
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
}

impl Line {
    fn connect(path: &Path) -> Line {
        let stream = std::os::unix::net::UnixStream::connect(path).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Line { reader: std::io::BufReader::new(stream.try_clone().expect("clone")), stream }
    }

    fn ask(&mut self, text: &str) -> String {
        use std::io::{BufRead, Write};
        self.stream.write_all(text.as_bytes()).expect("write");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read");
        line
    }
}

#[test]
fn a_tcp_upstream_held_across_a_restart_and_reconnected_on_sighup() {
    let mut first = require!(QemuServer::storage_daemon_tcp());
    let address = first.tcp_monitor_address().expect("the TCP monitor's address");
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = dir.path().join("proxy.sock");
    let policy = "[[rule]]\nname = \"all\"\nprofile = \"full\"\n";
    // A minute between attempts: only SIGHUP makes it reconnect within the test.
    let hold = ["--on-upstream-loss", "hold", "--reconnect-min-delay", "60", "--reconnect-max-delay", "60"];
    let proxy = start_proxy(format!("tcp:{address}"), &listen, policy, &hold);
    let mut client = Line::connect(&listen);
    let greeting = client.ask("");
    assert!(greeting.contains("\"major\": 10"), "QEMU's greeting, over TCP: {greeting}");
    assert_eq!(client.ask(r#"{"execute":"qmp_capabilities"}"#), "{\"return\": {}}\r\n");
    assert!(client.ask(r#"{"execute":"query-version","id":1}"#).starts_with("{\"return\": {\"qemu\""));

    first.kill().expect("kill QEMU");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Until the proxy notices, a command meets the dead connection ("QEMU is gone"); then it is refused.
        let reply = client.ask(r#"{"execute":"query-version","id":2}"#);
        assert!(reply.starts_with("{\"id\": 2, \"error\": {\"class\": \"GenericError\""), "{reply}");
        if reply.contains("QEMU is not connected: the proxy is reconnecting") {
            break;
        }
        assert!(Instant::now() < deadline, "the proxy did not notice: {reply}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let port = address.rsplit_once(':').expect("HOST:PORT").1.to_owned();
    let _second = require!(QemuServer::start_with_extra_args(qmp_tests::servers::ServerKind::StorageDaemon, |_| {
        ["--chardev", &format!("socket,host=127.0.0.1,port={port},server=on,wait=off,id=c1"), "--monitor", "chardev=c1"]
            .map(Into::into)
            .to_vec()
    }));
    let hangup = Instant::now();
    rustix::process::kill_process(rustix::process::Pid::from_child(&proxy.0), rustix::process::Signal::HUP)
        .expect("SIGHUP");
    loop {
        let reply = client.ask(r#"{"execute":"query-version","id":3}"#);
        if reply.starts_with("{\"return\": {\"qemu\"") {
            break;
        }
        assert!(hangup.elapsed() < Duration::from_secs(10), "not reconnected after SIGHUP: {reply}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
