//! The harness: the [`Adapter`] trait every client crate is driven through, the normalized results
//! ([`Failure`], [`Next`], [`Done`]) that scenarios assert on, and helpers shared by the scenarios.
//!
//! Every trait method is synchronous from the scenario's point of view: an async adapter runs the operation to
//! completion on its runtime (`block_on`), the blocking one just calls. Concurrency is expressed as data:
//! [`Adapter::tasks`] runs several plans of [`Call`]s at once (one task, or one thread, per plan) and
//! [`Adapter::pipelined`] hands calls to the connection in a fixed order before awaiting any of them. A
//! [`Call`] says when its caller gives up ([`DropAt`]): async adapters drop the future there, the blocking one
//! gives the call a timeout of that length instead (it has no futures to drop).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use qmp_blocking::jobs::{JobAction, JobError, JobOptions, JobOutcome, JobUpdate};
use qmp_proto::{ConnectionError, Greeting, ProtocolViolation, QmpError, RequestError, ServerEvent, UsageError};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How long any single harness operation may take before the test fails instead of hanging.
pub const OP_LIMIT: Duration = Duration::from_secs(120);

/// Connection settings, mapped onto each crate's own `Options`.
#[derive(Debug, Clone)]
pub struct SuiteOpts {
    pub connect_timeout: Duration,
    pub command_timeout: Option<Duration>,
    pub oob: bool,
    pub event_buffer: usize,
    pub max_message_size: usize,
    pub max_in_flight: usize,
    pub max_pending: usize,
}

impl Default for SuiteOpts {
    fn default() -> Self {
        SuiteOpts {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Some(Duration::from_secs(20)),
            oob: true,
            event_buffer: 1024,
            max_message_size: 10 << 20,
            max_in_flight: 8,
            max_pending: 1024,
        }
    }
}

impl SuiteOpts {
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    pub fn oob(mut self, enable: bool) -> Self {
        self.oob = enable;
        self
    }

    pub fn event_buffer(mut self, events: usize) -> Self {
        self.event_buffer = events;
        self
    }

    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n;
        self
    }

    /// These settings on any adapter's `Options` (they all share one type).
    pub fn options(&self) -> qmp_blocking::Options {
        qmp_blocking::Options::default()
            .connect_timeout(self.connect_timeout)
            .command_timeout(self.command_timeout)
            .oob(self.oob)
            .event_buffer(self.event_buffer)
            .max_message_size(self.max_message_size)
            .max_in_flight(self.max_in_flight)
            .max_pending(self.max_pending)
    }
}

/// Why a call failed, the same for every adapter. (Every field is read through `Debug`, in assertion messages.)
#[derive(Debug)]
#[allow(dead_code)]
pub enum Failure {
    /// The server rejected the command.
    Qmp(QmpError),
    /// The call was wrong; nothing was sent.
    Usage(UsageError),
    /// The command's deadline passed.
    TimedOut,
    /// The command failed on the client side (its reply was over the size limit).
    Request(RequestError),
    /// The connection is over, for this cause.
    Disconnected(ConnectionError),
    /// The socket could not be opened.
    Connect(std::io::ErrorKind),
    /// Anything else (decoding, fd passing), as text.
    Other(String),
}

/// A command's deadline.
#[derive(Debug, Clone, Copy)]
pub enum Timeout {
    /// The connection's default ([`SuiteOpts::command_timeout`]).
    Default,
    /// This long from the call.
    After(Duration),
}

/// When the caller of a [`Call`] gives up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropAt {
    /// Never: the call runs to its end.
    Never,
    /// Before the call's future is first polled (blocking: the call is not made).
    BeforePoll,
    /// Right after the first poll (blocking: a timeout of zero).
    AfterFirstPoll,
    /// After this long (blocking: a timeout of this length).
    After(Duration),
}

/// One command to run.
#[derive(Debug, Clone)]
pub struct Call {
    pub command: String,
    pub args: Value,
    pub oob: bool,
    pub timeout: Timeout,
    pub drop_at: DropAt,
}

impl Call {
    pub fn new(command: impl Into<String>) -> Call {
        Call {
            command: command.into(),
            args: Value::Null,
            oob: false,
            timeout: Timeout::Default,
            drop_at: DropAt::Never,
        }
    }

    pub fn args(mut self, args: Value) -> Call {
        self.args = args;
        self
    }

    pub fn oob(mut self) -> Call {
        self.oob = true;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Call {
        self.timeout = Timeout::After(t);
        self
    }

    pub fn drop_at(mut self, at: DropAt) -> Call {
        self.drop_at = at;
        self
    }
}

/// How one call of [`Adapter::tasks`] or [`Adapter::pipelined`] ended.
#[derive(Debug)]
pub struct Done {
    /// `None`: the caller gave up on it ([`DropAt`]) before it ended.
    pub result: Option<Result<Value, Failure>>,
    /// Its place in the order in which calls ended, over the whole batch (0 = first).
    pub finished: usize,
}

/// What waiting for the next event gave.
#[derive(Debug)]
pub enum Next {
    Event(ServerEvent),
    /// This many events were lost to this subscriber (it fell behind).
    Lagged(u64),
    /// Nothing within the wait.
    Quiet,
    /// The connection is over and every event before the end was taken.
    Ended(Option<ConnectionError>),
}

/// A job runner's callback, as the scenarios pass it.
pub type JobCallback<'a> = dyn FnMut(&JobUpdate) -> JobAction + Send + 'a;

/// One client crate (and runtime), as the scenarios drive it.
pub trait Adapter: 'static {
    /// For messages.
    const NAME: &'static str;
    /// Whether one connection has several commands on the wire at once (false for `qmp-blocking`).
    const PIPELINES: bool;
    /// Scenarios known to fail on this adapter, with the reason (a reported bug): see [`run_scenario`].
    const KNOWN_ISSUES: &'static [(&'static str, &'static str)] = &[];
    /// A QMP connection.
    type Conn: Send + Sync;
    /// An event subscription.
    type Sub: Send;
    /// A guest-agent connection.
    type Agent: Send + Sync;

    fn connect(path: &Path, opts: &SuiteOpts) -> Result<Self::Conn, Failure>;
    /// QMP over two pipes: `read` carries the server's output, `write` its input.
    fn connect_pipes(read: OwnedFd, write: OwnedFd, opts: &SuiteOpts) -> Result<Self::Conn, Failure>;
    /// Starts `command` with its monitor on stdio and connects to it.
    fn spawn_stdio(command: Command, opts: &SuiteOpts) -> Result<(Child, Self::Conn), Failure>;
    fn greeting(conn: &Self::Conn) -> Greeting;
    fn oob_enabled(conn: &Self::Conn) -> bool;
    /// Runs one call to its end (its [`DropAt`] is ignored) and deserializes the `return` value.
    fn execute<T: DeserializeOwned + Send + 'static>(conn: &Self::Conn, call: Call) -> Result<T, Failure>;
    /// Runs every plan at once (one task or thread each); each plan's calls one after another.
    fn tasks(conn: &Self::Conn, plans: Vec<Vec<Call>>) -> Vec<Vec<Done>>;
    /// Hands `calls` to the connection in this order, then waits for all of them.
    fn pipelined(conn: &Self::Conn, calls: Vec<Call>) -> Vec<Done>;
    /// A subscription to the events that arrive from now on.
    fn subscribe(conn: &Self::Conn) -> Self::Sub;
    /// The subscription's next item, waiting at most `wait` (zero: only what has already arrived).
    fn next_event(conn: &Self::Conn, sub: &mut Self::Sub, wait: Duration) -> Next;
    /// Events held for subscribers right now, where the adapter tells.
    fn buffered(sub: &Self::Sub) -> Option<usize>;
    /// Protocol violations seen so far (and forgets them).
    fn take_violations(conn: &Self::Conn) -> Vec<ProtocolViolation>;
    /// Waits up to `limit` for the connection to end; the cause, or `None` if it is still open.
    fn closed(conn: &Self::Conn, limit: Duration) -> Option<ConnectionError>;
    /// Closes the connection gracefully.
    fn close(conn: Self::Conn);

    /// `run_job`: starts a job and follows it to its end.
    fn run_job(
        conn: &Self::Conn,
        command: &str,
        args: Value,
        opts: JobOptions,
        on_update: &mut JobCallback<'_>,
    ) -> Result<JobOutcome, JobError>;
    /// `watch_job`: follows job `id` to its end.
    fn watch_job(
        conn: &Self::Conn,
        id: &str,
        opts: JobOptions,
        on_update: &mut JobCallback<'_>,
    ) -> Result<JobOutcome, JobError>;

    /// Async adapters: `run_job`, its future dropped after `after` unless it ended first (`Some`: it did).
    fn run_job_dropped_after(
        conn: &Self::Conn,
        command: &str,
        args: Value,
        opts: JobOptions,
        after: Duration,
    ) -> Option<Result<JobOutcome, JobError>>;

    fn agent_connect(path: &Path, opts: &SuiteOpts) -> Result<Self::Agent, Failure>;
    fn agent_execute<T: DeserializeOwned + Send + 'static>(agent: &Self::Agent, call: Call) -> Result<T, Failure>;
    /// Starts a call on the agent and gives up on it at once (async: the future is dropped after its first poll,
    /// so the command is on the wire and its reply will come unread; blocking: a zero timeout).
    fn agent_give_up(agent: &Self::Agent, call: Call);
    fn agent_close(agent: Self::Agent);
}

/// Runs the scenario `name` for adapter `A`. A scenario listed in [`Adapter::KNOWN_ISSUES`] must still fail
/// (it is reported loudly and passes); once it passes, the test fails until the entry is removed.
pub fn run_scenario<A: Adapter>(name: &str, scenario: fn()) {
    let Some((_, why)) = A::KNOWN_ISSUES.iter().find(|(known, _)| *known == name) else {
        return scenario();
    };
    match std::panic::catch_unwind(scenario) {
        Err(_) => {
            // Straight to the process's stderr, like the SKIPPED lines: libtest captures only the print macros.
            use std::io::Write;
            let line = format!("KNOWN ISSUE: {}: {name} fails as expected: {why}", A::NAME);
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
        Ok(()) => panic!("{}: {name} passes now: remove it from KNOWN_ISSUES ({why})", A::NAME),
    }
}

// ----- helpers for scenarios -----------------------------------------------------------------------------------

/// A command QEMU does not know, whose error names it: the reply identifies its caller.
pub fn echo(tag: &str) -> Call {
    Call::new(format!("no-such-command-{tag}"))
}

/// Asserts that `result` is the CommandNotFound error of [`echo`]`(tag)`.
#[track_caller]
pub fn assert_echo<T: std::fmt::Debug>(result: &Result<T, Failure>, tag: &str, context: &str) {
    match result {
        Err(Failure::Qmp(e)) => {
            assert_eq!(e.class, "CommandNotFound", "{context}: {e}");
            assert_eq!(e.desc, format!("The command no-such-command-{tag} has not been found"), "{context}");
        }
        other => panic!("{context}: expected the CommandNotFound error for {tag}, got {other:?}"),
    }
}

/// Takes the only result of a finished (not dropped) call.
#[track_caller]
pub fn finished(done: &Done) -> &Result<Value, Failure> {
    done.result.as_ref().expect("the call ran to its end")
}

/// Serializes the scenarios that move hundreds of megabytes or measure memory, so they neither starve each
/// other of the two CPUs nor disturb each other's measurements.
pub fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// This process's resident memory in bytes (Linux `/proc/self/statm`).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("resident pages");
    pages * 4096
}

/// A small deterministic generator (xorshift64*) for the randomized scenarios.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed of a randomized scenario: `QMP_SUITE_SEED` when set (to replay a failure), else a fresh one.
pub fn seed() -> u64 {
    match std::env::var("QMP_SUITE_SEED") {
        Ok(s) => s.trim().parse().expect("QMP_SUITE_SEED must be an integer"),
        Err(_) => {
            let mut h = RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
            );
            h.finish()
        }
    }
}
