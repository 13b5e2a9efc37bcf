//! Errors, in three tiers, as rustls and h11 sort them:
//!
//! 1. [`QmpError`]: the server rejected one command. Arrives in a reply; the session is fine.
//! 2. [`UsageError`]: the caller misused the API (bad arguments, OOB not negotiated, queue full). Returned at
//!    once from the call; nothing was sent and the session is intact.
//! 3. [`ConnectionError`]: the connection is broken. Reported once in [`ClientEvent::Closed`], then returned
//!    again by every later call (sticky), like rustls remembers a fatal alert.
//!
//! Between them sits [`ProtocolViolation`]: the server sent something wrong that the session survives (one
//! bad message, an unknown id, an id-less error). It is reported as an event and the session goes on.
//!
//! [`ClientEvent::Closed`]: crate::ClientEvent::Closed

use bytes::Bytes;
use serde::Deserialize;

use crate::raw::RawJson;

/// The server rejected a command: the `error` member of its reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {desc}")]
pub struct QmpError {
    /// Error class, for example `GenericError`, `CommandNotFound`, `DeviceNotFound`. Empty if the server omitted it.
    pub class: String,
    /// Human-readable description. Empty if the server omitted it.
    pub desc: String,
    /// The whole `error` object as received (it may carry more members than `class` and `desc`).
    pub raw: RawJson,
}

impl QmpError {
    /// Reads `class` and `desc` out of an `error` object, tolerating missing or mistyped members.
    pub(crate) fn from_body(raw: RawJson) -> Self {
        #[derive(Deserialize, Default)]
        struct Body {
            #[serde(default)]
            class: Option<String>,
            #[serde(default)]
            desc: Option<String>,
        }
        let body: Body = raw.deserialize().unwrap_or_default();
        QmpError { class: body.class.unwrap_or_default(), desc: body.desc.unwrap_or_default(), raw }
    }
}

/// The caller misused the API. Nothing was sent; the session is intact.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The arguments did not serialize to a JSON object (QMP wants an object, or nothing).
    #[error("command arguments must serialize to a JSON object: {0}")]
    InvalidArguments(String),
    /// The command name is empty.
    #[error("empty command name")]
    EmptyCommand,
    /// Out-of-band execution was asked for, but OOB has not been negotiated on this connection (yet).
    #[error("out-of-band execution needs the oob capability, which this session has not negotiated")]
    OobNotNegotiated,
    /// Out-of-band execution is not a thing in guest-agent mode.
    #[error("out-of-band execution is not available in guest-agent mode")]
    OobInGuestAgentMode,
    /// Too many commands are pending (queued or in flight).
    #[error("too many pending commands (limit {limit})")]
    QueueFull {
        /// The configured limit.
        limit: usize,
    },
    /// `guest_sync` is only for guest-agent mode.
    #[error("guest-sync is only available in guest-agent mode")]
    NotGuestAgent,
    /// The connection is closed; the cause is the sticky [`ConnectionError`].
    #[error("connection closed: {0}")]
    Closed(ConnectionError),
    /// [`Client::close_gracefully`](crate::Client::close_gracefully) was called: the commands accepted before
    /// it still run, new ones are refused.
    #[error("the connection is closing: no new commands")]
    Closing,
    /// [`Config::command_timeout`](crate::Config::command_timeout) is set, but the command carries neither a
    /// deadline nor the current time ([`ExecuteOptions::now`](crate::ExecuteOptions::now)) to start it from:
    /// the core has no clock of its own.
    #[error("a default command timeout is configured: pass ExecuteOptions::now(now) or a deadline")]
    NoClock,
}

/// A single request failed on the client side; the session goes on. Arrives in
/// [`ClientEvent::Failed`](crate::ClientEvent::Failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The reply was longer than the maximum message size; it was skipped unread. Raise
    /// [`Config::max_message_size`](crate::Config::max_message_size) to receive it.
    #[error("reply of {len} bytes exceeds the {limit}-byte message limit")]
    ReplyTooLarge {
        /// The reply's length in bytes.
        len: u64,
        /// The configured limit.
        limit: usize,
    },
}

/// Why the connection ended. Sticky: once it happened, every later call reports the same cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The server closed the stream between messages.
    #[error("the server closed the connection")]
    Eof,
    /// The server closed the stream in the middle of a message.
    #[error("the server closed the connection in the middle of a message ({buffered} bytes of it received)")]
    EofMidMessage {
        /// Bytes of the unfinished message that had arrived.
        buffered: u64,
    },
    /// No greeting arrived before the handshake deadline (is this a guest-agent socket, or is another client
    /// connected? QEMU greets a second client only when the first leaves).
    #[error("no QMP greeting before the deadline")]
    GreetingTimeout,
    /// The greeting arrived but `qmp_capabilities` was not answered before the handshake deadline.
    #[error("capabilities negotiation not answered before the deadline")]
    NegotiationTimeout,
    /// The first message was not a well-formed greeting.
    #[error("expected a QMP greeting, got: {0}")]
    BadGreeting(String),
    /// The server rejected `qmp_capabilities`.
    #[error("capabilities negotiation failed: {0}")]
    NegotiationFailed(QmpError),
    /// The guest agent answered the connect-time `guest-sync-delimited`
    /// ([`Config::sync_on_connect`](crate::Config::sync_on_connect)) with an error, or with a reply over the
    /// message size limit.
    #[error("guest-sync-delimited failed: {0}")]
    SyncFailed(String),
    /// The guest agent did not echo the connect-time `guest-sync-delimited` nonce before the handshake deadline
    /// (is the agent running in the guest? is the channel the agent's?).
    #[error("the guest agent did not answer guest-sync-delimited before the deadline")]
    SyncTimeout,
    /// The local side closed the connection.
    #[error("closed locally")]
    Local,
    /// The transport failed (set by adapters through [`Client::handle_transport_error`](crate::Client::handle_transport_error)).
    #[error("transport error: {0}")]
    Transport(String),
}

/// Something the server sent that was wrong but not fatal. Reported as an event; the session goes on.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// A reply whose id matches no request (never sent, or already ended and not expected again).
    UnknownId {
        /// The id as the server wrote it.
        id: RawJson,
    },
    /// A success reply without an id. This client always sends ids, so it cannot be routed.
    IdlessReply {
        /// The `return` payload.
        value: RawJson,
    },
    /// An error without an id: QEMU raises these before it reads the id (JSON parse errors, non-object input).
    IdlessError(QmpError),
    /// A message that is not valid JSON (QEMU writes `inf` for an id of `1e400`). Its command, if it was a
    /// reply, cannot be told: it ends at its deadline.
    NotJson {
        /// The message.
        bytes: Bytes,
        /// What the JSON parser said.
        reason: String,
    },
    /// Valid JSON of a shape this client does not know (not an object, or an object with none of `QMP`,
    /// `event`, `return`, `error`, or one of those of the wrong type).
    UnknownShape {
        /// The message.
        bytes: Bytes,
        /// Its `id` member, exactly as sent, when it is an object that has one.
        id: Option<RawJson>,
        /// Why it was not understood.
        reason: String,
    },
    /// A message over the maximum message size. Its bytes were skipped, not buffered.
    Oversized {
        /// Its length in bytes.
        len: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A message cut short by a 0xFF byte (a guest-agent resynchronisation marker).
    Truncated {
        /// Bytes of it that arrived.
        len: u64,
    },
    /// A greeting arrived when none was expected (after negotiation, or in guest-agent mode).
    UnexpectedGreeting,
}

impl std::fmt::Display for ProtocolViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownId { id } => write!(f, "reply with unknown id {id}"),
            Self::IdlessReply { value } => write!(f, "reply without id: {value:?}"),
            Self::IdlessError(e) => write!(f, "error without id: {e}"),
            Self::NotJson { reason, bytes } => write!(f, "message of {} bytes is not JSON ({reason})", bytes.len()),
            Self::UnknownShape { reason, bytes, id: Some(id) } => {
                write!(f, "message of {} bytes with id {id} has an unknown shape ({reason})", bytes.len())
            }
            Self::UnknownShape { reason, bytes, id: None } => {
                write!(f, "message of {} bytes has an unknown shape ({reason})", bytes.len())
            }
            Self::Oversized { len, limit } => write!(f, "message of {len} bytes over the {limit}-byte limit skipped"),
            Self::Truncated { len } => write!(f, "message cut short by 0xFF after {len} bytes"),
            Self::UnexpectedGreeting => write!(f, "unexpected greeting"),
        }
    }
}
