//! What the command prints: JSON values and events on stdout, failures (with an exit status) on stderr.
//!
//! Every write to stdout goes through [`emit`]: when the reader has gone (`qmp ... | head -1`), the write fails
//! with `EPIPE` (Rust ignores `SIGPIPE`) and the program exits at once with status 0, quietly: the reader took
//! what it wanted, so a script under `set -o pipefail` does not fail. [`stdout_closed`] lets a command that would
//! otherwise wait (`qmp events`) notice the closed pipe before it has anything to write.

use std::io::Write;
use std::process::ExitCode;

use qmp_blocking::{Error, ServerEvent};
use serde_json::{json, Value};

/// Prints a value, indented or on one line.
pub fn print_value(value: &Value, compact: bool) {
    let text = if compact { value.to_string() } else { serde_json::to_string_pretty(value).unwrap_or_default() };
    emit(text);
}

/// Prints an event as one JSON line, in QEMU's own shape.
pub fn print_event(event: &ServerEvent) {
    emit(event_json(event));
}

/// Writes one line to stdout and flushes it; exits with status 0 if the reader has closed the pipe, and with
/// status 3 on any other write error (a full disk, say), never with a panic.
pub fn emit(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("qmp: writing to stdout: {e}");
        std::process::exit(3);
    }
}

/// Whether stdout is a pipe or socket whose reader has gone (poll reports an error or hang-up at once).
pub fn stdout_closed() -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
    let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
}

/// An event in QEMU's own shape: `{"event": ..., "data": ..., "timestamp": {...}}`.
pub fn event_json(event: &ServerEvent) -> Value {
    let mut v = json!({"event": event.name});
    if let Some(data) = event.data.as_ref().and_then(|d| d.as_value().ok()) {
        v["data"] = data;
    }
    if let Some(t) = event.timestamp {
        v["timestamp"] = json!({"seconds": t.seconds, "microseconds": t.microseconds});
    }
    v
}

/// Why the command failed, and its exit status.
#[derive(Debug)]
pub enum Failure {
    /// The server rejected the command (exit 1).
    Server(qmp_blocking::QmpError),
    /// A job failed, with QEMU's error, or does not exist (exit 1).
    Job(String),
    /// The command line was wrong (exit 2).
    Usage(String),
    /// The connection failed, closed or timed out (exit 3).
    Connection(String),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Server(_) | Failure::Job(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Connection(_) => 3,
        })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Server(e) => write!(f, "{}: {}", e.class, e.desc),
            Failure::Job(s) | Failure::Usage(s) | Failure::Connection(s) => f.write_str(s),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Qmp(e) => Failure::Server(e),
            Error::Usage(e) => Failure::Usage(e.to_string()),
            other => Failure::Connection(other.to_string()),
        }
    }
}
