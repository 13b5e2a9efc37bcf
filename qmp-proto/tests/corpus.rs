//! Replays the recorded conversations in `shared/corpus` (real qemu-storage-daemon 10.0.2, qemu-system-x86_64 7.2
//! and qemu-ga 7.2 output, byte-exact) into a [`Client`], and checks framing and classification.
//!
//! Only the server side (`recv` steps) is replayed. The client assigns its own ids (1 = `qmp_capabilities`, ...)
//! while the recorded replies carry the ids the recording client used, so most replies come out as
//! `UnknownId` / `IdlessReply` / `IdlessError` violations: that is expected. Where a recorded id happens to be
//! `1`, it answers the client's `qmp_capabilities` (which is why `qsd-negotiation` ends in `NegotiationFailed`).
//!
//! The corpus is looked up at `CARGO_MANIFEST_DIR/../../shared/corpus` (the layout CI and the workspace use),
//! then at `$QMP_CORPUS_DIR`. Missing corpus is a failure, not a skip.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{drain, lossy, Ev};
use proptest::prelude::*;
use qmp_proto::framer::{Frame, Framer};
use qmp_proto::message::{classify, Message};
use qmp_proto::{Client, Config, ConnectionError};
use serde_json::Value;

/// Every transcript the corpus README lists.
const EXPECTED: [&str; 22] = [
    "qga-commands",
    "qga-sync",
    "qsd-command-errors",
    "qsd-events-block-jobs",
    "qsd-events-blockdev-create",
    "qsd-id-inf",
    "qsd-id-types",
    "qsd-idless-errors",
    "qsd-negotiation",
    "qsd-negotiation-plain",
    "qsd-pipelined",
    "qsd-pretty",
    "qsd-query-commands",
    "qsd-query-qmp-schema",
    "qsd-quit",
    "qsys-events-runstate",
    "qsys-exec-oob-not-negotiated",
    "qsys-oob",
    "qsys-pretty",
    "qsys-qmp-option",
    "qsys-quit",
    "qsys-stdio",
];

#[derive(Debug)]
struct Transcript {
    name: String,
    server: String,
    /// Every `recv` step, as bytes.
    recv: Vec<Vec<u8>>,
}

impl Transcript {
    fn config(&self) -> Config {
        if self.name.starts_with("qga-") {
            Config::guest_agent()
        } else if self.name.starts_with("qsd-") || self.name.starts_with("qsys-") {
            Config::qmp()
        } else {
            panic!("transcript {} has no known server prefix", self.name)
        }
    }

    fn all_recv(&self) -> Vec<u8> {
        self.recv.concat()
    }
}

fn corpus_dir() -> PathBuf {
    let default = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus")).to_path_buf();
    if default.is_dir() {
        return default;
    }
    if let Some(dir) = std::env::var_os("QMP_CORPUS_DIR").map(PathBuf::from) {
        assert!(dir.is_dir(), "QMP_CORPUS_DIR={} is not a directory", dir.display());
        return dir;
    }
    panic!(
        "transcript corpus not found at {} and QMP_CORPUS_DIR is not set: clone `shared/` beside the repository \
         or point QMP_CORPUS_DIR at shared/corpus",
        default.display()
    );
}

/// A corpus string maps bytes to characters one-to-one (latin-1).
fn latin1(s: &str) -> Vec<u8> {
    s.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or_else(|_| panic!("character {c:?} is not latin-1"))).collect()
}

fn load(path: &Path) -> Transcript {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let steps = doc["steps"].as_array().unwrap_or_else(|| panic!("{}: no steps", path.display()));
    let mut recv = Vec::new();
    for step in steps {
        let obj = step.as_object().expect("a step is an object");
        assert_eq!(obj.len(), 1, "{}: a step has one member: {step}", path.display());
        match (obj.get("send"), obj.get("recv")) {
            (Some(Value::String(_)), None) => {}
            (None, Some(Value::String(s))) => recv.push(latin1(s)),
            _ => panic!("{}: bad step {step}", path.display()),
        }
    }
    Transcript {
        name: path.file_stem().expect("file name").to_string_lossy().into_owned(),
        server: doc["server"].as_str().expect("server").to_owned(),
        recv,
    }
}

fn corpus() -> &'static [Transcript] {
    static CORPUS: OnceLock<Vec<Transcript>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = corpus_dir();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        let all: Vec<Transcript> = paths.iter().map(|p| load(p)).collect();
        assert!(!all.is_empty(), "no transcripts in {}", dir.display());
        all
    })
}

fn transcript(name: &str) -> &'static Transcript {
    corpus().iter().find(|t| t.name == name).unwrap_or_else(|| panic!("transcript {name} missing"))
}

/// What a replay produced: every event (the `handle_eof` at the end included) and every byte transmitted.
///
/// `transmitted` is `None` when the session closed before the final EOF: a fatal close discards what was not
/// polled yet, so how much went out depends on where the input was cut (the recorded server answered a
/// `qmp_capabilities` this client may not have sent yet).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Replay {
    events: Vec<Ev>,
    transmitted: Option<Vec<u8>>,
}

/// Feeds the chunks in order, driving the client per the contract after each, then `handle_eof`.
fn replay<'a>(t: &Transcript, chunks: impl IntoIterator<Item = &'a [u8]>) -> Replay {
    let mut client = Client::new(t.config(), std::time::Instant::now());
    let mut events = drain(&mut client);
    let mut transmitted = Vec::new();
    client.poll_transmit(&mut transmitted);
    for chunk in chunks {
        client.handle_input(chunk);
        events.extend(drain(&mut client));
        client.poll_transmit(&mut transmitted);
    }
    client.handle_eof();
    events.extend(drain(&mut client));
    client.poll_transmit(&mut transmitted);
    // Closed comes exactly once, and last.
    let closed = events.iter().filter(|e| e.is_closed()).count();
    assert_eq!(closed, 1, "{}: {closed} Closed events: {events:?}", t.name);
    assert!(events.last().is_some_and(Ev::is_closed), "{}: Closed is not last: {events:?}", t.name);
    assert!(client.is_closed());
    assert_eq!(client.poll_transmit(&mut Vec::new()), 0, "{}: transmit after Closed", t.name);
    let clean = events.last() == Some(&Ev::Closed(ConnectionError::Eof));
    Replay { events, transmitted: clean.then_some(transmitted) }
}

fn replay_steps(t: &Transcript) -> Replay {
    replay(t, t.recv.iter().map(Vec::as_slice))
}

fn replay_whole(t: &Transcript) -> Replay {
    let all = t.all_recv();
    replay(t, [all.as_slice()])
}

fn replay_bytewise(t: &Transcript) -> Replay {
    let all = t.all_recv();
    replay(t, all.chunks(1))
}

/// Reference replays (whole input), computed once.
fn reference() -> &'static [Replay] {
    static REF: OnceLock<Vec<Replay>> = OnceLock::new();
    REF.get_or_init(|| corpus().iter().map(replay_whole).collect())
}

/// Top-level messages in a transcript, counted the way a line reader would on this corpus: every line that
/// starts with `{` at column 0 (after an optional 0xFF) starts one. Pretty-printed members are indented.
fn line_count_of_messages(t: &Transcript) -> usize {
    t.all_recv().split(|&b| b == b'\n').filter(|line| line.iter().find(|&&b| b != 0xFF) == Some(&b'{')).count()
}

fn kinds(events: &[Ev]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            Ev::Greeting { .. } => "greeting",
            Ev::Ready { .. } => "ready",
            Ev::ReplyOk { .. } | Ev::ReplyErr { .. } => "reply",
            Ev::Event { .. } => "event",
            Ev::TimedOut { .. } => "timed-out",
            Ev::ReplyTooLarge { .. } => "too-large",
            Ev::EventsDropped { .. } => "dropped",
            Ev::UnknownId { .. } => "unknown-id",
            Ev::IdlessReply { .. } => "idless-reply",
            Ev::IdlessError { .. } => "idless-error",
            Ev::NotJson { .. } => "not-json",
            Ev::UnknownShape { .. } => "unknown-shape",
            Ev::Oversized { .. } => "oversized",
            Ev::Truncated { .. } => "truncated",
            Ev::UnexpectedGreeting => "unexpected-greeting",
            Ev::Closed(_) => "closed",
        })
        .collect()
}

const CAPS_OOB: &[u8] = br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":1}"#;

#[test]
fn corpus_is_complete() {
    let names: Vec<&str> = corpus().iter().map(|t| t.name.as_str()).collect();
    for name in EXPECTED {
        assert!(names.contains(&name), "transcript {name} missing from {}", corpus_dir().display());
    }
    for t in corpus() {
        assert!(!t.recv.is_empty(), "{}: no recv step", t.name);
        let expect_server = match &t.name[..t.name.find('-').expect("prefix")] {
            "qga" => "qemu-ga",
            "qsd" => "qemu-storage-daemon",
            "qsys" => "qemu-system-x86_64",
            other => panic!("unknown prefix {other}"),
        };
        assert!(t.server.starts_with(expect_server), "{}: server {}", t.name, t.server);
    }
}

/// The replay per recorded step, whole, and byte by byte give the same events and the same transmitted bytes.
#[test]
fn every_transcript_whole_per_step_and_bytewise_agree() {
    for (t, whole) in corpus().iter().zip(reference()) {
        assert_eq!(&replay_steps(t), whole, "{}: per-step replay differs from whole", t.name);
        assert_eq!(&replay_bytewise(t), whole, "{}: byte-by-byte replay differs from whole", t.name);
    }
}

/// General facts that hold for every real transcript.
#[test]
fn every_transcript_frames_cleanly() {
    for (t, r) in corpus().iter().zip(reference()) {
        let ev = &r.events;
        // Every real server message is framed whole: nothing oversized or cut short, and the stream always ends
        // between messages (the closing EOF is clean, or the session had closed before).
        assert!(
            !ev.iter().any(|e| matches!(e, Ev::Oversized { .. } | Ev::ReplyTooLarge { .. } | Ev::Truncated { .. })),
            "{}: {ev:?}",
            t.name
        );
        assert!(
            !ev.iter().any(|e| matches!(e, Ev::Closed(ConnectionError::EofMidMessage { .. }))),
            "{}: {ev:?}",
            t.name
        );
        // Only the `inf` ids are not JSON.
        let not_understood = ev.iter().filter(|e| matches!(e, Ev::NotJson { .. } | Ev::UnknownShape { .. })).count();
        assert_eq!(not_understood, if t.name == "qsd-id-inf" { 2 } else { 0 }, "{}: {ev:?}", t.name);
        match t.config().mode() {
            qmp_proto::Mode::Qmp => {
                let Some(Ev::Greeting { version, caps }) = ev.first() else {
                    panic!("{}: first event is not a greeting: {ev:?}", t.name)
                };
                let expect = if t.server.starts_with("qemu-system") { "7.2.22" } else { "10.0.2" };
                assert_eq!(version, expect, "{}", t.name);
                assert_eq!(caps, &["oob".to_owned()], "{}", t.name);
                // Every server offered oob, so the client enabled it, compactly, with id 1.
                if let Some(tx) = &r.transmitted {
                    assert_eq!(lossy(tx), lossy(CAPS_OOB), "{}", t.name);
                }
            }
            qmp_proto::Mode::GuestAgent => {
                assert_eq!(ev.first(), Some(&Ev::Ready { oob: false }), "{}", t.name);
                assert_eq!(r.transmitted.as_deref(), Some(&[][..]), "{}: guest agent mode transmitted", t.name);
                assert!(!ev.iter().any(|e| matches!(e, Ev::Greeting { .. })), "{}", t.name);
            }
        }
        // One event per message until the session ends: a line reader's count of this (well-behaved) corpus
        // matches, unless the replay closed early.
        let last = ev.last().expect("events");
        if *last == Ev::Closed(ConnectionError::Eof) {
            let per_message = ev.iter().filter(|e| !matches!(e, Ev::Closed(_))).count()
                - usize::from(t.config().mode() == qmp_proto::Mode::GuestAgent); // Ready at construction
            assert_eq!(per_message, line_count_of_messages(t), "{}: {:?}", t.name, kinds(ev));
        }
    }
}

#[test]
fn qsd_query_qmp_schema_one_big_reply() {
    let t = transcript("qsd-query-qmp-schema");
    let big = &t.recv[2];
    assert_eq!(big.len(), 116_877, "the recorded line");
    let r = replay_whole(t);
    assert_eq!(
        r.events[1..],
        [
            Ev::IdlessReply { value: "{}".into() },
            Ev::UnknownId { id: "\"schema\"".into() },
            Ev::Closed(ConnectionError::Eof)
        ]
    );
    // Under a 100 kB limit the same message is skipped as oversized (CRLF excluded), and the session goes on.
    let mut client = Client::new(Config::qmp().max_message_size(100_000), std::time::Instant::now());
    for chunk in t.all_recv().chunks(4096) {
        client.handle_input(chunk);
    }
    client.handle_eof();
    let ev = drain(&mut client);
    assert_eq!(
        ev[1..],
        [
            Ev::IdlessReply { value: "{}".into() },
            Ev::Oversized { len: 116_875, limit: 100_000 },
            Ev::Closed(ConnectionError::Eof)
        ]
    );
    // The public framer and classifier: one message, a reply whose raw payload is the whole schema.
    let mut framer = Framer::new(10 << 20);
    let mut frames = Vec::new();
    for chunk in big.chunks(1000) {
        framer.feed(chunk, |f| frames.push(f));
    }
    assert!(!framer.in_message());
    let [Frame::Message(bytes)] = frames.as_slice() else { panic!("{} frames", frames.len()) };
    assert_eq!(bytes.len(), 116_875);
    let Message::Return { id: Some(id), value } = classify(bytes.clone()) else { panic!("not a reply") };
    assert_eq!(id.raw_str(), "\"schema\"");
    assert!((116_000..116_875).contains(&value.raw_str().len()), "{}", value.raw_str().len());
    let schema = value.as_value().expect("valid JSON");
    let entries = schema.as_array().expect("an array");
    assert!(entries.len() > 500, "{} schema entries", entries.len());
    assert!(entries.iter().any(|e| e["name"] == "query-qmp-schema" && e["meta-type"] == "command"));
}

#[test]
fn qsd_id_inf_is_not_json_and_the_session_survives() {
    let r = replay_whole(transcript("qsd-id-inf"));
    let ev = &r.events;
    assert_eq!(kinds(ev), ["greeting", "idless-reply", "not-json", "not-json", "unknown-id", "closed"]);
    let Ev::NotJson { bytes, reason } = &ev[2] else { unreachable!() };
    assert!(lossy(bytes).ends_with(r#""id": inf}"#), "{}", lossy(bytes));
    assert!(!reason.is_empty());
    let Ev::NotJson { bytes, .. } = &ev[3] else { unreachable!() };
    assert!(lossy(bytes).ends_with(r#""id": -inf}"#), "{}", lossy(bytes));
    // The next message is still classified normally, and only the final EOF closes the session.
    assert_eq!(ev[4], Ev::UnknownId { id: "\"after\"".into() });
    assert_eq!(ev[5], Ev::Closed(ConnectionError::Eof));
}

#[test]
fn qsd_pretty_multi_line_messages() {
    let r = replay_whole(transcript("qsd-pretty"));
    let ev = &r.events;
    assert_eq!(ev[0], Ev::Greeting { version: "10.0.2".into(), caps: vec!["oob".into()] });
    // The recording client's negotiation had no id: `{"return": {}}` over three lines.
    assert_eq!(ev[1], Ev::IdlessReply { value: "{\r\n    }".into() });
    // Its query-version had id 1, which is the id of this client's qmp_capabilities.
    assert_eq!(ev[2], Ev::Ready { oob: true });
    // A multi-line array id, kept exactly as written.
    assert_eq!(
        ev[3],
        Ev::UnknownId { id: "[\r\n        1,\r\n        {\r\n            \"a\": null\r\n        }\r\n    ]".into() }
    );
    assert_eq!(ev[4], Ev::IdlessError { class: "GenericError".into(), desc: "QMP input must be a JSON object".into() });
    assert_eq!(ev[5], Ev::UnknownId { id: "\"add\"".into() });
    let Ev::Event { name, data, ts } = &ev[6] else { panic!("{:?}", ev[6]) };
    assert_eq!(name, "JOB_STATUS_CHANGE");
    assert_eq!(*ts, Some((1_795_617_359, 41_353)));
    let data: Value = serde_json::from_str(data.as_deref().expect("data")).expect("JSON");
    assert_eq!(data, serde_json::json!({"status": "created", "id": "j1"}));
    assert_eq!(kinds(&ev[7..]), ["event", "unknown-id", "event", "event", "event", "unknown-id", "closed"], "{ev:?}");
    assert_eq!(ev[8], Ev::UnknownId { id: "\"bc\"".into() });
    // job-dismiss writes its event before its reply.
    assert!(matches!(&ev[11], Ev::Event { data: Some(d), .. } if d.contains("\"null\"")));
    assert_eq!(ev[12], Ev::UnknownId { id: "\"jd\"".into() });
}

#[test]
fn qsys_pretty_multi_line_idless_errors() {
    let r = replay_whole(transcript("qsys-pretty"));
    let ev = &r.events;
    assert_eq!(
        kinds(ev),
        [
            "greeting",
            "idless-reply",
            "event",
            "ready",
            "event",
            "unknown-id",
            "unknown-id",
            "unknown-id",
            "idless-error",
            "idless-error",
            "closed"
        ]
    );
    assert!(matches!(&ev[2], Ev::Event { name, data: None, ts: Some((1_795_617_407, 388_978)) } if name == "STOP"));
    assert!(matches!(&ev[8], Ev::IdlessError { desc, .. } if desc == "JSON parse error, invalid keyword 'garbage'"));
    assert!(matches!(&ev[9], Ev::IdlessError { desc, .. } if desc == "JSON parse error, stray '\u{1}'"));
}

#[test]
fn qsd_events_block_jobs_nine_events_before_the_reply() {
    let r = replay_whole(transcript("qsd-events-block-jobs"));
    let ev = &r.events;
    let reply = ev.iter().position(|e| *e == Ev::UnknownId { id: "3".into() }).expect("reply to blockdev-backup");
    let before: Vec<(String, String)> = ev[reply - 9..reply]
        .iter()
        .map(|e| match e {
            Ev::Event { name, data: Some(d), ts: Some(_) } => {
                let d: Value = serde_json::from_str(d).expect("data JSON");
                let what = d.get("status").or_else(|| d.get("type")).and_then(Value::as_str).expect("status");
                (name.clone(), what.to_owned())
            }
            other => panic!("not an event with data and timestamp: {other:?}"),
        })
        .collect();
    let expect = [
        ("JOB_STATUS_CHANGE", "created"),
        ("JOB_STATUS_CHANGE", "running"),
        ("JOB_STATUS_CHANGE", "paused"),
        ("JOB_STATUS_CHANGE", "running"),
        ("JOB_STATUS_CHANGE", "waiting"),
        ("JOB_STATUS_CHANGE", "pending"),
        ("BLOCK_JOB_COMPLETED", "backup"),
        ("JOB_STATUS_CHANGE", "concluded"),
        ("JOB_STATUS_CHANGE", "null"),
    ];
    let expect: Vec<(String, String)> = expect.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
    assert_eq!(before, expect);
    assert!(!matches!(ev[reply - 10], Ev::Event { .. }), "exactly nine events precede the reply");
    // The recorded id 1 answered this client's qmp_capabilities.
    assert_eq!(ev[..3], [ev[0].clone(), Ev::IdlessReply { value: "{}".into() }, Ev::Ready { oob: true }]);
    let events = ev.iter().filter(|e| matches!(e, Ev::Event { .. })).count();
    // blockdev-backup: 9; blockdev-mirror: 2 before its reply, 2 after; job-complete: 5 after its reply.
    assert_eq!(events, 9 + 4 + 5, "{:?}", kinds(ev));
    let ready =
        ev.iter().position(|e| matches!(e, Ev::Event { name, .. } if name == "BLOCK_JOB_READY")).expect("ready");
    assert!(ready > reply);
}

#[test]
fn qga_sync_delimited_replies_frame() {
    let r = replay_whole(transcript("qga-sync"));
    assert_eq!(
        r.events,
        [
            Ev::Ready { oob: false },
            Ev::IdlessReply { value: "12345".into() },
            Ev::IdlessReply { value: "67890".into() },
            Ev::IdlessError { class: "GenericError".into(), desc: "JSON parse error, stray '\u{FFFD}'".into() },
            Ev::IdlessReply { value: "4242".into() },
            Ev::IdlessReply { value: "{}".into() },
            Ev::UnknownId { id: "\"p1\"".into() },
            Ev::UnknownId { id: "{\"x\": [1]}".into() },
            Ev::Closed(ConnectionError::Eof),
        ]
    );
    // The framer sees the two 0xFF markers as delimiters between whole messages.
    let mut frames = Vec::new();
    Framer::new(1024).feed(&transcript("qga-sync").all_recv(), |f| frames.push(f));
    assert_eq!(frames.iter().filter(|f| **f == Frame::Delimiter).count(), 2);
    assert_eq!(frames.iter().filter(|f| matches!(f, Frame::Message(_))).count(), 7);
}

#[test]
fn qga_commands_lf_only() {
    let t = transcript("qga-commands");
    assert!(!t.all_recv().contains(&b'\r'), "qemu-ga ends with LF only");
    let r = replay_whole(t);
    let ids: Vec<&str> =
        r.events.iter().filter_map(|e| if let Ev::UnknownId { id } = e { Some(id.as_str()) } else { None }).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
    let idless: Vec<&str> = r
        .events
        .iter()
        .filter_map(|e| if let Ev::IdlessError { desc, .. } = e { Some(desc.as_str()) } else { None })
        .collect();
    assert_eq!(
        idless,
        [
            "QMP input must be a JSON object",
            "JSON parse error, invalid keyword 'garbage'",
            "JSON parse error, stray '\u{1}'"
        ]
    );
}

#[test]
fn qsd_quit_ends_with_eof() {
    let t = transcript("qsd-quit");
    let r = replay_whole(t);
    assert_eq!(
        r.events[1..],
        [
            Ev::IdlessReply { value: "{}".into() },
            Ev::UnknownId { id: "\"q\"".into() },
            Ev::Closed(ConnectionError::Eof)
        ]
    );
    // Cut the last message short instead: the EOF comes mid-message.
    let all = t.all_recv();
    let cut = &all[..all.len() - 5];
    let mut client = Client::new(t.config(), std::time::Instant::now());
    client.handle_input(cut);
    client.handle_eof();
    let ev = drain(&mut client);
    let last_msg_len = t.recv.last().expect("recv").len() - 2;
    assert_eq!(ev.last(), Some(&Ev::Closed(ConnectionError::EofMidMessage { buffered: last_msg_len as u64 - 3 })));
}

#[test]
fn qsys_quit_and_stdio_shutdown_before_the_reply() {
    for name in ["qsys-quit", "qsys-stdio"] {
        let r = replay_whole(transcript(name));
        let ev = &r.events;
        let n = ev.len();
        let Ev::Event { name: ev_name, data: Some(data), .. } = &ev[n - 3] else { panic!("{name}: {ev:?}") };
        assert_eq!(ev_name, "SHUTDOWN");
        assert_eq!(serde_json::from_str::<Value>(data).expect("JSON")["reason"], "host-qmp-quit");
        assert!(matches!(&ev[n - 2], Ev::UnknownId { .. }), "{name}: {ev:?}");
        assert_eq!(ev[n - 1], Ev::Closed(ConnectionError::Eof));
    }
}

#[test]
fn qsd_negotiation_reply_with_id_1_is_taken_for_the_negotiation() {
    // The recorded command before negotiation used id 1 and got CommandNotFound: for this client, that is the
    // answer to its own qmp_capabilities (id 1), so negotiation fails and nothing after it is reported.
    let r = replay_whole(transcript("qsd-negotiation"));
    assert_eq!(r.events.len(), 2, "{:?}", r.events);
    let Ev::Closed(ConnectionError::NegotiationFailed(e)) = &r.events[1] else { panic!("{:?}", r.events) };
    assert_eq!(e.class, "CommandNotFound");
    assert_eq!(e.desc, "Expecting capabilities negotiation with 'qmp_capabilities'");
}

#[test]
fn qsys_oob_fast_overtakes_slow() {
    let r = replay_whole(transcript("qsys-oob"));
    let ids: Vec<&str> =
        r.events.iter().filter_map(|e| if let Ev::UnknownId { id } = e { Some(id.as_str()) } else { None }).collect();
    assert_eq!(
        ids,
        ["\"neg\"", "\"oob1\"", "\"oob2\"", "\"oob3\"", "\"oob4\"", "\"oob5\"", "\"oob6\"", "\"fast\"", "\"slow\""]
    );
    assert_eq!(kinds(&r.events).iter().filter(|k| **k == "idless-reply").count(), 1, "exec-oob without id");
}

#[test]
fn qsd_idless_errors_each_reported() {
    let r = replay_whole(transcript("qsd-idless-errors"));
    let descs: Vec<&str> = r
        .events
        .iter()
        .filter_map(|e| if let Ev::IdlessError { desc, .. } = e { Some(desc.as_str()) } else { None })
        .collect();
    assert_eq!(descs.len(), 9, "{descs:?}");
    assert_eq!(descs[0], "JSON parse error, invalid keyword 'garbage'");
    assert_eq!(descs[5], "JSON parse error, duplicate key");
    assert_eq!(descs[8], "JSON parse error, expecting value");
    assert_eq!(r.events.last(), Some(&Ev::Closed(ConnectionError::Eof)));
}

/// Cuts `input` at the given positions (any order, duplicates allowed).
fn cut_at(input: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
    cuts.push(0);
    cuts.push(input.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

/// Cuts `input` into chunks whose sizes cycle through `sizes`.
fn cut_sizes<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut pos = 0;
    for &size in sizes.iter().cycle() {
        if pos >= input.len() {
            break;
        }
        let end = (pos + size).min(input.len());
        out.push(&input[pos..end]);
        pos = end;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random cut points: every transcript yields the same events and transmitted bytes as when fed whole.
    #[test]
    fn random_cut_points_agree(cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..300)) {
        for (t, whole) in corpus().iter().zip(reference()) {
            let all = t.all_recv();
            let positions = cuts.iter().map(|ix| ix.index(all.len() + 1)).collect();
            let r = replay(t, cut_at(&all, positions));
            prop_assert_eq!(&r, whole, "{}", t.name);
        }
    }

    /// Random chunk sizes, small and large, cycled over the input.
    #[test]
    fn random_chunk_sizes_agree(
        sizes in proptest::collection::vec(prop_oneof![1usize..4, 1usize..64, 1usize..8192], 1..24),
    ) {
        for (t, whole) in corpus().iter().zip(reference()) {
            let all = t.all_recv();
            let r = replay(t, cut_sizes(&all, &sizes));
            prop_assert_eq!(&r, whole, "{}", t.name);
        }
    }
}
