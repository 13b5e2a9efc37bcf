//! The behavioural suite under async-std (`async_std::task`, its timer and spawn).
#![cfg(feature = "async-std")]

mod common;
mod suite;

crate::suite!(common::AsyncStd);

/// async-std's own unix stream: through `from_stream` as is, and converted to std for `from_unix_stream` (fd
/// passing); the guest agent over one too. Only the `async-std` runtime is used (it is not the default here,
/// where both features are on).
#[test]
fn async_std_native_unix_streams() {
    use async_std::os::unix::net::UnixStream;
    use qmp_smol::async_std::{GuestAgent, Qmp};
    use qmp_smol::Options;
    use qmp_tests::{require, servers::QemuServer};
    let system = require!(QemuServer::system());
    let ga = require!(QemuServer::guest_agent());
    common::run::<common::AsyncStd, _>(std::time::Duration::from_secs(30), async move {
        let options = Options::default();
        let stream = UnixStream::connect(system.socket_path()).await.expect("connect");
        let qmp = Qmp::from_stream(stream, options.clone()).await.expect("handshake");
        let v: serde_json::Value = qmp.execute("query-version", ()).await.expect("query-version");
        assert_eq!(v["qemu"]["major"], 7);
        qmp.close().await;

        let stream = UnixStream::connect(system.socket_path()).await.expect("connect");
        let stream = std::os::unix::net::UnixStream::try_from(stream).expect("to std");
        let qmp = Qmp::from_unix_stream(stream, options.clone()).await.expect("handshake");
        let file = tempfile::tempfile().unwrap();
        qmp.send_fd("from-async-std", &file).await.expect("getfd");
        qmp.close().await;

        let stream = UnixStream::connect(ga.socket_path()).await.expect("connect");
        let agent = GuestAgent::from_stream(stream, options).await.expect("sync");
        let _: serde_json::Value = agent.execute("guest-ping", ()).await.expect("guest-ping");
        agent.close().await;
    });
}
