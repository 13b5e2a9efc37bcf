//! [`Blocking`]: the harness over `qmp-blocking`.
//!
//! A blocking `Client` takes `&mut self`, so a connection is a `Mutex<Client>`: [`Adapter::tasks`] runs each
//! plan on its own thread, and the threads take turns on the connection (many callers; a call holds the
//! connection until its reply). Giving up on a call ([`DropAt`]) maps onto what the blocking API has: right
//! after the "first poll" is `submit` then `cancel` (the command is on the wire, its reply will be dropped),
//! after a wait is a per-call timeout of that length. [`Adapter::pipelined`] `submit`s the in-band calls in
//! order, runs OOB ones with `execute_oob` where they stand, then `wait`s for the rest in order, so several
//! commands are on the wire at once. Events have one buffer per connection; its drop counter is reported as
//! [`Next::Lagged`].

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use qmp_blocking::jobs::{JobError, JobOptions, JobOutcome};
use qmp_blocking::{Client, Error, GuestAgent, Options, Pending, Pipes, Transport};
use qmp_proto::{ConnectionError, Greeting, ProtocolViolation, ServerEvent};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::harness::{Adapter, Call, Done, DropAt, Failure, JobCallback, Next, SuiteOpts, Timeout};

/// The error as a [`Failure`]. (A function, not a `From` impl: the adapters may share one error type.)
fn failure(e: Error) -> Failure {
    match e {
        Error::Qmp(e) => Failure::Qmp(e),
        Error::Usage(e) => Failure::Usage(e),
        Error::Request(e) => Failure::Request(e),
        Error::TimedOut => Failure::TimedOut,
        Error::Connection(e) => Failure::Disconnected(e),
        Error::Connect(e) => Failure::Connect(e.kind()),
        other => Failure::Other(other.to_string()),
    }
}

/// `qmp-blocking`.
#[derive(Debug)]
pub struct Blocking;

/// A blocking connection shared by threads.
#[derive(Debug)]
pub struct Conn(Mutex<State>);

/// A unix socket or a pair of pipes.
pub trait Stream: Transport + Send + std::fmt::Debug {}

impl<S: Transport + Send + std::fmt::Debug> Stream for S {}

/// A connection over any transport.
fn conn(stream: Box<dyn Stream>, opts: &SuiteOpts) -> Result<Conn, Failure> {
    let client = Client::from_stream(stream, options(opts)).map_err(failure)?;
    Ok(Conn(Mutex::new(State { client, stash: VecDeque::new(), reported_drops: 0 })))
}

#[derive(Debug)]
pub struct State {
    /// Over a unix socket or a pair of pipes.
    client: Client<Box<dyn Stream>>,
    /// Events read while waiting for the end of the connection ([`Adapter::closed`]), not yet taken.
    stash: VecDeque<ServerEvent>,
    /// The client's drop counter as last reported.
    reported_drops: u64,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn options(opts: &SuiteOpts) -> Options {
    opts.options()
}

fn run<T: DeserializeOwned>(
    client: &mut Client<Box<dyn Stream>>,
    call: &Call,
    timeout: Option<Duration>,
) -> Result<T, Failure> {
    let result = match (call.oob, timeout) {
        (true, None) => client.execute_oob(&call.command, &call.args),
        (false, None) => client.execute(&call.command, &call.args),
        (false, Some(t)) => client.execute_with_timeout(&call.command, &call.args, Some(t)),
        (true, Some(_)) => panic!("qmp-blocking has no per-call timeout for OOB commands"),
    };
    result.map_err(failure)
}

fn timeout_of(call: &Call) -> Option<Duration> {
    match call.timeout {
        Timeout::Default => None,
        Timeout::After(t) => Some(t),
    }
}

/// One call of a batch, given up on as its [`DropAt`] says; a call that timed out that way counts as given up.
fn run_in_batch(conn: &Conn, call: &Call) -> Option<Result<Value, Failure>> {
    let mut state = conn.lock();
    let timeout = match call.drop_at {
        DropAt::Never => timeout_of(call),
        DropAt::BeforePoll => return None,
        DropAt::AfterFirstPoll if !call.oob => {
            // On the wire, then abandoned.
            return match state.client.submit(&call.command, &call.args) {
                Ok(pending) => {
                    state.client.cancel(pending);
                    None
                }
                Err(e) => Some(Err(failure(e))),
            };
        }
        DropAt::AfterFirstPoll => Some(Duration::ZERO),
        DropAt::After(t) => Some(t),
    };
    let result = run(&mut state.client, call, timeout);
    match (call.drop_at, result) {
        (DropAt::AfterFirstPoll | DropAt::After(_), Err(Failure::TimedOut)) => None,
        (_, result) => Some(result),
    }
}

/// The raw reply of a submitted command, as a `Value`.
fn wait(client: &mut Client<Box<dyn Stream>>, pending: Pending) -> Result<Value, Failure> {
    let raw = client.wait(pending).map_err(failure)?;
    raw.deserialize().map_err(|e| Failure::Other(e.to_string()))
}

impl Adapter for Blocking {
    const NAME: &'static str = "qmp-blocking";
    const PIPELINES: bool = false;
    type Conn = Conn;
    type Sub = ();
    type Agent = Mutex<GuestAgent>;

    fn connect(path: &Path, opts: &SuiteOpts) -> Result<Conn, Failure> {
        let stream = UnixStream::connect(path).map_err(|e| Failure::Connect(e.kind()))?;
        conn(Box::new(stream), opts)
    }

    fn connect_pipes(read: OwnedFd, write: OwnedFd, opts: &SuiteOpts) -> Result<Conn, Failure> {
        conn(Box::new(Pipes::new(read, write).map_err(|e| Failure::Connect(e.kind()))?), opts)
    }

    fn spawn_stdio(mut command: Command, opts: &SuiteOpts) -> Result<(Child, Conn), Failure> {
        let (child, pipes) = Pipes::spawn(&mut command).map_err(|e| Failure::Connect(e.kind()))?;
        Ok((child, conn(Box::new(pipes), opts)?))
    }

    fn greeting(conn: &Conn) -> Greeting {
        conn.lock().client.greeting().clone()
    }

    fn oob_enabled(conn: &Conn) -> bool {
        conn.lock().client.oob_enabled()
    }

    fn execute<T: DeserializeOwned + Send + 'static>(conn: &Conn, call: Call) -> Result<T, Failure> {
        run(&mut conn.lock().client, &call, timeout_of(&call))
    }

    fn tasks(conn: &Conn, plans: Vec<Vec<Call>>) -> Vec<Vec<Done>> {
        let order = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let threads: Vec<_> = plans
                .into_iter()
                .map(|plan| {
                    let order = &order;
                    scope.spawn(move || {
                        plan.iter()
                            .map(|call| {
                                let result = run_in_batch(conn, call);
                                Done { result, finished: order.fetch_add(1, Ordering::SeqCst) }
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("task thread")).collect()
        })
    }

    fn pipelined(conn: &Conn, calls: Vec<Call>) -> Vec<Done> {
        enum Slot {
            Ended(Result<Value, Failure>, usize),
            Waiting(Pending),
        }
        let mut state = conn.lock();
        let client = &mut state.client;
        let mut order = 0..;
        // In-band calls go on the wire without waiting; an OOB call waits for its own reply where it stands.
        let slots: Vec<Slot> = calls
            .iter()
            .map(|call| {
                assert!(call.drop_at == DropAt::Never && matches!(call.timeout, Timeout::Default), "plain calls only");
                if call.oob {
                    return Slot::Ended(run(client, call, None), order.next().expect("endless"));
                }
                match client.submit(&call.command, &call.args) {
                    Ok(pending) => Slot::Waiting(pending),
                    Err(e) => Slot::Ended(Err(failure(e)), order.next().expect("endless")),
                }
            })
            .collect();
        slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Ended(result, finished) => Done { result: Some(result), finished },
                Slot::Waiting(pending) => {
                    Done { result: Some(wait(client, pending)), finished: order.next().expect("endless") }
                }
            })
            .collect()
    }

    fn subscribe(_conn: &Conn) -> Self::Sub {}

    fn next_event(conn: &Conn, _sub: &mut (), wait: Duration) -> Next {
        let mut state = conn.lock();
        let state = &mut *state;
        let deadline = Instant::now() + wait;
        loop {
            let drops = state.client.dropped_events();
            if drops > state.reported_drops {
                let lagged = drops - state.reported_drops;
                state.reported_drops = drops;
                return Next::Lagged(lagged);
            }
            if let Some(ev) = state.stash.pop_front() {
                return Next::Event(ev);
            }
            match state.client.next_event(Some(deadline.saturating_duration_since(Instant::now()))) {
                Ok(Some(ev)) => state.stash.push_back(ev),
                Ok(None) => return Next::Quiet,
                Err(Error::Connection(cause)) => {
                    if state.client.dropped_events() > state.reported_drops {
                        continue;
                    }
                    return Next::Ended(Some(cause));
                }
                Err(e) => panic!("next_event: {e}"),
            }
        }
    }

    fn buffered(_sub: &()) -> Option<usize> {
        None
    }

    fn take_violations(conn: &Conn) -> Vec<ProtocolViolation> {
        conn.lock().client.take_violations()
    }

    fn closed(conn: &Conn, limit: Duration) -> Option<ConnectionError> {
        let mut state = conn.lock();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(cause) = state.client.connection_error() {
                return Some(cause.clone());
            }
            // Reading is what notices the end; events read on the way are kept for the subscriber.
            match state.client.next_event(Some(deadline.saturating_duration_since(Instant::now()))) {
                Ok(Some(ev)) => state.stash.push_back(ev),
                Ok(None) => return None,
                Err(Error::Connection(cause)) => return Some(cause),
                Err(e) => panic!("closed: {e}"),
            }
        }
    }

    fn close(conn: Conn) {
        let state = conn.0.into_inner().unwrap_or_else(|p| p.into_inner());
        drop(state.client.close());
    }

    fn run_job(
        conn: &Conn,
        command: &str,
        args: Value,
        opts: JobOptions,
        on_update: &mut JobCallback<'_>,
    ) -> Result<JobOutcome, JobError> {
        conn.lock().client.run_job(command, args, opts, on_update)
    }

    fn watch_job(
        conn: &Conn,
        id: &str,
        opts: JobOptions,
        on_update: &mut JobCallback<'_>,
    ) -> Result<JobOutcome, JobError> {
        conn.lock().client.watch_job(id, opts, on_update)
    }

    fn run_job_dropped_after(
        _conn: &Conn,
        _command: &str,
        _args: Value,
        _opts: JobOptions,
        _after: Duration,
    ) -> Option<Result<JobOutcome, JobError>> {
        unreachable!("a blocking call has no future to drop")
    }

    fn agent_connect(path: &Path, opts: &SuiteOpts) -> Result<Mutex<GuestAgent>, Failure> {
        Ok(Mutex::new(GuestAgent::connect_unix(path, options(opts)).map_err(failure)?))
    }

    fn agent_execute<T: DeserializeOwned + Send + 'static>(
        agent: &Mutex<GuestAgent>,
        call: Call,
    ) -> Result<T, Failure> {
        assert!(!call.oob && matches!(call.timeout, Timeout::Default), "qmp-blocking's GuestAgent: plain calls only");
        let mut agent = agent.lock().unwrap_or_else(|p| p.into_inner());
        agent.execute(&call.command, &call.args).map_err(failure)
    }

    fn agent_give_up(agent: &Mutex<GuestAgent>, call: Call) {
        let mut agent = agent.lock().unwrap_or_else(|p| p.into_inner());
        let given_up = agent.execute_with_timeout::<Value>(&call.command, &call.args, Some(Duration::ZERO));
        assert!(matches!(given_up, Err(Error::TimedOut)), "{given_up:?}");
    }

    fn agent_close(agent: Mutex<GuestAgent>) {
        let agent = agent.into_inner().unwrap_or_else(|p| p.into_inner());
        let stream: UnixStream = agent.close();
        drop(stream);
    }
}
