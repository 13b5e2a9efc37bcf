//! The driver: the connection state ([`Conn`]) that owns the transport and the `qmp-proto` core, and moves bytes,
//! time and requests between them, and the [`Driver`] future. Handles send it requests (and poll it while they
//! wait); it holds no protocol logic and never waits on a subscriber. It is polled through an [`Engine`]
//! (`driver/engine.rs`) by whoever needs it to move: a caller waiting for its reply, in place, or the driver's task.
//!
//! Each turn takes, in this order: cancellations and close requests (so a dropped caller's queued command is
//! withdrawn before it can be written), new requests, then writes what the core wants written, then the timer,
//! then input. Writing comes before reading: a command written in a turn needs no turn of its own. The timer
//! comes before the input: the core learns the time only from `handle_timeout`, so a reply read after its
//! command's deadline passed finds the deadline fired (the clock is read before input is handed over, in case the
//! runtime's timer is late). Input is read, and the timer polled, only when there may be something
//! ([`wake::SourceWake`]), and the loop goes round again only after a read, a fired timer, a failed write or the
//! end of the session, so a command costs one read that finds its reply and one that finds nothing, as a raw
//! loop over the socket does. After **every** call into the core it follows the core's contract: drain
//! `poll_event` (replies to their callers, events to the subscribers), take `poll_transmit_with_fds` into the
//! output buffer, and re-arm the timer from `poll_timeout` (and from the deadlines of requests waiting for room
//! in the core).
//!
//! Writes go out whole: a command is either not on the wire at all or entirely on it (a local close finishes the
//! batch being written before shutting the write half down). File descriptors ride on the one byte the core
//! marks for them: everything before it is written first, then that byte with the descriptor attached, then the
//! rest. After the session ends, the driver shuts its write half down and reads (discarding) until the server
//! closes too, for at most [`CLOSE_LINGER`]: closing with unread input makes the kernel reset the connection,
//! and qemu-ga 7.2 exits on that reset.
//!
//! Memory: nothing is allocated ahead of need. Input is read through a buffer on the stack, a small one unless
//! the last read did not fit it (the core keeps what it needs); the output buffer grows with what is written and
//! is given back after a large write.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use qmp_proto::RequestId;

use crate::callers::Callers;
use crate::events::Publisher;
use crate::mailbox::{Mail, Reader};
use crate::runtime::{Runtime, Timer};
use crate::shared::{ReplyTx, Request, Shared};
use crate::transport::Transport;

mod dispatch;
pub(crate) mod engine;
mod wake;

pub(crate) use engine::Engine;
use engine::{Drive, Step};
use wake::SourceWake;

/// The future that runs a connection: it owns the transport and the protocol state, and ends when the session
/// does. The convenience constructors spawn it for you; with [`Qmp::with_driver`](crate::Qmp::with_driver) you
/// spawn it yourself, on any executor. Dropping it ends the session (every pending call fails).
///
/// A caller waiting for its reply drives the connection itself (in its own task, see `driver/engine.rs`); this
/// future does the rest: the handshake, events while no call waits, timers and the close. It must be polled
/// (spawned) all the same.
#[must_use = "the connection makes no progress unless its driver is polled (spawn it)"]
pub struct Driver {
    engine: Arc<Engine>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Driver")
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.engine.poll_task(cx)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.engine.stop();
    }
}

impl Driver {
    /// The driver of the connection `make` builds with the engine's waker, polled inside `span` (unless no
    /// subscriber wanted the span: entering a disabled span does nothing but costs a call on every poll), and the
    /// engine its callers drive it through.
    pub(crate) fn new<T: Transport, R: Runtime>(
        make: impl FnOnce(&Waker) -> Conn<T, R>,
        span: tracing::Span,
    ) -> (Self, Arc<Engine>) {
        let engine = Arc::new(Engine::new(|waker| Box::new(make(waker)) as Box<dyn Drive>, span));
        (Driver { engine: Arc::clone(&engine) }, engine)
    }
}

/// Bytes read at once while reads are small: most replies and events are a few hundred bytes.
const SMALL_READ: usize = 1024;
/// Bytes read at once after a read that did not fit [`SMALL_READ`] (a large reply, a burst of events).
const READ_CHUNK: usize = 16 * 1024;

/// The read buffers: a small one the connection keeps (zeroed once, when the connection first reads), and a
/// large one on the stack of one poll, zeroed only when that poll reads into it (after a read that filled the
/// small one). A poll that finds one reply reads into the small one and zeroes nothing: zeroing a buffer on
/// the stack for every reply was ~170 instructions and 32 cache lines written per command (callgrind,
/// `roundtrip` x1), and 16 KiB of it 2% of the tokio adapter's CPU (perf).
#[derive(Default)]
struct ReadBuf {
    /// Lent by the connection for one poll ([`Conn::small_read`]), given back at its end.
    small: Option<Box<[u8; SMALL_READ]>>,
    large: Option<[u8; READ_CHUNK]>,
}

impl ReadBuf {
    /// The buffer to read into: the large one when the last read filled the small one or did not fit it.
    #[allow(clippy::unnecessary_lazy_evaluations)] // `get_or_insert` would zero a buffer on every call
    fn get(&mut self, large: bool) -> &mut [u8] {
        if large {
            self.large.get_or_insert_with(|| [0; READ_CHUNK])
        } else {
            &mut self.small.get_or_insert_with(|| Box::new([0; SMALL_READ]))[..]
        }
    }
}
/// An output buffer larger than this is given back once written.
const KEEP_OUTPUT: usize = 16 * 1024;
/// Turns of the loop in one poll before yielding to other tasks.
const TURNS_PER_POLL: usize = 64;
/// After the session ends, how long the driver keeps reading (and discarding) what the server still sends, until
/// the server closes its side too.
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// The tracing target of wire traffic (TRACE), so it can be switched on alone: `qmp_async::wire=trace`.
const WIRE: &str = "qmp_async::wire";
/// Longest excerpt of wire traffic in one TRACE record.
const TRACE_EXCERPT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// The session is over; finish the batch being written (`flush`, local close only), shut the write half
    /// down, read until the server closes (or the linger ends).
    Closing {
        flush: bool,
    },
    Done,
}

/// The connection state the driver future owns.
pub(crate) struct Conn<T, R: Runtime> {
    io: T,
    core: qmp_proto::Client,
    shared: Arc<Shared>,
    /// Requests the core had no room for, in order; their deadlines hold while they wait.
    waiting: VecDeque<Request>,
    events: Publisher,
    runtime: R,
    timer: Option<Pin<Box<R::Timer>>>,
    /// The instant the timer is armed for: never later than the earliest deadline (`None`: not armed).
    armed: Option<Instant>,
    /// The core was called or the waiting requests changed since the deadlines were last looked at.
    deadlines_changed: bool,
    /// Bytes to write; `out[..written]` are on the wire.
    out: Vec<u8>,
    written: usize,
    /// Ends of the batches in `out` not completely written (each batch holds whole messages).
    batch_ends: VecDeque<usize>,
    /// Where the batch being written starts.
    batch_start: usize,
    needs_flush: bool,
    /// A write failed: reported once reading has shown whether the server hung up (then the end of the stream
    /// is the cause, the same as when no write was pending).
    write_error: Option<io::Error>,
    /// Callers of submitted commands, with their descriptors until the core puts their byte on the wire.
    calls: Callers<ReplyTx, OwnedFd>,
    /// Offsets in `out` of the bytes that carry a descriptor, in order.
    fd_marks: VecDeque<(usize, OwnedFd)>,
    fd_scratch: Vec<(usize, RequestId)>,
    phase: Phase,
    shut_down: bool,
    linger: Option<Pin<Box<R::Timer>>>,
    /// The driver's side of the mailbox.
    mailbox: Reader,
    /// The handshake ended, and its timer may go once no deadline is left ([`poll_timer`](Self::poll_timer)).
    handshake_timer: bool,
    /// The small read buffer ([`ReadBuf`]), made at the first read and kept: a reply read into it is not zeroed.
    small_read: Option<Box<[u8; SMALL_READ]>>,
    /// Whether there may be input, and the waker reads register (it notes the wake-up, then wakes the task).
    read_wake: Arc<SourceWake>,
    read_waker: Waker,
    /// Whether the timer may have fired (or was re-armed), and the waker it is polled with.
    timer_wake: Arc<SourceWake>,
    timer_waker: Waker,
    /// The last read did not fit [`SMALL_READ`] (or filled it): the next reads into [`READ_CHUNK`].
    large_reads: bool,
    /// Polled by a caller in place ([`engine`]): what needs the runtime's context is left to the driver's task.
    in_place: bool,
    /// Polled in place, the connection needed the driver's task (a timer to make, the close).
    wants_task: bool,
}

impl<T, R: Runtime> fmt::Debug for Conn<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("core", &self.core).field("phase", &self.phase).finish_non_exhaustive()
    }
}

impl<T: Transport, R: Runtime> Conn<T, R> {
    /// The connection over `io`; `engine` is the engine's waker, which it will always be polled with.
    pub(crate) fn new(
        io: T,
        core: qmp_proto::Client,
        shared: Arc<Shared>,
        events: Publisher,
        runtime: R,
        engine: &Waker,
    ) -> Self {
        let (read_wake, read_waker) = SourceWake::new(engine);
        let (timer_wake, timer_waker) = SourceWake::new(engine);
        let mut conn = Conn {
            io,
            core,
            shared,
            waiting: VecDeque::new(),
            events,
            runtime,
            timer: None,
            armed: None,
            deadlines_changed: true,
            out: Vec::new(),
            written: 0,
            batch_ends: VecDeque::new(),
            batch_start: 0,
            needs_flush: false,
            write_error: None,
            calls: Callers::default(),
            fd_marks: VecDeque::new(),
            fd_scratch: Vec::new(),
            phase: Phase::Running,
            shut_down: false,
            linger: None,
            small_read: None,
            mailbox: Reader::default(),
            handshake_timer: false,
            read_wake,
            read_waker,
            timer_wake,
            timer_waker,
            large_reads: false,
            in_place: false,
            wants_task: false,
        };
        // The core may already have something to say (guest-agent mode without a handshake is ready at once).
        conn.after_core();
        conn
    }

    // ----- one turn ----------------------------------------------------------------------------------------

    /// Takes what the handles sent: control messages first (so a dropped caller's queued command is withdrawn
    /// before it can be written), then requests in order. Whatever it gives the core is written in the same turn.
    fn poll_mailbox(&mut self, cx: &mut Context<'_>) {
        self.submit_waiting();
        while self.phase == Phase::Running {
            match self.shared.mailbox.poll_next(&mut self.mailbox, cx) {
                Poll::Ready(Mail::Control(control)) => self.on_control(control),
                Poll::Ready(Mail::Request(req)) if self.waiting.is_empty() => self.submit(req),
                // Order is kept: behind the ones already waiting for room.
                Poll::Ready(Mail::Request(req)) => {
                    self.waiting.push_back(req);
                    self.deadlines_changed = true;
                }
                Poll::Ready(Mail::Orphaned) => {
                    tracing::debug!("every handle dropped: closing");
                    self.core.close();
                    self.after_core();
                }
                Poll::Pending => break,
            }
        }
    }

    /// Reads once, if there may be input (a failed write always looks: the server may have said why it went).
    fn poll_read(&mut self, buf: &mut ReadBuf) -> Poll<()> {
        if self.phase != Phase::Running {
            return Poll::Pending;
        }
        if !self.read_wake.take() && self.write_error.is_none() {
            // The last read found nothing and registered the read waker, which has not fired since.
            return Poll::Pending;
        }
        let buf = buf.get(self.large_reads);
        let result = self.io.poll_read(&mut Context::from_waker(&self.read_waker), buf);
        if result.is_ready() {
            self.read_wake.set();
        }
        if let Poll::Ready(Ok(n)) = result {
            self.large_reads = n > SMALL_READ || n == buf.len();
        }
        match result {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => {
                tracing::debug!("server closed the connection");
                self.core.handle_eof();
            }
            Poll::Ready(Ok(n)) => {
                if tracing::enabled!(tracing::Level::TRACE) {
                    tracing::trace!(target: WIRE, bytes = n, "<- {}", excerpt(&buf[..n]));
                }
                self.check_deadlines();
                self.core.handle_input(&buf[..n]);
            }
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => return Poll::Ready(()),
            Poll::Ready(Err(e)) if qmp_proto::adapter::is_hangup(e.kind()) => {
                tracing::debug!(error = %e, "server hung up");
                self.core.handle_eof();
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                self.core.handle_transport_error(e.to_string());
            }
        }
        self.after_core();
        Poll::Ready(())
    }

    /// The earliest deadline: the core's, or that of a request waiting for room.
    fn next_deadline(&self) -> Option<Instant> {
        let waiting = self.waiting.iter().filter_map(Request::deadline).min();
        match (self.core.poll_timeout(), waiting) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires the deadlines that passed. The timer is only moved earlier, never later: command deadlines mostly
    /// arrive in increasing order, so a timer armed for the oldest one fires (harmlessly) early at worst, and is
    /// then re-armed, instead of being reset for every command. The deadlines are looked at again only after a
    /// call into the core or a change to the waiting requests, and the clock is read only when the timer fires
    /// (and before input is handed to the core, [`check_deadlines`](Self::check_deadlines)): a command costs no
    /// clock read and no timer reset here.
    fn poll_timer(&mut self) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        if self.deadlines_changed {
            match self.next_deadline() {
                // A timer is made in the runtime's context, which a caller polling in place may not have. Until
                // the driver's task makes it, input is still checked against the deadline (`check_deadlines`).
                Some(at) if self.timer.is_none() && self.in_place => {
                    self.wants_task = true;
                    self.armed = Some(self.armed.map_or(at, |armed| armed.min(at)));
                }
                Some(at) => {
                    self.deadlines_changed = false;
                    self.arm_no_later_than(at);
                }
                // The handshake is over and no command has a deadline (`command_timeout(None)`): the timer armed
                // for the handshake goes, instead of staying registered with the runtime until it fires. While a
                // runtime has a timer, every park reads the clock and looks at its timers (on async-io, a
                // `timerfd_settime` system call and a timer map split per turn of the reactor). Only once, and
                // by the driver's task: a timer dropped whenever no command is in flight would have to be made
                // again, by that task, for the next command that brings a deadline.
                None if !self.in_place && std::mem::take(&mut self.handshake_timer) => {
                    self.deadlines_changed = false;
                    self.timer = None;
                    self.armed = None;
                }
                None => self.deadlines_changed = false,
            }
        }
        if let (None, Some(at), false) = (&self.timer, self.armed, self.in_place) {
            // A caller polling in place asked for a timer: its deadline may have gone by now (the command was
            // answered), but the next command will bring one again; the timer fires early at worst, harmlessly.
            self.arm_no_later_than(at);
        }
        let (Some(target), Some(timer)) = (self.armed, self.timer.as_mut()) else {
            return false;
        };
        // Polled only when it woke the driver or was re-armed ([`SourceWake`]).
        if !self.timer_wake.take() || timer.as_mut().poll_fire(&mut Context::from_waker(&self.timer_waker)).is_pending()
        {
            return false;
        }
        // A fired timer is re-armed before it is polled again; the instant it was armed for has passed.
        self.fire(self.runtime.now().max(target));
        true
    }

    /// Arms the timer for `at`, unless it is armed for that instant or an earlier one already (it is only moved
    /// earlier), and has it polled.
    fn arm_no_later_than(&mut self, at: Instant) {
        if self.timer.is_some() && self.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(self.runtime.timer(at))),
        }
        self.armed = Some(at);
        self.timer_wake.set();
    }

    /// Before input goes to the core: fires the deadlines that have passed though the timer has not fired yet
    /// (a runtime's timer may fire late by its tick), so a reply read after its command's deadline is a timeout.
    /// The armed instant is never later than the earliest deadline: nothing can have passed before it.
    fn check_deadlines(&mut self) {
        let Some(armed) = self.armed else {
            return;
        };
        let now = self.runtime.now();
        if armed <= now {
            self.fire(now);
        }
    }

    fn fire(&mut self, now: Instant) {
        self.armed = None;
        self.deadlines_changed = true;
        self.expire_waiting(now);
        self.core.handle_timeout(now);
        self.after_core();
    }

    /// Writes what is buffered: up to the next descriptor mark, then the marked byte with its descriptor.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while self.written < self.out.len() && self.write_error.is_none() {
            let next_fd = self.fd_marks.front().map(|(at, _)| *at);
            let result = match self.fd_marks.front() {
                Some((at, fd)) if *at == self.written => self.io.poll_write_with_fd(cx, self.out[*at], fd.as_fd()),
                _ => self.io.poll_write(cx, &self.out[self.written..next_fd.unwrap_or(self.out.len())]),
            };
            match result {
                Poll::Pending => return progress,
                Poll::Ready(Ok(0)) => {
                    self.write_error = Some(io::ErrorKind::WriteZero.into());
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
                    tracing::debug!(error = %e, "write failed");
                    self.write_error = Some(e);
                    return true;
                }
            }
        }
        if self.needs_flush && self.write_error.is_none() {
            match self.io.poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => {
                    self.write_error = Some(e);
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
            if self.out.capacity() > KEEP_OUTPUT {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
            self.written = 0;
            self.batch_start = 0;
            self.batch_ends.clear();
            self.needs_flush = true;
        }
    }

    /// A write failed and reading has nothing more to say: the failure is the cause, unless it is a hang-up (then
    /// the server's end of the stream is, as if read).
    fn report_write_error(&mut self) {
        let Some(e) = self.write_error.take() else {
            return;
        };
        if self.phase == Phase::Running {
            if qmp_proto::adapter::is_hangup(e.kind()) {
                self.core.handle_eof();
            } else {
                self.core.handle_transport_error(e.to_string());
            }
            self.after_core();
        }
        // Nothing more can be written.
        self.out.clear();
        self.written = 0;
        self.fd_marks.clear();
    }

    /// After the end: finish the batch being written (local close), shut the write half down, then read and
    /// discard until the server closes too (or [`CLOSE_LINGER`] passes).
    fn poll_closing(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf, flush: bool) -> bool {
        if flush && self.written < self.out.len() && self.write_error.is_none() {
            self.poll_write(cx);
            if self.written < self.out.len() && self.write_error.is_none() {
                return false;
            }
        }
        if !self.shut_down {
            if self.io.poll_shutdown(cx).is_pending() {
                return false;
            }
            tracing::trace!("write half shut down");
            self.shut_down = true;
        }
        let buf = buf.get(true);
        for _ in 0..TURNS_PER_POLL {
            match self.io.poll_read(cx, buf) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    tracing::trace!(target: WIRE, bytes = n, "<- (discarded) {}", excerpt(&buf[..n]));
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(_) => {
                    self.phase = Phase::Done;
                    return true;
                }
                Poll::Pending => break,
            }
        }
        let runtime = &self.runtime;
        let linger = self.linger.get_or_insert_with(|| Box::pin(runtime.timer(runtime.now() + CLOSE_LINGER)));
        if linger.as_mut().poll_fire(cx).is_ready() {
            tracing::debug!("the server did not close its side in time");
            self.phase = Phase::Done;
            return true;
        }
        false
    }
}

impl<T: Transport, R: Runtime> Drive for Conn<T, R> {
    fn poll_drive(&mut self, cx: &mut Context<'_>, in_place: bool) -> Step {
        self.in_place = in_place;
        let polled = self.poll_turns(cx);
        self.in_place = false;
        match polled {
            Poll::Ready(()) => Step::Finished,
            Poll::Pending if std::mem::take(&mut self.wants_task) => Step::WantsTask,
            Poll::Pending => Step::Pending,
        }
    }
}

impl<T: Transport, R: Runtime> Conn<T, R> {
    /// Up to [`TURNS_PER_POLL`] turns: `Ready` once the session is over and the connection has finished.
    fn poll_turns(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut buf = ReadBuf { small: self.small_read.take(), large: None };
        let polled = self.poll_turns_with(cx, &mut buf);
        self.small_read = buf.small;
        polled
    }

    /// [`poll_turns`](Self::poll_turns) with the read buffers of this poll.
    fn poll_turns_with(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf) -> Poll<()> {
        for _ in 0..TURNS_PER_POLL {
            let progress = match self.phase {
                Phase::Running => {
                    let write_failed = self.write_error.is_some();
                    // Every source is polled (the input and the timer: unless nothing woke them since they
                    // registered), so every source has registered its waker. What the mailbox brought is written
                    // in this turn; a finished write makes no input, so neither takes a further turn (each would
                    // read again).
                    self.poll_mailbox(cx);
                    let wrote = self.poll_write(cx);
                    let fired = self.poll_timer();
                    let read = self.poll_read(buf);
                    if write_failed && read.is_pending() {
                        // A write failed last turn and reading since has not ended the session.
                        self.report_write_error();
                    }
                    let ended = self.phase != Phase::Running;
                    ended | read.is_ready() | write_failed | fired | (wrote && self.write_error.is_some())
                }
                Phase::Closing { .. } if self.in_place => {
                    // Closing makes a timer (the linger): the driver's task does it.
                    self.wants_task = true;
                    return Poll::Pending;
                }
                Phase::Closing { flush } => self.poll_closing(cx, buf, flush),
                Phase::Done => {
                    tracing::debug!("driver finished");
                    self.shared.set_finished();
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

impl<T, R: Runtime> Drop for Conn<T, R> {
    fn drop(&mut self) {
        if self.phase != Phase::Done {
            // Dropped before the session ended (the executor shut down, or the user dropped the driver).
            tracing::debug!("driver dropped while the session was open");
            let cause = qmp_proto::ConnectionError::Transport("the connection's driver was dropped".into());
            self.shared.set_closed(cause.clone());
            for reply in self.calls.drain() {
                let _ = reply.send(Err(crate::Error::Connection(cause.clone())));
            }
            let queued = self.shared.mailbox.close();
            for req in self.waiting.drain(..).chain(queued) {
                let _ = req.reply.send(Err(crate::Error::Connection(cause.clone())));
            }
            self.events.close();
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
