//! [`Transport`]: what the driver needs from a byte stream. Reads, writes, a flush, a shutdown of the write half,
//! and, where the stream is a unix socket, writing one byte with a file descriptor attached (SCM_RIGHTS).
//!
//! The runtime adapters implement it for their sockets and for any stream of their runtime; a read half and a
//! write half (a child's stdio, the two FIFOs of `-qmp pipe:NAME`) are joined into one stream first.

use std::io;
use std::os::fd::BorrowedFd;
use std::task::{Context, Poll};

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
}

/// The error of passing a file descriptor over a transport that cannot ([`io::ErrorKind::Unsupported`]), for
/// [`Error::FdPassing`](crate::Error::FdPassing).
pub fn fd_passing_unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "file descriptors can only be passed over a unix socket")
}
