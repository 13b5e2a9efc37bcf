//! Typed commands and events (feature `qapi`, through `qmp-qapi`) against real servers: which replies of which
//! QEMU deserialize into the `qapi-qmp` 0.15 / `qapi-qga` 0.13 types.
#![cfg(feature = "qapi")]

mod common;

use common::options;
use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use qmp_tokio::qapi::{qapi_qga, qapi_qmp};
use qmp_tokio::{Error, GuestAgent, Qmp};

#[tokio::test]
async fn qemu_system_72() {
    let server = require!(QemuServer::system());
    let qmp = Qmp::connect_unix(server.socket_path(), options()).await.unwrap();
    let version = qmp.execute_typed(qapi_qmp::query_version {}).await.unwrap();
    assert_eq!(version.qemu.major, 7);
    let status = qmp.execute_typed(qapi_qmp::query_status {}).await.unwrap();
    assert!(status.running, "-M none without -S runs");
    let commands = qmp.execute_typed(qapi_qmp::query_commands {}).await.unwrap();
    assert!(commands.iter().any(|c| c.name == "query-yank"));
    let yank = qmp.execute_typed_oob(qapi_qmp::query_yank {}).await.unwrap();
    assert!(yank.is_empty() || !yank.is_empty());
    let kvm = qmp.execute_typed(qapi_qmp::query_kvm {}).await.unwrap();
    let _ = kvm.present;
    qmp.execute_typed(qapi_qmp::query_block_jobs {}).await.unwrap();
    qmp.execute_typed(qapi_qmp::query_chardev {}).await.unwrap();
    qmp.execute_typed(qapi_qmp::query_name {}).await.unwrap();
    qmp.execute_typed(qapi_qmp::query_iothreads {}).await.unwrap();
    qmp.execute_typed(qapi_qmp::query_migrate_parameters {}).await.unwrap();
    qmp.execute_typed(qapi_qmp::query_current_machine {}).await.unwrap();

    let file = std::fs::File::open("/dev/null").unwrap();
    let added = qmp.add_fd(&file, Some(7), Some("null")).await.unwrap();
    let sets = qmp.execute_typed(qapi_qmp::query_fdsets {}).await.unwrap();
    assert_eq!(sets[0].fdset_id, 7);
    assert_eq!(sets[0].fds[0].fd, added.fd);
    qmp.execute_typed(qapi_qmp::getfd { fdname: "nothing".into() }).await.unwrap_err();

    // A server error stays a server error.
    let err = qmp.execute_typed(qapi_qmp::closefd { fdname: "none".into() }).await.unwrap_err();
    assert!(matches!(err, Error::Qmp(_)), "{err}");

    // Typed events.
    let mut events = qmp.events();
    qmp.execute_typed(qapi_qmp::stop {}).await.unwrap();
    qmp.execute_typed(qapi_qmp::cont {}).await.unwrap();
    let stop = events.recv().await.unwrap().to_qapi().unwrap().unwrap();
    assert!(matches!(stop, qapi_qmp::Event::STOP { .. }), "{stop:?}");
    let resume = events.recv().await.unwrap().to_qapi().unwrap().unwrap();
    assert!(matches!(resume, qapi_qmp::Event::RESUME { .. }), "{resume:?}");
}

/// Replies of qemu-system 7.2 that do not fit the QEMU 9.1 schema of `qapi-qmp` 0.15 (listed in `qmp-qapi`'s
/// docs): a decode error for the typed call, while the untyped one works.
#[tokio::test]
async fn qemu_system_72_known_mismatches() {
    let server = require!(QemuServer::system());
    let qmp = Qmp::connect_unix(server.socket_path(), options()).await.unwrap();
    let decode_error = |r: Result<_, Error>, what: &str| match r {
        Err(Error::Decode(e)) => assert!(e.to_string().contains(what), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("{what}: deserialized after all; update the docs"),
    };
    decode_error(qmp.execute_typed(qapi_qmp::query_machines { compat_props: None }).await.map(drop), "`acpi`");
    decode_error(qmp.execute_typed(qapi_qmp::query_migrate_capabilities {}).await.map(drop), "`compress`");
    decode_error(qmp.execute_typed(qapi_qmp::query_sev {}).await.map(drop), "`sev-type`");
    qmp.execute::<serde_json::Value>("query-machines", ()).await.unwrap();
    qmp.execute::<serde_json::Value>("query-migrate-capabilities", ()).await.unwrap();
}

/// The biggest reply of all, the introspected schema, of a QEMU older (7.2) and newer (10.0) than the 9.1 schema
/// the types come from.
#[tokio::test]
async fn schema_of_older_and_newer_qemu() {
    for server in [require!(QemuServer::system()), require!(QemuServer::storage_daemon())] {
        let qmp = Qmp::connect_unix(server.socket_path(), options()).await.unwrap();
        let schema = qmp.execute_typed(qapi_qmp::query_qmp_schema {}).await;
        let schema = schema.unwrap_or_else(|e| panic!("{:?}: {e}", server.kind()));
        assert!(schema.len() > 500, "{}", schema.len());
        let commands = qmp.execute_typed(qapi_qmp::query_commands {}).await.unwrap();
        assert!(commands.len() > 50);
    }
}

#[tokio::test]
async fn storage_daemon_10() {
    let server = require!(QemuServer::storage_daemon());
    let qmp = Qmp::connect_unix(server.socket_path(), options()).await.unwrap();
    let version = qmp.execute_typed(qapi_qmp::query_version {}).await.unwrap();
    assert_eq!(version.qemu.major, 10);
    qmp.execute::<serde_json::Value>(
        "blockdev-add",
        serde_json::json!({"driver": "null-co", "node-name": "null0", "size": 1048576}),
    )
    .await
    .unwrap();
    let nodes = qmp.execute_typed(qapi_qmp::query_named_block_nodes { flat: Some(true) }).await.unwrap();
    assert!(nodes.iter().any(|n| n.node_name.as_deref() == Some("null0")), "{nodes:?}");
    qmp.execute_typed(qapi_qmp::query_block_jobs {}).await.unwrap();
    qmp.execute_typed(qapi_qmp::query_block_exports {}).await.unwrap();

    // A job's events: JOB_STATUS_CHANGE, typed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("created.raw");
    let mut jobs = qmp.events_named(&["JOB_STATUS_CHANGE"]);
    qmp.execute::<serde_json::Value>(
        "blockdev-create",
        serde_json::json!({"job-id": "create0", "options": {"driver": "file", "filename": path, "size": 0}}),
    )
    .await
    .unwrap();
    loop {
        let item = jobs.recv().await.unwrap();
        let event = item.to_qapi().unwrap().unwrap();
        let qapi_qmp::Event::JOB_STATUS_CHANGE { data, .. } = event else { panic!("{event:?}") };
        assert_eq!(data.id, "create0");
        if matches!(data.status, qapi_qmp::JobStatus::concluded) {
            break;
        }
    }
    qmp.execute::<serde_json::Value>("job-dismiss", serde_json::json!({"id": "create0"})).await.unwrap();
    assert!(path.exists());
}

#[tokio::test]
async fn guest_agent_72() {
    let server = require!(QemuServer::guest_agent());
    let ga = GuestAgent::connect_unix(server.socket_path(), options()).await.unwrap();
    ga.execute_typed(qapi_qga::guest_ping {}).await.unwrap();
    let info = ga.execute_typed(qapi_qga::guest_info {}).await.unwrap();
    assert!(info.version.starts_with('7'), "{}", info.version);
    let time = ga.execute_typed(qapi_qga::guest_get_time {}).await.unwrap();
    assert!(time > 0);
    let echoed = ga.execute_typed(qapi_qga::guest_sync { id: 77 }).await.unwrap();
    assert_eq!(echoed, 77);
}
