//! Against real servers: qemu-storage-daemon (10, or 7.2 where it is the only one installed: replies are checked
//! against the version the server announces), qemu-system-x86_64 7.2 (`-M none`), qemu-ga.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use qmp_smol::{ConnectionError, Error, EventItem};
use qmp_tests::require;
use qmp_tests::servers::{self, QemuServer, ServerKind};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::common::{run, GuestAgent, Listener, Qmp, Rt};

const LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
struct VersionTriple {
    major: u64,
    minor: u64,
    micro: u64,
}

#[derive(Debug, Deserialize)]
struct VersionInfo {
    qemu: VersionTriple,
    package: String,
}

#[derive(Debug, Deserialize)]
struct Status {
    status: String,
    running: bool,
}

/// The error a command gets when QEMU does not know it: its description names the command, so a reply can be
/// traced to the call that got it.
async fn echo<N: qmp_async::Runtime>(qmp: &qmp_async::Qmp<N>, tag: &str) -> String {
    match qmp.execute::<Value>(&format!("no-such-command-{tag}"), ()).await {
        Err(Error::Qmp(e)) => {
            assert_eq!(e.class, "CommandNotFound", "{e}");
            e.desc
        }
        other => panic!("expected CommandNotFound, got {other:?}"),
    }
}

fn echoed(tag: &str) -> String {
    format!("The command no-such-command-{tag} has not been found")
}

pub fn query_version_storage_daemon_10<R: Rt>() {
    let server = require!(QemuServer::storage_daemon());
    let major = server.version().major;
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        assert_eq!(qmp.greeting().version.as_ref().expect("the greeting\'s version").major, major);
        assert!(qmp.oob_enabled(), "qemu-storage-daemon offers oob");
        let v: VersionInfo = qmp.execute("query-version", ()).await.expect("query-version");
        assert_eq!(v.qemu.major, major);
        assert_eq!(
            (v.qemu.minor, v.qemu.micro),
            (
                qmp.greeting().version.as_ref().expect("the greeting\'s version").minor,
                qmp.greeting().version.as_ref().expect("the greeting\'s version").micro
            )
        );
        assert_eq!(v.package.trim(), qmp.greeting().version.as_ref().expect("the greeting\'s version").package.trim());
        let raw = qmp.execute_raw("query-version", None).await.expect("raw");
        assert!(raw.raw_str().contains(&format!("\"major\": {major}")), "{raw}");
        assert!(qmp.take_violations().is_empty());
        qmp.close().await;
    });
}

pub fn query_version_system_72<R: Rt>() {
    let server = require!(QemuServer::system());
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        assert_eq!(qmp.greeting().version.as_ref().expect("the greeting\'s version").major, 7);
        let v: VersionInfo = qmp.execute("query-version", ()).await.expect("query-version");
        assert_eq!((v.qemu.major, v.qemu.minor), (7, 2));
        let status: Status = qmp.execute("query-status", ()).await.expect("query-status");
        // `-M none` starts running (no -S).
        assert_eq!((status.status.as_str(), status.running), ("running", true));
        qmp.close().await;
    });
}

pub fn pretty_monitor<R: Rt>() {
    let server = require!(QemuServer::storage_daemon_pretty());
    let major = server.version().major;
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        let v: VersionInfo = qmp.execute("query-version", ()).await.expect("query-version");
        assert_eq!(v.qemu.major, major);
        assert!(echo(&qmp, "pretty").await.contains("no-such-command-pretty"));
        qmp.close().await;
    });
}

pub fn concurrent_commands_from_many_tasks<R: Rt>() {
    let server = require!(QemuServer::storage_daemon());
    let major = server.version().major;
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        let tasks: Vec<_> = (0..32)
            .map(|task| {
                let qmp = qmp.clone();
                R::spawn(async move {
                    for i in 0..25 {
                        let tag = format!("{task}-{i}");
                        if i % 5 == 0 {
                            let v: VersionInfo = qmp.execute("query-version", ()).await.expect("query-version");
                            assert_eq!(v.qemu.major, major);
                        }
                        assert_eq!(echo(&qmp, &tag).await, echoed(&tag), "reply went to the wrong caller");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        assert!(qmp.take_violations().is_empty());
        qmp.close().await;
    });
}

pub fn events_reach_every_subscriber<R: Rt>() {
    let server = require!(QemuServer::system());
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        let mut all = qmp.events();
        let mut also = qmp.events();
        let mut resumes = qmp.events_named(&["RESUME"]);
        for _ in 0..3 {
            qmp.execute::<Value>("stop", ()).await.expect("stop");
            qmp.execute::<Value>("cont", ()).await.expect("cont");
        }
        for sub in [&mut all, &mut also] {
            for expected in ["STOP", "RESUME", "STOP", "RESUME", "STOP", "RESUME"] {
                match sub.next().await {
                    Some(EventItem::Event(ev)) => {
                        assert_eq!(ev.name, expected);
                        assert!(ev.timestamp.and_then(|t| t.to_system_time()).is_some());
                    }
                    other => panic!("expected {expected}, got {other:?}"),
                }
            }
        }
        for _ in 0..3 {
            let item = resumes.recv().await.expect("an event");
            assert_eq!(item.event().map(|e| e.name.as_str()), Some("RESUME"));
        }
        qmp.close().await;
        assert!(all.next().await.is_none(), "the stream ends with the session");
        assert!(resumes.next().await.is_none());
    });
}

pub fn slow_subscriber_lags_and_commands_go_on<R: Rt>() {
    let server = require!(QemuServer::system());
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options().event_buffer(4)).await.expect("connect");
        let mut stalled = qmp.events();
        let mut fast = qmp.events();
        for _ in 0..10 {
            qmp.execute::<Value>("stop", ()).await.expect("stop");
            qmp.execute::<Value>("cont", ()).await.expect("cont");
            // The fast subscriber keeps up; the stalled one never reads.
            for expected in ["STOP", "RESUME"] {
                match fast.next().await {
                    Some(EventItem::Event(ev)) => assert_eq!(ev.name, expected),
                    other => panic!("the fast subscriber lost events: {other:?}"),
                }
            }
        }
        assert!(fast.buffered() <= 4, "memory stays bounded: {} buffered", fast.buffered());
        // The stalled subscriber: one lag marker for the 16 it lost, then the last 4, in order.
        match stalled.next().await {
            Some(EventItem::Lagged(n)) => assert_eq!(n, 16),
            other => panic!("expected a lag marker, got {other:?}"),
        }
        for expected in ["STOP", "RESUME", "STOP", "RESUME"] {
            let item = stalled.next().await.expect("an event");
            assert_eq!(item.event().map(|e| e.name.as_str()), Some(expected));
        }
        let status: Status = qmp.execute("query-status", ()).await.expect("commands still work");
        assert!(status.running);
        qmp.close().await;
    });
}

pub fn oob_commands_and_overtaking<R: Rt>() {
    let server = require!(QemuServer::system());
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        assert!(qmp.oob_enabled());
        let yank: Value = qmp.execute_oob("query-yank", ()).await.expect("query-yank");
        assert!(yank.is_array(), "{yank}");
        match qmp.execute_oob::<Value>("query-version", ()).await {
            Err(Error::Qmp(e)) => assert!(e.desc.contains("does not support OOB"), "{e}"),
            other => panic!("{other:?}"),
        }
        // Slow in-band commands (each answer is ~100 KB of schema), then one OOB command, handed to the driver in
        // that order (each call is polled once, which queues it): the OOB one is answered before the last
        // in-band one.
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut calls: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> = Vec::new();
        for i in 0..6 {
            let (qmp, order) = (qmp.clone(), order.clone());
            calls.push(Box::pin(async move {
                qmp.execute_raw("query-qmp-schema", None).await.expect("schema");
                order.lock().unwrap().push(format!("schema{i}"));
            }));
        }
        let (q, o) = (qmp.clone(), order.clone());
        calls.push(Box::pin(async move {
            q.execute_oob::<Value>("query-yank", ()).await.expect("oob");
            o.lock().unwrap().push("oob".into());
        }));
        // The first poll queues each command, in this order (and, as the caller drives the connection while it
        // waits, may write it; a call that got its reply in that poll is done).
        let mut pending = Vec::new();
        for mut call in calls {
            if futures_lite::future::poll_once(call.as_mut()).await.is_none() {
                pending.push(call);
            }
        }
        let tasks: Vec<_> = pending.into_iter().map(R::spawn).collect();
        for task in tasks {
            task.await;
        }
        let order = order.lock().unwrap().clone();
        assert_ne!(order.last().map(String::as_str), Some("oob"), "OOB did not overtake: {order:?}");
        qmp.close().await;
    });
}

pub fn oob_refused_when_not_negotiated<R: Rt>() {
    let server = require!(QemuServer::system());
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options().oob(false)).await.expect("connect");
        assert!(!qmp.oob_enabled());
        match qmp.execute_oob::<Value>("query-yank", ()).await {
            Err(Error::Usage(qmp_smol::UsageError::OobNotNegotiated)) => {}
            other => panic!("{other:?}"),
        }
        // Nothing was sent: the session is fine.
        let _: Value = qmp.execute("query-yank", ()).await.expect("in-band query-yank");
        qmp.close().await;
    });
}

pub fn command_timeout_then_session_goes_on<R: Rt>() {
    let server = require!(QemuServer::storage_daemon());
    let major = server.version().major;
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        // A deadline that has passed before the reply can come: the call ends with TimedOut, the late reply is
        // swallowed, and the next call gets its own reply.
        for i in 0..20 {
            match qmp.execute_with_timeout::<Value>("query-version", (), Some(Duration::ZERO)).await {
                Err(Error::TimedOut) => {}
                other => panic!("{other:?}"),
            }
            let tag = format!("after-timeout-{i}");
            assert_eq!(echo(&qmp, &tag).await, echoed(&tag));
        }
        let v: VersionInfo =
            qmp.execute_with_timeout("query-version", (), Some(Duration::from_secs(5))).await.expect("in time");
        assert_eq!(v.qemu.major, major);
        let v: VersionInfo = qmp.execute_with_timeout("query-version", (), None).await.expect("no deadline");
        assert_eq!(v.qemu.major, major);
        qmp.close().await;
    });
}

pub fn greeting_timeout_for_a_second_client<R: Rt>() {
    let server = require!(QemuServer::storage_daemon());
    run::<R, _>(LIMIT, async move {
        let first = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        let started = Instant::now();
        let second =
            Qmp::<R>::connect_unix(server.socket_path(), R::options().connect_timeout(Duration::from_millis(300)))
                .await;
        match second {
            Err(Error::Connection(ConnectionError::GreetingTimeout)) => {}
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(5));
        let _: Value = first.execute("query-version", ()).await.expect("the first client is unaffected");
        first.close().await;
    });
}

pub fn dropped_futures_never_desync<R: Rt>() {
    let server = require!(QemuServer::storage_daemon());
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        // Many tasks each start calls and drop some of them at different points: before the first poll, right
        // after it (the request is queued), or after a short wait (on the wire, or answered and unread).
        let tasks: Vec<_> = (0..32u64)
            .map(|task| {
                let qmp = qmp.clone();
                R::spawn(async move {
                    let mut state = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for i in 0..100 {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let tag = format!("{task}-{i}");
                        let call = echo(&qmp, &tag);
                        match state % 4 {
                            0 => drop(call),
                            1 => {
                                // Dropped after one poll: its command queued, or written (the caller drives the
                                // connection while it waits), or even answered already in that poll.
                                let mut call = Box::pin(call);
                                if let Some(desc) = futures_lite::future::poll_once(&mut call).await {
                                    assert_eq!(desc, echoed(&tag));
                                }
                            }
                            2 => {
                                let wait = Duration::from_micros(state % 400);
                                let raced = futures_lite::future::or(async { Some(call.await) }, async {
                                    R::sleep(wait).await;
                                    None
                                });
                                if let Some(desc) = raced.await {
                                    assert_eq!(desc, echoed(&tag));
                                }
                            }
                            _ => assert_eq!(call.await, echoed(&tag)),
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        // Every later call gets its own reply, and QEMU never saw half a command (that would have produced an
        // id-less parse error, reported as a violation).
        for i in 0..20 {
            let tag = format!("final-{i}");
            assert_eq!(echo(&qmp, &tag).await, echoed(&tag));
        }
        let violations = qmp.take_violations();
        assert!(violations.is_empty(), "{violations:?}");
        qmp.close().await;
    });
}

pub fn guest_agent_sync_and_commands<R: Rt>() {
    let server = require!(QemuServer::guest_agent());
    run::<R, _>(LIMIT, async move {
        let ga = GuestAgent::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        let _: Value = ga.execute("guest-ping", ()).await.expect("guest-ping");
        let info: Value = ga.execute("guest-info", ()).await.expect("guest-info");
        assert!(info["version"].as_str().is_some_and(|v| v.starts_with('7')), "{info}");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let ga = ga.clone();
                R::spawn(async move {
                    for _ in 0..10 {
                        let t: i64 = ga.execute("guest-get-time", ()).await.expect("guest-get-time");
                        assert!(t > 0);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        ga.sync(Duration::from_secs(5)).await.expect("resync");
        match ga.execute::<Value>("qmp_capabilities", ()).await {
            Err(Error::Qmp(e)) => assert_eq!(e.class, "CommandNotFound"),
            other => panic!("{other:?}"),
        }
        let args = qmp_smol::RawJson::from_json(r#"{"id": 42}"#).unwrap();
        assert_eq!(ga.execute_raw("guest-sync", Some(&args)).await.expect("guest-sync").raw_str(), "42");
        // Every reply was read: qemu-ga survives the close, and a second client synchronises too.
        ga.close().await;
        let again = GuestAgent::<R>::connect_unix(server.socket_path(), R::options()).await.expect("reconnect");
        let _: Value = again.execute("guest-ping", ()).await.expect("guest-ping");
        again.close().await;
    });
}

pub fn send_fd_and_add_fd<R: Rt>() {
    let server = require!(QemuServer::system());
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        let file = tempfile::tempfile().expect("temp file");
        qmp.send_fd("fd-a", &file).await.expect("getfd");
        qmp.send_fd("fd-b", &file).await.expect("getfd");
        let _: Value = qmp.execute("closefd", json!({"fdname": "fd-a"})).await.expect("QEMU holds fd-a");
        let _: Value = qmp.execute("closefd", json!({"fdname": "fd-b"})).await.expect("QEMU holds fd-b");
        match qmp.execute::<Value>("closefd", json!({"fdname": "fd-a"})).await {
            Err(Error::Qmp(e)) => assert!(e.desc.contains("not found"), "{e}"),
            other => panic!("{other:?}"),
        }
        // Several descriptor passes at once from several tasks: each lands under its own name.
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let qmp = qmp.clone();
                R::spawn(async move {
                    let file = tempfile::tempfile().expect("temp file");
                    qmp.send_fd(&format!("par-{i}"), &file).await.expect("getfd");
                    let info = qmp.add_fd(&file, None, Some(&format!("note-{i}"))).await.expect("add-fd");
                    (i, info)
                })
            })
            .collect();
        let mut sets = HashSet::new();
        for task in tasks {
            let (i, info) = task.await;
            assert!(sets.insert(info.fdset_id), "fd sets are distinct");
            let _: Value = qmp.execute("closefd", json!({"fdname": format!("par-{i}")})).await.expect("closefd");
        }
        let fdsets: Vec<Value> = qmp.execute("query-fdsets", ()).await.expect("query-fdsets");
        assert_eq!(fdsets.len(), 6, "{fdsets:?}");
        let info = qmp.add_fd(&file, Some(1000), None).await.expect("add-fd to a given set");
        assert_eq!(info.fdset_id, 1000);
        assert!(qmp.take_violations().is_empty());
        qmp.close().await;
    });
}

pub fn fd_passing_needs_a_unix_socket<R: Rt>() {
    let server = require!(QemuServer::system());
    run::<R, _>(LIMIT, async move {
        // A unix socket handed in as a plain stream cannot pass descriptors: the call fails and sends nothing.
        let stream = async_io::Async::<std::os::unix::net::UnixStream>::connect(server.socket_path()).await.unwrap();
        let qmp = Qmp::<R>::from_stream(stream, R::options()).await.expect("connect");
        let file = tempfile::tempfile().unwrap();
        match qmp.send_fd("x", &file).await {
            Err(Error::FdPassing(e)) => assert_eq!(e.kind(), std::io::ErrorKind::Unsupported),
            other => panic!("{other:?}"),
        }
        let _: Value = qmp.execute("query-version", ()).await.expect("the session is fine");
        qmp.close().await;
        // The same socket through from_unix_stream can.
        let std_stream = std::os::unix::net::UnixStream::connect(server.socket_path()).unwrap();
        let qmp = Qmp::<R>::from_unix_stream(std_stream, R::options()).await.expect("connect");
        qmp.send_fd("y", &file).await.expect("getfd");
        qmp.close().await;
    });
}

pub fn close_and_closed<R: Rt>() {
    let server = require!(QemuServer::storage_daemon());
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        let other = qmp.clone();
        let watcher = R::spawn(async move { other.closed().await });
        let mut events = qmp.events();
        assert!(qmp.connection_error().is_none());
        qmp.close().await;
        assert_eq!(watcher.await, ConnectionError::Local);
        assert_eq!(qmp.connection_error(), Some(ConnectionError::Local));
        match qmp.execute::<Value>("query-version", ()).await {
            Err(Error::Connection(ConnectionError::Local)) => {}
            other => panic!("{other:?}"),
        }
        assert!(events.next().await.is_none());
        // The server is free again: a new client gets a greeting at once.
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("reconnect");
        let _: Value = qmp.execute("query-version", ()).await.expect("query-version");
        qmp.close().await;
    });
}

pub fn server_quits<R: Rt>() {
    let mut server = require!(QemuServer::system());
    run::<R, _>(LIMIT, async {
        let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
        let mut events = qmp.events();
        let _: Value = qmp.execute("quit", ()).await.expect("quit is answered before the end");
        assert_eq!(qmp.closed().await, ConnectionError::Eof);
        match events.next().await {
            Some(EventItem::Event(ev)) => assert_eq!(ev.name, "SHUTDOWN"),
            other => panic!("{other:?}"),
        }
        assert!(events.next().await.is_none());
        match qmp.execute::<Value>("query-version", ()).await {
            Err(Error::Connection(ConnectionError::Eof)) => {}
            other => panic!("{other:?}"),
        }
    });
    assert!(server.wait_timeout(Duration::from_secs(10)).unwrap().is_some(), "QEMU exited");
}

pub fn dropping_every_handle_closes<R: Rt>() {
    let server = require!(QemuServer::storage_daemon());
    run::<R, _>(LIMIT, async move {
        for _ in 0..3 {
            let qmp = Qmp::<R>::connect_unix(server.socket_path(), R::options()).await.expect("connect");
            let clone = qmp.clone();
            let _: Value = clone.execute("query-version", ()).await.expect("query-version");
            drop(qmp);
            drop(clone);
            // Had the connection stayed open, the next client would get no greeting.
        }
    });
}

pub fn listener_accepts_qemu<R: Rt>() {
    let Some(binary) = servers::locate_or_skip(ServerKind::System) else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listen.sock");
    let listener = Listener::<R>::bind(&path).expect("bind");
    assert_eq!(listener.path(), path);
    let chardev = format!("socket,id=c,path={}", path.display());
    let child = spawn_qemu(&binary, &["-chardev", &chardev, "-mon", "chardev=c,mode=control"]);
    run::<R, _>(LIMIT, async move {
        let qmp = listener.accept(R::options()).await.expect("accept");
        assert_eq!(qmp.greeting().version.as_ref().expect("the greeting\'s version").major, 7);
        let status: Status = qmp.execute("query-status", ()).await.expect("query-status");
        assert_eq!(status.status, "running");
        let file = tempfile::tempfile().unwrap();
        qmp.send_fd("accepted", &file).await.expect("getfd over an accepted socket");
        qmp.close().await;
    });
    drop(child);
}

pub fn tcp_connect<R: Rt>() {
    let Some(binary) = servers::locate_or_skip(ServerKind::System) else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let qmp_arg = format!("tcp:127.0.0.1:{port},server=on,wait=off");
    let child = spawn_qemu(&binary, &["-qmp", &qmp_arg]);
    run::<R, _>(LIMIT, async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        let qmp = loop {
            match Qmp::<R>::connect_tcp(format!("127.0.0.1:{port}"), R::options()).await {
                Ok(qmp) => break qmp,
                Err(Error::Connect(e)) if Instant::now() < deadline => {
                    let _ = e;
                    R::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        let v: VersionInfo = qmp.execute("query-version", ()).await.expect("query-version");
        assert_eq!(v.qemu.major, 7);
        let file = tempfile::tempfile().unwrap();
        assert!(matches!(qmp.send_fd("x", &file).await, Err(Error::FdPassing(_))));
        qmp.close().await;
    });
    drop(child);
}

pub fn with_driver_spawned_by_hand<R: Rt>() {
    let server = require!(QemuServer::storage_daemon());
    let major = server.version().major;
    run::<R, _>(LIMIT, async move {
        let stream = async_io::Async::<std::os::unix::net::UnixStream>::connect(server.socket_path()).await.unwrap();
        let (connecting, driver) =
            Qmp::<R>::with_driver(qmp_smol::Unix::new(stream), qmp_smol::Options::default(), R::runtime());
        let finished = R::spawn(driver);
        let qmp = connecting.await.expect("handshake");
        let v: VersionInfo = qmp.execute("query-version", ()).await.expect("query-version");
        assert_eq!(v.qemu.major, major);
        qmp.close().await;
        finished.await;
    });
}

pub fn typed_commands_and_events<R: Rt>() {
    use qmp_smol::qapi::qmp::{self, commands::*};
    let qsd = require!(QemuServer::storage_daemon());
    let system = require!(QemuServer::system());
    let ga = require!(QemuServer::guest_agent());
    let qsd_major = i64::try_from(qsd.version().major).expect("a small number");
    run::<R, _>(LIMIT, async move {
        let qmp = Qmp::<R>::connect_unix(qsd.socket_path(), R::options()).await.expect("connect");
        let version = qmp.execute_typed(QueryVersion::default()).await.expect("typed query-version");
        assert_eq!(version.qemu.major, qsd_major);
        qmp.close().await;

        let qmp = Qmp::<R>::connect_unix(system.socket_path(), R::options()).await.expect("connect");
        let status = qmp.execute_typed(QueryStatus::default()).await.expect("typed query-status");
        assert!(status.running);
        let mut events = qmp.events();
        qmp.execute_typed(Stop::default()).await.expect("typed stop");
        qmp.execute_typed_oob(QueryYank::default()).await.expect("typed OOB query-yank");
        let item = events.next().await.expect("STOP");
        assert!(matches!(item.to_qapi(), Some(Ok(qmp::Event::Stop(_)))), "{item:?}");
        qmp.close().await;

        let agent = GuestAgent::<R>::connect_unix(ga.socket_path(), R::options()).await.expect("connect");
        let info =
            agent.execute_typed(qmp_smol::qapi::qga::commands::GuestInfo::default()).await.expect("typed guest-info");
        assert!(info.version.starts_with('7'));
        agent.close().await;
    });
}

// ----- helpers for servers the tests crate does not start -------------------------------------------------------

/// A qemu-system child killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_qemu(binary: &std::path::Path, extra: &[&str]) -> Killed {
    let child = Command::new(binary)
        .args(["-M", "none", "-display", "none", "-nodefaults"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn qemu-system");
    Killed(child)
}
