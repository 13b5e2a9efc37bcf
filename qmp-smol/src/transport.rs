//! What the driver needs from a stream: `futures-io` reads and writes, and, on unix sockets, passing a file
//! descriptor with SCM_RIGHTS.
//!
//! Any `AsyncRead + AsyncWrite` works through [`Plain`] (fd passing then reports `Unsupported`). A unix socket
//! registered with async-io (the reactor under both smol and async-std) also passes descriptors: the core marks
//! one space byte before a command that takes a descriptor, and the driver sends that byte with the descriptor
//! attached (QEMU's parser skips the whitespace and keeps the descriptor for the command). The write uses
//! rustix's safe `sendmsg`, so this crate stays free of `unsafe`.

use std::io;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};

/// A byte stream the driver can own. Private: users hand in an `AsyncRead + AsyncWrite`, or a unix socket.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether [`poll_write_fd`](Self::poll_write_fd) can work at all.
    const FD_PASSING: bool;
    /// Writes the one byte `byte` with `fd` attached (SCM_RIGHTS). Returns how many bytes were written (0 or 1).
    fn poll_write_fd(&mut self, cx: &mut Context<'_>, byte: u8, fd: BorrowedFd<'_>) -> Poll<io::Result<usize>>;
}

/// Any stream: no descriptor passing.
#[derive(Debug)]
pub(crate) struct Plain<S>(pub(crate) S);

impl<S: AsyncRead + Unpin> AsyncRead for Plain<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Plain<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for Plain<S> {
    const FD_PASSING: bool = false;

    fn poll_write_fd(&mut self, _: &mut Context<'_>, _: u8, _: BorrowedFd<'_>) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(qmp_proto::adapter::fd_passing_unsupported()))
    }
}

#[cfg(any(feature = "smol", feature = "async-std"))]
impl Transport for async_io::Async<std::os::unix::net::UnixStream> {
    const FD_PASSING: bool = true;

    fn poll_write_fd(&mut self, cx: &mut Context<'_>, byte: u8, fd: BorrowedFd<'_>) -> Poll<io::Result<usize>> {
        use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        use std::mem::MaybeUninit;
        loop {
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            let fds = [fd];
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Poll::Ready(Err(io::Error::other("control message buffer too small")));
            }
            let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
            match sendmsg(self.get_ref(), &[io::IoSlice::new(&[byte])], &mut control, flags) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(rustix::io::Errno::AGAIN) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
            match self.poll_writable(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
