//! [`GuestAgent`]: the guest-agent handle (qemu-ga), synchronised with `guest-sync-delimited` on connect.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use qmp_proto::adapter::Options;
use qmp_proto::{Config, ConnectionError, Mode, RawJson};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::command::{random_nonce, Command};
use crate::connecting::Connecting;
use crate::driver::Driver;
use crate::handle::Handle;
use crate::runtime::{Runtime, Streams};
use crate::session::{self, Session};
use crate::shared::Shared;
use crate::transport::Transport;
use crate::Error;

/// A guest-agent connection. The agent's socket is a byte pipe that may hold a previous client's leftovers,
/// so connecting runs the `guest-sync-delimited` handshake (with a random nonce) before anything else.
/// Clone it freely: all clones share one driver.
///
/// qemu-ga 7.2 exits when a client closes its connection while a reply is still unread (the kernel reports
/// ECONNRESET to its next read): before [`close`](Self::close), let the calls you started finish, or expect the
/// agent to be gone (a call dropped or timed out on the wire leaves its reply unread until it arrives).
///
/// `R` is the [`Runtime`] it runs on: `qmp_tokio::GuestAgent` and `qmp_smol::GuestAgent` name it for you.
///
/// ```no_run
/// # async fn example<R: qmp_async::Runtime>(ga: qmp_async::GuestAgent<R>) -> Result<(), qmp_async::Error> {
/// let info: serde_json::Value = ga.execute("guest-info", ()).await?;
/// println!("agent {}", info["version"]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GuestAgent<R> {
    inner: Arc<Handle<R>>,
}

impl<R: Runtime> fmt::Debug for GuestAgent<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestAgent").field("closed", &self.inner.connection_error()).finish()
    }
}

/// The core syncs by itself (`guest-sync-delimited` with a fresh random nonce) and is ready after the echo.
impl<R: Runtime> Session<R> for GuestAgent<R> {
    fn config(options: &Options) -> Config {
        options.to_config(Mode::GuestAgent).sync_on_connect(random_nonce())
    }

    fn established(shared: &Shared) -> bool {
        shared.is_ready()
    }

    fn from_handle(inner: Arc<Handle<R>>) -> Self {
        GuestAgent { inner }
    }
}

impl<R: Runtime> GuestAgent<R> {
    /// Builds a guest-agent connection over `transport` without spawning anything: spawn the [`Driver`], then
    /// await the [`Connecting`], which synchronises within [`Options::connect_timeout`].
    pub fn with_driver<T: Transport>(
        transport: T,
        options: Options,
        runtime: R,
    ) -> (Connecting<GuestAgent<R>>, Driver) {
        session::with_driver(transport, options, runtime)
    }

    /// Speaks the guest-agent protocol over `transport`: spawns the driver on `runtime` and synchronises.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn from_transport<T: Transport>(
        transport: T,
        options: Options,
        runtime: R,
    ) -> Result<GuestAgent<R>, Error> {
        session::spawn(transport, options, runtime).await
    }

    /// Speaks the guest-agent protocol over any connected byte stream of the runtime, synchronising first.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn from_stream<S>(stream: S, options: Options) -> Result<GuestAgent<R>, Error>
    where
        R: Streams<S> + Default,
    {
        session::spawn(R::transport(stream), options, R::default()).await
    }

    /// Resynchronises with `guest-sync-delimited` and a fresh random nonce, discarding stale input. Other
    /// commands wait until it ends.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped, the sync is cancelled (its reply, if any, is swallowed).
    pub async fn sync(&self, timeout: Duration) -> Result<(), Error> {
        let opts = self.inner.opts(Some(timeout));
        self.inner.call(Command::guest_sync(random_nonce(), opts)).await.map(drop)
    }

    /// Runs a command and deserializes its `return` value. Commands the agent answers only when they fail
    /// (`guest-shutdown`, `guest-suspend-*`) return that error ([`Error::Qmp`], e.g. the command is disabled),
    /// or `{}` once the agent goes away or stays silent for [`Options::no_reply_grace`] (2 s by default).
    ///
    /// # Cancel safety
    /// Cancel safe. Dropping the future never leaves part of a command on the wire and never shifts replies: a
    /// command not written yet is withdrawn, one already written runs and its reply is discarded.
    pub async fn execute<T: DeserializeOwned>(&self, command: &str, args: impl Serialize) -> Result<T, Error> {
        let opts = self.inner.opts_for(command);
        Ok(self.inner.call(Command::new(command, &args, opts)?).await?.deserialize()?)
    }

    /// Runs a command with raw JSON arguments and returns the raw `return` value.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
    pub async fn execute_raw(&self, command: &str, args: Option<&RawJson>) -> Result<RawJson, Error> {
        let opts = self.inner.opts_for(command);
        self.inner.call(Command::raw(command, args, opts)).await
    }

    /// Runs a command with its own timeout (`None`: wait forever).
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
    pub async fn execute_with_timeout<T: DeserializeOwned>(
        &self,
        command: &str,
        args: impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<T, Error> {
        let opts = self.inner.opts(timeout);
        Ok(self.inner.call(Command::new(command, &args, opts)?).await?.deserialize()?)
    }

    /// Runs any command as one the agent answers only when it fails: its error is returned as
    /// [`Error::Qmp`]; it succeeds when the agent goes away or stays silent for
    /// [`Options::no_reply_grace`] (2 s by default). `guest-shutdown` and `guest-suspend-*` are run this way by
    /// [`execute`](Self::execute) already.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returned, the command may or may not have been sent (never in part).
    pub async fn execute_no_reply(&self, command: &str, args: impl Serialize) -> Result<(), Error> {
        let opts = self.inner.opts(Some(self.inner.options.get_no_reply_grace())).expect_reply(false);
        self.inner.call(Command::new(command, &args, opts)?).await.map(drop)
    }

    /// Takes the protocol violations seen so far (the most recent 64).
    pub fn take_violations(&self) -> Vec<qmp_proto::ProtocolViolation> {
        self.inner.shared.take_violations()
    }

    /// Closes the session (pending commands fail with [`ConnectionError::Local`]) and waits for the driver.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`Qmp::close`](crate::Qmp::close).
    pub async fn close(&self) {
        self.inner.close().await
    }

    /// Waits until the session ends and returns why.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub async fn closed(&self) -> ConnectionError {
        self.inner.closed().await
    }

    /// Why the session ended, if it has.
    pub fn connection_error(&self) -> Option<ConnectionError> {
        self.inner.connection_error()
    }

    #[cfg(feature = "qapi")]
    pub(crate) fn handle(&self) -> &Handle<R> {
        &self.inner
    }
}
