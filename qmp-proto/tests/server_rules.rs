//! Rules of the server role, one test each: limits, ordering, OOB, the guest agent, bounds, misuse, and our own
//! Client against our Server in memory. Byte-exact texts of everything the corpus records are checked in
//! `server_corpus.rs`; these cover what the corpus does not show.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use qmp_proto::server::{CloseReason, Command, Event, EventOutcome, Failure, Server, ServerConfig, ServerUsageError};
use qmp_proto::{Client, ClientEvent, Config, ExecuteOptions, Timestamp};
use serde_json::{json, Value};

fn take(server: &mut Server) -> String {
    let mut out = Vec::new();
    server.poll_transmit(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn commands(server: &mut Server) -> Vec<Command> {
    let mut cmds = Vec::new();
    while let Some(ev) = server.poll_event() {
        if let Event::Command(c) = ev {
            cmds.push(c);
        }
    }
    cmds
}

/// A negotiated QMP server (OOB enabled when `oob`), its greeting and negotiation reply already taken.
fn negotiated(cfg: ServerConfig, oob: bool) -> Server {
    let mut s = Server::new(cfg);
    take(&mut s);
    let neg: &[u8] = if oob {
        br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#
    } else {
        br#"{"execute":"qmp_capabilities"}"#
    };
    s.handle_input(neg);
    assert_eq!(take(&mut s), "{\"return\": {}}\r\n");
    assert!(matches!(s.poll_event(), Some(Event::Negotiated { oob: o }) if o == oob));
    s
}

const TS: Timestamp = Timestamp { seconds: 1, microseconds: 2 };

#[test]
fn greeting_is_configurable() {
    let mut s = Server::new(ServerConfig::qmp().version(7, 2, 22, "pkg").capabilities(Vec::<String>::new()));
    assert_eq!(
        take(&mut s),
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": \"pkg\"}, \
         \"capabilities\": []}}\r\n"
    );
    // oob not offered: enabling it is refused as QEMU refuses it, and negotiation can be retried.
    s.handle_input(br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":1}"#);
    assert_eq!(
        take(&mut s),
        "{\"id\": 1, \"error\": {\"class\": \"GenericError\", \"desc\": \"Capability oob not available\"}}\r\n"
    );
    s.handle_input(br#"{"execute":"qmp_capabilities","arguments":{"enable":"oob"},"id":2}"#);
    assert!(take(&mut s).contains("Invalid parameter type for 'enable', expected: array"));
    s.handle_input(br#"{"execute":"qmp_capabilities","arguments":{"enable":[1]},"id":3}"#);
    assert!(take(&mut s).contains("Invalid parameter type for 'enable[0]', expected: string"));
    s.handle_input(br#"{"execute":"qmp_capabilities","arguments":{"x":1},"id":4}"#);
    assert!(take(&mut s).contains("Parameter 'x' is unexpected"));
    s.handle_input(br#"{"execute":"qmp_capabilities","id":5}"#);
    assert_eq!(take(&mut s), "{\"return\": {}, \"id\": 5}\r\n");
    assert!(!s.oob_enabled());
}

#[test]
fn nesting_beyond_1024_is_refused_idless() {
    let mut s = negotiated(ServerConfig::qmp(), false);
    s.handle_input(&[b'['; 1024]);
    assert_eq!(take(&mut s), "");
    s.handle_input(b"[");
    assert_eq!(
        take(&mut s),
        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, JSON nesting depth limit exceeded\"}}\r\n"
            .replace("JSON parse error, ", "")
    );
    // 1024 levels are fine.
    let mut ok = Vec::new();
    ok.extend_from_slice(br#"{"execute":"x","id":"#);
    ok.extend(std::iter::repeat_n(b'[', 1023));
    ok.extend(std::iter::repeat_n(b']', 1023));
    ok.push(b'}');
    let mut s = negotiated(ServerConfig::qmp(), false);
    s.handle_input(&ok);
    let cmds = commands(&mut s);
    assert_eq!(cmds.len(), 1);
    s.reply(cmds[0].token, Ok(json!({}))).unwrap();
    assert!(take(&mut s).starts_with("{\"return\": {}, \"id\": [[[["));
}

#[test]
fn message_size_limit_is_qemus_token_size_error() {
    let mut s = negotiated(ServerConfig::qmp().max_message_size(64), false);
    let mut big = br#"{"execute":"x","arguments":{"a":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 100));
    big.extend_from_slice(br#""}}"#);
    s.handle_input(&big);
    let out = take(&mut s);
    assert!(
        out.starts_with("{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON token size limit exceeded\"}}\r\n")
    );
    // The session goes on.
    s.handle_input(b"\x01{\"execute\":\"y\",\"id\":1}");
    let cmds = commands(&mut s);
    assert_eq!(cmds.last().map(|c| c.name()), Some("y"));
}

#[test]
fn without_oob_one_command_at_a_time_and_reading_stops() {
    let mut s = negotiated(ServerConfig::qmp(), false);
    s.handle_input(br#"{"execute":"a","id":1}{"execute":"b","id":2}{"exec-oob":"c","id":3}"#);
    let first = commands(&mut s);
    assert_eq!(first.iter().map(|c| c.name()).collect::<Vec<_>>(), ["a"]);
    assert!(!s.wants_input(), "QEMU reads nothing while a command is processed without OOB");
    assert_eq!(take(&mut s), "");
    s.reply(first[0].token, Ok(json!(1))).unwrap();
    let second = commands(&mut s);
    assert_eq!(second.iter().map(|c| c.name()).collect::<Vec<_>>(), ["b"]);
    s.reply(second[0].token, Err(Failure::generic("nope"))).unwrap();
    // The exec-oob was read only now, and refused as QEMU refuses it without OOB.
    assert_eq!(
        take(&mut s),
        "{\"return\": 1, \"id\": 1}\r\n\
         {\"id\": 2, \"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\r\n\
         {\"id\": 3, \"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member 'exec-oob' is unexpected\"}}\r\n"
    );
    assert!(s.wants_input());
}

/// Answers the commands waiting, with `{}`; returns their names.
fn answer_all(s: &mut Server) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(ev) = s.poll_event() {
        if let Event::Command(c) = ev {
            names.push(c.name().to_owned());
            s.reply(c.token, Ok(json!({}))).unwrap();
        }
    }
    names
}

#[test]
fn a_command_cut_by_the_end_of_a_read_waits_for_the_next() {
    let mut s = negotiated(ServerConfig::qmp(), false);
    // The read ends within the second command: the server still wants input, and reads it once the rest comes.
    s.handle_input(br#"{"execute":"a","id":1}{"execute":"b","#);
    assert_eq!(answer_all(&mut s), ["a"]);
    assert!(s.wants_input(), "the start of a message is kept, and more input wanted");
    s.handle_input(br#""id":2}"#);
    assert_eq!(answer_all(&mut s), ["b"]);
    assert_eq!(take(&mut s), "{\"return\": {}, \"id\": 1}\r\n{\"return\": {}, \"id\": 2}\r\n");
    // What the lexer reports in the cut bytes is reported at once, as QEMU reports it (`00`); a whole message
    // the fast path does not read (`1.5`) is answered at once too.
    s.handle_input(br#"{"execute":"c","id":3}{"execute":"d","id":00"#);
    assert_eq!(answer_all(&mut s), ["c"]);
    assert!(take(&mut s).contains("\"error\""), "the parse error without more input");
    let mut s = negotiated(ServerConfig::qmp(), false);
    s.handle_input(br#"{"execute":"e","id":1}{"execute":"f","id":1.5}"#);
    assert_eq!(answer_all(&mut s), ["e", "f"]);
    assert!(s.wants_input());
    // A message longer than the read that cut it goes to the lexer, which reads it as it comes.
    let mut s = negotiated(ServerConfig::qmp(), false);
    s.handle_input(br#"{"execute":"g","id":1}{"execute":"h","arguments":{"#);
    s.handle_input(br#""a":1}"#);
    assert_eq!(answer_all(&mut s), ["g"]);
    s.handle_input(br#","id":2}"#);
    assert_eq!(answer_all(&mut s), ["h"]);
    assert_eq!(take(&mut s), "{\"return\": {}, \"id\": 1}\r\n{\"return\": {}, \"id\": 2}\r\n");
}

#[test]
fn with_oob_eight_wait_and_oob_overtakes() {
    let mut s = negotiated(ServerConfig::qmp(), true);
    let mut input = Vec::new();
    for i in 0..12 {
        input.extend_from_slice(format!(r#"{{"execute":"slow","id":{i}}}"#).as_bytes());
    }
    input.extend_from_slice(br#"{"exec-oob":"fast","id":"f"}"#);
    s.handle_input(&input);
    let cmds = commands(&mut s);
    // One handed over, eight waiting, then reading stopped: the rest is held.
    assert_eq!(cmds.len(), 1);
    assert!(!s.wants_input());
    let mut tokens = vec![cmds[0].token];
    let mut fast = None;
    let mut order = Vec::new();
    while let Some(t) = tokens.pop() {
        s.reply(t, Ok(json!({}))).unwrap();
        for c in commands(&mut s) {
            order.push(c.name().to_owned());
            if c.oob {
                fast = Some(c.token);
            } else {
                tokens.push(c.token);
            }
        }
        if let Some(f) = fast.take() {
            s.reply(f, Ok(json!("first"))).unwrap();
        }
    }
    assert_eq!(order.iter().filter(|n| *n == "slow").count(), 11);
    let out = take(&mut s);
    let fast_at = out.find("\"id\": \"f\"").unwrap();
    let last_slow = out.find("\"id\": 11").unwrap();
    assert!(fast_at < last_slow, "the OOB reply overtakes in-band ones still waiting");
    assert!(s.wants_input());
}

#[test]
fn oob_commands_are_bounded_too() {
    let mut s = negotiated(ServerConfig::qmp().max_queued_commands(2), true);
    s.handle_input(br#"{"exec-oob":"a","id":1}{"exec-oob":"b","id":2}{"exec-oob":"c","id":3}"#);
    let cmds = commands(&mut s);
    assert_eq!(cmds.len(), 2);
    assert!(!s.wants_input());
    s.reply(cmds[1].token, Ok(json!({}))).unwrap();
    assert_eq!(commands(&mut s).len(), 1, "the third is read once one is answered");
}

#[test]
fn listed_commands_get_qemus_errors() {
    let cfg = ServerConfig::qmp().command("query-version").oob_command("query-yank").reject_unlisted(true);
    let mut s = negotiated(cfg, true);
    s.handle_input(br#"{"execute":"nope","id":1}{"exec-oob":"query-version","id":2}{"exec-oob":"query-yank","id":3}"#);
    assert_eq!(
        take(&mut s),
        "{\"id\": 1, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope has not been found\"}}\r\n\
         {\"id\": 2, \"error\": {\"class\": \"GenericError\", \"desc\": \"The command query-version does not support OOB\"}}\r\n"
    );
    let cmds = commands(&mut s);
    assert_eq!(cmds.len(), 1);
    assert!(cmds[0].oob);
    assert_eq!(cmds[0].id(), Some(json!(3)));
}

#[test]
fn events_only_after_negotiation_and_bounded() {
    let mut s = Server::new(ServerConfig::qmp().max_queued_output(300));
    assert_eq!(s.event("STOP", None, TS), EventOutcome::NotNegotiated);
    take(&mut s);
    s.handle_input(br#"{"execute":"qmp_capabilities"}"#);
    take(&mut s);
    assert_eq!(s.event("STOP", None, TS), EventOutcome::Sent);
    assert_eq!(take(&mut s), "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n");
    let data = json!({"reason": "x".repeat(100)});
    let mut sent = 0;
    while s.event("BIG", Some(&data), TS) == EventOutcome::Sent {
        sent += 1;
    }
    assert!(sent >= 2, "{sent}");
    assert_eq!(s.dropped_events(), 1);
    take(&mut s);
    assert_eq!(s.event("BIG", Some(&data), TS), EventOutcome::Sent);
}

#[test]
fn guest_agent_mode() {
    let mut s = Server::new(ServerConfig::guest_agent());
    assert_eq!(take(&mut s), "", "no greeting");
    s.handle_input(b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":7},\"id\":\"d\"}");
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    assert_eq!(
        out,
        b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n\xff{\"return\": 7, \"id\": \"d\"}\n"
    );
    s.handle_input(br#"{"execute":"guest-shutdown","id":1}"#);
    let c = commands(&mut s);
    s.reply(c[0].token, Ok(json!({}))).unwrap();
    assert_eq!(take(&mut s), "", "reply only on failure");
    s.handle_input(br#"{"execute":"guest-shutdown","id":2}"#);
    let c = commands(&mut s);
    s.reply(c[0].token, Err(Failure::generic("denied"))).unwrap();
    assert_eq!(take(&mut s), "{\"id\": 2, \"error\": {\"class\": \"GenericError\", \"desc\": \"denied\"}}\n");
    s.handle_input(br#"{"exec-oob":"guest-ping","id":3}"#);
    assert!(take(&mut s).contains("QMP input member 'exec-oob' is unexpected"));
    assert_eq!(s.event("X", None, TS), EventOutcome::GuestAgent);
}

#[test]
fn misuse_and_eof() {
    let mut s = negotiated(ServerConfig::qmp(), false);
    s.handle_input(br#"{"execute":"a","id":1}"#);
    let c = commands(&mut s);
    s.reply(c[0].token, Ok(json!({}))).unwrap();
    assert_eq!(s.reply(c[0].token, Ok(json!({}))), Err(ServerUsageError::UnknownToken));
    s.handle_input(br#"{"execute":"b","id":2}"#);
    let c = commands(&mut s);
    assert_eq!(s.reply_json(c[0].token, Ok("{")), Err(ServerUsageError::InvalidJson("expected one value: {".into())));
    s.handle_eof();
    assert_eq!(s.poll_event(), Some(Event::Closed(CloseReason::Eof)));
    assert_eq!(s.reply(c[0].token, Ok(json!({}))), Err(ServerUsageError::UnknownToken));
    assert!(!s.wants_input());
}

#[test]
fn held_input_is_bounded() {
    let mut s = negotiated(ServerConfig::qmp().max_held_input(100), false);
    s.handle_input(br#"{"execute":"a"}"#);
    assert!(!s.wants_input());
    s.handle_input(&[b' '; 100]);
    assert_eq!(s.poll_event().map(|e| matches!(e, Event::Command(_))), Some(true));
    assert_eq!(s.poll_event(), None);
    s.handle_input(b" ");
    assert_eq!(s.poll_event(), Some(Event::Closed(CloseReason::InputOverflow)));
}

/// Drives our Client against our Server in memory until both are quiet; the server answers every command
/// with `answer`.
fn converse(client: &mut Client, server: &mut Server, mut answer: impl FnMut(&Command) -> Value) -> Vec<ClientEvent> {
    let mut events = Vec::new();
    let (mut down, mut up) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        server.poll_transmit(&mut down);
        client.handle_input(&down);
        while let Some(ev) = client.poll_event() {
            events.push(ev);
        }
        client.poll_transmit(&mut up);
        if down.is_empty() && up.is_empty() {
            break;
        }
        down.clear();
        server.handle_input(&up);
        up.clear();
        while let Some(ev) = server.poll_event() {
            if let Event::Command(c) = ev {
                let value = answer(&c);
                server.reply(c.token, Ok(value)).unwrap();
            }
        }
    }
    events
}

#[test]
fn our_client_against_our_server() {
    let now = Instant::now();
    let mut server = Server::new(ServerConfig::qmp());
    let mut client = Client::new(Config::qmp(), now);
    let mut ids = Vec::new();
    let deadline = now + Duration::from_secs(5);
    for i in 0..10 {
        ids.push(client.execute("echo", Some(&json!({"n": i})), ExecuteOptions::new().deadline(deadline)).unwrap());
    }
    let mut events = converse(&mut client, &mut server, |c| c.arguments["n"].clone());
    assert!(matches!(events.first(), Some(ClientEvent::Greeting(_))));
    assert!(events.iter().any(|e| matches!(e, ClientEvent::Ready { oob: true })));
    for i in 10..20 {
        let opts = if i % 3 == 0 { ExecuteOptions::new().oob() } else { ExecuteOptions::new() };
        ids.push(client.execute("echo", Some(&json!({"n": i})), opts.deadline(deadline)).unwrap());
    }
    events.extend(converse(&mut client, &mut server, |c| c.arguments["n"].clone()));
    let replies: Vec<(qmp_proto::RequestId, Value)> = events
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Reply { id, result } => Some((id, result.unwrap().as_value().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 20);
    for (i, id) in ids.iter().enumerate() {
        assert!(replies.contains(&(*id, json!(i))), "reply {i}");
    }
    // Events flow after negotiation.
    assert_eq!(server.event("RESUME", Some(&json!({"x": 1})), TS), EventOutcome::Sent);
    let events = converse(&mut client, &mut server, |_| json!({}));
    assert!(matches!(&events[..], [ClientEvent::Event(ev)] if ev.name == "RESUME" && ev.timestamp == Some(TS)));
}

#[test]
fn our_guest_agent_client_against_our_server() {
    let now = Instant::now();
    let mut server = Server::new(ServerConfig::guest_agent());
    let mut client = Client::new(Config::guest_agent().sync_on_connect(4242), now);
    let id = client.execute("guest-ping", None::<&()>, ExecuteOptions::new()).unwrap();
    let events = converse(&mut client, &mut server, |_| json!({}));
    assert!(events.iter().any(|e| matches!(e, ClientEvent::Ready { .. })), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, ClientEvent::Reply { id: i, result: Ok(_) } if *i == id)));
}

/// Answers every command with `{}` at once and returns all output, feeding `input` in the given pieces.
fn run_pieces(input: &[u8], cuts: &[usize], oob: bool) -> Vec<u8> {
    let mut s = Server::new(ServerConfig::qmp());
    if oob {
        s.handle_input(br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#);
    }
    let mut out = Vec::new();
    let answer = |s: &mut Server| {
        while let Some(ev) = s.poll_event() {
            if let Event::Command(c) = ev {
                s.reply(c.token, Ok(json!({}))).unwrap();
            }
        }
    };
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(start, input.len());
        s.handle_input(&input[start..cut]);
        answer(&mut s);
        start = cut;
    }
    s.poll_transmit(&mut out);
    out
}

fn qmpish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(br#"{"execute":"x","id":1}"#.to_vec()),
        Just(br#"{"exec-oob":"y","id":"o"}"#.to_vec()),
        Just(br#"{"execute":"qmp_capabilities"}"#.to_vec()),
        Just(b"garbage".to_vec()),
        Just(b"\x01".to_vec()),
        Just(b"\xff".to_vec()),
        Just(b"42 ".to_vec()),
        Just(b"[{]".to_vec()),
        Just(br#"{"a":1,"a":2}"#.to_vec()),
        Just(br#"'sq\u00e9'"#.to_vec()),
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn any_split_gives_the_same_output(input in qmpish(), cuts in prop::collection::vec(0usize..200, 0..10), oob in any::<bool>()) {
        let mut cuts = cuts;
        cuts.sort();
        // OOB replies go out when the caller answers, which depends on how the input was cut: compare them
        // apart from everything else, whose order is the server's.
        let split = |out: Vec<u8>| -> (Vec<String>, usize) {
            let text = String::from_utf8_lossy(&out).into_owned();
            let lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
            let oob = lines.iter().filter(|l| l.starts_with("{\"return\": {}, \"id\": \"o\"}")).count();
            (lines.into_iter().filter(|l| !l.starts_with("{\"return\": {}, \"id\": \"o\"}")).collect(), oob)
        };
        let whole = split(run_pieces(&input, &[], oob));
        let bytewise: Vec<usize> = (1..input.len()).collect();
        prop_assert_eq!(&split(run_pieces(&input, &bytewise, oob)), &whole);
        prop_assert_eq!(&split(run_pieces(&input, &cuts, oob)), &whole);
    }
}

/// A reply read by our Client from a server's bytes, its `return` or `error` as the Client keeps it.
fn read_by_client(server_bytes: &str) -> Result<qmp_proto::RawJson, qmp_proto::QmpError> {
    let mut client = Client::new(Config::qmp(), Instant::now());
    let sent_id = |client: &mut Client| {
        let mut sent = Vec::new();
        client.poll_transmit(&mut sent);
        serde_json::from_slice::<Value>(&sent).expect("one command")["id"].to_string()
    };
    client.handle_input(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}\r\n");
    let negotiation = sent_id(&mut client);
    client.handle_input(format!("{{\"return\": {{}}, \"id\": {negotiation}}}\r\n").as_bytes());
    while client.poll_event().is_some() {}
    let id = client.execute("x", None::<&()>, ExecuteOptions::new()).expect("execute");
    let wire_id = sent_id(&mut client);
    client.handle_input(server_bytes.replace("ID", &wire_id).as_bytes());
    loop {
        match client.poll_event().expect("the reply") {
            ClientEvent::Reply { id: got, result } if got == id => return result,
            _ => {}
        }
    }
}

#[test]
fn raw_replies_pass_a_servers_return_and_error_on_byte_for_byte() {
    let mut s = negotiated(ServerConfig::qmp(), false);
    // QEMU's spacing and member order, a number serde_json would re-write, members beyond class and desc.
    let cases = [
        (r#"{"return": {"z": 1, "a": {"y": 2, "b": 3}, "f": 1.0e0}, "id": ID}"#, r#"[{"x": 1}]"#),
        (r#"{"id": ID, "error": {"class": "GenericError", "desc": "caf\u00e9", "data": {"k": []}}}"#, "\"s\""),
        (r#"{"return": [], "id": ID}"#, "null"),
    ];
    for (qemu_wrote, client_id) in cases {
        let result = read_by_client(qemu_wrote);
        s.handle_input(format!(r#"{{"execute":"x","id":{client_id}}}"#).as_bytes());
        let c = commands(&mut s);
        match &result {
            Ok(value) => s.reply_raw(c[0].token, Ok(value)).unwrap(),
            Err(error) => s.reply_raw(c[0].token, Err(&error.raw)).unwrap(),
        }
        assert_eq!(take(&mut s), format!("{}\r\n", qemu_wrote.replace("ID", client_id)), "only the id is ours");
    }
    // An id-less command gets an id-less reply.
    s.handle_input(br#"{"execute":"x"}"#);
    let c = commands(&mut s);
    s.reply_raw(c[0].token, Ok(&qmp_proto::RawJson::from_json(r#"{"b":1,"a":2}"#).unwrap())).unwrap();
    assert_eq!(take(&mut s), "{\"return\": {\"b\":1,\"a\":2}}\r\n");
}

#[test]
fn raw_replies_spread_over_lines_are_written_on_one() {
    let mut s = negotiated(ServerConfig::qmp(), true);
    // What a pretty=on monitor writes: the value's line breaks would break one-message-per-line clients.
    let pretty = read_by_client("{\r\n    \"return\": {\r\n        \"b\": 1,\r\n        \"a\": [\r\n        ]\r\n    },\r\n    \"id\": ID\r\n}\r\n")
        .expect("a return");
    assert!(pretty.raw_str().contains('\n'));
    s.handle_input(br#"{"execute":"x","id":1}{"exec-oob":"y","id":2}"#);
    let c = commands(&mut s);
    let oob = c.iter().find(|c| c.oob).expect("the oob command").token;
    // Balanced but not JSON (the Client validates a return only when it is parsed): refused, still unanswered.
    let broken = read_by_client("{\"return\": {\"a\":\n 1 2}, \"id\": ID}").expect("balanced");
    assert!(matches!(s.reply_raw(oob, Ok(&broken)), Err(ServerUsageError::InvalidJson(_))));
    s.reply_raw(oob, Ok(&pretty)).unwrap();
    let line = take(&mut s);
    assert_eq!(line.find('\n'), Some(line.len() - 1), "one line: {line:?}");
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), json!({"return": {"a": [], "b": 1}, "id": 2}));
    let error =
        read_by_client("{\"id\": ID,\n \"error\": {\"class\": \"X\",\n \"desc\": \"d\"}}").expect_err("an error");
    s.reply_raw(c[0].token, Err(&error.raw)).unwrap();
    assert_eq!(take(&mut s), "{\"id\": 1, \"error\": {\"class\": \"X\", \"desc\": \"d\"}}\r\n");
    assert_eq!(s.reply_raw(c[0].token, Err(&error.raw)), Err(ServerUsageError::UnknownToken));
}

#[test]
fn raw_replies_of_the_guest_agent_keep_its_rules() {
    let mut s = Server::new(ServerConfig::guest_agent());
    let empty = qmp_proto::RawJson::from_json("{}").unwrap();
    s.handle_input(br#"{"execute":"guest-shutdown","id":1}"#);
    let c = commands(&mut s);
    s.reply_raw(c[0].token, Ok(&empty)).unwrap();
    assert_eq!(take(&mut s), "", "reply only on failure");
    s.handle_input(br#"{"execute":"guest-ping","id":2}"#);
    let c = commands(&mut s);
    s.reply_raw(c[0].token, Ok(&empty)).unwrap();
    assert_eq!(take(&mut s), "{\"return\": {}, \"id\": 2}\n");
}

/// The handler gets the arguments' tokens as the client wrote them, byte for byte (without the whitespace
/// between them), when that is standard JSON for what QEMU reads; where QEMU reads them differently (its
/// extensions, `-0`, numbers beyond f64) it gets QEMU's reading as standard JSON. Fed whole or byte by byte.
#[test]
fn arguments_are_the_text_written_or_qemus_reading_of_it() {
    let as_written = [
        (r#"{}"#, r#"{}"#),
        (r#"{ }"#, r#"{}"#),
        (r#"{"a":1,"b":[true,null,-7,{"c":"d e"}]}"#, r#"{"a":1,"b":[true,null,-7,{"c":"d e"}]}"#),
        (r#"{ "a" : 1, "b": [ true ], "c": " \" {} " }"#, r#"{"a":1,"b":[true],"c":" \" {} "}"#),
        (r#"{"a": 1, "b" : [1.5e3, "\u00e9\n\"x\"/"]}"#, r#"{"a":1,"b":[1.5e3,"\u00e9\n\"x\"/"]}"#),
        ("{\"pretty\":\r\n  {\"x\": \"caf\u{e9} \u{1F600}\"}}", "{\"pretty\":{\"x\":\"caf\u{e9} \u{1F600}\"}}"),
        (
            r#"{"big": 18446744073709551616, "neg": -9223372036854775809, "f": -0.0}"#,
            r#"{"big":18446744073709551616,"neg":-9223372036854775809,"f":-0.0}"#,
        ),
        (r#"{"nul": "\u0000"}"#, r#"{"nul":"\u0000"}"#),
    ];
    for bytewise in [false, true] {
        let mut s = negotiated(ServerConfig::qmp(), false);
        for (i, (text, handed_over)) in as_written.iter().enumerate() {
            let input = format!(r#"{{"execute":"x","arguments":{text},"id":{i}}}"#);
            if bytewise {
                input.bytes().for_each(|b| s.handle_input(&[b]));
            } else {
                s.handle_input(input.as_bytes());
            }
            let cmd = commands(&mut s).pop().expect("a command");
            assert_eq!(cmd.arguments.raw_str(), *handed_over, "bytewise: {bytewise}");
            assert_eq!(cmd.arguments.is_empty(), i < 2);
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(cmd.arguments.deserialize::<Value>().unwrap(), value);
            s.reply(cmd.token, Ok(json!({}))).unwrap();
        }
    }
    let mut s = negotiated(ServerConfig::qmp(), false);
    let normalised: [(&[u8], Value); 6] = [
        (br#"{'a': 'it''s'}"#, json!(null)), // not valid QEMU JSON either: checked below to fail
        (br#"{'a': 'b', "c": "it\'s"}"#, json!({"a": "b", "c": "it's"})),
        (br#"{"z": -0, "a": [-0]}"#, json!({"z": 0, "a": [0]})),
        (br#"{"inf": 1e400, "ninf": -1e400}"#, json!({"inf": null, "ninf": null})),
        (b"{\"nul\": \"a\xc0\x80b\"}", json!({"nul": "a\u{0}b"})),
        (br#"{"long": 100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000}"#, json!({"long": null})),
    ];
    for (text, expected) in normalised {
        let mut input = br#"{"execute":"x","arguments":"#.to_vec();
        input.extend_from_slice(text);
        input.push(b'}');
        s.handle_input(&input);
        let out = take(&mut s);
        let Some(cmd) = commands(&mut s).pop() else {
            assert!(expected.is_null() && out.contains("JSON parse error"), "{out}");
            continue;
        };
        assert_eq!(cmd.arguments.deserialize::<Value>().unwrap(), expected, "{}", String::from_utf8_lossy(text));
        assert_eq!(Value::Object(cmd.arguments.map().clone()), expected);
        // Re-encoded compactly; the members' order is QEMU's dictionary order (or sorted), not the client's.
        let raw = cmd.arguments.raw_str();
        assert_eq!(serde_json::from_str::<Value>(raw).unwrap(), expected, "{raw}");
        assert_eq!(raw.len(), serde_json::to_string(&expected).unwrap().len(), "re-encoded compactly: {raw}");
        s.reply(cmd.token, Ok(json!({}))).unwrap();
        take(&mut s);
    }
}

/// Ids are echoed as QEMU writes them (the text when QEMU writes it unchanged, QEMU's re-writing otherwise),
/// and shown to the caller as JSON.
#[test]
fn ids_are_echoed_as_qemu_writes_them() {
    let mut s = negotiated(ServerConfig::qmp(), false);
    let ids: [(&str, &str, Value); 10] = [
        ("7", "7", json!(7)),
        ("-9223372036854775808", "-9223372036854775808", json!(i64::MIN)),
        ("18446744073709551615", "18446744073709551615", json!(u64::MAX)),
        ("18446744073709551616", "1.8446744073709552e+19", json!(18446744073709551616.0)),
        ("-0", "0", json!(0)),
        ("1e3", "1000", json!(1000.0)),
        ("1e400", "inf", json!(null)),
        (r#""a b""#, r#""a b""#, json!("a b")),
        (r#"'x\u00e9'"#, r#""x\u00E9""#, json!("x\u{e9}")),
        (r#"{"b":[1,2],"a":null}"#, r#"{"a": null, "b": [1, 2]}"#, json!({"a": null, "b": [1, 2]})),
    ];
    for (id, echo, value) in ids {
        s.handle_input(format!(r#"{{"execute":"x","id":{id}}}"#).as_bytes());
        let cmd = commands(&mut s).pop().expect("a command");
        assert_eq!(cmd.id(), Some(value), "{id}");
        s.reply(cmd.token, Ok(json!({}))).unwrap();
        assert_eq!(take(&mut s), format!("{{\"return\": {{}}, \"id\": {echo}}}\r\n"), "{id}");
    }
}

/// A command's id text is its tokens without the whitespace between them, so a command reads the same
/// whether its bytes come at once (the fast path) or one at a time (the lexer).
#[test]
fn id_text_is_the_same_however_the_input_arrives() {
    let input = br#"{"execute":"x","id":{ "a" : [1, 2], "b":'c d' }}"#;
    let whole = {
        let mut s = negotiated(ServerConfig::qmp(), false);
        s.handle_input(input);
        commands(&mut s)
    };
    let bytewise = {
        let mut s = negotiated(ServerConfig::qmp(), false);
        input.iter().for_each(|b| s.handle_input(std::slice::from_ref(b)));
        commands(&mut s)
    };
    assert_eq!(whole, bytewise);
    assert_eq!(whole[0].id_text(), Some(&br#"{"a":[1,2],"b":'c d'}"#[..]));
    let plain = br#"{"execute":"x","id":{ "a" : [1, 2] }}"#;
    let mut s = negotiated(ServerConfig::qmp(), false);
    s.handle_input(plain);
    let cmd = commands(&mut s).pop().expect("a command");
    assert_eq!(cmd.id_text(), Some(&br#"{"a":[1,2]}"#[..]), "the fast path's reading");
    assert_eq!(cmd.id(), Some(json!({"a": [1, 2]})));
}
