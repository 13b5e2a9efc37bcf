//! The same round trips through each adapter: sequential calls from one caller, and 8 in flight (8 tasks
//! calling at once for the async adapters, a window of 8 `submit`s for the blocking one).
//!
//! Where the callers run ([`Callers`]): one sequential caller runs where the floor's loop runs, in the future given
//! to the runtime's `block_on`, as the body of `#[tokio::main]` or `#[async_std::main]` does; the same caller as a
//! spawned task is measured too (on a multi-threaded executor that puts it on a worker thread while the floor
//! runs in `block_on`, which changes the wake-ups of both sides); 8 in flight are 8 spawned tasks.

use std::path::Path;

use qmp_proto::adapter::Options;

use crate::measure::{Cost, Meter};

/// The adapters' options: the defaults (a 30 s deadline on every command), or, with `QMP_BENCH_NO_DEADLINE=1`,
/// no command deadline, like the floors (which have none: on tokio and async-io a deadline keeps a runtime
/// timer registered while a command is in flight, which every park of the runtime pays for).
pub fn options() -> Options {
    match std::env::var("QMP_BENCH_NO_DEADLINE").as_deref() {
        Ok("1") => Options::default().command_timeout(None),
        _ => Options::default(),
    }
}

/// Where the calls of an async adapter come from.
#[derive(Debug, Clone, Copy)]
pub enum Callers {
    /// One sequential caller, in the `block_on` future (where the floor's loop runs).
    InBlockOn,
    /// This many spawned tasks, calling at once.
    Spawned(usize),
}

/// Round trips through `qmp-blocking`; returns what `n` of them cost.
pub fn blocking(path: &Path, n: usize, window: usize) -> Cost {
    let mut qmp = qmp_blocking::Client::connect_unix(path, options()).expect("connect");
    let meter = Meter::start();
    if window == 1 {
        for _ in 0..n {
            qmp.execute_raw("query-version", None).expect("query-version");
        }
    } else {
        let mut pending = std::collections::VecDeque::new();
        for _ in 0..n {
            if pending.len() == window {
                qmp.wait(pending.pop_front().expect("non-empty")).expect("reply");
            }
            pending.push_back(qmp.submit("query-version", ()).expect("submit"));
        }
        for p in pending {
            qmp.wait(p).expect("reply");
        }
    }
    let cost = meter.stop();
    qmp.close();
    cost
}

/// Round trips through `qmp-tokio` from `callers`, on the current runtime.
pub async fn tokio(path: &Path, n: usize, callers: Callers) -> Cost {
    let qmp = qmp_tokio::Qmp::connect_unix(path, options()).await.expect("connect");
    let spawn = |f: Task| -> Joiner { Box::pin(async move { tokio::spawn(f).await.expect("task") }) };
    calls(qmp, n, callers, &spawn).await
}

/// A caller's work, to spawn.
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
/// A spawned task to wait for.
pub type Joiner = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
/// Spawns a caller on the runtime under test.
pub type Spawn<'a> = &'a (dyn Fn(Task) -> Joiner + Sync);

/// Round trips through `qmp-smol` on `runtime` from `callers`, spawning them with `spawn`.
pub async fn smol<S: qmp_smol::Spawn>(
    path: &Path,
    n: usize,
    callers: Callers,
    runtime: qmp_smol::OnAsyncIo<S>,
    spawn: Spawn<'_>,
) -> Cost {
    let stream = async_io::Async::new(std::os::unix::net::UnixStream::connect(path).expect("connect")).expect("async");
    let qmp = qmp_async::Qmp::from_transport(qmp_smol::Unix::new(stream), options(), runtime).await.expect("connect");
    calls(qmp, n, callers, spawn).await
}

/// `n` round trips on `qmp` from `callers` (spawned with `spawn`); closes the connection after measuring.
async fn calls<R: qmp_async::Runtime>(qmp: qmp_async::Qmp<R>, n: usize, callers: Callers, spawn: Spawn<'_>) -> Cost {
    let meter = Meter::start();
    match callers {
        Callers::InBlockOn => sequential(&qmp, n).await,
        Callers::Spawned(tasks) => {
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    let qmp = qmp.clone();
                    let count = share(n, tasks, t);
                    spawn(Box::pin(async move { sequential(&qmp, count).await }))
                })
                .collect();
            for h in handles {
                h.await;
            }
        }
    }
    let cost = meter.stop();
    qmp.close().await;
    cost
}

/// `count` calls, one after the other.
async fn sequential<R: qmp_async::Runtime>(qmp: &qmp_async::Qmp<R>, count: usize) {
    for _ in 0..count {
        qmp.execute_raw("query-version", None).await.expect("query-version");
    }
}

/// How many of `n` calls task `t` of `tasks` makes.
fn share(n: usize, tasks: usize, t: usize) -> usize {
    n / tasks + usize::from(t < n % tasks)
}

/// A qmp-smol executor that spawns on one `smol::Executor`, run by the calling thread's `block_on` (which also
/// drives the reactor): the driver, the callers and the socket's readiness all on one thread, as a smol
/// program that cares about latency runs them.
#[derive(Debug, Clone)]
pub struct OneExecutor(pub std::sync::Arc<smol::Executor<'static>>);

impl qmp_smol::Spawn for OneExecutor {
    fn spawn(&self, future: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.spawn(future).detach();
    }
}
