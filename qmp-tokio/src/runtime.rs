//! [`Tokio`]: qmp-async's [`Runtime`] and [`Net`] on tokio. The clock is [`tokio::time`]'s, so tests that pause or
//! advance time (`#[tokio::test(start_paused = true)]`) drive the connection's deadlines too.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use qmp_async::{Net, Runtime, Streams, Timer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::transport::{io, pipes, unix, Io, Pipes, Unix};

/// The tokio runtime: the driver is spawned on the current runtime (`tokio::spawn`), so connect from within one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Timer = TokioTimer;

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn timer(&self, at: Instant) -> TokioTimer {
        TokioTimer(Box::pin(tokio::time::sleep_until(at.into())))
    }

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(future);
    }
}

/// A [`tokio::time::Sleep`] as qmp-async's [`Timer`].
#[derive(Debug)]
pub struct TokioTimer(Pin<Box<tokio::time::Sleep>>);

impl Timer for TokioTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.0.as_mut().reset(at.into());
    }

    fn poll_fire(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl Net for Tokio {
    type UnixStream = Unix;
    type TcpStream = Io<TcpStream>;
    type UnixListener = UnixListener;
    type TcpListener = TcpListener;
    type Pipes = Pipes;

    async fn connect_unix(&self, path: &Path) -> io::Result<Unix> {
        UnixStream::connect(path).await.map(unix)
    }

    async fn resolve<A: ToSocketAddrs + Send + 'static>(&self, addr: A) -> io::Result<Vec<SocketAddr>> {
        tokio::task::spawn_blocking(move || addr.to_socket_addrs().map(Vec::from_iter)).await?
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<Io<TcpStream>> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(io(stream))
    }

    fn unix_from_std(&self, stream: std::os::unix::net::UnixStream) -> io::Result<Unix> {
        stream.set_nonblocking(true)?;
        UnixStream::from_std(stream).map(unix)
    }

    fn pipes(&self, read: OwnedFd, write: OwnedFd) -> io::Result<Pipes> {
        pipes(read, write)
    }

    fn bind_unix(&self, path: &Path) -> io::Result<UnixListener> {
        UnixListener::bind(path)
    }

    async fn accept_unix(&self, listener: &UnixListener) -> io::Result<Unix> {
        listener.accept().await.map(|(stream, _)| unix(stream))
    }

    fn tcp_listener_from_std(&self, listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        TcpListener::from_std(listener)
    }

    async fn accept_tcp(&self, listener: &TcpListener) -> io::Result<Io<TcpStream>> {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok(io(stream))
    }
}

/// Any tokio stream (TLS, vsock, a duplex, `tokio::io::join(read, write)`) for
/// [`Qmp::from_stream`](crate::Qmp::from_stream).
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Streams<S> for Tokio {
    type Transport = Io<S>;

    fn transport(stream: S) -> Io<S> {
        io(stream)
    }
}
