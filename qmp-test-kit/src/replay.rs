//! Replaying a [`Transcript`] as a server: [`ReplaySession`] (sans-IO) checks the client's bytes against the
//! transcript's `send` steps and answers with its `recv` steps; [`ReplayServer`] serves it on a unix socket.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use qmp_proto::server::Command;
use qmp_proto::Timestamp;
use serde_json::Value;

use crate::carrier::{Handle, Sessions, Wire};
use crate::transcript::{Step, Transcript};

/// The client wrote something else than the transcript says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The index of the `send` step in the transcript's steps.
    pub step: usize,
    /// The offset of the first differing byte in that step.
    pub offset: usize,
    /// What the transcript has from that offset on (at most 80 bytes).
    pub expected: Vec<u8>,
    /// What the client wrote from that offset on (at most 80 bytes of that read).
    pub got: Vec<u8>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} byte {}: expected {:?}, got {:?}",
            self.step,
            self.offset,
            String::from_utf8_lossy(&self.expected),
            String::from_utf8_lossy(&self.got)
        )
    }
}

/// One connection replaying a transcript: leading `recv` steps are sent at once; each `send` step is matched
/// against what the client writes (however its writes are cut), and once it is complete the `recv` steps that
/// follow it are sent. The first difference ends the session ([`mismatch`](Self::mismatch)). Driven like
/// [`FakeSession`](crate::FakeSession); it keeps no deadlines.
///
/// ```
/// use std::time::Instant;
/// use qmp_test_kit::{ReplaySession, Step, Transcript};
///
/// let transcript = Transcript {
///     steps: vec![Step::Recv(b"hello\r\n".to_vec()), Step::Send(b"ping".to_vec()), Step::Recv(b"pong\r\n".to_vec())],
///     ..Transcript::default()
/// };
/// let mut replay = ReplaySession::new(&transcript);
/// let mut out = Vec::new();
/// replay.poll_transmit(&mut out);
/// assert_eq!(out, b"hello\r\n");
/// replay.handle_input(b"pi", Instant::now());
/// replay.handle_input(b"ng", Instant::now());
/// out.clear();
/// replay.poll_transmit(&mut out);
/// assert_eq!(out, b"pong\r\n");
/// assert!(replay.is_complete());
/// ```
#[derive(Debug, Clone)]
pub struct ReplaySession {
    steps: Vec<Step>,
    next: usize,
    matched: usize,
    out: Vec<u8>,
    mismatch: Option<Mismatch>,
    hung_up: bool,
}

impl ReplaySession {
    /// A session at the start of `transcript`.
    pub fn new(transcript: &Transcript) -> Self {
        let mut session = ReplaySession {
            steps: transcript.steps.clone(),
            next: 0,
            matched: 0,
            out: Vec::new(),
            mismatch: None,
            hung_up: false,
        };
        session.send_replies();
        session
    }

    /// Bytes the client wrote.
    pub fn handle_input(&mut self, mut input: &[u8], _now: Instant) {
        while !input.is_empty() && !self.is_finished() {
            let Some(Step::Send(expected)) = self.steps.get(self.next) else {
                let step = self.next;
                self.mismatch = Some(Mismatch { step, offset: 0, expected: Vec::new(), got: cut(input) });
                return;
            };
            let wanted = &expected[self.matched..];
            let n = wanted.len().min(input.len());
            if let Some(i) = (0..n).find(|&i| wanted[i] != input[i]) {
                let (step, offset) = (self.next, self.matched + i);
                self.mismatch = Some(Mismatch { step, offset, expected: cut(&wanted[i..]), got: cut(&input[i..]) });
                return;
            }
            self.matched += n;
            input = &input[n..];
            if self.matched == expected.len() {
                self.next += 1;
                self.matched = 0;
                self.send_replies();
            }
        }
    }

    /// The client hung up.
    pub fn handle_eof(&mut self) {
        self.hung_up = true;
    }

    /// Does nothing: a replay keeps no deadlines.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// Always `None`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Appends the bytes to write now to `out`; returns how many.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.out.len();
        out.append(&mut self.out);
        n
    }

    /// True while the client may write.
    pub fn wants_input(&self) -> bool {
        !self.is_finished()
    }

    /// True once the connection is to be closed: the client hung up, or wrote something else than the
    /// transcript.
    pub fn is_finished(&self) -> bool {
        self.hung_up || self.mismatch.is_some()
    }

    /// True once every step has been played.
    pub fn is_complete(&self) -> bool {
        self.mismatch.is_none() && self.next == self.steps.len()
    }

    /// The first difference, if the client wrote something else than the transcript.
    pub fn mismatch(&self) -> Option<&Mismatch> {
        self.mismatch.as_ref()
    }

    /// How many steps have been played.
    pub fn steps_played(&self) -> usize {
        self.next
    }

    fn send_replies(&mut self) {
        while let Some(Step::Recv(bytes)) = self.steps.get(self.next) {
            self.out.extend_from_slice(bytes);
            self.next += 1;
        }
    }
}

fn cut(bytes: &[u8]) -> Vec<u8> {
    bytes[..bytes.len().min(80)].to_vec()
}

impl Wire for ReplaySession {
    fn handle_input(&mut self, input: &[u8], now: Instant) {
        ReplaySession::handle_input(self, input, now)
    }
    fn handle_eof(&mut self) {
        ReplaySession::handle_eof(self)
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        ReplaySession::poll_transmit(self, out)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn wants_input(&self) -> bool {
        ReplaySession::wants_input(self)
    }
    fn is_finished(&self) -> bool {
        ReplaySession::is_finished(self)
    }
    fn event(&mut self, _name: &str, _data: Option<&Value>, _now: Instant) {}
    fn take_commands(&mut self) -> Vec<Command> {
        Vec::new()
    }
    fn take_problems(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// A replay failed: the client wrote something else, or stopped before the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The client wrote something else than the transcript.
    #[error("the client differs from the transcript at {0}")]
    Mismatch(Mismatch),
    /// The client hung up before the transcript's end.
    #[error("the client stopped after {played} of {steps} steps")]
    Incomplete {
        /// Steps played.
        played: usize,
        /// Steps in the transcript.
        steps: usize,
    },
    /// No client connected.
    #[error("no client connected")]
    NoClient,
}

/// How each connection of a [`ReplayServer`] ended.
type Outcomes = Arc<Mutex<Vec<Result<(), ReplayError>>>>;

struct TranscriptSessions {
    transcript: Transcript,
    outcomes: Outcomes,
}

impl Sessions for TranscriptSessions {
    type Session = ReplaySession;

    fn open(&mut self, _now: Instant, _wall: Timestamp) -> ReplaySession {
        ReplaySession::new(&self.transcript)
    }

    fn close(&mut self, session: ReplaySession) {
        let outcome = match session.mismatch() {
            Some(m) => Err(ReplayError::Mismatch(m.clone())),
            None if !session.is_complete() => {
                Err(ReplayError::Incomplete { played: session.steps_played(), steps: self.transcript.steps.len() })
            }
            None => Ok(()),
        };
        self.outcomes.lock().unwrap_or_else(PoisonError::into_inner).push(outcome);
    }
}

/// A server on a unix socket that replays a [`Transcript`] to each client, one at a time, checking what the
/// client writes against it.
///
/// ```
/// use qmp_test_kit::{ReplayServer, Transcript};
/// use serde_json::Value;
///
/// // Recorded with RecordingProxy: our client's query-version against qemu-storage-daemon 10.0.2.
/// let transcript = Transcript::load("tests/data/query-version.json")?;
/// let replay = ReplayServer::start(transcript)?;
/// let mut qmp = qmp_blocking::Client::connect_unix(replay.path(), Default::default())?;
/// let version: Value = qmp.execute("query-version", ())?;
/// assert_eq!(version["qemu"]["major"], 10);
/// drop(qmp);
/// replay.finish()?; // every step played, no difference
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ReplayServer {
    handle: Handle,
    outcomes: Outcomes,
}

impl ReplayServer {
    /// Replays `transcript` on a fresh socket in a temporary directory.
    pub fn start(transcript: Transcript) -> io::Result<ReplayServer> {
        let outcomes = Outcomes::default();
        let handle = Handle::start(TranscriptSessions { transcript, outcomes: outcomes.clone() })?;
        Ok(ReplayServer { handle, outcomes })
    }

    /// The socket to connect to.
    pub fn path(&self) -> &Path {
        self.handle.path()
    }

    /// Stops serving (once the client has hung up) and tells whether every connection played the whole
    /// transcript without a difference.
    pub fn finish(mut self) -> Result<(), ReplayError> {
        // The replay thread notices the hang-up in its own time: stopping it closes the session either way.
        let _ = self.handle.stop();
        let outcomes = std::mem::take(&mut *self.outcomes.lock().unwrap_or_else(PoisonError::into_inner));
        if outcomes.is_empty() {
            return Err(ReplayError::NoClient);
        }
        outcomes.into_iter().collect()
    }
}
