//! `qmp proxy` against a real qemu-storage-daemon 10: the policy decides per unix peer uid (a client of another
//! uid, run with setpriv as `nobody`, is refused before any greeting; an admitted one is limited to its rule),
//! the socket's mode follows the policy, and an invalid policy stops the proxy before it starts. Over TCP:
//! TLS clients need a certificate of the client CA (and a rule naming it), plain TCP works on loopback with a
//! warning, and is refused anywhere else before anything starts.
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
    qmp_tests::listening::wait_listening(listen, Duration::from_secs(10), "the proxy");
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
    qmp_tests::listening::wait_listening(&listen, Duration::from_secs(10), "the proxy");
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

/// A proxy child serving TCP (`--listen-tcp 127.0.0.1:0` and `args`), its address read from its start-up line,
/// and its stderr collected (the lines before the address, then the rest as the proxy writes them).
struct TcpProxy {
    _process: ProxyProcess,
    addr: std::net::SocketAddr,
    startup: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

fn start_tcp_proxy(upstream: &Path, policy: &str, args: &[&str]) -> (tempfile::TempDir, TcpProxy) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy).expect("policy");
    let mut child = qmp()
        .args(["proxy", "--upstream"])
        .arg(upstream)
        .args(["--listen-tcp", "127.0.0.1:0", "--policy"])
        .arg(&policy_path)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("qmp proxy");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let process = ProxyProcess(child);
    let mut startup = String::new();
    let addr = loop {
        let line = lines.next().and_then(Result::ok).unwrap_or_else(|| panic!("the proxy stopped: {startup}"));
        startup.push_str(&line);
        startup.push('\n');
        if let Some(rest) = line.split(" served on ").nth(1) {
            break rest.split(' ').next().and_then(|a| a.parse().ok()).expect("an address");
        }
    };
    // The warning (if any) comes right after the start-up line.
    if args.contains(&"--insecure-tcp") {
        startup.push_str(&lines.next().and_then(Result::ok).unwrap_or_default());
    }
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut all = sink.lock().expect("lock");
            all.push_str(&line);
            all.push('\n');
        }
    });
    (dir, TcpProxy { _process: process, addr, startup, stderr })
}

#[test]
fn tcp_clients_need_a_certificate_of_the_client_ca() {
    use qmp_tests::tls::{self, TlsClient};
    let server = require!(QemuServer::storage_daemon());
    let policy = "[[rule]]\nname = \"alice\"\ncommon_name = \"alice\"\nallow = [\"query-*\"]\n";
    let (cert, key, ca) = (tls::data("server.pem"), tls::data("server.key"), tls::data("ca.pem"));
    let tls_args = ["--tls-cert", path_str(&cert), "--tls-key", path_str(&key), "--tls-client-ca", path_str(&ca)];
    let (_dir, proxy) = start_tcp_proxy(server.socket_path(), policy, &tls_args);
    assert!(proxy.startup.contains("(TLS, client certificates required)"), "{}", proxy.startup);

    // alice's certificate: QEMU's greeting, then what her rule allows.
    let mut alice = TlsClient::connect(proxy.addr, Some("client"));
    let greeting = alice.line().expect("a greeting");
    assert!(greeting.starts_with("{\"QMP\": {\"version\": {\"qemu\":"), "{greeting}");
    alice.send("{\"execute\": \"qmp_capabilities\"}\r\n").expect("send");
    assert_eq!(alice.line().expect("negotiated"), "{\"return\": {}}\r\n");
    alice.send("{\"execute\": \"query-version\", \"id\": \"v\"}\r\n").expect("send");
    let version: serde_json::Value = serde_json::from_str(&alice.line().expect("reply")).expect("JSON");
    assert!(version["return"]["qemu"]["major"].is_u64() && version["id"] == "v", "{version}");
    alice.send("{\"execute\": \"stop\", \"id\": 2}\r\n").expect("send");
    assert_eq!(
        alice.line().expect("reply"),
        "{\"id\": 2, \"error\": {\"class\": \"GenericError\", \"desc\": \"The command stop is denied by the proxy \
         policy 'alice'\"}}\r\n"
    );

    // A certificate of another CA: refused during the handshake, never greeted.
    let mut other = TlsClient::connect(proxy.addr, Some("other-client"));
    let err = other.read_to_end().expect_err("refused");
    assert!(err.to_string().contains("UnknownCA"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.stderr.lock().expect("lock").contains("TLS client refused") {
        assert!(Instant::now() < deadline, "no log line for the refusal");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn plain_tcp_on_loopback_works_and_is_warned_about() {
    let server = require!(QemuServer::storage_daemon());
    let policy = "[[rule]]\nname = \"local\"\nprofile = \"read-only\"\n";
    let (_dir, proxy) = start_tcp_proxy(server.socket_path(), policy, &["--insecure-tcp"]);
    assert!(proxy.startup.contains("(plain TCP)"), "{}", proxy.startup);
    assert!(
        proxy
            .startup
            .contains("WARNING: plain TCP without TLS (--insecure-tcp): any local user or process can connect"),
        "{}",
        proxy.startup
    );
    let out = qmp().args(["-t", "5", "--tcp", &proxy.addr.to_string(), "exec", "query-version"]).output().expect("qmp");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"qemu\""));
}

#[test]
fn tcp_without_tls_off_loopback_or_without_tls_files_refuses_to_start() {
    // The upstream does not exist: the proxy must refuse before it tries to connect (exit 2, not 3).
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[[rule]]\nname = \"all\"\nprofile = \"read-only\"\n").expect("write");
    let proxy = |args: &[&str]| {
        qmp()
            .args(["proxy", "--upstream", "/nonexistent/qmp.sock", "--policy", path_str(&policy)])
            .args(args)
            .output()
            .expect("qmp proxy")
    };
    for (args, why) in [
        (&["--listen-tcp", "0.0.0.0:0", "--insecure-tcp"][..], "plain TCP is served on a loopback address only"),
        (&["--listen-tcp", "127.0.0.1:0"][..], "--listen-tcp 127.0.0.1:0 needs TLS: --tls-cert, --tls-key"),
    ] {
        let out = proxy(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
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
