//! qmp-async's [`Transport`] over async-io and futures-io: any `AsyncRead + AsyncWrite` ([`Io`]), a unix socket
//! that also passes file descriptors ([`Unix`], SCM_RIGHTS through rustix's safe `sendmsg`), and a pair of pipes
//! ([`Pipes`]).

use std::fs::File;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_io::Async;
use futures_io::{AsyncRead, AsyncWrite};
use qmp_async::Transport;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

/// Any futures-io stream; no file descriptor passing.
#[derive(Debug)]
pub struct Io<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for Io<S> {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// A unix socket on the async-io reactor, which can pass a file descriptor with a byte. Shutting down shuts
/// only the write half, so the server's last words can still be read.
#[derive(Debug)]
pub struct Unix(pub Async<UnixStream>);

impl Transport for Unix {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.get_ref().shutdown(std::net::Shutdown::Write))
    }

    fn can_pass_fds(&self) -> bool {
        true
    }

    fn poll_write_with_fd(&mut self, cx: &mut Context<'_>, byte: u8, fd: BorrowedFd<'_>) -> Poll<io::Result<usize>> {
        loop {
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            let fds = [fd];
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Poll::Ready(Err(io::Error::other("control message buffer too small")));
            }
            let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
            match rustix::net::sendmsg(self.0.get_ref(), &[IoSlice::new(&[byte])], &mut control, flags) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(rustix::io::Errno::AGAIN) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
            match self.0.poll_writable(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A pipe to read from and a pipe to write to, as one transport. Shutting down closes the write pipe.
#[derive(Debug)]
pub struct Pipes {
    read: Async<File>,
    write: Option<Async<File>>,
}

impl Pipes {
    pub(crate) fn new(read: OwnedFd, write: OwnedFd) -> io::Result<Pipes> {
        Ok(Pipes { read: Async::new(File::from(read))?, write: Some(Async::new(File::from(write))?) })
    }

    fn writer(&mut self) -> io::Result<Pin<&mut Async<File>>> {
        self.write.as_mut().map(Pin::new).ok_or_else(|| io::ErrorKind::BrokenPipe.into())
    }
}

impl Transport for Pipes {
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
