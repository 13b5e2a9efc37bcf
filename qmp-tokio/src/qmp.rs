//! [`Qmp`]: a QMP connection handle. Cheap to clone; every clone talks to the same driver task.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use qmp_proto::adapter::{fd_passing_unsupported, AddFdArgs, AddFdInfo, Command, GetFdArgs};
use qmp_proto::{ConnectionError, Greeting, Mode, ProtocolViolation, RawJson};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs, UnixStream};

use crate::events::Events;
use crate::handle::Handle;
use crate::options::Options;
use crate::start::start;
use crate::transport::{Plain, Transport};
use crate::Error;

/// A QMP connection. `Clone + Send + Sync`: share it between tasks, every clone uses the same connection.
///
/// One driver task, spawned on the current tokio runtime when the connection is made, owns the socket; the methods
/// only send it requests and wait. The connection closes when [`close`](Self::close) is called, when the server
/// hangs up, or when the last clone is dropped.
///
/// ```no_run
/// # async fn example() -> Result<(), qmp_tokio::Error> {
/// use qmp_tokio::{Options, Qmp};
/// use serde_json::Value;
///
/// let qmp = Qmp::connect_unix("/run/qemu/vm0.qmp", Options::default()).await?;
/// let status: Value = qmp.execute("query-status", ()).await?;
/// let (a, b) = tokio::join!(qmp.execute::<Value>("query-version", ()), qmp.execute::<Value>("query-kvm", ()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Qmp {
    inner: Arc<Inner>,
}

struct Inner {
    handle: Handle,
    greeting: Greeting,
    oob: bool,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("version", &self.inner.greeting.version)
            .field("oob", &self.inner.oob)
            .field("closed", &self.inner.handle.connection_error())
            .finish()
    }
}

impl Qmp {
    /// Connects to a QMP unix socket (`-qmp unix:PATH,server=on,wait=off`) and completes the handshake within
    /// [`Options::connect_timeout`]. File descriptors can be passed on this connection ([`send_fd`](Self::send_fd)).
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before it returns, the half-made connection is closed.
    pub async fn connect_unix(path: impl AsRef<Path>, options: Options) -> Result<Self, Error> {
        let path = path.as_ref();
        tracing::debug!(path = %path.display(), "connecting to QMP unix socket");
        let stream = crate::start::connect_unix(path, &options).await?;
        Self::from_unix_stream(stream, options).await
    }

    /// Connects to a QMP TCP socket (`-qmp tcp:HOST:PORT,server=on,wait=off`) and completes the handshake.
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`connect_unix`](Self::connect_unix).
    pub async fn connect_tcp(addr: impl ToSocketAddrs, options: Options) -> Result<Self, Error> {
        let stream = tokio::time::timeout(options.get_connect_timeout(), TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Connect(std::io::ErrorKind::TimedOut.into()))?
            .map_err(Error::Connect)?;
        stream.set_nodelay(true).map_err(Error::Connect)?;
        tracing::debug!(peer = ?stream.peer_addr().ok(), "connected to QMP over TCP");
        Self::start(Plain(stream), options, false).await
    }

    /// Speaks QMP over any connected byte stream (TLS, vsock, a pipe, `tokio::io::duplex` in tests) and completes
    /// the handshake. File descriptors cannot be passed over it; use [`from_unix_stream`](Self::from_unix_stream)
    /// for a unix socket.
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`connect_unix`](Self::connect_unix).
    pub async fn from_stream<S>(io: S, options: Options) -> Result<Self, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::start(Plain(io), options, false).await
    }

    /// Speaks QMP over a connected unix socket, with file descriptor passing.
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`connect_unix`](Self::connect_unix).
    pub async fn from_unix_stream(stream: UnixStream, options: Options) -> Result<Self, Error> {
        Self::start(stream, options, true).await
    }

    async fn start<T: Transport>(io: T, options: Options, fd_passing: bool) -> Result<Self, Error> {
        let (handle, ready) = start(io, Mode::Qmp, options, fd_passing).await?;
        // A QMP session is ready only after its greeting.
        let greeting = ready.greeting.ok_or(Error::Connection(ConnectionError::BadGreeting("none".into())))?;
        Ok(Qmp { inner: Arc::new(Inner { handle, greeting, oob: ready.oob }) })
    }

    /// The server's greeting (QEMU version and offered capabilities).
    pub fn greeting(&self) -> &Greeting {
        &self.inner.greeting
    }

    /// Whether out-of-band execution was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.inner.oob
    }

    fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    async fn run<T: DeserializeOwned>(&self, command: Result<Command, Error>) -> Result<T, Error> {
        Ok(self.handle().call(command?).await?.deserialize()?)
    }

    /// Runs a command and deserializes its `return` value into `T`. Pass `()` for no arguments, or anything that
    /// serializes to a JSON object. Commands that return nothing answer `{}`: use `serde_json::Value` or
    /// `serde::de::IgnoredAny` as `T`. The deadline is [`Options::command_timeout`].
    ///
    /// # Cancel safety
    /// Cancel-safe. Dropping the future never leaves part of a command on the wire and never shifts replies: a
    /// command not written yet is withdrawn, one already written runs and its reply is discarded.
    pub async fn execute<T: DeserializeOwned>(&self, command: &str, args: impl Serialize) -> Result<T, Error> {
        let opts = self.handle().opts(self.handle().options.get_command_timeout());
        self.run(Command::new(command, &args, opts)).await
    }

    /// Runs a command with raw JSON arguments (an object, or `None`) and returns the raw `return` value.
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`execute`](Self::execute).
    pub async fn execute_raw(&self, command: &str, args: Option<&RawJson>) -> Result<RawJson, Error> {
        let opts = self.handle().opts(self.handle().options.get_command_timeout());
        self.handle().call(Command::raw(command, args, opts)).await
    }

    /// Runs a command out of band (`exec-oob`): it may overtake in-band commands still running. Needs OOB
    /// negotiated ([`oob_enabled`](Self::oob_enabled)) and a command QEMU allows out of band (`query-yank`,
    /// `migrate-pause`, ...).
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`execute`](Self::execute).
    pub async fn execute_oob<T: DeserializeOwned>(&self, command: &str, args: impl Serialize) -> Result<T, Error> {
        let opts = self.handle().opts(self.handle().options.get_command_timeout()).oob();
        self.run(Command::new(command, &args, opts)).await
    }

    /// Runs a command with its own timeout (`None`: wait forever) instead of [`Options::command_timeout`].
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`execute`](Self::execute).
    pub async fn execute_with_timeout<T: DeserializeOwned>(
        &self,
        command: &str,
        args: impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<T, Error> {
        let opts = self.handle().opts(timeout);
        self.run(Command::new(command, &args, opts)).await
    }

    /// Runs a command that takes a file descriptor (`getfd`, `add-fd`), passing a duplicate of `fd` with it over
    /// SCM_RIGHTS. The descriptor is written right before the command, in order with everything else on the
    /// socket; only one such command is on the wire at a time (QEMU keeps only the latest descriptor it
    /// received). Needs a unix socket ([`connect_unix`](Self::connect_unix), [`from_unix_stream`](Self::from_unix_stream),
    /// [`Listener::accept`](crate::Listener::accept)); otherwise fails with [`Error::FdPassing`] and sends nothing.
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`execute`](Self::execute). If the descriptor was already written, QEMU keeps it under
    /// the command's name or fd set as if the call had completed.
    pub async fn execute_with_fd<T: DeserializeOwned>(
        &self,
        command: &str,
        args: impl Serialize,
        fd: impl AsFd,
    ) -> Result<T, Error> {
        if !self.handle().fd_passing {
            return Err(Error::FdPassing(fd_passing_unsupported()));
        }
        let fd = fd.as_fd().try_clone_to_owned().map_err(Error::FdPassing)?;
        let opts = self.handle().opts(self.handle().options.get_command_timeout()).pass_fd();
        let command = Command::new(command, &args, opts)?;
        Ok(self.handle().call_with_fd(command, Some(fd)).await?.deserialize()?)
    }

    /// Passes `fd` to QEMU under `name` (`getfd`), for commands that take an fd name (`add_client`,
    /// `netdev_add` with `fd=NAME`, ...). Release it with `closefd`.
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`execute_with_fd`](Self::execute_with_fd).
    pub async fn send_fd(&self, name: &str, fd: impl AsFd) -> Result<(), Error> {
        self.execute_with_fd::<serde::de::IgnoredAny>("getfd", GetFdArgs { fdname: name }, fd).await.map(drop)
    }

    /// Adds `fd` to an fd set (`add-fd`): to `fdset_id`, or a new set when `None`; `opaque` is a free-form note
    /// shown by `query-fdsets`. Block devices can then open `/dev/fdset/ID`.
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`execute_with_fd`](Self::execute_with_fd).
    pub async fn add_fd(&self, fd: impl AsFd, fdset_id: Option<u64>, opaque: Option<&str>) -> Result<AddFdInfo, Error> {
        self.execute_with_fd("add-fd", AddFdArgs { fdset_id, opaque }, fd).await
    }

    /// A new subscription to the server's events, from now on. Every subscription gets every event; one that falls
    /// more than [`Options::event_buffer`] behind gets [`EventItem::Lagged`](crate::EventItem::Lagged) in place of
    /// what it lost. Nobody reading events never slows commands down.
    pub fn events(&self) -> Events {
        self.handle().events(None)
    }

    /// Like [`events`](Self::events), only the events with one of these names (for example `["JOB_STATUS_CHANGE"]`).
    pub fn events_named(&self, names: &[&str]) -> Events {
        self.handle().events(Some(names.iter().map(|n| (*n).to_owned()).collect()))
    }

    /// Takes the protocol violations seen so far (the most recent 64): malformed messages, unknown ids, id-less
    /// errors, oversized messages. The session survived each of them.
    pub fn take_violations(&self) -> Vec<ProtocolViolation> {
        self.handle().take_violations()
    }

    /// Closes the connection and waits until it is closed. Commands still pending end with
    /// [`ConnectionError::Local`] at once; later calls fail with it too. The socket is closed gracefully: the
    /// write half is shut down, and what the server still sends is read and discarded until it closes its side
    /// (at most 1 s), so the server never sees a reset.
    ///
    /// # Cancel safety
    /// Cancel-safe: the close is requested at the first poll and completes even if the future is dropped.
    pub async fn close(&self) {
        self.handle().close().await
    }

    /// Waits until the connection is over and returns why (the server hung up, a timeout in the handshake, a
    /// transport error, or [`close`](Self::close)).
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn closed(&self) -> ConnectionError {
        self.handle().closed().await
    }

    /// Why the connection ended, if it has.
    pub fn connection_error(&self) -> Option<ConnectionError> {
        self.handle().connection_error()
    }

    #[cfg(feature = "qapi")]
    pub(crate) fn handle_for_typed(&self) -> &Handle {
        self.handle()
    }
}
