//! [`Mailbox`]: how handles reach the driver. Requests in order, and control messages (a caller went away, close)
//! that the driver reads before any new request, behind one lock and one waker.
//!
//! It replaces two unbounded channels: the memory benchmark (`bench/src/memory.rs`) showed their shared state and
//! the first block of slots a channel allocates on its first message (about 5 KiB together) staying for the life
//! of every idle connection. Here an idle connection holds two empty queues; a queue that grew is given back
//! once the driver has emptied it. Every request in it belongs to a caller waiting for its answer, so it never
//! holds more than the callers' own futures do.
//!
//! The driver looks at the mailbox on every turn of its loop, a few times per command; most of those looks find
//! nothing. A flag set by every change ([`Mailbox::mail`]) lets such a look skip the lock: the driver keeps the
//! waker it registered ([`Reader`]), and while the flag is down nobody has taken that waker out, so it still
//! stands (every change that takes it raises the flag first, under the lock).

use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::shared::{Control, Request};

/// A queue that grew beyond this is given back once emptied.
const KEEP: usize = 8;

/// The handles' side and the driver's side of one connection's requests.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    inner: Mutex<Inner>,
    /// Something changed since the driver last found the mailbox empty and registered its waker: raised under
    /// the lock by every change, lowered under the lock by the driver when it registers.
    mail: AtomicBool,
}

/// The driver's side of the mailbox: the waker it registered last.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    registered: Option<Waker>,
}

#[derive(Debug, Default)]
struct Inner {
    requests: VecDeque<Request>,
    controls: VecDeque<Control>,
    /// The last handle went away: the driver closes the session.
    orphaned: bool,
    /// The driver takes nothing more: sending fails.
    closed: bool,
    driver: Option<Waker>,
}

impl Inner {
    /// Queues a request; gives it back when the driver takes nothing more.
    fn queue(&mut self, request: Request) -> Result<(), Request> {
        if self.closed {
            return Err(request);
        }
        self.requests.push_back(request);
        Ok(())
    }
}

/// What the driver takes from the mailbox in one go.
#[derive(Debug)]
pub(crate) enum Mail {
    Control(Control),
    Request(Request),
    /// Every handle is gone.
    Orphaned,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock, to change what the driver reads: raises [`mail`](Self::mail).
    fn lock_to_change(&self) -> MutexGuard<'_, Inner> {
        let inner = self.lock();
        self.mail.store(true, Ordering::Release);
        inner
    }

    /// Applies `change` and wakes the driver.
    fn deliver<T>(&self, change: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.lock_to_change();
        let out = change(&mut inner);
        let waker = inner.driver.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
        out
    }

    /// Queues a request; gives it back when the driver takes nothing more.
    pub(crate) fn send(&self, request: Request) -> Result<(), Request> {
        self.deliver(|inner| inner.queue(request))
    }

    /// Queues a request without waking the driver: for a caller that polls the connection itself right after
    /// (`driver/engine.rs`). Gives it back when the driver takes nothing more.
    pub(crate) fn send_quietly(&self, request: Request) -> Result<(), Request> {
        self.lock_to_change().queue(request)
    }

    /// Queues a control message (ignored once the driver takes nothing more).
    pub(crate) fn control(&self, control: Control) {
        self.deliver(|inner| {
            if !inner.closed {
                inner.controls.push_back(control);
            }
        })
    }

    /// The last handle went away.
    pub(crate) fn orphan(&self) {
        self.deliver(|inner| inner.orphaned = true)
    }

    /// The driver's next message: control messages first, then requests in order. `Pending` registers the
    /// driver's waker (`reader` remembers it: while nothing changed, a look with the same waker takes no lock).
    pub(crate) fn poll_next(&self, reader: &mut Reader, cx: &mut Context<'_>) -> Poll<Mail> {
        if !self.mail.load(Ordering::Acquire) && holds(&reader.registered, cx.waker()) {
            return Poll::Pending;
        }
        let mut inner = self.lock();
        if let Some(control) = inner.controls.pop_front() {
            shrink_if_empty(&mut inner.controls);
            return Poll::Ready(Mail::Control(control));
        }
        if let Some(request) = inner.requests.pop_front() {
            shrink_if_empty(&mut inner.requests);
            // The last of the mail, and the driver's waker still stands: the next look needs no lock.
            let registered = holds(&inner.driver, cx.waker()) && holds(&reader.registered, cx.waker());
            if registered && inner.requests.is_empty() && inner.controls.is_empty() && !inner.orphaned {
                self.mail.store(false, Ordering::Release);
            }
            return Poll::Ready(Mail::Request(request));
        }
        if inner.orphaned && !inner.closed {
            inner.closed = true;
            return Poll::Ready(Mail::Orphaned);
        }
        keep(&mut inner.driver, cx.waker());
        keep(&mut reader.registered, cx.waker());
        self.mail.store(false, Ordering::Release);
        Poll::Pending
    }

    /// The driver takes nothing more: later sends fail; returns the requests still queued, to refuse.
    pub(crate) fn close(&self) -> VecDeque<Request> {
        let mut inner = self.lock_to_change();
        inner.closed = true;
        inner.controls = VecDeque::new();
        inner.driver = None;
        mem::take(&mut inner.requests)
    }
}

/// Whether `slot` holds a waker that wakes what `waker` wakes.
fn holds(slot: &Option<Waker>, waker: &Waker) -> bool {
    slot.as_ref().is_some_and(|w| w.will_wake(waker))
}

/// Puts `waker` in `slot`, unless it holds one that wakes the same already.
fn keep(slot: &mut Option<Waker>, waker: &Waker) {
    if !holds(slot, waker) {
        *slot = Some(waker.clone());
    }
}

fn shrink_if_empty<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > KEEP {
        *queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::{Mail, Mailbox, Reader};
    use crate::command::Command;
    use crate::shared::{Control, ReplyTx, Request};
    use crate::test_waker::counting;
    use std::task::{Context, Poll, Waker};

    fn request(ticket: u64) -> Request {
        let command = Command::raw("query-status", None, Default::default());
        Request { command, fd: None, ticket, reply: ReplyTx::Sink(Box::new(|_| {})) }
    }

    fn next(mailbox: &Mailbox, reader: &mut Reader, waker: &Waker) -> Option<u64> {
        match mailbox.poll_next(reader, &mut Context::from_waker(waker)) {
            Poll::Ready(Mail::Request(r)) => Some(r.ticket),
            Poll::Ready(Mail::Control(Control::Cancel(t))) => Some(1000 + t),
            Poll::Ready(other) => panic!("unexpected {other:?}"),
            Poll::Pending => None,
        }
    }

    /// Whatever the driver skipped the lock for, every change after it registered is seen, in order, and a
    /// change that wakes wakes the registered waker.
    #[test]
    fn looks_without_the_lock_miss_nothing() {
        let (mailbox, mut reader) = (Mailbox::default(), Reader::default());
        let (count, waker) = counting();
        assert_eq!(next(&mailbox, &mut reader, &waker), None, "registers");
        assert_eq!(next(&mailbox, &mut reader, &waker), None, "nothing changed: no lock");
        assert!(mailbox.send_quietly(request(1)).is_ok());
        assert_eq!(count.get(), 0, "a quiet send wakes nobody");
        assert_eq!(next(&mailbox, &mut reader, &waker), Some(1));
        assert_eq!(next(&mailbox, &mut reader, &waker), None, "the last request taken: nothing left");
        assert!(mailbox.send(request(2)).is_ok());
        assert_eq!(count.get(), 1, "a send wakes the registered waker");
        assert!(mailbox.send_quietly(request(3)).is_ok());
        mailbox.control(Control::Cancel(7));
        assert_eq!(next(&mailbox, &mut reader, &waker), Some(1007), "controls first");
        assert_eq!(next(&mailbox, &mut reader, &waker), Some(2));
        assert_eq!(next(&mailbox, &mut reader, &waker), Some(3));
        assert_eq!(next(&mailbox, &mut reader, &waker), None);
        // A different waker is registered, not skipped.
        let (other, other_waker) = counting();
        assert_eq!(next(&mailbox, &mut reader, &other_waker), None);
        assert!(mailbox.send(request(4)).is_ok());
        assert_eq!((count.get(), other.get()), (1, 1));
        assert_eq!(next(&mailbox, &mut reader, &other_waker), Some(4));
        mailbox.orphan();
        assert!(matches!(
            mailbox.poll_next(&mut reader, &mut Context::from_waker(&other_waker)),
            Poll::Ready(Mail::Orphaned)
        ));
        assert!(mailbox.send_quietly(request(5)).is_err(), "closed after the orphan was read");
    }
}
