//! [`GuestAgent`]: a client for the QEMU guest agent (qemu-ga), synchronised on connect.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use qmp_proto::adapter::{random_nonce, Command};
use qmp_proto::{ConnectionError, ExecuteOptions, Mode, ProtocolViolation, RawJson};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

use crate::handle::{deadline, Handle};
use crate::options::Options;
use crate::start::start;
use crate::transport::{Plain, Transport};
use crate::Error;

/// A guest-agent connection. `Clone + Send + Sync`, like [`Qmp`](crate::Qmp).
///
/// The agent's socket is a byte pipe that may still hold a previous client's leftovers, and the agent may not be
/// running at all (there is no greeting to wait for), so connecting runs `guest-sync-delimited` with a fresh
/// random nonce before anything else, within [`Options::connect_timeout`].
///
/// ```no_run
/// # async fn example() -> Result<(), qmp_tokio::Error> {
/// use qmp_tokio::{GuestAgent, Options};
/// let ga = GuestAgent::connect_unix("/run/qemu/vm0.qga", Options::default()).await?;
/// let info: serde_json::Value = ga.execute("guest-info", ()).await?;
/// println!("agent {}", info["version"]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GuestAgent {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for GuestAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAgent").field("closed", &self.handle.connection_error()).finish()
    }
}

impl GuestAgent {
    /// Connects to the agent's unix socket (the host end of its virtio-serial channel, or `qemu-ga -m unix-listen`)
    /// and synchronises.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before it returns, the half-made connection is closed.
    pub async fn connect_unix(path: impl AsRef<Path>, options: Options) -> Result<Self, Error> {
        let stream = crate::start::connect_unix(path.as_ref(), &options).await?;
        Self::from_unix_stream(stream, options).await
    }

    /// Speaks the guest-agent protocol over any connected byte stream, synchronising first.
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`connect_unix`](Self::connect_unix).
    pub async fn from_stream<S>(io: S, options: Options) -> Result<Self, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::start(Plain(io), options).await
    }

    /// Speaks the guest-agent protocol over a connected unix socket, synchronising first.
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`connect_unix`](Self::connect_unix).
    pub async fn from_unix_stream(stream: UnixStream, options: Options) -> Result<Self, Error> {
        Self::start(stream, options).await
    }

    async fn start<T: Transport>(io: T, options: Options) -> Result<Self, Error> {
        let timeout = options.get_connect_timeout();
        let (handle, _) = start(io, Mode::GuestAgent, options, false).await?;
        let agent = GuestAgent { handle: Arc::new(handle) };
        agent.sync(timeout).await?;
        Ok(agent)
    }

    /// Resynchronises with `guest-sync-delimited` and a fresh random nonce: stale output of earlier commands (or
    /// clients) is discarded. Other commands wait until it is done.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped, the sync is abandoned and later commands go on.
    pub async fn sync(&self, timeout: Duration) -> Result<(), Error> {
        let opts = ExecuteOptions::new().deadline_opt(deadline(Some(timeout)));
        self.handle.call(Command::guest_sync(random_nonce(), opts)).await.map(drop)
    }

    /// Runs a command and deserializes its `return` value. Commands that never reply on success
    /// (`guest-shutdown`, `guest-suspend-*`) return as soon as they are sent, with `{}`.
    ///
    /// # Cancel safety
    /// Cancel-safe. Dropping the future never leaves part of a command on the wire: a command not written yet is
    /// withdrawn, one already written runs and its reply is discarded.
    pub async fn execute<T: DeserializeOwned>(&self, command: &str, args: impl Serialize) -> Result<T, Error> {
        self.execute_with_timeout(command, args, self.handle.options.get_command_timeout()).await
    }

    /// Runs a command with its own timeout (`None`: wait forever).
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`execute`](Self::execute).
    pub async fn execute_with_timeout<T: DeserializeOwned>(
        &self,
        command: &str,
        args: impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<T, Error> {
        let command = Command::new(command, &args, self.handle.opts(timeout))?;
        Ok(self.handle.call(command).await?.deserialize()?)
    }

    /// Runs a command with raw JSON arguments and returns the raw `return` value.
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`execute`](Self::execute).
    pub async fn execute_raw(&self, command: &str, args: Option<&RawJson>) -> Result<RawJson, Error> {
        let opts = self.handle.opts(self.handle.options.get_command_timeout());
        self.handle.call(Command::raw(command, args, opts)).await
    }

    /// Sends a command that the agent does not answer (any command, not only the ones it never answers on
    /// success); returns once it is handed to the connection for writing.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before it returned, the command may or may not have been sent.
    pub async fn execute_no_reply(&self, command: &str, args: impl Serialize) -> Result<(), Error> {
        let opts = ExecuteOptions::new().expect_reply(false);
        self.handle.call(Command::new(command, &args, opts)?).await.map(drop)
    }

    /// Takes the protocol violations seen so far (the most recent 64).
    pub fn take_violations(&self) -> Vec<ProtocolViolation> {
        self.handle.take_violations()
    }

    /// Closes the connection and waits until it is closed; pending commands end with [`ConnectionError::Local`].
    /// The write half is shut down first and the agent's remaining output read until it closes its side (at most
    /// 1 s): qemu-ga 7.2 exits when a client's close resets the connection with a reply still unread.
    ///
    /// # Cancel safety
    /// Cancel-safe: the close is requested at the first poll and completes even if the future is dropped.
    pub async fn close(&self) {
        self.handle.close().await
    }

    /// Waits until the connection is over and returns why.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn closed(&self) -> ConnectionError {
        self.handle.closed().await
    }

    /// Why the connection ended, if it has.
    pub fn connection_error(&self) -> Option<ConnectionError> {
        self.handle.connection_error()
    }

    #[cfg(feature = "qapi")]
    pub(crate) fn handle_for_typed(&self) -> &Handle {
        &self.handle
    }
}
