//! The driver: one future that owns the socket and the `qmp-proto` core, and moves bytes, time and requests
//! between them. Handles only send it requests; it holds no protocol logic and never waits on a subscriber.
//!
//! Each turn takes, in this order: cancellations and close requests (so a dropped caller's queued command is
//! withdrawn before it can be written), new requests, input, the timer, and then writes what the core wants
//! written. After **every** call into the core it follows the core's contract: drain `poll_event` (replies to
//! their callers, events to the broadcast channel), take `poll_transmit_with_fds` into the output buffer, and
//! re-arm the timer from `poll_timeout`.
//!
//! Writes go out whole: a command is either not on the wire at all or entirely on it (a local close finishes the
//! batch being written before shutting the socket down). File descriptors ride on the one byte the core marks
//! for them: everything before it is written first, then that byte with the descriptor attached, then the rest.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::Stream;
use qmp_proto::adapter::Callers;
use qmp_proto::{ConnectionError, RequestId};

use crate::runtime::{AsyncTimer, Runtime};
use crate::shared::{Control, ReplyTx, Request, Shared};
use crate::transport::Transport;
use crate::Error;
use crate::EventItem;

mod dispatch;

/// The future that runs a connection: it owns the socket and the protocol state, and ends when the session
/// does. The convenience constructors spawn it for you; with [`Qmp::with_driver`](crate::Qmp::with_driver)
/// you spawn it yourself, on any executor. Dropping it ends the session (every pending call fails).
#[must_use = "the connection makes no progress unless its driver is polled (spawn it)"]
pub struct Driver {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Driver")
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}

impl Driver {
    pub(crate) fn new<T: Transport>(conn: Conn<T>, span: tracing::Span) -> Self {
        Driver { inner: Box::pin(tracing::Instrument::instrument(conn, span)) }
    }

    /// The boxed future, to hand to [`Runtime::spawn`].
    #[cfg(any(feature = "smol", feature = "async-std"))]
    pub(crate) fn into_inner(self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.inner
    }
}

/// Bytes read at once.
const READ_BUFFER: usize = 64 * 1024;
/// Turns of the loop in one poll before yielding to other tasks.
const TURNS_PER_POLL: usize = 64;
/// The tracing target of wire traffic (TRACE), so it can be switched on alone: `qmp_smol::wire=trace`.
const WIRE: &str = "qmp_smol::wire";
/// Longest excerpt of wire traffic in one TRACE record.
const TRACE_EXCERPT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// The session is over; finish the batch being written (`flush`, local close only) and shut down.
    Closing {
        flush: bool,
    },
    Done,
}

/// The connection state the driver future owns.
pub(crate) struct Conn<T> {
    io: T,
    core: qmp_proto::Client,
    shared: Arc<Shared>,
    requests: Pin<Box<async_channel::Receiver<Request>>>,
    control: Pin<Box<async_channel::Receiver<Control>>>,
    /// A request the core had no room for; retried before any new one is taken.
    stalled: Option<Request>,
    events: async_broadcast::Sender<EventItem>,
    runtime: Arc<dyn Runtime>,
    timer: Option<Pin<Box<dyn AsyncTimer>>>,
    armed: Option<Instant>,
    read_buf: Box<[u8]>,
    /// Bytes to write; `out[..written]` are on the wire.
    out: Vec<u8>,
    written: usize,
    /// Ends of the batches in `out` not completely written (each batch holds whole messages).
    batch_ends: VecDeque<usize>,
    /// Where the batch being written starts.
    batch_start: usize,
    needs_flush: bool,
    /// Callers of submitted commands, with their descriptors until the core puts their byte on the wire.
    calls: Callers<ReplyTx, OwnedFd>,
    /// Offsets in `out` of the bytes that carry a descriptor, in order.
    fd_marks: VecDeque<(usize, OwnedFd)>,
    fd_scratch: Vec<(usize, RequestId)>,
    phase: Phase,
}

impl<T> fmt::Debug for Conn<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("core", &self.core).field("phase", &self.phase).finish_non_exhaustive()
    }
}

impl<T: Transport> Conn<T> {
    pub(crate) fn new(
        io: T,
        core: qmp_proto::Client,
        shared: Arc<Shared>,
        requests: async_channel::Receiver<Request>,
        control: async_channel::Receiver<Control>,
        events: async_broadcast::Sender<EventItem>,
        runtime: Arc<dyn Runtime>,
    ) -> Self {
        let mut conn = Conn {
            io,
            core,
            shared,
            requests: Box::pin(requests),
            control: Box::pin(control),
            stalled: None,
            events,
            runtime,
            timer: None,
            armed: None,
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            out: Vec::new(),
            written: 0,
            batch_ends: VecDeque::new(),
            batch_start: 0,
            needs_flush: false,
            calls: Callers::default(),
            fd_marks: VecDeque::new(),
            fd_scratch: Vec::new(),
            phase: Phase::Running,
        };
        // Guest-agent mode is ready at once; QMP has armed its handshake deadline.
        conn.after_core();
        conn
    }

    // ----- one turn ----------------------------------------------------------------------------------------

    fn poll_control(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while self.phase == Phase::Running {
            match self.control.as_mut().poll_next(cx) {
                Poll::Ready(Some(control)) => {
                    self.on_control(control);
                    progress = true;
                }
                // Handles hold both senders; the request channel tells when they are all gone.
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
        while self.phase == Phase::Running && self.stalled.is_none() {
            match self.requests.as_mut().poll_next(cx) {
                Poll::Ready(Some(req)) => {
                    self.submit(req);
                    progress = true;
                }
                Poll::Ready(None) => {
                    tracing::debug!("every handle dropped: closing");
                    self.core.close();
                    self.after_core();
                    return true;
                }
                Poll::Pending => break,
            }
        }
        progress
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        match Pin::new(&mut self.io).poll_read(cx, &mut self.read_buf) {
            Poll::Pending => return false,
            Poll::Ready(Ok(0)) => {
                tracing::debug!("server closed the connection");
                self.core.handle_eof();
            }
            Poll::Ready(Ok(n)) => {
                if tracing::enabled!(tracing::Level::TRACE) {
                    tracing::trace!(target: WIRE, bytes = n, "<- {}", excerpt(&self.read_buf[..n]));
                }
                self.core.handle_input(&self.read_buf[..n]);
            }
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => return true,
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                self.core.handle_transport_error(e.to_string());
            }
        }
        self.after_core();
        true
    }

    /// Fires the core's deadlines. The timer is only moved earlier, never later: command deadlines mostly
    /// arrive in increasing order, so a timer armed for the oldest one fires (harmlessly) early at worst, and is
    /// then re-armed, instead of being reset for every command.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        let Some(at) = self.core.poll_timeout() else {
            return false;
        };
        if at <= Instant::now() {
            self.core.handle_timeout(Instant::now());
            self.after_core();
            return true;
        }
        let target = match (self.armed, &mut self.timer) {
            (Some(armed), Some(_)) if armed <= at => armed,
            (_, Some(timer)) => {
                timer.as_mut().reset(at);
                at
            }
            (_, None) => {
                self.timer = Some(self.runtime.new_timer(at));
                at
            }
        };
        self.armed = Some(target);
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        // A fired timer is re-armed before it is polled again; the instant it was armed for has passed.
        self.armed = None;
        self.core.handle_timeout(Instant::now().max(target));
        self.after_core();
        true
    }

    /// Writes what is buffered: up to the next descriptor mark, then the marked byte with its descriptor.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while self.written < self.out.len() && self.phase != Phase::Done {
            let next_fd = self.fd_marks.front().map(|(at, _)| *at);
            let result = match self.fd_marks.front() {
                Some((at, fd)) if *at == self.written => self.io.poll_write_fd(cx, self.out[*at], fd.as_fd()),
                _ => Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..next_fd.unwrap_or(self.out.len())]),
            };
            match result {
                Poll::Pending => return progress,
                Poll::Ready(Ok(0)) => {
                    self.write_failed(io::ErrorKind::WriteZero.into());
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    if next_fd == Some(self.written) {
                        self.fd_marks.pop_front();
                        tracing::debug!("file descriptor passed");
                    }
                    self.wrote(n);
                    progress = true;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => {
                    self.write_failed(e);
                    return true;
                }
            }
        }
        if self.needs_flush && self.phase == Phase::Running {
            match Pin::new(&mut self.io).poll_flush(cx) {
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

    fn wrote(&mut self, n: usize) {
        self.written += n;
        while let Some(&end) = self.batch_ends.front().filter(|&&end| end <= self.written) {
            self.batch_start = end;
            self.batch_ends.pop_front();
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
            self.batch_start = 0;
            self.batch_ends.clear();
            self.needs_flush = true;
        }
    }

    fn write_failed(&mut self, e: io::Error) {
        tracing::debug!(error = %e, "write failed");
        if self.phase == Phase::Running {
            self.core.handle_transport_error(e.to_string());
            self.after_core();
        }
        // Nothing more can be written.
        self.out.clear();
        self.written = 0;
        self.fd_marks.clear();
    }

    /// After the end: finish the batch being written (local close), then shut the stream down.
    fn poll_closing(&mut self, cx: &mut Context<'_>, flush: bool) -> bool {
        if flush && self.written < self.out.len() {
            self.poll_write(cx);
            if self.written < self.out.len() {
                return false;
            }
        }
        if Pin::new(&mut self.io).poll_close(cx).is_pending() {
            return false;
        }
        self.phase = Phase::Done;
        true
    }
}

impl<T: Transport> Future for Conn<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..TURNS_PER_POLL {
            let progress = match this.phase {
                Phase::Running => {
                    // `|`, not `||`: every source is polled, so every source has registered its waker.
                    this.poll_control(cx)
                        | this.poll_requests(cx)
                        | this.poll_read(cx)
                        | this.poll_timer(cx)
                        | this.poll_write(cx)
                }
                Phase::Closing { flush } => this.poll_closing(cx, flush),
                Phase::Done => {
                    tracing::debug!("driver finished");
                    this.shared.set_finished();
                    return Poll::Ready(());
                }
            };
            if !progress {
                return Poll::Pending;
            }
        }
        // Still busy (a flood of input, say): let other tasks run, and come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T> Drop for Conn<T> {
    fn drop(&mut self) {
        if self.phase != Phase::Done {
            // Dropped before the session ended (the executor shut down, or the user dropped the driver).
            tracing::debug!("driver dropped while the session was open");
            let cause = ConnectionError::Transport("the connection's driver was dropped".into());
            self.shared.set_closed(cause.clone());
            for reply in self.calls.drain() {
                let _ = reply.try_send(Err(Error::Connection(cause.clone())));
            }
            self.events.close();
            self.requests.close();
            self.control.close();
        }
        self.shared.set_finished();
    }
}

/// Wire bytes for a TRACE record: lossy UTF-8, cut at [`TRACE_EXCERPT`].
fn excerpt(bytes: &[u8]) -> String {
    let cut = bytes.len().min(TRACE_EXCERPT);
    let mut s = String::from_utf8_lossy(&bytes[..cut]).into_owned();
    if cut < bytes.len() {
        s.push_str("...");
    }
    s
}
