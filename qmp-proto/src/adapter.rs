//! What every adapter shares with the others: the connection settings ([`Options`]), the [`Error`] a call fails
//! with, and the bounded record of protocol violations kept for the user ([`Violations`]).
//!
//! Nothing here does I/O or is used by the state machine. `qmp-blocking` and the async layer (`qmp-async`, under
//! `qmp-tokio` and `qmp-smol`) re-export these types, so a user matches on one `Error` whatever the adapter, and
//! the same fault gives the same error everywhere. What only the async adapters need (the call message, the
//! callers table, event streams, runtimes) lives in `qmp-async`.

use std::collections::VecDeque;
use std::time::Duration;

use crate::{
    Config, ConnectionError, Mode, ProtocolViolation, QmpError, RequestError, UsageError, DEFAULT_NO_REPLY_GRACE,
};

/// Server events the core may hold between two drains. Every adapter drains after each read, so this only has
/// to cover the events of one read buffer (64 KiB); it is a safety bound, not the buffer of
/// [`Options::event_buffer`].
const CORE_EVENT_QUEUE: usize = 64 * 1024;

/// Connection settings, the same in every adapter. `Options::default()` suits most uses.
///
/// ```
/// use std::time::Duration;
/// use qmp_proto::adapter::Options;
/// let opts = Options::default()
///     .connect_timeout(Duration::from_secs(2))
///     .command_timeout(Some(Duration::from_secs(60)))
///     .event_buffer(4096)
///     .oob(false);
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    connect_timeout: Duration,
    command_timeout: Option<Duration>,
    no_reply_grace: Duration,
    max_message_size: usize,
    oob: bool,
    event_buffer: usize,
    max_in_flight: usize,
    max_pending: usize,
    in_band_ids: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Some(Duration::from_secs(30)),
            no_reply_grace: DEFAULT_NO_REPLY_GRACE,
            max_message_size: 10 << 20,
            oob: true,
            event_buffer: 1024,
            max_in_flight: 8,
            max_pending: 1024,
            in_band_ids: true,
        }
    }
}

impl Options {
    /// Time allowed for connecting, the greeting and negotiation (QMP), or the first `guest-sync-delimited` (QGA).
    /// QEMU greets a second client only after the first disconnects: this is what stops the wait. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Default deadline of each command (`None`: wait forever). Default 30 s. Override it per call with
    /// `execute_with_timeout`.
    ///
    /// What a deadline costs: while a command with a deadline is in flight, waiting for its reply is a wait with
    /// a timeout, and the kernel arms a timer for every such wait. qmp-blocking sets the socket's receive timeout
    /// (kept across commands); the async adapters keep one runtime timer registered (armed for the oldest
    /// deadline, not reset per command), so their runtime waits in epoll with a timeout, reads the clock and looks
    /// at its timers on every park (async-io also sets its timerfd on every turn). On the bench machine, a VM,
    /// a sequential caller paid from 0.6 us (qmp-blocking) to 1.5 us (tokio) of client CPU per command for it
    /// (`roundtrip` against `QMP_BENCH_NO_DEADLINE=1`), and a raw tokio loop with one 30 s sleep registered
    /// paid 1.7 us more than without.
    /// A program that already keeps a timer registered pays most of this anyway; one that sends many small
    /// commands and has none can set `None` and bound its waits itself.
    pub fn command_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Guest agent: how long a command that the agent answers only when it fails (`guest-shutdown`,
    /// `guest-suspend-*`) waits for that error before it counts as done. Default
    /// [`DEFAULT_NO_REPLY_GRACE`] (2 s): qemu-ga runs the shutdown or suspend helper and answers only if it
    /// fails, which takes a moment; the agent going away ends the wait at once, as success.
    pub fn no_reply_grace(mut self, grace: Duration) -> Self {
        self.no_reply_grace = grace;
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
    ///   unread events are dropped and it gets `EventItem::Lagged`.
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

    /// QMP: whether in-band commands carry an id. Default true. `false` sends them without one and matches
    /// QEMU's replies by order, 7+ bytes fewer per command for QEMU to read; replies in traces then carry no id.
    /// Passed as is to the core: [`Config::in_band_ids`], which says what holds and what you give up. Ignored
    /// for the guest agent.
    pub fn in_band_ids(mut self, with_ids: bool) -> Self {
        self.in_band_ids = with_ids;
        self
    }

    /// Whether in-band commands carry an id ([`in_band_ids`](Self::in_band_ids)).
    pub fn get_in_band_ids(&self) -> bool {
        self.in_band_ids
    }

    /// The connect timeout ([`connect_timeout`](Self::connect_timeout)).
    pub fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The default command deadline ([`command_timeout`](Self::command_timeout)).
    pub fn get_command_timeout(&self) -> Option<Duration> {
        self.command_timeout
    }

    /// The grace period of commands answered only on failure ([`no_reply_grace`](Self::no_reply_grace)).
    pub fn get_no_reply_grace(&self) -> Duration {
        self.no_reply_grace
    }

    /// The time `command` may take under `config`: the command timeout, or, for a command the server answers
    /// only when it fails ([`Config::replies_only_on_failure`]), the grace period (the command timeout when it
    /// is shorter). Every adapter takes a command's deadline from here.
    pub fn timeout_for(&self, config: &Config, command: &str) -> Option<Duration> {
        if config.replies_only_on_failure(command) {
            return Some(self.command_timeout.map_or(self.no_reply_grace, |t| t.min(self.no_reply_grace)));
        }
        self.command_timeout
    }

    /// The event buffer's length ([`event_buffer`](Self::event_buffer)).
    pub fn get_event_buffer(&self) -> usize {
        self.event_buffer
    }

    /// The core's [`Config`] for `mode` with these limits. The core's own event queue is a fixed safety bound:
    /// adapters drain it after every read into their event buffer.
    pub fn to_config(&self, mode: Mode) -> Config {
        let base = match mode {
            Mode::Qmp => Config::qmp().handshake_timeout(Some(self.connect_timeout)),
            Mode::GuestAgent => Config::guest_agent().handshake_timeout(Some(self.connect_timeout)),
        };
        base.max_message_size(self.max_message_size)
            .enable_oob(self.oob)
            .max_in_flight(self.max_in_flight)
            .max_pending(self.max_pending)
            .max_queued_events(CORE_EVENT_QUEUE)
            .in_band_ids(self.in_band_ids)
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

/// Whether a read or write error means the peer hung up (a reset, a broken pipe). Adapters report it as the end
/// of the stream, so that a peer that closes with our command unread gives the same error as one that closes
/// cleanly: the core then says what was cut short (`closed mid-message (N bytes received)`), the same in every
/// adapter and on every runtime.
pub fn is_hangup(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(kind, ConnectionReset | BrokenPipe | ConnectionAborted)
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
        let opts = Options::default().max_message_size(5).max_in_flight(3).max_pending(0).event_buffer(0);
        assert_eq!(opts.get_event_buffer(), 1);
        for mode in [Mode::Qmp, Mode::GuestAgent] {
            let config = opts.to_config(mode);
            assert_eq!(config.mode(), mode);
            assert_eq!(config.get_max_message_size(), 5);
            assert_eq!(config.get_max_in_flight(), 3);
            assert_eq!(config.get_max_pending(), 1);
            assert_eq!(config.get_max_queued_events(), CORE_EVENT_QUEUE);
            assert!(config.get_in_band_ids());
        }
        assert!(!Options::default().in_band_ids(false).to_config(Mode::Qmp).get_in_band_ids());
        assert!(Options::default().in_band_ids(false).to_config(Mode::GuestAgent).get_in_band_ids());
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
}
