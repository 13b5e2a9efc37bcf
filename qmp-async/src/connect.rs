//! Connecting and listening, written once over a runtime's [`Net`]: `connect_unix` and `connect_tcp` for
//! [`Qmp`] and [`GuestAgent`], and a [`Listener`] for when QEMU connects to us
//! (`-chardev socket,id=c,path=S,server=off` with `-mon chardev=c,mode=control`).

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::ToSocketAddrs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use qmp_proto::adapter::Options;

use crate::guest_agent::GuestAgent;
use crate::qmp::Qmp;
use crate::runtime::{sleep, until, Net};
use crate::session::{self, Session};
use crate::Error;

impl<R: Net> Qmp<R> {
    /// Connects to a QMP unix socket (`-qmp unix:S,server=on,wait=off`) and completes the handshake within
    /// [`Options::connect_timeout`]. File descriptors can be passed over it ([`send_fd`](Self::send_fd)).
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn connect_unix(path: impl AsRef<Path>, options: Options) -> Result<Qmp<R>, Error> {
        over_unix_socket(path.as_ref(), options).await
    }

    /// Connects to a QMP TCP socket (`-qmp tcp:host:port,server=on,wait=off`), resolving `addr` off the
    /// executor, within [`Options::connect_timeout`] for the connection and again for the handshake.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn connect_tcp<A: ToSocketAddrs + Send + 'static>(addr: A, options: Options) -> Result<Qmp<R>, Error> {
        over_tcp(addr, options).await
    }

    /// Runs QMP over a connected std unix stream (registered with the runtime), with file descriptor passing.
    /// A runtime's own unix stream converts with its `into_std`.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn from_unix_stream(stream: std::os::unix::net::UnixStream, options: Options) -> Result<Qmp<R>, Error> {
        session::over_unix_stream(stream, options).await
    }

    /// Runs QMP over two pipes: `read` carries QEMU's output, `write` its input. For `-qmp pipe:NAME`, open
    /// `NAME.out` to read and `NAME.in` to write; for `-qmp stdio`, see [`spawn_stdio`](Self::spawn_stdio).
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn from_pipes(
        read: impl Into<OwnedFd>,
        write: impl Into<OwnedFd>,
        options: Options,
    ) -> Result<Qmp<R>, Error> {
        session::over_pipes(read.into(), write.into(), options).await
    }

    /// Starts `command` (a QEMU command line with `-qmp stdio`, or `-chardev stdio,id=c -mon chardev=c`) with its
    /// stdin and stdout piped to a new connection, and completes the handshake. Its stderr is left as set on
    /// `command` (inherited by default). Returns the child too: waiting for it, or killing it, is the caller's.
    ///
    /// ```no_run
    /// # async fn example<R: qmp_async::Net>() -> Result<(), qmp_async::Error> {
    /// let mut qemu = std::process::Command::new("qemu-system-x86_64");
    /// qemu.args(["-M", "none", "-display", "none", "-qmp", "stdio"]);
    /// let (mut child, qmp) = qmp_async::Qmp::<R>::spawn_stdio(qemu, Default::default()).await?;
    /// qmp.execute::<serde_json::Value>("quit", ()).await?;
    /// child.wait()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the connection is closed (QEMU reads the end of its input and,
    /// with `-qmp stdio`, quits).
    pub async fn spawn_stdio(mut command: Command, options: Options) -> Result<(Child, Qmp<R>), Error> {
        let (child, (read, write)) = spawn_piped(&mut command)?;
        Ok((child, session::over_pipes(read, write, options).await?))
    }
}

/// Spawns `command` with piped stdin and stdout: the child, and its (stdout, stdin).
fn spawn_piped(command: &mut Command) -> Result<(Child, (OwnedFd, OwnedFd)), Error> {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().map_err(Error::Connect)?;
    match (child.stdout.take(), child.stdin.take()) {
        (Some(out), Some(input)) => Ok((child, (out.into(), input.into()))),
        _ => Err(Error::Connect(io::Error::other("the child's stdio was not piped"))),
    }
}

impl<R: Net> GuestAgent<R> {
    /// Connects to the agent's unix socket (the host end of its virtio-serial channel, or
    /// `qemu-ga -m unix-listen`) and synchronises within [`Options::connect_timeout`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn connect_unix(path: impl AsRef<Path>, options: Options) -> Result<GuestAgent<R>, Error> {
        over_unix_socket(path.as_ref(), options).await
    }

    /// Connects to an agent over TCP (a `-chardev socket,host=...,port=...` on the host end of its channel).
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn connect_tcp<A>(addr: A, options: Options) -> Result<GuestAgent<R>, Error>
    where
        A: ToSocketAddrs + Send + 'static,
    {
        over_tcp(addr, options).await
    }

    /// Speaks the guest-agent protocol over a connected std unix stream (registered with the runtime).
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn from_unix_stream(
        stream: std::os::unix::net::UnixStream,
        options: Options,
    ) -> Result<GuestAgent<R>, Error> {
        session::over_unix_stream(stream, options).await
    }

    /// Speaks the guest-agent protocol over two pipes (`read` carries the agent's output), for example the
    /// stdio of a `qemu-ga` child.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn from_pipes(
        read: impl Into<OwnedFd>,
        write: impl Into<OwnedFd>,
        options: Options,
    ) -> Result<GuestAgent<R>, Error> {
        session::over_pipes(read.into(), write.into(), options).await
    }
}

/// A session over a unix socket connected within the connect timeout.
async fn over_unix_socket<S: Session<R>, R: Net>(path: &Path, options: Options) -> Result<S, Error> {
    let runtime = R::default();
    let stream = connect_unix(&runtime, path, &options).await?;
    session::spawn(stream, options, runtime).await
}

/// A session over TCP, connected within the connect timeout.
async fn over_tcp<S: Session<R>, R: Net, A: ToSocketAddrs + Send + 'static>(
    addr: A,
    options: Options,
) -> Result<S, Error> {
    let runtime = R::default();
    let stream = connect_tcp(&runtime, addr, &options).await?;
    session::spawn(stream, options, runtime).await
}

/// Connects to a unix socket within the connect timeout.
///
/// While the server's listen backlog is full (QEMU and qemu-ga listen with a backlog of 1 and stop accepting
/// while they serve a client, so this happens right after another client leaves), a non-blocking connect fails
/// with EAGAIN (reported as `WouldBlock` or `NotConnected`); nothing was queued. A blocking connect would wait
/// for room, and so does this: it tries again, backing off from 1 ms to 50 ms, until the deadline.
async fn connect_unix<R: Net>(runtime: &R, path: &Path, options: &Options) -> Result<R::UnixStream, Error> {
    tracing::debug!(path = %path.display(), "connecting to unix socket");
    let deadline = runtime.now() + options.get_connect_timeout();
    let attempts = async {
        let mut pause = Duration::from_millis(1);
        loop {
            match runtime.connect_unix(path).await {
                Err(e) if matches!(e.kind(), ErrorKind::NotConnected | ErrorKind::WouldBlock) => {
                    tracing::debug!(?pause, "the listen backlog is full; trying again");
                    sleep(runtime.timer(runtime.now() + pause)).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                result => return result,
            }
        }
    };
    match until(runtime.timer(deadline), attempts).await {
        Some(result) => result.map_err(|e| Error::Connect(explain_unix_error(path, e))),
        None => Err(Error::Connect(ErrorKind::TimedOut.into())),
    }
}

/// A connect error that says what `path` is when it is not a socket at all ("Connection refused" for a regular
/// file or a directory misleads).
fn explain_unix_error(path: &Path, e: io::Error) -> io::Error {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            io::Error::new(e.kind(), format!("{} is a directory, not a socket", path.display()))
        }
        Ok(meta) if !meta.file_type().is_socket() => {
            io::Error::new(e.kind(), format!("{} is not a socket", path.display()))
        }
        _ => e,
    }
}

/// Resolves `addr` off the executor, then tries each address in turn until the connect timeout.
async fn connect_tcp<R: Net, A>(runtime: &R, addr: A, options: &Options) -> Result<R::TcpStream, Error>
where
    A: ToSocketAddrs + Send + 'static,
{
    let deadline = runtime.now() + options.get_connect_timeout();
    let addrs = runtime.resolve(addr).await.map_err(Error::Connect)?;
    let mut last = io::Error::new(ErrorKind::InvalidInput, "no address to connect to");
    for addr in addrs {
        match until(runtime.timer(deadline), runtime.connect_tcp(addr)).await {
            Some(Ok(stream)) => {
                tracing::debug!(peer = %addr, "connected over TCP");
                return Ok(stream);
            }
            Some(Err(e)) => last = e,
            None => return Err(Error::Connect(ErrorKind::TimedOut.into())),
        }
    }
    Err(Error::Connect(last))
}

/// A unix socket QEMU connects to (`-chardev socket,id=c,path=S,server=off` with `-mon chardev=c,mode=control`,
/// or a guest agent channel in client mode). Each accepted connection runs its own driver and can pass file
/// descriptors. `qmp_tokio::Listener` and `qmp_smol::Listener` name the runtime.
///
/// ```no_run
/// # async fn example<R: qmp_async::Net>() -> Result<(), qmp_async::Error> {
/// use qmp_async::{Listener, Options};
/// let listener = Listener::<R>::bind("/tmp/qmp-listen.sock")?;
/// // start QEMU with: -chardev socket,id=c,path=/tmp/qmp-listen.sock -mon chardev=c,mode=control
/// let qmp = listener.accept(Options::default()).await?;
/// println!("QEMU {} connected", qmp.greeting().version_string());
/// # Ok(()) }
/// ```
pub struct Listener<R: Net> {
    inner: R::UnixListener,
    path: PathBuf,
    runtime: R,
}

impl<R: Net> fmt::Debug for Listener<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener").field("path", &self.path).finish()
    }
}

impl<R: Net> Listener<R> {
    /// Binds a unix socket at `path` (which must not exist). On tokio, call it within a runtime.
    pub fn bind(path: impl AsRef<Path>) -> Result<Listener<R>, Error> {
        let path = path.as_ref().to_owned();
        let runtime = R::default();
        let inner = runtime.bind_unix(&path).map_err(Error::Connect)?;
        tracing::debug!(path = %path.display(), "listening for QEMU");
        Ok(Listener { inner, path, runtime })
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
    pub async fn accept(&self, options: Options) -> Result<Qmp<R>, Error> {
        let stream = self.runtime.accept_unix(&self.inner).await.map_err(Error::Connect)?;
        tracing::debug!(path = %self.path.display(), "accepted a connection");
        session::spawn(stream, options, self.runtime.clone()).await
    }

    /// Waits for a guest agent channel to connect (a `virtserialport` whose chardev has `server=off`), then
    /// synchronises with it.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`accept`](Self::accept).
    pub async fn accept_guest_agent(&self, options: Options) -> Result<GuestAgent<R>, Error> {
        let stream = self.runtime.accept_unix(&self.inner).await.map_err(Error::Connect)?;
        tracing::debug!(path = %self.path.display(), "accepted a connection");
        session::spawn(stream, options, self.runtime.clone()).await
    }
}
