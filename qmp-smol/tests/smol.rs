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
