//! [`Runtime`]: the little an executor must give a connection (a clock, a timer, a way to spawn the driver), and
//! [`Net`]: the sockets of a runtime, for the `connect_*` and [`Listener`](crate::Listener) helpers.
//!
//! The protocol needs no runtime at all (it is [`qmp_proto`]); the driver needs a clock and a timer to honour the
//! core's deadlines, and the convenience constructors need to spawn it. Everything else (channels, broadcast,
//! wake-ups) is runtime-neutral. `qmp-tokio` and `qmp-smol` implement these traits for their runtimes, the way
//! quinn's runtime glue does; implement them yourself for another executor.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::transport::Transport;

/// An executor and its clock. Cheap to clone (usually a unit struct); the convenience constructors make one with
/// `Default`.
pub trait Runtime: Clone + Send + Sync + Unpin + fmt::Debug + 'static {
    /// The runtime's timer.
    type Timer: Timer;

    /// The current time on the runtime's clock (a test clock may be paused or advanced, as tokio's can).
    fn now(&self) -> Instant;

    /// A timer that fires at `at` (on the clock of [`now`](Self::now)).
    fn timer(&self, at: Instant) -> Self::Timer;

    /// Runs `future` to completion in the background (the connection's driver).
    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static);
}

/// A resettable one-shot timer, armed for one instant at a time.
pub trait Timer: Send + 'static {
    /// Re-arms the timer for `at`, forgetting the previous instant.
    fn reset(self: Pin<&mut Self>, at: Instant);

    /// `Ready` once the armed instant has passed.
    fn poll_fire(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// Waits until `timer` fires.
pub(crate) async fn sleep<T: Timer>(timer: T) {
    let mut timer = std::pin::pin!(timer);
    std::future::poll_fn(|cx| timer.as_mut().poll_fire(cx)).await
}

/// Runs `future` until `timer` fires; `None` if the timer won.
pub(crate) async fn until<T: Timer, F: Future>(timer: T, future: F) -> Option<F::Output> {
    let mut timer = std::pin::pin!(timer);
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        timer.as_mut().poll_fire(cx).map(|()| None)
    })
    .await
}

/// The sockets of a runtime: what [`Qmp::connect_unix`](crate::Qmp::connect_unix),
/// [`Qmp::connect_tcp`](crate::Qmp::connect_tcp) and [`Listener`](crate::Listener) are built on. Each method
/// makes one attempt; timeouts and retries are the async layer's.
pub trait Net: Runtime + Default {
    /// A connected unix stream (file descriptors can be passed over it).
    type UnixStream: Transport;
    /// A connected TCP stream.
    type TcpStream: Transport;
    /// A listening unix socket.
    type UnixListener: Send + Sync + fmt::Debug + 'static;
    /// A listening TCP socket.
    type TcpListener: Send + Sync + fmt::Debug + 'static;
    /// A read pipe and a write pipe joined (a child's stdout and stdin, the two FIFOs of `-qmp pipe:NAME`).
    type Pipes: Transport;

    /// Connects to the unix socket at `path`. A full listen backlog must be reported as
    /// [`io::ErrorKind::WouldBlock`] or [`io::ErrorKind::NotConnected`] (the caller tries again).
    fn connect_unix(&self, path: &Path) -> impl Future<Output = io::Result<Self::UnixStream>> + Send;

    /// Resolves `addr` without blocking the executor.
    fn resolve<A: ToSocketAddrs + Send + 'static>(
        &self,
        addr: A,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;

    /// Connects to one TCP address (with `TCP_NODELAY` set: commands are small and latency-bound).
    fn connect_tcp(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::TcpStream>> + Send;

    /// Registers a connected std unix stream with the runtime (made non-blocking).
    fn unix_from_std(&self, stream: UnixStream) -> io::Result<Self::UnixStream>;

    /// Joins a pipe to read from and a pipe to write to (made non-blocking) into one transport.
    fn pipes(&self, read: OwnedFd, write: OwnedFd) -> io::Result<Self::Pipes>;

    /// Binds a unix socket at `path`.
    fn bind_unix(&self, path: &Path) -> io::Result<Self::UnixListener>;

    /// Waits for a connection on `listener`. Cancel safe: dropped while waiting, no connection is lost.
    fn accept_unix(&self, listener: &Self::UnixListener) -> impl Future<Output = io::Result<Self::UnixStream>> + Send;

    /// Registers a bound std TCP listener with the runtime (made non-blocking). Binding stays the caller's
    /// (`std::net::TcpListener::bind`), so that the address a port 0 got is known before serving.
    fn tcp_listener_from_std(&self, listener: std::net::TcpListener) -> io::Result<Self::TcpListener>;

    /// Waits for a connection on `listener`, with `TCP_NODELAY` set on it. Cancel safe: dropped while waiting,
    /// no connection is lost.
    fn accept_tcp(&self, listener: &Self::TcpListener) -> impl Future<Output = io::Result<Self::TcpStream>> + Send;
}

/// How a runtime turns its own byte streams into a [`Transport`]: `S` is any stream of that runtime (a TLS
/// stream, a vsock, a child's joined stdio), for [`Qmp::from_stream`](crate::Qmp::from_stream).
pub trait Streams<S>: Runtime {
    /// The transport over `S`.
    type Transport: Transport;

    /// Wraps `stream`.
    fn transport(stream: S) -> Self::Transport;
}
