//! qmp-async's transports on the async-io reactor: any futures-io stream is a [`qmp_async::Io`] as it is; a unix
//! socket ([`Unix`]) also passes file descriptors ([`UnixFds`]: SCM_RIGHTS, waiting for writability with
//! async-io); a TCP socket ([`Tcp`]) passes none but has its write half shut down on close ([`TcpFds`]); two
//! pipes join into [`Pipes`].

use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::task::{ready, Context, Poll};

use async_io::Async;
use qmp_async::{recv_with_fds, send_byte_with_fd, Duplex, Io, NoFds, SendFd};

/// How an async-io unix socket sends a byte with a descriptor: try, and on `WouldBlock` wait until it is
/// writable.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixFds;

/// A unix socket on the async-io reactor, with descriptor passing.
pub type Unix = Io<Socket, UnixFds>;

/// How an async-io TCP socket passes descriptors: it cannot. It names its socket so that closing shuts the write
/// half down (async-io's `poll_close` only flushes: QEMU would not read the end of its input, and `close` would
/// wait its whole linger).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpFds;

/// A TCP socket on the async-io reactor.
pub type Tcp = Io<Async<TcpStream>, TcpFds>;

impl SendFd<Async<TcpStream>> for TcpFds {
    const CAN_PASS_FDS: bool = false;

    fn poll_send(
        sock: &mut Async<TcpStream>,
        cx: &mut Context<'_>,
        byte: u8,
        fd: BorrowedFd<'_>,
    ) -> Poll<io::Result<usize>> {
        // As every stream that cannot pass descriptors.
        <NoFds as SendFd<Async<TcpStream>>>::poll_send(sock, cx, byte, fd)
    }

    fn write_half(sock: &Async<TcpStream>) -> Option<BorrowedFd<'_>> {
        Some(sock.as_fd())
    }
}

/// A pipe to read from and a pipe to write to.
pub type Pipes = Duplex<Async<File>, Async<File>>;

type Socket = Async<UnixStream>;

impl SendFd<Socket> for UnixFds {
    fn poll_send(sock: &mut Socket, cx: &mut Context<'_>, byte: u8, fd: BorrowedFd<'_>) -> Poll<io::Result<usize>> {
        loop {
            match send_byte_with_fd(sock.as_fd(), byte, fd) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(sock.poll_writable(cx))?,
                sent => return Poll::Ready(sent),
            }
        }
    }

    fn socket(sock: &Socket) -> Option<BorrowedFd<'_>> {
        Some(sock.as_fd())
    }

    fn poll_recv(
        sock: &mut Socket,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
    ) -> Option<Poll<io::Result<usize>>> {
        Some(loop {
            match recv_with_fds(sock.as_fd(), buf, fds) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match sock.poll_readable(cx) {
                    Poll::Pending => break Poll::Pending,
                    Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                },
                read => break Poll::Ready(read),
            }
        })
    }
}

/// Joins two pipes, registered with the reactor.
pub(crate) fn pipes(read: OwnedFd, write: OwnedFd) -> io::Result<Pipes> {
    Ok(Duplex::new(Async::new(File::from(read))?, Async::new(File::from(write))?))
}
