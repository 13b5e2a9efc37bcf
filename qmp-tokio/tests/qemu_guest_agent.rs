//! The guest-agent client against a real qemu-ga (`qemu-ga -m unix-listen`), started on a temporary socket.
//! (Only harmless commands: this agent runs on the test host, not in a guest.)

mod common;

use std::time::Duration;

use common::options;
use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use qmp_tokio::{Error, GuestAgent};
use serde_json::{json, Value};

#[tokio::test]
async fn sync_ping_info() {
    let server = require!(QemuServer::guest_agent());
    let ga = GuestAgent::connect_unix(server.socket_path(), options()).await.expect("synchronised");
    let ping: Value = ga.execute("guest-ping", ()).await.unwrap();
    assert_eq!(ping, json!({}));
    let info: Value = ga.execute("guest-info", ()).await.unwrap();
    assert!(info["version"].as_str().unwrap().starts_with(char::is_numeric), "{info}");
    ga.sync(Duration::from_secs(5)).await.unwrap();
    let err = ga.execute::<Value>("qmp_capabilities", ()).await.unwrap_err();
    assert!(matches!(&err, Error::Qmp(e) if e.desc.contains("not been found")), "{err}");
    ga.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_commands_from_many_tasks() {
    let server = require!(QemuServer::guest_agent());
    let ga = GuestAgent::connect_unix(server.socket_path(), options()).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..16 {
        let ga = ga.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..32 {
                // guest-sync echoes its argument: each caller checks it got its own reply.
                let n = task * 1000 + i;
                let echoed: u64 = ga.execute("guest-sync", json!({ "id": n })).await.unwrap();
                assert_eq!(echoed, n);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(ga.take_violations().is_empty());
}

/// Clients that leave with replies still on their way, again and again: the agent survives every close (qemu-ga
/// 7.2 exits when a close resets the connection with a reply unread; the adapter closes gracefully), and each new
/// client synchronises past the leftovers.
#[tokio::test]
async fn clients_leaving_with_replies_in_flight() {
    let mut server = require!(QemuServer::guest_agent());
    for round in 0..20u64 {
        let ga = GuestAgent::connect_unix(server.socket_path(), options()).await.unwrap();
        let echoed: u64 = ga.execute("guest-sync", json!({ "id": round })).await.unwrap();
        assert_eq!(echoed, round);
        for i in 0..4 {
            // Started, never awaited to the end.
            let call = ga.execute::<Value>("guest-info", ());
            let _ = tokio::time::timeout(Duration::from_micros(20 * i), call).await;
        }
        ga.close().await;
        assert!(server.try_wait().unwrap().is_none(), "qemu-ga exited after round {round}");
    }
}
