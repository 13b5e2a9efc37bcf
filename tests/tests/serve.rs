//! Our clients against our server (`qmp_async::serve` on the shared driver), on every runtime: tokio, smol and
//! async-std serving their own async clients, and the blocking client against a tokio server; over TCP too:
//! smol serving its client, and the blocking client against the blocking server (`qmp_blocking::serve`).
//!
//! Each run checks negotiation (OOB enabled), handlers (in-band and OOB, success and failure, arguments),
//! `CommandNotFound` for a command without a handler, events broadcast to every connected client, two
//! concurrent sessions, and a graceful shutdown that closes the clients and ends the serving future.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_lite::StreamExt;
use qmp_async::serve::{serve_tcp_listener, serve_unix, Failure, ServeOptions, ServerConfig, Service};
use qmp_async::{EventItem, Net, Options, Qmp};
use serde_json::{json, Value};

fn service() -> Service {
    Service::new(ServerConfig::qmp().version(10, 0, 2, "qmp-rs test"))
        .command("query-status", |_| async { Ok(json!({"status": "running", "running": true})) })
        .command("echo", |req| async move { Ok(Value::Object(req.arguments.into_map())) })
        .oob_command("query-yank", |req| async move { Ok(json!([{"oob": req.oob}])) })
        .command("fail", |_| async { Err(Failure::new("DeviceNotFound", "Device 'x' not found")) })
}

/// Where the server listens.
#[derive(Debug, Clone)]
enum Addr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

async fn connect<R: Net>(addr: &Addr) -> Qmp<R> {
    match addr {
        Addr::Unix(path) => Qmp::<R>::connect_unix(path, Options::default()).await,
        Addr::Tcp(addr) => Qmp::<R>::connect_tcp(*addr, Options::default()).await,
    }
    .expect("connect")
}

async fn client_part<R: Net>(addr: &Addr, handle: qmp_async::serve::ServerHandle) {
    let qmp = connect::<R>(addr).await;
    assert!(qmp.oob_enabled());
    assert_eq!(qmp.greeting().version.as_ref().expect("version").major, 10);
    let status: Value = qmp.execute("query-status", ()).await.expect("query-status");
    assert_eq!(status["status"], "running");
    let echo: Value = qmp.execute("echo", json!({"a": [1, "two"], "b": null})).await.expect("echo");
    assert_eq!(echo, json!({"a": [1, "two"], "b": null}));
    let yank: Value = qmp.execute_oob("query-yank", ()).await.expect("oob");
    assert_eq!(yank, json!([{"oob": true}]));
    match qmp.execute::<Value>("fail", ()).await {
        Err(qmp_async::Error::Qmp(e)) => {
            assert_eq!((e.class.as_str(), e.desc.as_str()), ("DeviceNotFound", "Device 'x' not found"))
        }
        other => panic!("{other:?}"),
    }
    match qmp.execute::<Value>("no-such", ()).await {
        Err(qmp_async::Error::Qmp(e)) => {
            assert_eq!(
                (e.class.as_str(), e.desc.as_str()),
                ("CommandNotFound", "The command no-such has not been found")
            )
        }
        other => panic!("{other:?}"),
    }
    // A second session at the same time, and an event reaching both.
    let other = connect::<R>(addr).await;
    let _: Value = other.execute("query-status", ()).await.expect("second client's command");
    let (mut ev1, mut ev2) = (qmp.events_named(&["RESUME"]), other.events_named(&["RESUME"]));
    assert_eq!(handle.sessions(), 2);
    assert_eq!(handle.event("RESUME", Some(json!({"n": 1}))), 2);
    for events in [&mut ev1, &mut ev2] {
        match events.next().await {
            Some(EventItem::Event(ev)) => {
                assert_eq!(ev.name, "RESUME");
                assert_eq!(ev.data.expect("data").as_value().expect("json"), json!({"n": 1}));
            }
            other => panic!("{other:?}"),
        }
    }
    // Graceful shutdown: both clients see the end of the connection.
    handle.shutdown();
    qmp.closed().await;
    other.closed().await;
}

async fn scenario<R: Net>(dir: &Path) {
    let path = dir.join("serve.sock");
    let (handle, serving) =
        serve_unix(R::default(), &path, service(), ServeOptions::default().concurrent(true)).expect("bind");
    let addr = Addr::Unix(path);
    let (served, ()) = futures_lite::future::zip(serving, client_part::<R>(&addr, handle.clone())).await;
    served.expect("serving ends cleanly after shutdown");
    assert_eq!(handle.sessions(), 0);
}

/// The same over TCP, on a free port of 127.0.0.1.
async fn tcp_scenario<R: Net>() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = Addr::Tcp(listener.local_addr().expect("local address"));
    let (handle, serving) =
        serve_tcp_listener(R::default(), listener, service(), ServeOptions::default().concurrent(true)).expect("serve");
    let (served, ()) = futures_lite::future::zip(serving, client_part::<R>(&addr, handle.clone())).await;
    served.expect("serving ends cleanly after shutdown");
    assert_eq!(handle.sessions(), 0);
}

#[test]
fn tokio_client_against_tokio_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), scenario::<qmp_tokio::Tokio>(dir.path())).await
    })
    .expect("timed out");
}

#[test]
fn smol_client_against_smol_server_over_tcp() {
    smol::block_on(tcp_scenario::<qmp_smol::Smol>());
}

#[test]
fn blocking_client_against_blocking_server_over_tcp() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    // The blocking server serves until the process ends: its thread is left blocked in accept().
    std::thread::spawn(move || {
        let mut fake = qmp_blocking::fake_qemu::FakeQemu::new();
        qmp_blocking::serve::serve_tcp_listener(&listener, &mut fake)
    });
    let connect = || qmp_blocking::Client::connect_tcp(addr, Options::default()).expect("connect over TCP");
    let mut client = connect();
    assert_eq!(client.greeting().version.as_ref().expect("version").major, 10);
    let status: Value = client.execute("query-status", ()).expect("query-status");
    assert_eq!(status["status"], "running");
    let _: Value = client.execute("stop", ()).expect("stop");
    match client.execute::<Value>("blockdev-del", ()) {
        Err(qmp_blocking::Error::Qmp(e)) => assert_eq!(e.desc, "Parameter 'node-name' is missing"),
        other => panic!("{other:?}"),
    }
    drop(client);
    // The next client gets a session of its own, and the fake's state, which outlives sessions as a VM's does.
    let mut client = connect();
    let status: Value = client.execute("query-status", ()).expect("query-status");
    assert_eq!(status["status"], "paused");
    let _: Value = client.execute("cont", ()).expect("cont");
    let status: Value = client.execute("query-status", ()).expect("query-status");
    assert_eq!(status["status"], "running");
}

#[test]
fn smol_client_against_smol_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    smol::block_on(scenario::<qmp_smol::Smol>(dir.path()));
}

#[test]
fn async_std_client_against_async_std_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    async_std::task::block_on(scenario::<qmp_smol::AsyncStd>(dir.path()));
}

#[test]
fn blocking_client_against_tokio_server_one_client_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("serve.sock");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let _guard = rt.enter();
    let (handle, serving) = qmp_tokio::serve_unix(&path, service(), ServeOptions::default()).expect("bind");
    let serving = rt.spawn(serving);
    let mut client = qmp_blocking::Client::connect_unix(&path, Options::default()).expect("connect");
    let status: Value = client.execute("query-status", ()).expect("query-status");
    assert_eq!(status["running"], true);
    // One client at a time, like QEMU: a second connection gets no greeting while the first is served.
    let second = std::os::unix::net::UnixStream::connect(&path).expect("connect second");
    second.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let mut buf = [0u8; 16];
    let early = std::io::Read::read(&mut &second, &mut buf);
    assert!(early.is_err(), "no greeting while the first client is connected: {early:?}");
    drop(client);
    second.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let n = std::io::Read::read(&mut &second, &mut buf).expect("greeting after the first client left");
    assert!(buf[..n].starts_with(b"{\"QMP\""));
    drop(second);
    handle.shutdown();
    rt.block_on(serving).expect("join").expect("serve");
}
