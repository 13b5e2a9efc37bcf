//! `qmp-blocking` against real QEMU servers that each test starts and stops itself: qemu-storage-daemon 10
//! (and 7.2 where installed), `qemu-system-x86_64 -M none`, and qemu-ga on a unix socket.

use std::time::{Duration, Instant};

use qmp_blocking::{Client, ConnectionError, Error, GuestAgent, Options};
use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
struct VersionInfo {
    qemu: Triple,
}

#[derive(Debug, Deserialize)]
struct Triple {
    major: u64,
    minor: u64,
    micro: u64,
}

fn opts() -> Options {
    Options::default().connect_timeout(Duration::from_secs(10)).command_timeout(Some(Duration::from_secs(30)))
}

/// query-version agrees with the greeting, typed.
fn version_matches_greeting(server: &QemuServer) {
    let mut qmp = Client::connect_unix(server.socket_path(), opts()).expect("connect");
    let greeting = qmp.greeting().version.clone().expect("the greeting's version");
    let v: VersionInfo = qmp.execute("query-version", ()).expect("query-version");
    assert_eq!((v.qemu.major, v.qemu.minor, v.qemu.micro), (greeting.major, greeting.minor, greeting.micro));
    assert!(qmp.greeting().capabilities.iter().any(|c| c == "oob"), "{:?}", qmp.greeting());
    assert!(qmp.oob_enabled());
}

#[test]
fn qsd10_query_version() {
    let server = require!(QemuServer::storage_daemon());
    version_matches_greeting(&server);
    let mut qmp = Client::connect_unix(server.socket_path(), opts()).expect("reconnect after the first left");
    assert_eq!(qmp.greeting().version.as_ref().expect("the greeting\'s version").major, server.version().major);
    let _: Value = qmp.execute("query-version", ()).expect("query-version");
}

#[test]
fn qsd72_query_version() {
    let server = require!(QemuServer::storage_daemon_72());
    version_matches_greeting(&server);
}

#[test]
fn qsd10_schema_of_about_117_kb() {
    let server = require!(QemuServer::storage_daemon());
    let mut qmp = Client::connect_unix(server.socket_path(), opts()).expect("connect");
    let raw = qmp.execute_raw("query-qmp-schema", None).expect("schema");
    assert!(raw.as_bytes().len() > 100_000, "{} bytes", raw.as_bytes().len());
    let schema: Vec<Value> = raw.deserialize().expect("schema parses");
    assert!(schema.iter().any(|e| e["name"] == "query-version"));
    // A limit below the schema's size: the reply is skipped unbuffered, the command fails at once with the
    // sizes, and the session goes on.
    drop(qmp);
    let mut small = Client::connect_unix(server.socket_path(), opts().max_message_size(64 * 1024)).expect("connect");
    let err = small.execute_with_timeout::<Value>("query-qmp-schema", (), Some(Duration::from_secs(20)));
    match err {
        Err(Error::Request(qmp_proto::RequestError::ReplyTooLarge { len, limit })) => {
            assert!(len > 100_000, "{len}");
            assert_eq!(limit, 64 * 1024);
        }
        other => panic!("{other:?}"),
    }
    let _: Value = small.execute("query-version", ()).expect("session survives the oversized reply");
}

#[test]
fn qsd10_unknown_command_is_a_typed_error_and_the_session_survives() {
    let server = require!(QemuServer::storage_daemon());
    let mut qmp = Client::connect_unix(server.socket_path(), opts()).expect("connect");
    match qmp.execute::<Value>("no-such-command", ()) {
        Err(Error::Qmp(e)) => {
            assert_eq!(e.class, "CommandNotFound");
            assert!(e.desc.contains("no-such-command"), "{}", e.desc);
        }
        other => panic!("{other:?}"),
    }
    match qmp.execute::<Value>("blockdev-add", json!({"driver": "null-co"})) {
        Err(Error::Qmp(e)) => assert_eq!(e.class, "GenericError"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(qmp.execute::<Value>("query-version", json!([1])), Err(Error::Usage(_))));
    let _: Value = qmp.execute("query-version", ()).expect("still usable");
}

#[test]
fn qsd10_job_events_arrive_before_the_reply() {
    let server = require!(QemuServer::storage_daemon());
    let mut qmp = Client::connect_unix(server.socket_path(), opts()).expect("connect");
    let _: Value =
        qmp.execute("blockdev-add", json!({"driver": "null-co", "node-name": "n0", "size": 1 << 20})).expect("add");
    let _: Value = qmp
        .execute(
            "blockdev-create",
            json!({"job-id": "j1", "options": {"driver": "qcow2", "file": "n0", "size": 1 << 20}}),
        )
        .expect("create");
    // The reply has returned; the events that preceded it must already be buffered: no waiting needed.
    let first = qmp.next_event(Some(Duration::ZERO)).expect("no error").expect("event buffered before the reply");
    assert_eq!(first.name, "JOB_STATUS_CHANGE");
    let data: Value = first.data.expect("data").deserialize().expect("json");
    assert_eq!(data, json!({"status": "created", "id": "j1"}));
    let ts = first.timestamp.expect("timestamp");
    assert!(ts.seconds > 1_600_000_000 && (0..1_000_000).contains(&ts.microseconds), "{ts:?}");
    let mut statuses = vec![data["status"].as_str().unwrap_or_default().to_owned()];
    while statuses.last().map(String::as_str) != Some("concluded") {
        let ev = qmp.next_event(Some(Duration::from_secs(5))).expect("no error").expect("job events");
        let data: Value = ev.data.expect("data").deserialize().expect("json");
        statuses.push(data["status"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(statuses[..2], ["created", "running"]);
    assert_eq!(qmp.dropped_events(), 0);
}

#[test]
fn qsd10_quit_then_eof() {
    let mut server = require!(QemuServer::storage_daemon());
    let mut qmp = Client::connect_unix(server.socket_path(), opts()).expect("connect");
    let _: Value = qmp.execute("quit", ()).expect("quit is answered");
    match qmp.next_event(Some(Duration::from_secs(10))) {
        Err(Error::Connection(ConnectionError::Eof)) => {}
        other => panic!("expected EOF, got {other:?}"),
    }
    // Sticky: the same cause again.
    assert!(matches!(qmp.execute::<Value>("query-version", ()), Err(Error::Connection(ConnectionError::Eof))));
    assert!(server.wait_timeout(Duration::from_secs(10)).expect("wait").is_some(), "daemon exited");
}

#[test]
fn qsd10_second_client_gets_no_greeting_and_times_out() {
    let server = require!(QemuServer::storage_daemon());
    let _first = Client::connect_unix(server.socket_path(), opts()).expect("first client");
    let start = Instant::now();
    let second = Client::connect_unix(server.socket_path(), opts().connect_timeout(Duration::from_millis(500)));
    assert!(matches!(second, Err(Error::Connection(ConnectionError::GreetingTimeout))), "{second:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn qsd10_pretty_monitor() {
    let server = require!(QemuServer::storage_daemon_pretty());
    let mut qmp = Client::connect_unix(server.socket_path(), opts()).expect("connect to pretty=on monitor");
    let v: VersionInfo = qmp.execute("query-version", ()).expect("multi-line reply");
    assert_eq!(v.qemu.major, qmp.greeting().version.as_ref().expect("the greeting\'s version").major);
    assert!(matches!(qmp.execute::<Value>("nope", ()), Err(Error::Qmp(e)) if e.class == "CommandNotFound"));
}

#[test]
fn system_oob_negotiated_and_exec_oob() {
    let server = require!(QemuServer::system());
    let mut qmp = Client::connect_unix(server.socket_path(), opts()).expect("connect");
    assert!(qmp.oob_enabled(), "qemu-system offers oob on -qmp unix:");
    let yank: Value = qmp.execute_oob("query-yank", ()).expect("query-yank allows oob");
    assert!(yank.is_array(), "{yank}");
    match qmp.execute_oob::<Value>("query-version", ()) {
        Err(Error::Qmp(e)) => assert!(e.desc.contains("does not support OOB"), "{}", e.desc),
        other => panic!("{other:?}"),
    }
}

#[test]
fn system_without_oob() {
    let server = require!(QemuServer::system());
    let mut qmp = Client::connect_unix(server.socket_path(), opts().oob(false)).expect("connect");
    assert!(!qmp.oob_enabled());
    assert!(matches!(qmp.execute_oob::<Value>("query-yank", ()), Err(Error::Usage(_))));
    let status: Value = qmp.execute("query-status", ()).expect("query-status");
    assert!(status.get("status").is_some(), "{status}");
}

#[test]
fn system_stop_cont_events() {
    let server = require!(QemuServer::system());
    let mut qmp = Client::connect_unix(server.socket_path(), opts()).expect("connect");
    for (command, event) in [("stop", "STOP"), ("cont", "RESUME")] {
        let _: Value = qmp.execute(command, ()).expect(command);
        let ev = qmp.next_event(Some(Duration::ZERO)).expect("no error").expect("event came before the reply");
        assert_eq!(ev.name, event);
    }
}

#[test]
fn system_pretty_monitor_with_events() {
    let server = require!(QemuServer::system_pretty());
    let mut qmp = Client::connect_unix(server.socket_path(), opts()).expect("connect");
    let _: Value = qmp.execute("stop", ()).expect("stop");
    let ev = qmp.next_event(Some(Duration::from_secs(5))).expect("no error").expect("STOP");
    assert_eq!(ev.name, "STOP");
    assert!(matches!(qmp.execute::<Value>("nope", ()), Err(Error::Qmp(e)) if e.class == "CommandNotFound"));
}

#[test]
fn guest_agent_sync_info_ping() {
    let server = require!(QemuServer::guest_agent());
    let mut ga = GuestAgent::connect_unix(server.socket_path(), opts()).expect("connect and sync");
    let info: Value = ga.execute("guest-info", ()).expect("guest-info");
    assert!(info["version"].as_str().is_some_and(|v| v.starts_with('7') || v.starts_with('1')), "{info}");
    let ping: Value = ga.execute("guest-ping", ()).expect("guest-ping");
    assert_eq!(ping, json!({}));
    ga.sync(Duration::from_secs(5)).expect("resync");
    let echoed: i64 = ga.execute("guest-sync", json!({"id": 4242})).expect("guest-sync");
    assert_eq!(echoed, 4242);
    match ga.execute::<Value>("qmp_capabilities", ()) {
        Err(Error::Qmp(e)) => assert_eq!(e.class, "CommandNotFound"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn guest_agent_second_connection_resyncs() {
    let server = require!(QemuServer::guest_agent());
    {
        // Leave a half-written command behind, as a crashed client would: the agent's parser is stuck in it
        // until the sync's 0xFF resets it. (A complete command left unanswered would make qemu-ga 7.2 exit on
        // the reset connection when it writes the reply: see qmp-tests' guest-agent notes.)
        use std::io::Write;
        let mut raw = server.connect().expect("raw connect");
        raw.write_all(br#"{"execute":"guest-in"#).expect("write");
    }
    let mut ga = GuestAgent::connect_unix(server.socket_path(), opts()).expect("sync discards leftovers");
    let ping: Value = ga.execute("guest-ping", ()).expect("guest-ping");
    assert_eq!(ping, json!({}));
}

#[test]
fn qmp_client_on_a_guest_agent_socket_times_out() {
    let server = require!(QemuServer::guest_agent());
    let res = Client::connect_unix(server.socket_path(), opts().connect_timeout(Duration::from_millis(300)));
    assert!(matches!(res, Err(Error::Connection(ConnectionError::GreetingTimeout))), "{res:?}");
}

#[test]
fn qsd10_submit_many_then_wait_in_any_order() {
    let server = require!(QemuServer::storage_daemon());
    let mut qmp = Client::connect_unix(server.socket_path(), opts()).expect("connect");
    // Unknown command names come back in the error text: each reply says whose it is.
    let pending: Vec<_> = (0..20).map(|i| qmp.submit(&format!("no-such-{i}"), ()).expect("submit")).collect();
    let mut pending: Vec<_> = pending.into_iter().enumerate().collect();
    let (_, skipped) = pending.remove(7);
    qmp.cancel(skipped);
    for (i, p) in pending.into_iter().rev() {
        match qmp.wait(p) {
            Err(Error::Qmp(e)) => assert!(e.desc.contains(&format!("no-such-{i} ")), "{i}: {}", e.desc),
            other => panic!("{i}: {other:?}"),
        }
    }
    let _: Value = qmp.execute("query-version", ()).expect("still in sync");
    assert!(qmp.take_violations().is_empty());
}
