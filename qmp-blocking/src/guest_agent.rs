//! [`GuestAgent`]: a blocking client for the QEMU guest agent (qemu-ga), synchronised on connect.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use qmp_proto::{ExecuteOptions, Mode, RawJson};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::driver::{random_nonce, Driver};
use crate::transport::Transport;
use crate::Error;
use crate::Options;

/// A blocking guest-agent client. The agent's socket is a byte pipe that may hold a previous client's leftovers,
/// so connecting runs the `guest-sync-delimited` handshake before anything else.
///
/// ```no_run
/// use qmp_blocking::{GuestAgent, Options};
/// let mut ga = GuestAgent::connect_unix("/run/qemu/vm0.qga", Options::default())?;
/// let info: serde_json::Value = ga.execute("guest-info", ())?;
/// println!("agent {}", info["version"]);
/// # Ok::<(), qmp_blocking::Error>(())
/// ```
#[derive(Debug)]
pub struct GuestAgent<S = UnixStream> {
    driver: Driver<S>,
    options: Options,
}

impl GuestAgent<UnixStream> {
    /// Connects to the agent's unix socket (the host end of its virtio-serial channel, or `qemu-ga -m unix-listen`)
    /// and synchronises within the connect timeout.
    pub fn connect_unix(path: impl AsRef<Path>, options: Options) -> Result<Self, Error> {
        Self::from_stream(UnixStream::connect(path)?, options)
    }
}

impl<S: Transport> GuestAgent<S> {
    /// Speaks the guest-agent protocol over an already connected stream, synchronising first.
    pub fn from_stream(stream: S, options: Options) -> Result<Self, Error> {
        let core = qmp_proto::Client::new(options.to_config(Mode::GuestAgent), Instant::now());
        let mut agent = GuestAgent { driver: Driver::new(stream, core, options.get_event_buffer()), options };
        agent.sync(agent.options.get_connect_timeout())?;
        Ok(agent)
    }

    /// Resynchronises with `guest-sync-delimited` and a fresh random nonce, discarding stale input.
    pub fn sync(&mut self, timeout: Duration) -> Result<(), Error> {
        let opts = ExecuteOptions::new().deadline(Instant::now() + timeout);
        let id = self.driver.core.guest_sync(random_nonce(), opts)?;
        self.driver.wait(id).map(drop)
    }

    /// Runs a command and deserializes its `return` value. Commands that reply only when they fail
    /// (`guest-shutdown`, `guest-suspend-*`) return their error, or `{}` once the agent closes the connection or
    /// [`Options::no_reply_grace`] (2 s by default, or the command timeout if shorter) passed without one.
    pub fn execute<T: DeserializeOwned>(&mut self, command: &str, args: impl Serialize) -> Result<T, Error> {
        let opts = self.options_for(command);
        let id = self.driver.core.execute(command, Some(&args), opts)?;
        Ok(self.driver.wait(id)?.deserialize()?)
    }

    /// Runs a command with its own timeout (`None`: wait forever) instead of the command timeout. On timeout it
    /// fails with [`Error::TimedOut`] and its late reply is swallowed.
    pub fn execute_with_timeout<T: DeserializeOwned>(
        &mut self,
        command: &str,
        args: impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<T, Error> {
        let opts = ExecuteOptions::new().deadline_opt(timeout.map(|t| Instant::now() + t));
        let id = self.driver.core.execute(command, Some(&args), opts)?;
        Ok(self.driver.wait(id)?.deserialize()?)
    }

    /// Runs a command with raw JSON arguments and returns the raw `return` value.
    pub fn execute_raw(&mut self, command: &str, args: Option<&RawJson>) -> Result<RawJson, Error> {
        let opts = self.options_for(command);
        let id = self.driver.core.execute_raw(command, args, opts)?;
        self.driver.wait(id)
    }

    /// The command's deadline ([`Options::timeout_for`]: the grace period for a command answered only on failure).
    fn options_for(&self, command: &str) -> ExecuteOptions {
        let timeout = self.options.timeout_for(self.driver.core.config(), command);
        ExecuteOptions::new().deadline_opt(timeout.map(|t| Instant::now() + t))
    }

    /// Why the connection ended, if it has.
    pub fn connection_error(&self) -> Option<&qmp_proto::ConnectionError> {
        self.driver.closed.as_ref()
    }

    /// Closes the session and returns the stream.
    pub fn close(mut self) -> S {
        self.driver.close();
        self.driver.stream
    }
}
