//! [`channel`]: the one-shot a caller's answer comes back on, and the one thing it adds to a plain one-shot: the
//! caller can stop being woken for it while it drives the connection itself.
//!
//! A caller that drives the connection in place (`driver/engine.rs`) may read its own reply: delivering it
//! would then wake the very task that is running, which schedules it once more for nothing (a spurious poll per
//! command on every executor). So the receiver takes its waker out ([`Receiver::take`]) before it drives, and puts
//! it back ([`Receiver::poll`]) only if the answer is still not there after.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The one-shot of `T`: a sender for the driver, a receiver for the caller.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let state = Mutex::new(State { value: None, waker: None, sender: true, receiver: true });
    let slot = Arc::new(Slot { state, closed: AtomicBool::new(false) });
    (Sender { slot: Some(Arc::clone(&slot)) }, Receiver { slot, ended: false })
}

struct Slot<T> {
    state: Mutex<State<T>>,
    /// The receiver went away: what [`Sender::is_canceled`] reads without the lock (the driver asks it of every
    /// request it takes; `send` still decides under the lock).
    closed: AtomicBool,
}

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The sender is still there (it may yet send).
    sender: bool,
    /// The receiver is still there (it wants the value).
    receiver: bool,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The driver's end: sends at most once; dropped unsent, the receiver learns that no value will come.
pub(crate) struct Sender<T> {
    /// `None` once sent.
    slot: Option<Arc<Slot<T>>>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reply::Sender")
    }
}

impl<T> Sender<T> {
    /// Delivers `value`; gives it back when the receiver went away.
    pub(crate) fn send(mut self, value: T) -> Result<(), T> {
        let Some(slot) = self.slot.take() else {
            return Err(value);
        };
        let mut state = slot.lock();
        state.sender = false;
        if !state.receiver {
            return Err(value);
        }
        state.value = Some(value);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The receiver went away: nobody wants the value.
    pub(crate) fn is_canceled(&self) -> bool {
        self.slot.as_ref().is_none_or(|slot| slot.closed.load(Ordering::Acquire))
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut state = slot.lock();
            state.sender = false;
            let waker = state.waker.take();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// The caller's end.
pub(crate) struct Receiver<T> {
    slot: Arc<Slot<T>>,
    /// The value, or the news that none will come, was found: the sender is done with the slot, and dropping the
    /// receiver has nobody to tell.
    ended: bool,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reply::Receiver")
    }
}

/// What [`Receiver::take`] and [`Receiver::poll`] find.
#[derive(Debug)]
pub(crate) enum Received<T> {
    /// The value.
    Value(T),
    /// The sender went away without sending: no value will come.
    Gone,
}

impl<T> Receiver<T> {
    /// The value if it is there (or will never come), without registering a waker: a waker registered by an
    /// earlier poll is forgotten, so a value delivered from now on wakes nobody until the next [`poll`](Self::poll).
    pub(crate) fn take(&mut self) -> Option<Received<T>> {
        let mut state = self.slot.lock();
        state.waker = None;
        let found = Self::found(&mut state);
        self.ended |= found.is_some();
        found
    }

    /// The value if it is there (or will never come); otherwise the task of `cx` is woken when it comes.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Received<T>> {
        let mut state = self.slot.lock();
        if let Some(found) = Self::found(&mut state) {
            self.ended = true;
            return Poll::Ready(found);
        }
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn found(state: &mut State<T>) -> Option<Received<T>> {
        match state.value.take() {
            Some(value) => Some(Received::Value(value)),
            None if !state.sender => Some(Received::Gone),
            None => None,
        }
    }

    /// Nobody waits for the value any more: a sender that has not sent yet sees [`Sender::is_canceled`], and a
    /// later send gives its value back.
    pub(crate) fn close(&mut self) {
        self.slot.closed.store(true, Ordering::Release);
        let mut state = self.slot.lock();
        state.receiver = false;
        state.waker = None;
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if !self.ended {
            self.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_waker::counting as waker;

    #[test]
    fn a_value_sent_after_a_poll_wakes_the_receiver() {
        let (tx, mut rx) = channel::<u32>();
        let (count, waker) = waker();
        assert!(rx.poll(&mut Context::from_waker(&waker)).is_pending());
        tx.send(7).unwrap();
        assert_eq!(count.get(), 1);
        assert!(matches!(rx.poll(&mut Context::from_waker(&waker)), Poll::Ready(Received::Value(7))));
    }

    #[test]
    fn take_forgets_the_waker_so_a_send_wakes_nobody() {
        let (tx, mut rx) = channel::<u32>();
        let (count, waker) = waker();
        assert!(rx.poll(&mut Context::from_waker(&waker)).is_pending());
        assert!(rx.take().is_none());
        tx.send(7).unwrap();
        assert_eq!(count.get(), 0, "the receiver said it would look itself");
        assert!(matches!(rx.take(), Some(Received::Value(7))));
    }

    #[test]
    fn a_sender_dropped_unsent_wakes_the_receiver_with_gone() {
        let (tx, mut rx) = channel::<u32>();
        let (count, waker) = waker();
        assert!(rx.poll(&mut Context::from_waker(&waker)).is_pending());
        drop(tx);
        assert_eq!(count.get(), 1);
        assert!(matches!(rx.poll(&mut Context::from_waker(&waker)), Poll::Ready(Received::Gone)));
    }

    #[test]
    fn a_closed_receiver_cancels_and_refuses_the_value() {
        let (tx, mut rx) = channel::<u32>();
        assert!(!tx.is_canceled());
        rx.close();
        assert!(tx.is_canceled());
        assert_eq!(tx.send(3), Err(3));
    }
}
