//! [`Handle`]: the part of [`Qmp`](crate::Qmp) and [`GuestAgent`](crate::GuestAgent) that talks to the driver.
//! It never touches the socket itself, which is what makes every call cancel safe.
//!
//! A call puts a [`Request`] (with a one-shot for the reply) in the connection's mailbox and waits on a [`Waiter`],
//! which drives the connection in place while it waits (through the [`Engine`]: the caller's task writes the
//! command and reads the reply without waking the driver's task; the socket is touched only by the connection's
//! own code, under its lock). When the waiting future is dropped, the waiter closes its one-shot (a driver that
//! has not taken the request yet then skips it unseen) and sends [`Control::Cancel`], which the driver reads
//! before any new request: the command is withdrawn from the core if still queued, and its reply swallowed if it
//! was on the wire.
//!
//! The mailbox has no bound of its own on purpose: every request in it belongs to a caller that is waiting for its
//! answer (there is no fire-and-forget call), so it never holds more than the callers' own futures do. Room in
//! the core is the driver's business: it keeps requests the core has no room for in order, honouring their
//! deadlines while they wait.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use qmp_proto::adapter::Options;
use qmp_proto::{ConnectionError, ExecuteOptions, Mode, RawJson};

use crate::command::Command;
use crate::driver::{Conn, Driver, Engine};
use crate::events::{Events, Publisher};
use crate::reply::{self, Received};
use crate::runtime::Runtime;
use crate::shared::{Control, ReplyTx, Request, Shared};
use crate::transport::Transport;
use crate::Error;

/// The sending half of a connection, shared by every clone of a `Qmp` or `GuestAgent`.
#[derive(Debug)]
pub(crate) struct Handle<R> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) options: Options,
    /// The core's settings, for the rules that pick a command's deadline.
    config: qmp_proto::Config,
    pub(crate) fd_passing: bool,
    pub(crate) runtime: R,
    /// The connection, for callers to drive while they wait.
    engine: Arc<Engine>,
}

impl<R: Runtime> Handle<R> {
    /// Sends `command` to the driver and waits for its answer. Cancel safe: see the module docs.
    pub(crate) async fn call(&self, command: Command) -> Result<RawJson, Error> {
        self.call_with_fd(command, None).await
    }

    /// Like [`call`](Self::call), with a descriptor to pass with the command.
    pub(crate) async fn call_with_fd(&self, command: Command, fd: Option<OwnedFd>) -> Result<RawJson, Error> {
        let ticket = self.shared.ticket();
        let (reply, rx) = reply::channel();
        // Nobody is woken: the waiter's first poll drives the connection, which takes the request.
        let request = Request { command, fd, ticket, reply: ReplyTx::Caller(reply) };
        if self.shared.mailbox.send_quietly(request).is_err() {
            return Err(self.shared.gone());
        }
        let mut waiter = Waiter { rx, ticket, shared: &self.shared, engine: &self.engine, armed: true, queued: false };
        std::future::poll_fn(|cx| waiter.poll_wait(cx)).await
    }

    /// Sends `command` to the driver, which calls `sink` with its outcome (in the driver task), or calls `sink`
    /// here at once when the connection is over. No task and no one-shot per call: for the proxy, which routes
    /// outcomes on. It cannot be cancelled; the command has no deadline unless `command` has one.
    pub(crate) fn submit_with_sink(
        &self,
        command: Command,
        fd: Option<OwnedFd>,
        sink: Box<dyn FnOnce(Result<RawJson, Error>) + Send>,
    ) {
        let ticket = self.shared.ticket();
        if let Err(refused) = self.shared.mailbox.send(Request { command, fd, ticket, reply: ReplyTx::Sink(sink) }) {
            let _ = refused.reply.send(Err(self.shared.gone()));
        }
    }

    /// Options for one command with a timeout from now on (the runtime's clock).
    pub(crate) fn opts(&self, timeout: Option<Duration>) -> ExecuteOptions {
        ExecuteOptions::new().deadline_opt(timeout.and_then(|t| self.runtime.now().checked_add(t)))
    }

    /// Options for `command` with its deadline from [`Options::timeout_for`] (the command timeout, or the grace
    /// period of a command the agent answers only on failure).
    pub(crate) fn opts_for(&self, command: &str) -> ExecuteOptions {
        self.opts(self.options.timeout_for(&self.config, command))
    }

    pub(crate) fn connection_error(&self) -> Option<ConnectionError> {
        self.shared.closed().cloned()
    }

    /// Asks the driver to close, then waits until it has stopped.
    pub(crate) async fn close(&self) {
        self.shared.mailbox.control(Control::Close);
        self.shared.wait_until(Shared::is_finished).await;
    }

    /// Waits until the session has ended, and returns why.
    pub(crate) async fn closed(&self) -> ConnectionError {
        self.shared.wait_until(|s| s.closed().is_some() || s.is_finished()).await;
        self.shared.cause()
    }

    pub(crate) fn events(&self, names: Option<Arc<[String]>>) -> Events {
        Events::new(&self.shared, names)
    }
}

/// When the last handle goes, the driver ends the session.
impl<R> Drop for Handle<R> {
    fn drop(&mut self) {
        self.shared.mailbox.orphan();
    }
}

/// Lives across the wait for one reply; dropped before the reply came, it cancels the command.
struct Waiter<'a> {
    rx: reply::Receiver<Result<RawJson, Error>>,
    ticket: u64,
    shared: &'a Shared,
    engine: &'a Engine,
    /// The reply has not come: dropping the waiter cancels the command.
    armed: bool,
    /// In the engine's queue of waiting callers.
    queued: bool,
}

impl Waiter<'_> {
    /// The answer if it came; otherwise drives the connection (it may read the answer) and waits for a wake-up:
    /// the answer, or a source of the connection to poll again.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<RawJson, Error>> {
        // Not woken by the answer while driving: this task is running already. (Before the first poll of the
        // connection, `rx.poll` below finds an answer someone else read as well.)
        if self.queued {
            if let Some(found) = self.rx.take() {
                return Poll::Ready(self.finish(found));
            }
        }
        self.engine.wait_in_place(self.ticket, cx.waker());
        self.queued = true;
        match self.rx.poll(cx) {
            Poll::Ready(found) => Poll::Ready(self.finish(found)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn finish(&mut self, found: Received<Result<RawJson, Error>>) -> Result<RawJson, Error> {
        self.armed = false;
        self.leave();
        match found {
            Received::Value(answer) => answer,
            // The driver answers every request it accepted; no answer means the driver itself is gone.
            Received::Gone => Err(self.shared.gone()),
        }
    }

    fn leave(&mut self) {
        if std::mem::take(&mut self.queued) {
            self.engine.leave(self.ticket);
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.leave();
        if self.armed {
            // Close the one-shot first: a driver that has not taken the request yet then skips it.
            self.rx.close();
            tracing::trace!(ticket = self.ticket, "call dropped before its reply; cancelling");
            self.shared.mailbox.control(Control::Cancel(self.ticket));
        }
    }
}

/// Numbers connections in the tracing spans.
static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Builds a connection: the driver future (not spawned) and the first handle.
pub(crate) fn start<T: Transport, R: Runtime>(
    io: T,
    options: Options,
    config: qmp_proto::Config,
    runtime: R,
) -> (Handle<R>, Driver) {
    let (publisher, first, later) = Publisher::new(options.get_event_buffer());
    let shared = Arc::new(Shared::new(first, later));
    let fd_passing = io.can_pass_fds();
    let mode = match config.mode() {
        Mode::Qmp => "qmp",
        Mode::GuestAgent => "qga",
    };
    let core = qmp_proto::Client::new(config.clone(), runtime.now());
    let id = CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = tracing::debug_span!("qmp", conn = id, mode);
    let make = |waker: &std::task::Waker| {
        span.in_scope(|| {
            tracing::debug!(fd_passing, "starting connection driver");
            Conn::new(io, core, Arc::clone(&shared), publisher, runtime.clone(), waker)
        })
    };
    let (driver, engine) = Driver::new(make, span.clone());
    (Handle { shared, options, config, fd_passing, runtime, engine }, driver)
}
