//! What the driver does with the core's outputs and with the handles' requests: replies to their callers,
//! events to the broadcast channel, bytes (and descriptor marks) to the output buffer, requests and
//! cancellations to the core. No I/O here; the polling of the sources is in the parent module.

use qmp_proto::{ClientEvent, ConnectionError, RawJson, RequestId, UsageError};

use super::{excerpt, Conn, Phase, WIRE};
use crate::shared::{Control, Request};
use crate::transport::Transport;
use crate::Error;
use crate::EventItem;

impl<T: Transport> Conn<T> {
    // ----- the core's outputs -----------------------------------------------------------------------------

    /// The core's contract, after every call into it: drain events, take what to send (the timer is re-armed
    /// from `poll_timeout` in [`poll_timer`](Self::poll_timer), later in the same turn).
    pub(super) fn after_core(&mut self) {
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
                tracing::debug!(version = %g.version, capabilities = ?g.capabilities, "QMP greeting");
                self.shared.set_greeting(g);
            }
            ClientEvent::Ready { oob } => {
                tracing::debug!(oob, "session ready");
                self.shared.set_ready(oob);
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
                // Never waits: in overflow mode a full channel drops its oldest event and tells the laggards;
                // with no subscriber the event is dropped.
                let _ = self.events.try_broadcast(EventItem::Event(ev));
            }
            ClientEvent::EventsDropped { count } => {
                tracing::debug!(count, "events dropped by the core");
                let _ = self.events.try_broadcast(EventItem::Lagged(count));
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
            let _ = reply.try_send(result);
        }
    }

    fn on_closed(&mut self, cause: ConnectionError) {
        tracing::debug!(%cause, pending = self.calls.len(), "connection closed");
        self.shared.set_closed(cause.clone());
        for reply in self.calls.drain() {
            let _ = reply.try_send(Err(Error::Connection(cause.clone())));
        }
        if let Some(req) = self.stalled.take() {
            let _ = req.reply.try_send(Err(Error::Connection(cause.clone())));
        }
        // Subscribers read what was sent, then their streams end.
        self.events.close();
        // Later calls fail at once; requests already queued are refused here.
        self.requests.close();
        while let Ok(req) = self.requests.try_recv() {
            let _ = req.reply.try_send(Err(Error::Connection(cause.clone())));
        }
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

    /// Gives a request to the core, or parks it when the core has no room.
    pub(super) fn submit(&mut self, req: Request) {
        if req.reply.is_closed() {
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
                self.stalled = Some(req);
                return;
            }
            Err(e) => {
                let _ = req.reply.try_send(Err(e.into()));
            }
        }
        self.after_core();
    }

    pub(super) fn on_control(&mut self, control: Control) {
        match control {
            Control::Cancel(ticket) => {
                if let Some(id) = self.calls.cancel(ticket) {
                    tracing::trace!(%id, "caller dropped its future: cancelling");
                    self.core.cancel(id);
                    self.after_core();
                } else if self.stalled.as_ref().is_some_and(|r| r.ticket == ticket) {
                    self.stalled = None;
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
