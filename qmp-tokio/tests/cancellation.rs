//! Dropping execute futures at random points while others run, against a real qemu-storage-daemon 10 and
//! qemu-system 7.2: no command is ever torn on the wire (QEMU would answer a torn command with an id-less parse
//! error, or misread the next one), and no reply ever reaches the wrong caller.

mod common;

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use qmp_tokio::{Error, Qmp};
use serde_json::Value;

/// How one call ends.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Awaited to the end.
    Complete,
    /// Dropped after this many polls (0: never polled), yielding to the runtime between polls.
    DropAfterPolls(u8),
    /// Dropped after this many microseconds of real time.
    DropAfterMicros(u16),
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        3 => Just(Fate::Complete),
        2 => (0u8..6).prop_map(Fate::DropAfterPolls),
        2 => (0u16..400).prop_map(Fate::DropAfterMicros),
    ]
}

/// Polls `fut` up to `n` times, yielding between polls; its output if it finished, else it is dropped.
async fn poll_then_drop<F: Future>(fut: F, n: u8) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for _ in 0..n {
        if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
            return Some(out);
        }
        tokio::task::yield_now().await;
    }
    None
}

/// One caller's command: an unknown command whose name QEMU echoes in its error, or `query-version`.
async fn checked_call(qmp: &Qmp, task: usize, i: usize, fate: Fate) -> Result<(), String> {
    let name = format!("x-t{task}-c{i}");
    let call = async {
        if i % 4 == 0 {
            match qmp.execute::<Value>("query-version", ()).await {
                Ok(v) if v["qemu"]["major"].is_u64() => Ok(()),
                other => Err(format!("query-version: {other:?}")),
            }
        } else {
            match qmp.execute::<Value>(&name, ()).await {
                Err(Error::Qmp(e)) if e.desc.contains(&name) => Ok(()),
                other => Err(format!("{name} got someone else's reply: {other:?}")),
            }
        }
    };
    match fate {
        Fate::Complete => call.await,
        Fate::DropAfterPolls(n) => poll_then_drop(call, n).await.unwrap_or(Ok(())),
        Fate::DropAfterMicros(us) => {
            tokio::time::timeout(Duration::from_micros(u64::from(us)), call).await.unwrap_or(Ok(()))
        }
    }
}

/// Runs every task's calls concurrently on one connection, then checks the connection is intact.
async fn run_case(qmp: &Qmp, plan: &[Vec<Fate>]) -> Result<(), TestCaseError> {
    let mut tasks = Vec::new();
    for (task, fates) in plan.iter().enumerate() {
        let qmp = qmp.clone();
        let fates = fates.clone();
        tasks.push(tokio::spawn(async move {
            for (i, fate) in fates.into_iter().enumerate() {
                checked_call(&qmp, task, i, fate).await?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| TestCaseError::fail(e.to_string()))?.map_err(TestCaseError::fail)?;
    }
    // Still in sync: a burst of fresh calls all get their own replies.
    for i in 0..16 {
        checked_call(qmp, 999, i, Fate::Complete).await.map_err(TestCaseError::fail)?;
    }
    let violations = qmp.take_violations();
    prop_assert!(violations.is_empty(), "QEMU saw something malformed: {violations:?}");
    prop_assert!(qmp.connection_error().is_none());
    Ok(())
}

fn drop_futures_at_random_points(server: QemuServer, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let qmp = rt.block_on(Qmp::connect_unix(server.socket_path(), common::options())).expect("connect");
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let plan = proptest::collection::vec(proptest::collection::vec(fate(), 1..40), 1..12);
    let result = runner.run(&plan, |plan| rt.block_on(run_case(&qmp, &plan)));
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(qmp.close());
}

#[test]
fn drop_futures_at_random_points_storage_daemon_10() {
    drop_futures_at_random_points(require!(QemuServer::storage_daemon()), 48);
}

#[test]
fn drop_futures_at_random_points_system() {
    drop_futures_at_random_points(require!(QemuServer::system()), 24);
}

/// Thousands of calls dropped in a tight loop, most before the driver even took them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_drops() {
    let server = require!(QemuServer::storage_daemon());
    let qmp = Qmp::connect_unix(server.socket_path(), common::options()).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..8 {
        let qmp = qmp.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500 {
                let fate = match i % 5 {
                    0 => Fate::Complete,
                    1 | 2 => Fate::DropAfterPolls((i % 4) as u8),
                    _ => Fate::DropAfterMicros((i * 7 % 300) as u16),
                };
                checked_call(&qmp, task, i, fate).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for i in 0..32 {
        checked_call(&qmp, 1000, i, Fate::Complete).await.unwrap();
    }
    assert!(qmp.take_violations().is_empty());
}
