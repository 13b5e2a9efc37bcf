//! `qmp serve` as a process: the recorded qemu-storage-daemon 10 conversation of `qsd-command-errors` replayed
//! against it gives the same bytes (argument checks against the schema with QEMU's texts, malformed command
//! objects, unknown commands), a script's answers and events come out as written, `quit` ends the session and
//! the next client is served.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

struct Served {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(script: Option<&str>) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("fake.sock");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qmp"));
    cmd.arg("-s").arg(&socket).arg("serve").stdin(Stdio::null()).stderr(Stdio::null());
    if let Some(script) = script {
        let path = dir.path().join("script.json");
        std::fs::write(&path, script).expect("script");
        cmd.arg("--script").arg(path);
    }
    let child = cmd.spawn().expect("spawn qmp serve");
    qmp_tests::listening::wait_listening(&socket, Duration::from_secs(10), "qmp serve");
    Served { child, socket, _dir: dir }
}

/// Connects to `qmp serve`'s socket (it listens: [`serve`] waited for that).
fn connect(socket: &Path) -> UnixStream {
    UnixStream::connect(socket).expect("connect")
}

/// Reads until `want` bytes arrived (or a second passed with nothing).
fn read_n(stream: &mut UnixStream, want: usize) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while out.len() < want {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

fn corpus(name: &str) -> Vec<(String, String)> {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus")).join(format!("{name}.json"));
    let path = if path.exists() {
        path
    } else {
        PathBuf::from(std::env::var_os("QMP_CORPUS_DIR").expect("corpus not found: set QMP_CORPUS_DIR"))
            .join(format!("{name}.json"))
    };
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    let steps = doc["steps"].as_array().expect("steps");
    let mut pairs = Vec::new();
    let mut send = None;
    for step in steps {
        if let Some(s) = step.get("send").and_then(Value::as_str) {
            send = Some(s.to_owned());
        } else if let (Some(s), Some(r)) = (send.take(), step.get("recv").and_then(Value::as_str)) {
            pairs.push((s, r.to_owned()));
        }
    }
    pairs
}

#[test]
fn recorded_command_errors_are_answered_like_qsd_10() {
    let served = serve(None);
    let mut stream = connect(&served.socket);
    let greeting = read_n(&mut stream, 1);
    assert!(greeting.starts_with(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}"));
    let mut compared = 0;
    for (send, recv) in corpus("qsd-command-errors") {
        // Only this one needs a real block layer (a node to look up).
        if send.ends_with(r#""id":4}"#) {
            continue;
        }
        stream.write_all(send.as_bytes()).expect("write");
        let got = read_n(&mut stream, recv.len());
        assert_eq!(String::from_utf8_lossy(&got), recv, "answer to {send}");
        compared += 1;
    }
    assert_eq!(compared, 11);
}

#[test]
fn script_answers_events_quit_and_the_next_client() {
    let script = r#"{"query-block": {"return": [{"device": "d0"}], "events": [{"event": "X", "data": {"a": 1}}]},
                     "eject": {"error": {"class": "DeviceNotFound", "desc": "Device 'd0' not found"}}}"#;
    let served = serve(Some(script));
    for _ in 0..2 {
        let mut stream = connect(&served.socket);
        read_n(&mut stream, 1);
        stream.write_all(br#"{"execute":"qmp_capabilities"}{"execute":"query-block","id":1}"#).expect("write");
        let got = String::from_utf8(read_n(&mut stream, 120)).expect("utf8");
        let lines: Vec<&str> = got.split("\r\n").collect();
        assert_eq!(lines[0], r#"{"return": {}}"#);
        assert!(
            lines[1].starts_with(r#"{"timestamp": {"seconds": "#)
                && lines[1].ends_with(r#""event": "X", "data": {"a": 1}}"#),
            "{got}"
        );
        assert_eq!(lines[2], r#"{"return": [{"device": "d0"}], "id": 1}"#);
        stream.write_all(br#"{"execute":"eject","id":2}{"execute":"quit","id":3}"#).expect("write");
        let rest = String::from_utf8(read_n(&mut stream, usize::MAX)).expect("utf8");
        assert_eq!(
            rest,
            "{\"id\": 2, \"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'd0' not found\"}}\r\n\
             {\"return\": {}, \"id\": 3}\r\n"
        );
    }
}
