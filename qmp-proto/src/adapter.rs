//! The vocabulary every adapter shares: the [`Error`] a call fails with, and the small helpers each adapter would
//! otherwise write again ([`random_nonce`], [`AddFdInfo`]).
//!
//! Nothing here does I/O or is used by the state machine; `qmp-blocking`, `qmp-tokio` and `qmp-smol` re-export
//! these types under their own names (`qmp_tokio::Error`, ...), the way quinn re-exports quinn-proto's
//! configuration types. Where an adapter gives an item a meaning of its own, the item's docs say so in one
//! sentence per adapter.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use serde::Deserialize;

use crate::{ConnectionError, QmpError, RequestError, UsageError};

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

/// What `add-fd` answers: where QEMU filed the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct AddFdInfo {
    /// The fd set (given, or allocated by QEMU).
    #[serde(rename = "fdset-id")]
    pub fdset_id: u64,
    /// The descriptor's number inside QEMU (what `/dev/fdset/N` opens resolve to).
    pub fd: i64,
}

/// A fresh nonce for `guest-sync-delimited` ([`Client::guest_sync`](crate::Client::guest_sync)): std's
/// per-process random hasher keys, mixed with the time, so no extra dependency is needed. A utility for adapters;
/// the state machine never calls it (it takes the nonce it is given).
pub fn random_nonce() -> u32 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    (h.finish() >> 33) as u32
}
