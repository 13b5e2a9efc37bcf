//! [`Handle`]: the user side of a connection. It only sends requests to the driver task and waits for answers;
//! it never touches the socket, which is what makes every call cancel-safe.
//!
//! A call puts a [`Request`] (with a oneshot for the reply) on a bounded channel and waits on a [`Waiter`]. When
//! the waiting future is dropped, the waiter closes the oneshot and tells the driver on the control channel,
//! which cancels the command in the core: never sent if it was still queued, its reply swallowed if it was on the
//! wire. A request whose caller left before the driver took it off the channel is skipped unseen.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use qmp_proto::adapter::{Command, Violations};
use qmp_proto::{ConnectionError, ExecuteOptions, ProtocolViolation, RawJson};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::events::Events;
use crate::options::Options;
use crate::Error;
use crate::EventItem;

/// One call: the command (with the descriptor that rides on the byte the core marks for it), the caller's ticket
/// (to cancel it by), and where the answer goes.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) command: Command,
    pub(crate) fd: Option<OwnedFd>,
    pub(crate) ticket: u64,
    pub(crate) reply: oneshot::Sender<Result<RawJson, Error>>,
}

impl Request {
    /// The command's deadline, if it has one.
    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        self.command.deadline()
    }
}

/// Messages that must reach the driver without waiting for room (sent from `Drop`).
#[derive(Debug)]
pub(crate) enum Control {
    /// The caller with this ticket went away.
    Cancel(u64),
    /// Close the connection ([`ConnectionError::Local`]).
    Close,
}

/// State the driver publishes for the handles.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The event channel, for new subscribers; `None` once the connection is over.
    pub(crate) events: Mutex<Option<broadcast::Sender<EventItem>>>,
    pub(crate) violations: Mutex<Violations>,
}

/// The sending half of a connection, shared by every clone of a `Qmp` or `GuestAgent`.
#[derive(Debug)]
pub(crate) struct Handle {
    pub(crate) requests: mpsc::Sender<Request>,
    pub(crate) control: mpsc::UnboundedSender<Control>,
    pub(crate) state: watch::Receiver<Option<ConnectionError>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) options: Options,
    pub(crate) fd_passing: bool,
    next_ticket: AtomicU64,
}

impl Handle {
    pub(crate) fn new(
        requests: mpsc::Sender<Request>,
        control: mpsc::UnboundedSender<Control>,
        state: watch::Receiver<Option<ConnectionError>>,
        shared: Arc<Shared>,
        options: Options,
        fd_passing: bool,
    ) -> Self {
        Handle { requests, control, state, shared, options, fd_passing, next_ticket: AtomicU64::new(0) }
    }

    /// Sends `command` to the driver and waits for its answer. Cancel-safe: see the module docs.
    pub(crate) async fn call(&self, command: Command) -> Result<RawJson, Error> {
        self.call_with_fd(command, None).await
    }

    /// Like [`call`](Self::call), with a descriptor to pass with the command.
    pub(crate) async fn call_with_fd(&self, command: Command, fd: Option<OwnedFd>) -> Result<RawJson, Error> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        // `send` is cancel-safe: dropped while waiting for room, nothing was queued.
        if self.requests.send(Request { command, fd, ticket, reply }).await.is_err() {
            return Err(self.closed_error());
        }
        Waiter { rx: Some(rx), ticket, handle: self }.await
    }

    /// Options for one command with a timeout from now on tokio's clock (paused in tests).
    pub(crate) fn opts(&self, timeout: Option<Duration>) -> ExecuteOptions {
        ExecuteOptions::new().deadline_opt(deadline(timeout))
    }

    pub(crate) fn connection_error(&self) -> Option<ConnectionError> {
        self.state.borrow().clone()
    }

    pub(crate) fn closed_error(&self) -> Error {
        Error::Connection(self.connection_error().unwrap_or(ConnectionError::Local))
    }

    pub(crate) async fn closed(&self) -> ConnectionError {
        let mut state = self.state.clone();
        let cause = match state.wait_for(Option::is_some).await {
            Ok(cause) => cause.clone(),
            // The driver is gone without a word: its runtime shut down.
            Err(_) => None,
        };
        cause.unwrap_or_else(|| ConnectionError::Transport("the driver task stopped".into()))
    }

    /// Closes, and waits until the driver has finished with the socket.
    pub(crate) async fn close(&self) {
        let _ = self.control.send(Control::Close);
        let mut state = self.state.clone();
        // The driver drops the sender when it ends.
        while state.changed().await.is_ok() {}
    }

    pub(crate) fn events(&self, names: Option<Arc<[String]>>) -> Events {
        let rx = self.shared.events.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|tx| tx.subscribe());
        Events::new(rx, names)
    }

    pub(crate) fn take_violations(&self) -> Vec<ProtocolViolation> {
        self.shared.violations.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// `now + timeout` on tokio's clock, as the `std` instant the core works with.
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<std::time::Instant> {
    timeout.and_then(|t| tokio::time::Instant::now().into_std().checked_add(t))
}

/// Waits for one reply; on drop before it came, cancels the command.
struct Waiter<'a> {
    rx: Option<oneshot::Receiver<Result<RawJson, Error>>>,
    ticket: u64,
    handle: &'a Handle,
}

impl Future for Waiter<'_> {
    type Output = Result<RawJson, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(Err(self.handle.closed_error()));
        };
        let answer = ready!(Pin::new(rx).poll(cx));
        self.rx = None;
        // The driver answers every request it accepted; a dropped sender means the driver itself is gone.
        Poll::Ready(answer.unwrap_or_else(|_| Err(self.handle.closed_error())))
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            // Close the receiver first: a driver that has not taken the request yet then skips it.
            drop(rx);
            let _ = self.handle.control.send(Control::Cancel(self.ticket));
        }
    }
}
