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
        Step::Flood { count: 200_000, event: event("BLOCK_JOB_READY", Some(r#"{"device": "j0"}"#)) },
        Step::ReplyTo { ret: r#""after the flood""#.into() },
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
