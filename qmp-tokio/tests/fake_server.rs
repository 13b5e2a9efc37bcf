//! The adapter over a real unix socket against the workspace's scripted misbehaving server
//! (`qmp_tests::fake_server`): what real QEMU does not do on demand.

use std::time::Duration;

use qmp_tests::fake_server::{event, FakeServer, Step};
use qmp_tokio::{ConnectionError, Error, EventItem, Options, Qmp};
use serde_json::Value;

/// An event between `qmp_capabilities` and its reply is an event, not the reply (go-qemu's bug); garbage and an
/// id-less error are reported, the session goes on; then a hang-up mid-reply ends the pending call once.
#[tokio::test]
async fn event_before_negotiation_garbage_then_hangup_mid_reply() {
    let mut server = FakeServer::spawn(vec![
        Step::SendGreeting,
        Step::ReadMessage,
        Step::Send(event("RESUME", None)),
        Step::send(b"{\"return\": {}, \"id\": 1}\r\n"),
        Step::ReplyTo { ret: r#"{"status": "running", "running": true}"#.into() },
        Step::send("garbage\r\n{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\r\n"),
        Step::ReplyTo { ret: "[]".into() },
        Step::ReadMessage,
        Step::send(b"{\"return\": {\"cut"),
        Step::Close,
    ]);
    let qmp = Qmp::connect_unix(server.socket_path(), Options::default()).await.unwrap();
    let status: Value = qmp.execute("query-status", ()).await.unwrap();
    assert_eq!(status["running"], true);
    let list: Vec<Value> = qmp.execute("query-block", ()).await.unwrap();
    assert!(list.is_empty());
    let cut = qmp.execute::<Value>("query-version", ()).await.unwrap_err();
    assert!(matches!(cut, Error::Connection(ConnectionError::EofMidMessage { .. })), "{cut}");
    assert!(qmp.take_violations().len() >= 2);
    server.join().unwrap();
    // Every command arrived whole, in order.
    let names: Vec<String> =
        server.received().iter().map(|c| c["execute"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(names, ["qmp_capabilities", "query-status", "query-block", "query-version"]);
}

/// A flood of 200,000 events while nobody reads: memory stays bounded (the subscriber's buffer), the lag is
/// reported, and a command sent meanwhile is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_with_a_stalled_subscriber() {
    let mut server = FakeServer::spawn(vec![
        Step::SendGreeting,
        Step::AnswerNegotiation,
        // The flood answers the command, so it starts after the subscription: the events, then the reply.
        Step::respond(|cmd| {
            let one = event("BLOCK_JOB_READY", Some(r#"{"device": "j0"}"#));
            let mut bytes = one.repeat(200_000);
            bytes.extend_from_slice(
                format!("{{\"return\": \"after the flood\", \"id\": {}}}\r\n", cmd["id"]).as_bytes(),
            );
            bytes
        }),
        Step::Silence,
    ]);
    let qmp = Qmp::connect_unix(server.socket_path(), Options::default().event_buffer(64)).await.unwrap();
    let mut stalled = qmp.events();
    let reply: Value = qmp.execute_with_timeout("query-jobs", (), Some(Duration::from_secs(60))).await.unwrap();
    assert_eq!(reply, "after the flood");
    let mut lost = 0;
    let mut seen = 0;
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(200), stalled.recv()).await {
        match item {
            EventItem::Lagged(n) => lost += n,
            EventItem::Event(_) => seen += 1,
            _ => {}
        }
    }
    assert_eq!(lost + seen, 200_000);
    assert!(seen <= 64 + 1, "{seen}");
    qmp.close().await;
    server.join().unwrap();
}

/// `Listener::accept_guest_agent`: the peer connects to us (as QEMU does for a guest agent channel whose chardev
/// has `server=off`) and answers the sync and a command.
#[tokio::test]
async fn listener_accepts_a_guest_agent_channel() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let listener = qmp_tokio::Listener::bind(dir.path().join("qga.sock")).unwrap();
    let path = listener.path().to_owned();
    let agent = tokio::spawn(async move {
        let mut sock = tokio::net::UnixStream::connect(path).await.unwrap();
        let mut buf = Vec::new();
        let mut answered = 0;
        while answered < 2 {
            let mut chunk = [0u8; 1024];
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend(chunk[..n].iter().filter(|b| **b != 0xFF));
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            let mut consumed = 0;
            while let Some(Ok(cmd)) = values.next() {
                consumed = values.byte_offset();
                let reply = match cmd["execute"].as_str() {
                    Some("guest-sync-delimited") => {
                        format!("\u{ff}{{\"return\": {}, \"id\": {}}}\n", cmd["arguments"]["id"], cmd["id"])
                    }
                    _ => format!("{{\"return\": {{\"version\": \"fake\"}}, \"id\": {}}}\n", cmd["id"]),
                };
                let bytes: Vec<u8> = reply.chars().map(|c| if c == '\u{ff}' { 0xFF } else { c as u8 }).collect();
                sock.write_all(&bytes).await.unwrap();
                answered += 1;
            }
            buf.drain(..consumed);
        }
        // Read until the client closes.
        while sock.read(&mut [0u8; 64]).await.unwrap() > 0 {}
    });
    let ga = listener.accept_guest_agent(Options::default()).await.unwrap();
    let info: Value = ga.execute("guest-info", ()).await.unwrap();
    assert_eq!(info["version"], "fake");
    ga.close().await;
    agent.await.unwrap();
}
