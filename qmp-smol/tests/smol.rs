//! The behavioural suite under smol (`smol::block_on`, smol's executor, async-io timers).
#![cfg(feature = "smol")]

mod common;
mod suite;

crate::suite!(common::Smol);

/// smol's own unix stream (async-net) through `from_stream`.
#[test]
fn smol_native_unix_stream() {
    use qmp_smol::Qmp;
    use qmp_tests::{require, servers::QemuServer};
    let server = require!(QemuServer::storage_daemon());
    let major = server.version().major;
    common::run::<common::Smol, _>(std::time::Duration::from_secs(30), async move {
        let stream = smol::net::unix::UnixStream::connect(server.socket_path()).await.expect("connect");
        let qmp = Qmp::from_stream(stream, qmp_smol::Options::default()).await.expect("handshake");
        let v: serde_json::Value = qmp.execute("query-version", ()).await.expect("query-version");
        assert_eq!(v["qemu"]["major"], major);
        qmp.close().await;
    });
}

/// `close` shuts the write half of a unix socket down, so the server reads the end of its input and closes too,
/// and `close` returns once it has (async-io's `poll_close` only flushes: without the shutdown the driver waited
/// the whole `CLOSE_LINGER` for a server that was still waiting for input, and the server read the end only
/// when the client dropped the socket, after `close` returned).
#[test]
fn close_shuts_the_write_half_of_a_unix_socket_down() {
    let (client, server) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    server.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    let writer = server.try_clone().expect("clone");
    let (server, server_read_the_end) = server_waiting_for_the_end(server, writer);
    common::run::<common::Smol, _>(std::time::Duration::from_secs(30), async move {
        let stream = async_io::Async::new(client).expect("register");
        let transport = qmp_smol::Unix::new(stream);
        let qmp = qmp_smol::Qmp::from_transport(transport, qmp_smol::Options::default(), qmp_smol::Smol::default())
            .await
            .expect("handshake");
        qmp.close().await;
        let seen = server_read_the_end.load(std::sync::atomic::Ordering::SeqCst);
        assert!(seen, "close returned before the server read the end of its input");
    });
    let rest = server.join().expect("server thread");
    assert!(rest.is_ok(), "the server never read the end of its input: {rest:?}");
}

/// The same over TCP (`connect_tcp`): async-io's TCP stream only flushes on close too.
#[test]
fn close_shuts_the_write_half_of_a_tcp_socket_down() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("address");
    let accept = std::thread::spawn(move || listener.accept().expect("accept").0);
    common::run::<common::Smol, _>(std::time::Duration::from_secs(30), async move {
        let connecting = qmp_smol::Qmp::connect_tcp(addr, qmp_smol::Options::default());
        let serving = async {
            let server = blocking::unblock(move || accept.join().expect("accept thread")).await;
            server.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
            let writer = server.try_clone().expect("clone");
            server_waiting_for_the_end(server, writer)
        };
        let (qmp, (server, server_read_the_end)) = futures_lite::future::zip(connecting, serving).await;
        let qmp = qmp.expect("handshake");
        qmp.close().await;
        let seen = server_read_the_end.load(std::sync::atomic::Ordering::SeqCst);
        assert!(seen, "close returned before the server read the end of its input");
        let rest = blocking::unblock(move || server.join().expect("server thread")).await;
        assert!(rest.is_ok(), "the server never read the end of its input: {rest:?}");
    });
}

type ServerThread = std::thread::JoinHandle<std::io::Result<Vec<u8>>>;

/// A server thread that greets, answers the negotiation, then reads until the end of its input (and says so)
/// before it closes its side.
fn server_waiting_for_the_end<S>(
    reader: S,
    mut writer: S,
) -> (ServerThread, std::sync::Arc<std::sync::atomic::AtomicBool>)
where
    S: std::io::Read + std::io::Write + Send + 'static,
{
    use std::io::{BufRead, BufReader, Read};
    let server_read_the_end = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let read_the_end = server_read_the_end.clone();
    let server = std::thread::spawn(move || {
        writer.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n").expect("greeting");
        let mut reader = BufReader::new(reader);
        // The negotiation command ends with `}`; answer it with its id.
        let mut command = Vec::new();
        reader.read_until(b'}', &mut command).expect("read the negotiation");
        reader.read_until(b'}', &mut command).expect("read the negotiation");
        let command: serde_json::Value = serde_json::from_slice(&command).expect("one JSON command");
        let reply = serde_json::json!({"return": {}, "id": command["id"]});
        writer.write_all(format!("{reply}\r\n").as_bytes()).expect("reply");
        let mut rest = Vec::new();
        let read = reader.read_to_end(&mut rest).map(|_| rest);
        read_the_end.store(read.is_ok(), std::sync::atomic::Ordering::SeqCst);
        // The server's side closes here, which ends the client's wait.
        read
    });
    (server, server_read_the_end)
}
