//! Differential test of `qmp_proto::Server` against a real qemu-storage-daemon 10: the same inputs sent to
//! both, on fresh connections, must give the same bytes back after every write (so the same error class,
//! description and id, or lack of one, in the same order).
//!
//! Inputs: every client write of the corpus transcripts whose commands are protocol-level (malformed JSON,
//! malformed command objects, negotiation, id echo, exec-oob without OOB), and a set of malformed inputs the
//! corpus does not hold (parser errors of every kind, nesting beyond QEMU's limit, invalid escapes and UTF-8).
//! Our server answers the only real command used, `query-version`, with the version qsd announced; it knows
//! the command list `query-version` only and rejects the rest itself, as qsd does with unknown commands.
//!
//! The table of results is printed (run with `--nocapture` to see it).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qmp_proto::server::{Event, Server, ServerConfig};
use qmp_tests::{require, servers::QemuServer};
use serde_json::Value;

/// How long qsd must be quiet before a write counts as fully answered.
const QUIET: Duration = Duration::from_millis(150);
/// How long qsd must stay quiet after it has written as much as our server did.
const SETTLE: Duration = Duration::from_millis(20);

struct Case {
    name: String,
    /// Negotiate first (and with OOB?) before the writes.
    negotiate: Option<bool>,
    writes: Vec<Vec<u8>>,
}

fn corpus_dir() -> PathBuf {
    let default = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus")).to_path_buf();
    if default.is_dir() {
        return default;
    }
    std::env::var_os("QMP_CORPUS_DIR").map(PathBuf::from).expect("corpus not found: set QMP_CORPUS_DIR")
}

fn sends(name: &str) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(corpus_dir().join(format!("{name}.json"))).expect("transcript");
    let doc: Value = serde_json::from_str(&text).expect("json");
    doc["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s.get("send").and_then(Value::as_str))
        .map(|s| s.chars().map(|c| u8::try_from(u32::from(c)).expect("latin-1")).collect())
        .collect()
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // Whole transcripts (they negotiate themselves where they do).
    for name in
        ["qsd-negotiation", "qsd-negotiation-plain", "qsd-idless-errors", "qsd-id-types", "qsd-id-inf", "qsd-pipelined"]
    {
        cases.push(Case { name: name.into(), negotiate: None, writes: sends(name) });
    }
    // The protocol-level writes of transcripts whose other commands need a real block layer or machine.
    let errors = sends("qsd-command-errors");
    let keep = [r#""id":1}"#, r#""id":6}"#, r#""id":7}"#, r#""id":8}"#, r#""id":9}"#, r#""id":10}"#];
    let protocol: Vec<Vec<u8>> = errors
        .iter()
        .filter(|w| {
            keep.iter().any(|k| w.ends_with(k.as_bytes())) || w.as_slice() == br#"{"execute":"qmp_capabilities"}"#
        })
        .cloned()
        .collect();
    cases.push(Case { name: "qsd-command-errors (malformed objects)".into(), negotiate: None, writes: protocol });
    let oob = sends("qsys-exec-oob-not-negotiated");
    cases.push(Case {
        name: "qsys-exec-oob-not-negotiated (on qsd 10)".into(),
        negotiate: None,
        writes: oob
            .into_iter()
            .filter(|w| w.starts_with(b"{\"execute\":\"qmp_c") || w.starts_with(b"{\"exec-oob\""))
            .collect(),
    });
    // Malformed inputs beyond the corpus, each on a fresh negotiated connection, then a resync and a command.
    let extra: &[(&str, &[u8])] = &[
        ("missing value in dict", br#"{"a":}"#),
        ("trailing comma in list", b"[1,]"),
        ("wrong closer", b"{]"),
        ("missing colon", br#"{"a" 1}"#),
        ("key not a string", b"{1:2}"),
        ("separator in dict", br#"{"a":1 "b":2}"#),
        ("separator in list", b"[1 2]"),
        ("number then brace", b"1}"),
        ("lone minus", b"- "),
        ("leading zero", b"01"),
        ("dot without digits", b"1. "),
        ("exponent without digits", b"1e "),
        ("bad keyword", b"nul "),
        ("true is not an object", b"true "),
        ("short unicode escape", br#""\u12""#),
        ("lone surrogate", br#""\ud800""#),
        ("noncharacter escape", br#""\uffff""#),
        ("nul escape", br#"{"execute":"query-version","id":"\u0000"}"#),
        ("invalid escape", br#""\x""#),
        ("invalid UTF-8", b"\"\xc3(\""),
        ("overlong UTF-8", b"\"\xc0\xaf\""),
        ("modified UTF-8 nul", b"{\"execute\":\"query-version\",\"id\":\"a\xc0\x80b\"}"),
        ("control char in string", b"\"a\x02\""),
        ("uppercase letter", b"X"),
        ("nul byte", b"\x00"),
        ("two 0xFF", b"\xff\xff"),
        ("tab in recovery", b"garbage\t{"),
        ("nesting 1025", &[b'['; 1025]),
        ("nesting 1024 closed", &{
            let mut v = vec![b'['; 1024];
            v.extend(vec![b']'; 1024]);
            v
        }),
        ("arguments null", br#"{"execute":"query-version","arguments":null,"id":1}"#),
        ("execute null", br#"{"execute":null,"id":2}"#),
        ("id only object", br#"{"id":{"execute":"x"}}"#),
        ("empty object", b"{}"),
        ("exec-oob and execute", br#"{"exec-oob":"query-version","execute":"query-version"}"#),
        ("unknown command", br#"{"execute":"no-such","id":[null]}"#),
        ("float ids", br#"{"execute":"query-version","id":0.1}{"execute":"query-version","id":-0}{"execute":"query-version","id":1E-7}"#),
        ("big ints", br#"{"execute":"query-version","id":-9223372036854775809}{"execute":"query-version","id":123456789012345678901234567890}"#),
        ("single quotes", br#"{'execute':'query-version','id':'it\'s "q"'}"#),
        ("escapes in id", br#"{"execute":"query-version","id":"\/\b\f\u007f\u0080\uD83D\uDE00"}"#),
    ];
    for (name, input) in extra {
        cases.push(Case {
            name: (*name).into(),
            negotiate: Some(false),
            writes: vec![input.to_vec(), b"\x01".to_vec(), br#"{"execute":"query-version","id":"after"}"#.to_vec()],
        });
    }
    cases.push(Case {
        name: "qmp_capabilities arguments before negotiation".into(),
        negotiate: None,
        writes: vec![
            br#"{"execute":"qmp_capabilities","arguments":{"enable":[1]},"id":1}"#.to_vec(),
            br#"{"execute":"qmp_capabilities","arguments":{"enable":"oob"},"id":2}"#.to_vec(),
            br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob","bogus"]},"id":3}"#.to_vec(),
            br#"{"execute":"qmp_capabilities","arguments":{"x":1},"id":4}"#.to_vec(),
            br#"{"exec-oob":"qmp_capabilities","id":5}"#.to_vec(),
            br#"garbage "#.to_vec(),
            br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":6}"#.to_vec(),
            br#"{"exec-oob":"qmp_capabilities","id":7}"#.to_vec(),
            br#"{"exec-oob":"no-such","id":8}"#.to_vec(),
            br#"{"exec-oob":7,"id":9}"#.to_vec(),
            br#"{"exec-oob":"query-version","execute":"query-version","id":10}"#.to_vec(),
        ],
    });
    cases
}

/// Everything qsd writes in answer to one input: until what it wrote looks `complete` (as long as what our server
/// wrote for the same input; the greeting's line end) and it has then been quiet for [`SETTLE`], or, short of
/// that, until it has been quiet for [`QUIET`]. Waiting the whole [`QUIET`] only where the answers differ or
/// where there is none keeps the test fast; bytes qsd writes after a longer pause than [`SETTLE`] are read with
/// the next input's answer, so they still show as a difference there.
fn read_answer(stream: &mut UnixStream, complete: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let started = Instant::now();
    loop {
        let quiet = if complete(&out) { SETTLE } else { QUIET };
        stream.set_read_timeout(Some(quiet)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("read from qsd: {e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "qsd never went quiet");
    }
    out
}

/// Feeds one write to our server, answering `query-version`, and returns what it wrote.
fn ours(server: &mut Server, input: &[u8], version: &str) -> Vec<u8> {
    server.handle_input(input);
    loop {
        let mut answered = false;
        while let Some(ev) = server.poll_event() {
            if let Event::Command(cmd) = ev {
                assert_eq!(cmd.name(), "query-version", "only listed commands reach the caller");
                server.reply_json(cmd.token, Ok(version)).expect("reply");
                answered = true;
            }
        }
        if !answered {
            break;
        }
    }
    let mut out = Vec::new();
    server.poll_transmit(&mut out);
    out
}

/// A short printable summary of replies: `class: desc [id]` or `return [id]`, one per message.
fn summary(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let parts: Vec<String> = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) => {
                let id = v.get("id").map_or("no id".to_string(), |i| format!("id {i}"));
                if let Some(e) = v.get("error") {
                    format!("{}: {} ({id})", e["class"].as_str().unwrap_or("?"), e["desc"].as_str().unwrap_or("?"))
                } else if v.get("QMP").is_some() {
                    "greeting".into()
                } else {
                    format!("return ({id})")
                }
            }
            Err(_) => format!("not JSON: {}", l.chars().take(60).collect::<String>()),
        })
        .collect();
    if parts.is_empty() {
        "(nothing)".into()
    } else {
        parts.join("; ")
    }
}

fn printable(input: &[u8]) -> String {
    let s: String = input.escape_ascii().to_string();
    if s.len() > 60 {
        format!("{}... ({} bytes)", &s[..57], input.len())
    } else {
        s
    }
}

#[test]
fn malformed_input_gets_the_same_answer_as_qemu_storage_daemon_10() {
    let qsd = require!(QemuServer::storage_daemon());
    let mut rows = Vec::new();
    let mut mismatches = 0;
    for case in cases() {
        let mut stream = qsd.connect().expect("connect");
        let greeting = read_answer(&mut stream, |out| out.ends_with(b"\r\n"));
        let line = greeting.split(|&b| b == b'\r').next().expect("greeting");
        let g: Value = serde_json::from_slice(line).expect("greeting json");
        let v = &g["QMP"]["version"];
        let (major, minor, micro) = (
            v["qemu"]["major"].as_u64().unwrap(),
            v["qemu"]["minor"].as_u64().unwrap(),
            v["qemu"]["micro"].as_u64().unwrap(),
        );
        let package = v["package"].as_str().unwrap().to_owned();
        let caps: Vec<String> =
            g["QMP"]["capabilities"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
        let version = serde_json::to_string(&package).map(|p| {
            format!(r#"{{"qemu": {{"major": {major}, "minor": {minor}, "micro": {micro}}}, "package": {p}}}"#)
        });
        let version = version.expect("version text");
        let cfg = ServerConfig::qmp()
            .version(major, minor, micro, package.clone())
            .capabilities(caps)
            .command("query-version")
            .reject_unlisted(true);
        let mut server = Server::new(cfg);
        let mut our_greeting = Vec::new();
        server.poll_transmit(&mut our_greeting);
        assert_eq!(String::from_utf8_lossy(&our_greeting), String::from_utf8_lossy(&greeting), "greeting");
        let mut writes = case.writes.clone();
        if let Some(oob) = case.negotiate {
            let neg: &[u8] = if oob {
                br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#
            } else {
                br#"{"execute":"qmp_capabilities"}"#
            };
            writes.insert(0, neg.to_vec());
        }
        for input in &writes {
            stream.write_all(input).expect("write to qsd");
            let mine = ours(&mut server, input, &version);
            let theirs = read_answer(&mut stream, |out| !mine.is_empty() && out.len() >= mine.len());
            let same = theirs == mine;
            if !same {
                mismatches += 1;
                eprintln!(
                    "MISMATCH in {}: input {}\n  qsd:  {}\n  ours: {}",
                    case.name,
                    printable(input),
                    String::from_utf8_lossy(&theirs).escape_debug(),
                    String::from_utf8_lossy(&mine).escape_debug()
                );
            }
            rows.push(format!(
                "| {} | `{}` | {} | {} |",
                case.name,
                printable(input).replace('|', "\\|"),
                summary(&theirs).replace('|', "\\|"),
                if same { "same bytes" } else { "DIFFERENT" }
            ));
        }
    }
    // Where QEMU 7.2 is the only storage daemon installed, the same inputs get the same answers from it too.
    let qsd_version = qsd.version();
    println!("| case | input | qsd {qsd_version} answered | our Server |\n|---|---|---|---|");
    for row in &rows {
        println!("{row}");
    }
    println!("{} writes, {} identical, {} different", rows.len(), rows.len() - mismatches, mismatches);
    assert_eq!(
        mismatches, 0,
        "our server answered {mismatches} writes differently from qsd {qsd_version} (see stderr)"
    );
}
