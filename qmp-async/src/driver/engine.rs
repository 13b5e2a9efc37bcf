//! [`Engine`]: the driver future behind a lock, so that a caller can poll it in place when the connection is
//! idle, instead of waking the driver's task to write its command.
//!
//! A command sent through the mailbox costs a wake-up and a poll of the driver's task before it is written,
//! besides the poll that reads its reply. When nothing is in flight, queued or unwritten (one caller, one
//! command at a time: the common case), the caller takes the lock, queues its request without waking anyone
//! and polls the driver once itself: the command is on the wire before the call first waits, and the driver's
//! task runs only when the reply comes. On a multi-threaded executor (async-std's, tokio's) this also saves
//! the wake-up of another thread. With commands in flight the caller sends as before and the driver's task
//! writes what several callers queued in one write.
//!
//! The caller polls with the waker of the driver's task (the one it registered on its last poll), so every
//! source the driver registers with wakes the driver's task, as if it had polled. Nobody ever waits for the
//! lock: the task that finds it taken notes that it missed a poll, and the holder wakes it on leaving.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Waker};

/// The driver future, as the engine holds it.
pub(crate) trait Drive: Future<Output = ()> + Send {
    /// A poll from a caller, with the driver task's waker: it leaves what needs the runtime's context (making
    /// a timer) to the driver's task, woken for it, since the caller may run outside the runtime.
    fn poll_inline(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;

    /// Nothing in flight, queued or unwritten: a command written now needs no other to be batched with.
    fn is_idle(&self) -> bool;
}

/// The driver future and the waker of the task that runs it.
pub(crate) struct Engine {
    state: Mutex<State>,
    /// The driver's task found the lock taken: whoever holds it wakes the task on leaving.
    missed: AtomicBool,
    /// Whether the driver was idle after its last poll: callers look here before they take the lock, so that
    /// with commands in flight they never make the driver's task miss a poll.
    idle: AtomicBool,
}

struct State {
    /// `None` once the [`Driver`](super::Driver) was dropped (the connection's state goes with it).
    future: Option<Pin<Box<dyn Drive>>>,
    /// The driver task's waker, from its last poll; `None` until its first.
    task: Option<Waker>,
    finished: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

impl Engine {
    pub(crate) fn new(future: Pin<Box<dyn Drive>>) -> Self {
        Engine {
            state: Mutex::new(State { future: Some(future), task: None, finished: false }),
            missed: false.into(),
            idle: false.into(),
        }
    }

    fn try_lock(&self) -> Option<MutexGuard<'_, State>> {
        match self.state.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// The driver task's poll. If a caller is polling the driver right now, it wakes the task when done.
    pub(crate) fn poll_task(&self, cx: &mut Context<'_>) -> Poll<()> {
        let guard = self.try_lock().or_else(|| {
            self.missed.store(true, Ordering::SeqCst);
            // The holder may have left before it could see the flag: try once more.
            self.try_lock()
        });
        let Some(mut guard) = guard else {
            return Poll::Pending;
        };
        self.missed.store(false, Ordering::SeqCst);
        let state = &mut *guard;
        if !state.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            state.task = Some(cx.waker().clone());
        }
        match &mut state.future {
            _ if state.finished => Poll::Ready(()),
            None => Poll::Ready(()),
            Some(future) => {
                let done = future.as_mut().poll(cx);
                state.finished = done.is_ready();
                self.idle.store(future.is_idle(), Ordering::Relaxed);
                done
            }
        }
    }

    /// If the driver is idle and nobody polls it, calls `queue` with `item` (which queues a request without
    /// waking the driver's task, and says whether it did) and polls the driver once in place. `Err(item)` when
    /// the driver is busy: send it the usual way.
    pub(crate) fn drive_if_idle<T>(&self, item: T, queue: impl FnOnce(T) -> bool) -> Result<(), T> {
        if !self.idle.load(Ordering::Relaxed) {
            return Err(item);
        }
        let Some(mut guard) = self.try_lock() else {
            return Err(item);
        };
        let state = &mut *guard;
        let (Some(future), Some(task), false) = (&mut state.future, &state.task, state.finished) else {
            return Err(item);
        };
        if !future.is_idle() {
            return Err(item);
        }
        if queue(item) && future.as_mut().poll_inline(&mut Context::from_waker(task)).is_ready() {
            // The session ended in this poll: the task finishes on its next.
            state.finished = true;
            task.wake_by_ref();
        }
        self.idle.store(future.is_idle(), Ordering::Relaxed);
        drop(guard);
        if self.missed.swap(false, Ordering::SeqCst) {
            if let Some(task) = self.state.lock().unwrap_or_else(|e| e.into_inner()).task.as_ref() {
                task.wake_by_ref();
            }
        }
        Ok(())
    }

    /// The [`Driver`](super::Driver) was dropped: drops the connection's state (which fails every pending call).
    pub(crate) fn stop(&self) {
        let future = self.state.lock().unwrap_or_else(|e| e.into_inner()).future.take();
        drop(future);
    }
}

#[cfg(test)]
mod tests {
    use super::{Drive, Engine};
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    /// A driver that counts its polls (and which of them were a caller's); idle when told.
    #[derive(Default)]
    struct Counting {
        polls: Arc<AtomicUsize>,
        inline: Arc<AtomicUsize>,
        idle: Arc<AtomicBool>,
    }

    impl Future for Counting {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            Poll::Pending
        }
    }

    impl Drive for Counting {
        fn poll_inline(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.inline.fetch_add(1, Ordering::SeqCst);
            self.poll(cx)
        }
        fn is_idle(&self) -> bool {
            self.idle.load(Ordering::SeqCst)
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn engine() -> (Engine, Counting, Arc<Wakes>, Waker) {
        let driver = Counting::default();
        let probe = Counting { polls: driver.polls.clone(), inline: driver.inline.clone(), idle: driver.idle.clone() };
        let wakes = Arc::new(Wakes::default());
        (Engine::new(Box::pin(driver)), probe, wakes.clone(), Waker::from(wakes))
    }

    #[test]
    fn a_caller_polls_an_idle_driver_in_place_once_its_task_has_polled() {
        let (engine, probe, _, task) = engine();
        probe.idle.store(true, Ordering::SeqCst);
        // Before the task's first poll there is no waker to poll with: the caller sends the usual way.
        assert_eq!(engine.drive_if_idle(1, |_| unreachable!("not queued")), Err(1));
        assert!(engine.poll_task(&mut Context::from_waker(&task)).is_pending());
        let mut queued = None;
        assert_eq!(engine.drive_if_idle(2, |n| queued.replace(n).is_none()), Ok(()));
        assert_eq!(queued, Some(2));
        assert_eq!((probe.polls.load(Ordering::SeqCst), probe.inline.load(Ordering::SeqCst)), (2, 1));
        // A refused request is not followed by a poll.
        assert_eq!(engine.drive_if_idle(3, |_| false), Ok(()));
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_busy_driver_is_left_to_its_task() {
        let (engine, probe, _, task) = engine();
        assert!(engine.poll_task(&mut Context::from_waker(&task)).is_pending());
        assert_eq!(engine.drive_if_idle(1, |_| unreachable!("not queued")), Err(1));
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_task_that_finds_the_lock_taken_is_woken_by_the_holder() {
        let (engine, probe, wakes, task) = engine();
        probe.idle.store(true, Ordering::SeqCst);
        assert!(engine.poll_task(&mut Context::from_waker(&task)).is_pending());
        let result = engine.drive_if_idle((), |()| {
            // The task's poll while the caller holds the lock: it does not wait, and does not poll.
            assert!(engine.poll_task(&mut Context::from_waker(&task)).is_pending());
            true
        });
        assert_eq!(result, Ok(()));
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2, "the task's poll and the caller's");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the holder woke the task it kept out");
    }

    #[test]
    fn a_stopped_driver_finishes_its_task_and_takes_no_caller() {
        let (engine, probe, _, task) = engine();
        probe.idle.store(true, Ordering::SeqCst);
        assert!(engine.poll_task(&mut Context::from_waker(&task)).is_pending());
        engine.stop();
        assert!(engine.poll_task(&mut Context::from_waker(&task)).is_ready());
        assert_eq!(engine.drive_if_idle(1, |_| unreachable!("not queued")), Err(1));
    }
}
