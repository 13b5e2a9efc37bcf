//! What a handle hands the driver: a [`Command`] built (and its arguments serialized) in the caller's task, so
//! the driver never runs user `Serialize` code; and the arguments and answer of the file descriptor commands.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

use qmp_proto::{Client, ExecuteOptions, RawJson, RequestId, UsageError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::Error;

/// A call on the core, made in two places: a handle builds it (serializing the arguments there, so the task that
/// owns the [`Client`] never runs user `Serialize` code), and that task [`submit`](Self::submit)s it when the
/// core has room. Handles send these to the driver.
#[derive(Debug)]
pub(crate) struct Command(Call);

#[derive(Debug)]
enum Call {
    Execute { name: String, args: Args, opts: ExecuteOptions },
    GuestSync { nonce: u32, opts: ExecuteOptions },
}

/// A command's arguments, serialized by the caller.
#[derive(Debug)]
enum Args {
    None,
    Value(Box<RawValue>),
    Raw(RawJson),
}

impl Command {
    /// `command` with arguments that serialize to a JSON object (`()` for none), for
    /// [`Client::execute`]. Fails with [`UsageError::InvalidArguments`] when they do not serialize.
    pub(crate) fn new(command: &str, args: &impl Serialize, opts: ExecuteOptions) -> Result<Self, Error> {
        let args = serde_json::value::to_raw_value(args)
            .map_err(|e| Error::Usage(UsageError::InvalidArguments(e.to_string())))?;
        Ok(Command(Call::Execute { name: command.to_owned(), args: Args::Value(args), opts }))
    }

    /// `command` with raw JSON arguments (an object, or `None`), for [`Client::execute_raw`].
    pub(crate) fn raw(command: &str, args: Option<&RawJson>, opts: ExecuteOptions) -> Self {
        Self::raw_owned(command.to_owned(), args.cloned(), opts)
    }

    /// [`raw`](Self::raw), taking the name and arguments it is given instead of copying them (the proxy, which
    /// owns both already).
    pub(crate) fn raw_owned(command: String, args: Option<RawJson>, opts: ExecuteOptions) -> Self {
        Command(Call::Execute { name: command, args: args.map_or(Args::None, Args::Raw), opts })
    }

    /// `guest-sync-delimited` with `nonce`, for [`Client::guest_sync`].
    pub(crate) fn guest_sync(nonce: u32, opts: ExecuteOptions) -> Self {
        Command(Call::GuestSync { nonce, opts })
    }

    /// The command's deadline, if it has one (to honour it while the command waits for room in the core).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.0 {
            Call::Execute { opts, .. } | Call::GuestSync { opts, .. } => opts.get_deadline(),
        }
    }

    /// The nonce, if this is a `guest-sync-delimited`.
    pub(crate) fn guest_sync_nonce(&self) -> Option<u32> {
        match self.0 {
            Call::GuestSync { nonce, .. } => Some(nonce),
            Call::Execute { .. } => None,
        }
    }

    /// Hands the command to `core`: its request id, or why the core refused it ([`UsageError::QueueFull`]: no
    /// room yet, try again later).
    pub(crate) fn submit(&self, core: &mut Client) -> Result<RequestId, UsageError> {
        match &self.0 {
            Call::Execute { name, args, opts } => match args {
                Args::None => core.execute(name, None::<&()>, *opts),
                Args::Value(value) => core.execute(name, Some(&**value), *opts),
                Args::Raw(raw) => core.execute_raw(name, Some(raw), *opts),
            },
            Call::GuestSync { nonce, opts } => core.guest_sync(*nonce, *opts),
        }
    }
}

/// The arguments of `getfd`: the name QEMU files the passed descriptor under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GetFdArgs<'a> {
    /// The name, for commands that take an fd name (`add_client`, `netdev_add` with `fd=NAME`, ...).
    pub fdname: &'a str,
}

/// The arguments of `add-fd`: the fd set to add the passed descriptor to, and a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AddFdArgs<'a> {
    /// The fd set; `None`: a new one.
    #[serde(rename = "fdset-id", skip_serializing_if = "Option::is_none")]
    pub fdset_id: Option<u64>,
    /// A free-form note shown by `query-fdsets`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opaque: Option<&'a str>,
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

/// A fresh nonce for `guest-sync-delimited`: std's per-process random hasher keys mixed with the time (no extra
/// dependency). The core takes the nonce it is given; randomness is the caller's, as the clock is.
pub(crate) fn random_nonce() -> u32 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    (h.finish() >> 33) as u32
}
