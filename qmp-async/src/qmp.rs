//! [`Qmp`]: a QMP connection handle. Cheap to clone, `Send + Sync`; every clone talks to the same driver.

use std::fmt;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use qmp_proto::adapter::Options;
use qmp_proto::{Config, ConnectionError, Greeting, Mode, ProtocolViolation, RawJson};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::command::{AddFdArgs, AddFdInfo, Command, GetFdArgs};
use crate::connecting::Connecting;
use crate::driver::Driver;
use crate::events::Events;
use crate::handle::Handle;
use crate::runtime::{Runtime, Streams};
use crate::session::{self, Session};
use crate::shared::Shared;
use crate::transport::{fd_passing_unsupported, Transport};
use crate::Error;

/// A QMP connection. `Clone + Send + Sync`: share it between tasks, every clone uses the same connection.
///
/// One driver future owns the socket; the methods only send it requests and wait. The connection closes when
/// [`close`](Self::close) is called, when the server hangs up, or when the last clone is dropped.
///
/// `R` is the [`Runtime`] it runs on: `qmp_tokio::Qmp` and `qmp_smol::Qmp` name it for you, and add
/// `connect_unix`, `connect_tcp` and `from_stream` for their sockets.
///
/// ```no_run
/// # async fn example<R: qmp_async::Runtime>(qmp: qmp_async::Qmp<R>) -> Result<(), qmp_async::Error> {
/// use serde_json::Value;
///
/// let status: Value = qmp.execute("query-status", ()).await?;
/// let (a, b) = futures_lite::future::zip(
///     qmp.execute::<Value>("query-version", ()),
///     qmp.execute::<Value>("query-kvm", ()),
/// )
/// .await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Qmp<R> {
    inner: Arc<Handle<R>>,
}

impl<R: Runtime> fmt::Debug for Qmp<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qmp")
            .field("version", &self.inner.shared.greeting().map(|g| &g.version))
            .field("oob", &self.oob_enabled())
            .field("closed", &self.inner.connection_error())
            .finish()
    }
}

impl<R: Runtime> Session<R> for Qmp<R> {
    fn config(options: &Options) -> Config {
        options.to_config(Mode::Qmp)
    }

    fn established(shared: &Shared) -> bool {
        shared.is_ready() && shared.greeting().is_some()
    }

    fn from_handle(inner: Arc<Handle<R>>) -> Self {
        Qmp { inner }
    }
}

impl<R: Runtime> Qmp<R> {
    /// Builds a connection over `transport` without spawning anything: spawn the [`Driver`] on your executor,
    /// then await the [`Connecting`] for the handle. `runtime` provides the driver's clock and timer (its `spawn`
    /// is not used). This is the entry point for an executor without an adapter crate.
    pub fn with_driver<T: Transport>(transport: T, options: Options, runtime: R) -> (Connecting<Qmp<R>>, Driver) {
        session::with_driver(transport, options, runtime)
    }

    /// Speaks QMP over `transport`: spawns the driver on `runtime` and completes the handshake within
    /// [`Options::connect_timeout`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn from_transport<T: Transport>(transport: T, options: Options, runtime: R) -> Result<Qmp<R>, Error> {
        session::spawn(transport, options, runtime).await
    }

    /// Speaks QMP over any connected byte stream of the runtime (TLS, vsock, a child's joined stdio, the two
    /// FIFOs of `-qmp pipe:NAME`): spawns the driver and completes the handshake within
    /// [`Options::connect_timeout`]. File descriptors can be passed only if the stream is a unix socket that the
    /// runtime adapter knows as one.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn from_stream<S>(stream: S, options: Options) -> Result<Qmp<R>, Error>
    where
        R: Streams<S> + Default,
    {
        session::spawn(R::transport(stream), options, R::default()).await
    }

    /// The server's greeting (QEMU version and offered capabilities).
    pub fn greeting(&self) -> &Greeting {
        // A Qmp exists only once the driver has recorded the greeting (checked in `start`).
        self.inner.shared.greeting().expect("greeting recorded before the handshake completes")
    }

    /// Whether out-of-band execution was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.inner.shared.oob()
    }

    pub(crate) fn handle(&self) -> &Handle<R> {
        &self.inner
    }

    async fn run<T: DeserializeOwned>(&self, command: Result<Command, Error>) -> Result<T, Error> {
        Ok(self.handle().call(command?).await?.deserialize()?)
    }

    /// Runs a command and deserializes its `return` value into `T`. Pass `()` for no arguments, or anything that
    /// serializes to a JSON object. Commands that return nothing answer `{}`: use `serde_json::Value` or
    /// `serde::de::IgnoredAny` as `T`. The deadline is [`Options::command_timeout`].
    ///
    /// # Cancel safety
    /// Cancel safe. Dropping the future never leaves part of a command on the wire and never shifts replies: a
    /// command not written yet is withdrawn, one already written runs and its reply is discarded.
    pub async fn execute<T: DeserializeOwned>(&self, command: &str, args: impl Serialize) -> Result<T, Error> {
        let opts = self.handle().opts_for(command);
        self.run(Command::new(command, &args, opts)).await
    }

    /// Runs a command with raw JSON arguments (an object, or `None`) and returns the raw `return` value.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
    pub async fn execute_raw(&self, command: &str, args: Option<&RawJson>) -> Result<RawJson, Error> {
        let opts = self.handle().opts_for(command);
        self.handle().call(Command::raw(command, args, opts)).await
    }

    /// Runs a command out of band (`exec-oob`): it may overtake in-band commands still running. Needs OOB
    /// negotiated ([`oob_enabled`](Self::oob_enabled)) and a command QEMU allows out of band (`query-yank`,
    /// `migrate-pause`, ...).
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
    pub async fn execute_oob<T: DeserializeOwned>(&self, command: &str, args: impl Serialize) -> Result<T, Error> {
        let opts = self.handle().opts_for(command).oob();
        self.run(Command::new(command, &args, opts)).await
    }

    /// Runs a command with its own timeout (`None`: wait forever) instead of [`Options::command_timeout`]. On
    /// timeout it fails with [`Error::TimedOut`] and its late reply is swallowed.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
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
    /// received). Needs a unix socket ([`connect_unix`](Self::connect_unix),
    /// [`Listener::accept`](crate::Listener::accept)); otherwise
    /// fails with [`Error::FdPassing`] and sends nothing.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute). If the descriptor was already written, QEMU keeps it under
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
        let opts = self.handle().opts_for(command).pass_fd();
        let command = Command::new(command, &args, opts)?;
        Ok(self.handle().call_with_fd(command, Some(fd)).await?.deserialize()?)
    }

    /// Passes `fd` to QEMU under `name` (`getfd`), for commands that take an fd name (`add_client`,
    /// `netdev_add` with `fd=NAME`, ...). Release it with `closefd`.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute_with_fd`](Self::execute_with_fd).
    pub async fn send_fd(&self, name: &str, fd: impl AsFd) -> Result<(), Error> {
        self.execute_with_fd::<serde::de::IgnoredAny>("getfd", GetFdArgs { fdname: name }, fd).await.map(drop)
    }

    /// Adds `fd` to an fd set (`add-fd`): to `fdset_id`, or a new set when `None`; `opaque` is a free-form note
    /// shown by `query-fdsets`. Block devices can then open `/dev/fdset/ID`.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute_with_fd`](Self::execute_with_fd).
    pub async fn add_fd(&self, fd: impl AsFd, fdset_id: Option<u64>, opaque: Option<&str>) -> Result<AddFdInfo, Error> {
        self.execute_with_fd("add-fd", AddFdArgs { fdset_id, opaque }, fd).await
    }

    /// A new subscription to the server's events. The first subscription gets every event since the connection
    /// started (those of the handshake included); later ones, every event from their subscription on. One that
    /// falls more than [`Options::event_buffer`] behind gets [`EventItem::Lagged`](crate::EventItem::Lagged) in
    /// place of what it lost. Nobody reading events never slows commands down. See [`events`](crate::events).
    pub fn events(&self) -> Events {
        self.handle().events(None)
    }

    /// Like [`events`](Self::events), only the events with one of these names (for example `["JOB_STATUS_CHANGE"]`).
    pub fn events_named(&self, names: &[&str]) -> Events {
        self.handle().events(Some(names.iter().map(|n| (*n).to_owned()).collect()))
    }

    /// Events that no subscriber could receive: published while nobody was subscribed (after the first
    /// subscriber, which gets every event since the connection started, went away). See [`events`](crate::events).
    pub fn unobserved_events(&self) -> u64 {
        self.handle().shared.unobserved()
    }

    /// Takes the protocol violations seen so far (the most recent 64): malformed messages, unknown ids, id-less
    /// errors, oversized messages. The session survived each of them.
    pub fn take_violations(&self) -> Vec<ProtocolViolation> {
        self.handle().shared.take_violations()
    }

    /// Closes the connection and waits until the driver has stopped. Commands still pending end with
    /// [`ConnectionError::Local`]; later calls fail with it too. A command being written is finished first (the
    /// server never sees half a command), then the socket is shut down.
    ///
    /// # Cancel safety
    /// Cancel safe: the close is requested at the first poll and happens even if the future is dropped.
    pub async fn close(&self) {
        self.handle().close().await
    }

    /// Waits until the connection is over and returns why (the server hung up, a timeout in the handshake, a
    /// transport error, or [`close`](Self::close)).
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub async fn closed(&self) -> ConnectionError {
        self.handle().closed().await
    }

    /// Why the connection ended, if it has.
    pub fn connection_error(&self) -> Option<ConnectionError> {
        self.handle().connection_error()
    }
}
