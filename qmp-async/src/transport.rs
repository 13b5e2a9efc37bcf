//! [`Transport`]: what the driver needs from a byte stream. Reads, writes, a flush, a shutdown of the write half,
//! and, where the stream is a unix socket, writing one byte with a file descriptor attached (SCM_RIGHTS).
//!
//! It is implemented here, once, over the runtime-neutral `futures-io` traits: [`Io`] for any stream (with
//! descriptor passing when its [`SendFd`] policy can, as a unix socket's does) and [`Duplex`] for a read half and
//! a write half (a child's stdio, the two FIFOs of `-qmp pipe:NAME`). A runtime adapter brings its streams to
//! these (tokio's through `tokio-util`'s compat layer) and writes only how its unix socket sends a descriptor,
//! around [`send_byte_with_fd`].

use std::io::{self, IoSlice, IoSliceMut};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// A byte stream the driver owns. Every method follows the `poll` contract: `Pending` registers the waker.
pub trait Transport: Send + Unpin + 'static {
    /// Reads into `buf`; `Ok(0)` is the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;

    /// Writes from `buf`; returns how many bytes were written.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;

    /// Flushes buffered writes.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Shuts the write half down: the peer reads the end of the stream, and reading goes on.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Whether [`poll_write_with_fd`](Self::poll_write_with_fd) can work at all (a unix socket).
    fn can_pass_fds(&self) -> bool {
        false
    }

    /// Writes the one byte `byte` with `fd` attached (SCM_RIGHTS); returns how many bytes were written (0 or 1).
    fn poll_write_with_fd(&mut self, cx: &mut Context<'_>, byte: u8, fd: BorrowedFd<'_>) -> Poll<io::Result<usize>> {
        let _ = (cx, byte, fd);
        Poll::Ready(Err(fd_passing_unsupported()))
    }

    /// The unix socket under the stream, if it is one (for its peer's credentials). `None` by default.
    fn unix_socket(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Reads into `buf` like [`poll_read`](Self::poll_read), and appends the file descriptors that came with
    /// those bytes (SCM_RIGHTS) to `fds`. Transports that cannot receive descriptors just read.
    fn poll_read_with_fds(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
    ) -> Poll<io::Result<usize>> {
        let _ = fds;
        self.poll_read(cx, buf)
    }
}

/// Descriptors taken from one read at most; more are closed by the kernel (MSG_CTRUNC).
const MAX_FDS_PER_READ: usize = 16;

/// Reads into `buf` from the unix socket `socket` without blocking, appending the descriptors received with
/// the bytes (SCM_RIGHTS, close-on-exec) to `fds`: the one system call every adapter's unix [`SendFd`] policy
/// makes to receive. `WouldBlock` means: wait until the socket is readable and try again.
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_READ))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let flags = RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC;
    let received = loop {
        match rustix::net::recvmsg(socket, &mut [IoSliceMut::new(buf)], &mut control, flags) {
            Err(rustix::io::Errno::INTR) => continue,
            result => break result.map_err(io::Error::from)?,
        }
    };
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received_fds) = message {
            fds.extend(received_fds);
        }
    }
    Ok(received.bytes)
}

/// The credentials of a unix socket's peer (SO_PEERCRED), taken when it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Its user id.
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
    /// Its process id.
    pub pid: i32,
}

/// The credentials of the peer of the unix socket `socket` (SO_PEERCRED).
pub fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<PeerCredentials> {
    let cred = rustix::net::sockopt::socket_peercred(socket)?;
    Ok(PeerCredentials { uid: cred.uid.as_raw(), gid: cred.gid.as_raw(), pid: cred.pid.as_raw_nonzero().get() })
}

/// The error of passing a file descriptor over a transport that cannot ([`io::ErrorKind::Unsupported`]), for
/// [`Error::FdPassing`](crate::Error::FdPassing).
pub fn fd_passing_unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "file descriptors can only be passed over a unix socket")
}

/// How a stream `S` sends one byte with a file descriptor attached: [`NoFds`] for streams that cannot, an
/// adapter's unix-socket policy for those that can.
pub trait SendFd<S>: Send + Unpin + 'static {
    /// Whether descriptors can be passed at all (true unless the policy is [`NoFds`]).
    const CAN_PASS_FDS: bool = true;

    /// Writes `byte` with `fd` attached on `stream` (see [`Transport::poll_write_with_fd`]).
    fn poll_send(stream: &mut S, cx: &mut Context<'_>, byte: u8, fd: BorrowedFd<'_>) -> Poll<io::Result<usize>>;

    /// The unix socket under `stream` (see [`Transport::unix_socket`]). `None` by default.
    fn socket(stream: &S) -> Option<BorrowedFd<'_>> {
        let _ = stream;
        None
    }

    /// The socket whose write half [`Io`] shuts down when it closes, after flushing: a stream whose
    /// `poll_close` only flushes (async-io's) never tells the server that its input ended otherwise. The unix
    /// socket of [`socket`](Self::socket) by default; a TCP policy that passes no descriptors returns its socket
    /// here only.
    fn write_half(stream: &S) -> Option<BorrowedFd<'_>> {
        Self::socket(stream)
    }

    /// Reads from `stream` with the descriptors that came along (see [`Transport::poll_read_with_fds`]);
    /// `None` (the default) when the policy cannot receive them: the stream is read as usual.
    fn poll_recv(
        stream: &mut S,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
    ) -> Option<Poll<io::Result<usize>>> {
        let _ = (stream, cx, buf, fds);
        None
    }
}

/// The policy of streams that cannot pass descriptors.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFds;

impl<S> SendFd<S> for NoFds {
    const CAN_PASS_FDS: bool = false;

    fn poll_send(_: &mut S, _: &mut Context<'_>, _: u8, _: BorrowedFd<'_>) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(fd_passing_unsupported()))
    }
}

/// Any futures-io stream as a [`Transport`]; `F` says how it passes descriptors ([`NoFds`] by default).
pub struct Io<S, F = NoFds> {
    stream: S,
    _fds: PhantomData<fn() -> F>,
}

impl<S: std::fmt::Debug, F> std::fmt::Debug for Io<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Io").field(&self.stream).finish()
    }
}

impl<S, F> Io<S, F> {
    /// Wraps `stream`.
    pub fn new(stream: S) -> Self {
        Io { stream, _fds: PhantomData }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

impl<S, F> Transport for Io<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: SendFd<S>,
{
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(Pin::new(&mut self.stream).poll_close(cx))?;
        // async-io's `poll_close` only flushes: without shutting the write half down the server never reads
        // the end of its input, and the driver lingers a second for a close that does not come. On a socket
        // that is already shut down (tokio's `poll_close` does it), this finds it so.
        if let Some(socket) = F::write_half(&self.stream) {
            match rustix::net::shutdown(socket, rustix::net::Shutdown::Write) {
                Ok(()) | Err(rustix::io::Errno::NOTCONN) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn can_pass_fds(&self) -> bool {
        F::CAN_PASS_FDS
    }

    fn poll_write_with_fd(&mut self, cx: &mut Context<'_>, byte: u8, fd: BorrowedFd<'_>) -> Poll<io::Result<usize>> {
        F::poll_send(&mut self.stream, cx, byte, fd)
    }

    fn unix_socket(&self) -> Option<BorrowedFd<'_>> {
        F::socket(&self.stream)
    }

    fn poll_read_with_fds(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
    ) -> Poll<io::Result<usize>> {
        match F::poll_recv(&mut self.stream, cx, buf, fds) {
            Some(read) => read,
            None => Pin::new(&mut self.stream).poll_read(cx, buf),
        }
    }
}

/// A read half and a write half as one [`Transport`]. Shutting down closes the write half (the peer reads the
/// end of its input) and reading goes on.
#[derive(Debug)]
pub struct Duplex<R, W> {
    read: R,
    write: Option<W>,
}

impl<R, W> Duplex<R, W> {
    /// Joins `read` and `write`.
    pub fn new(read: R, write: W) -> Self {
        Duplex { read, write: Some(write) }
    }

    fn writer(&mut self) -> io::Result<Pin<&mut W>>
    where
        W: Unpin,
    {
        self.write.as_mut().map(Pin::new).ok_or_else(|| io::ErrorKind::BrokenPipe.into())
    }
}

impl<R, W> Transport for Duplex<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.writer()?.poll_write(cx, buf)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer()?.poll_flush(cx)
    }

    fn poll_shutdown(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write = None;
        Poll::Ready(Ok(()))
    }
}

/// Sends `byte` with `fd` attached (SCM_RIGHTS) on the unix socket `socket`, without blocking and without
/// SIGPIPE, through rustix's safe `sendmsg`: the one system call every adapter's unix [`SendFd`] policy makes.
/// `WouldBlock` means: wait until the socket is writable and try again.
pub fn send_byte_with_fd(socket: BorrowedFd<'_>, byte: u8, fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("control message buffer too small for one descriptor"));
    }
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    loop {
        match rustix::net::sendmsg(socket, &[IoSlice::new(&[byte])], &mut control, flags) {
            Err(rustix::io::Errno::INTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
}
