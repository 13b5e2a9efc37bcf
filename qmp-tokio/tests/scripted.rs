//! The adapter against a scripted in-memory peer over `tokio::io::duplex`, on paused tokio time: timeouts fire
//! without real waiting, and every scenario is deterministic.

mod common;

use std::time::Duration;

use common::{Peer, GREETING};
use qmp_tokio::{ConnectionError, Error, EventItem, GuestAgent, Options, ProtocolViolation, Qmp, UsageError};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_stream::StreamExt;

async fn connected(options: Options) -> (Qmp, Peer) {
    let (io, mut peer) = Peer::pair();
    let (qmp, ()) = tokio::join!(Qmp::from_stream(io, options), peer.handshake());
    (qmp.expect("handshake"), peer)
}

#[tokio::test(start_paused = true)]
async fn greeting_timeout_without_real_waiting() {
    let (io, _peer) = Peer::pair();
    let started = Instant::now();
    let real = std::time::Instant::now();
    let err = Qmp::from_stream(io, Options::default().connect_timeout(Duration::from_secs(7))).await.unwrap_err();
    assert!(matches!(err, Error::Connection(ConnectionError::GreetingTimeout)), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(7));
    assert!(real.elapsed() < Duration::from_secs(2), "paused time: no real wait");
}

#[tokio::test(start_paused = true)]
async fn negotiation_timeout() {
    let (io, mut peer) = Peer::pair();
    peer.send(GREETING).await;
    let err = Qmp::from_stream(io, Options::default().connect_timeout(Duration::from_secs(3))).await.unwrap_err();
    assert!(matches!(err, Error::Connection(ConnectionError::NegotiationTimeout)), "{err}");
}

#[tokio::test(start_paused = true)]
async fn command_timeout_then_the_late_reply_is_swallowed() {
    let (qmp, mut peer) = connected(Options::default()).await;
    assert!(qmp.oob_enabled());
    assert_eq!(qmp.greeting().version.as_ref().expect("the greeting\'s version").major, 10);
    let started = Instant::now();
    let slow = qmp.execute_with_timeout::<Value>("query-status", (), Some(Duration::from_secs(2)));
    let (result, cmd) = tokio::join!(slow, peer.recv());
    assert!(matches!(result, Err(Error::TimedOut)), "{result:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    let cmd = cmd.unwrap();
    assert_eq!(cmd["execute"], "query-status");

    // The late reply comes first, then the next command's: each goes where it belongs.
    let next = qmp.execute::<Value>("query-version", ());
    let script = async {
        let cmd2 = peer.recv().await.unwrap();
        peer.reply(&cmd, r#"{"late": true}"#).await;
        peer.reply(&cmd2, r#"{"mine": true}"#).await;
    };
    let (reply, ()) = tokio::join!(next, script);
    assert_eq!(reply.unwrap(), json!({"mine": true}));
    assert!(qmp.take_violations().is_empty(), "a timed-out command's reply is expected, not unknown");
}

#[tokio::test(start_paused = true)]
async fn default_command_timeout_from_options() {
    let (qmp, mut peer) = connected(Options::default().command_timeout(Some(Duration::from_secs(5)))).await;
    let started = Instant::now();
    let (result, _) = tokio::join!(qmp.execute::<Value>("query-status", ()), peer.recv());
    assert!(matches!(result, Err(Error::TimedOut)));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    // No timeout at all: the command waits as long as the server takes.
    let waits = qmp.execute_with_timeout::<Value>("query-status", (), None);
    let script = async {
        let cmd = peer.recv().await.unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        peer.reply(&cmd, "{}").await;
    };
    let (result, ()) = tokio::join!(waits, script);
    assert_eq!(result.unwrap(), json!({}));
}

#[tokio::test(start_paused = true)]
async fn replies_in_any_order_reach_their_callers() {
    let (qmp, mut peer) = connected(Options::default()).await;
    let calls = (0..8).map(|i| qmp.execute::<Value>("echo", json!({ "n": i })));
    let all = futures_util::future::join_all(calls);
    let script = async {
        let mut cmds = Vec::new();
        for _ in 0..8 {
            cmds.push(peer.recv().await.unwrap());
        }
        for cmd in cmds.iter().rev() {
            peer.reply(cmd, &cmd["arguments"].to_string()).await;
        }
    };
    let (results, ()) = tokio::join!(all, script);
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), json!({ "n": i }));
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_that_was_still_queued_is_never_sent() {
    let (qmp, mut peer) = connected(Options::default()).await;
    // Eight on the wire (the in-flight limit), unanswered.
    let mut first = Vec::new();
    for i in 0..8 {
        let qmp = qmp.clone();
        first.push(tokio::spawn(async move { qmp.execute::<Value>("wire", json!({ "n": i })).await }));
    }
    let mut on_wire = Vec::new();
    for _ in 0..8 {
        on_wire.push(peer.recv().await.unwrap());
    }
    // The ninth waits in the core's queue; its caller gives up.
    let ninth = qmp.execute_with_timeout::<Value>("never-sent", (), None);
    assert!(tokio::time::timeout(Duration::from_millis(50), ninth).await.is_err());
    // A tenth after it.
    let qmp2 = qmp.clone();
    let tenth = tokio::spawn(async move { qmp2.execute::<Value>("tenth", ()).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    for cmd in &on_wire {
        peer.reply(cmd, "{}").await;
    }
    let next = peer.recv().await.unwrap();
    assert_eq!(next["execute"], "tenth", "the dropped command was withdrawn before it was written");
    peer.reply(&next, r#""ten""#).await;
    assert_eq!(tenth.await.unwrap().unwrap(), json!("ten"));
    for task in first {
        assert_eq!(task.await.unwrap().unwrap(), json!({}));
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_on_the_wire_has_its_reply_swallowed() {
    let (qmp, mut peer) = connected(Options::default()).await;
    let dropped = qmp.execute::<Value>("first", ());
    let (timed_out, cmd) = tokio::join!(tokio::time::timeout(Duration::from_millis(10), dropped), peer.recv());
    assert!(timed_out.is_err());
    let cmd = cmd.unwrap();
    let next = qmp.execute::<Value>("second", ());
    let script = async {
        let cmd2 = peer.recv().await.unwrap();
        peer.reply(&cmd, r#""for the dropped caller""#).await;
        peer.reply(&cmd2, r#""for me""#).await;
    };
    let (reply, ()) = tokio::join!(next, script);
    assert_eq!(reply.unwrap(), json!("for me"));
    assert!(qmp.take_violations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn disconnect_mid_reply_ends_every_pending_call_once() {
    let (qmp, mut peer) = connected(Options::default()).await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        let qmp = qmp.clone();
        tasks.push(tokio::spawn(async move { qmp.execute::<Value>("pending", json!({ "n": i })).await }));
    }
    for _ in 0..3 {
        peer.recv().await.unwrap();
    }
    peer.send_raw(br#"{"return": {"half"#).await;
    drop(peer);
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Connection(ConnectionError::EofMidMessage { .. })), "{err}");
    }
    assert!(matches!(qmp.closed().await, ConnectionError::EofMidMessage { .. }));
    assert!(matches!(qmp.connection_error(), Some(ConnectionError::EofMidMessage { .. })));
    let later = qmp.execute::<Value>("later", ()).await.unwrap_err();
    assert!(matches!(later, Error::Connection(ConnectionError::EofMidMessage { .. })), "{later}");
}

#[tokio::test(start_paused = true)]
async fn close_ends_pending_calls_and_event_streams() {
    let (qmp, mut peer) = connected(Options::default()).await;
    let mut events = qmp.events();
    let pending = {
        let qmp = qmp.clone();
        tokio::spawn(async move { qmp.execute::<Value>("pending", ()).await })
    };
    peer.recv().await.unwrap();
    peer.send(r#"{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}"#).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    qmp.close().await;
    assert!(matches!(pending.await.unwrap(), Err(Error::Connection(ConnectionError::Local))));
    assert_eq!(qmp.connection_error(), Some(ConnectionError::Local));
    // Events received before the end still come out, then the stream ends.
    assert!(matches!(events.next().await, Some(EventItem::Event(ev)) if ev.name == "STOP"));
    assert!(events.next().await.is_none());
    assert!(qmp.events().next().await.is_none(), "a subscription after the end is empty");
    assert!(peer.recv().await.is_none(), "the socket is closed");
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_closes_the_connection() {
    let (qmp, mut peer) = connected(Options::default()).await;
    let clone = qmp.clone();
    drop(qmp);
    let _: Option<Value> = tokio::time::timeout(Duration::from_millis(10), peer.recv()).await.ok().flatten();
    drop(clone);
    assert!(peer.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn every_subscriber_gets_every_event_and_filters_work() {
    let (qmp, mut peer) = connected(Options::default()).await;
    let mut all_a = qmp.events();
    let mut all_b = qmp.events();
    let mut jobs = qmp.events_named(&["JOB_STATUS_CHANGE"]);
    for i in 0..50 {
        let name = if i % 5 == 0 { "JOB_STATUS_CHANGE" } else { "STOP" };
        peer.send(&format!(
            r#"{{"event": "{name}", "data": {{"i": {i}}}, "timestamp": {{"seconds": 1, "microseconds": {i}}}}}"#
        ))
        .await;
    }
    for sub in [&mut all_a, &mut all_b] {
        for i in 0..50 {
            let item = sub.recv().await.unwrap();
            let ev = item.event().unwrap();
            assert_eq!(ev.data.as_ref().unwrap().as_value().unwrap()["i"], i);
        }
    }
    for i in (0..50).step_by(5) {
        let item = jobs.recv().await.unwrap();
        assert_eq!(item.event().unwrap().name, "JOB_STATUS_CHANGE");
        assert_eq!(item.event().unwrap().timestamp.unwrap().microseconds, i);
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_subscriber_lags_and_commands_still_run() {
    let (qmp, mut peer) = connected(Options::default().event_buffer(16)).await;
    let mut stalled = qmp.events();
    let flood: String = (0..100_000)
        .map(|i| format!("{{\"event\": \"BLOCK_IO_ERROR\", \"data\": {{\"i\": {i}}}, \"timestamp\": {{\"seconds\": 1, \"microseconds\": 0}}}}\r\n"))
        .collect();
    let call = qmp.execute::<Value>("query-status", ());
    let script = async {
        peer.send_raw(flood.as_bytes()).await;
        let cmd = peer.recv().await.unwrap();
        peer.reply(&cmd, r#"{"running": true}"#).await;
    };
    let (reply, ()) = tokio::join!(call, script);
    assert_eq!(reply.unwrap(), json!({"running": true}), "nobody reading events does not hold commands up");
    let EventItem::Lagged(lost) = stalled.recv().await.unwrap() else { panic!("expected a lag marker first") };
    assert_eq!(lost, 100_000 - 16);
    for i in 100_000 - 16..100_000 {
        let item = stalled.recv().await.unwrap();
        assert_eq!(item.event().unwrap().data.as_ref().unwrap().as_value().unwrap()["i"], i);
    }
}

#[tokio::test(start_paused = true)]
async fn protocol_violations_are_reported_and_the_session_goes_on() {
    let (qmp, mut peer) = connected(Options::default()).await;
    let call = qmp.execute::<Value>("query-status", ());
    let script = async {
        let cmd = peer.recv().await.unwrap();
        peer.send("garbage{}").await;
        peer.send(r#"{"return": {}, "id": 999999}"#).await;
        peer.send(r#"{"error": {"class": "GenericError", "desc": "JSON parse error"}}"#).await;
        peer.reply(&cmd, "[1, 2]").await;
    };
    let (reply, ()) = tokio::join!(call, script);
    assert_eq!(reply.unwrap(), json!([1, 2]));
    let violations = qmp.take_violations();
    assert!(violations.iter().any(|v| matches!(v, ProtocolViolation::UnknownId { .. })), "{violations:?}");
    assert!(violations.iter().any(|v| matches!(v, ProtocolViolation::IdlessError(_))), "{violations:?}");
    assert!(
        violations
            .iter()
            .any(|v| matches!(v, ProtocolViolation::NotJson { .. } | ProtocolViolation::UnknownShape { .. })),
        "{violations:?}"
    );
    assert!(qmp.take_violations().is_empty(), "taken");
}

#[tokio::test(start_paused = true)]
async fn usage_errors_send_nothing() {
    let (qmp, mut peer) = connected(Options::default().oob(false)).await;
    assert!(!qmp.oob_enabled());
    let oob = qmp.execute_oob::<Value>("query-yank", ()).await.unwrap_err();
    assert!(matches!(oob, Error::Usage(UsageError::OobNotNegotiated)), "{oob}");
    let args = qmp.execute::<Value>("x", [1, 2]).await.unwrap_err();
    assert!(matches!(args, Error::Usage(UsageError::InvalidArguments(_))), "{args}");
    let file = std::fs::File::open("/dev/null").unwrap();
    let fd = qmp.send_fd("f", &file).await.unwrap_err();
    assert!(matches!(&fd, Error::FdPassing(e) if e.kind() == std::io::ErrorKind::Unsupported), "{fd}");
    // Server errors are values; decoding errors too.
    let call = qmp.execute::<u64>("typed", ());
    let script = async {
        let cmd = peer.recv().await.unwrap();
        assert_eq!(cmd["execute"], "typed", "nothing else was sent before");
        peer.reply(&cmd, r#""not a number""#).await;
        let cmd = peer.recv().await.unwrap();
        peer.send(&format!(r#"{{"id": {}, "error": {{"class": "CommandNotFound", "desc": "nope"}}}}"#, cmd["id"]))
            .await;
    };
    let (decoded, ()) = tokio::join!(async { (call.await, qmp.execute::<Value>("missing", ()).await) }, script);
    assert!(matches!(decoded.0, Err(Error::Decode(_))), "{:?}", decoded.0);
    assert!(matches!(decoded.1, Err(Error::Qmp(ref e)) if e.class == "CommandNotFound"), "{:?}", decoded.1);
}

#[tokio::test(start_paused = true)]
async fn raw_calls() {
    let (qmp, mut peer) = connected(Options::default()).await;
    let args = qmp_tokio::RawJson::from_json(r#"{"node-name": "n0"}"#).unwrap();
    let call = qmp.execute_raw("blockdev-del", Some(&args));
    let script = async {
        let cmd = peer.recv().await.unwrap();
        assert_eq!(cmd["arguments"], json!({"node-name": "n0"}));
        peer.reply(&cmd, r#"{"raw": [1]}"#).await;
    };
    let (reply, ()) = tokio::join!(call, script);
    assert_eq!(reply.unwrap().raw_str(), r#"{"raw": [1]}"#);
}

#[tokio::test(start_paused = true)]
async fn guest_agent_sync_and_commands_without_reply() {
    let (io, mut peer) = Peer::pair();
    let connect = GuestAgent::from_stream(io, Options::default());
    let script = async {
        // Stale output from an earlier client comes first, then the sync's marker and reply.
        let sync = peer.recv().await.unwrap();
        assert_eq!(sync["execute"], "guest-sync-delimited");
        assert_eq!(peer.sync_bytes, 1, "a 0xFF byte before the sync resets the agent's parser");
        peer.send_raw(b"{\"return\": \"stale\"}\n").await;
        peer.send_raw(b"garbage").await;
        peer.send_raw(b"\xff").await;
        peer.send_raw(format!("{{\"return\": {}, \"id\": {}}}\n", sync["arguments"]["id"], sync["id"]).as_bytes())
            .await;
    };
    let (agent, ()) = tokio::join!(connect, script);
    let agent = agent.expect("synchronised");

    let shutdown = agent.execute::<Value>("guest-shutdown", json!({"mode": "powerdown"})).await.unwrap();
    assert_eq!(shutdown, json!({}), "no error within the grace period: done");
    agent.execute_no_reply("guest-fstrim", ()).await.unwrap();
    let ping = agent.execute::<Value>("guest-ping", ());
    let script = async {
        assert_eq!(peer.recv().await.unwrap()["execute"], "guest-shutdown");
        assert_eq!(peer.recv().await.unwrap()["execute"], "guest-fstrim");
        let cmd = peer.recv().await.unwrap();
        assert_eq!(cmd["execute"], "guest-ping");
        peer.send_raw(format!("{{\"return\": {{}}, \"id\": {}}}\n", cmd["id"]).as_bytes()).await;
    };
    let (ping, ()) = tokio::join!(ping, script);
    assert_eq!(ping.unwrap(), json!({}));
    agent.close().await;
    assert_eq!(agent.connection_error(), Some(ConnectionError::Local));
}

#[tokio::test(start_paused = true)]
async fn guest_agent_that_never_answers_times_out() {
    let (io, _peer) = Peer::pair();
    let started = Instant::now();
    let err =
        GuestAgent::from_stream(io, Options::default().connect_timeout(Duration::from_secs(4))).await.unwrap_err();
    assert!(matches!(err, Error::Connection(ConnectionError::SyncTimeout)), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(4));
}

#[tokio::test]
async fn connect_tcp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut lines = tokio::io::BufReader::new(read);
        write.write_all(format!("{GREETING}\r\n").as_bytes()).await.unwrap();
        // The client writes no newline: read JSON values by hand from what arrives.
        let mut buf = Vec::new();
        let mut answered = 0;
        while answered < 2 {
            let chunk = lines.fill_buf().await.unwrap().to_vec();
            assert!(!chunk.is_empty());
            lines.consume(chunk.len());
            buf.extend_from_slice(&chunk);
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            let mut consumed = 0;
            while let Some(Ok(cmd)) = values.next() {
                consumed = values.byte_offset();
                let reply = format!("{{\"return\": {{}}, \"id\": {}}}\r\n", cmd["id"]);
                write.write_all(reply.as_bytes()).await.unwrap();
                answered += 1;
            }
            buf.drain(..consumed);
        }
    });
    let qmp = Qmp::connect_tcp(addr, Options::default()).await.unwrap();
    assert_eq!(qmp.execute::<Value>("query-status", ()).await.unwrap(), json!({}));
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn beyond_max_pending_calls_wait_for_room_and_keep_their_deadline() {
    let (qmp, mut peer) = connected(Options::default().max_pending(2).max_in_flight(8)).await;
    let mut tasks = Vec::new();
    for i in 0..5 {
        let qmp = qmp.clone();
        tasks.push(tokio::spawn(async move { qmp.execute::<Value>("q", json!({ "n": i })).await }));
    }
    // Only two reach the wire; the others wait for room instead of failing.
    let first = peer.recv().await.unwrap();
    let second = peer.recv().await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(100), peer.recv()).await.is_err());
    peer.reply(&first, &first["arguments"].to_string()).await;
    peer.reply(&second, &second["arguments"].to_string()).await;
    for _ in 0..3 {
        let cmd = peer.recv().await.unwrap();
        peer.reply(&cmd, &cmd["arguments"].to_string()).await;
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().unwrap(), json!({ "n": i }));
    }

    // A server that answers nothing: the two on the wire time out and stay pending (their replies may still
    // come), so the third waits for room until its own deadline.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let qmp = qmp.clone();
        tasks.push(tokio::spawn(async move {
            qmp.execute_with_timeout::<Value>("hang", (), Some(Duration::from_secs(5))).await
        }));
    }
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Err(Error::TimedOut)));
    }
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[test]
fn handles_are_clone_send_sync_and_futures_send() {
    fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
    fn send<T: Send>(_: &T) {}
    clone_send_sync::<Qmp>();
    clone_send_sync::<GuestAgent>();
    fn send_unpin<T: Send + Unpin + 'static>() {}
    send_unpin::<qmp_tokio::Events>();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (io, _peer) = Peer::pair();
    let connect = Qmp::from_stream(io, Options::default());
    send(&connect);
    drop(connect);
    drop(rt);
    fn execute_is_send(qmp: &Qmp) {
        send(&qmp.execute::<Value>("x", ()));
        send(&qmp.execute_oob::<Value>("x", ()));
        send(&qmp.send_fd("x", std::io::stdin()));
        send(&qmp.close());
    }
    let _ = execute_is_send;
}
