//! The server role: a sans-IO QMP or guest-agent server that reads and answers like QEMU.
//!
//! [`Server`] is driven like [`Client`](crate::Client): feed it the bytes a client sent, take back events
//! (commands to answer) and the bytes to write. It handles the protocol itself, the way qemu-storage-daemon 10
//! does, byte for byte:
//!
//! - the greeting (version and capabilities configurable) and `qmp_capabilities` negotiation (with
//!   `enable: ["oob"]`); `CommandNotFound` for anything else before it, and for a second one after it;
//! - QEMU's JSON reader: its parse errors (`JSON parse error, invalid keyword 'garbage'`, `stray '\u0001'`,
//!   `duplicate key`, ...), its recovery (a control character or 0xFF resets the parser), its limits
//!   (nesting 1024, 2,097,152 tokens, 64 MiB), all id-less as QEMU sends them;
//! - malformed command objects (`QMP input lacks member 'execute'`, `... must be a string`, `... is
//!   unexpected`, `arguments` not an object), with the id echoed;
//! - ids of any JSON type echoed as QEMU re-writes them (`1e3` as `1000`, non-ASCII as `\uXXXX`);
//! - ordering: in-band commands are handed over one at a time and answered in order; without OOB nothing more
//!   is read while one is being processed, with OOB up to 8 wait, then reading stops
//!   ([`Server::wants_input`]); `exec-oob` commands are handed over at once and may be answered first;
//! - guest-agent mode: no greeting, LF line endings, `guest-sync` and `guest-sync-delimited` (0xFF before the
//!   reply) answered by the server, commands that reply only when they fail.
//!
//! What it leaves to you: every other command, through [`Event::Command`] and [`Server::reply`], and events
//! through [`Server::event`] (with your timestamp: the server never reads a clock). A command's arguments come
//! as JSON text ([`Arguments`]): the server checks them as QEMU's parser does but builds no value from them,
//! so reading a command costs about what routing a reply costs the [`Client`](crate::Client); you parse them
//! into your own type, or pass them on as they are.
//!
//! # The driving contract
//! After every input ([`Server::handle_input`], [`Server::handle_eof`], [`Server::handle_timeout`]) and every
//! call ([`Server::reply`], [`Server::event`], [`Server::close`]):
//! 1. drain [`Server::poll_event`] until it returns `None`, answering commands (now or later);
//! 2. call [`Server::poll_transmit`] and write everything it gave you;
//! 3. read more input only while [`Server::wants_input`] is true (QEMU stops reading its socket meanwhile).
//!
//! The server keeps no deadlines: [`Server::poll_timeout`] is always `None` and [`Server::handle_timeout`] does
//! nothing; they exist so that one loop drives both roles.
//!
//! # Example: our client against our server, in memory
//! ```
//! use std::time::Instant;
//! use qmp_proto::{Client, ClientEvent, Config, ExecuteOptions};
//! use qmp_proto::server::{Event, Server, ServerConfig};
//!
//! let now = Instant::now();
//! let mut server = Server::new(ServerConfig::qmp().version(10, 0, 2, "demo"));
//! let mut client = Client::new(Config::qmp(), now);
//! let (mut to_client, mut to_server) = (Vec::new(), Vec::new());
//! let mut status = None;
//! for _ in 0..10 {
//!     server.poll_transmit(&mut to_client);
//!     client.handle_input(&std::mem::take(&mut to_client));
//!     while let Some(event) = client.poll_event() {
//!         match event {
//!             ClientEvent::Ready { .. } => {
//!                 client.execute("query-status", None::<&()>, ExecuteOptions::new())?;
//!             }
//!             ClientEvent::Reply { result, .. } => status = Some(result?.as_value()?),
//!             _ => {}
//!         }
//!     }
//!     client.poll_transmit(&mut to_server);
//!     server.handle_input(&std::mem::take(&mut to_server));
//!     while let Some(event) = server.poll_event() {
//!         if let Event::Command(cmd) = event {
//!             assert_eq!(cmd.name(), "query-status");
//!             server.reply(cmd.token, Ok(serde_json::json!({"status": "running", "running": true})))?;
//!         }
//!     }
//! }
//! assert_eq!(status.unwrap()["status"], "running");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod arguments;
mod builtin;
mod config;
mod event;
mod fast;
mod lexer;
mod parser;
mod pending;
mod plain;
mod qobject;
mod request;
mod response;
mod short;

use std::collections::VecDeque;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use serde_json::Value;

pub use arguments::Arguments;
pub use config::{CommandInfo, ServerConfig, DEFAULT_SERVER_MAX_MESSAGE_SIZE, QMP_REQ_QUEUE_LEN_MAX};
pub use event::EncodedEvent;

use crate::config::Mode;
use crate::message::Timestamp;
use crate::raw::RawJson;
use fast::Miss;
use lexer::{Lexed, Lexer};
use parser::parse;
use pending::{Pending, PendingTable};
use plain::read_plain;
use qobject::{QDict, QObject};
use request::{read_request, KeyRef, Parts, ReadCommand, Request};
use response::{Body, Id};
use short::ShortBytes;

/// Identifies a command handed to the caller, to [`Server::reply`] to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(u64);

/// A command for the caller to answer with [`Server::reply`].
///
/// Reading one costs no allocation: its name and id are short texts kept in it, and its [`Arguments`] share
/// the server's input buffer (the bytes of that read stay allocated while any command from it lives: copy the
/// arguments, `Bytes::copy_from_slice(cmd.arguments.raw().as_bytes())`, to keep them long without that).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Command {
    /// Pass it to [`Server::reply`].
    pub token: Token,
    /// The `arguments` object as JSON text (`{}` when there were none): what the client wrote, unless QEMU
    /// reads it differently from standard JSON (single quotes, `-0`, `1e400` read as `null`: see
    /// [`Arguments`]). Parse it into your type with [`Arguments::deserialize`], or read it as a map.
    pub arguments: Arguments,
    /// True for `exec-oob`: it may be answered before in-band commands handed over earlier.
    pub oob: bool,
    /// Valid UTF-8.
    name: ShortBytes,
    /// The id's tokens as the client wrote them, without whitespace between them.
    id: Option<ShortBytes>,
}

impl Command {
    /// The command name (`execute` or `exec-oob`; what is not UTF-8 in it reads as U+FFFD).
    pub fn name(&self) -> &str {
        // The server keeps only valid UTF-8 here.
        std::str::from_utf8(self.name.as_bytes()).unwrap_or_default()
    }

    /// The command's id as JSON, built on each call (the reply echoes the original exactly, whatever this
    /// gives; `1e400` reads as `null` here), or `None` without one.
    pub fn id(&self) -> Option<Value> {
        self.id.as_ref().map(|text| request::id_value(text.as_bytes()))
    }

    /// The id's text, for logging: its tokens as the client wrote them (QEMU's extensions included: `'single
    /// quotes'`), without the whitespace between them (so the same however the input arrived).
    pub fn id_text(&self) -> Option<&[u8]> {
        self.id.as_ref().map(ShortBytes::as_bytes)
    }
}

/// Why the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client hung up.
    Eof,
    /// More than [`ServerConfig::max_held_input`] bytes were fed while the server did not want input.
    InputOverflow,
    /// [`Server::close`] was called.
    Local,
}

/// What the server tells its caller.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A command to answer.
    Command(Command),
    /// `qmp_capabilities` succeeded; events may now be sent.
    Negotiated {
        /// Out-of-band execution was enabled.
        oob: bool,
    },
    /// The session ended; nothing more will be read. Output queued before it may still be transmitted.
    Closed(CloseReason),
}

/// A failed command, as the caller reports it in [`Server::reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The error class (`GenericError`, `CommandNotFound`, `DeviceNotFound`, ...).
    pub class: String,
    /// The description.
    pub desc: String,
}

impl Failure {
    /// A failure of any class.
    pub fn new(class: impl Into<String>, desc: impl Into<String>) -> Self {
        Failure { class: class.into(), desc: desc.into() }
    }

    /// A `GenericError`, the class of most QEMU errors.
    pub fn generic(desc: impl Into<String>) -> Self {
        Failure::new("GenericError", desc)
    }

    /// QEMU's answer to an unknown command: `CommandNotFound`, "The command NAME has not been found".
    pub fn command_not_found(name: &str) -> Self {
        Failure::new("CommandNotFound", format!("The command {name} has not been found"))
    }
}

/// What became of an event passed to [`Server::event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventOutcome {
    /// Queued for transmission.
    Sent,
    /// Not sent: QEMU sends events only once `qmp_capabilities` has succeeded.
    NotNegotiated,
    /// Not sent: the guest agent protocol has no events.
    GuestAgent,
    /// Not sent: the session is closed.
    Closed,
    /// Not sent: more than [`ServerConfig::max_queued_output`] bytes wait to be transmitted. Counted in
    /// [`Server::dropped_events`].
    Dropped,
}

/// The caller misused the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerUsageError {
    /// The token does not belong to a command waiting for its reply (answered already, or from another session).
    #[error("no command is waiting for a reply with this token")]
    UnknownToken,
    /// JSON text passed to [`Server::reply_json`] or [`Server::event_json`] is not one JSON value.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
}

/// Input buffer capacity freed once the buffer is empty, rather than kept for the session's life.
const KEEP_CAPACITY: usize = 64 * 1024;

/// No id: QEMU's parse errors are id-less.
const NO_ID: Option<&[u8]> = None;

/// One message read: a request, or the description of QEMU's id-less parse error.
type Read = Result<Request, Vec<u8>>;

/// Parses one JSON value from text with QEMU's parser.
fn parse_text(text: &str) -> Result<QObject, ServerUsageError> {
    parse_bytes(text.as_bytes())
}

/// Parses one JSON value from bytes (QEMU's strings may hold bytes that are not UTF-8) with QEMU's parser.
fn parse_bytes(text: &[u8]) -> Result<QObject, ServerUsageError> {
    let mut lexer = Lexer::new(usize::MAX);
    let mut values = Vec::new();
    // The trailing space ends a bare number or keyword.
    for &b in text.iter().chain(b" ") {
        lexer.feed(b, &mut |lexed| {
            values.push(match lexed {
                Lexed::Message { tokens, text } => parse(tokens, text),
                Lexed::Error(desc) => Err(desc),
            })
        });
    }
    let invalid = |e: String| ServerUsageError::InvalidJson(e);
    match values.pop() {
        Some(Ok(value)) if values.is_empty() => Ok(value),
        Some(Err(e)) => Err(invalid(String::from_utf8_lossy(&e).into_owned())),
        _ => Err(invalid(format!("expected one value: {}", String::from_utf8_lossy(&text[..text.len().min(40)])))),
    }
}

/// A reply, however the caller gave it.
enum Answer<'a> {
    /// A value to write as QEMU would.
    Return(QObject),
    /// A `return` value passed on, on one line.
    ReturnVerbatim(&'a [u8]),
    /// `{}`.
    ReturnEmpty,
    /// A failure to write as QEMU writes its errors.
    Failed(Failure),
    /// An `error` object passed on, re-written on one line.
    Error(QObject),
    /// An `error` object passed on, on one line.
    ErrorVerbatim(&'a [u8]),
}

/// A sans-IO QMP / guest-agent server. See the [module docs](self).
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    lexer: Lexer,
    /// Input fed and not read yet: kept while the server does not want it (as QEMU stops reading a busy
    /// monitor), and read from here. Commands' arguments are slices of it (no copy).
    input: BytesMut,
    /// `input` is the start of a message the last read cut, kept for the next read to complete (the server
    /// wants input meanwhile).
    waiting: bool,
    /// Bytes the last call of `handle_input` brought.
    last_read: usize,
    /// In-band requests read and not yet handed over or answered.
    queue: VecDeque<Read>,
    /// The requests the lexer completed with the byte being read (kept to reuse its allocation).
    parsed: Vec<Read>,
    /// The reader's scratch space for the keys of the objects being read (kept to reuse its allocation).
    keys: Vec<KeyRef>,
    /// The in-band command handed to the caller, if any.
    current: Option<Token>,
    pending: PendingTable,
    /// Out-of-band commands handed over and not answered.
    oob_outstanding: usize,
    next_token: u64,
    negotiated: bool,
    oob_enabled: bool,
    events: VecDeque<Event>,
    out: Vec<u8>,
    closed: bool,
    dropped_events: u64,
}

impl Server {
    /// A server for one client connection. In QMP mode the greeting is ready to transmit at once.
    pub fn new(config: ServerConfig) -> Self {
        let mut server = Server {
            lexer: Lexer::new(config.max_message_size),
            config,
            input: BytesMut::new(),
            waiting: false,
            last_read: 0,
            queue: VecDeque::new(),
            parsed: Vec::new(),
            keys: Vec::new(),
            current: None,
            pending: PendingTable::default(),
            oob_outstanding: 0,
            next_token: 0,
            negotiated: false,
            oob_enabled: false,
            events: VecDeque::new(),
            out: Vec::new(),
            closed: false,
            dropped_events: 0,
        };
        if server.config.mode == Mode::Qmp {
            server.write_greeting();
        }
        server
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// True once `qmp_capabilities` succeeded (always true in guest-agent mode, which has no negotiation).
    pub fn is_negotiated(&self) -> bool {
        self.negotiated || self.config.mode == Mode::GuestAgent
    }

    /// True when OOB was enabled by the client.
    pub fn oob_enabled(&self) -> bool {
        self.oob_enabled
    }

    /// True once the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Events dropped because output was not transmitted fast enough.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Bytes waiting in [`poll_transmit`](Self::poll_transmit).
    pub fn queued_output(&self) -> usize {
        self.out.len()
    }

    /// True when the server wants more input: not closed, not stopped the way QEMU suspends its monitor
    /// (without OOB while a command is being processed; with OOB while [`ServerConfig::max_queued_commands`]
    /// in-band commands wait or that many out-of-band commands are unanswered), and no input kept but the
    /// start of a message the last read cut (which the next completes).
    pub fn wants_input(&self) -> bool {
        (self.input.is_empty() || self.waiting) && self.reads()
    }

    /// True while the server reads: not closed, and not stopped as QEMU stops a busy monitor. Checked between
    /// requests (only a request read can stop it), not per byte.
    fn reads(&self) -> bool {
        !self.closed && !self.suspended()
    }

    fn suspended(&self) -> bool {
        let max = self.config.max_queued_commands;
        if self.oob_outstanding >= max {
            return true;
        }
        if self.oob_enabled {
            self.queue.len() >= max
        } else {
            !self.queue.is_empty() || self.current.is_some()
        }
    }

    /// Feeds bytes the client sent. What the server cannot read yet (it stopped, as QEMU stops reading a busy
    /// monitor) is kept and read when it can; input fed while [`wants_input`](Self::wants_input) was already
    /// false may bring the kept bytes to at most [`ServerConfig::max_held_input`], beyond which the session
    /// closes ([`CloseReason::InputOverflow`]).
    pub fn handle_input(&mut self, input: &[u8]) {
        if self.closed {
            return;
        }
        // What one call brings is kept whole (the caller's read buffer bounds it); input fed while the server
        // already did not want any is what the limit is for.
        let wanted = self.wants_input();
        self.waiting = false;
        self.last_read = input.len();
        // With nothing kept, the bytes of a message under way go to the lexer straight from the caller's slice:
        // one byte per call then costs no trip through the buffer. A message's first bytes still go through it,
        // for the fast path to take the message whole, without a copy of its arguments.
        let direct = if wanted { self.lex_directly(input) } else { 0 };
        if direct < input.len() {
            self.input.extend_from_slice(&input[direct..]);
            self.read_input();
        }
        if !wanted && self.input.len() > self.config.max_held_input {
            self.close_with(CloseReason::InputOverflow);
        }
    }

    /// Feeds the lexer from `input` while a message is under way and the server reads; returns the bytes used.
    fn lex_directly(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        while used < input.len() && !self.lexer.at_message_start() && self.reads() {
            used += Self::lex(&mut self.lexer, &input[used..], &mut self.parsed, &mut self.keys);
            self.dispatch_parsed();
        }
        used
    }

    /// Reads kept input until the server stops wanting input or none is left. A command read whole from the
    /// buffer takes its arguments' bytes out of it without a copy.
    fn read_input(&mut self) {
        let max = self.config.max_message_size;
        while !self.input.is_empty() && self.reads() {
            // One byte is no message the fast path reads whole, nor one worth keeping: fed one byte per call, the
            // server gives each message's first byte to the lexer at once.
            if self.lexer.at_message_start() && self.input.len() > 1 {
                // A plain command whose turn it is goes straight to dispatch (in-band: it has `execute`).
                let turn = self.queue.is_empty() && self.current.is_none();
                let miss = match turn.then(|| read_plain(&self.input, max)) {
                    Some(Ok((n, plain))) => {
                        let arguments = self.take_message(n, plain.arguments.clone());
                        let command = plain.with_arguments(arguments.map(Arguments::from_verbatim));
                        self.current = self.dispatch_command(command, false);
                        continue;
                    }
                    Some(Err(miss)) => miss,
                    None => Miss::Other,
                };
                // What the plain reader reads, the general one does too: it would reach the end as well.
                let read = if miss == Miss::Incomplete { Err(miss) } else { fast::read_command(&self.input, max) };
                match read {
                    Ok((n, members)) => {
                        let (mut object, verbatim) = members.into_command(&self.input[..n]);
                        if let Some(arguments) = self.take_message(n, verbatim) {
                            object.set_arguments(arguments);
                        }
                        self.on_request(Ok(Request::Object(object)));
                        continue;
                    }
                    Err(Miss::Incomplete) if self.input.len() < self.last_read.min(max).min(KEEP_CAPACITY) => {
                        // The last read ended within a message that followed other bytes: its start waits for
                        // the next read, and the fast path reads it whole then, rather than the lexer byte by
                        // byte (no error is missed: the lexer would find none in these bytes). Once only: when
                        // the next read does not complete it either, it is not shorter than that read.
                        self.waiting = true;
                        break;
                    }
                    Err(_) => {}
                }
            }
            let used = Self::lex(&mut self.lexer, &self.input, &mut self.parsed, &mut self.keys);
            self.input.advance(used);
            self.dispatch_parsed();
        }
        if self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
            // A burst's buffer is not kept for the session's life.
            self.input = BytesMut::new();
        }
    }

    /// Takes a message of `n` bytes the fast path read out of the input, and returns its `arguments`' text
    /// (at `arguments` in the message, if the caller wants it), shared with the input buffer, not copied.
    fn take_message(&mut self, n: usize, arguments: Option<Range<usize>>) -> Option<Bytes> {
        let Some(at) = arguments else {
            self.input.advance(n);
            return None;
        };
        self.input.advance(at.start);
        let text = self.input.split_to(at.len()).freeze();
        self.input.advance(n - at.end);
        Some(text)
    }

    /// Feeds `bytes` to the lexer until they complete a message or an error, kept in `parsed` (read with QEMU's
    /// parser; `keys` is its scratch space); returns the bytes used. (Fields, not `self`: the bytes may be the
    /// server's own input buffer.)
    fn lex(lexer: &mut Lexer, bytes: &[u8], parsed: &mut Vec<Read>, keys: &mut Vec<KeyRef>) -> usize {
        lexer.feed_until_message(bytes, &mut |lexed| {
            parsed.push(match lexed {
                Lexed::Message { tokens, text } => read_request(tokens, text, keys),
                Lexed::Error(desc) => Err(desc),
            })
        })
    }

    /// Dispatches the requests [`lex`](Self::lex) completed, in order.
    fn dispatch_parsed(&mut self) {
        if self.parsed.is_empty() {
            return;
        }
        // The lexer hands over at most two requests at a time: a buffer kept across calls, not one per call.
        let mut parsed = std::mem::take(&mut self.parsed);
        for request in parsed.drain(..) {
            self.on_request(request);
        }
        self.parsed = parsed;
    }

    /// The client hung up. Commands not answered yet are forgotten, as QEMU forgets them.
    pub fn handle_eof(&mut self) {
        self.close_with(CloseReason::Eof);
    }

    /// Ends the session from this side (after `quit`, say): nothing more is read; output already queued,
    /// replies included, can still be transmitted.
    pub fn close(&mut self) {
        self.close_with(CloseReason::Local);
    }

    fn close_with(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.input = BytesMut::new();
        self.waiting = false;
        self.queue.clear();
        self.pending.clear();
        self.current = None;
        self.oob_outstanding = 0;
        self.events.push_back(Event::Closed(reason));
    }

    /// Does nothing: the server keeps no deadlines. Here so one loop can drive both roles.
    pub fn handle_timeout(&mut self, _now: std::time::Instant) {}

    /// Always `None`: the server keeps no deadlines.
    pub fn poll_timeout(&self) -> Option<std::time::Instant> {
        None
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Appends everything waiting to be written to `out`; returns the number of bytes appended.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.out.len();
        if out.is_empty() {
            std::mem::swap(out, &mut self.out);
        } else {
            out.append(&mut self.out);
        }
        n
    }

    /// Answers a command handed over in [`Event::Command`]. The reply echoes the command's id; a command that
    /// replies only on failure writes nothing on success. Answering the in-band command in progress lets the
    /// server read on (drain events afterwards: a waiting command may be handed over).
    ///
    /// Object members are inserted in the map's iteration order (alphabetical with serde_json's default
    /// map); see [`reply_json`](Self::reply_json) to write them in QEMU's exact order.
    pub fn reply(&mut self, token: Token, result: Result<Value, Failure>) -> Result<(), ServerUsageError> {
        match result {
            // The most common reply: written at once.
            Ok(Value::Object(map)) if map.is_empty() => self.answer(token, Answer::ReturnEmpty),
            Ok(value) => self.answer(token, Answer::Return(QObject::from_json(&value))),
            Err(failure) => self.answer(token, Answer::Failed(failure)),
        }
    }

    /// Answers a command with a return value given as JSON text (QEMU's extensions accepted: single quotes).
    /// Object members are inserted in the order written, as QEMU's generated code inserts them in schema
    /// order, so `{"major": 10, "minor": 0, "micro": 2}` comes out as QEMU writes a version. Invalid text is
    /// refused ([`ServerUsageError::InvalidJson`]) and the command stays unanswered.
    pub fn reply_json(&mut self, token: Token, result: Result<&str, Failure>) -> Result<(), ServerUsageError> {
        if !self.pending.contains(token) {
            return Err(ServerUsageError::UnknownToken);
        }
        match result {
            Ok(text) => self.answer(token, Answer::Return(parse_text(text)?)),
            Err(failure) => self.answer(token, Answer::Failed(failure)),
        }
    }

    /// Answers a command with a reply another server wrote, passed on **byte for byte**: `Ok` is the `return`
    /// value, `Err` the whole `error` object (with any member beyond `class` and `desc`), as that server wrote
    /// them (a [`Client`](crate::Client)'s [`Reply`](crate::ClientEvent::Reply) or
    /// [`QmpError::raw`](crate::QmpError::raw)); only the id is this session's. This is how a proxy answers:
    /// the client reads QEMU's member order, spacing and numbers, not a re-encoding of them.
    ///
    /// The reply is written `{"return": VALUE, "id": ID}` or `{"id": ID, "error": ERROR}`, as QEMU writes its
    /// own. One exception keeps one message per line: a value spread over several lines (from a `pretty=on`
    /// monitor) is re-written on one line, as [`reply_json`](Self::reply_json) would; text that does not parse
    /// then is refused ([`ServerUsageError::InvalidJson`]) and the command stays unanswered.
    ///
    /// ```
    /// use qmp_proto::server::{Event, Server, ServerConfig};
    /// use qmp_proto::RawJson;
    ///
    /// let mut server = Server::new(ServerConfig::qmp());
    /// server.handle_input(br#"{"execute":"qmp_capabilities"}{"execute":"query-x","id":[7]}"#);
    /// let mut out = Vec::new();
    /// server.poll_transmit(&mut out);
    /// let Some(Event::Negotiated { .. }) = server.poll_event() else { panic!() };
    /// let Some(Event::Command(cmd)) = server.poll_event() else { panic!() };
    /// let qemu_wrote = RawJson::from_json(r#"{"z":1,"a":{"y":2,"b":3}}"#)?;
    /// server.reply_raw(cmd.token, Ok(&qemu_wrote))?;
    /// out.clear();
    /// server.poll_transmit(&mut out);
    /// assert_eq!(out, b"{\"return\": {\"z\":1,\"a\":{\"y\":2,\"b\":3}}, \"id\": [7]}\r\n");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reply_raw(&mut self, token: Token, result: Result<&RawJson, &RawJson>) -> Result<(), ServerUsageError> {
        if !self.pending.contains(token) {
            return Err(ServerUsageError::UnknownToken);
        }
        let (raw, failed) = match result {
            Ok(raw) => (raw, false),
            Err(raw) => (raw, true),
        };
        let bytes = raw.as_bytes();
        let answer = match (memchr::memchr2(b'\n', b'\r', bytes).is_some(), failed) {
            (false, false) => Answer::ReturnVerbatim(bytes),
            (false, true) => Answer::ErrorVerbatim(bytes),
            (true, false) => Answer::Return(parse_text(raw.raw_str())?),
            (true, true) => Answer::Error(parse_text(raw.raw_str())?),
        };
        self.answer(token, answer)
    }

    fn answer(&mut self, token: Token, answer: Answer<'_>) -> Result<(), ServerUsageError> {
        let pending = self.pending.remove(token).ok_or(ServerUsageError::UnknownToken)?;
        if pending.oob {
            self.oob_outstanding -= 1;
        }
        let id = pending.id.as_ref();
        match answer {
            Answer::Return(_) | Answer::ReturnVerbatim(_) | Answer::ReturnEmpty if pending.silent_on_success => {}
            Answer::ReturnEmpty => self.write_return(Body::EmptyObject, id, false),
            Answer::Return(value) => self.write_return(Body::Value(&value), id, false),
            Answer::ReturnVerbatim(bytes) => self.write_return(Body::Verbatim(bytes), id, false),
            Answer::Failed(failure) => self.write_error(&failure.class, failure.desc.as_bytes(), id),
            Answer::Error(error) => self.write_error_object(Body::Value(&error), id),
            Answer::ErrorVerbatim(bytes) => self.write_error_object(Body::Verbatim(bytes), id),
        }
        if self.current == Some(token) {
            self.current = None;
            self.pump();
        }
        self.read_input();
        Ok(())
    }

    /// Sends an event to the client, with the caller's timestamp. Dropped, as QEMU drops them, before
    /// negotiation; dropped and counted when output is not being transmitted.
    ///
    /// Object members are inserted in the map's iteration order (alphabetical with serde_json's default
    /// map): where two keys share a bucket of QEMU's hash table, that order decides which is written first.
    /// Use [`event_json`](Self::event_json) to control it.
    pub fn event(&mut self, name: &str, data: Option<&Value>, timestamp: Timestamp) -> EventOutcome {
        self.event_object(name, data.map(QObject::from_json), timestamp)
    }

    fn event_object(&mut self, name: &str, data: Option<QObject>, timestamp: Timestamp) -> EventOutcome {
        if let Some(refused) = self.event_refused() {
            return refused;
        }
        self.write_message(&event::event_object(name, data, timestamp));
        EventOutcome::Sent
    }

    /// Why an event cannot be sent now, if it cannot (a dropped one is counted).
    fn event_refused(&mut self) -> Option<EventOutcome> {
        if self.closed {
            return Some(EventOutcome::Closed);
        }
        if self.config.mode == Mode::GuestAgent {
            return Some(EventOutcome::GuestAgent);
        }
        if !self.negotiated {
            return Some(EventOutcome::NotNegotiated);
        }
        if self.out.len() > self.config.max_queued_output {
            self.dropped_events += 1;
            return Some(EventOutcome::Dropped);
        }
        None
    }

    /// Sends an event encoded once for many sessions ([`EncodedEvent`]), as [`event_json`](Self::event_json)
    /// would have sent it, without encoding it again.
    pub fn event_encoded(&mut self, event: &EncodedEvent) -> EventOutcome {
        if let Some(refused) = self.event_refused() {
            return refused;
        }
        self.out.extend_from_slice(event.as_bytes());
        self.end_line();
        EventOutcome::Sent
    }

    /// Sends an event whose `data` is JSON text (see [`event`](Self::event)). Object members are inserted in
    /// the order written, as QEMU's generated code inserts them in schema order: where two keys share a hash
    /// bucket, that order decides which QEMU writes first.
    pub fn event_json(
        &mut self,
        name: &str,
        data: Option<&str>,
        timestamp: Timestamp,
    ) -> Result<EventOutcome, ServerUsageError> {
        let data = data.map(parse_text).transpose()?;
        Ok(self.event_object(name, data, timestamp))
    }

    /// A request read in full: out-of-band ones are dispatched at once, others wait their turn.
    fn on_request(&mut self, mut request: Read) {
        // QEMU's qmp_is_oob(): exec-oob without execute jumps the queue, negotiated or not.
        let oob = matches!(&request, Ok(Request::Object(object)) if object.is_oob());
        if oob && self.config.mode == Mode::Qmp {
            self.dispatch(&mut request, true);
        } else if self.queue.is_empty() && self.current.is_none() && !self.closed {
            // Its turn already: what `pump` would do, without the trip through the queue.
            self.current = self.dispatch(&mut request, false);
        } else {
            self.queue.push_back(request);
            self.pump();
        }
    }

    /// Hands over or answers waiting in-band requests while no in-band command is in progress.
    fn pump(&mut self) {
        while self.current.is_none() && !self.closed {
            let Some(mut request) = self.queue.pop_front() else { break };
            if let Some(token) = self.dispatch(&mut request, false) {
                self.current = Some(token);
            }
        }
    }

    /// QEMU's `qmp_dispatch` (and the guest agent's): answers what the protocol answers, hands over the rest.
    /// Takes the request by reference: what a command keeps is moved out of it straight into the command.
    fn dispatch(&mut self, request: &mut Read, oob_path: bool) -> Option<Token> {
        match request {
            Err(desc) => {
                self.write_error("GenericError", desc, NO_ID);
                None
            }
            Ok(Request::Object(object)) => self.dispatch_command(object, oob_path),
            Ok(Request::NotObject) => {
                self.write_error("GenericError", b"QMP input must be a JSON object", NO_ID);
                None
            }
        }
    }

    /// [`dispatch`](Self::dispatch) of a command object, however it was read.
    fn dispatch_command(&mut self, object: impl ReadCommand, oob_path: bool) -> Option<Token> {
        let echo = object.echo();
        let oob = match object.check(self.oob_enabled) {
            Ok(oob) => oob,
            Err(desc) => {
                self.write_error("GenericError", desc.as_bytes(), echo);
                return None;
            }
        };
        let name_bytes = object.name();
        debug_assert!(oob == oob_path || !self.oob_enabled);
        match self.config.mode {
            Mode::Qmp => {
                if name_bytes == b"qmp_capabilities" && oob {
                    // QEMU 10's schema does not mark qmp_capabilities allow-oob.
                    let desc = b"The command qmp_capabilities does not support OOB";
                    self.write_error("GenericError", desc, echo);
                    return None;
                }
                if name_bytes == b"qmp_capabilities" {
                    self.qmp_capabilities(object.builtin_arguments(), echo);
                    return None;
                }
                if !self.negotiated {
                    let desc = b"Expecting capabilities negotiation with 'qmp_capabilities'";
                    self.write_error("CommandNotFound", desc, echo);
                    return None;
                }
            }
            Mode::GuestAgent => {
                if name_bytes == b"guest-sync" || name_bytes == b"guest-sync-delimited" {
                    match builtin::guest_sync_id(object.builtin_arguments()) {
                        Ok(value) => {
                            let delimited = name_bytes == b"guest-sync-delimited";
                            self.write_return(Body::Value(&value), echo, delimited)
                        }
                        Err(desc) => self.write_error("GenericError", desc.as_bytes(), echo),
                    }
                    return None;
                }
            }
        }
        let mut info = None;
        if !self.config.commands.is_empty() {
            // Valid UTF-8 (see `ReadCommand::name`): checked once, for both uses.
            let name_str = std::str::from_utf8(name_bytes).unwrap_or_default();
            info = self.config.commands.get(name_str).copied();
            if let Some(refused) = self.refused(name_str, info, oob) {
                self.write_error(&refused.class, refused.desc.as_bytes(), echo);
                return None;
            }
        } else if self.config.reject_unlisted {
            let refused = Failure::command_not_found(std::str::from_utf8(name_bytes).unwrap_or_default());
            self.write_error(&refused.class, refused.desc.as_bytes(), echo);
            return None;
        }
        let info = info.unwrap_or_default();
        self.next_token += 1;
        let token = Token(self.next_token);
        let Parts { name, arguments, id, echo } = object.into_parts();
        let pending = Pending { id: echo, oob, silent_on_success: !info.success_response };
        self.pending.insert(token, pending);
        if oob {
            self.oob_outstanding += 1;
        }
        self.events.push_back(Event::Command(Command { token, name, arguments, oob, id }));
        Some(token)
    }

    /// Why a command the configuration lists (`info`) or not is refused, if it is: with
    /// [`ServerConfig::reject_unlisted`], an unlisted command, or one run out-of-band that does not allow it.
    fn refused(&self, name: &str, info: Option<CommandInfo>, oob: bool) -> Option<Failure> {
        if !self.config.reject_unlisted {
            return None;
        }
        match info {
            None => Some(Failure::command_not_found(name)),
            Some(info) if oob && !info.allow_oob => {
                Some(Failure::generic(format!("The command {name} does not support OOB")))
            }
            Some(_) => None,
        }
    }

    /// QEMU's `qmp_capabilities`.
    fn qmp_capabilities(&mut self, args: Option<&QDict>, id: Option<&[u8]>) {
        let enable = match builtin::capabilities_to_enable(args) {
            Ok(enable) => enable,
            Err(desc) => return self.write_error("GenericError", desc.as_bytes(), id),
        };
        if self.negotiated {
            let desc = b"Capabilities negotiation is already complete, command ignored";
            return self.write_error("CommandNotFound", desc, id);
        }
        let mut unavailable: Vec<&str> = Vec::new();
        for cap in &enable {
            if !self.config.capabilities.iter().any(|c| c == cap) {
                unavailable.push(cap);
            }
        }
        if !unavailable.is_empty() {
            let desc = format!("Capability {} not available", unavailable.join(", "));
            return self.write_error("GenericError", desc.as_bytes(), id);
        }
        self.negotiated = true;
        self.oob_enabled = enable.iter().any(|c| c == "oob");
        self.write_return(Body::Value(&QObject::Dict(QDict::new())), id, false);
        self.events.push_back(Event::Negotiated { oob: self.oob_enabled });
    }

    fn write_greeting(&mut self) {
        let mut qemu = QDict::new();
        // QAPI's output visitor inserts members in schema order; QDict iteration order follows from it.
        qemu.put("major", QObject::UInt(self.config.version.0));
        qemu.put("minor", QObject::UInt(self.config.version.1));
        qemu.put("micro", QObject::UInt(self.config.version.2));
        let mut version = QDict::new();
        version.put("qemu", QObject::Dict(qemu));
        version.put("package", QObject::str(&self.config.package));
        let caps = self.config.capabilities.iter().map(|c| QObject::str(c)).collect();
        let mut body = QDict::new();
        body.put("version", QObject::Dict(version));
        body.put("capabilities", QObject::List(caps));
        let mut greeting = QDict::new();
        greeting.put("QMP", QObject::Dict(body));
        self.write_message(&QObject::Dict(greeting));
    }

    fn write_return(&mut self, value: Body<'_>, id: Option<impl Id>, delimited: bool) {
        if delimited {
            self.out.push(0xFF);
        }
        response::write_return(&mut self.out, value, id);
        self.end_line();
    }

    fn write_error_object(&mut self, error: Body<'_>, id: Option<impl Id>) {
        response::write_error_object(&mut self.out, error, id);
        self.end_line();
    }

    fn write_error(&mut self, class: &str, desc: &[u8], id: Option<impl Id>) {
        response::write_error(&mut self.out, class, desc, id);
        self.end_line();
    }

    /// Writes one message with the mode's line ending.
    fn write_message(&mut self, message: &QObject) {
        message.write(&mut self.out);
        self.end_line();
    }

    /// The mode's line ending: QMP `\r\n`, guest agent `\n`.
    fn end_line(&mut self) {
        self.out.extend_from_slice(if self.config.mode == Mode::Qmp { b"\r\n" } else { b"\n" });
    }
}
