//! What the driver does with the core's outputs and with the handles' requests: replies to their callers,
//! events to the subscribers, bytes (and descriptor marks) to the output buffer, requests and cancellations to
//! the core. No I/O here; the polling of the sources is in the parent module.

use std::time::Instant;

use qmp_proto::{ClientEvent, ConnectionError, RawJson, RequestId, UsageError};

use super::{excerpt, Conn, Phase, WIRE};
use crate::events::EventItem;
use crate::runtime::Runtime;
use crate::shared::{Control, Request};
use crate::transport::Transport;
use crate::Error;

impl<T: Transport, R: Runtime> Conn<T, R> {
    // ----- the core's outputs -----------------------------------------------------------------------------

    /// The core's contract, after every call into it: drain events, take what to send, and note that the
    /// deadlines may have changed (the timer is re-armed from `poll_timeout` in [`poll_timer`](Self::poll_timer),
    /// later in the same turn).
    pub(super) fn after_core(&mut self) {
        self.deadlines_changed = true;
        while let Some(event) = self.core.poll_event() {
            self.on_event(event);
        }
        let before = self.out.len();
        self.core.poll_transmit_with_fds(&mut self.out, &mut self.fd_scratch);
        for (at, id) in self.fd_scratch.drain(..) {
            // The descriptor is there unless its caller left after the core chose to send (then the command goes
            // without one, QEMU refuses it, and the reply is swallowed).
            if let Some(fd) = self.calls.take_fd(id) {
                self.fd_marks.push_back((at, fd));
            }
        }
        if self.out.len() > before {
            if tracing::enabled!(tracing::Level::TRACE) {
                let bytes = self.out.len() - before;
                tracing::trace!(target: WIRE, bytes, "-> {}", excerpt(&self.out[before..]));
            }
            self.batch_ends.push_back(self.out.len());
        }
    }

    fn on_event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Greeting(g) => {
                tracing::debug!(capabilities = ?g.capabilities, "QMP greeting");
                self.shared.set_greeting(g);
            }
            ClientEvent::Ready { oob } => {
                tracing::debug!(oob, "session ready");
                self.shared.set_ready(oob);
                self.handshake_timer = true;
            }
            ClientEvent::Reply { id, result } => self.answer(id, result.map_err(Error::Qmp)),
            ClientEvent::Failed { id, error } => {
                tracing::debug!(%id, %error, "command failed");
                self.answer(id, Err(Error::Request(error)));
            }
            ClientEvent::TimedOut { id } => {
                tracing::debug!(%id, "command timed out");
                self.answer(id, Err(Error::TimedOut));
            }
            ClientEvent::Event(ev) => {
                tracing::trace!(name = %ev.name, "event");
                // Never waits: a full channel drops its oldest event and tells the laggards.
                self.events.publish(EventItem::Event(ev), &self.shared);
            }
            ClientEvent::EventsDropped { count } => {
                tracing::debug!(count, "events dropped by the core");
                self.events.publish(EventItem::Lagged(count), &self.shared);
            }
            ClientEvent::ProtocolViolation(violation) => {
                tracing::debug!(%violation, "protocol violation (session continues)");
                self.shared.push_violation(violation);
            }
            ClientEvent::Closed(cause) => self.on_closed(cause),
            other => tracing::debug!(event = ?other, "unhandled core event"),
        }
    }

    /// Hands a result to the caller waiting for request `id`, if it still waits.
    fn answer(&mut self, id: RequestId, result: Result<RawJson, Error>) {
        if let Some(reply) = self.calls.answer(id) {
            // A caller that left in the meantime is fine: the core has ended the request either way.
            let _ = reply.send(result);
        }
    }

    fn on_closed(&mut self, cause: ConnectionError) {
        tracing::debug!(%cause, pending = self.calls.len(), "connection closed");
        self.shared.set_closed(cause.clone());
        for reply in self.calls.drain() {
            let _ = reply.send(Err(Error::Connection(cause.clone())));
        }
        // Later calls fail at once; requests already queued are refused here.
        let queued = self.shared.mailbox.close();
        for req in self.waiting.drain(..).chain(queued) {
            let _ = req.reply.send(Err(Error::Connection(cause.clone())));
        }
        self.events.close();
        let flush = cause == ConnectionError::Local;
        let keep = if flush && self.written > self.batch_start {
            // Finish the batch being written; drop the ones not started (their callers were told "closed").
            self.batch_ends.front().copied().unwrap_or(self.written)
        } else {
            self.written
        };
        self.out.truncate(keep);
        self.fd_marks.retain(|(at, _)| *at < keep);
        self.phase = Phase::Closing { flush };
    }

    // ----- inputs ------------------------------------------------------------------------------------------

    /// Gives a request to the core, or keeps it waiting (in order) when the core has no room.
    pub(super) fn submit(&mut self, req: Request) {
        if req.reply.is_canceled() {
            tracing::trace!(ticket = req.ticket, "request dropped by its caller before it was taken");
            return;
        }
        if let Some(nonce) = req.command.guest_sync_nonce() {
            tracing::debug!(nonce, "guest-sync-delimited");
        }
        match req.command.submit(&mut self.core) {
            Ok(id) => {
                let Request { fd, ticket, reply, .. } = req;
                self.calls.insert(id, ticket, reply, fd);
            }
            Err(UsageError::QueueFull { .. }) => {
                self.waiting.push_front(req);
                self.deadlines_changed = true;
                return;
            }
            Err(e) => {
                let _ = req.reply.send(Err(e.into()));
            }
        }
        self.after_core();
    }

    /// Submits waiting requests while the core has room.
    pub(super) fn submit_waiting(&mut self) {
        while self.phase == Phase::Running {
            let Some(req) = self.waiting.pop_front() else {
                break;
            };
            let before = self.waiting.len();
            self.submit(req);
            if self.waiting.len() > before {
                // Put back in front: still no room.
                break;
            }
        }
    }

    /// Ends the waiting requests whose deadline passed with [`Error::TimedOut`]: a request never handed to the
    /// core keeps its deadline all the same.
    pub(super) fn expire_waiting(&mut self, now: Instant) {
        if !self.waiting.iter().any(|req| req.deadline().is_some_and(|at| at <= now)) {
            return;
        }
        for req in std::mem::take(&mut self.waiting) {
            if req.deadline().is_some_and(|at| at <= now) {
                tracing::debug!(ticket = req.ticket, "command timed out before the connection had room for it");
                let _ = req.reply.send(Err(Error::TimedOut));
            } else {
                self.waiting.push_back(req);
            }
        }
    }

    pub(super) fn on_control(&mut self, control: Control) {
        match control {
            Control::Cancel(ticket) => {
                if let Some(id) = self.calls.cancel(ticket) {
                    tracing::trace!(%id, "caller dropped its future: cancelling");
                    self.core.cancel(id);
                    self.after_core();
                } else {
                    self.waiting.retain(|r| r.ticket != ticket);
                }
            }
            Control::Close => {
                tracing::debug!("close requested");
                self.core.close();
                self.after_core();
            }
        }
    }
}
