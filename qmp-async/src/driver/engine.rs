//! [`Engine`]: the connection's state behind a lock, driven by whoever needs it to move: a caller waiting for its
//! reply, or the driver's task when no caller waits.
//!
//! A raw loop over a socket costs one task poll per command: the task writes, waits until the socket is readable,
//! reads. Through a driver task a command cost three: the driver's task woken to write it, woken again to read the
//! reply, and the caller's task woken with the answer (and across threads on a multi-threaded executor, where the
//! caller and the driver run on different workers). Here a caller queues its command without waking anyone and
//! polls the connection itself, and the sources (input, timer, mailbox) wake the oldest caller still waiting, who
//! polls it again: a sequential caller costs one task poll per command, as the raw loop does, and stays on its own
//! thread. The driver's task runs only when no caller waits (events, a server that hangs up between commands) or
//! when the connection needs the runtime's context, which a caller may not have: making a timer, closing.
//!
//! The rules that make it race-free:
//! - Nobody waits for the lock. Whoever wants a poll sets `wanted` and tries the lock; the holder polls again
//!   while `wanted` was set, and looks once more after unlocking, so a request or a wake-up is never left behind.
//! - The connection is always polled with the engine's own waker ([`Wakeup`]), so every source it registers with
//!   holds that one waker whoever polled. Woken, it wakes the oldest waiting caller (noting that it did) or, if
//!   none waits, the driver's task.
//! - A caller puts itself in the queue before it polls the connection, so a wake-up that comes during or after its
//!   poll reaches it; it leaves the queue when it has its answer (or is dropped), and if it was woken for the
//!   sources and nobody has polled since, it passes the wake-up on to the next caller or the task. A wake-up
//!   also asks the holder of the lock for one more poll, so one that comes while someone polls is seen by that
//!   poll: a caller whose own write made its reply readable is not passed on to the task for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Wake, Waker};

/// Polls of the connection in one [`Engine::drive`] before it yields.
const POLLS_PER_DRIVE: usize = 4;

/// A queue of waiting callers that grew beyond this is given back once empty.
const KEEP_CALLERS: usize = 8;

/// What one poll of the connection came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing more to do until a source wakes the engine.
    Pending,
    /// Polled in place, the connection needs what only the driver's task may do (make a timer, close).
    WantsTask,
    /// The session is over and the connection has finished.
    Finished,
}

/// The connection, as the engine holds it.
pub(crate) trait Drive: Send {
    /// Moves the connection on. `cx` holds the engine's waker. `in_place`: polled by a caller, which may run
    /// outside the runtime (then it leaves what needs the runtime's context to the driver's task).
    fn poll_drive(&mut self, cx: &mut Context<'_>, in_place: bool) -> Step;
}

/// The connection and who drives it.
pub(crate) struct Engine {
    /// `None` once the [`Driver`](super::Driver) was dropped: the connection's state went with it.
    conn: Mutex<Option<Box<dyn Drive>>>,
    finished: AtomicBool,
    wakeup: Arc<Wakeup>,
    /// The waker of [`Wakeup`], which the connection is always polled with.
    waker: Waker,
    /// The connection's tracing span, entered by whoever polls it.
    span: tracing::Span,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("finished", &self.finished).finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for the connection `make` builds with the engine's waker (which its sources wake), polled inside
    /// `span`.
    pub(crate) fn new(make: impl FnOnce(&Waker) -> Box<dyn Drive>, span: tracing::Span) -> Self {
        let wakeup = Arc::new(Wakeup { wanted: AtomicBool::new(false), state: Mutex::new(Waiting::default()) });
        let waker = Waker::from(Arc::clone(&wakeup));
        let conn = Mutex::new(Some(make(&waker)));
        Engine { conn, finished: AtomicBool::new(false), wakeup, waker, span }
    }

    /// The driver task's poll: `Ready` once the session is over and the connection has finished.
    pub(crate) fn poll_task(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.wakeup.set_task(cx.waker());
        self.drive(false)
    }

    /// A caller waits for its answer: from now on the sources may wake it (`waker`) to poll the connection, which
    /// it does now. Call [`leave`](Self::leave) once it has its answer or goes away.
    pub(crate) fn wait_in_place(&self, ticket: u64, waker: &Waker) {
        self.wakeup.join(ticket, waker);
        let _ = self.drive(true);
    }

    /// The caller with `ticket` waits no more (see [`wait_in_place`](Self::wait_in_place)).
    pub(crate) fn leave(&self, ticket: u64) {
        self.wakeup.leave(ticket);
    }

    /// Polls the connection, unless someone else is polling it (who then polls again). `Ready` once it finished.
    /// At most [`POLLS_PER_DRIVE`] polls: a connection that still wants polling after them (a flood of input: each
    /// poll yields after a number of turns) is left to whoever the engine's waker wakes next, so a caller's task
    /// yields to its executor as the driver's task does.
    fn drive(&self, in_place: bool) -> Poll<()> {
        let wanted = &self.wakeup.wanted;
        wanted.store(true, Ordering::SeqCst);
        let mut polls = 0;
        loop {
            if self.finished.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            let Some(mut conn) = self.try_lock() else {
                // The holder polls again: it looks at `wanted` after every poll and once more after unlocking.
                return Poll::Pending;
            };
            let mut finished = false;
            let mut wants_task = false;
            let mut yielded = false;
            {
                let _entered = (!self.span.is_disabled()).then(|| self.span.enter());
                while wanted.swap(false, Ordering::SeqCst) {
                    if polls == POLLS_PER_DRIVE {
                        wanted.store(true, Ordering::SeqCst);
                        yielded = true;
                        break;
                    }
                    polls += 1;
                    let Some(driving) = conn.as_mut() else {
                        finished = true;
                        break;
                    };
                    match driving.poll_drive(&mut Context::from_waker(&self.waker), in_place) {
                        Step::Pending => {}
                        Step::WantsTask => wants_task = true,
                        Step::Finished => {
                            finished = true;
                            break;
                        }
                    }
                }
                if !yielded {
                    // Every wake-up up to the last poll was seen by a poll: nobody woken for them must poll again.
                    self.wakeup.serviced();
                }
            }
            drop(conn);
            if finished {
                self.finished.store(true, Ordering::Release);
                // The driver's future ends too (and a caller that drove it there has its answer already).
                self.wakeup.wake_task();
                return Poll::Ready(());
            }
            if wants_task {
                self.wakeup.wake_task();
            }
            if yielded {
                // Somebody (perhaps this very caller, through its executor) polls again.
                self.waker.wake_by_ref();
                return Poll::Pending;
            }
            if !wanted.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
    }

    fn try_lock(&self) -> Option<MutexGuard<'_, Option<Box<dyn Drive>>>> {
        match self.conn.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// The driver was dropped: the connection's state goes (failing every call still pending), outside the lock.
    pub(crate) fn stop(&self) {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.finished.store(true, Ordering::Release);
        drop(conn);
    }
}

/// The engine's waker, and who it wakes: the oldest waiting caller, else the driver's task.
#[derive(Debug)]
struct Wakeup {
    /// A poll was asked for (by a wake-up, or by someone who wants to poll): whoever holds the lock polls again
    /// before it leaves.
    wanted: AtomicBool,
    state: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    task: Option<Waker>,
    /// Callers waiting for an answer, by ticket, oldest first.
    callers: VecDeque<(u64, Waker)>,
    /// The caller woken for the sources that has not polled the connection since.
    woken: Option<u64>,
}

impl Wakeup {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_task(&self, waker: &Waker) {
        let mut state = self.lock();
        if !state.task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.task = Some(waker.clone());
        }
    }

    fn wake_task(&self) {
        if let Some(task) = &self.lock().task {
            task.wake_by_ref();
        }
    }

    /// The caller `ticket` is about to poll the connection, and waits (keeping its place if it was waiting).
    fn join(&self, ticket: u64, waker: &Waker) {
        let mut state = self.lock();
        match state.callers.iter_mut().find(|(t, _)| *t == ticket) {
            Some((_, w)) if w.will_wake(waker) => {}
            Some((_, w)) => *w = waker.clone(),
            None => state.callers.push_back((ticket, waker.clone())),
        }
    }

    /// The holder of the lock polled after every wake-up so far (none came since its last poll began).
    fn serviced(&self) {
        self.lock().woken = None;
    }

    fn leave(&self, ticket: u64) {
        let mut state = self.lock();
        if let Some(at) = state.callers.iter().position(|(t, _)| *t == ticket) {
            state.callers.remove(at);
            if state.callers.is_empty() && state.callers.capacity() > KEEP_CALLERS {
                state.callers = VecDeque::new();
            }
        }
        if state.woken == Some(ticket) {
            // Woken for the sources and gone without polling: somebody else must.
            state.woken = None;
            state.wake_next();
        }
    }
}

impl Waiting {
    fn wake_next(&mut self) {
        if let Some((ticket, caller)) = self.callers.front() {
            self.woken = Some(*ticket);
            caller.wake_by_ref();
        } else if let Some(task) = &self.task {
            task.wake_by_ref();
        }
    }
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Seen by a holder of the lock before it leaves, and by whoever this wakes.
        self.wanted.store(true, Ordering::SeqCst);
        self.lock().wake_next();
    }
}
