//! A scripted, misbehaving QMP (or QGA) server for tests: std only, one thread, a temporary unix socket.
//!
//! This module owns the fake server: the [`Step`]s a script is made of, the thread that plays them against
//! one client at a time, the framing of what the client sends (recorded as [`ClientInput`]s), and helpers
//! that build realistic server messages ([`greeting_qemu10`], [`event`], [`reply`], [`error_reply`], ...).
//!
//! Use it for what a real QEMU does not do on demand: events between `qmp_capabilities` and its reply,
//! floods, truncated messages, hang-ups mid-reply, silence, garbage.
//!
//! ```
//! use qmp_tests::fake_server::{event, FakeServer, Step};
//! use std::io::{Read, Write};
//!
//! let mut server = FakeServer::spawn(vec![
//!     Step::SendGreeting,
//!     Step::Send(event("STOP", None)),     // an event before the negotiation reply
//!     Step::AnswerNegotiation,
//!     Step::Close,
//! ]);
//! let mut client = std::os::unix::net::UnixStream::connect(server.socket_path()).unwrap();
//! client.write_all(br#"{"execute":"qmp_capabilities","id":0}"#).unwrap();
//! let mut all = String::new();
//! client.read_to_string(&mut all).unwrap();
//! assert!(all.ends_with("{\"return\": {}, \"id\": 0}\r\n"));
//! server.join().unwrap();
//! assert_eq!(server.received()[0]["execute"], "qmp_capabilities");
//! ```
//!
//! How a script runs:
//!
//! - The socket is bound before [`FakeServer::spawn`] returns, so a client may connect at once. The thread
//!   first accepts one client (as if the script began with [`Step::Accept`]), then plays the steps in order.
//! - When the script ends the connection is closed. End with [`Step::Silence`] to keep it open until the
//!   client leaves.
//! - Nothing hangs: every read and write polls in short slices and gives up at the script's deadline
//!   ([`DEFAULT_DEADLINE`], or [`FakeConfig::deadline`]), when the client disconnects, or when the
//!   [`FakeServer`] is dropped. [`FakeServer::join`] says which, and at which step.
//! - Client input is framed by JSON value (braces, brackets, strings and escapes are tracked; no newline is
//!   needed); whitespace between values is skipped; each 0xFF byte is recorded as [`ClientInput::SyncByte`];
//!   a stray token such as `garbage` is recorded as [`ClientInput::Invalid`]. Input is only read by steps
//!   that read ([`Step::ReadMessage`], the replying steps, [`Step::Silence`]).

use std::{
    collections::HashMap,
    fmt,
    io::{self, Read, Write},
    net::Shutdown,
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{value::RawValue, Value};
use tempfile::TempDir;

/// The overall time limit of a script unless [`FakeConfig::deadline`] says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(20);

/// Granularity of every blocking operation in the server thread (reads, writes, accepts, sleeps).
const POLL: Duration = Duration::from_millis(20);

/// Size of the writes a [`Step::Flood`] batches events into.
const FLOOD_BATCH: usize = 256 * 1024;

/// A function that answers one client message (see [`Step::Respond`]) with the exact bytes to send.
pub type Responder = Box<dyn FnMut(&Value) -> Vec<u8> + Send>;

/// One thing the fake server does.
#[non_exhaustive]
pub enum Step {
    /// Write these bytes as they are.
    Send(Vec<u8>),
    /// Write [`greeting_qemu10`]: a realistic QEMU 10 greeting offering `oob`, ending in CRLF.
    SendGreeting,
    /// Read until one complete JSON object from the client has arrived, and record it.
    ReadMessage,
    /// Read one client object and reply `{"return": <ret>, "id": <its id>}`, the id copied verbatim (no `id`
    /// member when the command had none). `ret` is JSON text, e.g. `"{}"`.
    ReplyTo {
        /// The JSON text of the return value.
        ret: String,
    },
    /// Read one client object and reply `{"id": <its id>, "error": {"class": .., "desc": ..}}` (QEMU's order).
    ReplyError {
        /// The error class, e.g. `"GenericError"`.
        class: String,
        /// The human-readable description.
        desc: String,
    },
    /// Read one client object and send whatever the function returns for it (`Value::Null` when the object
    /// is not valid JSON).
    Respond(Responder),
    /// Read one client object, which must be `qmp_capabilities` (else the script fails with
    /// [`FakeErrorKind::Unexpected`]), and reply `{"return": {}}` with its id.
    AnswerNegotiation,
    /// Do nothing for this long.
    Sleep(Duration),
    /// Write `event` `count` times, batched into large writes.
    Flood {
        /// How many copies to send.
        count: usize,
        /// The bytes of one event, line ending included (see [`event`]).
        event: Vec<u8>,
    },
    /// Shut down the write half: the client reads EOF, but the server still reads what it sends.
    CloseWrite,
    /// Close the connection.
    Close,
    /// Keep the connection open and never answer, recording whatever arrives, until the client disconnects.
    Silence,
    /// Close the current connection, if any, and accept the next client.
    Accept,
}

impl Step {
    /// `Step::Send` from anything byte-like (`&str`, `&[u8]`, `Vec<u8>`).
    pub fn send(bytes: impl AsRef<[u8]>) -> Step {
        Step::Send(bytes.as_ref().to_vec())
    }

    /// `Step::ReplyTo` with the given JSON return value.
    pub fn reply_to(ret: impl Into<String>) -> Step {
        Step::ReplyTo { ret: ret.into() }
    }

    /// `Step::ReplyError` with the given class and description.
    pub fn reply_error(class: impl Into<String>, desc: impl Into<String>) -> Step {
        Step::ReplyError { class: class.into(), desc: desc.into() }
    }

    /// `Step::Respond` from a closure.
    pub fn respond(f: impl FnMut(&Value) -> Vec<u8> + Send + 'static) -> Step {
        Step::Respond(Box::new(f))
    }

    /// The variant's name, as used in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Send(_) => "Send",
            Step::SendGreeting => "SendGreeting",
            Step::ReadMessage => "ReadMessage",
            Step::ReplyTo { .. } => "ReplyTo",
            Step::ReplyError { .. } => "ReplyError",
            Step::Respond(_) => "Respond",
            Step::AnswerNegotiation => "AnswerNegotiation",
            Step::Sleep(_) => "Sleep",
            Step::Flood { .. } => "Flood",
            Step::CloseWrite => "CloseWrite",
            Step::Close => "Close",
            Step::Silence => "Silence",
            Step::Accept => "Accept",
        }
    }
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Send(bytes) => f.debug_tuple("Send").field(&String::from_utf8_lossy(bytes)).finish(),
            Step::ReplyTo { ret } => f.debug_struct("ReplyTo").field("ret", ret).finish(),
            Step::ReplyError { class, desc } => {
                f.debug_struct("ReplyError").field("class", class).field("desc", desc).finish()
            }
            Step::Sleep(d) => f.debug_tuple("Sleep").field(d).finish(),
            Step::Flood { count, event } => {
                f.debug_struct("Flood").field("count", count).field("event", &String::from_utf8_lossy(event)).finish()
            }
            other => f.write_str(other.name()),
        }
    }
}

/// One thing the client sent, in the order it arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientInput {
    /// A complete JSON value (normally a command object).
    Message(Value),
    /// A 0xFF byte between values (QGA's `guest-sync-delimited` resynchronisation byte).
    SyncByte,
    /// Bytes that are not a JSON value: a stray token, an object that does not parse, or a value cut short
    /// by the client's disconnect.
    Invalid(Vec<u8>),
}

/// Options for [`FakeServer::spawn_with`].
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Overall time limit of the script, counted from the spawn.
    pub deadline: Duration,
    /// What ends the replies built by [`Step::ReplyTo`], [`Step::ReplyError`] and
    /// [`Step::AnswerNegotiation`]: `\r\n` (QMP) by default, `\n` for QGA.
    pub line_ending: &'static str,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig { deadline: DEFAULT_DEADLINE, line_ending: "\r\n" }
    }
}

impl FakeConfig {
    /// A configuration for faking qemu-ga: replies end in `\n`.
    pub fn guest_agent() -> Self {
        FakeConfig { line_ending: "\n", ..FakeConfig::default() }
    }

    /// This configuration with another deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
}

/// Why a script did not run to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FakeErrorKind {
    /// The client disconnected while a step needed it.
    ClientGone,
    /// No client connected before the deadline (initial accept or [`Step::Accept`]).
    NoClient,
    /// The script's deadline passed.
    Deadline,
    /// The [`FakeServer`] was dropped while the script ran.
    Stopped,
    /// A step needs a connection but the script had closed it (add [`Step::Accept`]).
    NotConnected,
    /// The client sent something the step does not accept (e.g. not `qmp_capabilities`).
    Unexpected,
    /// Another I/O error.
    Io(io::ErrorKind),
}

/// A script that ended early: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeError {
    /// Index of the failing step in the script; `None` for the initial accept.
    pub step: Option<usize>,
    /// Name of the failing step (`"initial accept"` for the initial accept).
    pub step_name: &'static str,
    /// What happened.
    pub kind: FakeErrorKind,
    /// Details for humans.
    pub detail: String,
}

impl FakeError {
    /// True when the client disconnected during the script.
    pub fn is_client_gone(&self) -> bool {
        self.kind == FakeErrorKind::ClientGone
    }
}

impl fmt::Display for FakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Some(i) => write!(f, "fake server, step {i} ({})", self.step_name)?,
            None => write!(f, "fake server, {}", self.step_name)?,
        }
        write!(f, ": {:?}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for FakeError {}

#[derive(Debug, Default)]
struct Shared {
    transcript: Mutex<Vec<ClientInput>>,
    stop: AtomicBool,
    steps_done: AtomicUsize,
    clients: AtomicUsize,
}

impl Shared {
    fn transcript(&self) -> MutexGuard<'_, Vec<ClientInput>> {
        // A panic in the server thread is reported by join; the data stays usable.
        self.transcript.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A scripted server running on its own thread. See the [module docs](self).
#[derive(Debug)]
pub struct FakeServer {
    socket: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<(), FakeError>>>,
    result: Option<Result<(), FakeError>>,
    // Declared last: the socket's directory outlives the thread (see Drop).
    _dir: TempDir,
}

impl FakeServer {
    /// Binds a fresh socket and starts playing `script` (with [`FakeConfig::default`]) on a thread.
    pub fn spawn(script: Vec<Step>) -> FakeServer {
        FakeServer::spawn_with(FakeConfig::default(), script)
    }

    /// Like [`spawn`](Self::spawn) with explicit options.
    pub fn spawn_with(config: FakeConfig, script: Vec<Step>) -> FakeServer {
        let dir = tempfile::Builder::new()
            .prefix("qmp-fake-")
            .tempdir()
            .or_else(|_| tempfile::Builder::new().prefix("qmp-fake-").tempdir_in("/tmp"))
            .expect("fake server: create a temporary directory");
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).expect("fake server: bind the unix socket");
        listener.set_nonblocking(true).expect("fake server: make the listener non-blocking");
        let shared = Arc::new(Shared::default());
        let runner = Runner {
            listener,
            conn: None,
            shared: Arc::clone(&shared),
            deadline: Instant::now() + config.deadline,
            line_ending: config.line_ending,
            step: None,
            step_name: "initial accept",
        };
        let thread = thread::Builder::new()
            .name("qmp-fake-server".into())
            .spawn(move || runner.run(script))
            .expect("fake server: spawn the thread");
        FakeServer { socket, shared, thread: Some(thread), result: None, _dir: dir }
    }

    /// The unix socket to connect to.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The JSON values the client has sent so far, in order (skips 0xFF bytes and invalid input; see
    /// [`transcript`](Self::transcript) for everything).
    pub fn received(&self) -> Vec<Value> {
        self.shared
            .transcript()
            .iter()
            .filter_map(|input| match input {
                ClientInput::Message(v) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    /// Everything the server has read from its clients so far, in order.
    pub fn transcript(&self) -> Vec<ClientInput> {
        self.shared.transcript().clone()
    }

    /// Waits until at least `count` values have been [`received`](Self::received) or `timeout` passes, and
    /// returns what has been received by then.
    pub fn wait_for_received(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= count || Instant::now() >= deadline {
                return got;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// How many steps of the script have completed.
    pub fn steps_done(&self) -> usize {
        self.shared.steps_done.load(Ordering::SeqCst)
    }

    /// How many clients have been accepted (the initial one included).
    pub fn clients_accepted(&self) -> usize {
        self.shared.clients.load(Ordering::SeqCst)
    }

    /// Waits for the script to end and returns how it ended: `Ok` when every step ran. A panic in the server
    /// thread is resumed here. Later calls return the same result.
    pub fn join(&mut self) -> Result<(), FakeError> {
        if let Some(thread) = self.thread.take() {
            let result = match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            self.result = Some(result);
        }
        self.result.clone().expect("join: the script result is stored")
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // Ends within one POLL; a panic inside is dropped (the test did not ask for the result).
            let _ = thread.join();
        }
    }
}

/// The server thread's state.
struct Runner {
    listener: UnixListener,
    conn: Option<Conn>,
    shared: Arc<Shared>,
    deadline: Instant,
    line_ending: &'static str,
    step: Option<usize>,
    step_name: &'static str,
}

/// The current client connection.
struct Conn {
    stream: UnixStream,
    framer: Framer,
    eof: bool,
}

impl Runner {
    fn run(mut self, script: Vec<Step>) -> Result<(), FakeError> {
        self.accept()?;
        for (i, step) in script.into_iter().enumerate() {
            self.step = Some(i);
            self.step_name = step.name();
            self.play(step)?;
            self.shared.steps_done.store(i + 1, Ordering::SeqCst);
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        Ok(())
    }

    fn play(&mut self, step: Step) -> Result<(), FakeError> {
        match step {
            Step::Send(bytes) => self.write(&bytes),
            Step::SendGreeting => self.write(&greeting_qemu10()),
            Step::ReadMessage => self.next_object().map(drop),
            Step::ReplyTo { ret } => {
                let command = self.next_object()?;
                let id = raw_id(&command);
                let reply = reply_with(&ret, id.as_deref(), self.line_ending);
                self.write(&reply)
            }
            Step::ReplyError { class, desc } => {
                let command = self.next_object()?;
                let id = raw_id(&command);
                let reply = error_reply_with(&class, &desc, id.as_deref(), self.line_ending);
                self.write(&reply)
            }
            Step::Respond(mut respond) => {
                let command = self.next_object()?;
                let value = serde_json::from_slice(&command).unwrap_or(Value::Null);
                self.write(&respond(&value))
            }
            Step::AnswerNegotiation => {
                let command = self.next_object()?;
                let value: Value = serde_json::from_slice(&command).unwrap_or(Value::Null);
                if value["execute"] != "qmp_capabilities" {
                    return Err(self.error(
                        FakeErrorKind::Unexpected,
                        format!("expected qmp_capabilities, got {}", String::from_utf8_lossy(&command)),
                    ));
                }
                let id = raw_id(&command);
                let reply = reply_with("{}", id.as_deref(), self.line_ending);
                self.write(&reply)
            }
            Step::Sleep(duration) => {
                let until = Instant::now() + duration;
                while Instant::now() < until {
                    self.check(FakeErrorKind::Deadline)?;
                    thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
                }
                Ok(())
            }
            Step::Flood { count, event } => {
                let per_batch = (FLOOD_BATCH / event.len().max(1)).max(1);
                let batch = event.repeat(per_batch.min(count));
                let mut left = count;
                while left >= per_batch {
                    self.write(&batch)?;
                    left -= per_batch;
                }
                if left > 0 {
                    self.write(&event.repeat(left))?;
                }
                Ok(())
            }
            Step::CloseWrite => {
                let conn = self.connection()?;
                match conn.stream.shutdown(Shutdown::Write) {
                    // The client may already be gone: the half-close is moot then.
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => {
                        Err(self.error(FakeErrorKind::Io(e.kind()), format!("shutdown: {e}")))
                    }
                    _ => Ok(()),
                }
            }
            Step::Close => {
                if let Some(conn) = self.conn.take() {
                    let _ = conn.stream.shutdown(Shutdown::Both);
                }
                Ok(())
            }
            Step::Silence => loop {
                let conn = self.connection()?;
                let frames = conn.framer.drain(conn.eof);
                let eof = conn.eof;
                self.record(frames);
                if eof {
                    return Ok(());
                }
                self.check(FakeErrorKind::Deadline)?;
                self.fill()?;
            },
            Step::Accept => self.accept(),
        }
    }

    fn error(&self, kind: FakeErrorKind, detail: impl Into<String>) -> FakeError {
        FakeError { step: self.step, step_name: self.step_name, kind, detail: detail.into() }
    }

    /// Fails when the server was dropped or the deadline passed (reported as `on_deadline`).
    fn check(&self, on_deadline: FakeErrorKind) -> Result<(), FakeError> {
        if self.shared.stop.load(Ordering::SeqCst) {
            return Err(self.error(FakeErrorKind::Stopped, "the FakeServer was dropped"));
        }
        if Instant::now() >= self.deadline {
            return Err(self.error(on_deadline, "the script's deadline passed"));
        }
        Ok(())
    }

    fn connection(&mut self) -> Result<&mut Conn, FakeError> {
        if self.conn.is_none() {
            return Err(self.error(
                FakeErrorKind::NotConnected,
                "no client is connected (the script closed it; add Step::Accept)",
            ));
        }
        Ok(self.conn.as_mut().expect("checked above"))
    }

    fn accept(&mut self) -> Result<(), FakeError> {
        if let Some(old) = self.conn.take() {
            let _ = old.stream.shutdown(Shutdown::Both);
        }
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let setup = stream
                        .set_nonblocking(false)
                        .and_then(|()| stream.set_read_timeout(Some(POLL)))
                        .and_then(|()| stream.set_write_timeout(Some(POLL)));
                    if let Err(e) = setup {
                        return Err(self.error(FakeErrorKind::Io(e.kind()), format!("socket setup: {e}")));
                    }
                    self.conn = Some(Conn { stream, framer: Framer::default(), eof: false });
                    self.shared.clients.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                Err(e) if is_transient(&e) => {
                    self.check(FakeErrorKind::NoClient)?;
                    thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(self.error(FakeErrorKind::Io(e.kind()), format!("accept: {e}"))),
            }
        }
    }

    /// Reads until the next complete object, recording everything framed on the way; returns its bytes.
    fn next_object(&mut self) -> Result<Vec<u8>, FakeError> {
        loop {
            let conn = self.connection()?;
            let mut found = None;
            let mut frames = Vec::new();
            while let Some(frame) = conn.framer.next_frame(conn.eof) {
                let is_object = matches!(&frame, Frame::Value(b) if b.first() == Some(&b'{'));
                if is_object {
                    if let Frame::Value(bytes) = &frame {
                        found = Some(bytes.clone());
                    }
                }
                frames.push(frame);
                if found.is_some() {
                    break;
                }
            }
            let eof = conn.eof;
            self.record(frames);
            if let Some(bytes) = found {
                return Ok(bytes);
            }
            if eof {
                return Err(
                    self.error(FakeErrorKind::ClientGone, "the client disconnected before sending a complete object")
                );
            }
            self.check(FakeErrorKind::Deadline)?;
            self.fill()?;
        }
    }

    /// One read (at most [`POLL`] long) into the framer; EOF and resets set `eof`.
    fn fill(&mut self) -> Result<(), FakeError> {
        let mut buf = [0u8; 64 * 1024];
        let conn = self.connection()?;
        match conn.stream.read(&mut buf) {
            Ok(0) => conn.eof = true,
            Ok(n) => conn.framer.push(&buf[..n]),
            Err(e) if is_transient(&e) => {}
            Err(e) if is_disconnect(&e) => conn.eof = true,
            Err(e) => return Err(self.error(FakeErrorKind::Io(e.kind()), format!("read: {e}"))),
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), FakeError> {
        let mut done = 0;
        while done < bytes.len() {
            let conn = self.connection()?;
            match conn.stream.write(&bytes[done..]) {
                Ok(0) => return Err(self.error(FakeErrorKind::ClientGone, "write returned 0")),
                Ok(n) => done += n,
                Err(e) if is_transient(&e) => self.check(FakeErrorKind::Deadline)?,
                Err(e) if is_disconnect(&e) => {
                    return Err(self.error(
                        FakeErrorKind::ClientGone,
                        format!("write after {done} of {} bytes: {e}", bytes.len()),
                    ));
                }
                Err(e) => return Err(self.error(FakeErrorKind::Io(e.kind()), format!("write: {e}"))),
            }
        }
        Ok(())
    }

    fn record(&self, frames: Vec<Frame>) {
        if frames.is_empty() {
            return;
        }
        let mut transcript = self.shared.transcript();
        transcript.extend(frames.into_iter().map(|frame| match frame {
            Frame::Sync => ClientInput::SyncByte,
            Frame::Value(bytes) | Frame::Other(bytes) => match serde_json::from_slice(&bytes) {
                Ok(value) => ClientInput::Message(value),
                Err(_) => ClientInput::Invalid(bytes),
            },
        }));
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    )
}

/// The raw JSON text of a command's `id` member, exactly as the client wrote it (`None` without one, or
/// when the object does not parse).
pub fn raw_id(command: &[u8]) -> Option<String> {
    let members: HashMap<String, &RawValue> = serde_json::from_slice(command).ok()?;
    members.get("id").map(|raw| raw.get().to_owned())
}

/// One piece of client input cut out by the [`Framer`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    /// A bracketed value: `{...}` or `[...]` (may still be invalid JSON inside).
    Value(Vec<u8>),
    /// A 0xFF byte.
    Sync,
    /// A stray token, or a value cut short by EOF.
    Other(Vec<u8>),
}

/// Splits client bytes into JSON values; resumes scanning where it stopped.
#[derive(Debug, Default)]
struct Framer {
    buf: Vec<u8>,
    /// Bytes of the current value already scanned (0 when between values).
    scanned: usize,
    depth: usize,
    in_string: bool,
    escape: bool,
}

impl Framer {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn drain(&mut self, eof: bool) -> Vec<Frame> {
        std::iter::from_fn(|| self.next_frame(eof)).collect()
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        self.scanned = 0;
        self.depth = 0;
        self.in_string = false;
        self.escape = false;
        self.buf.drain(..n).collect()
    }

    fn next_frame(&mut self, eof: bool) -> Option<Frame> {
        if self.depth == 0 {
            let skip = self.buf.iter().take_while(|b| b" \t\r\n".contains(b)).count();
            self.buf.drain(..skip);
            match *self.buf.first()? {
                0xFF => {
                    self.buf.remove(0);
                    return Some(Frame::Sync);
                }
                b'{' | b'[' => {
                    self.depth = 1;
                    self.scanned = 1;
                }
                _ => {
                    let end = self.buf.iter().position(|b| b" \t\r\n{[\xff".contains(b));
                    return match end {
                        Some(end) => Some(Frame::Other(self.take(end))),
                        None if eof => Some(Frame::Other(self.take(self.buf.len()))),
                        None => None,
                    };
                }
            }
        }
        while self.scanned < self.buf.len() {
            let c = self.buf[self.scanned];
            self.scanned += 1;
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if c == b'\\' {
                    self.escape = true;
                } else if c == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match c {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Some(Frame::Value(self.take(self.scanned)));
                    }
                }
                _ => {}
            }
        }
        if eof && !self.buf.is_empty() {
            return Some(Frame::Other(self.take(self.buf.len())));
        }
        None
    }
}

fn now_timestamp() -> (u64, u32) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (now.as_secs(), now.subsec_micros())
}

/// A greeting as qemu-storage-daemon 10.0.2 sends it (offering `oob`), CRLF-terminated.
pub fn greeting_qemu10() -> Vec<u8> {
    greeting((10, 0, 2), "Debian 1:10.0.2+ds-2+deb13u1~bpo12+1", &["oob"])
}

/// A greeting as qemu-system-x86_64 7.2 sends it (offering `oob`), CRLF-terminated.
pub fn greeting_qemu72() -> Vec<u8> {
    greeting((7, 2, 22), "Debian 1:7.2+dfsg-7+deb12u18+b3", &["oob"])
}

/// A greeting for any version, package string and capability list, in QEMU's layout and key order.
pub fn greeting(version: (u32, u32, u32), package: &str, capabilities: &[&str]) -> Vec<u8> {
    let (major, minor, micro) = version;
    let caps: Vec<String> = capabilities.iter().map(|c| json_string(c)).collect();
    format!(
        "{{\"QMP\": {{\"version\": {{\"qemu\": {{\"micro\": {micro}, \"minor\": {minor}, \"major\": {major}}}, \
         \"package\": {}}}, \"capabilities\": [{}]}}}}\r\n",
        json_string(package),
        caps.join(", ")
    )
    .into_bytes()
}

/// An event named `name` with the current time as its timestamp and `data` (JSON text) if given, in QEMU's
/// layout: `{"timestamp": {"seconds": S, "microseconds": U}, "event": NAME, "data": DATA}\r\n`.
pub fn event(name: &str, data: Option<&str>) -> Vec<u8> {
    let (seconds, micros) = now_timestamp();
    let mut s = format!(
        "{{\"timestamp\": {{\"seconds\": {seconds}, \"microseconds\": {micros}}}, \"event\": {}",
        json_string(name)
    );
    if let Some(data) = data {
        s.push_str(", \"data\": ");
        s.push_str(data);
    }
    s.push_str("}\r\n");
    s.into_bytes()
}

/// A success reply `{"return": RET, "id": ID}\r\n`; `ret` and `id` are JSON text, `id` omitted when `None`.
pub fn reply(ret: &str, id: Option<&str>) -> Vec<u8> {
    reply_with(ret, id, "\r\n")
}

/// An error reply as QEMU orders it, `{"id": ID, "error": {"class": C, "desc": D}}\r\n` (no `id` when `None`,
/// as for parse errors). `id` is JSON text.
pub fn error_reply(class: &str, desc: &str, id: Option<&str>) -> Vec<u8> {
    error_reply_with(class, desc, id, "\r\n")
}

fn reply_with(ret: &str, id: Option<&str>, line_ending: &str) -> Vec<u8> {
    match id {
        Some(id) => format!("{{\"return\": {ret}, \"id\": {id}}}{line_ending}"),
        None => format!("{{\"return\": {ret}}}{line_ending}"),
    }
    .into_bytes()
}

fn error_reply_with(class: &str, desc: &str, id: Option<&str>, line_ending: &str) -> Vec<u8> {
    let error = format!("\"error\": {{\"class\": {}, \"desc\": {}}}", json_string(class), json_string(desc));
    match id {
        Some(id) => format!("{{\"id\": {id}, {error}}}{line_ending}"),
        None => format!("{{{error}}}{line_ending}"),
    }
    .into_bytes()
}

fn json_string(s: &str) -> String {
    Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::BufRead;

    fn connect(server: &FakeServer) -> UnixStream {
        let stream = UnixStream::connect(server.socket_path()).expect("connect to the fake server");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream
    }

    /// Reads one CRLF- or LF-terminated line.
    fn read_line(reader: &mut io::BufReader<UnixStream>) -> String {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read a line");
        line
    }

    fn frames(chunks: &[&[u8]], eof: bool) -> Vec<Frame> {
        let mut framer = Framer::default();
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk);
            out.extend(framer.drain(false));
        }
        out.extend(framer.drain(eof));
        out
    }

    #[test]
    fn framer_splits_values_without_newlines() {
        let input: &[u8] = br#" {"a":"}{\"","b":[1,{"c":"]"}]}{"x":1}[2]"#;
        let expected = vec![
            Frame::Value(br#"{"a":"}{\"","b":[1,{"c":"]"}]}"#.to_vec()),
            Frame::Value(br#"{"x":1}"#.to_vec()),
            Frame::Value(b"[2]".to_vec()),
        ];
        assert_eq!(frames(&[input], false), expected);
        // Byte by byte gives the same frames.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(frames(&bytes, false), expected);
    }

    #[test]
    fn framer_handles_sync_bytes_garbage_and_truncation() {
        let input: &[u8] = b"\xff\xff{\"execute\":\"guest-sync-delimited\"}\r\n garbage{\"a\":1} {\"cut\":";
        assert_eq!(
            frames(&[input], true),
            vec![
                Frame::Sync,
                Frame::Sync,
                Frame::Value(br#"{"execute":"guest-sync-delimited"}"#.to_vec()),
                Frame::Other(b"garbage".to_vec()),
                Frame::Value(br#"{"a":1}"#.to_vec()),
                Frame::Other(br#"{"cut":"#.to_vec()),
            ]
        );
        // Without EOF the truncated value and a trailing token stay buffered.
        assert_eq!(frames(&[b"{\"cut\":", b" 1"], false), vec![]);
        assert_eq!(frames(&[b"tok"], false), vec![]);
        assert_eq!(frames(&[b"tok"], true), vec![Frame::Other(b"tok".to_vec())]);
    }

    #[test]
    fn framer_pretty_input_spans_lines() {
        let input: &[u8] = b"{\r\n    \"execute\": \"stop\",\r\n    \"id\": 3\r\n}\r\n";
        let got = frames(&[input], false);
        assert_eq!(got.len(), 1);
        let Frame::Value(bytes) = &got[0] else { panic!("expected a value, got {got:?}") };
        let value: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(value, json!({"execute": "stop", "id": 3}));
    }

    #[test]
    fn raw_id_is_copied_verbatim() {
        assert_eq!(raw_id(br#"{"execute":"x","id":{"a":[1, 2]}}"#).as_deref(), Some(r#"{"a":[1, 2]}"#));
        assert_eq!(raw_id(br#"{"id":"s\u00e9","execute":"x"}"#).as_deref(), Some(r#""s\u00e9""#));
        assert_eq!(raw_id(br#"{"id":null}"#).as_deref(), Some("null"));
        assert_eq!(raw_id(br#"{"id":1e400}"#).as_deref(), Some("1e400"));
        assert_eq!(raw_id(br#"{"execute":"x"}"#), None);
        assert_eq!(raw_id(b"{not json}"), None);
    }

    #[test]
    fn message_helpers_are_realistic() {
        let g10 = greeting_qemu10();
        assert!(g10.ends_with(b"}}\r\n"));
        let value: Value = serde_json::from_slice(&g10).unwrap();
        assert_eq!(value["QMP"]["version"]["qemu"], json!({"micro": 2, "minor": 0, "major": 10}));
        assert_eq!(value["QMP"]["capabilities"], json!(["oob"]));
        assert_eq!(
            String::from_utf8(g10).unwrap(),
            "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \
             \"package\": \"Debian 1:10.0.2+ds-2+deb13u1~bpo12+1\"}, \"capabilities\": [\"oob\"]}}\r\n"
        );
        let v72: Value = serde_json::from_slice(&greeting_qemu72()).unwrap();
        assert_eq!(v72["QMP"]["version"]["qemu"]["major"], 7);
        let none: Value = serde_json::from_slice(&greeting((1, 2, 3), "p", &[])).unwrap();
        assert_eq!(none["QMP"]["capabilities"], json!([]));

        let ev = event("BLOCK_JOB_READY", Some(r#"{"device": "j0"}"#));
        assert!(ev.starts_with(b"{\"timestamp\": {\"seconds\": "));
        assert!(ev.ends_with(b"}\r\n"));
        let ev: Value = serde_json::from_slice(&ev).unwrap();
        assert_eq!(ev["event"], "BLOCK_JOB_READY");
        assert_eq!(ev["data"], json!({"device": "j0"}));
        assert!(ev["timestamp"]["seconds"].as_u64().unwrap() > 1_600_000_000);
        assert!(ev["timestamp"]["microseconds"].as_u64().unwrap() < 1_000_000);
        let bare: Value = serde_json::from_slice(&event("STOP", None)).unwrap();
        assert!(bare.get("data").is_none());

        assert_eq!(reply("{}", Some("7")), b"{\"return\": {}, \"id\": 7}\r\n");
        assert_eq!(reply("[]", None), b"{\"return\": []}\r\n");
        assert_eq!(
            error_reply("CommandNotFound", "The command x has not been found", Some("1")),
            b"{\"id\": 1, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command x has not been found\"}}\r\n"
        );
        assert_eq!(
            error_reply("GenericError", "JSON parse error, stray '\u{1}'", None),
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\u0001'\"}}\r\n"
        );
    }

    #[test]
    fn negotiation_and_replies_copy_ids() {
        let mut server = FakeServer::spawn(vec![
            Step::SendGreeting,
            Step::Send(event("STOP", None)),
            Step::AnswerNegotiation,
            Step::reply_to(r#"{"status": "running"}"#),
            Step::reply_to("{}"),
            Step::reply_error("GenericError", "nope"),
            Step::respond(|cmd| reply("42", Some(&cmd["id"].to_string()))),
            Step::Close,
        ]);
        let mut client = connect(&server);
        let mut reader = io::BufReader::new(client.try_clone().unwrap());
        assert_eq!(read_line(&mut reader).as_bytes(), greeting_qemu10());
        assert!(read_line(&mut reader).contains("\"event\": \"STOP\""));

        client.write_all(br#"{"execute":"qmp_capabilities","id":"neg"}"#).unwrap();
        assert_eq!(read_line(&mut reader), "{\"return\": {}, \"id\": \"neg\"}\r\n");
        // Two commands in one write, no separator; an object id and no id.
        client.write_all(br#"{"execute":"query-status","id":{"a":[1,"}"]}}{"execute":"cont"}"#).unwrap();
        assert_eq!(read_line(&mut reader), "{\"return\": {\"status\": \"running\"}, \"id\": {\"a\":[1,\"}\"]}}\r\n");
        assert_eq!(read_line(&mut reader), "{\"return\": {}}\r\n");
        client.write_all(br#"{"execute":"x","id":null}"#).unwrap();
        assert_eq!(
            read_line(&mut reader),
            "{\"id\": null, \"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\r\n"
        );
        client.write_all(br#"{"execute":"y","id":5}"#).unwrap();
        assert_eq!(read_line(&mut reader), "{\"return\": 42, \"id\": 5}\r\n");
        assert_eq!(read_line(&mut reader), "", "EOF after Close");

        server.join().expect("script completed");
        assert_eq!(server.steps_done(), 8);
        let received = server.received();
        let names: Vec<&str> = received.iter().map(|m| m["execute"].as_str().unwrap()).collect();
        assert_eq!(names, ["qmp_capabilities", "query-status", "cont", "x", "y"]);
        assert_eq!(received[1]["id"], json!({"a": [1, "}"]}));
    }

    #[test]
    fn guest_agent_config_uses_lf_and_records_sync_bytes() {
        let mut server = FakeServer::spawn_with(
            FakeConfig::guest_agent(),
            vec![Step::ReadMessage, Step::respond(|_| b"\xff{\"return\": 9}\n".to_vec()), Step::reply_to("{}")],
        );
        let mut client = connect(&server);
        client
            .write_all(b"garbage {\"execute\":\"guest-ping\"}\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":9}}")
            .unwrap();
        client.write_all(br#"{"execute":"guest-info","id":1}"#).unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"\xff{\"return\": 9}\n{\"return\": {}, \"id\": 1}\n");
        server.join().unwrap();
        assert_eq!(
            server.transcript(),
            vec![
                ClientInput::Invalid(b"garbage".to_vec()),
                ClientInput::Message(json!({"execute": "guest-ping"})),
                ClientInput::SyncByte,
                ClientInput::Message(json!({"execute": "guest-sync-delimited", "arguments": {"id": 9}})),
                ClientInput::Message(json!({"execute": "guest-info", "id": 1})),
            ]
        );
    }

    #[test]
    fn a_byte_at_a_time_client_is_framed() {
        let mut server = FakeServer::spawn(vec![Step::reply_to("1")]);
        let mut client = connect(&server);
        for b in br#"{"execute":"query-version","id":[1]}"#.iter() {
            client.write_all(&[*b]).unwrap();
            thread::sleep(Duration::from_millis(1));
        }
        let mut reader = io::BufReader::new(client);
        assert_eq!(read_line(&mut reader), "{\"return\": 1, \"id\": [1]}\r\n");
        server.join().unwrap();
    }

    #[test]
    fn flood_delivers_every_event_in_big_writes() {
        let one = event("BLOCK_JOB_PENDING", Some(r#"{"type": "backup", "id": "j"}"#));
        let count = 20_000;
        let mut server =
            FakeServer::spawn(vec![Step::SendGreeting, Step::Flood { count, event: one.clone() }, Step::Close]);
        let mut client = connect(&server);
        let mut all = Vec::new();
        client.read_to_end(&mut all).unwrap();
        server.join().unwrap();
        let greeting = greeting_qemu10();
        assert_eq!(&all[..greeting.len()], &greeting[..]);
        let rest = &all[greeting.len()..];
        assert_eq!(rest.len(), one.len() * count);
        assert!(rest.chunks(one.len()).all(|c| c == &one[..]));
    }

    #[test]
    fn client_disconnect_ends_the_script_quickly() {
        let mut server = FakeServer::spawn(vec![Step::SendGreeting, Step::ReadMessage, Step::reply_to("{}")]);
        let mut client = connect(&server);
        let mut greeting = vec![0u8; greeting_qemu10().len()];
        client.read_exact(&mut greeting).unwrap();
        let started = Instant::now();
        drop(client);
        let err = server.join().unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        assert!(err.is_client_gone(), "{err}");
        assert_eq!(err.step, Some(1));
        assert_eq!(err.step_name, "ReadMessage");
        assert!(err.to_string().contains("step 1 (ReadMessage)"), "{err}");
    }

    #[test]
    fn a_partial_message_before_disconnect_is_recorded_as_invalid() {
        let mut server = FakeServer::spawn(vec![Step::ReadMessage]);
        let mut client = connect(&server);
        client.write_all(br#"{"execute":"qu"#).unwrap();
        drop(client);
        assert!(server.join().unwrap_err().is_client_gone());
        assert_eq!(server.transcript(), vec![ClientInput::Invalid(br#"{"execute":"qu"#.to_vec())]);
    }

    #[test]
    fn flood_into_a_client_that_leaves_ends_the_script() {
        let mut server = FakeServer::spawn(vec![Step::Flood { count: 10_000_000, event: event("X", None) }]);
        let mut client = connect(&server);
        let mut some = [0u8; 4096];
        client.read_exact(&mut some).unwrap();
        drop(client);
        let err = server.join().unwrap_err();
        assert!(err.is_client_gone(), "{err}");
    }

    #[test]
    fn silence_lasts_until_the_client_leaves() {
        let mut server = FakeServer::spawn(vec![Step::SendGreeting, Step::Silence]);
        let mut client = connect(&server);
        let mut reader = io::BufReader::new(client.try_clone().unwrap());
        read_line(&mut reader);
        client.write_all(br#"{"execute":"qmp_capabilities"}"#).unwrap();
        client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 16];
        let err = client.read(&mut buf).unwrap_err();
        assert!(is_transient(&err), "no answer expected, got {err}");
        assert_eq!(server.wait_for_received(1, Duration::from_secs(5)), vec![json!({"execute": "qmp_capabilities"})]);
        assert_eq!(server.steps_done(), 1, "still silent");
        drop(reader);
        drop(client);
        server.join().expect("silence ends cleanly when the client leaves");
        assert_eq!(server.steps_done(), 2);
    }

    #[test]
    fn close_write_gives_eof_but_keeps_reading() {
        let mut server = FakeServer::spawn(vec![Step::SendGreeting, Step::CloseWrite, Step::ReadMessage]);
        let mut client = connect(&server);
        let mut all = Vec::new();
        client.read_to_end(&mut all).unwrap();
        assert_eq!(all, greeting_qemu10());
        client.write_all(br#"{"execute":"late"}"#).unwrap();
        server.join().unwrap();
        assert_eq!(server.received(), vec![json!({"execute": "late"})]);
    }

    #[test]
    fn close_and_accept_serve_a_second_client() {
        let mut server = FakeServer::spawn(vec![
            Step::SendGreeting,
            Step::Close,
            Step::Accept,
            Step::send(greeting_qemu72()),
            Step::AnswerNegotiation,
        ]);
        let mut first = connect(&server);
        let mut all = Vec::new();
        first.read_to_end(&mut all).unwrap();
        assert_eq!(all, greeting_qemu10());

        let mut second = connect(&server);
        let mut reader = io::BufReader::new(second.try_clone().unwrap());
        assert_eq!(read_line(&mut reader).as_bytes(), greeting_qemu72());
        second.write_all(br#"{"execute":"qmp_capabilities"}"#).unwrap();
        assert_eq!(read_line(&mut reader), "{\"return\": {}}\r\n");
        server.join().unwrap();
        assert_eq!(server.clients_accepted(), 2);
    }

    #[test]
    fn steps_after_close_report_not_connected() {
        let mut server = FakeServer::spawn(vec![Step::Close, Step::SendGreeting]);
        let _client = connect(&server);
        let err = server.join().unwrap_err();
        assert_eq!(err.kind, FakeErrorKind::NotConnected);
        assert_eq!(err.step, Some(1));
    }

    #[test]
    fn wrong_negotiation_command_is_unexpected() {
        let mut server = FakeServer::spawn(vec![Step::AnswerNegotiation]);
        let mut client = connect(&server);
        client.write_all(br#"{"execute":"query-status","id":1}"#).unwrap();
        let err = server.join().unwrap_err();
        assert_eq!(err.kind, FakeErrorKind::Unexpected);
        assert!(err.detail.contains("query-status"), "{err}");
    }

    #[test]
    fn deadline_ends_a_script_waiting_on_a_silent_client() {
        let config = FakeConfig::default().with_deadline(Duration::from_millis(300));
        let mut server = FakeServer::spawn_with(config, vec![Step::ReadMessage]);
        let _client = connect(&server);
        let started = Instant::now();
        let err = server.join().unwrap_err();
        assert_eq!(err.kind, FakeErrorKind::Deadline);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn no_client_before_the_deadline() {
        let config = FakeConfig::default().with_deadline(Duration::from_millis(200));
        let mut server = FakeServer::spawn_with(config, vec![Step::SendGreeting]);
        let err = server.join().unwrap_err();
        assert_eq!(err.kind, FakeErrorKind::NoClient);
        assert_eq!(err.step, None);
        assert_eq!(err.step_name, "initial accept");
        // join is repeatable.
        assert_eq!(server.join().unwrap_err(), err);
    }

    #[test]
    fn dropping_the_server_stops_the_script() {
        let server = FakeServer::spawn(vec![Step::Sleep(Duration::from_secs(60))]);
        let client = connect(&server);
        let started = Instant::now();
        drop(server);
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(client);
    }

    #[test]
    fn step_debug_is_readable() {
        assert_eq!(format!("{:?}", Step::send("hi")), "Send(\"hi\")");
        assert_eq!(format!("{:?}", Step::respond(|_| Vec::new())), "Respond");
        assert_eq!(format!("{:?}", Step::reply_to("{}")), "ReplyTo { ret: \"{}\" }");
    }
}
