//! qmp-async's [`Transport`] over tokio's streams: any `AsyncRead + AsyncWrite` ([`Io`]), a unix socket that also
//! passes file descriptors ([`Unix`], SCM_RIGHTS through rustix's safe `sendmsg`), and a pair of pipes
//! ([`Pipes`]).

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use qmp_async::Transport;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;

/// Reads through tokio's `ReadBuf`.
fn read_into<S: AsyncRead + Unpin>(io: &mut S, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
    let mut buf = ReadBuf::new(buf);
    ready!(Pin::new(io).poll_read(cx, &mut buf))?;
    Poll::Ready(Ok(buf.filled().len()))
}

/// Any tokio stream; no file descriptor passing.
#[derive(Debug)]
pub struct Io<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for Io<S> {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        read_into(&mut self.0, cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A tokio unix socket, which can pass a file descriptor with a byte.
#[derive(Debug)]
pub struct Unix(pub UnixStream);

impl Transport for Unix {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        read_into(&mut self.0, cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn can_pass_fds(&self) -> bool {
        true
    }

    fn poll_write_with_fd(&mut self, cx: &mut Context<'_>, byte: u8, fd: BorrowedFd<'_>) -> Poll<io::Result<usize>> {
        let sock = &self.0;
        loop {
            ready!(sock.poll_write_ready(cx))?;
            let sent = sock.try_io(Interest::WRITABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                let fds = [fd];
                if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                    return Err(io::Error::other("control buffer too small for one descriptor"));
                }
                let bytes = [byte];
                Ok(rustix::net::sendmsg(sock, &[IoSlice::new(&bytes)], &mut control, SendFlags::NOSIGNAL)?)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

/// A pipe to read from and a pipe to write to, as one transport. Shutting down closes the write pipe.
#[derive(Debug)]
pub struct Pipes {
    read: pipe::Receiver,
    write: Option<pipe::Sender>,
}

impl Pipes {
    pub(crate) fn new(read: OwnedFd, write: OwnedFd) -> io::Result<Pipes> {
        Ok(Pipes { read: pipe::Receiver::from_owned_fd(read)?, write: Some(pipe::Sender::from_owned_fd(write)?) })
    }

    fn writer(&mut self) -> io::Result<Pin<&mut pipe::Sender>> {
        self.write.as_mut().map(Pin::new).ok_or_else(|| io::ErrorKind::BrokenPipe.into())
    }
}

impl Transport for Pipes {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        read_into(&mut self.read, cx, buf)
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
