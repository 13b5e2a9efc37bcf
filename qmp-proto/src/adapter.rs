//! The vocabulary every adapter shares: the connection settings ([`Options`]), the [`Error`] a call fails with,
//! the items of an event stream ([`EventItem`]), a call handed from a handle to the task that owns the core
//! ([`Command`]) and that task's record of who waits for what ([`Callers`]), the protocol violations kept for the
//! user ([`Violations`]), and the small helpers each adapter would otherwise write again ([`random_nonce`], the
//! file descriptor commands' [`GetFdArgs`], [`AddFdArgs`] and [`AddFdInfo`], [`fd_passing_unsupported`]).
//!
//! Nothing here does I/O or is used by the state machine; `qmp-blocking`, `qmp-tokio` and `qmp-smol` re-export
//! these types under their own names (`qmp_tokio::Error`, ...), the way quinn re-exports quinn-proto's
//! configuration types. Where an adapter gives an item a meaning of its own, the item's docs say so in one
//! sentence per adapter.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    Client, Config, ConnectionError, ExecuteOptions, Mode, ProtocolViolation, QmpError, RawJson, RequestError,
    RequestId, ServerEvent, UsageError,
};

/// Server events the core may hold between two drains. Every adapter drains after each read, so this only has
/// to cover the events of one read buffer (64 KiB); it is a safety bound, not the buffer of
/// [`Options::event_buffer`].
const CORE_EVENT_QUEUE: usize = 64 * 1024;

/// Connection settings, the same in every adapter. `Options::default()` suits most uses.
///
/// `X` holds the settings only one adapter has; `()` for `qmp-blocking` and `qmp-tokio`, the runtime for
/// `qmp-smol` (set with [`runtime`](Self::runtime)). Each adapter names its own as `Options`
/// (`qmp_tokio::Options`, ...).
///
/// ```
/// use std::time::Duration;
/// use qmp_proto::adapter::Options;
/// let opts: Options = Options::default()
///     .connect_timeout(Duration::from_secs(2))
///     .command_timeout(Some(Duration::from_secs(60)))
///     .event_buffer(4096)
///     .oob(false);
/// ```
#[derive(Debug, Clone)]
pub struct Options<X = ()> {
    connect_timeout: Duration,
    command_timeout: Option<Duration>,
    max_message_size: usize,
    oob: bool,
    event_buffer: usize,
    max_in_flight: usize,
    max_pending: usize,
    extension: X,
}

impl<X: Default> Default for Options<X> {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Some(Duration::from_secs(30)),
            max_message_size: 10 << 20,
            oob: true,
            event_buffer: 1024,
            max_in_flight: 8,
            max_pending: 1024,
            extension: X::default(),
        }
    }
}

/// An adapter's own settings ([`Options`]' `X`) that include the runtime to run on, so that
/// [`Options::runtime`] can set it: `qmp-smol`'s, for any of its runtimes `R`.
pub trait RuntimeSetting<R> {
    /// Makes `runtime` the one to run on.
    fn set_runtime(&mut self, runtime: R);
}

impl<X> Options<X> {
    /// Time allowed for connecting, the greeting and negotiation (QMP), or the first `guest-sync-delimited` (QGA).
    /// QEMU greets a second client only after the first disconnects: this is what stops the wait. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Default deadline of each command (`None`: wait forever). Default 30 s. Override it per call with
    /// `execute_with_timeout`.
    pub fn command_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Largest accepted server message; larger ones are skipped and reported. Default 10 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Negotiate out-of-band execution when the server offers it. Default true.
    pub fn oob(mut self, enable: bool) -> Self {
        self.oob = enable;
        self
    }

    /// How many events may wait to be read, at least 1. Default 1024.
    ///
    /// - `qmp-blocking`: events kept until `Client::next_event` takes them; newer ones are dropped and counted.
    /// - `qmp-tokio`, `qmp-smol`: events each subscriber of `Qmp::events` may fall behind by; beyond that its oldest
    ///   unread events are dropped and it gets [`EventItem::Lagged`].
    pub fn event_buffer(mut self, events: usize) -> Self {
        self.event_buffer = events.max(1);
        self
    }

    /// In-band commands on the wire at once. Default 8 (QEMU's queue length).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Commands accepted by the connection at once (queued or on the wire), at least 1. Default 1024. Beyond
    /// that, `qmp-tokio`'s and `qmp-smol`'s `execute` waits for room instead of failing; `qmp-blocking`'s
    /// `submit` fails with [`UsageError::QueueFull`].
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }

    /// `qmp-smol`: the runtime that spawns the driver and provides its timer. Default: `qmp_smol::default_runtime`
    /// (smol when its feature is on, else async-std). Set it to `AsyncStd` when both features are on and the
    /// program runs on async-std, or to your own `Runtime`. Adapters without a runtime setting do not have it.
    pub fn runtime<R>(mut self, runtime: R) -> Self
    where
        X: RuntimeSetting<R>,
    {
        self.extension.set_runtime(runtime);
        self
    }

    /// The connect timeout ([`connect_timeout`](Self::connect_timeout)).
    pub fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The default command deadline ([`command_timeout`](Self::command_timeout)).
    pub fn get_command_timeout(&self) -> Option<Duration> {
        self.command_timeout
    }

    /// The event buffer's length ([`event_buffer`](Self::event_buffer)).
    pub fn get_event_buffer(&self) -> usize {
        self.event_buffer
    }

    /// The adapter's own settings.
    pub fn extension(&self) -> &X {
        &self.extension
    }

    /// The core's [`Config`] for `mode` with these limits. The core's own event queue is a fixed safety bound:
    /// adapters drain it after every read into their event buffer.
    pub fn to_config(&self, mode: Mode) -> Config {
        let base = match mode {
            Mode::Qmp => Config::qmp().handshake_timeout(Some(self.connect_timeout)),
            Mode::GuestAgent => Config::guest_agent(),
        };
        base.max_message_size(self.max_message_size)
            .enable_oob(self.oob)
            .max_in_flight(self.max_in_flight)
            .max_pending(self.max_pending)
            .max_queued_events(CORE_EVENT_QUEUE)
    }
}

/// Why a call failed.
///
/// - [`Error::Qmp`]: the server rejected this command; the connection is fine.
/// - [`Error::Usage`]: the call was wrong (bad arguments, OOB not negotiated; in `qmp-blocking`, too many
///   pending); nothing was sent.
/// - [`Error::TimedOut`]: this command got no reply in time; its late reply will be ignored.
/// - [`Error::Request`]: this command failed on the client side (its reply was over the size limit).
/// - [`Error::Decode`]: the reply arrived but did not fit the requested type.
/// - [`Error::Connection`]: the connection is over; every later call returns the same cause.
/// - [`Error::Connect`]: the socket could not be opened at all.
/// - [`Error::FdPassing`]: the file descriptor could not be duplicated, or the transport cannot pass one
///   (`qmp-tokio` and `qmp-smol`; `qmp-blocking` leaves descriptors to the caller).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error.
    #[error("server error: {0}")]
    Qmp(#[from] QmpError),
    /// The caller misused the API; the session is intact.
    #[error(transparent)]
    Usage(UsageError),
    /// The command failed on this side, for example its reply was over the size limit.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The command's deadline passed.
    #[error("command timed out")]
    TimedOut,
    /// The reply did not deserialize into the requested type.
    #[error("reply did not match the expected type: {0}")]
    Decode(#[from] serde_json::Error),
    /// The connection is over (sticky).
    #[error("connection closed: {0}")]
    Connection(#[from] ConnectionError),
    /// Opening the socket failed, or timed out. An [`std::io::Error`] converts into this variant.
    #[error("connect failed: {0}")]
    Connect(#[from] std::io::Error),
    /// The file descriptor could not be passed (`ErrorKind::Unsupported`: the transport is not a unix socket).
    #[error("cannot pass the file descriptor: {0}")]
    FdPassing(#[source] std::io::Error),
}

/// A usage error, except that [`UsageError::Closed`] is the connection's end: [`Error::Connection`].
impl From<UsageError> for Error {
    fn from(e: UsageError) -> Self {
        match e {
            UsageError::Closed(cause) => Error::Connection(cause),
            other => Error::Usage(other),
        }
    }
}

/// One item of an async adapter's event stream (`qmp_tokio::Events`, `qmp_smol::Events`).
///
/// With their `qapi` feature, `qmp_qapi::EventItemExt::to_qapi` gives the typed event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventItem {
    /// A server event.
    Event(ServerEvent),
    /// This many events were lost before the next item: the subscriber fell behind (or, rarely, the connection
    /// dropped them before any subscriber could see them). With a name filter, the count covers events of every
    /// name.
    Lagged(u64),
}

impl EventItem {
    /// The event, unless this is a lag marker.
    pub fn event(&self) -> Option<&ServerEvent> {
        match self {
            EventItem::Event(ev) => Some(ev),
            EventItem::Lagged(_) => None,
        }
    }

    /// Whether a subscriber that wants only the events named `names` (`None`: every event) gets this item. Lag
    /// markers always pass.
    pub fn passes(&self, names: Option<&[String]>) -> bool {
        match (self, names) {
            (EventItem::Event(ev), Some(names)) => names.contains(&ev.name),
            _ => true,
        }
    }
}

/// A call on the core, made in two places: a handle builds it (serializing the arguments there, so the task that
/// owns the [`Client`] never runs user `Serialize` code), and that task [`submit`](Self::submit)s it when the
/// core has room. The async adapters send these from their handles to their driver task.
#[derive(Debug)]
pub struct Command(Call);

#[derive(Debug)]
enum Call {
    Execute { name: String, args: Args, opts: ExecuteOptions },
    GuestSync { nonce: u32, opts: ExecuteOptions },
}

/// A command's arguments, serialized by the caller.
#[derive(Debug)]
enum Args {
    None,
    Value(Box<RawValue>),
    Raw(RawJson),
}

impl Command {
    /// `command` with arguments that serialize to a JSON object (`()` for none), for
    /// [`Client::execute`]. Fails with [`UsageError::InvalidArguments`] when they do not serialize.
    pub fn new(command: &str, args: &impl Serialize, opts: ExecuteOptions) -> Result<Self, Error> {
        let args = serde_json::value::to_raw_value(args)
            .map_err(|e| Error::Usage(UsageError::InvalidArguments(e.to_string())))?;
        Ok(Command(Call::Execute { name: command.to_owned(), args: Args::Value(args), opts }))
    }

    /// `command` with raw JSON arguments (an object, or `None`), for [`Client::execute_raw`].
    pub fn raw(command: &str, args: Option<&RawJson>, opts: ExecuteOptions) -> Self {
        let args = args.map_or(Args::None, |a| Args::Raw(a.clone()));
        Command(Call::Execute { name: command.to_owned(), args, opts })
    }

    /// `guest-sync-delimited` with `nonce`, for [`Client::guest_sync`].
    pub fn guest_sync(nonce: u32, opts: ExecuteOptions) -> Self {
        Command(Call::GuestSync { nonce, opts })
    }

    /// The command's deadline, if it has one (to honour it while the command waits for room in the core).
    pub fn deadline(&self) -> Option<Instant> {
        match &self.0 {
            Call::Execute { opts, .. } | Call::GuestSync { opts, .. } => opts.get_deadline(),
        }
    }

    /// The nonce, if this is a `guest-sync-delimited`.
    pub fn guest_sync_nonce(&self) -> Option<u32> {
        match self.0 {
            Call::GuestSync { nonce, .. } => Some(nonce),
            Call::Execute { .. } => None,
        }
    }

    /// Hands the command to `core`: its request id, or why the core refused it ([`UsageError::QueueFull`]: no
    /// room yet, try again later).
    pub fn submit(&self, core: &mut Client) -> Result<RequestId, UsageError> {
        match &self.0 {
            Call::Execute { name, args, opts } => match args {
                Args::None => core.execute(name, None::<&()>, *opts),
                Args::Value(value) => core.execute(name, Some(&**value), *opts),
                Args::Raw(raw) => core.execute_raw(name, Some(raw), *opts),
            },
            Call::GuestSync { nonce, opts } => core.guest_sync(*nonce, *opts),
        }
    }
}

/// The callers a driver task answers: for each request the core accepted, where its answer goes (`R`, a one-shot
/// sender), the caller's ticket to cancel it by, and the file descriptor `F` that goes with the command until the
/// core puts the command's marked byte on the wire.
#[derive(Debug)]
pub struct Callers<R, F> {
    calls: HashMap<RequestId, (u64, R)>,
    tickets: HashMap<u64, RequestId>,
    fds: HashMap<RequestId, F>,
}

impl<R, F> Default for Callers<R, F> {
    fn default() -> Self {
        Callers { calls: HashMap::new(), tickets: HashMap::new(), fds: HashMap::new() }
    }
}

impl<R, F> Callers<R, F> {
    /// Records that the caller with `ticket` waits for request `id` at `reply`, with the descriptor `fd`.
    pub fn insert(&mut self, id: RequestId, ticket: u64, reply: R, fd: Option<F>) {
        if let Some(fd) = fd {
            self.fds.insert(id, fd);
        }
        self.calls.insert(id, (ticket, reply));
        self.tickets.insert(ticket, id);
    }

    /// Request `id` has ended: forgets it and returns where its answer goes, if a caller still waits.
    pub fn answer(&mut self, id: RequestId) -> Option<R> {
        self.fds.remove(&id);
        let (ticket, reply) = self.calls.remove(&id)?;
        self.tickets.remove(&ticket);
        Some(reply)
    }

    /// The caller with `ticket` went away: forgets its request and returns the request's id (to
    /// [`Client::cancel`]), if the core had accepted it.
    pub fn cancel(&mut self, ticket: u64) -> Option<RequestId> {
        let id = self.tickets.remove(&ticket)?;
        self.calls.remove(&id);
        self.fds.remove(&id);
        Some(id)
    }

    /// Takes the descriptor of request `id`, when the core puts its byte on the wire
    /// ([`Client::poll_transmit_with_fds`]). `None` if its caller went away meanwhile.
    pub fn take_fd(&mut self, id: RequestId) -> Option<F> {
        self.fds.remove(&id)
    }

    /// The session is over: forgets every request and returns where their answers go.
    pub fn drain(&mut self) -> impl Iterator<Item = R> + '_ {
        self.tickets.clear();
        self.fds.clear();
        self.calls.drain().map(|(_, (_, reply))| reply)
    }

    /// How many callers wait.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no caller waits.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// The protocol violations an adapter keeps for its `take_violations`: the most recent [`Violations::KEPT`].
#[derive(Debug, Default)]
pub struct Violations(VecDeque<ProtocolViolation>);

impl Violations {
    /// How many are kept; older ones are dropped.
    pub const KEPT: usize = 64;

    /// Keeps `violation`, dropping the oldest one beyond [`KEPT`](Self::KEPT).
    pub fn push(&mut self, violation: ProtocolViolation) {
        if self.0.len() == Self::KEPT {
            self.0.pop_front();
        }
        self.0.push_back(violation);
    }

    /// Takes the kept violations, oldest first.
    pub fn take(&mut self) -> Vec<ProtocolViolation> {
        self.0.drain(..).collect()
    }
}

/// The arguments of `getfd`: the name QEMU files the passed descriptor under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GetFdArgs<'a> {
    /// The name, for commands that take an fd name (`add_client`, `netdev_add` with `fd=NAME`, ...).
    pub fdname: &'a str,
}

/// The arguments of `add-fd`: the fd set to add the passed descriptor to, and a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AddFdArgs<'a> {
    /// The fd set; `None`: a new one.
    #[serde(rename = "fdset-id", skip_serializing_if = "Option::is_none")]
    pub fdset_id: Option<u64>,
    /// A free-form note shown by `query-fdsets`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opaque: Option<&'a str>,
}

/// What `add-fd` answers: where QEMU filed the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct AddFdInfo {
    /// The fd set (given, or allocated by QEMU).
    #[serde(rename = "fdset-id")]
    pub fdset_id: u64,
    /// The descriptor's number inside QEMU (what `/dev/fdset/N` opens resolve to).
    pub fd: i64,
}

/// The error of passing a file descriptor over a transport that cannot (`ErrorKind::Unsupported`), for
/// [`Error::FdPassing`].
pub fn fd_passing_unsupported() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Unsupported, "file descriptors can only be passed over a unix socket")
}

/// A fresh nonce for `guest-sync-delimited` ([`Client::guest_sync`](crate::Client::guest_sync)): std's
/// per-process random hasher keys, mixed with the time, so no extra dependency is needed. A utility for adapters;
/// the state machine never calls it (it takes the nonce it is given).
pub fn random_nonce() -> u32 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    (h.finish() >> 33) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_closed_is_the_connection_error() {
        assert!(matches!(Error::from(UsageError::Closed(ConnectionError::Local)), Error::Connection(_)));
        assert!(matches!(Error::from(UsageError::EmptyCommand), Error::Usage(UsageError::EmptyCommand)));
    }

    #[test]
    fn options_to_config() {
        let opts: Options = Options::default().max_message_size(5).max_in_flight(3).max_pending(0).event_buffer(0);
        assert_eq!(opts.get_event_buffer(), 1);
        for mode in [Mode::Qmp, Mode::GuestAgent] {
            let config = opts.to_config(mode);
            assert_eq!(config.mode(), mode);
            assert_eq!(config.get_max_message_size(), 5);
            assert_eq!(config.get_max_in_flight(), 3);
            assert_eq!(config.get_max_pending(), 1);
            assert_eq!(config.get_max_queued_events(), CORE_EVENT_QUEUE);
        }
    }

    #[derive(Debug, Default, PartialEq)]
    struct Runtime(Option<&'static str>);

    impl RuntimeSetting<&'static str> for Runtime {
        fn set_runtime(&mut self, runtime: &'static str) {
            self.0 = Some(runtime);
        }
    }

    #[test]
    fn an_extension_takes_its_runtime() {
        let opts = Options::<Runtime>::default().runtime("smol").oob(false);
        assert_eq!(opts.extension(), &Runtime(Some("smol")));
    }

    #[test]
    fn event_filter() {
        let stop = ServerEvent { name: "STOP".into(), data: None, timestamp: None };
        let names = ["RESUME".to_owned()];
        assert!(EventItem::Event(stop.clone()).passes(None));
        assert!(!EventItem::Event(stop).passes(Some(&names)));
        assert!(EventItem::Lagged(3).passes(Some(&names)));
    }

    #[test]
    fn violations_keep_the_latest() {
        let mut kept = Violations::default();
        for len in 0..Violations::KEPT as u64 + 10 {
            kept.push(ProtocolViolation::Oversized { len, limit: 0 });
        }
        let taken = kept.take();
        assert_eq!(taken.len(), Violations::KEPT);
        assert!(matches!(taken[0], ProtocolViolation::Oversized { len: 10, .. }), "{:?}", taken[0]);
        assert!(kept.take().is_empty());
    }

    #[test]
    fn callers_forget_a_request_once() {
        let mut core = Client::new(Config::qmp(), Instant::now());
        let mut ids = (0..3).map(|_| core.execute("query-status", None::<&()>, ExecuteOptions::new()).unwrap());
        let (a, b, c) = (ids.next().unwrap(), ids.next().unwrap(), ids.next().unwrap());
        let mut callers = Callers::default();
        callers.insert(a, 10, "a", Some('A'));
        callers.insert(b, 11, "b", None);
        callers.insert(c, 12, "c", Some('C'));
        assert_eq!(callers.len(), 3);
        assert_eq!(callers.take_fd(a), Some('A'));
        assert_eq!(callers.answer(a), Some("a"));
        assert_eq!(callers.answer(a), None);
        assert_eq!(callers.cancel(11), Some(b));
        assert_eq!(callers.answer(b), None);
        assert_eq!(callers.drain().collect::<Vec<_>>(), ["c"]);
        assert!(callers.is_empty());
        assert_eq!(callers.take_fd(c), None);
        assert_eq!(callers.cancel(12), None);
    }

    #[test]
    fn a_command_is_submitted_as_built() {
        let mut core = Client::new(Config::guest_agent(), Instant::now());
        let deadline = Instant::now() + Duration::from_secs(1);
        let sync = Command::guest_sync(7, ExecuteOptions::new().deadline(deadline));
        assert_eq!((sync.guest_sync_nonce(), sync.deadline()), (Some(7), Some(deadline)));
        sync.submit(&mut core).unwrap();
        let ping = Command::new("guest-ping", &(), ExecuteOptions::new()).unwrap();
        assert_eq!((ping.guest_sync_nonce(), ping.deadline()), (None, None));
        ping.submit(&mut core).unwrap();
        let mut out = Vec::new();
        core.poll_transmit(&mut out);
        let out = String::from_utf8_lossy(&out);
        // The ping waits for the sync to end.
        assert!(out.contains("\"guest-sync-delimited\"") && out.contains("{\"id\":7}"), "{out}");
    }
}
