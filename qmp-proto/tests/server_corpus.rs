//! Replays the client side of the recorded transcripts in `shared/corpus` into our [`Server`] and checks that it
//! writes exactly what the real server wrote, byte for byte.
//!
//! The server answers the protocol itself (greeting, negotiation, parse errors, malformed commands, id echo,
//! guest-sync); commands it hands over are answered by this test with the recorded reply's payload (the
//! payload is the caller's business; its id, framing, member order and escaping are the server's), and
//! recorded events are injected with their recorded timestamps. Payloads are passed as text with every
//! object's members reversed: QEMU writes members by hash bucket, the latest inserted first within a bucket, so
//! the reversed recording is the insertion order QEMU's generated code used (`major, minor, micro`). Every `send` is fed whole, byte by byte and in
//! chunks; all three must give the recorded bytes.

use std::path::{Path, PathBuf};

use qmp_proto::server::{Event, Failure, Server, ServerConfig, Token};
use qmp_proto::Timestamp;
use serde_json::Value;

fn corpus_dir() -> PathBuf {
    let default = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus")).to_path_buf();
    if default.is_dir() {
        return default;
    }
    let dir = std::env::var_os("QMP_CORPUS_DIR").map(PathBuf::from).expect("corpus not found: set QMP_CORPUS_DIR");
    assert!(dir.is_dir(), "QMP_CORPUS_DIR={} is not a directory", dir.display());
    dir
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars().map(|c| u8::try_from(u32::from(c)).expect("latin-1")).collect()
}

enum Step {
    Send(Vec<u8>),
    Recv(Vec<u8>),
}

fn load(name: &str) -> (String, Vec<Step>) {
    let path = corpus_dir().join(format!("{name}.json"));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    let steps = doc["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| match (s.get("send"), s.get("recv")) {
            (Some(Value::String(t)), None) => Step::Send(latin1(t)),
            (None, Some(Value::String(t))) => Step::Recv(latin1(t)),
            _ => panic!("bad step {s}"),
        })
        .collect();
    (doc["server"].as_str().expect("server").to_owned(), steps)
}

/// The greeting's version and capabilities, read from the first recv of a QMP transcript.
fn config_for(name: &str, steps: &[Step]) -> ServerConfig {
    if name.starts_with("qga-") {
        return ServerConfig::guest_agent();
    }
    let Some(Step::Recv(first)) = steps.first() else { panic!("{name}: no greeting") };
    let line = first.split(|&b| b == b'\n').next().expect("line");
    let greeting: Value = serde_json::from_slice(line).expect("greeting json");
    let v = &greeting["QMP"]["version"];
    let q = &v["qemu"];
    let caps: Vec<String> =
        greeting["QMP"]["capabilities"].as_array().expect("caps").iter().map(|c| c.as_str().unwrap().into()).collect();
    ServerConfig::qmp()
        .version(
            q["major"].as_u64().unwrap(),
            q["minor"].as_u64().unwrap(),
            q["micro"].as_u64().unwrap(),
            v["package"].as_str().unwrap(),
        )
        .capabilities(caps)
}

/// `text` (valid JSON) with the members of every object in reverse order.
fn reversed_members(text: &str) -> String {
    fn value(s: &[u8], i: &mut usize, out: &mut String) {
        skip_ws(s, i);
        match s[*i] {
            b'{' => {
                *i += 1;
                let mut members = Vec::new();
                loop {
                    skip_ws(s, i);
                    if s[*i] == b'}' {
                        *i += 1;
                        break;
                    }
                    let mut m = String::new();
                    value(s, i, &mut m); // key
                    skip_ws(s, i);
                    *i += 1; // :
                    m.push_str(": ");
                    value(s, i, &mut m);
                    members.push(m);
                    skip_ws(s, i);
                    if s[*i] == b',' {
                        *i += 1;
                    }
                }
                members.reverse();
                out.push('{');
                out.push_str(&members.join(", "));
                out.push('}');
            }
            b'[' => {
                *i += 1;
                out.push('[');
                let mut first = true;
                loop {
                    skip_ws(s, i);
                    if s[*i] == b']' {
                        *i += 1;
                        break;
                    }
                    if !first {
                        out.push_str(", ");
                    }
                    first = false;
                    value(s, i, out);
                    skip_ws(s, i);
                    if s[*i] == b',' {
                        *i += 1;
                    }
                }
                out.push(']');
            }
            b'"' => {
                let start = *i;
                *i += 1;
                while s[*i] != b'"' {
                    *i += if s[*i] == b'\\' { 2 } else { 1 };
                }
                *i += 1;
                out.push_str(std::str::from_utf8(&s[start..*i]).unwrap());
            }
            _ => {
                let start = *i;
                while *i < s.len() && !b",]} \r\n\t".contains(&s[*i]) {
                    *i += 1;
                }
                out.push_str(std::str::from_utf8(&s[start..*i]).unwrap());
            }
        }
    }
    fn skip_ws(s: &[u8], i: &mut usize) {
        while *i < s.len() && s[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }
    let mut out = String::new();
    value(text.as_bytes(), &mut 0, &mut out);
    out
}

/// The raw text of member `key` of a recorded message.
fn member_text(line: &[u8], key: &str) -> Option<String> {
    let map: std::collections::HashMap<String, Box<serde_json::value::RawValue>> = serde_json::from_slice(line).ok()?;
    map.get(key).map(|raw| raw.get().to_owned())
}

/// Ids compare as values; numbers by value (`1e3` is read as a float, QEMU writes it back as `1000`).
fn same_id(a: &Option<Value>, b: &Option<Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A handed-over command waiting for the test to answer it.
struct Waiting {
    token: Token,
    id: Option<Value>,
}

fn collect(server: &mut Server, waiting: &mut Vec<Waiting>) {
    while let Some(ev) = server.poll_event() {
        if let Event::Command(cmd) = ev {
            waiting.push(Waiting { token: cmd.token, id: cmd.id() });
        }
    }
}

/// Answers handed-over commands and injects events as the recorded lines say, in their order.
fn act_out(server: &mut Server, waiting: &mut Vec<Waiting>, expected: &[u8]) {
    collect(server, waiting);
    for line in expected.split(|&b| b == b'\n') {
        let line = line.strip_prefix(b"\xff").unwrap_or(line);
        let Ok(msg) = serde_json::from_slice::<Value>(line) else {
            // `inf` ids: not JSON. The only waiting command answers it.
            if line.starts_with(b"{\"return\"") && waiting.len() == 1 {
                let w = waiting.remove(0);
                let text = String::from_utf8_lossy(line);
                let payload = &text["{\"return\": ".len()..text.rfind(", \"id\"").expect("id")];
                server.reply_json(w.token, Ok(&reversed_members(payload))).unwrap();
                collect(server, waiting);
            }
            continue;
        };
        if let Some(name) = msg.get("event").and_then(Value::as_str) {
            let ts = &msg["timestamp"];
            let ts = Timestamp {
                seconds: ts["seconds"].as_i64().unwrap(),
                microseconds: ts["microseconds"].as_i64().unwrap(),
            };
            let data = member_text(line, "data").map(|d| reversed_members(&d));
            server.event_json(name, data.as_deref(), ts).unwrap();
            continue;
        }
        let id = msg.get("id").cloned();
        let Some(pos) = waiting.iter().position(|w| same_id(&w.id, &id)) else { continue };
        let w = waiting.remove(pos);
        if let Some(ret) = member_text(line, "return") {
            server.reply_json(w.token, Ok(&reversed_members(&ret))).unwrap();
        } else {
            let e = &msg["error"];
            let failure = Failure::new(e["class"].as_str().unwrap(), e["desc"].as_str().unwrap());
            server.reply(w.token, Err(failure)).unwrap();
        }
        collect(server, waiting);
    }
}

#[derive(Clone, Copy, Debug)]
enum Feed {
    Whole,
    Bytes,
    Chunks(usize),
}

/// Replays a transcript; returns (expected, produced) per recv step.
fn replay(name: &str, feed: Feed) {
    let (_server, steps) = load(name);
    let mut server = Server::new(config_for(name, &steps));
    let mut waiting = Vec::new();
    let mut out = Vec::new();
    let mut expected = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Send(bytes) => {
                // The previous exchange must be complete: compare before sending more.
                server.poll_transmit(&mut out);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&expected),
                    "{name} ({feed:?}): before step {n}"
                );
                out.clear();
                expected.clear();
                match feed {
                    Feed::Whole => server.handle_input(bytes),
                    Feed::Bytes => bytes.iter().for_each(|b| server.handle_input(&[*b])),
                    Feed::Chunks(k) => bytes.chunks(k).for_each(|c| server.handle_input(c)),
                }
                collect(&mut server, &mut waiting);
            }
            Step::Recv(bytes) => {
                act_out(&mut server, &mut waiting, bytes);
                expected.extend_from_slice(bytes);
            }
        }
    }
    server.poll_transmit(&mut out);
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected), "{name} ({feed:?}): at the end");
    assert!(waiting.is_empty(), "{name}: {} commands left unanswered", waiting.len());
}

fn replay_all_ways(name: &str) {
    for feed in [Feed::Whole, Feed::Bytes, Feed::Chunks(3), Feed::Chunks(7)] {
        replay(name, feed);
    }
}

macro_rules! transcripts {
    ($($test:ident => $name:literal,)*) => {$(
        #[test]
        fn $test() {
            replay_all_ways($name);
        }
    )*};
}

transcripts! {
    negotiation => "qsd-negotiation",
    negotiation_plain => "qsd-negotiation-plain",
    command_errors => "qsd-command-errors",
    idless_errors => "qsd-idless-errors",
    id_types => "qsd-id-types",
    id_inf => "qsd-id-inf",
    pipelined => "qsd-pipelined",
    query_commands => "qsd-query-commands",
    query_qmp_schema => "qsd-query-qmp-schema",
    events_blockdev_create => "qsd-events-blockdev-create",
    events_block_jobs => "qsd-events-block-jobs",
    quit => "qsd-quit",
    exec_oob_not_negotiated => "qsys-exec-oob-not-negotiated",
    oob => "qsys-oob",
    qmp_option => "qsys-qmp-option",
    runstate_events => "qsys-events-runstate",
    guest_agent_sync => "qga-sync",
    guest_agent_commands => "qga-commands",
}
