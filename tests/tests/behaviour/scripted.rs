//! Scenarios against the scripted misbehaving server (`qmp_tests::fake_server`): garbage, a message cut off by
//! EOF, a disconnect mid-reply, a flood of a million events, silence, a 64 MiB line.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use qmp_proto::{ConnectionError, ProtocolViolation, RequestError};
use qmp_tests::fake_server::{event, greeting_qemu10, reply, FakeConfig, FakeServer, Step};
use serde_json::{json, Value};

use crate::harness::{heavy, rss_bytes, Adapter, Call, DropAt, Failure, Next, SuiteOpts};

fn id_of(msg: &Value) -> u64 {
    msg["id"].as_u64().unwrap_or_else(|| panic!("an integer id in {msg}"))
}

/// A realistic QMP greeting and negotiation, then `rest`.
fn script(rest: Vec<Step>) -> Vec<Step> {
    let mut steps = vec![Step::SendGreeting, Step::AnswerNegotiation];
    steps.extend(rest);
    steps
}

/// Garbage between messages (a stray token, binary junk, JSON of an unknown shape, a reply to an id nobody sent)
/// is reported and skipped: the session survives and the next commands get their own replies.
pub fn garbage_bytes_session_survives<A: Adapter>() {
    let mut server = FakeServer::spawn(script(vec![
        Step::respond(|msg| {
            // Garbage, then a reply to an id nobody sent, then the real reply.
            let mut out = b"garbage\r\n\x00\x01\xfe\x80 junk\r\n{\"unknown\": 1}\r\n[1, 2]\r\n".to_vec();
            out.extend(reply("{}", Some("999999")));
            out.extend(reply(r#"{"first": true}"#, Some(&id_of(msg).to_string())));
            out
        }),
        Step::reply_to(r#"{"second": true}"#),
        Step::Silence,
    ]));
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    let first: Value = A::execute(&conn, Call::new("first")).expect("the command survives the garbage");
    assert_eq!(first, json!({"first": true}));
    let second: Value = A::execute(&conn, Call::new("second")).expect("the next command works");
    assert_eq!(second, json!({"second": true}));
    let violations = A::take_violations(&conn);
    let not_understood = violations
        .iter()
        .filter(|v| matches!(v, ProtocolViolation::NotJson { .. } | ProtocolViolation::UnknownShape { .. }))
        .count();
    assert!(not_understood >= 2, "{}: {violations:?}", A::NAME);
    assert!(violations.iter().any(|v| matches!(v, ProtocolViolation::UnknownId { .. })), "{violations:?}");
    A::close(conn);
    server.join().expect("script ran to its end");
}

/// A message cut off by EOF: the reply before it arrives whole; the connection ends with the exact count of
/// bytes that were received of the cut message; the cause is sticky.
pub fn message_cut_off_by_eof<A: Adapter>() {
    const CUT: &str = r#"{"timestamp": {"seconds": 1700000000, "microseconds": 1}, "event": "BLOCK_JOB_RE"#;
    let mut server = FakeServer::spawn(script(vec![
        Step::respond(|msg| {
            let mut out = reply(r#"{"whole": true}"#, Some(&id_of(msg).to_string()));
            out.extend_from_slice(CUT.as_bytes());
            out
        }),
        Step::Close,
    ]));
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    let mut sub = A::subscribe(&conn);
    let whole: Value = A::execute(&conn, Call::new("x")).expect("the reply before the cut");
    assert_eq!(whole, json!({"whole": true}));
    let expected = ConnectionError::EofMidMessage { buffered: CUT.len() as u64 };
    assert_eq!(A::closed(&conn, Duration::from_secs(10)), Some(expected.clone()), "{}", A::NAME);
    match A::next_event(&conn, &mut sub, Duration::from_secs(1)) {
        Next::Ended(cause) => assert_eq!(cause, Some(expected.clone())),
        other => panic!("{}: no event is made of the cut message: {other:?}", A::NAME),
    }
    match A::execute::<Value>(&conn, Call::new("after")) {
        Err(Failure::Disconnected(cause)) => assert_eq!(cause, expected, "sticky"),
        other => panic!("{other:?}"),
    }
    A::close(conn);
    server.join().expect("script ran to its end");
}

/// Greetings as old servers and the protocol's wiki page show them (no version; a version given as a string)
/// are accepted: the version is reported as unknown or raw, and the session works.
pub fn old_greetings_are_accepted<A: Adapter>() {
    let greetings = [
        (r#"{"QMP": {"capabilities": []}}"#, "unknown"),
        (r#"{"QMP": {"version": {"qemu": "0.12.5", "package": ""}, "capabilities": []}}"#, "0.12.5"),
    ];
    for (greeting, shown) in greetings {
        let mut server = FakeServer::spawn(vec![
            Step::send(format!("{greeting}\r\n")),
            Step::AnswerNegotiation,
            Step::reply_to(r#"{"old": true}"#),
            Step::Silence,
        ]);
        let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("an old greeting is accepted");
        let seen = A::greeting(&conn);
        assert!(seen.version.is_none(), "{}: {seen:?}", A::NAME);
        assert!(seen.version_string().contains(shown), "{}: {}", A::NAME, seen.version_string());
        let old: Value = A::execute(&conn, Call::new("query-old")).expect("commands work");
        assert_eq!(old, json!({"old": true}));
        A::close(conn);
        server.join().expect("script ran to its end");
    }
}

/// Events between `qmp_capabilities` and its reply (QEMU sends them whenever they happen) reach the first
/// subscriber, even though it could only subscribe once connecting had returned: none is lost, none is mistaken
/// for the reply.
pub fn events_before_the_negotiation_reply_reach_the_first_subscriber<A: Adapter>() {
    let mut server = FakeServer::spawn(vec![
        Step::SendGreeting,
        Step::respond(|msg| {
            assert_eq!(msg["execute"], "qmp_capabilities", "{msg}");
            let mut out = Vec::new();
            for n in 0..3 {
                out.extend(event("EARLY", Some(&format!("{{\"n\": {n}}}"))));
            }
            out.extend(reply("{}", Some(&id_of(msg).to_string())));
            out
        }),
        Step::reply_to(r#"{"after": true}"#),
        Step::Silence,
    ]);
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    let mut sub = A::subscribe(&conn);
    let after: Value = A::execute(&conn, Call::new("after")).expect("a command after the events");
    assert_eq!(after, json!({"after": true}));
    for n in 0..3 {
        match A::next_event(&conn, &mut sub, Duration::from_secs(5)) {
            Next::Event(ev) => {
                assert_eq!(ev.name, "EARLY", "{}", A::NAME);
                assert_eq!(ev.data.expect("data").deserialize::<Value>().unwrap(), json!({"n": n}));
            }
            other => panic!("{}: event {n} of the handshake: {other:?}", A::NAME),
        }
    }
    A::close(conn);
    server.join().expect("script ran to its end");
}

/// The server answers half a reply and hangs up with the client's next command unread (the kernel then resets
/// the connection): every adapter reports the same cause, the end of the stream with the count of bytes of the
/// cut message, whether its next read or its next write notices first.
pub fn hang_up_mid_reply_with_a_command_unread<A: Adapter>() {
    const CUT: &str = r#"{"return": {"half": "#;
    let mut server = FakeServer::spawn(script(vec![
        Step::ReadMessage,
        Step::Sleep(Duration::from_millis(200)),
        Step::send(CUT),
        Step::Close,
    ]));
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    // Two calls: the second is written while (or after) the server hangs up with it unread.
    let results = A::tasks(&conn, vec![vec![Call::new("first")], vec![Call::new("second")]]);
    let expected = ConnectionError::EofMidMessage { buffered: CUT.len() as u64 };
    for done in results.iter().flatten() {
        match done.result.as_ref().expect("not given up") {
            Err(Failure::Disconnected(cause)) => assert_eq!(cause, &expected, "{}", A::NAME),
            other => panic!("{}: {other:?}", A::NAME),
        }
    }
    assert_eq!(A::closed(&conn, Duration::from_secs(10)), Some(expected), "{}", A::NAME);
    A::close(conn);
    server.join().expect("script ran to its end");
}

/// A call held back because the connection has no room (`max_pending`) keeps its own deadline: it times out on
/// time, while the calls ahead of it (no deadline) still wait for a server that never answers. Async adapters
/// only: a blocking `submit` beyond `max_pending` fails at once with `QueueFull` instead of waiting.
pub fn held_back_call_keeps_its_deadline<A: Adapter>() {
    let mut server = FakeServer::spawn(script(vec![Step::Silence]));
    let opts = SuiteOpts { command_timeout: None, ..SuiteOpts::default() }.max_in_flight(1).max_pending(1);
    let conn = A::connect(server.socket_path(), &opts).expect("connect");
    let never = |name: &str| Call::new(name.to_owned()).drop_at(DropAt::After(Duration::from_millis(2000)));
    let start = Instant::now();
    let results = A::tasks(
        &conn,
        vec![
            vec![never("ahead-1")],
            vec![never("ahead-2")],
            vec![Call::new("held").timeout(Duration::from_millis(500))],
        ],
    );
    let held = results.iter().flatten().find(|d| d.result.as_ref().is_some_and(|r| r.is_err()));
    match held.and_then(|d| d.result.as_ref()) {
        Some(Err(Failure::TimedOut)) => {}
        other => panic!("{}: the held-back call: {other:?} ({results:?})", A::NAME),
    }
    let given_up = results.iter().flatten().filter(|d| d.result.is_none()).count();
    assert_eq!(given_up, 2, "{}: the two calls ahead wait for the silent server: {results:?}", A::NAME);
    assert!(start.elapsed() >= Duration::from_millis(2000), "the calls ahead were given up after 2 s");
    A::close(conn);
    server.join().expect("script ran to its end");
}

/// The server hangs up in the middle of a reply while several calls are pending (where the adapter pipelines:
/// eight on the wire, QEMU's queue length, and four more queued in the client): every one of them ends, exactly
/// once, with the disconnect, and later calls fail the same.
pub fn disconnect_mid_reply_every_pending_call_ends_once<A: Adapter>() {
    const CALLS: usize = 12;
    // A pipelining adapter has eight on the wire; a blocking one sends the next only after the previous ended.
    let on_the_wire = if A::PIPELINES { 8 } else { 1 };
    let mut steps: Vec<Step> = (0..on_the_wire).map(|_| Step::ReadMessage).collect();
    steps.push(Step::send(r#"{"return": {"cut": "#));
    steps.push(Step::Close);
    let mut server = FakeServer::spawn(script(steps));
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    let plans = (0..CALLS).map(|i| vec![Call::new(format!("pending-{i}"))]).collect();
    let results = A::tasks(&conn, plans);
    assert_eq!(results.len(), CALLS);
    for done in &results {
        assert_eq!(done.len(), 1, "one outcome per call");
        match done[0].result.as_ref().expect("not given up") {
            Err(Failure::Disconnected(ConnectionError::EofMidMessage { buffered })) => {
                assert_eq!(*buffered, r#"{"return": {"cut": "#.len() as u64)
            }
            other => panic!("{}: {other:?}", A::NAME),
        }
    }
    let mut order: Vec<usize> = results.iter().map(|d| d[0].finished).collect();
    order.sort_unstable();
    assert_eq!(order, (0..CALLS).collect::<Vec<_>>(), "every call ended exactly once");
    assert!(matches!(
        A::execute::<Value>(&conn, Call::new("after")),
        Err(Failure::Disconnected(ConnectionError::EofMidMessage { .. }))
    ));
    A::close(conn);
    server.join().expect("script ran to its end");
    assert_eq!(server.received().len(), 1 + on_the_wire, "{:?}", server.received());
}

/// A million events while the only subscriber reads nothing: memory stays bounded (the process grows by far
/// less than the events' size), the subscriber is told how many it lost, and commands issued during the flood
/// are answered.
pub fn flood_of_a_million_events_stalled_subscriber<A: Adapter>() {
    const FLOOD: u64 = 1_000_000;
    const BUFFER: usize = 256;
    let _heavy = heavy();
    // Small events: the cost of the flood in a debug build is per byte as much as per event.
    let one = event("STOP", None);
    let flood_bytes = one.len() as u64 * FLOOD;
    let half = (FLOOD / 2) as usize;
    let mut server = FakeServer::spawn_with(
        FakeConfig::default().with_deadline(Duration::from_secs(110)),
        script(vec![
            Step::reply_to(r#"{"go": true}"#),
            Step::Flood { count: half, event: one.clone() },
            // "mid" was issued while the first half was being written: it is answered between the halves.
            Step::reply_to(r#"{"mid": true}"#),
            Step::Flood { count: half, event: one },
            Step::reply_to(r#"{"end": true}"#),
            Step::Silence,
        ]),
    );
    let rss_before = rss_bytes();
    let started = Instant::now();
    let opts =
        SuiteOpts { command_timeout: Some(Duration::from_secs(100)), ..SuiteOpts::default() }.event_buffer(BUFFER);
    let conn = A::connect(server.socket_path(), &opts).expect("connect");
    let mut stalled = A::subscribe(&conn);
    assert_eq!(A::execute::<Value>(&conn, Call::new("go")).expect("go"), json!({"go": true}));
    assert_eq!(A::execute::<Value>(&conn, Call::new("mid")).expect("answered in the flood"), json!({"mid": true}));
    assert_eq!(A::execute::<Value>(&conn, Call::new("end")).expect("answered after it"), json!({"end": true}));
    let took = started.elapsed();
    let grown = rss_bytes().saturating_sub(rss_before);
    if let Some(buffered) = A::buffered(&stalled) {
        assert!(buffered <= BUFFER, "{}: {buffered} events buffered", A::NAME);
    }
    assert!(
        grown < 64 << 20,
        "{}: memory grew by {} MiB while {} MiB of events went unread",
        A::NAME,
        grown >> 20,
        flood_bytes >> 20
    );
    // Now the subscriber reads: lag markers for what it lost, and at most the buffer's worth of events.
    let (mut events, mut lost, mut markers) = (0u64, 0u64, 0u64);
    loop {
        match A::next_event(&conn, &mut stalled, Duration::from_millis(200)) {
            Next::Event(ev) => {
                assert_eq!(ev.name, "STOP");
                events += 1;
            }
            Next::Lagged(n) => {
                assert!(n > 0);
                lost += n;
                markers += 1;
            }
            Next::Quiet => break,
            Next::Ended(cause) => panic!("{}: the connection ended: {cause:?}", A::NAME),
        }
    }
    assert_eq!(events + lost, FLOOD, "{}: every event delivered or counted as lost ({events} + {lost})", A::NAME);
    assert!(events <= BUFFER as u64, "{}: {events} events were kept for a stalled subscriber", A::NAME);
    assert!(markers >= 1, "the loss was reported");
    assert!(A::take_violations(&conn).is_empty());
    eprintln!(
        "{}: {FLOOD} events ({} MiB) in {took:?}; memory grew by {} KiB; the stalled subscriber lost {lost} in \
         {markers} marker(s) and kept {events}",
        A::NAME,
        flood_bytes >> 20,
        grown >> 10
    );
    A::close(conn);
    server.join().expect("script ran to its end");
}

/// A server that accepts and never greets: connecting fails with GreetingTimeout once the connect timeout ends.
pub fn silence_greeting_timeout<A: Adapter>() {
    let mut server = FakeServer::spawn(vec![Step::Silence]);
    let started = Instant::now();
    let result = A::connect(server.socket_path(), &SuiteOpts::default().connect_timeout(Duration::from_millis(300)));
    let took = started.elapsed();
    match result {
        Err(Failure::Disconnected(ConnectionError::GreetingTimeout)) => {}
        Err(other) => panic!("{}: {other:?}", A::NAME),
        Ok(_) => panic!("{}: connected to a server that never greeted", A::NAME),
    }
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "{took:?}");
    server.join().expect("the client left");
}

/// A server that greets and never answers `qmp_capabilities`: NegotiationTimeout within the connect timeout.
pub fn silence_negotiation_timeout<A: Adapter>() {
    let mut server = FakeServer::spawn(vec![Step::SendGreeting, Step::Silence]);
    let started = Instant::now();
    let result = A::connect(server.socket_path(), &SuiteOpts::default().connect_timeout(Duration::from_millis(300)));
    let took = started.elapsed();
    match result {
        Err(Failure::Disconnected(ConnectionError::NegotiationTimeout)) => {}
        Err(other) => panic!("{}: {other:?}", A::NAME),
        Ok(_) => panic!("{}: negotiation never answered, yet connected", A::NAME),
    }
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "{took:?}");
    server.join().expect("the client left");
    assert_eq!(server.received()[0]["execute"], "qmp_capabilities");
}

/// A command the server does not answer in time ends with TimedOut; its late reply, arriving right before the
/// next command's, is swallowed (not reported, not handed to the next caller).
pub fn silence_command_timeout_late_reply_swallowed<A: Adapter>() {
    let mut server = FakeServer::spawn(script(vec![
        Step::ReadMessage, // the command that times out: no answer yet
        Step::respond(|msg| {
            // The late reply to the previous command, then this one's.
            let id = id_of(msg);
            let mut out = reply(r#"{"late": true}"#, Some(&(id - 1).to_string()));
            out.extend(reply(r#"{"late": false}"#, Some(&id.to_string())));
            out
        }),
        Step::reply_to(r#"{"third": true}"#),
        Step::Silence,
    ]));
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    let started = Instant::now();
    match A::execute::<Value>(&conn, Call::new("slow").timeout(Duration::from_millis(200))) {
        Err(Failure::TimedOut) => {}
        other => panic!("{}: {other:?}", A::NAME),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(5), "{took:?}");
    let next: Value = A::execute(&conn, Call::new("next")).expect("the next command");
    assert_eq!(next, json!({"late": false}), "{}: the late reply went to the wrong caller", A::NAME);
    let third: Value = A::execute(&conn, Call::new("third")).expect("and the one after");
    assert_eq!(third, json!({"third": true}));
    assert!(A::take_violations(&conn).is_empty(), "a late reply to a known command is swallowed, not reported");
    A::close(conn);
    server.join().expect("script ran to its end");
    let names: Vec<Value> = server.received().iter().map(|m| m["execute"].clone()).collect();
    assert_eq!(names, [json!("qmp_capabilities"), json!("slow"), json!("next"), json!("third")]);
}

/// A 64 MiB line over the 10 MiB limit is skipped without being buffered, and the session survives. What the
/// client makes of an oversized message depends on whether it can tell whose it is (`qmp_proto`'s
/// `RequestError::ReplyTooLarge` and `ProtocolViolation::Oversized`):
/// - a 64 MiB reply whose id is its last member (QEMU's order) fails its command at once with
///   `RequestError::ReplyTooLarge` (the core recovers a trailing integer id);
/// - an oversized event is reported (`ProtocolViolation::Oversized`) and dropped;
/// - an oversized reply with its id first cannot be attributed: it is reported, and its command times out.
///
/// The last two are 12 MiB (over the limit all the same) to keep the debug-build run short.
pub fn line_of_64_mib_over_the_limit<A: Adapter>() {
    const BIG: usize = 64 << 20;
    const OVER: usize = 12 << 20;
    let _heavy = heavy();
    let filler = |n: usize| "x".repeat(n);
    let mut server = FakeServer::spawn_with(
        FakeConfig::default().with_deadline(Duration::from_secs(110)),
        script(vec![
            Step::respond(move |msg| {
                let mut out = format!(
                    r#"{{"timestamp": {{"seconds": 1700000000, "microseconds": 1}}, "event": "HUGE", "data": {{"x": "{}"}}}}"#,
                    filler(OVER)
                )
                .into_bytes();
                out.extend_from_slice(b"\r\n");
                out.extend(reply(r#"{"after": "event"}"#, Some(&id_of(msg).to_string())));
                out
            }),
            Step::respond(move |msg| {
                format!("{{\"return\": \"{}\", \"id\": {}}}\r\n", filler(BIG), id_of(msg)).into_bytes()
            }),
            Step::respond(move |msg| {
                format!("{{\"id\": {}, \"return\": \"{}\"}}\r\n", id_of(msg), filler(OVER)).into_bytes()
            }),
            Step::reply_to(r#"{"fine": true}"#),
            Step::Silence,
        ]),
    );
    let started = Instant::now();
    let conn = A::connect(server.socket_path(), &SuiteOpts::default()).expect("connect");
    let mut sub = A::subscribe(&conn);
    let after: Value = A::execute(&conn, Call::new("a")).expect("the reply after an oversized event");
    assert_eq!(after, json!({"after": "event"}));
    assert!(matches!(A::next_event(&conn, &mut sub, Duration::ZERO), Next::Quiet), "the oversized event is dropped");
    match A::execute::<Value>(&conn, Call::new("b")) {
        Err(Failure::Request(RequestError::ReplyTooLarge { len, limit })) => {
            assert!(len > BIG as u64, "{len}");
            assert_eq!(limit, 10 << 20);
        }
        other => panic!("{}: expected ReplyTooLarge, got {other:?}", A::NAME),
    }
    match A::execute::<Value>(&conn, Call::new("c").timeout(Duration::from_secs(1))) {
        Err(Failure::TimedOut) => {}
        other => panic!("{}: an unattributable oversized reply: expected TimedOut, got {other:?}", A::NAME),
    }
    let fine: Value = A::execute(&conn, Call::new("d")).expect("the session survives");
    assert_eq!(fine, json!({"fine": true}));
    let violations = A::take_violations(&conn);
    let oversized: Vec<u64> = violations
        .iter()
        .filter_map(|v| match v {
            ProtocolViolation::Oversized { len, .. } => Some(*len),
            _ => None,
        })
        .collect();
    assert_eq!(oversized.len(), 2, "{}: the event and the id-first reply: {violations:?}", A::NAME);
    assert!(oversized.iter().all(|len| *len > OVER as u64), "{oversized:?}");
    eprintln!("{}: 88 MiB of oversized lines skipped in {:?}", A::NAME, started.elapsed());
    A::close(conn);
    server.join().expect("script ran to its end");
}

/// A listen backlog that is full when the client connects (QEMU and qemu-ga listen with a backlog of 1, and
/// another client may be queued): a blocking connect waits for room, and so must the async adapters, within the
/// connect timeout, instead of failing at once (a non-blocking connect gets EAGAIN).
pub fn connect_waits_while_the_backlog_is_full<A: Adapter>() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("backlog.sock");
    let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).expect("socket");
    rustix::net::bind(&fd, &SocketAddrUnix::new(&path).expect("address")).expect("bind");
    // Backlog 0: one queued connection fills it.
    rustix::net::listen(&fd, 0).expect("listen");
    let listener = UnixListener::from(fd);
    let filler = UnixStream::connect(&path).expect("the filler is queued");
    let server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // Make room: take the filler off the queue. The client's next attempt is queued, and served.
        drop(listener.accept().expect("accept the filler"));
        let (mut conn, _) = listener.accept().expect("accept the client");
        conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        conn.write_all(&greeting_qemu10()).expect("greeting");
        let negotiation: Value = serde_json::Deserializer::from_reader(&conn)
            .into_iter()
            .next()
            .expect("a message")
            .expect("qmp_capabilities");
        assert_eq!(negotiation["execute"], "qmp_capabilities");
        conn.write_all(&reply("{}", Some(&negotiation["id"].to_string()))).expect("reply");
        // Hold the connection until the client leaves.
        let _ = std::io::copy(&mut conn, &mut std::io::sink());
    });
    let started = Instant::now();
    let conn = A::connect(&path, &SuiteOpts::default())
        .unwrap_or_else(|e| panic!("{}: connect while the backlog was full: {e:?}", A::NAME));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "{}: connected in {took:?}, before there was room", A::NAME);
    assert_eq!(A::greeting(&conn).version.as_ref().expect("the greeting\'s version").major, 10);
    A::close(conn);
    drop(filler);
    server.join().expect("server thread");
}
