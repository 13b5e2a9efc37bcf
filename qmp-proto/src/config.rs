//! [`Config`]: the protocol mode and every limit of a [`Client`](crate::Client), and [`ExecuteOptions`] for one command.

use std::time::{Duration, Instant};

/// The grace period to give a command answered only on failure (see [`Config::replies_only_on_failure`]) as its
/// deadline, when the caller has no better one: 2 seconds.
///
/// qemu-ga runs `guest-shutdown` and `guest-suspend-*` by starting a helper (`shutdown`, `systemctl suspend`,
/// `pm-suspend`, ...) and waiting for it; it writes a reply only when that fails, and on success the guest
/// goes down or to sleep with nothing written. So silence means success, but only after the helper had time to
/// fail: the client ends such a command with an error reply if one comes, and otherwise with success when the
/// agent closes the connection or when the deadline (this grace period) passes.
pub const DEFAULT_NO_REPLY_GRACE: Duration = Duration::from_secs(2);

/// With [`Config::in_band_ids`]`(false)`, an in-band command longer than this (in bytes, as written) keeps its
/// id and goes alone. Below it QEMU's parser limits cannot be reached (a nesting depth over 1024 takes more than
/// 2048 bytes of brackets, 2 M tokens more still), so QEMU answers such a command exactly once.
pub const ORDERED_COMMAND_MAX: usize = 2048;

/// Guest-agent commands that send no reply when they succeed (`success-response: false` in qga's schema).
const REPLY_ONLY_ON_FAILURE: [&str; 4] =
    ["guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"];

/// Which protocol the peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// QMP: a greeting, then `qmp_capabilities` negotiation, then commands and events.
    Qmp,
    /// The guest agent protocol: no greeting, no negotiation, LF-terminated replies, `guest-sync-delimited`
    /// resynchronisation and commands that do not reply on success.
    GuestAgent,
}

/// Settings of a [`Client`](crate::Client). Start from [`Config::qmp`] or [`Config::guest_agent`] and adjust.
///
/// Every buffer the client keeps is bounded by one of these limits:
///
/// | limit | default | on overflow |
/// |---|---|---|
/// | [`max_message_size`](Self::max_message_size) | 10 MiB | the message is skipped unbuffered and reported |
/// | [`max_in_flight`](Self::max_in_flight) | 8 | further in-band commands wait, in order |
/// | [`max_pending`](Self::max_pending) | 1024 | `execute` returns [`UsageError::QueueFull`](crate::UsageError::QueueFull) |
/// | [`max_queued_events`](Self::max_queued_events) | 1024 | server events are dropped and counted in [`ClientEvent::EventsDropped`](crate::ClientEvent::EventsDropped) |
///
/// Time limits: [`handshake_timeout`](Self::handshake_timeout) (10 s) and
/// [`command_timeout`](Self::command_timeout) (none: set one for every command that brings no deadline).
///
/// ```
/// use std::time::Duration;
/// use qmp_proto::Config;
/// let cfg = Config::guest_agent().max_message_size(128 << 20); // room for guest-file-read
/// let cfg = Config::qmp().enable_oob(false).handshake_timeout(Some(Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) mode: Mode,
    pub(crate) max_message_size: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) max_pending: usize,
    pub(crate) max_queued_events: usize,
    pub(crate) handshake_timeout: Option<Duration>,
    pub(crate) command_timeout: Option<Duration>,
    pub(crate) enable_oob: bool,
    /// Guest-agent mode: the nonce of the `guest-sync-delimited` sent first thing.
    pub(crate) sync_on_connect: Option<u32>,
    /// QMP mode: whether in-band commands carry an id (false: their replies are matched by order).
    pub(crate) in_band_ids: bool,
}

impl Config {
    /// QMP with the defaults in the table above, OOB enabled when offered, and a 10 s handshake deadline.
    pub fn qmp() -> Self {
        Config {
            mode: Mode::Qmp,
            max_message_size: 10 << 20,
            max_in_flight: 8,
            max_pending: 1024,
            max_queued_events: 1024,
            handshake_timeout: Some(Duration::from_secs(10)),
            command_timeout: None,
            enable_oob: true,
            sync_on_connect: None,
            in_band_ids: true,
        }
    }

    /// The guest agent protocol, with the same limits. There is no greeting: the client is ready at once,
    /// unless [`sync_on_connect`](Self::sync_on_connect) makes it check first that an agent is listening (and
    /// flush what an earlier client left in the channel), within the 10 s handshake deadline.
    pub fn guest_agent() -> Self {
        Config { mode: Mode::GuestAgent, enable_oob: false, ..Config::qmp() }
    }

    /// Guest-agent mode: start the session with `guest-sync-delimited` carrying `nonce`, as
    /// [`Client::guest_sync`](crate::Client::guest_sync) does (a 0xFF byte first, then everything the agent
    /// sends before its 0xFF marker discarded). [`ClientEvent::Ready`](crate::ClientEvent::Ready) comes only once
    /// the agent echoes `nonce`; commands issued before then wait. If the
    /// [`handshake_timeout`](Self::handshake_timeout) passes first, the session closes with
    /// [`ConnectionError::SyncTimeout`](crate::ConnectionError::SyncTimeout); an error reply closes it with
    /// [`ConnectionError::SyncFailed`](crate::ConnectionError::SyncFailed).
    ///
    /// The virtio-serial channel of a guest agent keeps what an earlier client left unread, and an agent that is
    /// not running never answers: this is the way to start on a clean, live channel. Pass a fresh random nonce
    /// each time (the core has no randomness of its own). Ignored in QMP mode.
    pub fn sync_on_connect(mut self, nonce: u32) -> Self {
        self.sync_on_connect = Some(nonce);
        self
    }

    /// The largest message accepted from the server, in bytes. Larger ones are skipped and reported.
    /// QEMU has no output limit; raise this for big `query-qmp-schema` trees or `guest-file-read` transfers.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes.max(1);
        self
    }

    /// In-band commands on the wire at once (at least 1). QEMU queues at most 8 when OOB is enabled and stops
    /// reading while its queue is full, which also delays OOB commands: keep this at 8 or below.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Commands pending at once (queued, on the wire, or cancelled and awaiting their reply), at least 1.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }

    /// Server events held for [`Client::poll_event`](crate::Client::poll_event) before newer ones are dropped.
    pub fn max_queued_events(mut self, n: usize) -> Self {
        self.max_queued_events = n.max(1);
        self
    }

    /// Deadline for the greeting and the capabilities negotiation together (QMP), or for the connect-time sync
    /// ([`sync_on_connect`](Self::sync_on_connect), guest-agent mode; without it there is no handshake), from
    /// [`Client::new`](crate::Client::new). Default 10 s. `None` waits forever (not recommended: a second client
    /// on a QMP socket gets no greeting at all, and an agent that is not running never answers).
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The deadline of every command that sets none itself: `now + timeout`, where `now` is the time the caller
    /// passes with the command ([`ExecuteOptions::now`]; the core has no clock). Default `None`: commands
    /// without a deadline wait for their reply as long as the connection lives. Once set, a command with neither
    /// a deadline nor `now` is refused with [`UsageError::NoClock`](crate::UsageError::NoClock), rather than
    /// silently left without one. Applies to [`Client::guest_sync`](crate::Client::guest_sync) too.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use qmp_proto::{Client, Config, ExecuteOptions};
    /// let mut client = Client::new(Config::guest_agent().command_timeout(Some(Duration::from_secs(5))), Instant::now());
    /// let now = Instant::now();
    /// client.execute_no_args("guest-ping", ExecuteOptions::new().now(now)).unwrap();
    /// assert_eq!(client.poll_timeout(), Some(now + Duration::from_secs(5)));
    /// ```
    pub fn command_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The default command timeout.
    pub fn get_command_timeout(&self) -> Option<Duration> {
        self.command_timeout
    }

    /// Negotiate the `oob` capability when the server offers it (default: yes). Needed for
    /// [`ExecuteOptions::oob`]; lets QEMU queue pipelined commands (measured: 9,870 vs 6,017 round trips/s with 8
    /// in flight on qemu-storage-daemon 10).
    pub fn enable_oob(mut self, enable: bool) -> Self {
        self.enable_oob = enable;
        self
    }

    /// QMP mode: whether in-band commands carry an id (default: yes). With `false` the client writes in-band
    /// commands without an id and matches each reply that has none to the oldest in-band command on the wire,
    /// which is how QEMU answers them: strictly in the order it read them (only `exec-oob` commands may be
    /// answered out of order, and they keep their ids). `,"id":N` is 7 or more bytes that QEMU reads one at a
    /// time, about 17 us of QEMU CPU per command on the 150-180 us a round trip costs it.
    ///
    /// Everything else holds as with ids: a cancelled or timed-out command keeps its place in the order until its
    /// late reply comes and is swallowed (bounded by [`max_pending`](Self::max_pending), like the wire ids of
    /// [`Client::abandoned`](crate::Client::abandoned)); a reply without an id when no in-band command is on the
    /// wire, or with an id the client did not send, is reported as a
    /// [`ProtocolViolation`](crate::ProtocolViolation); events, OOB commands, `qmp_capabilities` (sent with its
    /// id) and file-descriptor passing are unaffected. These in-band commands keep their id all the same:
    /// commands answered only on failure ([`ExecuteOptions::expect_reply`]`(false)`), and commands over
    /// [`ORDERED_COMMAND_MAX`] bytes, which go alone (no in-band command follows one until it is answered): only
    /// a command that long can trip QEMU's parser limits (nesting 1024, 2 M tokens), which answer one command
    /// with many errors without an id. Should QEMU never answer such a command (its limits tripped, or 64 MiB
    /// exceeded), the in-band commands behind it wait until their own deadlines: even timed out, it holds its
    /// place, since a late reply may still come.
    ///
    /// What you give up: the server's replies to these commands carry no id, so a trace of the wire (QEMU's
    /// `-trace monitor_qmp_*`, a packet capture) no longer pairs commands and replies by id, only by order. And
    /// the client trusts the server to answer every in-band command exactly once, in order, as QEMU does: against
    /// a server that does not (a broken one, a proxy that reorders), keep the ids.
    /// [`RequestId::as_u64`](crate::RequestId::as_u64) is then the client's own key for a command, not something
    /// on the wire ([`RequestId::is_on_wire`](crate::RequestId::is_on_wire)).
    ///
    /// Ignored in guest-agent mode (the setting stays `true` there): qemu-ga has commands that never reply on
    /// success, and `guest-sync-delimited` resynchronisation needs ids.
    ///
    /// ```
    /// # use std::time::Instant;
    /// use qmp_proto::{Client, Config, ExecuteOptions};
    /// let mut client = Client::new(Config::qmp().in_band_ids(false), Instant::now());
    /// client.handle_input(br#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, "capabilities": ["oob"]}}"#);
    /// client.handle_input(b"\r\n");
    /// let mut out = Vec::new();
    /// client.poll_transmit(&mut out); // qmp_capabilities, with its id
    /// client.handle_input(b"{\"return\": {}, \"id\": 1}\r\n");
    /// client.execute_no_args("query-status", ExecuteOptions::new()).unwrap();
    /// client.execute_no_args("query-yank", ExecuteOptions::new().oob()).unwrap();
    /// out.clear();
    /// client.poll_transmit(&mut out);
    /// assert_eq!(out, br#"{"execute":"query-status"}{"exec-oob":"query-yank","id":2}"#);
    /// assert!(Config::guest_agent().in_band_ids(false).get_in_band_ids()); // ignored there
    /// ```
    pub fn in_band_ids(mut self, with_ids: bool) -> Self {
        self.in_band_ids = with_ids || self.mode == Mode::GuestAgent;
        self
    }

    /// Whether in-band commands carry an id (see [`in_band_ids`](Self::in_band_ids)).
    pub fn get_in_band_ids(&self) -> bool {
        self.in_band_ids
    }

    /// The protocol mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The maximum message size in bytes.
    pub fn get_max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// The in-flight limit.
    pub fn get_max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// The pending-commands limit.
    pub fn get_max_pending(&self) -> usize {
        self.max_pending
    }

    /// The queued-events limit.
    pub fn get_max_queued_events(&self) -> usize {
        self.max_queued_events
    }

    /// Whether the server answers `command` only when it fails: in guest-agent mode, `guest-shutdown`,
    /// `guest-suspend-disk`, `guest-suspend-ram` and `guest-suspend-hybrid` (the default of
    /// [`ExecuteOptions::expect_reply`]). Adapters give such a command [`DEFAULT_NO_REPLY_GRACE`] as its
    /// deadline when the caller set none, since there the deadline is the grace period for an error to come.
    pub fn replies_only_on_failure(&self, command: &str) -> bool {
        self.mode == Mode::GuestAgent && REPLY_ONLY_ON_FAILURE.contains(&command)
    }
}

/// Options for one command.
///
/// ```
/// use std::time::{Duration, Instant};
/// use qmp_proto::ExecuteOptions;
/// let opts = ExecuteOptions::new().deadline(Instant::now() + Duration::from_secs(5));
/// let oob = ExecuteOptions::new().oob();
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecuteOptions {
    pub(crate) oob: bool,
    pub(crate) deadline: Option<Instant>,
    pub(crate) expect_reply: Option<bool>,
    pub(crate) pass_fd: bool,
    /// `deadline` holds the time the command was issued ([`now`](Self::now)), not a deadline: the client adds
    /// [`Config::command_timeout`]. (One field for both keeps the options small.)
    pub(crate) from_now: bool,
}

impl ExecuteOptions {
    /// In-band, no deadline, reply expected as the mode decides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Send as `exec-oob`: bypasses the in-flight limit and may overtake in-band commands. Needs OOB negotiated.
    pub fn oob(mut self) -> Self {
        self.oob = true;
        self
    }

    /// End the command with [`ClientEvent::TimedOut`](crate::ClientEvent::TimedOut) if no reply came by `deadline`.
    /// For a command answered only on failure (see [`expect_reply`](Self::expect_reply)) that has been written,
    /// the deadline is the grace period instead: passing it ends the command as a success.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self.from_now = false;
        self
    }

    /// The current time, for the core that has no clock: with [`Config::command_timeout`] set and no
    /// [`deadline`](Self::deadline), the command's deadline is `now` plus that timeout. An explicit deadline,
    /// set before or after, wins.
    pub fn now(mut self, now: Instant) -> Self {
        if self.deadline.is_none() || self.from_now {
            self.deadline = Some(now);
            self.from_now = true;
        }
        self
    }

    /// Same as [`deadline`](Self::deadline), taking an `Option` (`None` sets no deadline, and leaves a
    /// [`now`](Self::now) in place for the default one).
    pub fn deadline_opt(mut self, deadline: Option<Instant>) -> Self {
        if deadline.is_some() || !self.from_now {
            self.deadline = deadline;
            self.from_now = false;
        }
        self
    }

    /// Whether the server answers this command on success. By default every command is, except, in guest-agent
    /// mode, those that reply only on failure ([`Config::replies_only_on_failure`]: `guest-shutdown`,
    /// `guest-suspend-disk`, `guest-suspend-ram`, `guest-suspend-hybrid`).
    ///
    /// Once written, a command that expects no reply ends with the first of: a reply carrying its id (an error
    /// is [`ClientEvent::Reply`](crate::ClientEvent::Reply) with `Err`); the server closing the connection (EOF
    /// or a transport error: `Reply` with `Ok({})`, before `Closed`); its deadline (`Reply` with `Ok({})`, not
    /// `TimedOut`: pick it as the grace period, for example [`DEFAULT_NO_REPLY_GRACE`]). Without a deadline it
    /// waits for one of the other two. It holds no in-flight slot and does not hold back a `guest_sync`. Before
    /// it is written it is like any command (its deadline then ends it with `TimedOut`).
    pub fn expect_reply(mut self, expect: bool) -> Self {
        self.expect_reply = Some(expect);
        self
    }

    /// The command takes a file descriptor that the adapter passes with it (`getfd`, `add-fd`, over SCM_RIGHTS
    /// on a unix socket). The command goes on the wire behind one space byte, the byte the descriptor must be
    /// attached to: [`Client::poll_transmit_with_fds`](crate::Client::poll_transmit_with_fds) says where it is.
    /// QEMU keeps only the latest descriptor received and, with OOB negotiated, reads ahead of the command it
    /// runs, so at most one such command is on the wire at a time: the next waits (in order) for its reply.
    /// In-band only.
    pub fn pass_fd(mut self) -> Self {
        self.pass_fd = true;
        self
    }

    /// The deadline, if any (adapters that hold a command back before handing it to the core honour it too).
    pub fn get_deadline(&self) -> Option<Instant> {
        self.deadline.filter(|_| !self.from_now)
    }
}
