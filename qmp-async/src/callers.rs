//! [`Callers`]: the driver's record of who waits for which request: the reply's one-shot, the caller's ticket to
//! cancel it by, and the file descriptor that goes with the command until the core puts it on the wire.
//!
//! Every command is one insert and one removal, so the record is a vector indexed by the request's wire key
//! ([`RequestId::as_u64`]): the core reuses the smallest free key, so the keys of the requests in flight stay
//! small and the vector short (as long as the most requests ever in flight at once, plus those the core keeps
//! reserved). Two hash maps (by request and by ticket) cost ~400 instructions per command, about half a
//! microsecond of the tokio adapter's CPU per command on the bench machine (callgrind, `roundtrip` x1).
//! A cancel looks for its ticket along the vector: cancels are rare, and the vector is short.
//! A key whose slot is still taken (its old request ended in the core but not yet here) goes to a small overflow
//! map, so nothing depends on the order in which the core's events are drained.

use std::collections::HashMap;

use foldhash::fast::FixedState;

use qmp_proto::RequestId;

/// What a request is known by: [`RequestId`], or a simpler key in tests.
pub(crate) trait Keyed: Copy + Eq + std::hash::Hash {
    /// The small key the core reuses (the wire id).
    fn key(self) -> u64;
}

impl Keyed for RequestId {
    fn key(self) -> u64 {
        self.as_u64()
    }
}

/// A vector this long or longer, once empty, is given back.
const SHRINK_FROM: usize = 64;

/// One waiting caller: its request, its ticket, where its answer goes.
#[derive(Debug)]
struct Entry<K, R> {
    id: K,
    ticket: u64,
    reply: R,
}

/// The callers a driver task answers: for each request the core accepted, where its answer goes (`R`, a one-shot
/// sender), the caller's ticket to cancel it by, and the file descriptor `F` that goes with the command until the
/// core puts the command's marked byte on the wire.
#[derive(Debug)]
pub(crate) struct Callers<R, F, K = RequestId> {
    /// By wire key.
    slots: Vec<Option<Entry<K, R>>>,
    /// Entries whose key's slot was taken when they came.
    overflow: Vec<Entry<K, R>>,
    len: usize,
    /// Empty unless a command passes a descriptor: then left alone.
    fds: HashMap<K, F, FixedState>,
}

impl<R, F, K> Default for Callers<R, F, K> {
    fn default() -> Self {
        Callers { slots: Vec::new(), overflow: Vec::new(), len: 0, fds: HashMap::default() }
    }
}

impl<R, F, K: Keyed> Callers<R, F, K> {
    /// Records that the caller with `ticket` waits for request `id` at `reply`, with the descriptor `fd`.
    pub(crate) fn insert(&mut self, id: K, ticket: u64, reply: R, fd: Option<F>) {
        if let Some(fd) = fd {
            self.fds.insert(id, fd);
        }
        let entry = Entry { id, ticket, reply };
        self.len += 1;
        // Keys are small (see the module doc); one that is not goes to the overflow rather than growing the vector.
        let Some(key) = usize::try_from(id.key()).ok().filter(|&k| k <= self.slots.len().max(SHRINK_FROM) * 2) else {
            self.overflow.push(entry);
            return;
        };
        if key >= self.slots.len() {
            self.slots.resize_with(key + 1, || None);
        }
        match &mut self.slots[key] {
            slot @ None => *slot = Some(entry),
            Some(_) => self.overflow.push(entry),
        }
    }

    /// Request `id` has ended: forgets it and returns where its answer goes, if a caller still waits.
    pub(crate) fn answer(&mut self, id: K) -> Option<R> {
        self.forget_fd(id);
        let slot = usize::try_from(id.key()).ok().and_then(|k| self.slots.get_mut(k));
        let entry = match slot {
            Some(slot) if slot.as_ref().is_some_and(|e| e.id == id) => slot.take(),
            _ => self.overflow.iter().position(|e| e.id == id).map(|at| self.overflow.swap_remove(at)),
        }?;
        self.removed();
        Some(entry.reply)
    }

    /// The caller with `ticket` went away: forgets its request and returns the request's id (to
    /// `Client::cancel`), if the core had accepted it.
    pub(crate) fn cancel(&mut self, ticket: u64) -> Option<K> {
        let entry = match self.slots.iter_mut().find(|s| s.as_ref().is_some_and(|e| e.ticket == ticket)) {
            Some(slot) => slot.take(),
            None => self.overflow.iter().position(|e| e.ticket == ticket).map(|at| self.overflow.swap_remove(at)),
        }?;
        self.removed();
        self.forget_fd(entry.id);
        Some(entry.id)
    }

    fn removed(&mut self) {
        self.len -= 1;
        if self.len == 0 && self.slots.len() >= SHRINK_FROM {
            self.slots = Vec::new();
            self.overflow = Vec::new();
        }
    }

    fn forget_fd(&mut self, id: K) {
        if !self.fds.is_empty() {
            self.fds.remove(&id);
        }
    }

    /// Takes the descriptor of request `id`, when the core puts its byte on the wire
    /// (`Client::poll_transmit_with_fds`). `None` if its caller went away meanwhile.
    pub(crate) fn take_fd(&mut self, id: K) -> Option<F> {
        self.fds.remove(&id)
    }

    /// The session is over: forgets every request and returns where their answers go.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = R> + '_ {
        self.fds.clear();
        self.len = 0;
        let slots = std::mem::take(&mut self.slots);
        let overflow = std::mem::take(&mut self.overflow);
        slots.into_iter().flatten().chain(overflow).map(|e| e.reply)
    }

    /// How many callers wait.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::{Callers, Keyed};
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A request: its issue number (unique) and its wire key (reused, and here even shared by live requests,
    /// to reach the overflow).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    struct Id {
        serial: u64,
        key: u64,
    }

    impl Keyed for Id {
        fn key(self) -> u64 {
            self.key
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { key: u64, fd: bool },
        Answer(usize),
        Cancel(usize),
        Drain,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (prop_oneof![0..6u64, 0..300u64, Just(u64::MAX)], any::<bool>())
                .prop_map(|(key, fd)| Op::Insert { key, fd }),
            3 => any::<usize>().prop_map(Op::Answer),
            2 => any::<usize>().prop_map(Op::Cancel),
            1 => Just(Op::Drain),
        ]
    }

    proptest! {
        /// Against a map by request: every answer and cancel finds what the model finds, with its reply and its
        /// descriptor, whatever the keys.
        #[test]
        fn matches_a_map(ops in proptest::collection::vec(op(), 1..200)) {
            let mut callers: Callers<u64, u64, Id> = Callers::default();
            // serial -> (id, ticket, fd)
            let mut model: HashMap<u64, (Id, u64, bool)> = HashMap::new();
            let mut serial = 0;
            for op in ops {
                match op {
                    Op::Insert { key, fd } => {
                        serial += 1;
                        let id = Id { serial, key };
                        let ticket = serial * 7;
                        callers.insert(id, ticket, serial, fd.then_some(serial + 1000));
                        model.insert(serial, (id, ticket, fd));
                    }
                    Op::Answer(pick) | Op::Cancel(pick) if model.is_empty() => {
                        let _ = pick;
                        let absent = Id { serial: serial + 1, key: 1 };
                        prop_assert_eq!(callers.answer(absent), None);
                        prop_assert_eq!(callers.cancel(u64::MAX), None);
                    }
                    Op::Answer(pick) => {
                        let mut serials: Vec<_> = model.keys().copied().collect();
                        serials.sort_unstable();
                        let (id, _, fd) = model.remove(&serials[pick % serials.len()]).expect("picked");
                        prop_assert_eq!(callers.take_fd(id), fd.then_some(id.serial + 1000));
                        prop_assert_eq!(callers.answer(id), Some(id.serial));
                        prop_assert_eq!(callers.answer(id), None);
                    }
                    Op::Cancel(pick) => {
                        let mut serials: Vec<_> = model.keys().copied().collect();
                        serials.sort_unstable();
                        let (id, ticket, _) = model.remove(&serials[pick % serials.len()]).expect("picked");
                        prop_assert_eq!(callers.cancel(ticket), Some(id));
                        prop_assert_eq!(callers.cancel(ticket), None);
                        prop_assert_eq!(callers.take_fd(id), None);
                    }
                    Op::Drain => {
                        let mut drained: Vec<u64> = callers.drain().collect();
                        drained.sort_unstable();
                        let mut expected: Vec<u64> = model.drain().map(|(s, _)| s).collect();
                        expected.sort_unstable();
                        prop_assert_eq!(drained, expected);
                    }
                }
                prop_assert_eq!(callers.len(), model.len());
            }
        }
    }

    #[test]
    fn a_short_vector_once_empty_after_many_in_flight() {
        let mut callers: Callers<u64, u64, Id> = Callers::default();
        let ids: Vec<Id> = (0..100).map(|k| Id { serial: k, key: k }).collect();
        for id in &ids {
            callers.insert(*id, id.serial, id.serial, None);
        }
        assert_eq!(callers.slots.len(), 100);
        for id in &ids {
            assert_eq!(callers.answer(*id), Some(id.serial));
        }
        assert_eq!((callers.len(), callers.slots.capacity()), (0, 0), "given back once empty");
    }
}
