//! qmp-async's transports over tokio's streams, through `tokio-util`'s futures-io compat layer: any tokio stream
//! is an [`Io`]; a unix socket ([`Unix`]) also passes file descriptors ([`UnixFds`]: SCM_RIGHTS when tokio says
//! the socket is writable); two pipes join into [`Pipes`].

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::{ready, Context, Poll};

use qmp_async::{recv_with_fds, send_byte_with_fd, Duplex, SendFd};
use tokio::io::Interest;
use tokio::net::unix::pipe;
use tokio::net::UnixStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// Any tokio stream, without descriptor passing.
pub type Io<S> = qmp_async::Io<Compat<S>>;

/// A tokio unix socket, with descriptor passing.
pub type Unix = qmp_async::Io<Compat<UnixStream>, UnixFds>;

/// A pipe to read from and a pipe to write to.
pub type Pipes = Duplex<Compat<pipe::Receiver>, Compat<pipe::Sender>>;

/// How a tokio unix socket sends a byte with a descriptor: once tokio says it is writable, through `try_io`
/// (which clears the readiness on `WouldBlock`).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixFds;

impl SendFd<Compat<UnixStream>> for UnixFds {
    fn poll_send(
        io: &mut Compat<UnixStream>,
        cx: &mut Context<'_>,
        b: u8,
        fd: BorrowedFd<'_>,
    ) -> Poll<io::Result<usize>> {
        let sock = io.get_ref();
        loop {
            ready!(sock.poll_write_ready(cx))?;
            match sock.try_io(Interest::WRITABLE, || send_byte_with_fd(sock.as_fd(), b, fd)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }

    fn socket(io: &Compat<UnixStream>) -> Option<BorrowedFd<'_>> {
        Some(io.get_ref().as_fd())
    }

    fn poll_recv(
        io: &mut Compat<UnixStream>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
    ) -> Option<Poll<io::Result<usize>>> {
        let sock = io.get_ref();
        Some(loop {
            match sock.poll_read_ready(cx) {
                Poll::Pending => break Poll::Pending,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            match sock.try_io(Interest::READABLE, || recv_with_fds(sock.as_fd(), buf, fds)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                read => break Poll::Ready(read),
            }
        })
    }
}

/// A tokio stream as a transport.
pub(crate) fn io<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(stream: S) -> Io<S> {
    qmp_async::Io::new(stream.compat())
}

/// A tokio unix socket as a transport.
pub(crate) fn unix(stream: UnixStream) -> Unix {
    qmp_async::Io::new(stream.compat())
}

/// Joins two pipes, registered with tokio.
pub(crate) fn pipes(read: OwnedFd, write: OwnedFd) -> io::Result<Pipes> {
    let read = pipe::Receiver::from_owned_fd(read)?.compat();
    let write = pipe::Sender::from_owned_fd(write)?.compat_write();
    Ok(Duplex::new(read, write))
}
