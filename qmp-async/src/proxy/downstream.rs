//! One client of the proxy: the [`Backend`] of its served connection. Its commands are checked against its
//! policy rule (a denied one is answered here, and nothing reaches QEMU), then submitted to the [`Hub`]; QEMU's
//! replies come back byte for byte as QEMU wrote them, only the client's own id restored by its [`Server`]
//! ([`Server::reply_raw`]), and
//! QEMU's events from the client's bounded queue, taken only while the client reads what it was sent.
//!
//! It closes when it is kicked for not reading its events, or when the proxy stops (asked to, or QEMU gone) once
//! every command it passed on has been answered (with QEMU's reply, or an error when QEMU went away).

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use qmp_proto::server::{Arguments, EncodedEvent, Event, Failure, Server, ServerUsageError, Token};

use super::audit::{AuditLog, Entry};
use super::hub::{Attached, Hub};
use super::policy::{Identity, Rule};
use super::routing::ClientId;
use super::upstream::{Forward, Outcome};
use crate::runtime::Runtime;
use crate::serve::connection::{Backend, Close, ShutdownWatch};

/// Unwritten output beyond which no more events are taken from the client's queue.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// See the [module docs](self).
pub(crate) struct Downstream<R: Runtime> {
    hub: Arc<Hub<R>>,
    client: ClientId,
    rule: Rule,
    identity: Arc<Identity>,
    replies: Pin<Box<async_channel::Receiver<(Token, Outcome)>>>,
    events: Pin<Box<async_channel::Receiver<Arc<EncodedEvent>>>>,
    kicked: ShutdownWatch,
    lost: Arc<AtomicU64>,
    stop: ShutdownWatch,
    /// Commands passed on to QEMU and not answered yet.
    outstanding: usize,
    /// Descriptors the client passed, for its next commands that take one (at most [`MAX_HELD_FDS`]).
    fds: VecDeque<OwnedFd>,
    audit: Option<Arc<AuditLog>>,
    /// What the audit log needs of each command passed on, until its reply.
    audited: HashMap<Token, Audited>,
}

/// A command passed on, as the audit log will record it.
struct Audited {
    name: String,
    arguments: Arguments,
    oob: bool,
    started: Instant,
}

/// Descriptors a client may have passed ahead of the commands that take them; more are closed.
const MAX_HELD_FDS: usize = 16;

/// The commands that take the descriptor passed with them, as QEMU's monitor does.
fn takes_fd(command: &str) -> bool {
    matches!(command, "getfd" | "add-fd")
}

impl<R: Runtime> Downstream<R> {
    pub(crate) fn new(hub: Arc<Hub<R>>, rule: Rule, identity: Arc<Identity>, audit: Option<Arc<AuditLog>>) -> Self {
        let Attached { client, replies, events, kicked, lost } = hub.attach(&rule);
        let stop = ShutdownWatch::new(hub.shutdown.clone());
        tracing::info!(client = client.get(), %identity, rule = rule.name(), "client connected");
        Downstream {
            hub,
            client,
            rule,
            identity,
            replies: Box::pin(replies),
            events: Box::pin(events),
            kicked: ShutdownWatch::new(kicked),
            lost,
            stop,
            outstanding: 0,
            fds: VecDeque::new(),
            audit,
            audited: HashMap::new(),
        }
    }

    fn forward(&mut self, server: &mut Server, token: Token, name: String, args: Arguments, oob: bool) {
        if let Err(denied) = self.rule.check(&name) {
            tracing::info!(client = self.client.get(), identity = %self.identity, command = name, "denied by policy");
            let _ = server.reply(token, Err(denied));
            self.audit(&name, &args, oob, "denied", Duration::ZERO);
            return;
        }
        let audited = self.audit.is_some().then(|| Audited {
            name: name.clone(),
            arguments: args.clone(),
            oob,
            started: self.hub.runtime.now(),
        });
        // The client's arguments go on as the text it wrote (QEMU's own reading of them where it differs from
        // standard JSON: see `Arguments`), never parsed here.
        let args = (!args.is_empty()).then(|| args.raw().clone());
        if let Some(audited) = audited {
            self.audited.insert(token, audited);
        }
        // A descriptor goes with the command that takes it, and with no other.
        let fd = if takes_fd(&name) { self.fds.pop_front() } else { None };
        self.outstanding += 1;
        self.hub.submit(self.client, token, Forward { name, args, oob, fd });
    }
}

impl<R: Runtime> Downstream<R> {
    /// Answers the client with QEMU's reply byte for byte (only the id is the client's), or with the proxy's
    /// own error.
    fn reply(&self, server: &mut Server, token: Token, outcome: Outcome) {
        let replied = match &outcome {
            Outcome::Return(value) => server.reply_raw(token, Ok(value)),
            Outcome::Error(error) => server.reply_raw(token, Err(&error.raw)),
            Outcome::Failed(failure) => server.reply(token, Err(failure.clone())),
        };
        match replied {
            Ok(()) => {}
            Err(ServerUsageError::InvalidJson(why)) => {
                // A reply spread over lines that does not parse: the client still gets an answer.
                tracing::warn!(client = self.client.get(), why, "QEMU's reply could not be passed on");
                let failure = Failure::generic(format!("the proxy could not pass QEMU's reply on: {why}"));
                let _ = server.reply(token, Err(failure));
            }
            Err(e) => {
                tracing::debug!(client = self.client.get(), %e, "reply for a command the client no longer waits for");
            }
        }
    }

    fn audit(&self, command: &str, arguments: &Arguments, oob: bool, result: &str, duration: Duration) {
        let Some(audit) = &self.audit else { return };
        audit.record(&Entry {
            client: self.client.get(),
            identity: &self.identity,
            rule: self.rule.name(),
            command,
            arguments,
            oob,
            result,
            duration,
        });
    }
}

impl<R: Runtime> Backend for Downstream<R> {
    fn poll_feed(&mut self, cx: &mut Context<'_>, server: &mut Server, unwritten: usize) -> bool {
        let mut progress = false;
        while let Poll::Ready(Some((token, outcome))) = self.replies.as_mut().poll_next(cx) {
            self.outstanding -= 1;
            if let Some(audited) = self.audited.remove(&token) {
                let took = self.hub.runtime.now().saturating_duration_since(audited.started);
                self.audit(&audited.name, &audited.arguments, audited.oob, outcome.class(), took);
            }
            self.reply(server, token, outcome);
            progress = true;
        }
        while unwritten + server.queued_output() < OUTPUT_HIGH_WATER {
            let Poll::Ready(Some(event)) = self.events.as_mut().poll_next(cx) else { break };
            server.event_encoded(&event);
            progress = true;
        }
        progress
    }

    fn on_event(&mut self, server: &mut Server, event: Event) {
        match event {
            Event::Command(cmd) => self.forward(server, cmd.token, cmd.name().to_owned(), cmd.arguments, cmd.oob),
            Event::Negotiated { oob } => tracing::debug!(client = self.client.get(), oob, "client negotiated"),
            Event::Closed(reason) => tracing::info!(client = self.client.get(), ?reason, "client session closed"),
            _ => {}
        }
    }

    fn on_fds(&mut self, fds: Vec<OwnedFd>) {
        for fd in fds {
            if self.fds.len() < MAX_HELD_FDS {
                self.fds.push_back(fd);
            } else {
                tracing::warn!(
                    client = self.client.get(),
                    "too many descriptors passed ahead of their commands: closed"
                );
            }
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _server: &Server) -> Close {
        if self.kicked.poll(cx) {
            let lost = self.lost.load(Ordering::SeqCst);
            tracing::warn!(client = self.client.get(), identity = %self.identity, lost, "client disconnected: it lost {lost} events");
            return Close::Now;
        }
        if self.stop.poll(cx) && self.outstanding == 0 {
            Close::Gracefully
        } else {
            Close::No
        }
    }
}

impl<R: Runtime> Drop for Downstream<R> {
    fn drop(&mut self) {
        self.hub.detach(self.client);
    }
}
