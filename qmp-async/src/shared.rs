//! What the user's handles and the driver share: the request channel's message types, and the connection's
//! state (greeting, readiness, the sticky close cause, the event subscriptions) with one wake-up [`Event`] for
//! anyone waiting on it.
//!
//! Handles never touch the socket or the core directly: they put a [`Request`] in the [`Mailbox`] and wait on a
//! one-shot reply channel (polling the connection through its engine meanwhile, `driver/engine.rs`); cancellations
//! and close requests go in as [`Control`] messages, which the connection reads first.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use event_listener::Event;
use qmp_proto::adapter::Violations;
use qmp_proto::{ConnectionError, Greeting, ProtocolViolation, RawJson};

use crate::command::Command;
use crate::events::EventItem;
use crate::mailbox::Mailbox;
use crate::Error;

/// A call's outcome.
pub(crate) type Outcome = Result<RawJson, Error>;

/// Where a call's outcome goes: the one-shot its caller waits on, or a function the driver calls with it.
pub(crate) enum ReplyTx {
    /// A caller waits on the other end (and may go away: its future was dropped).
    Caller(crate::reply::Sender<Outcome>),
    /// Called once, in the poll of the connection, with the outcome: for a router that passes replies on (the proxy)
    /// without a task and a one-shot per command. It must not block (it runs in the driver's poll).
    Sink(Box<dyn FnOnce(Outcome) + Send>),
}

impl ReplyTx {
    /// Delivers the outcome; gives it back when the caller went away.
    pub(crate) fn send(self, outcome: Outcome) -> Result<(), Outcome> {
        match self {
            ReplyTx::Caller(tx) => tx.send(outcome),
            ReplyTx::Sink(sink) => {
                sink(outcome);
                Ok(())
            }
        }
    }

    /// The caller went away before the request was taken (a sink never does).
    pub(crate) fn is_canceled(&self) -> bool {
        match self {
            ReplyTx::Caller(tx) => tx.is_canceled(),
            ReplyTx::Sink(_) => false,
        }
    }
}

impl std::fmt::Debug for ReplyTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyTx::Caller(_) => f.write_str("ReplyTx::Caller"),
            ReplyTx::Sink(_) => f.write_str("ReplyTx::Sink"),
        }
    }
}

/// One call: the command (with the descriptor that rides on the byte the core marks for it), the caller's ticket
/// (to cancel it by), and where the answer goes.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) command: Command,
    pub(crate) fd: Option<OwnedFd>,
    pub(crate) ticket: u64,
    pub(crate) reply: ReplyTx,
}

impl Request {
    /// The command's deadline, which holds while it waits for room in the core too.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.command.deadline()
    }
}

/// Messages that must reach the driver at once, even while it takes no new requests (sent from `Drop`).
#[derive(Debug)]
pub(crate) enum Control {
    /// The caller with this ticket went away.
    Cancel(u64),
    /// Close the connection ([`ConnectionError::Local`]).
    Close,
}

/// Connection state, written by the driver, read by the handles.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Requests and control messages from the handles to the driver.
    pub(crate) mailbox: Mailbox,
    /// The receiver that has held every event since the start, for the first subscriber.
    first_subscriber: Mutex<Option<async_broadcast::Receiver<EventItem>>>,
    /// Later subscribers are cloned from this one: they see events from their subscription on.
    later_subscribers: async_broadcast::InactiveReceiver<EventItem>,
    unobserved: AtomicU64,
    greeting: OnceLock<Greeting>,
    ready: AtomicBool,
    oob: AtomicBool,
    closed: OnceLock<ConnectionError>,
    finished: AtomicBool,
    state: Event,
    next_ticket: AtomicU64,
    violations: Mutex<Violations>,
}

impl Shared {
    pub(crate) fn new(
        first_subscriber: async_broadcast::Receiver<EventItem>,
        later_subscribers: async_broadcast::InactiveReceiver<EventItem>,
    ) -> Self {
        Shared {
            mailbox: Mailbox::default(),
            first_subscriber: Mutex::new(Some(first_subscriber)),
            later_subscribers,
            unobserved: AtomicU64::new(0),
            greeting: OnceLock::new(),
            ready: AtomicBool::new(false),
            oob: AtomicBool::new(false),
            closed: OnceLock::new(),
            finished: AtomicBool::new(false),
            state: Event::new(),
            next_ticket: AtomicU64::new(0),
            violations: Mutex::default(),
        }
    }

    /// A receiver for a new subscriber: the one kept since the start for the first, a fresh one after that.
    pub(crate) fn subscribe(&self) -> async_broadcast::Receiver<EventItem> {
        let first = self.first_subscriber.lock().unwrap_or_else(|e| e.into_inner()).take();
        first.unwrap_or_else(|| self.later_subscribers.activate_cloned())
    }

    /// Events no subscriber could receive.
    pub(crate) fn unobserved(&self) -> u64 {
        self.unobserved.load(Ordering::Relaxed)
    }

    pub(crate) fn count_unobserved(&self, n: u64) {
        self.unobserved.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn ticket(&self) -> u64 {
        self.next_ticket.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn greeting(&self) -> Option<&Greeting> {
        self.greeting.get()
    }

    pub(crate) fn set_greeting(&self, greeting: Greeting) {
        let _ = self.greeting.set(greeting);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(crate) fn oob(&self) -> bool {
        self.oob.load(Ordering::Acquire)
    }

    pub(crate) fn set_ready(&self, oob: bool) {
        self.oob.store(oob, Ordering::Release);
        self.ready.store(true, Ordering::Release);
        self.state.notify(usize::MAX);
    }

    pub(crate) fn closed(&self) -> Option<&ConnectionError> {
        self.closed.get()
    }

    /// Records why the session ended (the first cause wins) and wakes every waiter.
    pub(crate) fn set_closed(&self, cause: ConnectionError) {
        let _ = self.closed.set(cause);
        self.state.notify(usize::MAX);
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// The driver has stopped: the socket is closed.
    pub(crate) fn set_finished(&self) {
        self.finished.store(true, Ordering::Release);
        self.state.notify(usize::MAX);
    }

    /// The cause to report when the driver cannot be reached.
    pub(crate) fn gone(&self) -> Error {
        Error::Connection(self.cause())
    }

    /// Why the session ended; a transport error if the driver stopped without saying.
    pub(crate) fn cause(&self) -> ConnectionError {
        self.closed()
            .cloned()
            .unwrap_or_else(|| ConnectionError::Transport("the connection's driver stopped (was it spawned?)".into()))
    }

    pub(crate) fn push_violation(&self, v: ProtocolViolation) {
        self.violations.lock().unwrap_or_else(|e| e.into_inner()).push(v);
    }

    pub(crate) fn take_violations(&self) -> Vec<ProtocolViolation> {
        self.violations.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Waits until `done` holds. Checks, listens, checks again: no wake-up is missed.
    pub(crate) async fn wait_until(&self, done: impl Fn(&Shared) -> bool) {
        loop {
            if done(self) {
                return;
            }
            let listener = self.state.listen();
            if done(self) {
                return;
            }
            listener.await;
        }
    }
}
