//! Callers drive their connection while they wait (qmp-async's `driver/engine.rs`): many callers on several
//! threads at once, some of them cancelled mid-call, against a real qemu-storage-daemon, on tokio's
//! multi-threaded runtime and on async-std's thread pool, where the callers, the driver's task and the reactor
//! run on different threads and race for the connection.
//!
//! Every call runs a command of its own name (`x-drive-T-I`, unknown to QEMU), and QEMU's refusal names it
//! (`The command x-drive-T-I has not been found`): a reply handed to the wrong caller shows. A stalled
//! connection (a lost wake-up) fails the test at its deadline instead of hanging it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use qmp_async::{Error, Qmp, Runtime};
use qmp_tests::require;
use qmp_tests::servers::QemuServer;

/// Callers at once, and calls each.
const TASKS: usize = 8;
const CALLS: usize = 120;
/// The whole run must end within this (it takes well under a second).
const PATIENCE: Duration = Duration::from_secs(60);

type Task = Pin<Box<dyn Future<Output = usize> + Send>>;

/// `TASKS` callers of `CALLS` calls each on `qmp`, every fifth call cancelled after `cancel_after(i)` (a future
/// that ends soon); spawned with `spawn`. Returns how many calls were answered (the others were cancelled).
async fn callers<R: Runtime, C: Future<Output = ()> + Send + 'static>(
    qmp: &Qmp<R>,
    spawn: impl Fn(Task) -> Pin<Box<dyn Future<Output = usize> + Send>>,
    cancel_after: impl Fn(usize) -> C + Clone + Send + 'static,
) -> usize {
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let qmp = qmp.clone();
            let cancel_after = cancel_after.clone();
            spawn(Box::pin(async move {
                let mut answered = 0;
                for i in 0..CALLS {
                    let name = format!("x-drive-{t}-{i}");
                    let call = qmp.execute_raw(&name, None);
                    let outcome = if i % 5 == 4 {
                        // Cancelled if the timer wins: the call's future is dropped mid-call.
                        let cancel = cancel_after(i);
                        futures_lite::future::or(async { Some(call.await) }, async {
                            cancel.await;
                            None
                        })
                        .await
                    } else {
                        Some(call.await)
                    };
                    match outcome {
                        None => {}
                        Some(Err(Error::Qmp(e))) => {
                            assert!(e.desc.contains(&format!("{name} ")), "{name} got another call's reply: {e:?}");
                            answered += 1;
                        }
                        Some(other) => panic!("{name}: {other:?}"),
                    }
                }
                answered
            }))
        })
        .collect();
    let mut answered = 0;
    for task in tasks {
        answered += task.await;
    }
    answered
}

/// After the storm: the connection still answers, in order, and events still flow.
async fn still_works<R: Runtime>(qmp: &Qmp<R>) {
    let version: serde_json::Value = qmp.execute("query-version", ()).await.expect("query-version");
    assert!(version["qemu"]["major"].as_u64().is_some(), "{version}");
}

#[test]
fn many_callers_on_tokio_worker_threads_drive_one_connection() {
    let server = require!(QemuServer::storage_daemon());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    runtime.block_on(async {
        let qmp = qmp_tokio::Qmp::connect_unix(server.socket_path(), Default::default()).await.expect("connect");
        let spawn = |task: Task| -> Task { Box::pin(async move { tokio::spawn(task).await.expect("caller task") }) };
        let cancel_after = |i: usize| tokio::time::sleep(Duration::from_micros((i % 7) as u64 * 40));
        let run = callers(&qmp, spawn, cancel_after);
        let answered = tokio::time::timeout(PATIENCE, run).await.expect("no call stalled");
        eprintln!("answered {answered} of {}", TASKS * CALLS);
        assert!(answered >= TASKS * CALLS * 4 / 5, "every call not cancelled was answered: {answered}");
        still_works(&qmp).await;
        qmp.close().await;
    });
}

#[test]
fn many_callers_on_async_std_threads_drive_one_connection() {
    let server = require!(QemuServer::storage_daemon());
    async_std::task::block_on(async {
        let qmp =
            qmp_smol::async_std::Qmp::connect_unix(server.socket_path(), Default::default()).await.expect("connect");
        let spawn = |task: Task| -> Task { Box::pin(async_std::task::spawn(task)) };
        let cancel_after = |i: usize| async move {
            async_std::task::sleep(Duration::from_micros((i % 7) as u64 * 40)).await;
        };
        let run = callers(&qmp, spawn, cancel_after);
        let answered = async_std::future::timeout(PATIENCE, run).await.expect("no call stalled");
        eprintln!("answered {answered} of {}", TASKS * CALLS);
        assert!(answered >= TASKS * CALLS * 4 / 5, "every call not cancelled was answered: {answered}");
        still_works(&qmp).await;
        qmp.close().await;
    });
}
