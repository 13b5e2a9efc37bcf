//! Typed commands and events (feature `qapi`, through `qmp-qapi`) against real servers, through the async
//! layer on tokio. (Every query of every server is decoded and re-encoded in `tests/tests/qapi_drift.rs`.)
#![cfg(feature = "qapi")]

mod common;

use common::options;
use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use qmp_tokio::qapi::qga::commands::{GuestGetTime, GuestInfo, GuestPing, GuestSync};
use qmp_tokio::qapi::qmp::{self, commands::*};
use qmp_tokio::{Error, GuestAgent, Qmp};

#[tokio::test]
async fn qemu_system_72() {
    let server = require!(QemuServer::system());
    let qmp = Qmp::connect_unix(server.socket_path(), options()).await.unwrap();
    let version = qmp.execute_typed(QueryVersion::default()).await.unwrap();
    assert_eq!(version.qemu.major, 7);
    let status = qmp.execute_typed(QueryStatus::default()).await.unwrap();
    assert!(status.running, "-M none without -S runs");
    let commands = qmp.execute_typed(QueryCommands::default()).await.unwrap();
    assert!(commands.iter().any(|c| c.name == "query-yank"));
    let yank = qmp.execute_typed_oob(QueryYank::default()).await.unwrap();
    assert!(yank.is_empty() || !yank.is_empty());
    let kvm = qmp.execute_typed(QueryKvm::default()).await.unwrap();
    let _ = kvm.present;
    qmp.execute_typed(QueryBlockJobs::default()).await.unwrap();
    qmp.execute_typed(QueryChardev::default()).await.unwrap();
    qmp.execute_typed(QueryName::default()).await.unwrap();
    qmp.execute_typed(QueryIothreads::default()).await.unwrap();
    qmp.execute_typed(QueryMigrateParameters::default()).await.unwrap();
    qmp.execute_typed(QueryCurrentMachine::default()).await.unwrap();

    let file = std::fs::File::open("/dev/null").unwrap();
    let added = qmp.add_fd(&file, Some(7), Some("null")).await.unwrap();
    let sets = qmp.execute_typed(QueryFdsets::default()).await.unwrap();
    assert_eq!(sets[0].fdset_id, 7);
    assert_eq!(sets[0].fds[0].fd, added.fd);
    qmp.execute_typed(Getfd { fdname: "nothing".into(), extra_members: Default::default() }).await.unwrap_err();

    // A server error stays a server error.
    let err =
        qmp.execute_typed(Closefd { fdname: "none".into(), extra_members: Default::default() }).await.unwrap_err();
    assert!(matches!(err, Error::Qmp(_)), "{err}");

    // Typed events.
    let mut events = qmp.events();
    qmp.execute_typed(Stop::default()).await.unwrap();
    qmp.execute_typed(Cont::default()).await.unwrap();
    let stop = events.recv().await.unwrap().to_qapi().unwrap().unwrap();
    assert!(matches!(stop, qmp::Event::Stop(_)), "{stop:?}");
    let resume = events.recv().await.unwrap().to_qapi().unwrap().unwrap();
    assert!(matches!(resume, qmp::Event::Resume(_)), "{resume:?}");
}

/// Replies of qemu-system 7.2 that did not fit the QEMU 9.1 schema of the former `qapi-qmp` 0.15 types now
/// decode, and keep what 7.2 sends (`compress` as a known capability, no `acpi`, no `sev-type`).
#[tokio::test]
async fn qemu_system_72_former_mismatches() {
    let server = require!(QemuServer::system());
    let qmp = Qmp::connect_unix(server.socket_path(), options()).await.unwrap();
    let machines = qmp.execute_typed(QueryMachines::default()).await.unwrap();
    assert!(machines.iter().all(|m| m.acpi.is_none()), "acpi arrived in 8.0");
    let caps = qmp.execute_typed(QueryMigrateCapabilities::default()).await.unwrap();
    assert!(caps.iter().any(|c| c.capability == qmp::MigrationCapability::Compress));
    match qmp.execute_typed(QuerySev::default()).await {
        Ok(sev) => assert!(sev.base.sev_type.is_none()),
        Err(Error::Qmp(e)) => assert!(e.desc.contains("SEV"), "{e:?}"), // no SEV on this host: the server says so
        Err(e) => panic!("{e}"),
    }
}

/// The biggest reply of all, the introspected schema, of the oldest (7.2) and newest (10.0) QEMU the types hold
/// for; and the server's schema asked about commands, members and enum values.
#[tokio::test]
async fn schema_of_older_and_newer_qemu() {
    for server in [require!(QemuServer::system()), require!(QemuServer::storage_daemon())] {
        let qmp = Qmp::connect_unix(server.socket_path(), options()).await.unwrap();
        let schema = qmp.execute_typed(QueryQmpSchema::default()).await;
        let schema = schema.unwrap_or_else(|e| panic!("{:?}: {e}", server.kind()));
        // 494 entities on qemu-storage-daemon 7.2, 1,000 and more on qemu-system and on qsd 10.
        assert!(schema.len() > 400, "{}", schema.len());
        let commands = qmp.execute_typed(QueryCommands::default()).await.unwrap();
        assert!(commands.len() > 50);
        let known = qmp.server_schema().await.unwrap();
        assert!(known.has_command("blockdev-add") && !known.has_command("no-such-command"));
        assert!(known.has_argument("blockdev-add", &["node-name"]));
        assert!(known.has_argument("blockdev-add", &["filename"]), "a member of the `file` branch");
        assert!(known.accepts_value("blockdev-add", &["driver"], "qcow2"));
        assert!(!known.accepts_value("blockdev-add", &["driver"], "no-such-driver"));
        assert!(known.has_result_member("query-version", &["qemu", "major"]));
        assert!(known.has_event("JOB_STATUS_CHANGE"));
        assert!(known.has_event_member("JOB_STATUS_CHANGE", &["status"]));
        // Drift between versions: LUKS's detached `header` arrived in 9.0.
        let since_9 = server.version().major >= 9;
        assert_eq!(
            known.has_argument("blockdev-add", &["header"]),
            since_9,
            "{:?} {}",
            server.kind(),
            server.version()
        );
    }
}

#[tokio::test]
async fn storage_daemon_10() {
    let server = require!(QemuServer::storage_daemon());
    let qmp = Qmp::connect_unix(server.socket_path(), options()).await.unwrap();
    let version = qmp.execute_typed(QueryVersion::default()).await.unwrap();
    assert_eq!(u64::try_from(version.qemu.major).ok(), Some(server.version().major));
    qmp.execute::<serde_json::Value>(
        "blockdev-add",
        serde_json::json!({"driver": "null-co", "node-name": "null0", "size": 1048576}),
    )
    .await
    .unwrap();
    let nodes = qmp.execute_typed(QueryNamedBlockNodes { flat: Some(true), ..Default::default() }).await.unwrap();
    assert!(nodes.iter().any(|n| n.node_name.as_deref() == Some("null0")), "{nodes:?}");
    qmp.execute_typed(QueryBlockJobs::default()).await.unwrap();
    qmp.execute_typed(QueryBlockExports::default()).await.unwrap();

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
        let qmp::Event::JobStatusChange(data) = event else { panic!("{event:?}") };
        assert_eq!(data.id, "create0");
        if data.status == qmp::JobStatus::Concluded {
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
    ga.execute_typed(GuestPing::default()).await.unwrap();
    let info = ga.execute_typed(GuestInfo::default()).await.unwrap();
    assert!(info.version.starts_with('7'), "{}", info.version);
    let time = ga.execute_typed(GuestGetTime::default()).await.unwrap();
    assert!(time > 0);
    let echoed = ga.execute_typed(GuestSync { id: 77, extra_members: Default::default() }).await.unwrap();
    assert_eq!(echoed, 77);
}
