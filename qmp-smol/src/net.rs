//! Socket helpers for the runtime features: connect over unix or TCP, or listen on a unix socket for QEMU to
//! connect to (`-chardev socket,path=S,server=off`).
//!
//! smol and async-std both run their sockets on the async-io reactor, so these helpers use async-io's
//! `Async<UnixStream>` / `Async<TcpStream>` under either feature; an async-std or smol stream you already
//! have converts into a std stream (`std::os::unix::net::UnixStream::try_from(stream)`) for
//! [`Qmp::from_unix_stream`], or goes through [`Qmp::from_stream`] as is.

use std::future::Future;
use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_io::Async;

use crate::guest_agent::GuestAgent;
use crate::options::Options;
use crate::qmp::Qmp;
use crate::transport::Plain;
use crate::Error;

impl Qmp {
    /// Connects to a QMP unix socket (`-qmp unix:S,server=on,wait=off`) and completes the handshake within
    /// [`Options::connect_timeout`]. File descriptors can be passed over it ([`send_fd`](Self::send_fd)).
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn connect_unix(path: impl AsRef<Path>, options: Options) -> Result<Qmp, Error> {
        let stream = connect_unix(path.as_ref(), &options).await?;
        Self::spawn(stream, options).await
    }

    /// Runs QMP over a connected std unix stream (made non-blocking and registered with the reactor), with
    /// file descriptor passing. An async-std `UnixStream` converts with `UnixStream::try_from`.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn from_unix_stream(stream: UnixStream, options: Options) -> Result<Qmp, Error> {
        Self::spawn(Async::new(stream).map_err(Error::Connect)?, options).await
    }

    /// Connects to a QMP TCP socket (`-qmp tcp:host:port,server=on,wait=off`), resolving `addr` off the
    /// executor, within [`Options::connect_timeout`] for the connection and again for the handshake.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn connect_tcp<A>(addr: A, options: Options) -> Result<Qmp, Error>
    where
        A: ToSocketAddrs + Send + 'static,
    {
        let stream = connect_tcp(addr, &options).await?;
        Self::spawn(Plain(stream), options).await
    }
}

impl GuestAgent {
    /// Connects to the agent's unix socket (the host end of its virtio-serial channel, or
    /// `qemu-ga -m unix-listen`) and synchronises within [`Options::connect_timeout`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn connect_unix(path: impl AsRef<Path>, options: Options) -> Result<GuestAgent, Error> {
        let stream = connect_unix(path.as_ref(), &options).await?;
        Self::spawn(stream, options).await
    }

    /// Speaks the guest-agent protocol over a connected std unix stream.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn from_unix_stream(stream: UnixStream, options: Options) -> Result<GuestAgent, Error> {
        Self::spawn(Async::new(stream).map_err(Error::Connect)?, options).await
    }

    /// Connects to an agent over TCP (a `-chardev socket,host=...,port=...` on the host end of its channel).
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn connect_tcp<A>(addr: A, options: Options) -> Result<GuestAgent, Error>
    where
        A: ToSocketAddrs + Send + 'static,
    {
        let stream = connect_tcp(addr, &options).await?;
        Self::spawn(Plain(stream), options).await
    }
}

/// Connects to a unix socket within the connect timeout.
///
/// While the server's listen backlog is full (QEMU and qemu-ga listen with a backlog of 1 and stop accepting
/// while they serve a client, so this happens right after another client leaves), a non-blocking connect fails
/// with EAGAIN, which async-io reports as `NotConnected`; nothing was queued. A blocking connect would wait for
/// room, and so does this: it tries again, backing off from 1 ms to 50 ms, until the deadline.
async fn connect_unix(path: &Path, options: &Options) -> Result<Async<UnixStream>, Error> {
    tracing::debug!(path = %path.display(), "connecting to unix socket");
    let deadline = Instant::now() + options.get_connect_timeout();
    let runtime = options.extension().or_default();
    let attempts = async {
        let mut pause = Duration::from_millis(1);
        loop {
            match Async::<UnixStream>::connect(path).await {
                Err(e) if matches!(e.kind(), ErrorKind::NotConnected | ErrorKind::WouldBlock) => {
                    tracing::debug!(?pause, "the listen backlog is full; trying again");
                    let mut timer = runtime.new_timer(Instant::now() + pause);
                    std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                result => return result,
            }
        }
    };
    match until(runtime.new_timer(deadline), attempts).await {
        Some(result) => result.map_err(Error::Connect),
        None => Err(Error::Connect(ErrorKind::TimedOut.into())),
    }
}

/// Resolves `addr` on the blocking pool, then tries each address in turn until the connect timeout.
async fn connect_tcp<A>(addr: A, options: &Options) -> Result<Async<TcpStream>, Error>
where
    A: ToSocketAddrs + Send + 'static,
{
    let deadline = Instant::now() + options.get_connect_timeout();
    let runtime = options.extension().or_default();
    let addrs = blocking::unblock(move || addr.to_socket_addrs().map(Vec::from_iter)).await.map_err(Error::Connect)?;
    let mut last = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to connect to");
    for addr in addrs {
        let attempt = Async::<TcpStream>::connect(addr);
        match until(runtime.new_timer(deadline), attempt).await {
            Some(Ok(stream)) => {
                stream.get_ref().set_nodelay(true).map_err(Error::Connect)?;
                tracing::debug!(peer = %addr, "connected over TCP");
                return Ok(stream);
            }
            Some(Err(e)) => last = e,
            None => return Err(Error::Connect(std::io::ErrorKind::TimedOut.into())),
        }
    }
    Err(Error::Connect(last))
}

/// Runs `fut` until `timer` fires; `None` if the timer won.
async fn until<F: Future>(mut timer: std::pin::Pin<Box<dyn crate::runtime::AsyncTimer>>, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// A unix socket QEMU connects to (`-chardev socket,id=c,path=S,server=off` with `-mon chardev=c,mode=control`,
/// or a guest agent channel in client mode). Each accepted connection runs its own driver.
///
/// ```no_run
/// # #[cfg(feature = "smol")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> { smol::block_on(async {
/// use qmp_smol::{Listener, Options};
/// let listener = Listener::bind("/tmp/qmp-listen.sock")?;
/// // start QEMU with: -chardev socket,id=c,path=/tmp/qmp-listen.sock -mon chardev=c,mode=control
/// let qmp = listener.accept(Options::default()).await?;
/// println!("QEMU {} connected", qmp.greeting().version);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }) }
/// # #[cfg(not(feature = "smol"))] fn main() {}
/// ```
#[derive(Debug)]
pub struct Listener {
    inner: Async<UnixListener>,
    path: PathBuf,
}

impl Listener {
    /// Binds a unix socket at `path` (which must not exist).
    pub fn bind(path: impl AsRef<Path>) -> std::io::Result<Listener> {
        let path = path.as_ref().to_owned();
        Ok(Listener { inner: Async::<UnixListener>::bind(&path)?, path })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for QEMU to connect, then completes the QMP handshake (within [`Options::connect_timeout`] of the
    /// connection).
    ///
    /// # Cancel safety
    /// Cancel safe: dropped while waiting for a connection, nothing is lost; dropped during the handshake, that
    /// connection is closed.
    pub async fn accept(&self, options: Options) -> Result<Qmp, Error> {
        let (stream, _) = self.inner.accept().await.map_err(Error::Connect)?;
        tracing::debug!(path = %self.path.display(), "accepted a connection");
        Qmp::spawn(stream, options).await
    }

    /// Waits for a guest agent channel to connect, then synchronises with it.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`accept`](Self::accept).
    pub async fn accept_guest_agent(&self, options: Options) -> Result<GuestAgent, Error> {
        let (stream, _) = self.inner.accept().await.map_err(Error::Connect)?;
        tracing::debug!(path = %self.path.display(), "accepted a connection");
        GuestAgent::spawn(stream, options).await
    }
}
