//! [`OnAsyncIo`]: qmp-async's [`Runtime`] and [`Net`] on the async-io reactor, which smol and async-std share.
//! Timers and sockets are async-io's under both; only the way tasks are spawned differs ([`Spawn`]): [`Smol`]
//! and [`AsyncStd`] are the two built in, and any other executor over async-io is one `Spawn` impl away.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::Async;
use futures_io::{AsyncRead, AsyncWrite};
use qmp_async::{Io, Net, Runtime, Streams, Timer};

use crate::transport::{pipes, Pipes, Tcp, Unix};

/// How an executor over async-io runs the connection's driver. With `Default` too, the runtime has the socket
/// helpers (`connect_unix`, ...); without, connect yourself and use `Qmp::from_transport`.
pub trait Spawn: Clone + Send + Sync + Unpin + fmt::Debug + 'static {
    /// Runs `future` to completion in the background.
    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static);
}

/// A runtime on the async-io reactor whose tasks `S` spawns.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnAsyncIo<S>(pub S);

/// smol: tasks on smol's global executor (`smol::spawn`, detached).
#[cfg(feature = "smol")]
pub type Smol = OnAsyncIo<SmolExecutor>;

/// async-std (deprecated upstream, still supported): tasks on `async_std::task::spawn`.
#[cfg(feature = "async-std")]
pub type AsyncStd = OnAsyncIo<AsyncStdExecutor>;

/// smol's global executor.
#[cfg(feature = "smol")]
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolExecutor;

#[cfg(feature = "smol")]
impl Spawn for SmolExecutor {
    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        smol::spawn(future).detach();
    }
}

/// async-std's executor.
#[cfg(feature = "async-std")]
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdExecutor;

#[cfg(feature = "async-std")]
impl Spawn for AsyncStdExecutor {
    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        // Dropping async-std's JoinHandle detaches the task.
        drop(async_std::task::spawn(future));
    }
}

impl<S: Spawn> Runtime for OnAsyncIo<S> {
    type Timer = AsyncIoTimer;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn timer(&self, at: Instant) -> AsyncIoTimer {
        AsyncIoTimer(async_io::Timer::at(at))
    }

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.0.spawn(future)
    }
}

/// An [`async_io::Timer`] as qmp-async's [`Timer`].
#[derive(Debug)]
pub struct AsyncIoTimer(async_io::Timer);

impl Timer for AsyncIoTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.0.set_at(at);
    }

    fn poll_fire(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

impl<S: Spawn + Default> Net for OnAsyncIo<S> {
    type UnixStream = Unix;
    type TcpStream = Tcp;
    type UnixListener = Async<UnixListener>;
    type TcpListener = Async<TcpListener>;
    type Pipes = Pipes;

    async fn connect_unix(&self, path: &Path) -> io::Result<Unix> {
        Async::<UnixStream>::connect(path).await.map(Io::new)
    }

    async fn resolve<A: ToSocketAddrs + Send + 'static>(&self, addr: A) -> io::Result<Vec<SocketAddr>> {
        blocking::unblock(move || addr.to_socket_addrs().map(Vec::from_iter)).await
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<Tcp> {
        let stream = Async::<TcpStream>::connect(addr).await?;
        stream.get_ref().set_nodelay(true)?;
        Ok(Io::new(stream))
    }

    fn unix_from_std(&self, stream: UnixStream) -> io::Result<Unix> {
        Async::new(stream).map(Io::new)
    }

    fn pipes(&self, read: OwnedFd, write: OwnedFd) -> io::Result<Pipes> {
        pipes(read, write)
    }

    fn bind_unix(&self, path: &Path) -> io::Result<Async<UnixListener>> {
        Async::<UnixListener>::bind(path)
    }

    async fn accept_unix(&self, listener: &Async<UnixListener>) -> io::Result<Unix> {
        let (stream, _) = listener.accept().await?;
        Ok(Io::new(stream))
    }

    fn tcp_listener_from_std(&self, listener: TcpListener) -> io::Result<Async<TcpListener>> {
        Async::new(listener)
    }

    async fn accept_tcp(&self, listener: &Async<TcpListener>) -> io::Result<Tcp> {
        let (stream, _) = listener.accept().await?;
        stream.get_ref().set_nodelay(true)?;
        Ok(Io::new(stream))
    }
}

/// Any futures-io stream (a smol or async-std socket, TLS, a joined pair of pipes) for
/// [`Qmp::from_stream`](crate::Qmp::from_stream).
impl<S: Spawn, T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Streams<T> for OnAsyncIo<S> {
    type Transport = Io<T>;

    fn transport(stream: T) -> Io<T> {
        Io::new(stream)
    }
}
