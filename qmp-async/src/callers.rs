//! [`Callers`]: the driver's record of who waits for which request: the reply's one-shot, the caller's ticket to
//! cancel it by, and the file descriptor that goes with the command until the core puts it on the wire.
//!
//! Every command is one insert and one removal in two of its maps, so they hash with foldhash's fixed-seed hasher
//! instead of std's SipHash (which was ~1.7% of the tokio adapter's CPU per command): their keys are the core's
//! request ids and our own tickets, never anything the server chose, so there is nothing to flood them with.

use std::collections::HashMap;

use foldhash::fast::FixedState;

use qmp_proto::RequestId;

/// The callers a driver task answers: for each request the core accepted, where its answer goes (`R`, a one-shot
/// sender), the caller's ticket to cancel it by, and the file descriptor `F` that goes with the command until the
/// core puts the command's marked byte on the wire.
#[derive(Debug)]
pub(crate) struct Callers<R, F> {
    calls: HashMap<RequestId, (u64, R), FixedState>,
    tickets: HashMap<u64, RequestId, FixedState>,
    /// Empty unless a command passes a descriptor: then left alone.
    fds: HashMap<RequestId, F, FixedState>,
}

impl<R, F> Default for Callers<R, F> {
    fn default() -> Self {
        Callers { calls: HashMap::default(), tickets: HashMap::default(), fds: HashMap::default() }
    }
}

impl<R, F> Callers<R, F> {
    /// Records that the caller with `ticket` waits for request `id` at `reply`, with the descriptor `fd`.
    pub(crate) fn insert(&mut self, id: RequestId, ticket: u64, reply: R, fd: Option<F>) {
        if let Some(fd) = fd {
            self.fds.insert(id, fd);
        }
        self.calls.insert(id, (ticket, reply));
        self.tickets.insert(ticket, id);
    }

    /// Request `id` has ended: forgets it and returns where its answer goes, if a caller still waits.
    pub(crate) fn answer(&mut self, id: RequestId) -> Option<R> {
        self.forget_fd(id);
        let (ticket, reply) = self.calls.remove(&id)?;
        self.tickets.remove(&ticket);
        Some(reply)
    }

    /// The caller with `ticket` went away: forgets its request and returns the request's id (to
    /// `Client::cancel`), if the core had accepted it.
    pub(crate) fn cancel(&mut self, ticket: u64) -> Option<RequestId> {
        let id = self.tickets.remove(&ticket)?;
        self.calls.remove(&id);
        self.forget_fd(id);
        Some(id)
    }

    fn forget_fd(&mut self, id: RequestId) {
        if !self.fds.is_empty() {
            self.fds.remove(&id);
        }
    }

    /// Takes the descriptor of request `id`, when the core puts its byte on the wire
    /// (`Client::poll_transmit_with_fds`). `None` if its caller went away meanwhile.
    pub(crate) fn take_fd(&mut self, id: RequestId) -> Option<F> {
        self.fds.remove(&id)
    }

    /// The session is over: forgets every request and returns where their answers go.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = R> + '_ {
        self.tickets.clear();
        self.fds.clear();
        self.calls.drain().map(|(_, (_, reply))| reply)
    }

    /// How many callers wait.
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }
}
