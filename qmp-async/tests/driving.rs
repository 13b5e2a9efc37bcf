//! How the driver takes its turns, checked over an in-memory transport whose server answers exactly when the
//! reader has just registered for input (the moment an epoll-based reactor's wake-up races with the task that
//! polled), so nothing here depends on an executor's timing:
//!
//! - a turn writes before it reads, and reads only when there may be input: one read finds the reply, one finds
//!   nothing and registers for the next, per command (each read is a system call on async-io);
//! - the timer comes before the input: a reply readable at once after its command's deadline passed is a timeout,
//!   also when the runtime's timer fires late;
//! - the server's reply to `qmp_capabilities` becomes readable as the driver's first turn registers for it:
//!   negotiation must still complete;
//! - a sequential caller writes its commands and reads their replies itself: the driver's task is not polled for
//!   them; a caller woken for input and dropped instead leaves that input to be read by someone else.
//!
//! The runtime is a minimal one of the test's own (timers are threads).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use qmp_async::{EventItem, Options, Qmp, Runtime, Timer, Transport};

/// Longer than any turn may take; far shorter than the default command timeout (30 s), which would mask a stall
/// by failing the stuck call.
const PATIENCE: Duration = Duration::from_secs(3);

// ----- a minimal runtime ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct ThreadRuntime;

/// A timer whose deadline a thread waits for.
struct ThreadTimer {
    state: Arc<Mutex<TimerState>>,
}

#[derive(Default)]
struct TimerState {
    at: Option<Instant>,
    waker: Option<Waker>,
    generation: u64,
}

impl ThreadTimer {
    fn start(state: &Arc<Mutex<TimerState>>, at: Instant) {
        let generation = {
            let mut s = state.lock().unwrap();
            s.at = Some(at);
            s.generation += 1;
            s.generation
        };
        let state = Arc::clone(state);
        std::thread::spawn(move || {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let waker = {
                let s = state.lock().unwrap();
                if s.generation != generation {
                    return;
                }
                s.waker.clone()
            };
            if let Some(w) = waker {
                w.wake();
            }
        });
    }
}

impl Timer for ThreadTimer {
    fn reset(self: Pin<&mut Self>, at: Instant) {
        ThreadTimer::start(&self.state, at);
    }

    fn poll_fire(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.lock().unwrap();
        match s.at {
            Some(at) if at <= Instant::now() => Poll::Ready(()),
            _ => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Runtime for ThreadRuntime {
    type Timer = ThreadTimer;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn timer(&self, at: Instant) -> ThreadTimer {
        let state = Arc::new(Mutex::new(TimerState::default()));
        ThreadTimer::start(&state, at);
        ThreadTimer { state }
    }

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        std::thread::spawn(move || futures_lite::future::block_on(future));
    }
}

/// How late [`LateTimerRuntime`]'s timers fire.
const LATE: Duration = Duration::from_millis(300);

/// The same runtime with timers that fire [`LATE`] after their instant, as a coarse timer wheel may: a reply
/// read after its deadline must still be a timeout, though the timer has not fired yet.
#[derive(Debug, Clone, Default)]
struct LateTimerRuntime;

struct LateTimer(ThreadTimer);

impl Timer for LateTimer {
    fn reset(self: Pin<&mut Self>, at: Instant) {
        Pin::new(&mut self.get_mut().0).reset(at + LATE);
    }

    fn poll_fire(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.get_mut().0).poll_fire(cx)
    }
}

impl Runtime for LateTimerRuntime {
    type Timer = LateTimer;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn timer(&self, at: Instant) -> LateTimer {
        LateTimer(ThreadRuntime.timer(at + LATE))
    }

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        ThreadRuntime.spawn(future);
    }
}

/// [`ThreadRuntime`], counting the timers alive (made and not dropped).
#[derive(Debug, Clone, Default)]
struct CountingTimers(Arc<AtomicUsize>);

struct CountedTimer(ThreadTimer, Arc<AtomicUsize>);

impl Drop for CountedTimer {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Timer for CountedTimer {
    fn reset(self: Pin<&mut Self>, at: Instant) {
        Pin::new(&mut self.get_mut().0).reset(at);
    }

    fn poll_fire(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.get_mut().0).poll_fire(cx)
    }
}

impl Runtime for CountingTimers {
    type Timer = CountedTimer;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn timer(&self, at: Instant) -> CountedTimer {
        self.0.fetch_add(1, Ordering::SeqCst);
        CountedTimer(ThreadRuntime.timer(at), Arc::clone(&self.0))
    }

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        ThreadRuntime.spawn(future);
    }
}

// ----- a scripted server behind an in-memory transport ------------------------------------------------------------

/// The server's side of the in-memory connection: what it wrote but the client may not read yet (`held`),
/// what the client can read, and the reader's waker.
#[derive(Default)]
struct Wire {
    readable: VecDeque<u8>,
    /// Released into `readable` (and the reader woken) when the reader next finds nothing to read: the server
    /// answers right after the client registered for input.
    held: Vec<u8>,
    reader: Option<Waker>,
    /// Bytes the client wrote, not yet a whole command.
    line: Vec<u8>,
    /// Replies are held until the reader next finds nothing to read (instead of readable as soon as their
    /// command is written, with the reader woken).
    hold_replies: bool,
    /// Commands are not answered at all.
    mute: bool,
    /// Reads the client made: those that returned bytes, and those that found nothing.
    reads: usize,
    empty_reads: usize,
}

#[derive(Clone, Default)]
struct Server(Arc<Mutex<Wire>>);

impl Server {
    fn wire(&self) -> MutexGuard<'_, Wire> {
        self.0.lock().unwrap()
    }

    /// Makes `bytes` readable at once and wakes the reader (outside the lock).
    fn send_now(&self, bytes: &str) {
        let waker = {
            let mut wire = self.wire();
            wire.readable.extend(bytes.as_bytes());
            wire.reader.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Reads so far: (with bytes, empty).
    fn reads(&self) -> (usize, usize) {
        let wire = self.wire();
        (wire.reads, wire.empty_reads)
    }
}

struct Pipe(Server);

impl Transport for Pipe {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut wire = self.0.wire();
        if wire.readable.is_empty() {
            wire.empty_reads += 1;
            wire.reader = Some(cx.waker().clone());
            if wire.held.is_empty() {
                return Poll::Pending;
            }
            // The answer comes just after the registration: the reader is woken, and must not lose it.
            let held = std::mem::take(&mut wire.held);
            wire.readable.extend(held);
            let waker = wire.reader.take();
            drop(wire);
            if let Some(w) = waker {
                w.wake();
            }
            return Poll::Pending;
        }
        wire.reads += 1;
        let n = buf.len().min(wire.readable.len());
        for (slot, byte) in buf.iter_mut().zip(wire.readable.drain(..n)) {
            *slot = byte;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write(&mut self, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut guard = self.0.wire();
        let wire = &mut *guard;
        wire.line.extend_from_slice(buf);
        // Commands come without separators: one JSON value after another.
        let pending = std::mem::take(&mut wire.line);
        let mut commands = serde_json::Deserializer::from_slice(&pending).into_iter::<serde_json::Value>();
        let mut used = 0;
        while let Some(Ok(command)) = commands.next() {
            used = commands.byte_offset();
            if wire.mute {
                continue;
            }
            let reply = format!("{}\r\n", serde_json::json!({"return": {}, "id": command["id"]}));
            if wire.hold_replies {
                wire.held.extend(reply.bytes());
            } else {
                wire.readable.extend(reply.bytes());
            }
        }
        wire.line = pending[used..].to_vec();
        let waker = if wire.readable.is_empty() { None } else { wire.reader.take() };
        drop(guard);
        if let Some(w) = waker {
            w.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

const GREETING: &str =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}\r\n";

/// A connection to a scripted server that greets at once (and holds its replies until the reader next finds
/// nothing, if `hold_replies`); its driver runs on a thread of its own.
fn connect(hold_replies: bool) -> (Qmp<ThreadRuntime>, Server) {
    connect_on(ThreadRuntime, hold_replies)
}

/// [`connect`] on `runtime`.
fn connect_on<R: Runtime>(runtime: R, hold_replies: bool) -> (Qmp<R>, Server) {
    let (qmp, server, _) = connect_counting(runtime, hold_replies);
    (qmp, server)
}

/// [`connect_on`], and how many times the driver's task has been polled so far.
fn connect_counting<R: Runtime>(runtime: R, hold_replies: bool) -> (Qmp<R>, Server, Arc<AtomicUsize>) {
    connect_with(runtime, hold_replies, Options::default())
}

/// [`connect_counting`] with `options`.
fn connect_with<R: Runtime>(runtime: R, hold_replies: bool, options: Options) -> (Qmp<R>, Server, Arc<AtomicUsize>) {
    let server = Server::default();
    server.wire().hold_replies = hold_replies;
    server.send_now(GREETING);
    let options = options.connect_timeout(PATIENCE);
    let (connecting, driver) = Qmp::with_driver(Pipe(server.clone()), options, runtime.clone());
    let polls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&polls);
    let mut driver = Box::pin(driver);
    runtime.spawn(std::future::poll_fn(move |cx| {
        counted.fetch_add(1, Ordering::SeqCst);
        driver.as_mut().poll(cx)
    }));
    let qmp = block_on_within(connecting, "the handshake").expect("negotiated");
    (qmp, server, polls)
}

/// Runs `future` to completion on this thread, failing the test if it takes longer than [`PATIENCE`].
fn block_on_within<F: Future>(future: F, what: &str) -> F::Output {
    let deadline = ThreadRuntime.timer(Instant::now() + PATIENCE);
    let mut deadline = std::pin::pin!(deadline);
    let mut future = std::pin::pin!(future);
    futures_lite::future::block_on(std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if deadline.as_mut().poll_fire(cx).is_ready() {
            panic!("{what} stalled for {PATIENCE:?}");
        }
        Poll::Pending
    }))
}

#[test]
fn negotiation_completes_when_the_reply_comes_as_the_driver_registers_for_it() {
    for _ in 0..20 {
        let (qmp, _server) = connect(true);
        assert_eq!(qmp.greeting().version.as_ref().map(|v| v.major), Some(10));
    }
}

#[test]
fn each_command_takes_one_read_that_finds_its_reply_and_one_that_finds_nothing() {
    let (qmp, server) = connect(false);
    const CALLS: usize = 50;
    // One call first: the reads of the handshake are over once its reply is read. (Right after `connect`
    // returns, the driver may still be finishing the poll that read the negotiation's reply, and its last, empty,
    // read would fall inside the count.)
    let warm_up = block_on_within(qmp.execute_raw("query-status", None), "the first call");
    assert_eq!(warm_up.expect("answered").raw_str(), "{}");
    let (reads_before, empty_before) = server.reads();
    for _ in 0..CALLS {
        let reply = block_on_within(qmp.execute_raw("query-status", None), "a call");
        assert_eq!(reply.expect("answered").raw_str(), "{}");
    }
    let (reads, empty) = server.reads();
    assert_eq!(reads - reads_before, CALLS, "one read with bytes per reply");
    // The read after the reply finds nothing and registers for the next input (unless the caller's next command
    // was written first, and its reply is what that read finds). Another empty read (right after the command is
    // written, before a wake-up said there may be input; or after a finished write) is a system call wasted on
    // async-io, which reads before it registers.
    // The same holds at the edge: a reply reaches its caller before the read that follows it (in the same poll of
    // the connection, by whoever drives it) is made, so the empty read after the first call's reply may come
    // after `reads_before` was taken: one more than CALLS, never one more per command.
    let empty = empty - empty_before;
    assert!(empty <= CALLS + 1, "at most one empty read per command: {empty} for {CALLS} commands");
}

#[test]
fn a_reply_readable_at_once_after_its_deadline_passed_is_a_timeout() {
    let (qmp, _server) = connect(false);
    for _ in 0..3 {
        let late = block_on_within(
            qmp.execute_with_timeout::<serde_json::Value>("query-status", (), Some(Duration::ZERO)),
            "a call",
        );
        assert!(matches!(late, Err(qmp_async::Error::TimedOut)), "got {late:?}");
        let reply = block_on_within(qmp.execute_raw("query-status", None), "the next call");
        assert_eq!(reply.expect("its own reply").raw_str(), "{}");
    }
}

#[test]
fn a_reply_read_after_its_deadline_is_a_timeout_though_the_runtime_timer_is_late() {
    let (qmp, _server) = connect_on(LateTimerRuntime, false);
    for _ in 0..3 {
        let started = Instant::now();
        let late = block_on_within(
            qmp.execute_with_timeout::<serde_json::Value>("query-status", (), Some(Duration::ZERO)),
            "a call",
        );
        assert!(matches!(late, Err(qmp_async::Error::TimedOut)), "got {late:?}");
        assert!(started.elapsed() < LATE, "decided when the reply came, not when the late timer fired");
        let reply = block_on_within(qmp.execute_raw("query-status", None), "the next call");
        assert_eq!(reply.expect("its own reply").raw_str(), "{}");
    }
}

#[test]
fn an_event_arriving_while_no_call_runs_is_delivered() {
    let (qmp, server) = connect(false);
    let mut events = qmp.events();
    let reply = block_on_within(qmp.execute_raw("query-status", None), "a call");
    assert!(reply.is_ok());
    server.send_now("{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n");
    let item = block_on_within(events.next(), "an event while idle");
    assert!(matches!(item, Some(EventItem::Event(ref ev)) if ev.name == "STOP"), "got {item:?}");
}

#[test]
fn a_sequential_caller_writes_and_reads_its_own_commands_without_the_drivers_task() {
    let (qmp, _server, task_polls) = connect_counting(ThreadRuntime, false);
    // The first call makes the timer of the command deadlines, which only the driver's task does.
    let first = block_on_within(qmp.execute_raw("query-status", None), "the first call");
    assert_eq!(first.expect("answered").raw_str(), "{}");
    const CALLS: usize = 50;
    let before = task_polls.load(Ordering::SeqCst);
    for _ in 0..CALLS {
        let reply = block_on_within(qmp.execute_raw("query-status", None), "a call");
        assert_eq!(reply.expect("answered").raw_str(), "{}");
    }
    // The driver's task was polled three times per command when it wrote every command and read every reply.
    // The handshake's last poll may still be under way when the count starts: a few, never one per command.
    let task_polls = task_polls.load(Ordering::SeqCst) - before;
    assert!(task_polls <= 2, "the driver's task was polled {task_polls} times for {CALLS} sequential calls");
}

#[test]
fn a_call_woken_for_input_and_dropped_unpolled_leaves_the_input_to_be_read() {
    let (qmp, server) = connect(false);
    let mut events = qmp.events();
    server.wire().mute = true;
    // The call writes its command and waits: it is the caller the connection's input wakes.
    let mut call = Box::pin(qmp.execute_raw("query-status", None));
    let polled = block_on_within(futures_lite::future::poll_once(&mut call), "one poll of the call");
    assert!(polled.is_none(), "the server does not answer");
    // Input comes: the call is woken to read it, and is dropped instead. Someone else must read it.
    server.send_now("{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n");
    drop(call);
    let item = block_on_within(events.next(), "the event, read by whoever the wake-up was passed to");
    assert!(matches!(item, Some(EventItem::Event(ref ev)) if ev.name == "STOP"), "got {item:?}");
}

#[test]
fn a_session_without_deadlines_keeps_no_timer_and_one_with_them_keeps_one() {
    // Without a command timeout, the handshake's timer goes once the session is ready: a runtime timer left
    // registered costs every park a clock reading (and async-io a system call per turn of its reactor).
    let timers = CountingTimers::default();
    let (qmp, _server, _) = connect_with(timers.clone(), false, Options::default().command_timeout(None));
    for _ in 0..3 {
        let reply = block_on_within(qmp.execute_raw("query-status", None), "a call");
        assert_eq!(reply.expect("answered").raw_str(), "{}");
    }
    assert_eq!(timers.0.load(Ordering::SeqCst), 0, "no timer alive without deadlines");
    // A command with a deadline makes one, through the driver's task (the caller polls in place), and the next
    // commands keep it: one driver task poll for it, not one per command.
    let late = block_on_within(
        qmp.execute_with_timeout::<serde_json::Value>("query-status", (), Some(Duration::ZERO)),
        "a call with a deadline that has passed",
    );
    assert!(matches!(late, Err(qmp_async::Error::TimedOut)), "checked without the timer: got {late:?}");
    let timers_now = CountingTimers::default();
    let (qmp, _server, task_polls) = connect_with(timers_now.clone(), false, Options::default());
    let first = block_on_within(qmp.execute_raw("query-status", None), "the first call");
    assert_eq!(first.expect("answered").raw_str(), "{}");
    let before = task_polls.load(Ordering::SeqCst);
    for _ in 0..20 {
        let reply = block_on_within(qmp.execute_raw("query-status", None), "a call");
        assert_eq!(reply.expect("answered").raw_str(), "{}");
    }
    assert_eq!(timers_now.0.load(Ordering::SeqCst), 1, "one timer for the command deadlines");
    let task_polls = task_polls.load(Ordering::SeqCst) - before;
    assert!(task_polls <= 2, "the driver's task was polled {task_polls} times for 20 calls with deadlines");
}
