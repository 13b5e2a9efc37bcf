//! One scripted, in-memory conversation per protocol rule, on virtual time. The test plays the server: it reads
//! what the client transmitted (to learn the ids) and feeds replies, driving the client per the contract
//! (drain `poll_event`, then `poll_transmit`, then `poll_timeout`) after every call.

mod common;

use std::time::Duration;

use common::{err, event, greeting, idless_err, ret, Driver, Ev};
use qmp_proto::framer::{Frame, Framer};
use qmp_proto::{Client, ClientEvent, Config, ConnectionError, ExecuteOptions, RawJson, RequestId, UsageError};
use serde_json::json;

fn opts() -> ExecuteOptions {
    ExecuteOptions::new()
}

fn ok(id: RequestId, raw: &str) -> Ev {
    Ev::ReplyOk { id: id.as_u64(), raw: raw.into() }
}

fn qmp_ready() -> Driver {
    let mut d = Driver::new(Config::qmp());
    d.handshake(true);
    d.log.clear();
    d
}

fn ga() -> Driver {
    let d = Driver::new(Config::guest_agent());
    assert_eq!(d.log, [Ev::Ready { oob: false }]);
    d
}

// ----- greeting and negotiation ----------------------------------------------------------------------------

#[test]
fn greeting_is_answered_with_capabilities_enabling_oob() {
    let mut d = Driver::new(Config::qmp());
    assert!(d.log.is_empty(), "nothing before the greeting: {:?}", d.log);
    assert!(d.wire.is_empty());
    let evs = d.input(greeting(true));
    assert_eq!(evs, [Ev::Greeting { version: "10.0.2".into(), caps: vec!["oob".into()] }]);
    assert_eq!(d.wire, br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":1}"#);
    let g = d.client.greeting().expect("greeting kept");
    let v = g.version.as_ref().expect("version in today's shape");
    assert_eq!((v.major, v.minor, v.micro), (10, 0, 2));
    assert!(!d.client.is_ready() && !d.client.oob_enabled());
    let evs = d.input(ret(1, "{}"));
    assert_eq!(evs, [Ev::Ready { oob: true }]);
    assert!(d.client.is_ready() && d.client.oob_enabled());
    // The handshake deadline is disarmed once ready.
    assert_eq!(d.timeout, None);
    // qmp_capabilities was answered: the next command takes its id, the smallest free one.
    let id = d.exec("query-status", opts());
    assert_eq!(id.as_u64(), 1);
    assert_eq!(&d.wire[d.wire.len() - 33..], br#"{"execute":"query-status","id":1}"#);
}

#[test]
fn no_oob_argument_when_not_offered_or_disabled() {
    for (offer, enable) in [(false, true), (true, false), (false, false)] {
        let mut d = Driver::new(Config::qmp().enable_oob(enable));
        d.input(greeting(offer));
        assert_eq!(d.wire, br#"{"execute":"qmp_capabilities","id":1}"#, "offer {offer}, enable {enable}");
        assert_eq!(d.input(ret(1, "{}")), [Ev::Ready { oob: false }]);
        assert!(!d.client.oob_enabled());
        // OOB cannot be used, and nothing is transmitted for the attempt.
        let before = d.wire.len();
        let e = d.client.execute("query-yank", None::<&()>, opts().oob()).expect_err("oob refused");
        assert!(matches!(e, UsageError::OobNotNegotiated), "{e:?}");
        d.pump();
        assert_eq!(d.wire.len(), before);
        assert!(d.log.iter().all(|e| !matches!(e, Ev::ReplyOk { .. } | Ev::ReplyErr { .. })));
    }
}

#[test]
fn unknown_capabilities_are_tolerated() {
    let mut d = Driver::new(Config::qmp());
    let g = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 1, "major": 99}, "package": ""}, "capabilities": ["future", "oob"]}}"#;
    assert_eq!(
        d.input(format!("{g}\r\n")),
        [Ev::Greeting { version: "99.1.0".into(), caps: vec!["future".into(), "oob".into()] }]
    );
    assert_eq!(d.sent[0].args, Some(json!({"enable": ["oob"]})));
}

/// Old servers and the QMP wiki: no version, a version string; the session negotiates and runs all the same,
/// whatever the split of the input.
#[test]
fn greetings_without_todays_version_are_accepted() {
    let cases = [
        (r#"{"QMP": {"capabilities": []}}"#, "unknown"),
        (
            r#"{"QMP": {"version": {"qemu": "0.12.5", "package": ""}, "capabilities": []}}"#,
            r#"{"qemu": "0.12.5", "package": ""}"#,
        ),
        (r#"{"QMP": {"version": [0, 13], "capabilities": ["oob"]}}"#, "[0, 13]"),
    ];
    for (g, printed) in cases {
        let input = format!(
            "{g}
"
        );
        for chunk in [input.len(), 1, 7] {
            let mut d = Driver::new(Config::qmp());
            let mut evs = Vec::new();
            for piece in input.as_bytes().chunks(chunk) {
                evs.extend(d.input(piece));
            }
            let [Ev::Greeting { version, .. }] = evs.as_slice() else { panic!("{g}: {evs:?}") };
            assert_eq!(version, printed, "{g}");
            assert_eq!(d.client.greeting().map(|g| g.version_string()).as_deref(), Some(printed));
            let neg = d.last_sent("qmp_capabilities").id;
            assert_eq!(d.input(ret(neg, "{}")).len(), 1, "{g}");
            assert!(d.client.is_ready(), "{g}, chunks of {chunk}");
        }
    }
}

#[test]
fn commands_before_ready_are_queued_and_sent_after_ready_in_order() {
    let mut d = Driver::new(Config::qmp());
    let a = d.exec("query-version", opts());
    let b = d.exec_args("blockdev-del", &json!({"node-name": "n0"}), opts());
    assert!(d.wire.is_empty(), "sent before the greeting: {:?}", common::lossy(&d.wire));
    d.input(greeting(true));
    assert_eq!(d.sent.len(), 1);
    assert_eq!(d.sent[0].name, "qmp_capabilities");
    // Issued while negotiating: still queued.
    let c = d.exec("query-status", opts());
    assert_eq!(d.sent.len(), 1);
    assert_eq!(d.client.pending(), 3);
    let neg = d.sent[0].id;
    assert_eq!(d.input(ret(neg, "{}")), [Ev::Ready { oob: true }]);
    let names: Vec<(&str, u64)> = d.sent[1..].iter().map(|c| (c.name.as_str(), c.id)).collect();
    assert_eq!(names, [("query-version", a.as_u64()), ("blockdev-del", b.as_u64()), ("query-status", c.as_u64())]);
    assert_eq!(d.sent[2].args, Some(json!({"node-name": "n0"})));
    // All distinct from the negotiation id.
    assert!(![a, b, c].iter().any(|id| id.as_u64() == neg));
    assert_eq!(d.input(ret(b.as_u64(), "{}")), [ok(b, "{}")]);
}

#[test]
fn event_between_capabilities_and_its_reply_is_an_event_and_ready_follows() {
    let stop = event("STOP", None, 1_700_000_000, 123_456);
    // Fed in separate reads, then all in one read.
    let mut d = Driver::new(Config::qmp());
    d.input(greeting(true));
    assert_eq!(d.input(&stop), [Ev::Event { name: "STOP".into(), data: None, ts: Some((1_700_000_000, 123_456)) }]);
    assert!(!d.client.is_ready());
    assert_eq!(d.input(ret(1, "{}")), [Ev::Ready { oob: true }]);

    let mut d = Driver::new(Config::qmp());
    let q = d.exec("query-status", opts());
    // The queued command took id 1, so qmp_capabilities will be 2.
    let all = format!("{}{stop}{}", greeting(true), ret(q.as_u64() + 1, "{}"));
    let evs = d.input(all);
    assert_eq!(evs.len(), 3, "{evs:?}");
    assert!(matches!(evs[0], Ev::Greeting { .. }));
    assert!(matches!(&evs[1], Ev::Event { name, .. } if name == "STOP"));
    assert_eq!(evs[2], Ev::Ready { oob: true });
    // The queued command went out after Ready, and its reply is routed to it, not to the negotiation.
    assert_eq!(d.last_sent("query-status").id, q.as_u64());
    assert_eq!(d.input(ret(q.as_u64(), r#"{"status": "running"}"#)), [ok(q, r#"{"status": "running"}"#)]);
}

#[test]
fn negotiation_error_closes_with_negotiation_failed() {
    let mut d = Driver::new(Config::qmp());
    let q = d.exec("query-status", opts());
    d.input(greeting(true));
    let neg = d.last_sent("qmp_capabilities").id;
    let evs = d.input(err(neg, "GenericError", "Parameter 'null' does not accept value 'bogus'"));
    let [Ev::Closed(ConnectionError::NegotiationFailed(e))] = evs.as_slice() else { panic!("{evs:?}") };
    assert_eq!(e.class, "GenericError");
    assert_eq!(e.desc, "Parameter 'null' does not accept value 'bogus'");
    assert!(d.client.is_closed());
    // The queued command was never sent and ends with the Closed event; the cause is sticky.
    assert_eq!(d.sent.len(), 1);
    assert_eq!(d.client.pending(), 0);
    assert!(!d.cancel(q));
    let e2 = d.client.execute("query-status", None::<&()>, opts()).expect_err("closed");
    assert!(matches!(&e2, UsageError::Closed(ConnectionError::NegotiationFailed(x)) if x == e), "{e2:?}");
}

#[test]
fn greeting_timeout_closes() {
    let mut d = Driver::new(Config::qmp().handshake_timeout(Some(std::time::Duration::from_secs(2))));
    let q = d.exec_with_deadline("query-status", 5_000);
    assert_eq!(d.timeout, Some(d.deadline(2_000)), "the handshake deadline comes first");
    assert!(d.at(1_999).is_empty());
    assert_eq!(d.at(2_000), [Ev::Closed(ConnectionError::GreetingTimeout)]);
    assert_eq!(d.timeout, None, "nothing armed after Closed");
    // The queued command ended with Closed: no TimedOut later.
    assert!(d.at(10_000).is_empty());
    assert!(!d.cancel(q));
    assert!(matches!(d.client.connection_error(), Some(ConnectionError::GreetingTimeout)));
    // Input after Closed is ignored.
    assert!(d.input(greeting(true)).is_empty());
    assert!(d.wire.is_empty());
}

#[test]
fn negotiation_timeout_closes() {
    let mut d = Driver::new(Config::qmp().handshake_timeout(Some(std::time::Duration::from_secs(2))));
    d.at(1_000);
    d.input(greeting(true));
    assert_eq!(d.timeout, Some(d.deadline(2_000)), "one deadline for greeting and negotiation together");
    assert_eq!(d.at(2_500), [Ev::Closed(ConnectionError::NegotiationTimeout)]);
    assert!(d.input(ret(1, "{}")).is_empty());
}

#[test]
fn no_handshake_deadline_when_disabled() {
    let mut d = Driver::new(Config::qmp().handshake_timeout(None));
    assert_eq!(d.timeout, None);
    assert!(d.at(1_000_000_000).is_empty());
    assert!(matches!(d.input(greeting(false)).as_slice(), [Ev::Greeting { .. }]));
}

#[test]
fn non_greeting_first_message_closes_with_bad_greeting() {
    let firsts = [
        ret(1, "{}"),
        err(1, "CommandNotFound", "x"),
        idless_err("JSON parse error"),
        event("STOP", None, 1, 2),
        "[1, 2]\r\n".to_owned(),
        "garbage\r\n".to_owned(),
        "{\"QMP\": 1}\r\n".to_owned(),
        "{\"QMP\": {\"version\": \"1.0\"}}\r\n".to_owned(),
        "{\"QMP\": {\"capabilities\": \"oob\"}}\r\n".to_owned(),
    ];
    for first in firsts {
        let mut d = Driver::new(Config::qmp());
        let evs = d.input(format!("{first}{}", greeting(true)));
        assert!(matches!(evs.as_slice(), [Ev::Closed(ConnectionError::BadGreeting(_))]), "{first}: {evs:?}");
        assert!(d.wire.is_empty(), "{first}: answered a bad greeting");
    }
}

// ----- replies, ids, violations ----------------------------------------------------------------------------

#[test]
fn idless_error_is_reported_and_the_session_continues() {
    let mut d = qmp_ready();
    let a = d.exec("query-status", opts());
    let evs = d.input(idless_err("JSON parse error, stray '\\u0001'"));
    assert_eq!(evs, [Ev::IdlessError { class: "GenericError".into(), desc: "JSON parse error, stray '\u{1}'".into() }]);
    assert!(!d.client.is_closed());
    assert_eq!(d.client.pending(), 1, "an id-less error ends no request");
    assert_eq!(d.input(ret(a.as_u64(), "{}")), [ok(a, "{}")]);
    let b = d.exec("query-version", opts());
    assert_eq!(
        d.input(err(b.as_u64(), "GenericError", "no")),
        [Ev::ReplyErr {
            id: b.as_u64(),
            class: "GenericError".into(),
            desc: "no".into(),
            raw: r#"{"class": "GenericError", "desc": "no"}"#.into()
        }]
    );
    // An id-less success reply is reported too.
    assert_eq!(d.input("{\"return\": {}}\r\n"), [Ev::IdlessReply { value: "{}".into() }]);
}

#[test]
fn unknown_ids_are_dropped_and_reported() {
    let mut d = qmp_ready();
    let a = d.exec("query-status", opts());
    let input = [
        ret(999, "{}"),
        "{\"return\": 1, \"id\": \"x\"}\r\n".into(),
        "{\"return\": 1, \"id\": null}\r\n".into(),
        err(7, "E", "e"),
    ]
    .concat();
    let evs = d.input(input);
    assert_eq!(
        evs,
        [
            Ev::UnknownId { id: "999".into() },
            Ev::UnknownId { id: "\"x\"".into() },
            Ev::UnknownId { id: "null".into() },
            Ev::UnknownId { id: "7".into() }
        ]
    );
    assert_eq!(d.client.pending(), 1);
    assert_eq!(d.input(ret(a.as_u64(), "[]")), [ok(a, "[]")]);
    // A second reply to an ended request is unknown too.
    assert_eq!(d.input(ret(a.as_u64(), "[]")), [Ev::UnknownId { id: a.as_u64().to_string() }]);
}

#[test]
fn reply_to_a_queued_command_is_unknown() {
    let mut d = Driver::new(Config::qmp().max_in_flight(1));
    d.handshake(true);
    let a = d.exec("a", opts());
    let b = d.exec("b", opts());
    assert_eq!(d.sent.len(), 2, "only a is on the wire besides qmp_capabilities");
    assert_eq!(d.input(ret(b.as_u64(), "{}")), [Ev::UnknownId { id: b.as_u64().to_string() }]);
    assert_eq!(d.input(ret(a.as_u64(), "{}")), [ok(a, "{}")]);
    assert_eq!(d.last_sent("b").id, b.as_u64(), "b is still sent after the bogus reply");
    assert_eq!(d.input(ret(b.as_u64(), "{}")), [ok(b, "{}")]);
}

#[test]
fn id_inf_is_not_json_and_the_session_survives() {
    let mut d = qmp_ready();
    let a = d.exec("query-version", opts());
    for bad in ["{\"return\": {}, \"id\": inf}\r\n", "{\"return\": {}, \"id\": -inf}\r\n"] {
        let evs = d.input(bad);
        let [Ev::NotJson { bytes, reason }] = evs.as_slice() else { panic!("{evs:?}") };
        assert_eq!(bytes.as_slice(), bad.trim_end().as_bytes());
        assert!(reason.contains("not valid JSON"), "{reason}");
    }
    assert!(!d.client.is_closed());
    assert_eq!(d.input(ret(a.as_u64(), "{}")), [ok(a, "{}")]);
}

/// A reply in QEMU's shape whose `return` payload is not valid JSON inside is routed to its command (whatever
/// the split of the input); the payload fails when parsed, and the session goes on. Invalid JSON outside the
/// payload is still reported as not JSON.
#[test]
fn invalid_json_inside_a_return_fails_its_parse_not_the_session() {
    for chunk in [usize::MAX, 1, 5] {
        let mut d = qmp_ready();
        let a = d.exec("query-block", opts());
        let bad = format!("{{\"return\": [{{\"x\": garbage}}], \"id\": {}}}\r\n", a.as_u64());
        let evs: Vec<Ev> = bad.as_bytes().chunks(chunk.min(bad.len())).flat_map(|piece| d.input(piece)).collect();
        let [Ev::ReplyOk { id, raw }] = evs.as_slice() else { panic!("{evs:?}") };
        assert_eq!(*id, a.as_u64());
        assert_eq!(raw, "[{\"x\": garbage}]");
        let parsed = qmp_proto::RawJson::from_json(raw);
        assert!(parsed.is_err(), "the payload is not JSON");
        let b = d.exec("query-version", opts());
        assert_eq!(d.input(ret(b.as_u64(), "{}")), [ok(b, "{}")]);
    }
}

/// Text that is not JSON and JSON of an unknown shape are told apart (the latter with its id), whatever the
/// split of the input, and the session goes on.
#[test]
fn not_json_and_unknown_shape_are_told_apart() {
    let input = "{\"id\": 1e400x}\r\n[1, 2]\r\n{\"id\": 7, \"retrun\": {}}\r\n{\"event\": 1}\r\n";
    for chunk in [input.len(), 1, 5] {
        let mut d = qmp_ready();
        let a = d.exec("query-version", opts());
        let mut evs = Vec::new();
        for piece in input.as_bytes().chunks(chunk) {
            evs.extend(d.input(piece));
        }
        let shapes: Vec<_> = evs
            .iter()
            .map(|e| match e {
                Ev::NotJson { bytes, .. } => ("not-json", common::lossy(bytes), None),
                Ev::UnknownShape { bytes, id, .. } => ("unknown-shape", common::lossy(bytes), id.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            shapes,
            [
                ("not-json", "{\"id\": 1e400x}".to_owned(), None),
                ("unknown-shape", "[1, 2]".to_owned(), None),
                ("unknown-shape", "{\"id\": 7, \"retrun\": {}}".to_owned(), Some("7".to_owned())),
                ("unknown-shape", "{\"event\": 1}".to_owned(), None),
            ],
            "chunks of {chunk}"
        );
        assert_eq!(d.input(ret(a.as_u64(), "{}")), [ok(a, "{}")]);
    }
    let shown = qmp_proto::ProtocolViolation::UnknownShape {
        bytes: bytes::Bytes::from_static(b"{\"id\": 7}"),
        id: Some(RawJson::from_json("7").unwrap()),
        reason: "no return".into(),
    }
    .to_string();
    assert!(shown.contains("id 7") && shown.contains("no return"), "{shown}");
}

#[test]
fn pretty_multi_line_messages() {
    let pretty_greeting = "{\r\n    \"QMP\": {\r\n        \"version\": {\r\n            \"qemu\": {\r\n                \"micro\": 22,\r\n                \"minor\": 2,\r\n                \"major\": 7\r\n            },\r\n            \"package\": \"\"\r\n        },\r\n        \"capabilities\": [\r\n            \"oob\"\r\n        ]\r\n    }\r\n}\r\n";
    let pretty_reply = |id: u64| format!("{{\r\n    \"return\": {{\r\n    }},\r\n    \"id\": {id}\r\n}}\r\n");
    let pretty_event = "{\r\n    \"timestamp\": {\r\n        \"seconds\": 5,\r\n        \"microseconds\": 6\r\n    },\r\n    \"event\": \"STOP\"\r\n}\r\n";
    let pretty_error = |id: u64| {
        format!("{{\r\n    \"id\": {id},\r\n    \"error\": {{\r\n        \"class\": \"GenericError\",\r\n        \"desc\": \"d\"\r\n    }}\r\n}}\r\n")
    };
    let mut d = Driver::new(Config::qmp());
    assert_eq!(
        d.input_bytewise(pretty_greeting),
        [Ev::Greeting { version: "7.2.22".into(), caps: vec!["oob".into()] }]
    );
    assert_eq!(
        d.input_bytewise(format!("{pretty_event}{}", pretty_reply(1))),
        [Ev::Event { name: "STOP".into(), data: None, ts: Some((5, 6)) }, Ev::Ready { oob: true }]
    );
    let a = d.exec("stop", opts());
    let b = d.exec("nope", opts());
    let evs = d.input_bytewise(format!("{}{}", pretty_reply(a.as_u64()), pretty_error(b.as_u64())));
    assert_eq!(evs[0], ok(a, "{\r\n    }"));
    let Ev::ReplyErr { id, class, desc, .. } = &evs[1] else { panic!("{evs:?}") };
    assert_eq!((*id, class.as_str(), desc.as_str()), (b.as_u64(), "GenericError", "d"));
    assert_eq!(evs.len(), 2);
}

#[test]
fn lf_only_and_no_separators() {
    let mut d = Driver::new(Config::qmp());
    d.input(greeting(true).replace("\r\n", "\n"));
    d.input("{\"return\": {}, \"id\": 1}\n");
    let a = d.exec("a", opts());
    let b = d.exec("b", opts());
    // Back to back with no separator at all, then LF-only.
    let evs = d.input(format!("{{\"return\": 1, \"id\": {}}}{{\"return\": 2, \"id\": {}}}\n", a.as_u64(), b.as_u64()));
    assert_eq!(evs, [ok(a, "1"), ok(b, "2")]);
}

#[test]
fn ff_delimiter_between_messages_is_skipped() {
    let mut d = qmp_ready();
    let a = d.exec("a", opts());
    let mut bytes = vec![0xFF, b'\n'];
    bytes.extend_from_slice(ret(a.as_u64(), "3").as_bytes());
    bytes.push(0xFF);
    assert_eq!(d.input(&bytes), [ok(a, "3")]);
    // A 0xFF inside a message cuts it short; the next message still works.
    let b = d.exec("b", opts());
    let mut bytes = b"{\"return\": {\"x\"".to_vec();
    bytes.push(0xFF);
    bytes.extend_from_slice(ret(b.as_u64(), "4").as_bytes());
    assert_eq!(d.input(&bytes), [Ev::Truncated { len: 15 }, ok(b, "4")]);
}

#[test]
fn oversized_message_is_skipped_and_reported_and_the_next_works() {
    let limit = 256; // room for the greeting
    let mut d = Driver::new(Config::qmp().max_message_size(limit));
    d.handshake(true);
    let a = d.exec_with_deadline("query-qmp-schema", 10_000);
    let b = d.exec("query-version", opts());
    // An error puts its id first: an oversized one cannot be attributed, and is reported as a violation.
    let big_err =
        format!("{{\"id\": {a}, \"error\": {{\"class\": \"GenericError\", \"desc\": \"{}\"}}}}\r\n", "x".repeat(1000));
    let big_err_len = big_err.trim_end().len() as u64;
    // Byte by byte, then whole: the same.
    assert_eq!(d.input_bytewise(&big_err), [Ev::Oversized { len: big_err_len, limit }]);
    assert_eq!(d.input(&big_err), [Ev::Oversized { len: big_err_len, limit }]);
    // Its command is still waiting (the reply was lost); the next message works.
    assert_eq!(d.client.pending(), 2);
    assert_eq!(d.input(ret(b.as_u64(), "{}")), [ok(b, "{}")]);
    assert_eq!(d.at(10_000), [Ev::TimedOut { id: a.as_u64() }]);
    assert!(d.input(ret(a.as_u64(), "{}")).is_empty(), "late reply swallowed");
    assert_eq!(d.client.in_flight(), 0);

    // A success reply ends with its id: an oversized one ends its command with ReplyTooLarge at once.
    let c = d.exec_with_deadline("query-qmp-schema", 20_000);
    let big = ret(c.as_u64(), &format!("\"{}\"", "x".repeat(1000)));
    let big_len = big.trim_end().len() as u64;
    assert_eq!(d.input_bytewise(&big), [Ev::ReplyTooLarge { id: c.as_u64(), len: big_len, limit }]);
    assert_eq!(d.client.in_flight(), 0);
    assert_eq!(d.timeout, None, "its deadline is disarmed");
    // The same again is now an unknown id, reported as a plain oversized message.
    assert_eq!(d.input(&big), [Ev::Oversized { len: big_len, limit }]);
    // For a cancelled command it is swallowed like any late reply.
    let e = d.exec("query-qmp-schema", opts());
    assert!(d.cancel(e));
    assert!(d.input(ret(e.as_u64(), &format!("\"{}\"", "z".repeat(1000)))).is_empty());
    assert_eq!(d.client.in_flight(), 0);
    // Events can be oversized too.
    let big_ev = event("BIG", Some(&format!("{{\"s\": \"{}\"}}", "e".repeat(1000))), 1, 2);
    assert!(matches!(d.input(&big_ev).as_slice(), [Ev::Oversized { .. }]));

    // A message of exactly the limit is accepted.
    let f = d.exec("f", opts());
    let head = format!("{{\"id\": {f}, \"return\": \"");
    let exact = format!("{head}{}\"}}", "y".repeat(limit - head.len() - 2));
    assert_eq!(exact.len(), limit);
    let evs = d.input(&exact);
    assert!(matches!(evs.as_slice(), [Ev::ReplyOk { id, .. }] if *id == f.as_u64()), "{evs:?}");

    // The framer never buffers more than the limit, whatever the chunking.
    let input = format!("{big}{big_err}{}", ret(1, "{}"));
    for size in [1, 2, 7, 255, 256, 257, 4096] {
        let mut framer = Framer::new(limit);
        let mut frames = Vec::new();
        for chunk in input.as_bytes().chunks(size) {
            framer.feed(chunk, |f| frames.push(f));
            assert!(framer.buffered() <= limit, "chunk {size}: {} buffered", framer.buffered());
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], Frame::Oversized { len: big_len, id: Some(c.as_u64()) });
        assert_eq!(frames[1], Frame::Oversized { len: big_err_len, id: None });
        assert!(matches!(&frames[2], Frame::Message(m) if m.len() == 23));
    }
    // An oversized message cut by EOF: the EOF reports every byte of it that arrived, though the client kept
    // none of them.
    let mut client = Client::new(Config::guest_agent().max_message_size(limit), d.base);
    client.handle_input(&big.as_bytes()[..600]);
    client.handle_eof();
    let evs = common::drain(&mut client);
    let Some(Ev::Closed(ConnectionError::EofMidMessage { buffered })) = evs.last() else { panic!("{evs:?}") };
    assert_eq!(*buffered, 600);
}

#[test]
fn oversized_greeting_is_a_bad_greeting() {
    let mut d = Driver::new(Config::qmp().max_message_size(32));
    let evs = d.input(greeting(true));
    assert!(matches!(evs.as_slice(), [Ev::Closed(ConnectionError::BadGreeting(_))]), "{evs:?}");
}

#[test]
fn oversized_negotiation_reply_closes_at_once() {
    let mut d = Driver::new(Config::qmp().max_message_size(256));
    d.input(greeting(true));
    let reply = format!(r#"{{"return": {{"x": "{}"}}, "id": 1}}"#, "y".repeat(300));
    let evs = d.input(format!("{reply}\r\n"));
    assert!(
        matches!(evs.as_slice(), [Ev::Closed(ConnectionError::BadGreeting(why))] if why.contains("qmp_capabilities")),
        "{evs:?}"
    );
}

// ----- deadlines and cancellation --------------------------------------------------------------------------

#[test]
fn command_timeout_is_reported_once_and_the_late_reply_swallowed() {
    let mut d = qmp_ready();
    let a = d.exec_with_deadline("slow", 5_000);
    let b = d.exec_with_deadline("other", 8_000);
    assert_eq!(d.timeout, Some(d.deadline(5_000)));
    assert!(d.at(4_999).is_empty());
    assert_eq!(d.at(5_000), [Ev::TimedOut { id: a.as_u64() }]);
    assert_eq!(d.timeout, Some(d.deadline(8_000)));
    assert!(d.at(5_000).is_empty(), "reported once");
    assert!(d.at(7_000).is_empty());
    assert_eq!(d.client.in_flight(), 2, "QEMU still holds the timed-out command");
    assert_eq!(d.client.pending(), 1);
    assert!(!d.cancel(a), "already ended");
    // The late reply produces no event at all, and frees its slot.
    assert!(d.input(ret(a.as_u64(), "{}")).is_empty());
    assert_eq!(d.client.in_flight(), 1);
    assert_eq!(d.input(ret(b.as_u64(), "{}")), [ok(b, "{}")]);
    assert_eq!(d.timeout, None, "a replied command's deadline is disarmed");
    assert!(d.at(100_000).is_empty());
}

#[test]
fn queued_command_can_time_out_before_it_is_sent() {
    let mut d = Driver::new(Config::qmp().max_in_flight(1));
    d.handshake(true);
    let a = d.exec("a", opts());
    let b = d.exec_with_deadline("b", 1_000);
    assert_eq!(d.at(1_000), [Ev::TimedOut { id: b.as_u64() }]);
    assert_eq!(d.input(ret(a.as_u64(), "{}")), [ok(a, "{}")]);
    assert!(d.sent.iter().all(|c| c.name != "b"), "a timed-out queued command is never sent");
}

#[test]
fn cancel_of_a_queued_command_never_transmits_it() {
    let mut d = Driver::new(Config::qmp().max_in_flight(1));
    d.handshake(true);
    d.log.clear();
    let a = d.exec("a", opts());
    let b = d.exec_with_deadline("b", 1_000);
    let c = d.exec("c", opts());
    assert!(d.cancel(b));
    assert!(!d.cancel(b), "cancel twice");
    assert!(d.log.is_empty(), "cancel produces no event");
    assert_eq!(d.client.pending(), 2);
    assert_eq!(d.input(ret(a.as_u64(), "{}")), [ok(a, "{}")]);
    assert!(d.at(2_000).is_empty(), "no TimedOut for a cancelled command");
    let names: Vec<&str> = d.sent.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["qmp_capabilities", "a", "c"]);
    assert_eq!(d.input(ret(c.as_u64(), "{}")), [ok(c, "{}")]);
}

#[test]
fn cancel_of_an_in_flight_command_swallows_its_reply() {
    let mut d = qmp_ready();
    let a = d.exec_with_deadline("a", 1_000);
    assert!(d.cancel(a));
    assert_eq!(d.client.pending(), 0);
    assert_eq!(d.client.in_flight(), 1);
    assert_eq!(d.timeout, None, "its deadline is disarmed");
    assert!(d.at(5_000).is_empty());
    assert!(d.input(ret(a.as_u64(), "{}")).is_empty());
    assert!(d.log.is_empty());
    assert_eq!(d.client.in_flight(), 0);
    assert!(!d.cancel(a));
    assert!(!d.cancel(RequestId::clone(&a)));
}

// ----- flow control and OOB --------------------------------------------------------------------------------

#[test]
fn in_flight_never_exceeds_the_limit_and_oob_bypasses_it() {
    let mut d = qmp_ready();
    let ids: Vec<RequestId> = (0..20).map(|i| d.exec(&format!("cmd-{i}"), opts())).collect();
    let user_sent = |d: &Driver| d.sent.iter().filter(|c| c.name.starts_with("cmd-")).count();
    assert_eq!(user_sent(&d), 8);
    assert_eq!(d.client.in_flight(), 8);
    // An OOB command goes out at once, as exec-oob, and does not count.
    let o = d.exec("query-yank", opts().oob());
    let last = d.sent.last().expect("sent");
    assert!(last.oob && last.name == "query-yank" && last.id == o.as_u64());
    assert_eq!(d.client.in_flight(), 8);
    assert_eq!(d.input(ret(o.as_u64(), "[]")), [ok(o, "[]")]);
    // Replies come back one by one; each frees one slot for the next queued command, in order.
    for (k, id) in ids.iter().enumerate() {
        assert_eq!(d.input(ret(id.as_u64(), "{}")), [ok(*id, "{}")]);
        assert!(d.client.in_flight() <= 8);
        assert_eq!(user_sent(&d), (k + 9).min(20), "after {} replies", k + 1);
        let on_wire = user_sent(&d) - (k + 1);
        assert_eq!(d.client.in_flight(), on_wire);
    }
    let order: Vec<u64> = d.sent.iter().filter(|c| c.name.starts_with("cmd-")).map(|c| c.id).collect();
    assert_eq!(order, ids.iter().map(|i| i.as_u64()).collect::<Vec<_>>());
    assert_eq!(d.client.in_flight(), 0);
}

#[test]
fn max_in_flight_is_configurable() {
    let mut d = Driver::new(Config::qmp().max_in_flight(3));
    d.handshake(false);
    let ids: Vec<RequestId> = (0..5).map(|i| d.exec(&format!("c{i}"), opts())).collect();
    assert_eq!(d.sent.len(), 1 + 3);
    // Replies out of order free slots too.
    d.input(ret(ids[2].as_u64(), "{}"));
    assert_eq!(d.sent.len(), 1 + 4);
    d.input(ret(ids[0].as_u64(), "{}"));
    assert_eq!(d.sent.len(), 1 + 5);
    assert_eq!(d.client.in_flight(), 3);
}

#[test]
fn oob_before_negotiation_or_without_it_is_refused() {
    let mut d = Driver::new(Config::qmp());
    let e = d.client.execute("query-yank", None::<&()>, opts().oob()).expect_err("not negotiated yet");
    assert!(matches!(e, UsageError::OobNotNegotiated));
    d.input(greeting(true));
    let e = d.client.execute("query-yank", None::<&()>, opts().oob()).expect_err("still negotiating");
    assert!(matches!(e, UsageError::OobNotNegotiated));
    d.pump();
    assert_eq!(d.sent.len(), 1, "only qmp_capabilities");
    d.input(ret(1, "{}"));
    assert!(d.client.execute("query-yank", None::<&()>, opts().oob()).is_ok());
    let mut g = ga();
    let e = g.client.execute("guest-ping", None::<&()>, opts().oob()).expect_err("no oob in QGA");
    assert!(matches!(e, UsageError::OobInGuestAgentMode));
    g.pump();
    assert!(g.wire.is_empty());
}

// ----- EOF, close, limits ----------------------------------------------------------------------------------

#[test]
fn eof_mid_message_ends_every_pending_request_exactly_once() {
    let mut d = Driver::new(Config::qmp().max_in_flight(2));
    d.handshake(true);
    let ids: Vec<RequestId> = vec![
        d.exec("a", opts()),
        d.exec_with_deadline("b", 1_000),
        d.exec("c", opts()),
        d.exec("d", opts()),
        d.exec_with_deadline("e", 500),
    ];
    // e times out while queued; a is answered; b times out on the wire.
    assert_eq!(d.at(500), [Ev::TimedOut { id: ids[4].as_u64() }]);
    assert_eq!(d.input(ret(ids[0].as_u64(), "{}")), [ok(ids[0], "{}")]);
    assert_eq!(d.at(1_000), [Ev::TimedOut { id: ids[1].as_u64() }]);
    let pending_at_close = d.client.pending();
    assert_eq!(pending_at_close, 2, "c on the wire, d queued");
    let partial = "{\"return\": {\"status\": \"runn";
    assert!(d.input(partial).is_empty());
    let evs = d.eof();
    let cause = ConnectionError::EofMidMessage { buffered: partial.len() as u64 };
    assert_eq!(evs, [Ev::Closed(cause.clone())]);
    let ended = d.log.iter().filter_map(Ev::ends).count();
    assert_eq!(ended + pending_at_close, ids.len(), "every request ends exactly once: {:?}", d.log);
    let mut seen = std::collections::HashSet::new();
    assert!(d.log.iter().filter_map(Ev::ends).all(|id| seen.insert(id)));
    // Sticky: the same cause from every later call, and nothing more happens.
    assert_eq!(d.client.connection_error(), Some(&cause));
    let e = d.client.execute("x", None::<&()>, opts()).expect_err("closed");
    assert!(matches!(&e, UsageError::Closed(c) if *c == cause), "{e:?}");
    assert!(matches!(d.client.execute_raw("x", None, opts()), Err(UsageError::Closed(c)) if c == cause));
    assert!(d.input(ret(ids[2].as_u64(), "{}")).is_empty());
    assert!(d.eof().is_empty());
    d.client.close();
    d.client.handle_transport_error("late");
    assert!(d.pump().is_empty());
    assert!(d.at(1_000_000).is_empty());
    assert_eq!(d.client.pending(), 0);
    assert_eq!(d.client.in_flight(), 0);
    assert_eq!(d.client.connection_error(), Some(&cause));
}

#[test]
fn clean_eof_local_close_and_transport_error() {
    let mut d = qmp_ready();
    d.exec("a", opts());
    assert_eq!(d.eof(), [Ev::Closed(ConnectionError::Eof)]);
    let mut d = qmp_ready();
    d.client.close();
    assert_eq!(d.pump(), [Ev::Closed(ConnectionError::Local)]);
    let mut d = qmp_ready();
    d.client.handle_transport_error("reset by peer");
    assert_eq!(d.pump(), [Ev::Closed(ConnectionError::Transport("reset by peer".into()))]);
    assert!(matches!(d.client.guest_sync(1, opts()), Err(UsageError::Closed(ConnectionError::Transport(_)))));
}

#[test]
fn queue_full_at_max_pending() {
    let mut d = Driver::new(Config::guest_agent().max_pending(3).max_in_flight(1));
    let a = d.exec("a", opts());
    d.exec("b", opts());
    let c = d.exec("c", opts());
    let e = d.client.execute("d", None::<&()>, opts()).expect_err("full");
    assert!(matches!(e, UsageError::QueueFull { limit: 3 }), "{e:?}");
    assert!(matches!(d.client.guest_sync(1, opts()), Err(UsageError::QueueFull { limit: 3 })));
    // Cancelling a queued command makes room.
    assert!(d.cancel(c));
    let c2 = d.exec("c2", opts());
    // A cancelled command on the wire still counts until its reply comes.
    assert!(d.cancel(a));
    assert!(matches!(d.client.execute("d", None::<&()>, opts()), Err(UsageError::QueueFull { limit: 3 })));
    d.input(ret(a.as_u64(), "{}"));
    assert!(d.client.execute("d", None::<&()>, opts()).is_ok());
    d.pump();
    assert!(d.sent.iter().all(|cmd| cmd.name != "c"), "the cancelled queued command never went out");
    assert_eq!(d.client.pending(), 3, "b, c2, d");
    assert!(matches!(d.client.execute("e", None::<&()>, opts()), Err(UsageError::QueueFull { limit: 3 })));
    assert_eq!(d.sent.last().map(|cmd| cmd.id), Some(d.sent[1].id), "b is on the wire, c2 waits");
    // c never went out: c2 takes its wire id, yet the two requests stay distinct.
    assert_eq!(c2.as_u64(), c.as_u64());
    assert!(c2 != c && c2.serial() > c.serial());
}

#[test]
fn events_overflow_is_counted_and_replies_still_delivered() {
    let mut d = Driver::new(Config::qmp().max_queued_events(4));
    d.handshake(true);
    let a = d.exec("a", opts());
    let b = d.exec("b", opts());
    let ev = |i: i64| event("TICK", Some(&format!("{{\"n\": {i}}}")), i, 0);
    // 6 events, a's reply, 5 events, b's reply, an id-less error: all in one read, not drained in between.
    let mut input = String::new();
    (0..6).for_each(|i| input += &ev(i));
    input += &ret(a.as_u64(), "{}");
    (6..11).for_each(|i| input += &ev(i));
    input += &ret(b.as_u64(), "{}");
    input += &idless_err("x");
    d.client.handle_input(input.as_bytes());
    let evs = d.pump();
    let ticks: Vec<i64> =
        evs.iter().filter_map(|e| if let Ev::Event { ts, .. } = e { ts.map(|t| t.0) } else { None }).collect();
    assert_eq!(ticks, [0, 1, 2, 3], "the first max_queued_events are kept");
    assert_eq!(
        evs[4..],
        [
            Ev::EventsDropped { count: 2 },
            ok(a, "{}"),
            Ev::EventsDropped { count: 5 },
            ok(b, "{}"),
            Ev::EventsDropped { count: 1 }
        ],
        "{evs:?}"
    );
    let dropped: u64 = evs.iter().map(|e| if let Ev::EventsDropped { count } = e { *count } else { 0 }).sum();
    assert_eq!(dropped, 2 + 5 + 1);
    // Once drained, events flow again.
    assert_eq!(d.input(ev(99)).len(), 1);
    // Drained between reads: nothing is dropped.
    for i in 0..20 {
        assert_eq!(d.input(ev(i)).len(), 1);
    }
}

// ----- guest agent -----------------------------------------------------------------------------------------

#[test]
fn guest_agent_is_ready_at_construction() {
    let mut d = ga();
    assert!(d.client.is_ready() && !d.client.oob_enabled());
    assert!(d.client.greeting().is_none());
    assert_eq!(d.timeout, None, "no handshake in QGA");
    let p = d.exec("guest-ping", opts());
    assert_eq!(p.as_u64(), 1);
    assert_eq!(d.wire, br#"{"execute":"guest-ping","id":1}"#);
    assert_eq!(d.input("{\"return\": {}, \"id\": 1}\n"), [ok(p, "{}")]);
    // A greeting is not expected here.
    assert_eq!(d.input(greeting(false)), [Ev::UnexpectedGreeting]);
    assert!(matches!(Client::new(Config::qmp(), d.base).guest_sync(1, opts()), Err(UsageError::NotGuestAgent)));
}

/// `{"id": ID, "error": ...}` as qemu-ga writes it (LF only).
fn ga_err(id: RequestId, desc: &str) -> String {
    err(id.as_u64(), "GenericError", desc).replace("\r\n", "\n")
}

fn err_ev(id: RequestId, desc: &str) -> Ev {
    Ev::ReplyErr {
        id: id.as_u64(),
        class: "GenericError".into(),
        desc: desc.into(),
        raw: format!(r#"{{"class": "GenericError", "desc": "{desc}"}}"#),
    }
}

#[test]
fn replies_only_on_failure_names_the_silent_guest_agent_commands() {
    let ga = Config::guest_agent();
    for name in ["guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"] {
        assert!(ga.replies_only_on_failure(name), "{name}");
        assert!(!Config::qmp().replies_only_on_failure(name), "QMP has none: {name}");
    }
    for name in ["guest-ping", "guest-sync-delimited", "guest-shutdownx", ""] {
        assert!(!ga.replies_only_on_failure(name), "{name}");
    }
    assert_eq!(qmp_proto::DEFAULT_NO_REPLY_GRACE, std::time::Duration::from_secs(2));
}

/// Written, `guest-shutdown` waits; an error reply with its id ends it as `Err`, whatever the split.
#[test]
fn guest_shutdown_error_reply_ends_it() {
    let mut d = ga();
    let s = d.exec_args("guest-shutdown", &json!({"mode": "powerdown"}), opts().deadline(d.deadline(2_000)));
    assert_eq!(d.last_sent("guest-shutdown").args, Some(json!({"mode": "powerdown"})));
    assert_eq!(d.log.len(), 1, "nothing ends it when written: {:?}", d.log);
    assert_eq!(d.client.pending(), 1);
    assert_eq!(d.client.in_flight(), 0, "it holds no in-flight slot");
    let input = ga_err(s, "failed to execute shutdown");
    for chunk in [input.len(), 1, 9] {
        let mut d = ga();
        let s = d.exec("guest-shutdown", opts().deadline(d.deadline(2_000)));
        let mut evs = Vec::new();
        for piece in input.as_bytes().chunks(chunk) {
            evs.extend(d.input(piece));
        }
        assert_eq!(evs, [err_ev(s, "failed to execute shutdown")], "chunks of {chunk}");
        assert_eq!(d.client.pending(), 0);
        assert_eq!(d.timeout, None, "its deadline is disarmed");
        assert!(d.at(5_000).is_empty());
    }
}

/// EOF (or a transport error) ends a written silent command as a success, before `Closed`; other pending
/// requests end with the connection's error, and a silent command not written yet is not a success.
#[test]
fn guest_shutdown_succeeds_when_the_agent_goes_away() {
    for transport_error in [false, true] {
        let mut d = Driver::new(Config::guest_agent().max_in_flight(1));
        let p = d.exec("guest-ping", opts());
        let s = d.exec("guest-shutdown", opts());
        let r = d.exec("guest-suspend-ram", opts());
        assert_eq!(d.sent.len(), 1, "both wait behind guest-ping");
        assert_eq!(d.input(format!("{{\"return\": {{}}, \"id\": {p}}}\n")), [ok(p, "{}")]);
        assert_eq!(d.sent.len(), 3, "neither takes a slot: both are written at once");
        let q = d.exec("guest-info", opts());
        assert_eq!(d.sent.len(), 4);
        let _queued = d.exec("guest-ping", opts());
        assert_eq!(d.sent.len(), 4, "guest-info holds the slot");
        let evs = if transport_error {
            d.client.handle_transport_error("reset");
            d.pump()
        } else {
            d.eof()
        };
        let cause = if transport_error { ConnectionError::Transport("reset".into()) } else { ConnectionError::Eof };
        assert_eq!(evs, [ok(s, "{}"), ok(r, "{}"), Ev::Closed(cause)], "{q:?} ends with Closed");
    }
    // A local close is not the agent going away.
    let mut d = ga();
    d.exec("guest-shutdown", opts());
    d.client.close();
    assert_eq!(d.pump(), [Ev::Closed(ConnectionError::Local)]);
    // Nor is a silent command that never went out a success.
    let mut d = Driver::new(Config::guest_agent().max_in_flight(1));
    d.exec("guest-ping", opts());
    d.exec("guest-shutdown", opts());
    assert_eq!(d.eof(), [Ev::Closed(ConnectionError::Eof)]);
}

/// For a written silent command the deadline is the grace period: it ends as a success, not `TimedOut`.
/// Before it is written, its deadline is an ordinary one.
#[test]
fn guest_shutdown_deadline_is_the_grace_period() {
    let mut d = ga();
    let s = d.exec("guest-suspend-disk", opts().deadline(d.deadline(2_000)));
    let forever = d.exec("guest-suspend-hybrid", opts());
    assert!(d.at(1_999).is_empty());
    assert_eq!(d.at(2_000), [ok(s, "{}")]);
    assert!(!d.cancel(s), "already ended");
    // Its id stays reserved for a late error, which is swallowed when it comes (then the id is free again).
    assert_eq!(d.client.abandoned(), 1);
    let other = d.exec("guest-ping", opts());
    assert_ne!(other.as_u64(), s.as_u64(), "a newer command never takes an id a late reply may carry");
    assert!(d.input(ga_err(s, "late")).is_empty());
    assert_eq!(d.client.abandoned(), 0);
    assert_eq!(d.input(ret(other.as_u64(), "{}")), [ok(other, "{}")]);
    assert!(d.at(1_000_000).is_empty(), "no deadline: waits for an error or EOF");
    assert_eq!(d.client.pending(), 1);
    assert!(d.cancel(forever), "cancel ends it");
    assert_eq!(d.client.pending(), 0);

    let mut d = Driver::new(Config::guest_agent().max_in_flight(1));
    d.exec("guest-ping", opts());
    let s = d.exec("guest-shutdown", opts().deadline(d.deadline(100)));
    assert_eq!(d.at(100), [Ev::TimedOut { id: s.as_u64() }], "never written: timed out");
    assert_eq!(d.sent.len(), 1);
}

/// `expect_reply` overrides the default both ways, in both modes; a silent command that does get a success
/// reply ends with it.
#[test]
fn expect_reply_overrides_the_default() {
    let mut d = ga();
    let x = d.exec("guest-ping", opts().expect_reply(false));
    let y = d.exec("guest-shutdown", opts().expect_reply(true));
    assert_eq!(d.client.in_flight(), 1, "only guest-shutdown, which now expects a reply, holds a slot");
    assert_eq!(
        d.input(format!("{{\"return\": {{}}, \"id\": {x}}}\n{{\"return\": {{}}, \"id\": {y}}}\n")),
        [ok(x, "{}"), ok(y, "{}")]
    );
    let mut q = qmp_ready();
    let z = q.exec("quit", opts().expect_reply(false));
    assert!(q.log.is_empty());
    let w = q.exec("guest-shutdown", opts());
    assert_eq!(q.client.in_flight(), 1, "QMP has no silent commands by default");
    assert_eq!(q.input(format!("{}{}", ret(z.as_u64(), "{}"), ret(w.as_u64(), "{}"))), [ok(z, "{}"), ok(w, "{}")]);
}

/// A pending silent command does not hold back a resync, and its error reply, written by the agent before the
/// sync's marker, still ends it.
#[test]
fn guest_sync_does_not_wait_for_a_silent_command_and_routes_its_error() {
    for chunk in [usize::MAX, 1, 4] {
        let mut d = ga();
        let s = d.exec("guest-shutdown", opts());
        let sync = d.client.guest_sync(77, opts()).expect("guest_sync");
        d.pump();
        assert_eq!(d.last_sent("guest-sync-delimited").id, sync.as_u64(), "written at once");
        let mut input = ga_err(s, "no shutdown").into_bytes();
        input.extend_from_slice(idless_err("JSON parse error, stray '\\uFFFD'").replace("\r\n", "\n").as_bytes());
        input.push(0xFF);
        input.extend_from_slice(format!("{{\"return\": 77, \"id\": {sync}}}\n").as_bytes());
        let mut evs = Vec::new();
        for piece in input.chunks(chunk.min(input.len())) {
            evs.extend(d.input(piece));
        }
        assert_eq!(evs, [err_ev(s, "no shutdown"), ok(sync, "77")], "chunks of {chunk}");
    }
}

/// Stale bytes before the sync's 0xFF marker, the id-less error the client's own 0xFF provokes, and a stale
/// delimited reply with the wrong nonce are all discarded; the matching reply ends the sync.
#[test]
fn guest_sync_discards_everything_before_its_marker() {
    let mut d = ga();
    let nonce = 424_242;
    let s = d.client.guest_sync(nonce, opts().deadline(d.deadline(5_000))).expect("guest_sync");
    d.pump();
    let mut expect = vec![0xFF];
    expect.extend_from_slice(
        format!(r#"{{"execute":"guest-sync-delimited","arguments":{{"id":{nonce}}},"id":{s}}}"#).as_bytes(),
    );
    assert_eq!(d.wire, expect);
    assert!(d.sent[0].after_ff);
    // Other commands wait until the sync ends.
    let p = d.exec("guest-ping", opts());
    assert_eq!(d.sent.len(), 1);

    let mut input = Vec::new();
    input.extend_from_slice(b"{\"return\": {}, \"id\": 77}\n"); // a stale reply
    input.extend_from_slice(b"{\"return\": {\"half"); // a stale message cut by the agent's 0xFF
    input.push(0xFF);
    input.extend_from_slice(format!("{{\"return\": 1111, \"id\": {s}}}\n").as_bytes()); // stale sync, wrong nonce
    input.extend_from_slice(
        b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n",
    );
    input.push(0xFF);
    input.extend_from_slice(format!("{{\"return\": {nonce}, \"id\": {s}}}\n").as_bytes());
    let evs = d.input(&input);
    assert_eq!(evs, [ok(s, &nonce.to_string())], "only the sync's own reply");
    assert_eq!(d.timeout, None, "the sync's deadline is disarmed");
    // The waiting command goes out now, and input is routed normally again.
    assert_eq!(d.sent.last().map(|c| (c.name.as_str(), c.id)), Some(("guest-ping", p.as_u64())));
    assert!(!d.sent.last().unwrap().after_ff);
    assert_eq!(d.input(format!("{{\"return\": {{}}, \"id\": {p}}}\n")), [ok(p, "{}")]);
    assert_eq!(d.input(b"{\"return\": {}, \"id\": 77}\n"), [Ev::UnknownId { id: "77".into() }]);
}

#[test]
fn guest_sync_byte_by_byte_matches_whole() {
    let run = |bytewise: bool| {
        let mut d = ga();
        let s = d.client.guest_sync(9, opts()).expect("sync");
        d.pump();
        let mut input =
            b"{\"return\": {}, \"id\": 5}\n{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n".to_vec();
        input.push(0xFF);
        input.extend_from_slice(format!("{{\"return\": 9, \"id\": {s}}}\n").as_bytes());
        if bytewise {
            d.input_bytewise(&input)
        } else {
            d.input(&input)
        }
    };
    assert_eq!(run(true), run(false));
    assert_eq!(run(false).len(), 1);
}

#[test]
fn guest_sync_waits_for_commands_on_the_wire() {
    let mut d = ga();
    let p = d.exec("guest-ping", opts());
    let s = d.client.guest_sync(5, opts()).expect("sync");
    d.pump();
    assert_eq!(d.sent.len(), 1, "the sync waits for an empty pipe");
    assert_eq!(d.input(format!("{{\"return\": {{}}, \"id\": {p}}}\n")), [ok(p, "{}")]);
    assert_eq!(d.sent.last().map(|c| c.name.as_str()), Some("guest-sync-delimited"));
    let mut reply = vec![0xFF];
    reply.extend_from_slice(format!("{{\"return\": 5, \"id\": {s}}}\n").as_bytes());
    assert_eq!(d.input(&reply), [ok(s, "5")]);
}

#[test]
fn guest_sync_error_reply_ends_it() {
    let mut d = ga();
    let s = d.client.guest_sync(5, opts()).expect("sync");
    d.pump();
    let mut reply = vec![0xFF];
    reply.extend_from_slice(err(s.as_u64(), "GenericError", "nope").as_bytes());
    let evs = d.input(&reply);
    assert!(matches!(evs.as_slice(), [Ev::ReplyErr { id, .. }] if *id == s.as_u64()), "{evs:?}");
}

#[test]
fn guest_sync_timeout_releases_waiting_commands() {
    let mut d = ga();
    let s = d.client.guest_sync(5, opts().deadline(d.deadline(1_000))).expect("sync");
    d.pump();
    let p = d.exec("guest-ping", opts());
    assert_eq!(d.sent.len(), 1);
    assert_eq!(d.at(1_000), [Ev::TimedOut { id: s.as_u64() }]);
    assert_eq!(d.sent.last().map(|c| (c.name.as_str(), c.id)), Some(("guest-ping", p.as_u64())));
    // Input is no longer discarded.
    assert_eq!(d.input(format!("{{\"return\": {{}}, \"id\": {p}}}\n")), [ok(p, "{}")]);
}

/// Regression: cancelling a sync on the wire must release the commands waiting behind it at once, not at the
/// next unrelated input.
#[test]
fn guest_sync_cancel_releases_waiting_commands() {
    let mut d = ga();
    let s = d.client.guest_sync(5, opts()).expect("sync");
    d.pump();
    let p = d.exec("guest-ping", opts());
    assert_eq!(d.sent.len(), 1);
    assert!(d.cancel(s));
    assert_eq!(d.sent.last().map(|c| (c.name.as_str(), c.id)), Some(("guest-ping", p.as_u64())));
    assert_eq!(d.input(format!("{{\"return\": {{}}, \"id\": {p}}}\n")), [ok(p, "{}")]);
}

/// Regression: cancelling a sync that waits at the head of the queue releases the commands behind it at once.
#[test]
fn guest_sync_cancel_while_queued_releases_commands_behind_it() {
    let mut d = ga();
    let p = d.exec("guest-ping", opts());
    let s = d.client.guest_sync(5, opts()).expect("sync");
    d.pump();
    let q = d.exec("guest-info", opts());
    assert_eq!(d.sent.len(), 1, "the sync waits for guest-ping, guest-info waits behind the sync");
    assert!(d.cancel(s));
    assert_eq!(d.sent.last().map(|c| (c.name.as_str(), c.id)), Some(("guest-info", q.as_u64())));
    assert!(d.sent.iter().all(|c| c.name != "guest-sync-delimited"));
    let replies = format!("{{\"return\": {{}}, \"id\": {p}}}\n{{\"return\": {{}}, \"id\": {q}}}\n");
    assert_eq!(d.input(replies), [ok(p, "{}"), ok(q, "{}")]);
}

/// Regression: a sync must be able to recover an agent that never answers an abandoned command (it crashed,
/// or was restarted): the sync's 0xFF makes those replies moot, so it must not wait for them.
#[test]
fn guest_sync_does_not_wait_for_abandoned_commands() {
    let mut d = ga();
    let old = d.client.guest_sync(1, opts().deadline(d.deadline(1_000))).expect("sync");
    d.pump();
    let stuck = d.exec_with_deadline("guest-fsfreeze-freeze", 1_000);
    assert_eq!(d.at(1_000), [Ev::TimedOut { id: old.as_u64() }, Ev::TimedOut { id: stuck.as_u64() }]);
    // The agent answers neither. A new sync goes out at once anyway.
    let s = d.client.guest_sync(2, opts().deadline(d.deadline(2_000))).expect("sync");
    d.pump();
    assert_eq!(d.sent.last().map(|c| (c.name.as_str(), c.id)), Some(("guest-sync-delimited", s.as_u64())));
    assert!(d.sent.last().unwrap().after_ff);
    // Late answers to the abandoned commands, before the new marker, are discarded silently.
    let mut input = format!("{{\"return\": {{}}, \"id\": {stuck}}}\n").into_bytes();
    input.push(0xFF);
    input.extend_from_slice(format!("{{\"return\": 1, \"id\": {old}}}\n").as_bytes());
    input.push(0xFF);
    input.extend_from_slice(format!("{{\"return\": 2, \"id\": {s}}}\n").as_bytes());
    assert_eq!(d.input(&input), [ok(s, "2")]);
    assert_eq!(d.client.in_flight(), 0);
    let p = d.exec("guest-ping", opts());
    assert_eq!(d.input(format!("{{\"return\": {{}}, \"id\": {p}}}\n")), [ok(p, "{}")]);
}

/// Regression: a stale delimited reply that carries another client's id (an earlier connection's sync) is
/// stale input too, not a violation, and the sync keeps waiting for its own marker.
#[test]
fn guest_sync_ignores_a_stale_delimited_reply_with_a_foreign_id() {
    let mut d = ga();
    let s = d.client.guest_sync(7, opts()).expect("sync");
    d.pump();
    let mut input = vec![0xFF];
    input.extend_from_slice(b"{\"return\": 3, \"id\": \"d2\"}\n");
    input.extend_from_slice(
        b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n",
    );
    input.push(0xFF);
    input.extend_from_slice(b"{\"return\": 3}\n");
    input.push(0xFF);
    input.extend_from_slice(format!("{{\"return\": 7, \"id\": {s}}}\n").as_bytes());
    assert_eq!(d.input(&input), [ok(s, "7")]);
}

// ----- guest agent: sync on connect -------------------------------------------------------------------------

fn ga_synced(nonce: u32) -> Driver {
    Driver::new(Config::guest_agent().sync_on_connect(nonce))
}

/// The agent's answer to the client's own 0xFF and sync: the id-less parse error the 0xFF provokes, then the
/// delimited reply.
fn sync_answer(nonce: u32, id: u64) -> Vec<u8> {
    let mut b = idless_err("JSON parse error, stray '\\uFFFD'").replace("\r\n", "\n").into_bytes();
    b.push(0xFF);
    b.extend_from_slice(format!("{{\"return\": {nonce}, \"id\": {id}}}\n").as_bytes());
    b
}

/// The sync goes out first thing; `Ready` and the commands issued meanwhile wait for the echoed nonce,
/// whatever the split of the agent's answer (stale bytes and a stale delimited reply before it included).
#[test]
fn sync_on_connect_sends_the_sync_and_ready_waits_for_its_reply() {
    let nonce = 31_337;
    let mut input = b"{\"return\": {}, \"id\": 99}\n".to_vec(); // left by an earlier client
    input.push(0xFF);
    input.extend_from_slice(b"{\"return\": 5, \"id\": 1}\n"); // an earlier client's sync, also id 1
    input.extend_from_slice(&sync_answer(nonce, 1));
    for chunk in [usize::MAX, 1, 3, 17] {
        let mut d = ga_synced(nonce);
        assert!(d.log.is_empty(), "no Ready yet: {:?}", d.log);
        assert!(!d.client.is_ready());
        let mut expect = vec![0xFF];
        expect.extend_from_slice(br#"{"execute":"guest-sync-delimited","arguments":{"id":31337},"id":1}"#);
        assert_eq!(d.wire, expect);
        assert_eq!(d.timeout, Some(d.deadline(10_000)), "the default handshake deadline");
        assert_eq!((d.client.pending(), d.client.in_flight()), (0, 1), "the client's own request");
        let p = d.exec("guest-ping", opts());
        assert_eq!(d.sent.len(), 1, "commands wait for the sync");
        let mut evs = Vec::new();
        for piece in input.chunks(chunk.min(input.len())) {
            evs.extend(d.input(piece));
        }
        assert_eq!(evs, [Ev::Ready { oob: false }], "chunks of {chunk}");
        assert!(d.client.is_ready());
        assert_eq!(d.timeout, None, "the handshake deadline is disarmed");
        assert_eq!(d.sent.last().map(|c| (c.name.as_str(), c.id)), Some(("guest-ping", p.as_u64())));
        assert_eq!(d.input(format!("{{\"return\": {{}}, \"id\": {p}}}\n")), [ok(p, "{}")]);
    }
}

#[test]
fn sync_on_connect_times_out_at_the_handshake_deadline() {
    let mut d = Driver::new(Config::guest_agent().sync_on_connect(7).handshake_timeout(Some(Duration::from_secs(3))));
    let p = d.exec("guest-ping", opts());
    assert!(d.at(2_999).is_empty());
    assert_eq!(d.at(3_000), [Ev::Closed(ConnectionError::SyncTimeout)]);
    assert!(!d.client.cancel(p), "ended by Closed");
    assert_eq!(d.sent.len(), 1, "the waiting command never went out");
    // No deadline: waits for ever.
    let mut d = Driver::new(Config::guest_agent().sync_on_connect(7).handshake_timeout(None));
    assert_eq!(d.timeout, None);
    assert!(d.at(1_000_000_000).is_empty());
    assert_eq!(d.input(sync_answer(7, 1)), [Ev::Ready { oob: false }]);
}

#[test]
fn sync_on_connect_error_or_oversized_reply_closes() {
    let mut d = ga_synced(7);
    let mut input = vec![0xFF];
    input.extend_from_slice(err(1, "CommandNotFound", "no sync").replace("\r\n", "\n").as_bytes());
    assert_eq!(d.input(input), [Ev::Closed(ConnectionError::SyncFailed("CommandNotFound: no sync".into()))]);
    let mut d = Driver::new(Config::guest_agent().sync_on_connect(7).max_message_size(40));
    let mut input = vec![0xFF];
    input.extend_from_slice(format!("{{\"return\": 7, \"pad\": \"{}\", \"id\": 1}}\n", "x".repeat(50)).as_bytes());
    let evs = d.input(input);
    assert!(
        matches!(evs.as_slice(), [Ev::Closed(ConnectionError::SyncFailed(why))] if why.contains("over")),
        "{evs:?}"
    );
}

/// Without `sync_on_connect` nothing changes: ready at once, no deadline (though the config has one).
#[test]
fn guest_agent_without_sync_on_connect_is_ready_at_once() {
    let d = ga();
    assert_eq!(d.timeout, None);
    assert!(d.wire.is_empty());
    // QMP mode ignores it.
    let mut q = Driver::new(Config::qmp().sync_on_connect(5));
    assert!(q.wire.is_empty());
    q.handshake(false);
}

/// The connect-time sync is the client's own: it takes no `max_pending` place, and a user's `guest_sync`
/// issued meanwhile runs after `Ready`.
#[test]
fn sync_on_connect_takes_no_pending_place() {
    let mut d = Driver::new(Config::guest_agent().sync_on_connect(1).max_pending(1));
    let s = d.client.guest_sync(2, opts()).expect("room for one");
    d.pump();
    assert!(matches!(d.client.execute("x", None::<&()>, opts()), Err(UsageError::QueueFull { limit: 1 })));
    assert_eq!(d.input(sync_answer(1, 1)), [Ev::Ready { oob: false }]);
    assert_eq!(d.last_sent("guest-sync-delimited").id, s.as_u64());
    assert_eq!(d.input(sync_answer(2, s.as_u64())), [ok(s, "2")]);
}

// ----- memory ------------------------------------------------------------------------------------------------

/// A 9 MiB reply split across reads needs a 9 MiB buffer while it arrives; once it is out, the client keeps
/// less than 64 KiB, whatever the split. Whole, it needs no buffer at all.
#[test]
fn a_big_reply_does_not_pin_its_buffer() {
    let payload = format!("\"{}\"", "x".repeat(9 << 20));
    for chunk in [usize::MAX, 65_536, 4_093] {
        let mut d = qmp_ready();
        assert_eq!(d.client.buffered_capacity(), 0, "idle: nothing buffered");
        let a = d.exec("guest-file-read", opts());
        let input = ret(a.as_u64(), &payload);
        let mut peak = 0;
        let mut evs = Vec::new();
        for piece in input.as_bytes().chunks(chunk.min(input.len())) {
            evs.extend(d.input(piece));
            peak = peak.max(d.client.buffered_capacity());
        }
        assert!(matches!(&evs[..], [Ev::ReplyOk { id, raw }] if *id == a.as_u64() && raw.len() == payload.len()));
        if chunk != usize::MAX {
            assert!(peak >= 9 << 20, "chunks of {chunk}: peak {peak}");
        }
        assert!(d.client.buffered_capacity() < 64 * 1024, "chunks of {chunk}: {}", d.client.buffered_capacity());
        let b = d.exec("query-status", opts());
        assert_eq!(d.input_bytewise(ret(b.as_u64(), "{}")), [ok(b, "{}")]);
    }
    // Byte by byte, a reply just over the 64 KiB kept.
    let mut d = qmp_ready();
    let a = d.exec("x", opts());
    let evs = d.input_bytewise(ret(a.as_u64(), &format!("\"{}\"", "y".repeat(100_000))));
    assert_eq!(evs.len(), 1);
    assert_eq!(d.client.buffered_capacity(), 0);
}

// ----- misc ------------------------------------------------------------------------------------------------

#[test]
fn spurious_handle_timeout_calls_are_harmless() {
    let mut d = Driver::new(Config::qmp());
    for ms in [0, 1, 0, 9_999, 5] {
        assert!(d.at(ms).is_empty(), "at {ms}");
        assert_eq!(d.timeout, Some(d.deadline(10_000)));
    }
    d.handshake(true);
    d.log.clear();
    let a = d.exec_with_deadline("a", 20_000);
    for ms in [10_000, 10_000, 19_999, 15_000] {
        assert!(d.at(ms).is_empty(), "at {ms}");
        assert_eq!(d.timeout, Some(d.deadline(20_000)));
    }
    // Calling it with no deadline armed at all.
    assert_eq!(d.input(ret(a.as_u64(), "{}")), [ok(a, "{}")]);
    assert_eq!(d.timeout, None);
    for ms in [0, 30_000, 30_000] {
        assert!(d.at(ms).is_empty());
    }
    // Going back in time after a deadline is harmless too.
    let b = d.exec_with_deadline("b", 40_000);
    assert!(d.at(10).is_empty());
    assert_eq!(d.at(50_000), [Ev::TimedOut { id: b.as_u64() }]);
    assert!(d.at(40_000).is_empty());
}

#[test]
fn arguments_are_compact_and_omitted_when_empty() {
    let mut d = ga();
    let mark = |d: &Driver| d.wire.len();
    let check = |d: &mut Driver, at: usize, expect: String| assert_eq!(common::lossy(&d.wire[at..]), expect);

    let at = mark(&d);
    let args = json!({"path": "/bin/true", "arg": ["-a", "b c"], "capture-output": true});
    let id = d.exec_args("guest-exec", &args, opts());
    // The members come in serde_json's map order (sorted, or insertion order when a crate in the build enables
    // `preserve_order`); what matters is no whitespace at all.
    let compact = serde_json::to_string(&args).unwrap();
    assert!(!compact.contains(' ') || compact.contains("b c"));
    check(&mut d, at, format!(r#"{{"execute":"guest-exec","arguments":{compact},"id":{id}}}"#));
    for empty in [json!({}), json!(null)] {
        let at = mark(&d);
        let id = d.exec_args("guest-ping", &empty, opts());
        check(&mut d, at, format!(r#"{{"execute":"guest-ping","id":{id}}}"#));
    }
    let at = mark(&d);
    let id = d.client.execute("guest-ping", Some(&()), opts()).expect("unit args");
    d.pump();
    check(&mut d, at, format!(r#"{{"execute":"guest-ping","id":{id}}}"#));
    #[derive(serde::Serialize)]
    struct Args<'a> {
        id: u64,
        name: &'a str,
    }
    let at = mark(&d);
    let id = d.client.execute("x", Some(&Args { id: 3, name: "é\"" }), opts()).expect("struct args");
    d.pump();
    check(&mut d, at, format!(r#"{{"execute":"x","arguments":{{"id":3,"name":"é\""}},"id":{id}}}"#));
    // Raw arguments: as given, and omitted when `{}`.
    let at = mark(&d);
    let raw = RawJson::from_json(r#"{"a": 1}"#).expect("json");
    let id = d.client.execute_raw("y", Some(&raw), opts()).expect("raw");
    d.pump();
    check(&mut d, at, format!(r#"{{"execute":"y","arguments":{{"a": 1}},"id":{id}}}"#));
    let at = mark(&d);
    let id = d.client.execute_raw("y", Some(&RawJson::from_json("{}").expect("json")), opts()).expect("raw");
    d.pump();
    check(&mut d, at, format!(r#"{{"execute":"y","id":{id}}}"#));
    // Errors: nothing queued, nothing sent.
    let at = mark(&d);
    let pending = d.client.pending();
    assert!(matches!(d.client.execute("x", Some(&json!([1])), opts()), Err(UsageError::InvalidArguments(_))));
    assert!(matches!(d.client.execute("x", Some(&"s"), opts()), Err(UsageError::InvalidArguments(_))));
    assert!(matches!(
        d.client.execute_raw("x", Some(&RawJson::from_json("[1]").expect("json")), opts()),
        Err(UsageError::InvalidArguments(_))
    ));
    assert!(matches!(d.client.execute("", None::<&()>, opts()), Err(UsageError::EmptyCommand)));
    d.pump();
    assert_eq!(mark(&d), at);
    assert_eq!(d.client.pending(), pending);
    // Names that need escaping are escaped.
    let id = d.exec("a\"b\\c", opts());
    assert_eq!(d.sent.last().map(|c| (c.name.as_str(), c.id)), Some(("a\"b\\c", id.as_u64())));
}

#[test]
fn poll_transmit_appends_whole_messages() {
    let mut d = qmp_ready();
    let mut out = b"prefix".to_vec();
    d.client.execute("a", None::<&()>, opts()).expect("a");
    d.client.execute("b", None::<&()>, opts()).expect("b");
    while d.client.poll_event().is_some() {}
    let n = d.client.poll_transmit(&mut out);
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(n, out.len() - 6);
    assert_eq!(common::commands(&out[6..]).len(), 2);
    assert_eq!(d.client.poll_transmit(&mut out), 0, "nothing twice");
}

#[test]
fn every_event_is_reachable_through_the_public_enum() {
    // A compile-time check that the event type is matchable from outside with a wildcard.
    let mut c = Client::new(Config::guest_agent(), std::time::Instant::now());
    let ev = c.poll_event().expect("Ready");
    assert!(matches!(ev, ClientEvent::Ready { oob: false }));
}

// ----- wire ids ------------------------------------------------------------------------------------------------

/// However many commands a connection carries, sequential ones go out with id 1 and 8 pipelined ones with 1..=8.
#[test]
fn ids_stay_small_on_a_long_connection() {
    let mut d = qmp_ready();
    for n in 0..10_000u64 {
        let id = d.exec("query-status", opts());
        assert_eq!(id.as_u64(), 1);
        assert_eq!(id.serial(), n + 2, "serials count every request, qmp_capabilities first");
        assert_eq!(d.input(ret(1, "{}")), [ok(id, "{}")]);
    }
    for _ in 0..1_000 {
        let ids: Vec<RequestId> = (0..8).map(|_| d.exec("query-status", opts())).collect();
        assert_eq!(ids.iter().map(|id| id.as_u64()).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
        for id in ids.iter().rev() {
            assert_eq!(d.input(ret(id.as_u64(), "{}")), [ok(*id, "{}")]);
        }
    }
    assert!(d.wire.len() < 40 * 18_001, "every command carries a one-digit id");
}

/// A command cancelled or timed out on the wire keeps its id until its late reply comes, which is swallowed;
/// only then is the id free. A command cancelled before it was written frees its id at once.
#[test]
fn an_abandoned_command_keeps_its_id_until_its_late_reply() {
    let mut d = qmp_ready();
    let slow = d.exec("query-block", opts().deadline(d.deadline(100)));
    let cancelled = d.exec("query-status", opts());
    assert_eq!((slow.as_u64(), cancelled.as_u64()), (1, 2));
    assert_eq!(d.at(100), [Ev::TimedOut { id: 1 }]);
    assert!(d.cancel(cancelled));
    assert_eq!(d.client.abandoned(), 2);
    let next = d.exec("query-name", opts());
    assert_eq!(next.as_u64(), 3, "1 and 2 may still be answered");
    // The late replies are swallowed, not taken for a newer command's; then their ids are free.
    assert!(d.input(ret(2, r#"{"late": true}"#)).is_empty());
    assert_eq!(d.exec("query-uuid", opts()).as_u64(), 2);
    assert!(d.input(err(1, "GenericError", "late")).is_empty());
    assert_eq!(d.client.abandoned(), 0);
    assert_eq!(d.exec("query-kvm", opts()).as_u64(), 1);
    // Cancelled in the queue (one in flight at most): never written, so its id is free at once.
    let mut d = Driver::new(Config::qmp().max_in_flight(1));
    d.handshake(false);
    let first = d.exec("a", opts());
    let queued = d.exec("b", opts());
    assert!(d.cancel(queued));
    assert_eq!(d.exec("c", opts()).as_u64(), queued.as_u64());
    assert_eq!(first.as_u64(), 1);
}

/// The bound on reserved ids: abandoned commands hold their `max_pending` places until their late replies come;
/// at the bound `execute` returns `QueueFull`, and a late reply frees one place (and its id) again.
#[test]
fn reserved_ids_are_bounded_by_max_pending() {
    let mut d = Driver::new(Config::qmp().max_pending(3));
    d.handshake(false);
    let ids: Vec<RequestId> = (0..3).map(|_| d.exec("query-status", opts().deadline(d.deadline(10)))).collect();
    assert_eq!(d.at(10).len(), 3, "all three timed out");
    assert_eq!((d.client.pending(), d.client.abandoned()), (0, 3));
    let full = d.client.execute("query-status", None::<&()>, opts());
    assert!(matches!(full, Err(UsageError::QueueFull { limit: 3 })), "{full:?}");
    assert!(d.input(ret(ids[1].as_u64(), "{}")).is_empty());
    let again = d.exec("query-status", opts());
    assert_eq!(again.as_u64(), ids[1].as_u64(), "the freed id, the smallest free one");
    assert_eq!(d.input(ret(again.as_u64(), "{}")), [ok(again, "{}")]);
    // Closing frees everything.
    d.client.close();
    d.pump();
    assert_eq!(d.client.abandoned(), 0);
}

/// Guest agent: a resync frees the ids of abandoned commands, since the agent answers everything it read before
/// the sync first, and the client discards that up to the sync's marker.
#[test]
fn a_resync_frees_abandoned_ids() {
    let mut d = ga();
    let lost = d.exec("guest-info", opts().deadline(d.deadline(10)));
    let shutdown = d.exec("guest-shutdown", opts());
    assert!(d.cancel(shutdown), "written, answered only on failure: cancelled");
    assert_eq!(d.at(10), [Ev::TimedOut { id: lost.as_u64() }]);
    assert_eq!(d.client.abandoned(), 2);
    let sync = d.client.guest_sync(77, opts()).expect("sync");
    d.pump();
    assert_eq!(d.client.abandoned(), 0);
    assert_eq!(sync.as_u64(), 3, "taken while 1 and 2 were reserved");
    let evs = d.input(b"\xff{\"return\": 77, \"id\": 3}\n");
    assert!(matches!(evs.as_slice(), [Ev::ReplyOk { id: 3, .. }]), "{evs:?}");
    assert_eq!(d.exec("guest-ping", opts()).as_u64(), 1);
}
