//! The harness over the async adapters: `qmp-tokio` on a tokio multi-thread runtime, and `qmp-smol` under smol
//! and under async-std.
//!
//! [`Async<F>`] implements [`Adapter`] once for every [`Flavor`]; a flavor is a crate (its handle types, its
//! error) plus a runtime (`block_on`, `spawn`, `sleep`). The crate half is the same code for `qmp-tokio` and
//! `qmp-smol` (their surfaces match), so it is written once in [`crate_methods!`]. Every call runs in a spawned
//! task or in `block_on`, a [`DropAt`] drops the call's future at that point, and [`Adapter::pipelined`] polls
//! each call once, in order (which hands it to the driver), before spawning them all.

use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_lite::{future, StreamExt};
use qmp_proto::{ConnectionError, Greeting, ProtocolViolation, ServerEvent};
use serde::de::DeserializeOwned;
use serde_json::Value;

use qmp_blocking::jobs::{JobError, JobOptions, JobOutcome};

use crate::harness::{Adapter, Call, Done, DropAt, Failure, JobCallback, Next, SuiteOpts, Timeout, OP_LIMIT};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One item of a subscription, whichever crate it came from.
#[derive(Debug)]
pub enum Item {
    Event(ServerEvent),
    Lagged(u64),
}

/// A crate's `Events` stream, mapped to [`Item`]s.
pub trait Subscription: Stream<Item = Item> + Send + Unpin {
    /// Events held in the channel, where the crate tells.
    fn buffered(&self) -> Option<usize>;
}

/// A crate on a runtime.
pub trait Flavor: 'static {
    const NAME: &'static str;
    /// See [`Adapter::KNOWN_ISSUES`].
    const KNOWN_ISSUES: &'static [(&'static str, &'static str)] = &[];
    type Qmp: Clone + Send + Sync + 'static;
    type Agent: Clone + Send + Sync + 'static;

    fn block_on<T>(f: impl Future<Output = T>) -> T;
    fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> BoxFuture<T>;
    fn sleep(d: Duration) -> BoxFuture<()>;

    fn connect(path: PathBuf, opts: SuiteOpts) -> BoxFuture<Result<Self::Qmp, Failure>>;
    fn connect_pipes(read: OwnedFd, write: OwnedFd, opts: SuiteOpts) -> BoxFuture<Result<Self::Qmp, Failure>>;
    fn spawn_stdio(command: Command, opts: SuiteOpts) -> BoxFuture<Result<(Child, Self::Qmp), Failure>>;
    fn greeting(qmp: &Self::Qmp) -> Greeting;
    fn oob_enabled(qmp: &Self::Qmp) -> bool;
    /// The call as a future that owns what it needs (its [`DropAt`] is the caller's business).
    fn execute<T: DeserializeOwned + Send + 'static>(qmp: &Self::Qmp, call: &Call) -> BoxFuture<Result<T, Failure>>;
    fn events(qmp: &Self::Qmp) -> Box<dyn Subscription>;
    fn take_violations(qmp: &Self::Qmp) -> Vec<ProtocolViolation>;
    fn connection_error(qmp: &Self::Qmp) -> Option<ConnectionError>;
    fn closed(qmp: &Self::Qmp) -> BoxFuture<ConnectionError>;
    fn close(qmp: &Self::Qmp) -> BoxFuture<()>;
    /// `run_job` to its end, on the runtime.
    fn run_job(
        qmp: &Self::Qmp,
        command: &str,
        args: Value,
        opts: JobOptions,
        on_update: &mut JobCallback<'_>,
    ) -> Result<JobOutcome, JobError>;
    /// `watch_job` to its end, on the runtime.
    fn watch_job(
        qmp: &Self::Qmp,
        id: &str,
        opts: JobOptions,
        on_update: &mut JobCallback<'_>,
    ) -> Result<JobOutcome, JobError>;
    /// `run_job`, dropped after `after` unless it ended first.
    fn run_job_dropped_after(
        qmp: &Self::Qmp,
        command: &str,
        args: Value,
        opts: JobOptions,
        after: Duration,
    ) -> Option<Result<JobOutcome, JobError>>;
    fn agent_connect(path: PathBuf, opts: SuiteOpts) -> BoxFuture<Result<Self::Agent, Failure>>;
    fn agent_execute<T: DeserializeOwned + Send + 'static>(
        agent: &Self::Agent,
        call: &Call,
    ) -> BoxFuture<Result<T, Failure>>;
    fn agent_close(agent: &Self::Agent) -> BoxFuture<()>;
}

/// The harness over the async flavor `F`.
#[derive(Debug)]
pub struct Async<F>(PhantomData<F>);

/// Runs `f` on `F`'s runtime, failing the test if it takes longer than [`OP_LIMIT`].
fn run<F: Flavor, T>(what: &str, f: impl Future<Output = T>) -> T {
    F::block_on(future::or(f, async move {
        F::sleep(OP_LIMIT).await;
        panic!("{}: {what} did not finish within {OP_LIMIT:?}", F::NAME);
    }))
}

/// One call of a batch, given up on as its [`DropAt`] says.
async fn run_in_batch<F: Flavor>(qmp: &F::Qmp, call: &Call, order: &AtomicUsize) -> Done {
    let mut fut = F::execute::<Value>(qmp, call);
    let result = match call.drop_at {
        DropAt::Never => Some(fut.await),
        DropAt::BeforePoll => {
            drop(fut);
            None
        }
        DropAt::AfterFirstPoll => future::poll_once(&mut fut).await,
        DropAt::After(t) => {
            future::or(async { Some(fut.await) }, async {
                F::sleep(t).await;
                None
            })
            .await
        }
    };
    Done { result, finished: order.fetch_add(1, Ordering::SeqCst) }
}

impl<F: Flavor> Adapter for Async<F> {
    const NAME: &'static str = F::NAME;
    const PIPELINES: bool = true;
    const KNOWN_ISSUES: &'static [(&'static str, &'static str)] = F::KNOWN_ISSUES;
    type Conn = F::Qmp;
    type Sub = Box<dyn Subscription>;
    type Agent = F::Agent;

    fn connect(path: &Path, opts: &SuiteOpts) -> Result<F::Qmp, Failure> {
        run::<F, _>("connect", F::connect(path.to_owned(), opts.clone()))
    }

    fn connect_pipes(read: OwnedFd, write: OwnedFd, opts: &SuiteOpts) -> Result<F::Qmp, Failure> {
        run::<F, _>("connect over pipes", F::connect_pipes(read, write, opts.clone()))
    }

    fn spawn_stdio(command: Command, opts: &SuiteOpts) -> Result<(Child, F::Qmp), Failure> {
        run::<F, _>("spawn with stdio", F::spawn_stdio(command, opts.clone()))
    }

    fn greeting(conn: &F::Qmp) -> Greeting {
        F::greeting(conn)
    }

    fn oob_enabled(conn: &F::Qmp) -> bool {
        F::oob_enabled(conn)
    }

    fn execute<T: DeserializeOwned + Send + 'static>(conn: &F::Qmp, call: Call) -> Result<T, Failure> {
        run::<F, _>(&call.command.clone(), F::execute(conn, &call))
    }

    fn tasks(conn: &F::Qmp, plans: Vec<Vec<Call>>) -> Vec<Vec<Done>> {
        let order = Arc::new(AtomicUsize::new(0));
        run::<F, _>("tasks", async {
            let tasks: Vec<_> = plans
                .into_iter()
                .map(|plan| {
                    let (qmp, order) = (conn.clone(), order.clone());
                    F::spawn(async move {
                        let mut done = Vec::with_capacity(plan.len());
                        for call in &plan {
                            done.push(run_in_batch::<F>(&qmp, call, &order).await);
                        }
                        done
                    })
                })
                .collect();
            let mut all = Vec::new();
            for task in tasks {
                all.push(task.await);
            }
            all
        })
    }

    fn pipelined(conn: &F::Qmp, calls: Vec<Call>) -> Vec<Done> {
        let order = Arc::new(AtomicUsize::new(0));
        run::<F, _>("pipelined calls", async {
            let mut calls: Vec<BoxFuture<Done>> = calls
                .into_iter()
                .map(|call| {
                    let (qmp, order) = (conn.clone(), order.clone());
                    Box::pin(async move { run_in_batch::<F>(&qmp, &call, &order).await }) as BoxFuture<Done>
                })
                .collect();
            // The first poll hands each command to the driver, in this order.
            let mut outcomes: Vec<Option<Done>> = Vec::new();
            for call in calls.iter_mut() {
                outcomes.push(future::poll_once(call.as_mut()).await);
            }
            // The calls still running go on in tasks of their own.
            let tasks: Vec<_> = calls
                .into_iter()
                .zip(&outcomes)
                .map(|(call, outcome)| outcome.is_none().then(|| F::spawn(call)))
                .collect();
            let mut all = Vec::new();
            for (task, outcome) in tasks.into_iter().zip(outcomes) {
                all.push(match (task, outcome) {
                    (Some(task), _) => task.await,
                    (None, Some(done)) => done,
                    (None, None) => unreachable!("a pending call has a task"),
                });
            }
            all
        })
    }

    fn subscribe(conn: &F::Qmp) -> Box<dyn Subscription> {
        F::events(conn)
    }

    fn next_event(conn: &F::Qmp, sub: &mut Box<dyn Subscription>, wait: Duration) -> Next {
        let item = run::<F, _>("next event", async {
            future::or(async { Some(sub.next().await) }, async {
                F::sleep(wait).await;
                None
            })
            .await
        });
        match item {
            None => Next::Quiet,
            Some(None) => Next::Ended(F::connection_error(conn)),
            Some(Some(Item::Event(ev))) => Next::Event(ev),
            Some(Some(Item::Lagged(n))) => Next::Lagged(n),
        }
    }

    fn buffered(sub: &Box<dyn Subscription>) -> Option<usize> {
        sub.buffered()
    }

    fn take_violations(conn: &F::Qmp) -> Vec<ProtocolViolation> {
        F::take_violations(conn)
    }

    fn closed(conn: &F::Qmp, limit: Duration) -> Option<ConnectionError> {
        run::<F, _>("closed", async {
            future::or(async { Some(F::closed(conn).await) }, async {
                F::sleep(limit).await;
                None
            })
            .await
        })
    }

    fn close(conn: F::Qmp) {
        run::<F, _>("close", F::close(&conn));
    }

    fn run_job(
        conn: &F::Qmp,
        command: &str,
        args: Value,
        opts: JobOptions,
        on_update: &mut JobCallback<'_>,
    ) -> Result<JobOutcome, JobError> {
        F::run_job(conn, command, args, opts, on_update)
    }

    fn watch_job(
        conn: &F::Qmp,
        id: &str,
        opts: JobOptions,
        on_update: &mut JobCallback<'_>,
    ) -> Result<JobOutcome, JobError> {
        F::watch_job(conn, id, opts, on_update)
    }

    fn run_job_dropped_after(
        conn: &F::Qmp,
        command: &str,
        args: Value,
        opts: JobOptions,
        after: Duration,
    ) -> Option<Result<JobOutcome, JobError>> {
        F::run_job_dropped_after(conn, command, args, opts, after)
    }

    fn agent_connect(path: &Path, opts: &SuiteOpts) -> Result<F::Agent, Failure> {
        run::<F, _>("guest agent connect", F::agent_connect(path.to_owned(), opts.clone()))
    }

    fn agent_execute<T: DeserializeOwned + Send + 'static>(agent: &F::Agent, call: Call) -> Result<T, Failure> {
        run::<F, _>(&call.command.clone(), F::agent_execute(agent, &call))
    }

    fn agent_give_up(agent: &F::Agent, call: Call) {
        let mut call_future = F::agent_execute::<Value>(agent, &call);
        let first_poll = run::<F, _>("first poll", future::poll_once(&mut call_future));
        // Normally the reply cannot have come yet. On a loaded machine a multi-thread runtime's driver can get
        // the agent's reply in before this first poll returns (the polling thread preempted after handing the
        // call over): that round then leaves no reply unread, which is no fault of the adapter. An error is.
        if let Some(Err(e)) = first_poll {
            panic!("{}: {} failed on its first poll: {e:?}", F::NAME, call.command);
        }
    }

    fn agent_close(agent: F::Agent) {
        run::<F, _>("guest agent close", F::agent_close(&agent));
    }
}

/// The crate half of a [`Flavor`], for `qmp_tokio` or `qmp_smol` (same surface): the handle types and every
/// method but the runtime ones and `connect`/`agent_connect` (which need the crate's `Options`).
macro_rules! crate_methods {
    ($krate:ident, $types:ident) => {
        type Qmp = $krate::Qmp;
        type Agent = $krate::GuestAgent;

        fn greeting(qmp: &$krate::Qmp) -> Greeting {
            qmp.greeting().clone()
        }

        fn oob_enabled(qmp: &$krate::Qmp) -> bool {
            qmp.oob_enabled()
        }

        fn execute<T: DeserializeOwned + Send + 'static>(
            qmp: &$krate::Qmp,
            call: &Call,
        ) -> BoxFuture<Result<T, Failure>> {
            let (qmp, call) = (qmp.clone(), call.clone());
            Box::pin(async move {
                let result = match (call.oob, call.timeout) {
                    (false, Timeout::Default) => qmp.execute(&call.command, &call.args).await,
                    (true, Timeout::Default) => qmp.execute_oob(&call.command, &call.args).await,
                    (false, Timeout::After(t)) => qmp.execute_with_timeout(&call.command, &call.args, Some(t)).await,
                    (true, Timeout::After(_)) => panic!("no per-call timeout for OOB commands"),
                };
                result.map_err($types::failure)
            })
        }

        fn run_job(
            qmp: &$krate::Qmp,
            command: &str,
            args: Value,
            opts: JobOptions,
            on_update: &mut JobCallback<'_>,
        ) -> Result<JobOutcome, JobError> {
            Self::block_on(qmp.run_job(command, args, opts, on_update))
        }

        fn watch_job(
            qmp: &$krate::Qmp,
            id: &str,
            opts: JobOptions,
            on_update: &mut JobCallback<'_>,
        ) -> Result<JobOutcome, JobError> {
            Self::block_on(qmp.watch_job(id, opts, on_update))
        }

        fn run_job_dropped_after(
            qmp: &$krate::Qmp,
            command: &str,
            args: Value,
            opts: JobOptions,
            after: Duration,
        ) -> Option<Result<JobOutcome, JobError>> {
            Self::block_on(future::or(
                async { Some(qmp.run_job(command, args, opts, |_| qmp_blocking::jobs::JobAction::Continue).await) },
                async {
                    Self::sleep(after).await;
                    None
                },
            ))
        }

        fn events(qmp: &$krate::Qmp) -> Box<dyn Subscription> {
            Box::new($types::Events(qmp.events()))
        }

        fn take_violations(qmp: &$krate::Qmp) -> Vec<ProtocolViolation> {
            qmp.take_violations()
        }

        fn connection_error(qmp: &$krate::Qmp) -> Option<ConnectionError> {
            qmp.connection_error()
        }

        fn closed(qmp: &$krate::Qmp) -> BoxFuture<ConnectionError> {
            let qmp = qmp.clone();
            Box::pin(async move { qmp.closed().await })
        }

        fn close(qmp: &$krate::Qmp) -> BoxFuture<()> {
            let qmp = qmp.clone();
            Box::pin(async move { qmp.close().await })
        }

        fn agent_execute<T: DeserializeOwned + Send + 'static>(
            agent: &$krate::GuestAgent,
            call: &Call,
        ) -> BoxFuture<Result<T, Failure>> {
            let (agent, call) = (agent.clone(), call.clone());
            Box::pin(async move {
                let result = match call.timeout {
                    Timeout::Default => agent.execute(&call.command, &call.args).await,
                    Timeout::After(t) => agent.execute_with_timeout(&call.command, &call.args, Some(t)).await,
                };
                result.map_err($types::failure)
            })
        }

        fn agent_close(agent: &$krate::GuestAgent) -> BoxFuture<()> {
            let agent = agent.clone();
            Box::pin(async move { agent.close().await })
        }
    };
}

/// The error conversion and the event stream wrapper of one crate.
macro_rules! crate_types {
    ($module:ident, $krate:ident, $buffered:expr) => {
        mod $module {
            use super::*;

            /// The crate's error as a [`Failure`]. (A function, not a `From` impl: the crates may share one
            /// error type.)
            pub fn failure(e: $krate::Error) -> Failure {
                match e {
                    $krate::Error::Qmp(e) => Failure::Qmp(e),
                    $krate::Error::Usage(e) => Failure::Usage(e),
                    $krate::Error::Request(e) => Failure::Request(e),
                    $krate::Error::TimedOut => Failure::TimedOut,
                    $krate::Error::Connection(e) => Failure::Disconnected(e),
                    $krate::Error::Connect(e) => Failure::Connect(e.kind()),
                    other => Failure::Other(other.to_string()),
                }
            }

            /// The crate's event stream as [`Item`]s.
            pub struct Events(pub $krate::Events);

            impl Stream for Events {
                type Item = Item;

                fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
                    Pin::new(&mut self.0).poll_next(cx).map(|item| {
                        item.map(|item| match item {
                            $krate::EventItem::Event(ev) => Item::Event(ev),
                            $krate::EventItem::Lagged(n) => Item::Lagged(n),
                            other => panic!("unknown event item {other:?}"),
                        })
                    })
                }
            }

            impl Subscription for Events {
                fn buffered(&self) -> Option<usize> {
                    let buffered: fn(&$krate::Events) -> Option<usize> = $buffered;
                    buffered(&self.0)
                }
            }
        }
    };
}

crate_types!(tokio_types, qmp_tokio, |_| None);
crate_types!(smol_types, qmp_smol, |events| Some(events.buffered()));

/// `connect_pipes` and `spawn_stdio` for a flavor whose handle is `qmp_async::Qmp<$net>`.
macro_rules! pipe_methods {
    ($net:ty, $types:ident) => {
        fn connect_pipes(read: OwnedFd, write: OwnedFd, opts: SuiteOpts) -> BoxFuture<Result<Self::Qmp, Failure>> {
            Box::pin(async move {
                qmp_async::Qmp::<$net>::from_pipes(read, write, opts.options()).await.map_err($types::failure)
            })
        }

        fn spawn_stdio(command: Command, opts: SuiteOpts) -> BoxFuture<Result<(Child, Self::Qmp), Failure>> {
            Box::pin(async move {
                qmp_async::Qmp::<$net>::spawn_stdio(command, opts.options()).await.map_err($types::failure)
            })
        }
    };
}

// ----- qmp-tokio on a tokio multi-thread runtime -------------------------------------------------------------------

/// `qmp-tokio` on a two-worker multi-thread runtime shared by every tokio test.
#[derive(Debug)]
pub struct Tokio;

static TOKIO: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
});

fn tokio_options(opts: &SuiteOpts) -> qmp_tokio::Options {
    opts.options()
}

impl Flavor for Tokio {
    const NAME: &'static str = "qmp-tokio";

    crate_methods!(qmp_tokio, tokio_types);
    pipe_methods!(qmp_tokio::Tokio, tokio_types);

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        TOKIO.block_on(f)
    }

    fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> BoxFuture<T> {
        let task = TOKIO.spawn(f);
        Box::pin(async move { task.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())) })
    }

    fn sleep(d: Duration) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep(d))
    }

    fn connect(path: PathBuf, opts: SuiteOpts) -> BoxFuture<Result<qmp_tokio::Qmp, Failure>> {
        Box::pin(
            async move { qmp_tokio::Qmp::connect_unix(path, tokio_options(&opts)).await.map_err(tokio_types::failure) },
        )
    }

    fn agent_connect(path: PathBuf, opts: SuiteOpts) -> BoxFuture<Result<qmp_tokio::GuestAgent, Failure>> {
        Box::pin(async move {
            qmp_tokio::GuestAgent::connect_unix(path, tokio_options(&opts)).await.map_err(tokio_types::failure)
        })
    }
}

// ----- qmp-smol under smol and under async-std ---------------------------------------------------------------------

fn smol_options(opts: &SuiteOpts) -> qmp_smol::Options {
    opts.options()
}

/// `qmp-smol` under smol: `smol::block_on`, smol's global executor, async-io timers.
#[derive(Debug)]
pub struct Smol;

impl Flavor for Smol {
    const NAME: &'static str = "qmp-smol (smol)";

    crate_methods!(qmp_smol, smol_types);
    pipe_methods!(qmp_smol::Smol, smol_types);

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        smol::block_on(f)
    }

    fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> BoxFuture<T> {
        Box::pin(smol::spawn(f))
    }

    fn sleep(d: Duration) -> BoxFuture<()> {
        Box::pin(async move {
            smol::Timer::after(d).await;
        })
    }

    fn connect(path: PathBuf, opts: SuiteOpts) -> BoxFuture<Result<qmp_smol::Qmp, Failure>> {
        let options = smol_options(&opts);
        Box::pin(async move { qmp_smol::Qmp::connect_unix(path, options).await.map_err(smol_types::failure) })
    }

    fn agent_connect(path: PathBuf, opts: SuiteOpts) -> BoxFuture<Result<qmp_smol::GuestAgent, Failure>> {
        let options = smol_options(&opts);
        Box::pin(async move { qmp_smol::GuestAgent::connect_unix(path, options).await.map_err(smol_types::failure) })
    }
}

/// `qmp-smol`'s handles on async-std.
mod on_async_std {
    pub use qmp_smol::async_std::{GuestAgent, Qmp};
}

/// `qmp-smol` under async-std: `async_std::task::{block_on, spawn, sleep}`.
#[derive(Debug)]
pub struct AsyncStd;

impl Flavor for AsyncStd {
    const NAME: &'static str = "qmp-smol (async-std)";

    crate_methods!(on_async_std, smol_types);
    pipe_methods!(qmp_smol::AsyncStd, smol_types);

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        async_std::task::block_on(f)
    }

    fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> BoxFuture<T> {
        Box::pin(async_std::task::spawn(f))
    }

    fn sleep(d: Duration) -> BoxFuture<()> {
        Box::pin(async_std::task::sleep(d))
    }

    fn connect(path: PathBuf, opts: SuiteOpts) -> BoxFuture<Result<on_async_std::Qmp, Failure>> {
        let options = smol_options(&opts);
        Box::pin(async move { on_async_std::Qmp::connect_unix(path, options).await.map_err(smol_types::failure) })
    }

    fn agent_connect(path: PathBuf, opts: SuiteOpts) -> BoxFuture<Result<on_async_std::GuestAgent, Failure>> {
        let options = smol_options(&opts);
        Box::pin(
            async move { on_async_std::GuestAgent::connect_unix(path, options).await.map_err(smol_types::failure) },
        )
    }
}
