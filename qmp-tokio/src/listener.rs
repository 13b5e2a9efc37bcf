//! [`Listener`]: the server side of a unix socket, for when QEMU connects to us
//! (`-chardev socket,id=mon0,path=PATH,server=off -mon chardev=mon0,mode=control`).

use std::io;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::guest_agent::GuestAgent;
use crate::options::Options;
use crate::qmp::Qmp;
use crate::Error;

/// A unix socket that QEMU connects to. Each accepted connection is a full [`Qmp`] (or [`GuestAgent`]) client, with
/// file descriptor passing.
///
/// ```no_run
/// # async fn example() -> Result<(), qmp_tokio::Error> {
/// use qmp_tokio::{Listener, Options};
/// let listener = Listener::bind("/run/qemu/vm0.qmp").map_err(qmp_tokio::Error::Connect)?;
/// // qemu-system-x86_64 ... -chardev socket,id=m,path=/run/qemu/vm0.qmp,server=off -mon chardev=m,mode=control
/// let qmp = listener.accept(Options::default()).await?;
/// println!("QEMU {} connected", qmp.greeting().version);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Listener {
    inner: UnixListener,
    path: PathBuf,
}

impl Listener {
    /// Binds a unix socket at `path` (which must not exist). Must be called within a tokio runtime.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_owned();
        let inner = UnixListener::bind(&path)?;
        tracing::debug!(path = %path.display(), "listening for QEMU");
        Ok(Listener { inner, path })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for QEMU to connect, then completes the QMP handshake (within [`Options::connect_timeout`] of the
    /// connection).
    ///
    /// # Cancel safety
    /// Waiting for a connection is cancel-safe (no connection is lost); dropped during the handshake, that
    /// connection is closed.
    pub async fn accept(&self, options: Options) -> Result<Qmp, Error> {
        let (stream, _) = self.inner.accept().await.map_err(Error::Connect)?;
        tracing::debug!(path = %self.path.display(), "QEMU connected");
        Qmp::from_unix_stream(stream, options).await
    }

    /// Waits for a connection to a guest agent's channel (a `virtserialport` whose chardev has `server=off`), then
    /// synchronises with it.
    ///
    /// # Cancel safety
    /// Like [`accept`](Self::accept).
    pub async fn accept_guest_agent(&self, options: Options) -> Result<GuestAgent, Error> {
        let (stream, _) = self.inner.accept().await.map_err(Error::Connect)?;
        GuestAgent::from_unix_stream(stream, options).await
    }
}
