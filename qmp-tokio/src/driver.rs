//! The driver task: the only owner of the socket and the `qmp-proto` core. It moves bytes, time and requests
//! between them and holds no protocol logic.
//!
//! One future, polled by tokio (the shape of quinn's connection driver). Each turn it takes, in this order:
//! cancellations and close requests (so a dropped caller's queued command is withdrawn before it can be written),
//! new requests, the timer, input, and then writes what the core wants written. After every call into the core it
//! follows the core's contract: drain `poll_event` (replies to their callers' oneshots, events to the broadcast
//! channel), take `poll_transmit_with_fds` into the output buffer, re-arm the timer from `poll_timeout`.
//!
//! When the session ends on our side (close, every handle dropped, a handshake timeout), the driver shuts the
//! write half down and reads (discarding) until the server closes too, for at most [`CLOSE_LINGER`]: closing a
//! socket with unread input resets the connection, and qemu-ga 7.2 exits on a reset.
//!
//! File descriptors ride on the one byte the core marks for them: everything before it is written first, then that
//! byte with the descriptor attached (SCM_RIGHTS), then the rest; the bytes and the descriptor stay in order.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use qmp_proto::adapter::Callers;
use qmp_proto::{ClientEvent, ConnectionError, Greeting, RawJson, RequestId, UsageError};
use tokio::io::ReadBuf;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Sleep;
use tracing::{debug, trace};

use crate::handle::{Control, Request, Shared};
use crate::transport::Transport;
use crate::Error;
use crate::EventItem;

/// Bytes read from the socket at once.
const READ_BUFFER: usize = 64 * 1024;

/// Turns of the loop in one poll before the task yields to others.
const TURNS_PER_POLL: usize = 64;

/// After a local close, how long the driver keeps reading (and discarding) what the server still sends, until
/// the server closes its side too. Closing with unread input makes the kernel reset the connection, and
/// qemu-ga 7.2 exits on that reset.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// What the handshake ended with: the greeting (QMP) and whether OOB was negotiated.
#[derive(Debug)]
pub(crate) struct Ready {
    pub(crate) greeting: Option<Greeting>,
    pub(crate) oob: bool,
}

pub(crate) struct Driver<T> {
    io: T,
    core: qmp_proto::Client,
    requests: mpsc::Receiver<Request>,
    control: mpsc::UnboundedReceiver<Control>,
    /// A request the core had no room for; retried before any new one is taken.
    stalled: Option<Request>,
    /// Callers of submitted commands, with their descriptors until the core puts their byte on the wire.
    calls: Callers<oneshot::Sender<Result<RawJson, Error>>, OwnedFd>,
    out: Vec<u8>,
    written: usize,
    /// Offsets in `out` of the bytes that carry a descriptor, in order.
    fd_marks: VecDeque<(usize, OwnedFd)>,
    fd_scratch: Vec<(usize, RequestId)>,
    needs_flush: bool,
    read_buf: Box<[u8]>,
    read_done: bool,
    timer: Pin<Box<Sleep>>,
    armed: Option<std::time::Instant>,
    greeting: Option<Greeting>,
    ready: Option<oneshot::Sender<Result<Ready, ConnectionError>>>,
    events: Option<broadcast::Sender<EventItem>>,
    shared: Arc<Shared>,
    state: watch::Sender<Option<ConnectionError>>,
    handles_gone: bool,
    closed: bool,
    /// Closing: the write half is shut down.
    shut_down: bool,
    /// Closing: the deadline of the linger.
    linger: Option<Pin<Box<Sleep>>>,
}

impl<T> std::fmt::Debug for Driver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("core", &self.core).field("calls", &self.calls.len()).finish_non_exhaustive()
    }
}

/// The channels a new driver talks through.
pub(crate) struct Wiring {
    pub(crate) requests: mpsc::Receiver<Request>,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
    pub(crate) ready: oneshot::Sender<Result<Ready, ConnectionError>>,
    pub(crate) events: broadcast::Sender<EventItem>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) state: watch::Sender<Option<ConnectionError>>,
}

impl<T: Transport> Driver<T> {
    pub(crate) fn new(io: T, core: qmp_proto::Client, wiring: Wiring) -> Self {
        let mut driver = Driver {
            io,
            core,
            requests: wiring.requests,
            control: wiring.control,
            stalled: None,
            calls: Callers::default(),
            out: Vec::new(),
            written: 0,
            fd_marks: VecDeque::new(),
            fd_scratch: Vec::new(),
            needs_flush: false,
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            read_done: false,
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            armed: None,
            greeting: None,
            ready: Some(wiring.ready),
            events: Some(wiring.events),
            shared: wiring.shared,
            state: wiring.state,
            handles_gone: false,
            closed: false,
            shut_down: false,
            linger: None,
        };
        // The core may have something already: guest-agent mode is ready at once, QMP arms the handshake deadline.
        driver.after_core();
        driver
    }

    /// The core's contract, after every call into it: drain events, take what to send, re-arm the timer.
    fn after_core(&mut self) {
        while let Some(event) = self.core.poll_event() {
            self.on_event(event);
        }
        self.core.poll_transmit_with_fds(&mut self.out, &mut self.fd_scratch);
        for (at, id) in self.fd_scratch.drain(..) {
            // The descriptor is there unless its caller left after the core chose to send (then the command goes
            // without one, QEMU refuses it, and the reply is swallowed).
            if let Some(fd) = self.calls.take_fd(id) {
                self.fd_marks.push_back((at, fd));
            }
        }
        self.rearm();
    }

    /// Arms the timer for the earliest deadline: the core's, or the stalled request's.
    fn rearm(&mut self) {
        let stalled = self.stalled.as_ref().and_then(Request::deadline);
        let next = match (self.core.poll_timeout(), stalled) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if next != self.armed {
            self.armed = next;
            if let Some(at) = next {
                self.timer.as_mut().reset(tokio::time::Instant::from_std(at));
            }
        }
    }

    fn on_event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Greeting(greeting) => {
                debug!(version = %greeting.version, capabilities = ?greeting.capabilities, "QMP greeting");
                self.greeting = Some(greeting);
            }
            ClientEvent::Ready { oob } => {
                debug!(oob, "session ready");
                if let Some(tx) = self.ready.take() {
                    let _ = tx.send(Ok(Ready { greeting: self.greeting.take(), oob }));
                }
            }
            ClientEvent::Reply { id, result } => self.answer(id, result.map_err(Error::Qmp)),
            ClientEvent::Failed { id, error } => {
                debug!(%id, %error, "command failed");
                self.answer(id, Err(Error::Request(error)));
            }
            ClientEvent::TimedOut { id } => {
                debug!(%id, "command timed out");
                self.answer(id, Err(Error::TimedOut));
            }
            ClientEvent::Event(ev) => {
                if let Some(tx) = &self.events {
                    // No subscriber is not an error; a slow one lags, it never blocks this task.
                    let _ = tx.send(EventItem::Event(ev));
                }
            }
            ClientEvent::EventsDropped { count } => {
                debug!(count, "events dropped by the core");
                if let Some(tx) = &self.events {
                    let _ = tx.send(EventItem::Lagged(count));
                }
            }
            ClientEvent::ProtocolViolation(violation) => {
                debug!(%violation, "protocol violation (session continues)");
                self.shared.violations.lock().unwrap_or_else(|p| p.into_inner()).push(violation);
            }
            ClientEvent::Closed(cause) => self.on_closed(cause),
            other => debug!(event = ?other, "unhandled core event"),
        }
    }

    /// Hands a result to the caller waiting for request `id`, if it still waits.
    fn answer(&mut self, id: RequestId, result: Result<RawJson, Error>) {
        if let Some(reply) = self.calls.answer(id) {
            // A caller that left in the meantime is fine: the core has ended the request either way.
            let _ = reply.send(result);
        }
    }

    fn on_closed(&mut self, cause: ConnectionError) {
        debug!(%cause, pending = self.calls.len(), "connection closed");
        self.closed = true;
        for reply in self.calls.drain() {
            let _ = reply.send(Err(Error::Connection(cause.clone())));
        }
        self.fd_marks.clear();
        if let Some(req) = self.stalled.take() {
            let _ = req.reply.send(Err(Error::Connection(cause.clone())));
        }
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(Err(cause.clone()));
        }
        // Subscribers read what was sent, then their streams end.
        self.events = None;
        self.shared.events.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.state.send_replace(Some(cause));
    }

    /// Gives a request to the core, or parks it when the core has no room.
    fn submit(&mut self, req: Request) {
        if req.reply.is_closed() {
            trace!(ticket = req.ticket, "request dropped by its caller before it was taken");
            return;
        }
        match req.command.submit(&mut self.core) {
            Ok(id) => {
                let Request { fd, ticket, reply, .. } = req;
                self.calls.insert(id, ticket, reply, fd);
            }
            Err(UsageError::QueueFull { .. }) => {
                // Backpressure: the request waits (honouring its deadline) and no new one is taken meanwhile.
                self.stalled = Some(req);
                self.rearm();
                return;
            }
            Err(e) => {
                let _ = req.reply.send(Err(e.into()));
            }
        }
        self.after_core();
    }

    fn on_control(&mut self, control: Control) {
        match control {
            Control::Cancel(ticket) => {
                if let Some(id) = self.calls.cancel(ticket) {
                    trace!(%id, "caller dropped its future: cancelling");
                    self.core.cancel(id);
                    self.after_core();
                } else if self.stalled.as_ref().is_some_and(|r| r.ticket == ticket) {
                    self.stalled = None;
                }
            }
            Control::Close => {
                debug!("close requested");
                self.core.close();
                self.after_core();
            }
        }
    }

    fn poll_control(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while !self.closed {
            match self.control.poll_recv(cx) {
                Poll::Ready(Some(control)) => {
                    self.on_control(control);
                    progress = true;
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        progress
    }

    fn poll_requests(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(req) = self.stalled.take() {
            self.submit(req);
            if self.stalled.is_some() {
                return false;
            }
        }
        let mut progress = false;
        while !self.closed && !self.handles_gone && self.stalled.is_none() {
            match self.requests.poll_recv(cx) {
                Poll::Ready(Some(req)) => {
                    self.submit(req);
                    progress = true;
                }
                Poll::Ready(None) => {
                    debug!("every handle dropped: closing");
                    self.handles_gone = true;
                    self.core.close();
                    self.after_core();
                    progress = true;
                }
                Poll::Pending => break,
            }
        }
        progress
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        if self.armed.is_none() || self.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.armed = None;
        let now = tokio::time::Instant::now().into_std();
        if self.stalled.as_ref().and_then(Request::deadline).is_some_and(|at| at <= now) {
            if let Some(req) = self.stalled.take() {
                debug!("command timed out waiting for room");
                let _ = req.reply.send(Err(Error::TimedOut));
            }
        }
        self.core.handle_timeout(now);
        self.after_core();
        true
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        if self.read_done || self.closed {
            return false;
        }
        let mut buf = ReadBuf::new(&mut self.read_buf);
        match self.io.poll_read(cx, &mut buf) {
            Poll::Pending => return false,
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                if n == 0 {
                    debug!("server closed the connection");
                    self.read_done = true;
                    self.core.handle_eof();
                } else {
                    trace!(target: "qmp_tokio::wire", "<- {}", String::from_utf8_lossy(&self.read_buf[..n]));
                    self.core.handle_input(&self.read_buf[..n]);
                }
            }
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => return true,
            Poll::Ready(Err(e)) => {
                debug!(error = %e, "read failed");
                self.read_done = true;
                self.core.handle_transport_error(e.to_string());
            }
        }
        self.after_core();
        true
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while self.written < self.out.len() && !self.closed {
            let next_fd = self.fd_marks.front().map(|(at, _)| *at);
            let result = match self.fd_marks.front() {
                Some((at, fd)) if *at == self.written => self.io.poll_write_fd(cx, self.out[*at], fd.as_fd()),
                _ => self.io.poll_write(cx, &self.out[self.written..next_fd.unwrap_or(self.out.len())]),
            };
            match result {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) => {
                    self.write_failed(io::ErrorKind::WriteZero.into());
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    if next_fd == Some(self.written) {
                        self.fd_marks.pop_front();
                        debug!("file descriptor passed");
                    }
                    trace!(target: "qmp_tokio::wire", "-> {}", String::from_utf8_lossy(&self.out[self.written..self.written + n]));
                    self.written += n;
                    self.needs_flush = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => {
                    self.write_failed(e);
                    return true;
                }
            }
        }
        if self.written == self.out.len() && self.written > 0 {
            self.out.clear();
            self.written = 0;
        }
        if self.needs_flush && !self.closed {
            match self.io.poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => {
                    self.write_failed(e);
                    return true;
                }
                Poll::Pending => {}
            }
        }
        progress
    }

    fn write_failed(&mut self, e: io::Error) {
        debug!(error = %e, "write failed");
        self.core.handle_transport_error(e.to_string());
        self.after_core();
    }

    /// After the end: refuse what is still queued for us.
    fn refuse_requests(&mut self) {
        self.requests.close();
        let cause = self.core.connection_error().cloned().unwrap_or(ConnectionError::Local);
        while let Ok(req) = self.requests.try_recv() {
            let _ = req.reply.send(Err(Error::Connection(cause.clone())));
        }
    }

    /// After the end, unless the server already closed: shut the write half down, then read and discard until
    /// the server closes too (or [`CLOSE_LINGER`] passes), so the socket is never closed with unread input.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.read_done {
            return Poll::Ready(());
        }
        if !self.shut_down {
            if let Poll::Ready(result) = self.io.poll_shutdown(cx) {
                trace!(?result, "write half shut down");
                self.shut_down = true;
            }
        }
        if self.shut_down {
            for _ in 0..TURNS_PER_POLL {
                let mut buf = ReadBuf::new(&mut self.read_buf);
                match self.io.poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                        trace!(target: "qmp_tokio::wire", "<- (discarded) {}", String::from_utf8_lossy(buf.filled()));
                    }
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Poll::Ready(_) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
        }
        let linger = self.linger.get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_LINGER)));
        if linger.as_mut().poll(cx).is_ready() {
            debug!("the server did not close its side in time");
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl<T: Transport> Future for Driver<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..TURNS_PER_POLL {
            if this.closed {
                this.refuse_requests();
                let done = this.poll_linger(cx);
                if done.is_ready() {
                    debug!("driver finished");
                }
                return done;
            }
            let mut progress = this.poll_control(cx);
            progress |= this.poll_requests(cx);
            progress |= this.poll_timer(cx);
            progress |= this.poll_read(cx);
            progress |= this.poll_write(cx);
            if !progress && !this.closed {
                return Poll::Pending;
            }
        }
        // Still busy (a flood of input, say): let other tasks run, and come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
