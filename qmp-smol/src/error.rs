//! [`Error`]: everything a call can fail with, in the core's three tiers plus I/O, decoding and fd passing (the
//! same variants as `qmp-tokio`'s).

use qmp_proto::{ConnectionError, QmpError, RequestError, UsageError};

/// Why a call failed.
///
/// - [`Error::Qmp`]: the server rejected this command; the connection is fine.
/// - [`Error::Usage`]: the call was wrong (bad arguments, OOB not negotiated, too many pending); nothing was sent.
/// - [`Error::TimedOut`]: this command got no reply in time; its late reply will be ignored.
/// - [`Error::Request`]: this command failed on the client side (its reply was over the size limit).
/// - [`Error::Decode`]: the reply arrived but did not fit the requested type.
/// - [`Error::Connection`]: the connection is over; every later call returns the same cause.
/// - [`Error::Connect`]: the socket could not be opened at all.
/// - [`Error::FdPassing`]: the file descriptor could not be duplicated, or the transport cannot pass one.
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
    /// Opening the socket failed, or timed out.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The file descriptor could not be passed (`ErrorKind::Unsupported`: the transport is not a unix socket).
    #[error("cannot pass the file descriptor: {0}")]
    FdPassing(#[source] std::io::Error),
}

impl From<UsageError> for Error {
    fn from(e: UsageError) -> Self {
        match e {
            UsageError::Closed(cause) => Error::Connection(cause),
            other => Error::Usage(other),
        }
    }
}
