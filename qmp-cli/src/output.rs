//! What the command prints: JSON values and events on stdout, failures (with an exit status) on stderr.

use std::process::ExitCode;

use qmp_blocking::{Error, ServerEvent};
use serde_json::{json, Value};

/// Prints a value, indented or on one line.
pub fn print_value(value: &Value, compact: bool) {
    let text = if compact { value.to_string() } else { serde_json::to_string_pretty(value).unwrap_or_default() };
    println!("{text}");
}

/// Prints an event as one JSON line, in QEMU's own shape.
pub fn print_event(event: &ServerEvent) {
    println!("{}", event_json(event));
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
