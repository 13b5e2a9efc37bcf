//! [`Client`]: the client-side state machine. Bytes and time in; events, bytes and a deadline out.
//!
//! The life of a QMP session, as this file drives it:
//!
//! | phase | on | does |
//! |---|---|---|
//! | `AwaitGreeting` | greeting | emit `Greeting`, send `qmp_capabilities` (with `oob` if configured and offered) |
//! | `AwaitGreeting` | anything else / deadline | close: `BadGreeting` / `GreetingTimeout` |
//! | `Negotiating` | event | emit it (events do arrive before the negotiation reply) |
//! | `Negotiating` | its reply | `Ready`, then send the queued commands / on error close `NegotiationFailed` |
//! | `Negotiating` | deadline | close: `NegotiationTimeout` |
//! | `Ready` | replies, events | route by id / emit |
//! | any | EOF, transport error | written commands answered only on failure succeed; then as below |
//! | any | EOF, transport error, `close()` | close with that cause: every pending command ends with it |
//!
//! Guest-agent mode starts in `Ready`, or, with [`Config::sync_on_connect`], in `Syncing`:
//!
//! | phase | on | does |
//! |---|---|---|
//! | `Syncing` | (at creation) | send 0xFF and `guest-sync-delimited`; discard input up to the agent's 0xFF |
//! | `Syncing` | reply echoing the nonce | `Ready`, then send the queued commands |
//! | `Syncing` | a stale delimited reply | discard it, wait for the next marker |
//! | `Syncing` | error reply / deadline | close: `SyncFailed` / `SyncTimeout` |
//!
//! Commands wait in a queue until `Ready`; then at most `max_in_flight`
//! in-band commands are on the wire, the rest wait in order; OOB commands skip the queue.
//!
//! Replies are routed by id, or, with [`Config::in_band_ids`]`(false)`, an in-band command goes without one
//! and a reply without an id answers the oldest such command on the wire (QEMU answers in-band commands in
//! order). A command of that kind too long to be sure of one reply goes with its id, alone.
//!
//! A command answered only on failure (`guest-shutdown`, `guest-suspend-*`, or
//! [`ExecuteOptions::expect_reply(false)`](crate::ExecuteOptions::expect_reply)) holds no in-flight slot once
//! written: its error reply ends it as `Err`; EOF, a transport error or its deadline (the grace period) as `Ok({})`.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

use crate::config::{Config, ExecuteOptions, Mode, ORDERED_COMMAND_MAX};
use crate::encode::{append_arguments, encode_command, encode_command_without_id};
use crate::error::{ConnectionError, ProtocolViolation, QmpError, RequestError, UsageError};
use crate::framer::{Frame, Framer, Layout, KEEP_CAPACITY};
use crate::ids::{IdPool, Slots};
use crate::message::{classify_framed, Greeting, Message, ServerEvent};
use crate::raw::RawJson;
use crate::timers::{Timer, TimerTable};

/// Identifies one command sent through [`Client::execute`]. Unique for the life of a [`Client`] (equality,
/// hashing and order go by the order commands were issued), so it can key a map of callers safely.
///
/// Its wire id ([`as_u64`](Self::as_u64)) is unique only among the requests whose reply may still come: the
/// client reuses the smallest free one, so that ids stay short (see [`Client::abandoned`] for when an id is
/// free again). With [`Config::in_band_ids`]`(false)` most in-band commands go without an id: theirs is then
/// only the client's key, taken and freed the same way ([`is_on_wire`](Self::is_on_wire) tells).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId {
    /// Issue order, from 1: unique for the life of the client.
    serial: u64,
    /// The id on the wire (or the key of a command that goes without one).
    wire: u64,
    /// Whether the command carries `wire` as its id (false: its reply is matched by order).
    on_wire: bool,
}

impl RequestId {
    /// The id as it goes on the wire: unique among the requests whose reply may still come, and reused after.
    /// For a command sent without an id ([`Config::in_band_ids`]), the client's key for it, unique the same way.
    pub fn as_u64(self) -> u64 {
        self.wire
    }

    /// Whether the command carries [`as_u64`](Self::as_u64) as its id on the wire: false for an in-band
    /// command sent without one ([`Config::in_band_ids`]`(false)`), whose reply is matched by order.
    pub fn is_on_wire(self) -> bool {
        self.on_wire
    }

    /// The place of this request in the order the client issued them (its own handshake request included),
    /// from 1. Unique for the life of the client.
    pub fn serial(self) -> u64 {
        self.serial
    }
}

impl std::fmt::Display for RequestId {
    /// The wire id, as it appears in the protocol (and in QEMU's traces).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.wire.fmt(f)
    }
}

/// What happened, in the order it happened. Returned by [`Client::poll_event`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The server's greeting (QMP mode).
    Greeting(Greeting),
    /// Negotiation succeeded (QMP); in guest-agent mode, the client was created, or, with
    /// [`Config::sync_on_connect`], the agent echoed the nonce. Commands flow from now on.
    Ready {
        /// Whether out-of-band execution was negotiated.
        oob: bool,
    },
    /// The reply to a command: its `return` payload, or the server's error. Ends the request.
    Reply {
        /// The command.
        id: RequestId,
        /// `Ok(return)` or `Err(error)`. An object or array `return` is validated when you parse it, not
        /// before ([`classify_framed`](crate::message::classify_framed)).
        result: Result<RawJson, QmpError>,
    },
    /// The request failed on this side (for example its reply was over the size limit). Ends the request.
    Failed {
        /// The command.
        id: RequestId,
        /// Why.
        error: RequestError,
    },
    /// An asynchronous event from the server.
    Event(ServerEvent),
    /// A command's deadline passed. Ends the request; its late reply, if any, is swallowed. (Not for a written
    /// command answered only on failure: its deadline is a grace period and ends it with a successful `Reply`.)
    TimedOut {
        /// The command.
        id: RequestId,
    },
    /// Server events were dropped because more than `max_queued_events` were waiting to be polled.
    EventsDropped {
        /// How many, at this point of the sequence.
        count: u64,
    },
    /// The server sent something wrong; the session goes on.
    ProtocolViolation(ProtocolViolation),
    /// The connection is over. Every request not ended yet ends here. Always the last event. When the server
    /// went away (EOF, transport error), written commands answered only on failure have just ended with a
    /// successful `Reply` (see [`ExecuteOptions::expect_reply`]).
    Closed(ConnectionError),
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting in the queue; not written yet.
    Queued,
    /// Written; its reply is awaited.
    InFlight,
    /// Written, then cancelled or timed out: its reply will be swallowed.
    Abandoned,
}

/// Whose request it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The user's command.
    User,
    /// `qmp_capabilities`, sent by the client itself.
    Negotiation,
    /// `guest-sync-delimited` with this nonce.
    Sync(u32),
    /// `guest-sync-delimited` with this nonce, sent by the client itself at the start ([`Config::sync_on_connect`]).
    ConnectSync(u32),
}

impl Purpose {
    /// The nonce of a `guest-sync-delimited`.
    fn sync_nonce(self) -> Option<u32> {
        match self {
            Purpose::Sync(nonce) | Purpose::ConnectSync(nonce) => Some(nonce),
            Purpose::User | Purpose::Negotiation => None,
        }
    }

    /// The client's own requests (handshake steps): not the user's, not counted as pending.
    fn is_handshake(self) -> bool {
        matches!(self, Purpose::Negotiation | Purpose::ConnectSync(_))
    }
}

#[derive(Debug)]
struct Request {
    /// Its [`RequestId`] (the wire id is the key of the request table).
    rid: RequestId,
    stage: Stage,
    purpose: Purpose,
    oob: bool,
    deadline: Option<Instant>,
    /// False for commands answered only when they fail (guest-agent `guest-shutdown` and the like): once
    /// written, an error reply, EOF or the deadline ends them, and they hold no in-flight slot.
    expect_reply: bool,
    /// The encoded command while it is queued.
    wire: Vec<u8>,
    /// Whether a file descriptor goes with it (its wire starts with the space byte that carries it).
    pass_fd: bool,
    /// Written without an id: its reply is the oldest id-less one ([`Config::in_band_ids`]).
    idless: bool,
    /// In-band with its id while others go without: too long to be sure of one reply, so no in-band command
    /// follows it until it is answered.
    alone: bool,
}

impl Request {
    /// Whether it takes one of the `max_in_flight` slots while on the wire: in-band commands that are answered.
    fn holds_slot(&self) -> bool {
        !self.oob && self.expect_reply
    }

    /// Written, and answered only if it fails.
    fn awaits_failure(&self) -> bool {
        self.stage == Stage::InFlight && !self.expect_reply
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitGreeting,
    Negotiating,
    /// Guest agent: the connect-time `guest-sync-delimited` is on the wire.
    Syncing,
    Ready,
    Closed,
}

/// A guest-agent resynchronisation in progress: input is discarded up to the next 0xFF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resync {
    id: u64,
    seen_delimiter: bool,
}

/// Entries the client's queues and tables keep room for while idle (see [`Client::release_idle_memory`]).
const KEEP_ENTRIES: usize = 64;

/// The largest argument buffer [`Client::execute`] keeps for the next command.
const KEEP_ARGS: usize = 256;

/// The client state machine. See the [crate docs](crate) for the driving contract and a complete example.
///
/// Methods, by kind (the shape of quinn-proto's `Connection`):
/// - inputs: [`handle_input`](Self::handle_input), [`handle_eof`](Self::handle_eof),
///   [`handle_timeout`](Self::handle_timeout), [`handle_transport_error`](Self::handle_transport_error);
/// - commands: [`execute`](Self::execute), [`execute_raw`](Self::execute_raw), [`guest_sync`](Self::guest_sync),
///   [`cancel`](Self::cancel), [`close`](Self::close);
/// - outputs, in this order after every input or command: [`poll_event`](Self::poll_event) until `None`,
///   [`poll_transmit`](Self::poll_transmit), [`poll_timeout`](Self::poll_timeout);
/// - getters: [`greeting`](Self::greeting), [`is_ready`](Self::is_ready), [`oob_enabled`](Self::oob_enabled),
///   [`in_flight`](Self::in_flight), [`pending`](Self::pending), [`connection_error`](Self::connection_error).
#[derive(Debug)]
pub struct Client {
    config: Config,
    phase: Phase,
    /// Boxed so that [`Client::handle_input`] takes it out (to feed it while frames go to `self`) and puts it
    /// back by moving a pointer; `None` only while it feeds.
    framer: Option<Box<Framer>>,
    greeting: Option<Greeting>,
    oob_enabled: bool,
    /// Wire ids in use: the keys of `requests`.
    ids: IdPool,
    /// Requests issued so far (the serial of the last one).
    issued: u64,
    /// [`Client::close_gracefully`] was called: no new commands; closes once the pending ones have ended.
    closing: bool,
    requests: Slots<Request>,
    /// In-band requests in send order (ids whose request is gone or no longer queued are skipped lazily).
    queue: VecDeque<u64>,
    /// In-band requests written and not answered yet, abandoned ones included (QEMU still holds them).
    in_flight: usize,
    /// Whether `qmp_capabilities` asked for `oob`.
    oob_requested: bool,
    handshake_deadline: Option<Instant>,
    resync: Option<Resync>,
    timers: TimerTable,
    events: VecDeque<ClientEvent>,
    queued_server_events: usize,
    transmit: Vec<u8>,
    /// A request being added whose command is encoded at the end of `transmit`, from this offset: sending it
    /// leaves its bytes there ([`Client::add_request`]).
    staged: Option<(u64, usize)>,
    /// Where [`Client::execute`] serializes arguments (kept between commands, up to [`KEEP_ARGS`] bytes).
    args_buf: Vec<u8>,
    closed: Option<ConnectionError>,
    /// The last command written that passes a file descriptor: the next waits while it is pending.
    fd_in_flight: Option<u64>,
    /// Offsets in `transmit` of the bytes that carry a file descriptor, and their commands.
    transmit_fds: Vec<(usize, RequestId)>,
    /// Commands written without an id and not answered yet (abandoned ones included), oldest first: a reply
    /// without an id answers the first.
    by_order: VecDeque<u64>,
    /// A command that goes alone ([`Request::alone`]) is on the wire: no in-band command follows until it ends.
    alone_on_wire: Option<u64>,
}

impl Client {
    /// A client at the start of a connection. `now` starts the handshake deadline (QMP mode, or guest-agent
    /// mode with [`Config::sync_on_connect`]). In guest-agent mode without it the client is ready at once and the
    /// first event is [`ClientEvent::Ready`].
    pub fn new(config: Config, now: Instant) -> Self {
        let mut client = Client {
            framer: Some(Box::new(Framer::new(config.max_message_size))),
            phase: Phase::AwaitGreeting,
            greeting: None,
            oob_enabled: false,
            ids: IdPool::default(),
            issued: 0,
            closing: false,
            requests: Slots::default(),
            queue: VecDeque::new(),
            in_flight: 0,
            oob_requested: false,
            handshake_deadline: None,
            resync: None,
            timers: TimerTable::default(),
            events: VecDeque::new(),
            queued_server_events: 0,
            transmit: Vec::new(),
            staged: None,
            args_buf: Vec::new(),
            closed: None,
            fd_in_flight: None,
            transmit_fds: Vec::new(),
            by_order: VecDeque::new(),
            alone_on_wire: None,
            config,
        };
        match (client.config.mode, client.config.sync_on_connect) {
            (Mode::Qmp, _) => client.arm_handshake(now),
            (Mode::GuestAgent, Some(nonce)) => {
                client.arm_handshake(now);
                client.sync_on_connect(nonce);
            }
            (Mode::GuestAgent, None) => client.become_ready(),
        }
        client
    }

    fn arm_handshake(&mut self, now: Instant) {
        if let Some(timeout) = self.config.handshake_timeout {
            let at = now.checked_add(timeout).unwrap_or(now);
            self.handshake_deadline = Some(at);
            self.timers.set(at, Timer::Handshake);
        }
    }

    // ----- inputs -------------------------------------------------------------------------------------------

    /// Feeds bytes read from the server. Any split of the stream into calls gives the same events, so the read
    /// buffer may have any size (one byte works; 64 KiB is a good size: the client keeps a message split
    /// across reads itself, bounded by [`Config::max_message_size`]).
    ///
    /// Several calls may come before the events are drained: replies wait in order (at most one per pending
    /// command), server events and violation reports up to [`Config::max_queued_events`], past which they are
    /// dropped and counted ([`ClientEvent::EventsDropped`]). Drain after each read to lose none.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        let Some(mut framer) = self.framer.take() else {
            return; // unreachable: frames go to `on_frame`, which never feeds input
        };
        framer.feed_framed(bytes, |frame, layout| self.on_frame(frame, layout));
        self.framer = Some(framer);
        self.finish_closing();
    }

    /// The server closed its side of the stream. Closes the session (`Eof` or `EofMidMessage`).
    pub fn handle_eof(&mut self) {
        let cause = if let Some(framer) = self.framer.as_ref().filter(|f| f.in_message()) {
            ConnectionError::EofMidMessage { buffered: framer.message_len() }
        } else {
            ConnectionError::Eof
        };
        self.close_with(cause);
    }

    /// The transport failed (a read or write error). Closes the session with that cause.
    pub fn handle_transport_error(&mut self, description: impl Into<String>) {
        self.close_with(ConnectionError::Transport(description.into()));
    }

    /// Fires every deadline at or before `now`. Calling it early, late or more than once is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.expired(now) {
            match timer {
                Timer::Handshake => {
                    let cause = match self.phase {
                        Phase::AwaitGreeting => ConnectionError::GreetingTimeout,
                        Phase::Syncing => ConnectionError::SyncTimeout,
                        _ => ConnectionError::NegotiationTimeout,
                    };
                    self.close_with(cause);
                    return;
                }
                Timer::Command(id) => self.expire(id),
            }
            self.finish_closing();
        }
    }

    // ----- commands ------------------------------------------------------------------------------------------

    /// Queues a command. `args` is `Some(&value)` for anything that serializes to a JSON object; for a command
    /// without arguments use [`execute_no_args`](Self::execute_no_args) (or pass `None::<&()>`).
    ///
    /// Returns at once; the command goes on the wire when the session is ready and a slot is free (or at once
    /// for OOB). Errors are the caller's ([`UsageError`]): nothing was queued. It may be called at any time,
    /// also while bytes from an earlier [`poll_transmit`](Self::poll_transmit) are still unwritten.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use qmp_proto::{Client, Config, ExecuteOptions};
    /// let mut client = Client::new(Config::guest_agent(), Instant::now());
    /// let id = client.execute("guest-sync", Some(&serde_json::json!({"id": 7})), ExecuteOptions::new()).unwrap();
    /// let ping = client.execute_no_args("guest-ping", ExecuteOptions::new()).unwrap();
    /// let mut out = Vec::new();
    /// client.poll_transmit(&mut out);
    /// let expected = format!(r#"{{"execute":"guest-sync","arguments":{{"id":7}},"id":{id}}}{{"execute":"guest-ping","id":{ping}}}"#);
    /// assert_eq!(out, expected.as_bytes());
    /// ```
    pub fn execute<A: Serialize + ?Sized>(
        &mut self,
        command: &str,
        args: Option<&A>,
        opts: ExecuteOptions,
    ) -> Result<RequestId, UsageError> {
        let Some(args) = args else {
            return self.execute_encoded(command, None, opts);
        };
        // Serialized into a buffer the client keeps, not a new one per command.
        let mut buf = std::mem::take(&mut self.args_buf);
        let result = match append_arguments(&mut buf, args) {
            Ok(has) => self.execute_encoded(command, has.then_some(&buf[..]), opts),
            Err(e) => Err(e),
        };
        buf.clear();
        if buf.capacity() <= KEEP_ARGS {
            self.args_buf = buf;
        }
        result
    }

    /// [`execute`](Self::execute) for a command without arguments.
    pub fn execute_no_args(&mut self, command: &str, opts: ExecuteOptions) -> Result<RequestId, UsageError> {
        self.execute_encoded(command, None, opts)
    }

    /// Like [`execute`](Self::execute), with arguments already serialized as a JSON object (or `None`).
    pub fn execute_raw(
        &mut self,
        command: &str,
        args: Option<&RawJson>,
        opts: ExecuteOptions,
    ) -> Result<RequestId, UsageError> {
        let args = match args.map(RawJson::as_bytes) {
            None => None,
            // A valid object made of braces and whitespace only is `{}`, however spaced: no arguments.
            Some(b) if b.iter().all(|c| matches!(c, b'{' | b'}' | b' ' | b'\t' | b'\r' | b'\n')) => None,
            Some(b) if b.first() == Some(&b'{') => Some(b),
            Some(b) => {
                return Err(UsageError::InvalidArguments(format!(
                    "got {}",
                    String::from_utf8_lossy(&b[..b.len().min(40)])
                )))
            }
        };
        self.execute_encoded(command, args, opts)
    }

    fn execute_encoded(
        &mut self,
        command: &str,
        args: Option<&[u8]>,
        opts: ExecuteOptions,
    ) -> Result<RequestId, UsageError> {
        self.check_open()?;
        if command.is_empty() {
            return Err(UsageError::EmptyCommand);
        }
        if opts.oob {
            if self.config.mode == Mode::GuestAgent {
                return Err(UsageError::OobInGuestAgentMode);
            }
            if !self.oob_enabled {
                return Err(UsageError::OobNotNegotiated);
            }
        }
        if opts.pass_fd && opts.oob {
            return Err(UsageError::InvalidArguments("a command passing a file descriptor runs in-band".into()));
        }
        self.check_room()?;
        let opts = self.default_deadline(opts)?;
        let expect_reply = opts.expect_reply.unwrap_or_else(|| !self.config.replies_only_on_failure(command));
        let mut rid = self.take_id();
        // Encoded where it will most likely go: behind the bytes waiting to be transmitted (see `add_request`).
        let at = self.transmit.len();
        let wire = &mut self.transmit;
        if opts.pass_fd {
            wire.push(b' '); // QEMU skips whitespace; this byte carries the descriptor
        }
        let by_order = !self.config.in_band_ids && !opts.oob && expect_reply;
        if by_order {
            encode_command_without_id(wire, command, args);
        }
        let alone = by_order && wire.len() - at > ORDERED_COMMAND_MAX;
        if alone {
            wire.truncate(at + usize::from(opts.pass_fd));
        }
        if !by_order || alone {
            encode_command(wire, command, args, rid.wire, opts.oob);
        }
        rid.on_wire = !by_order || alone;
        self.add_request(rid, Purpose::User, opts, expect_reply, at, alone);
        Ok(rid)
    }

    /// Guest-agent mode: resynchronises the stream with `guest-sync-delimited`.
    ///
    /// Waits until no other command is on the wire (cancelled and timed-out ones aside: their replies, if they
    /// ever come, precede the marker), then writes a 0xFF byte (which resets the agent's parser) and
    /// `guest-sync-delimited` with `nonce`; discards everything the agent sends up to its 0xFF marker (stale
    /// replies, the parse error the 0xFF provokes, an earlier sync's delimited reply), and ends with a
    /// [`ClientEvent::Reply`] carrying the nonce once the agent echoes it. Other commands wait until then. Pick a fresh random `nonce` each time
    /// (the core has no randomness of its own), and a deadline: an agent that is not running never answers.
    pub fn guest_sync(&mut self, nonce: u32, opts: ExecuteOptions) -> Result<RequestId, UsageError> {
        self.check_open()?;
        if self.config.mode != Mode::GuestAgent {
            return Err(UsageError::NotGuestAgent);
        }
        self.check_room()?;
        let opts = self.default_deadline(opts)?;
        let rid = self.take_id();
        let at = self.transmit.len();
        encode_sync(&mut self.transmit, nonce, rid.wire);
        let opts = ExecuteOptions { oob: false, pass_fd: false, ..opts };
        self.add_request(rid, Purpose::Sync(nonce), opts, true, at, false);
        Ok(rid)
    }

    /// Gives up on a command. If it was still queued, it is never sent; if it is on the wire, its reply will
    /// be swallowed (and its wire id stays reserved until then: see [`abandoned`](Self::abandoned)). Returns
    /// false if the request had already ended (no event is produced either way).
    pub fn cancel(&mut self, id: RequestId) -> bool {
        let key = id.wire;
        let Some(req) = self.requests.get_mut(&key).filter(|r| r.rid == id) else {
            return false;
        };
        if let Some(at) = req.deadline.take() {
            self.timers.cancel(at, Timer::Command(key));
        }
        match req.stage {
            Stage::Abandoned => return false,
            // Not written yet: nothing can answer it.
            Stage::Queued => {
                self.forget(key);
            }
            // Written: its reply (for a command answered only on failure, a late error) is swallowed.
            Stage::InFlight => {
                req.stage = Stage::Abandoned;
                if !req.expect_reply && self.fd_in_flight == Some(key) {
                    self.fd_in_flight = None; // it holds nothing back, as when it ends by its grace period
                }
                if self.resync.map(|r| r.id) == Some(key) {
                    self.resync = None;
                }
            }
        }
        // What this command held back may go now: a resync waits for the pipe to empty and blocks the queue
        // behind it, whether it is on the wire or waiting at the head of the queue.
        self.pump();
        self.finish_closing();
        true
    }

    /// Closes the session locally, at once (cause [`ConnectionError::Local`]): every command not ended yet ends
    /// with [`ClientEvent::Closed`], and bytes not yet taken by [`poll_transmit`](Self::poll_transmit) are
    /// dropped (commands accepted but not written never go out). Bytes already taken are yours: write them or
    /// not. To send a last command and then close, use [`close_gracefully`](Self::close_gracefully).
    pub fn close(&mut self) {
        self.close_with(ConnectionError::Local);
    }

    /// Closes the session once every command accepted so far has ended: new commands are refused
    /// ([`UsageError::Closing`]); queued ones still go out; their replies, deadlines and cancellations end them
    /// as usual, events keep coming; when no command is left, the session closes with
    /// [`ConnectionError::Local`] (at once if none is pending). Then write what `poll_transmit` gave you and
    /// close the socket. A server that never answers holds it open: give commands deadlines
    /// ([`Config::command_timeout`]), or call [`close`](Self::close) to stop waiting.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use qmp_proto::{Client, ClientEvent, Config, ConnectionError, ExecuteOptions, UsageError};
    /// let mut client = Client::new(Config::guest_agent(), Instant::now());
    /// let id = client.execute_no_args("guest-ping", ExecuteOptions::new()).unwrap();
    /// client.close_gracefully();
    /// assert!(matches!(client.execute_no_args("guest-info", ExecuteOptions::new()), Err(UsageError::Closing)));
    /// let mut out = Vec::new();
    /// client.poll_transmit(&mut out); // the ping still goes out
    /// assert!(out.starts_with(br#"{"execute":"guest-ping""#));
    /// client.handle_input(format!("{{\"return\": {{}}, \"id\": {id}}}\n").as_bytes());
    /// assert!(matches!(client.poll_event(), Some(ClientEvent::Ready { .. })));
    /// assert!(matches!(client.poll_event(), Some(ClientEvent::Reply { result: Ok(_), .. })));
    /// assert!(matches!(client.poll_event(), Some(ClientEvent::Closed(ConnectionError::Local))));
    /// ```
    pub fn close_gracefully(&mut self) {
        if self.phase != Phase::Closed {
            self.closing = true;
            self.finish_closing();
        }
    }

    // ----- outputs -------------------------------------------------------------------------------------------

    /// The next event, or `None` when there is nothing more until the next input or call.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        let Some(ev) = self.events.pop_front() else {
            self.release_idle_memory();
            return None;
        };
        if matches!(ev, ClientEvent::Event(_) | ClientEvent::ProtocolViolation(_)) {
            self.queued_server_events -= 1;
        }
        Some(ev)
    }

    /// Appends every whole command ready to go to `out`. Returns the number of bytes appended.
    /// Commands sent with [`ExecuteOptions::pass_fd`] need [`poll_transmit_with_fds`](Self::poll_transmit_with_fds).
    ///
    /// When `out` is empty the client swaps buffers instead of copying: you get its buffer, it keeps yours (and
    /// its capacity, up to 64 KiB). Partial writes are fine: keep the unwritten tail at the front of `out` and
    /// go on calling `execute` and `poll_transmit`; new commands are appended behind it, whole.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use qmp_proto::{Client, Config, ExecuteOptions};
    /// let mut client = Client::new(Config::guest_agent(), Instant::now());
    /// let mut out = Vec::new();
    /// client.execute_no_args("guest-ping", ExecuteOptions::new()).unwrap();
    /// client.poll_transmit(&mut out);
    /// let written = 10; // the socket took only 10 bytes
    /// out.drain(..written);
    /// client.execute_no_args("guest-info", ExecuteOptions::new()).unwrap();
    /// client.poll_transmit(&mut out); // appended behind the unwritten tail
    /// assert_eq!(out, br#":"guest-ping","id":1}{"execute":"guest-info","id":2}"#);
    /// ```
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        self.poll_transmit_with_fds(out, &mut Vec::new())
    }

    /// Like [`poll_transmit`](Self::poll_transmit), and appends to `fds`, for each command sent with
    /// [`ExecuteOptions::pass_fd`], the offset in `out` of the one byte its file descriptor must be sent with
    /// (write everything before it, then that byte with the descriptor attached, then the rest).
    pub fn poll_transmit_with_fds(&mut self, out: &mut Vec<u8>, fds: &mut Vec<(usize, RequestId)>) -> usize {
        let base = out.len();
        if !self.transmit_fds.is_empty() {
            fds.extend(self.transmit_fds.drain(..).map(|(at, id)| (base + at, id)));
        }
        let n = self.transmit.len();
        if out.is_empty() {
            std::mem::swap(out, &mut self.transmit);
        } else {
            out.append(&mut self.transmit);
        }
        // Keep a small buffer for the next commands, not one a big command (or the caller's) grew.
        if self.transmit.capacity() > KEEP_CAPACITY {
            self.transmit = Vec::new();
        }
        n
    }

    /// The earliest deadline: call [`handle_timeout`](Self::handle_timeout) when it has passed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----- getters -------------------------------------------------------------------------------------------

    /// The greeting, once received (QMP mode).
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// Negotiation is done (QMP), or the connect-time sync is (guest-agent mode; at once without it). False
    /// once closed.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether out-of-band execution was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.oob_enabled
    }

    /// In-band commands on the wire now (cancelled ones still awaiting their reply included).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Requests not ended yet (queued or on the wire), excluding cancelled or timed-out ones.
    pub fn pending(&self) -> usize {
        self.requests.values().filter(|r| r.stage != Stage::Abandoned && !r.purpose.is_handshake()).count()
    }

    /// Commands cancelled or timed out on the wire whose reply has not come yet (and commands answered only on
    /// failure that were cancelled after they were written, or ended by their grace period: a late error may
    /// still come). Until the reply does, each keeps its wire id reserved, so that the reply is swallowed
    /// rather than routed to a newer command, and holds one of the [`max_pending`](Config::max_pending) places
    /// (and, in-band and answered, an in-flight slot: QEMU is still working on it).
    ///
    /// The bound: when abandoned and pending commands together reach `max_pending`, [`execute`](Self::execute)
    /// returns [`UsageError::QueueFull`] until late replies free places; a server that never answers them
    /// leaves the connection to be closed (what the adapters do once a command times out is theirs to
    /// decide). In guest-agent mode a [`guest_sync`](Self::guest_sync) frees them all as it goes out (the agent
    /// answers everything it read before the sync, and the client discards it up to the sync's marker);
    /// closing frees everything.
    pub fn abandoned(&self) -> usize {
        self.requests.values().filter(|r| r.stage == Stage::Abandoned).count()
    }

    /// Why the session ended, once it has. Sticky.
    pub fn connection_error(&self) -> Option<&ConnectionError> {
        self.closed.as_ref()
    }

    /// Bytes of buffer the client holds for a server message split across reads (the framer's capacity): 0
    /// until one is, and at most 64 KiB ([`framer::KEEP_CAPACITY`](crate::framer::KEEP_CAPACITY)) between
    /// messages, whatever size the largest message had. For watching memory; there is nothing to tune.
    pub fn buffered_capacity(&self) -> usize {
        self.framer.as_ref().map_or(0, |f| f.capacity())
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- internals -----------------------------------------------------------------------------------------

    /// Once the events are drained: frees the queues and the request table if a burst left them big and they
    /// are empty now, so that an idle client is small whatever it went through.
    fn release_idle_memory(&mut self) {
        // One test for the common case, where none of them is big (this runs after every drain).
        let largest = (self.events.capacity().max(self.queue.capacity()))
            .max(self.by_order.capacity().max(self.requests.capacity()))
            .max(self.timers.capacity());
        if largest > KEEP_ENTRIES {
            self.release_big_buffers();
        }
    }

    /// [`release_idle_memory`](Self::release_idle_memory) when some buffer is big: out of line, so that the
    /// common case stays a few instructions in the caller.
    #[cold]
    #[inline(never)]
    fn release_big_buffers(&mut self) {
        if self.events.capacity() > KEEP_ENTRIES {
            self.events = VecDeque::new();
        }
        if self.queue.is_empty() && self.queue.capacity() > KEEP_ENTRIES {
            self.queue = VecDeque::new();
        }
        if self.by_order.is_empty() && self.by_order.capacity() > KEEP_ENTRIES {
            self.by_order = VecDeque::new();
        }
        if self.requests.is_empty() && self.requests.capacity() > KEEP_ENTRIES {
            self.requests = Slots::default();
        }
        self.timers.release_idle_memory(KEEP_ENTRIES);
    }

    fn check_open(&self) -> Result<(), UsageError> {
        match &self.closed {
            Some(cause) => Err(UsageError::Closed(cause.clone())),
            None if self.closing => Err(UsageError::Closing),
            None => Ok(()),
        }
    }

    /// After a graceful close: closes once no accepted command is left (abandoned ones are not waited for).
    fn finish_closing(&mut self) {
        if self.closing && self.phase != Phase::Closed && self.pending() == 0 {
            self.close_with(ConnectionError::Local);
        }
    }

    /// Applies [`Config::command_timeout`] to options without a deadline.
    fn default_deadline(&self, opts: ExecuteOptions) -> Result<ExecuteOptions, UsageError> {
        match (opts.from_now, opts.deadline, self.config.command_timeout) {
            (true, Some(now), Some(timeout)) => Ok(opts.deadline(now.checked_add(timeout).unwrap_or(now))),
            (true, _, None) => Ok(ExecuteOptions { deadline: None, from_now: false, ..opts }),
            (false, None, Some(_)) => Err(UsageError::NoClock),
            _ => Ok(opts),
        }
    }

    /// Room for one more request: pending and abandoned ones (still awaiting their reply) count, the
    /// client's own `qmp_capabilities` or connect-time sync does not.
    fn check_room(&self) -> Result<(), UsageError> {
        let own = usize::from(matches!(self.phase, Phase::Negotiating | Phase::Syncing));
        if self.requests.len() - own >= self.config.max_pending {
            return Err(UsageError::QueueFull { limit: self.config.max_pending });
        }
        Ok(())
    }

    /// A new request's id: the next serial, and the smallest free wire id.
    fn take_id(&mut self) -> RequestId {
        self.issued += 1;
        RequestId { serial: self.issued, wire: self.ids.take(), on_wire: true }
    }

    /// Removes a request and frees its wire id: only once no reply can carry that id any more (it was never
    /// written, its reply came, a resync passed it, or the session ended). The caller has disarmed its timer.
    fn forget(&mut self, key: u64) -> Option<Request> {
        let req = self.requests.remove(&key)?;
        self.ids.release(key);
        if req.stage == Stage::Queued && !req.oob {
            // Eagerly, so that a newer request taking this id is not sent in its place.
            if let Some(at) = self.queue.iter().position(|&q| q == key) {
                self.queue.remove(at);
            }
        }
        if self.fd_in_flight == Some(key) {
            self.fd_in_flight = None;
        }
        if self.alone_on_wire == Some(key) {
            self.alone_on_wire = None;
        }
        Some(req)
    }

    /// Records a new request whose command was just encoded at the end of `transmit`, from `staged_at`, and
    /// sends it if it may go now. The bytes stay where they are when it goes at once (no copy, no allocation:
    /// the common case); a command that has to wait takes them into a buffer of its own.
    fn add_request(
        &mut self,
        rid: RequestId,
        purpose: Purpose,
        opts: ExecuteOptions,
        expect_reply: bool,
        staged_at: usize,
        alone: bool,
    ) {
        let id = rid.wire;
        if let Some(at) = opts.deadline {
            self.timers.set(at, Timer::Command(id));
        }
        let (oob, deadline, pass_fd) = (opts.oob, opts.deadline, opts.pass_fd);
        let (stage, idless, wire) = (Stage::Queued, !rid.on_wire, Vec::new());
        let req = Request { rid, stage, purpose, oob, deadline, expect_reply, wire, pass_fd, idless, alone };
        self.requests.insert(id, req);
        // With nothing waiting ahead of it, `pump` sends this command first if it sends anything (an OOB command
        // goes at once): its bytes may stay in place. Behind waiting commands (which may go first), it waits.
        let ahead = !oob && !self.queue.is_empty();
        if !ahead {
            self.staged = Some((id, staged_at));
            let sync = matches!(purpose, Purpose::Sync(_));
            // What `pump` would do with a queue of this one command, without queueing it.
            if oob || (self.phase == Phase::Ready && self.may_send(sync, pass_fd)) {
                self.send(id);
            } else {
                self.queue.push_back(id);
            }
            if self.staged.take().is_none() {
                return; // sent
            }
        }
        let wire = self.transmit.split_off(staged_at);
        if let Some(req) = self.requests.get_mut(&id) {
            req.wire = wire;
        }
        if ahead {
            self.queue.push_back(id);
            self.pump();
        }
    }

    /// Moves queued in-band commands onto the wire while the flow-control rules allow.
    fn pump(&mut self) {
        if self.phase != Phase::Ready {
            return;
        }
        while let Some(&id) = self.queue.front() {
            let Some(req) = self.requests.get(&id).filter(|r| r.stage == Stage::Queued) else {
                self.queue.pop_front();
                continue;
            };
            let sync = matches!(req.purpose, Purpose::Sync(_));
            if !self.may_send(sync, req.pass_fd) {
                return;
            }
            self.queue.pop_front();
            self.send(id);
        }
    }

    /// Whether the flow-control rules let the next in-band command go now (the client being ready): a resync
    /// (`sync`) or a command passing a file descriptor (`pass_fd`) has rules of its own.
    fn may_send(&mut self, sync: bool, pass_fd: bool) -> bool {
        if sync && self.in_flight > 0 && self.resync.is_none() {
            self.forget_abandoned();
        }
        // One descriptor-passing command at a time: QEMU would hand the next descriptor to this one.
        if pass_fd && self.fd_in_flight.is_some() {
            return false;
        }
        // A resync runs alone: it waits for an empty pipe, and nothing follows it until it ends. So does a
        // long command among id-less ones (once written: the replies before it are matched by order).
        let alone = self.resync.is_some() || (sync && self.in_flight > 0) || self.alone_on_wire.is_some();
        !alone && self.in_flight < self.config.max_in_flight
    }

    /// Before a resync: when every in-band command on the wire was abandoned (cancelled or timed out), stops
    /// waiting for their replies. The agent writes them before it reads the sync's 0xFF, so they would be
    /// discarded anyway; and an agent that crashed or restarted never writes them, which would otherwise hold
    /// the sync (the very means to recover from that) back forever.
    fn forget_abandoned(&mut self) {
        if self.requests.values().any(|r| r.stage == Stage::InFlight && r.holds_slot()) {
            return;
        }
        self.release_abandoned();
        self.in_flight = 0;
    }

    /// Frees every abandoned request and its id. Only when a resync goes out: the agent answers what it read
    /// before the sync's 0xFF before it reads the 0xFF, and the client discards everything up to the agent's
    /// marker, so no reply after it carries one of these ids.
    fn release_abandoned(&mut self) {
        let abandoned: Vec<u64> =
            self.requests.iter().filter(|(_, r)| r.stage == Stage::Abandoned).map(|(id, _)| id).collect();
        for id in abandoned {
            self.forget(id);
        }
    }

    /// Writes one command.
    fn send(&mut self, id: u64) {
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        // Its bytes: already at the end of `transmit` when it was just staged there (see `add_request`).
        let at = match self.staged.take() {
            Some((staged, at)) if staged == id => at,
            other => {
                self.staged = other;
                let at = self.transmit.len();
                self.transmit.append(&mut req.wire);
                at
            }
        };
        if req.pass_fd {
            self.transmit_fds.push((at, req.rid));
            self.fd_in_flight = Some(id);
        }
        req.stage = Stage::InFlight;
        if req.holds_slot() {
            self.in_flight += 1;
        }
        if req.idless {
            self.by_order.push_back(id);
        }
        if req.alone {
            self.alone_on_wire = Some(id);
        }
        if let Purpose::Sync(_) = req.purpose {
            self.resync = Some(Resync { id, seen_delimiter: false });
            // Cancelled commands answered only on failure: their late error comes before the marker, if at all.
            self.release_abandoned();
        }
    }

    /// Negotiation is done (or not needed): commands may flow.
    fn become_ready(&mut self) {
        self.phase = Phase::Ready;
        if let Some(at) = self.handshake_deadline.take() {
            self.timers.cancel(at, Timer::Handshake);
        }
        self.events.push_back(ClientEvent::Ready { oob: self.oob_enabled });
        self.pump();
    }

    /// Records the handshake request just written (`qmp_capabilities` or the connect-time sync): in flight with
    /// its id, no deadline of its own (the handshake timeout covers it).
    fn start_handshake(&mut self, rid: RequestId, purpose: Purpose) {
        let req = Request {
            rid,
            stage: Stage::InFlight,
            purpose,
            oob: false,
            deadline: None,
            expect_reply: true,
            wire: Vec::new(),
            pass_fd: false,
            idless: false,
            alone: false,
        };
        self.requests.insert(rid.wire, req);
        self.in_flight += 1;
    }

    /// Answers the greeting with `qmp_capabilities`, enabling `oob` when configured and offered.
    fn negotiate(&mut self, greeting: &Greeting) {
        self.oob_requested = self.config.enable_oob && greeting.capabilities.iter().any(|c| c == "oob");
        let rid = self.take_id();
        let id = rid.wire;
        let args: Option<&[u8]> = if self.oob_requested { Some(br#"{"enable":["oob"]}"#) } else { None };
        encode_command(&mut self.transmit, "qmp_capabilities", args, id, false);
        self.start_handshake(rid, Purpose::Negotiation);
        self.phase = Phase::Negotiating;
    }

    /// Guest agent: writes the connect-time `guest-sync-delimited`; `Ready` waits for its reply.
    fn sync_on_connect(&mut self, nonce: u32) {
        let rid = self.take_id();
        let id = rid.wire;
        encode_sync(&mut self.transmit, nonce, id);
        self.start_handshake(rid, Purpose::ConnectSync(nonce));
        self.resync = Some(Resync { id, seen_delimiter: false });
        self.phase = Phase::Syncing;
    }

    fn on_frame(&mut self, frame: Frame, layout: Layout) {
        if self.phase == Phase::Closed {
            return;
        }
        let discarding = self.resync.is_some_and(|r| !r.seen_delimiter);
        match frame {
            Frame::Delimiter => {
                if let Some(r) = self.resync.as_mut() {
                    r.seen_delimiter = true;
                }
            }
            Frame::Message(bytes) if discarding => {
                // Only a command answered on failure makes a discarded message worth reading.
                if self.requests.values().any(Request::awaits_failure) {
                    self.on_discarded(classify_framed(bytes, layout));
                }
            }
            _ if discarding => {}
            Frame::Message(bytes) => {
                let msg = classify_framed(bytes, layout);
                if let Some(r) = self.resync.as_mut() {
                    // After a marker, anything but a reply to the sync is stale (an earlier client's delimited
                    // reply): discard it and wait for the next marker.
                    if !matches!(&msg, Message::Return { id: Some(id), .. } | Message::Error { id: Some(id), .. }
                        if wire_id(id) == Some(r.id))
                    {
                        r.seen_delimiter = false;
                        self.on_discarded(msg);
                        return;
                    }
                }
                self.on_message(msg)
            }
            Frame::Oversized { len, .. } if self.phase == Phase::AwaitGreeting => {
                self.close_with(ConnectionError::BadGreeting(format!("a message of {len} bytes, over the limit")));
            }
            Frame::Oversized { len, id } => {
                let limit = self.config.max_message_size;
                // A reply we can attribute ends its command now, rather than at its deadline: by its id, or, when
                // it has none and begins as a reply, by order.
                let key = match id {
                    Some(id) => Some(id).filter(|&k| self.requests.get(&k).is_some_and(|r| !r.idless)),
                    None if layout.begins_as_reply() => self.by_order.pop_front(),
                    None => None,
                };
                match key.and_then(|key| self.take_sent(key)) {
                    Some((_, req)) if req.purpose == Purpose::Negotiation => {
                        let why = format!("the qmp_capabilities reply of {len} bytes is over the {limit}-byte limit");
                        self.close_with(ConnectionError::BadGreeting(why));
                    }
                    Some((_, req)) if matches!(req.purpose, Purpose::ConnectSync(_)) => {
                        let why = format!("its reply of {len} bytes is over the {limit}-byte limit");
                        self.close_with(ConnectionError::SyncFailed(why));
                    }
                    Some((_, req)) if req.stage == Stage::InFlight => {
                        let error = RequestError::ReplyTooLarge { len, limit };
                        self.events.push_back(ClientEvent::Failed { id: req.rid, error });
                        self.pump();
                    }
                    Some(_) => self.pump(),
                    None => {
                        self.push_report(ClientEvent::ProtocolViolation(ProtocolViolation::Oversized { len, limit }))
                    }
                }
            }
            Frame::Truncated { len } => {
                self.push_report(ClientEvent::ProtocolViolation(ProtocolViolation::Truncated { len }));
            }
        }
    }

    fn on_message(&mut self, msg: Message) {
        if self.phase == Phase::AwaitGreeting && self.config.mode == Mode::Qmp {
            match msg {
                Message::Greeting(g) => {
                    self.negotiate(&g);
                    self.greeting = Some(g.clone());
                    self.events.push_back(ClientEvent::Greeting(g));
                }
                other => self.close_with(ConnectionError::BadGreeting(describe(&other))),
            }
            return;
        }
        match msg {
            Message::Greeting(_) => {
                self.push_report(ClientEvent::ProtocolViolation(ProtocolViolation::UnexpectedGreeting))
            }
            Message::Event(ev) => self.push_report(ClientEvent::Event(ev)),
            Message::Return { id, value } => self.on_reply(id, Ok(value)),
            Message::Error { id, error } => self.on_reply(id, Err(error)),
            Message::NotJson { bytes, reason } => {
                self.push_report(ClientEvent::ProtocolViolation(ProtocolViolation::NotJson { bytes, reason }))
            }
            Message::UnknownShape { bytes, id, reason } => {
                self.push_report(ClientEvent::ProtocolViolation(ProtocolViolation::UnknownShape { bytes, id, reason }))
            }
        }
    }

    /// A message a resync discards. The agent answered commands written before the sync's 0xFF first, so a
    /// reply to a command answered only on failure is still its answer: it ends it. Anything else is dropped.
    fn on_discarded(&mut self, msg: Message) {
        let (id, result) = match msg {
            Message::Return { id: Some(id), value } => (id, Ok(value)),
            Message::Error { id: Some(id), error } => (id, Err(error)),
            _ => return,
        };
        if wire_id(&id).and_then(|k| self.requests.get(&k)).is_some_and(Request::awaits_failure) {
            self.on_reply(Some(id), result);
        }
    }

    /// Routes a reply to its request: by id, or without one to the oldest command sent without one.
    fn on_reply(&mut self, id: Option<RawJson>, result: Result<RawJson, QmpError>) {
        let Some(raw_id) = id else {
            if let Some(key) = self.by_order.pop_front() {
                self.answer(key, result);
                return;
            }
            let violation = match result {
                Ok(value) => ProtocolViolation::IdlessReply { value },
                Err(e) => ProtocolViolation::IdlessError(e),
            };
            self.push_report(ClientEvent::ProtocolViolation(violation));
            return;
        };
        let key = wire_id(&raw_id);
        let Some((key, req)) = key.and_then(|k| self.requests.get(&k).map(|r| (k, r))) else {
            self.push_report(ClientEvent::ProtocolViolation(ProtocolViolation::UnknownId { id: raw_id }));
            return;
        };
        // Not sent yet, or sent without this id: the id is not one we sent.
        if req.stage == Stage::Queued || req.idless {
            self.push_report(ClientEvent::ProtocolViolation(ProtocolViolation::UnknownId { id: raw_id }));
            return;
        }
        self.answer(key, result);
    }

    /// Ends the request on the wire that a reply answers.
    fn answer(&mut self, key: u64, result: Result<RawJson, QmpError>) {
        let Some(req) = self.requests.get(&key) else {
            return;
        };
        if let (Some(nonce), Stage::InFlight, Ok(value)) = (req.purpose.sync_nonce(), req.stage, &result) {
            if value.raw_str().trim().parse::<u64>().ok() != Some(u64::from(nonce)) {
                // A stale delimited reply (an earlier client's sync): wait for the next marker.
                self.resync = Some(Resync { id: key, seen_delimiter: false });
                return;
            }
        }
        let Some((_, req)) = self.take_sent(key) else {
            return;
        };
        match (req.stage, req.purpose) {
            (Stage::Abandoned, _) => {}
            (_, Purpose::Negotiation) => match result {
                Ok(_) => {
                    self.oob_enabled = self.oob_requested;
                    self.become_ready();
                    return;
                }
                Err(e) => {
                    self.close_with(ConnectionError::NegotiationFailed(e));
                    return;
                }
            },
            (_, Purpose::ConnectSync(_)) => {
                match result {
                    Ok(_) => self.become_ready(),
                    Err(e) => self.close_with(ConnectionError::SyncFailed(e.to_string())),
                }
                return;
            }
            (_, Purpose::User | Purpose::Sync(_)) => {
                self.events.push_back(ClientEvent::Reply { id: req.rid, result });
            }
        }
        self.pump();
    }

    /// Removes a request that is on the wire (answered now), freeing its slot, timer and resync state.
    fn take_sent(&mut self, key: u64) -> Option<(u64, Request)> {
        if self.requests.get(&key)?.stage == Stage::Queued {
            // Not sent, so not answered: a bogus id (rare).
            return None;
        }
        let req = self.forget(key)?;
        if req.holds_slot() {
            self.in_flight -= 1;
        }
        if let Some(at) = req.deadline {
            self.timers.cancel(at, Timer::Command(key));
        }
        if self.resync.map(|r| r.id) == Some(key) {
            self.resync = None;
        }
        Some((key, req))
    }

    /// A command's deadline passed.
    fn expire(&mut self, id: u64) {
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        req.deadline = None;
        match req.stage {
            Stage::Abandoned => return,
            // For a command answered only on failure, the deadline is the grace period: no error by then
            // means it succeeded.
            // means it succeeded. A late error may still come: the id stays reserved (abandoned) until then.
            Stage::InFlight if !req.expect_reply => {
                req.stage = Stage::Abandoned;
                let rid = req.rid;
                if self.fd_in_flight == Some(id) {
                    self.fd_in_flight = None;
                }
                self.events.push_back(ClientEvent::Reply { id: rid, result: Ok(empty_object()) });
                self.pump(); // a descriptor-passing command may have waited for it
                return;
            }
            Stage::Queued => {
                let rid = req.rid;
                self.forget(id);
                self.events.push_back(ClientEvent::TimedOut { id: rid });
                self.pump();
                return;
            }
            Stage::InFlight => {
                req.stage = Stage::Abandoned;
                if self.resync.map(|r| r.id) == Some(id) {
                    self.resync = None;
                }
            }
        }
        let rid = req.rid;
        self.events.push_back(ClientEvent::TimedOut { id: rid });
        self.pump();
    }

    /// Queues a server event or a violation report, or counts it as dropped when too many are waiting.
    fn push_report(&mut self, ev: ClientEvent) {
        if self.queued_server_events < self.config.max_queued_events {
            self.queued_server_events += 1;
            self.events.push_back(ev);
            return;
        }
        match self.events.back_mut() {
            Some(ClientEvent::EventsDropped { count }) => *count += 1,
            _ => self.events.push_back(ClientEvent::EventsDropped { count: 1 }),
        }
    }

    /// Ends the session. Sticky: the first cause wins. Every request still pending ends with it.
    fn close_with(&mut self, cause: ConnectionError) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        if matches!(cause, ConnectionError::Eof | ConnectionError::EofMidMessage { .. } | ConnectionError::Transport(_))
        {
            // The agent went away (it powers off or suspends) without reporting a failure: success.
            let mut succeeded: Vec<RequestId> =
                self.requests.values().filter(|r| r.awaits_failure()).map(|r| r.rid).collect();
            succeeded.sort_unstable();
            for id in succeeded {
                self.events.push_back(ClientEvent::Reply { id, result: Ok(empty_object()) });
            }
        }
        self.requests.clear();
        self.ids.clear();
        self.fd_in_flight = None;
        self.queue.clear();
        self.by_order.clear();
        self.alone_on_wire = None;
        self.timers.clear();
        self.in_flight = 0;
        self.resync = None;
        self.transmit.clear();
        self.transmit_fds.clear();
        self.handshake_deadline = None;
        self.closed = Some(cause.clone());
        self.events.push_back(ClientEvent::Closed(cause));
    }
}

/// Appends a 0xFF byte (which resets the agent's parser) and `guest-sync-delimited` with `nonce`.
fn encode_sync(out: &mut Vec<u8>, nonce: u32, id: u64) {
    out.push(0xFF);
    let args = format!("{{\"id\":{nonce}}}");
    encode_command(out, "guest-sync-delimited", Some(args.as_bytes()), id, false);
}

/// The id of a reply, when it is one this client could have sent (a plain integer).
fn wire_id(id: &RawJson) -> Option<u64> {
    // `str::parse` without its UTF-8 check and sign handling: a JSON number has no `+`.
    let digits = id.as_bytes();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| match d {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(d - b'0')),
        _ => None,
    })
}

/// A short description of an unexpected first message.
fn describe(msg: &Message) -> String {
    match msg {
        Message::Greeting(_) => "a greeting".into(),
        Message::Return { value, .. } => format!("a reply ({value:?})"),
        Message::Error { error, .. } => format!("an error ({error})"),
        Message::Event(e) => format!("an event ({})", e.name),
        Message::NotJson { reason, .. } | Message::UnknownShape { reason, .. } => reason.clone(),
    }
}

fn empty_object() -> RawJson {
    RawJson::from_valid(Bytes::from_static(b"{}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The id of a reply reads as `str::parse` reads it, for every text a JSON id can be (no leading `+`).
        #[test]
        fn wire_id_reads_as_parse(text in "[0-9]{0,22}|0{18,22}[0-9]{1,3}|-?[0-9]{1,3}|[0-9a-z\".+ ]{0,6}") {
            let expected = if text.starts_with('+') { None } else { text.parse::<u64>().ok() };
            proptest::prop_assert_eq!(wire_id(&RawJson::from_valid(Bytes::from(text.clone()))), expected);
        }
    }

    #[test]
    fn wire_id_edges() {
        let id = |s: &'static str| wire_id(&RawJson::from_valid(Bytes::from_static(s.as_bytes())));
        assert_eq!(id("18446744073709551615"), Some(u64::MAX));
        assert_eq!(id("18446744073709551616"), None);
        assert_eq!(id("00000000000000000000001"), Some(1));
        assert_eq!((id("0"), id(""), id("1.0"), id("\"1\"")), (Some(0), None, None, None));
    }
}
