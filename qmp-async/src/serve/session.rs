//! One served connection: a future that owns the transport and a [`qmp_proto::Server`], and moves bytes,
//! handler results and broadcast events between them.
//!
//! Each turn: handler results go into the core (`reply`), broadcast events too (`event`), a shutdown request
//! closes the core; then the core's contract: drain its events (commands are handed to their handlers, spawned
//! on the runtime), take its output and write it, and read only while the core wants input (the way QEMU
//! stops reading a busy monitor). The session ends when the client hangs up or the server shuts down, once
//! everything queued is written.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use qmp_proto::server::{Event, Server, Token};

use super::service::{Reply, Request, Service};
use super::{Broadcast, Shutdown};
use crate::runtime::Runtime;
use crate::transport::Transport;

/// Bytes read at once.
const READ_CHUNK: usize = 8 * 1024;

/// Runs one connection with `service` until the client hangs up or `shutdown` fires.
pub(crate) async fn run<R: Runtime, T: Transport>(
    runtime: R,
    io: T,
    service: Arc<Service>,
    events: async_broadcast::Receiver<Arc<Broadcast>>,
    shutdown: Arc<Shutdown>,
) {
    let (results_tx, results_rx) = async_channel::unbounded();
    let mut session = Session {
        server: Server::new(service.server_config()),
        io,
        out: Vec::new(),
        written: 0,
        results_tx,
        results_rx: Box::pin(results_rx),
        events: Box::pin(events),
        shutdown_listener: None,
        shutdown,
        service,
        runtime,
        write_done: false,
    };
    std::future::poll_fn(|cx| session.poll(cx)).await
}

struct Session<R, T> {
    server: Server,
    io: T,
    out: Vec<u8>,
    written: usize,
    results_tx: async_channel::Sender<(Token, Reply)>,
    results_rx: Pin<Box<async_channel::Receiver<(Token, Reply)>>>,
    events: Pin<Box<async_broadcast::Receiver<Arc<Broadcast>>>>,
    shutdown_listener: Option<event_listener::EventListener>,
    shutdown: Arc<Shutdown>,
    service: Arc<Service>,
    runtime: R,
    /// The write half has been shut down (the session is over).
    write_done: bool,
}

impl<R: Runtime, T: Transport> Session<R, T> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut progress = false;
            while let Poll::Ready(Some((token, reply))) = self.results_rx.as_mut().poll_next(cx) {
                // A token the core no longer knows belongs to a command of a closed session: nothing to do.
                let _ = self.server.reply(token, reply);
                progress = true;
            }
            while let Poll::Ready(Some(event)) = self.events.as_mut().poll_next(cx) {
                self.server.event(&event.name, event.data.as_ref(), event.timestamp);
                progress = true;
            }
            if !self.server.is_closed() && self.poll_shutdown(cx) {
                self.server.close();
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
                let mut buf = [0u8; READ_CHUNK];
                match self.io.poll_read(cx, &mut buf) {
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

    /// True once shutdown was requested; otherwise registers for it.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.shutdown.is_set() {
                return true;
            }
            match &mut self.shutdown_listener {
                None => self.shutdown_listener = Some(self.shutdown.listen()),
                Some(listener) => {
                    return match Pin::new(listener).poll(cx) {
                        Poll::Ready(()) => {
                            self.shutdown_listener = None;
                            self.shutdown.is_set()
                        }
                        Poll::Pending => false,
                    };
                }
            }
        }
    }

    /// The core's contract: hand commands to their handlers, then take its output.
    fn drain_core(&mut self) {
        while let Some(event) = self.server.poll_event() {
            match event {
                Event::Command(cmd) => {
                    let request = Request { name: cmd.name, arguments: cmd.arguments, oob: cmd.oob };
                    let reply = self.service.call(request);
                    let results = self.results_tx.clone();
                    let token = cmd.token;
                    self.runtime.spawn(async move {
                        let reply = reply.await;
                        // The session may have ended meanwhile: then nobody waits for it.
                        let _ = results.send((token, reply)).await;
                    });
                }
                Event::Negotiated { oob } => tracing::debug!(oob, "client negotiated"),
                Event::Closed(reason) => tracing::debug!(?reason, "served session closed"),
                _ => {}
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        self.server.poll_transmit(&mut self.out);
    }

    /// Writes what is queued; `Err` when the transport failed (the session is over).
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
