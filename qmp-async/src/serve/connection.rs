//! The loop of one served connection, written once for every kind of session: a future that owns the transport
//! and a [`qmp_proto::Server`], and moves bytes between them, while a [`Backend`] answers the commands and feeds
//! the core replies and events (a [`Service`](super::Service)'s handlers, or the proxy's upstream QEMU).
//!
//! Each turn: the backend feeds the core; a close request closes it; then the core's contract: drain its events
//! (commands go to the backend), take its output and write it, and read only while the core wants input (the
//! way QEMU stops reading a busy monitor). The connection ends when the client hangs up or the core is closed,
//! once everything queued is written.

use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use qmp_proto::server::{Event, Server, ServerConfig};

use super::Shutdown;
use crate::transport::Transport;

/// Bytes read at once.
const READ_CHUNK: usize = 8 * 1024;

/// What answers a served connection's commands and feeds its core.
pub(crate) trait Backend: Unpin {
    /// Feeds `server` what arrived (replies, events; `unwritten` bytes are still waiting to be written, to stop
    /// feeding events to a client that does not read). Returns true when anything did; otherwise registers for
    /// a wake-up.
    fn poll_feed(&mut self, cx: &mut Context<'_>, server: &mut Server, unwritten: usize) -> bool;

    /// Handles an event of the core (a command to answer, the negotiation, the end).
    fn on_event(&mut self, server: &mut Server, event: Event);

    /// File descriptors the client passed (SCM_RIGHTS) with the bytes about to be fed to the core; they belong
    /// to the commands those bytes hold. Closed by default.
    fn on_fds(&mut self, fds: Vec<OwnedFd>) {
        drop(fds);
    }

    /// Whether the connection must close now; registers for a wake-up while it stays [`Close::No`].
    fn poll_close(&mut self, cx: &mut Context<'_>, server: &Server) -> Close;
}

/// What [`Backend::poll_close`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// Go on.
    No,
    /// Close the core, write what it queued, then shut the stream down.
    Gracefully,
    /// End the connection at once, without writing what waits (a client that does not read).
    Now,
}

/// Runs one connection: `config`'s server over `io`, answered by `backend`.
pub(crate) async fn run<T: Transport, B: Backend>(config: ServerConfig, io: T, backend: B) {
    let mut conn =
        Connection { server: Server::new(config), io, out: Vec::new(), written: 0, backend, write_done: false };
    std::future::poll_fn(|cx| conn.poll(cx)).await
}

struct Connection<T, B> {
    server: Server,
    io: T,
    out: Vec<u8>,
    written: usize,
    backend: B,
    /// The write half has been shut down (the connection is over).
    write_done: bool,
}

impl<T: Transport, B: Backend> Connection<T, B> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Zeroed once per poll, not once per turn.
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let unwritten = self.out.len() - self.written;
            let mut progress = self.backend.poll_feed(cx, &mut self.server, unwritten);
            if !self.server.is_closed() {
                match self.backend.poll_close(cx, &self.server) {
                    Close::No => {}
                    Close::Gracefully => self.server.close(),
                    Close::Now => return Poll::Ready(()),
                }
            }
            self.drain_core();
            if self.poll_write(cx).is_err() {
                return Poll::Ready(());
            }
            if self.server.is_closed() && self.written == self.out.len() {
                // Everything is written: shut the write half down and end.
                if !self.write_done {
                    match self.io.poll_shutdown(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(_) => self.write_done = true,
                    }
                }
                return Poll::Ready(());
            }
            if self.server.wants_input() {
                let mut fds = Vec::new();
                let read = self.io.poll_read_with_fds(cx, &mut buf, &mut fds);
                if !fds.is_empty() {
                    self.backend.on_fds(fds);
                }
                match read {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        self.server.handle_eof();
                        progress = true;
                    }
                    Poll::Ready(Ok(n)) => {
                        tracing::trace!(target: "qmp_async::wire", bytes = n, "server read");
                        self.server.handle_input(&buf[..n]);
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// The core's contract: hand its events to the backend, then take its output.
    fn drain_core(&mut self) {
        while let Some(event) = self.server.poll_event() {
            self.backend.on_event(&mut self.server, event);
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        self.server.poll_transmit(&mut self.out);
    }

    /// Writes what is queued; `Err` when the transport failed (the connection is over).
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<(), ()> {
        while self.written < self.out.len() {
            match self.io.poll_write(cx, &self.out[self.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(()),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Pending => return Ok(()),
            }
        }
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
            self.written = 0;
        }
        match self.io.poll_flush(cx) {
            Poll::Ready(Err(_)) => Err(()),
            _ => Ok(()),
        }
    }
}

/// Waits for a [`Shutdown`]: true once it was requested; otherwise registers `cx` for it.
#[derive(Debug)]
pub(crate) struct ShutdownWatch {
    shutdown: Arc<Shutdown>,
    listener: Option<event_listener::EventListener>,
}

impl ShutdownWatch {
    pub(crate) fn new(shutdown: Arc<Shutdown>) -> Self {
        ShutdownWatch { shutdown, listener: None }
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        use std::future::Future;
        loop {
            if self.shutdown.is_set() {
                return true;
            }
            match &mut self.listener {
                None => self.listener = Some(self.shutdown.listen()),
                Some(listener) => {
                    return match Pin::new(listener).poll(cx) {
                        Poll::Ready(()) => {
                            self.listener = None;
                            self.shutdown.is_set()
                        }
                        Poll::Pending => false,
                    };
                }
            }
        }
    }
}
