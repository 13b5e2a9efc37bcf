//! The deadline table: every command deadline plus the handshake deadline, ordered by time.
//!
//! Like quinn-proto's timer table, it is the only place time is kept. The caller's clock only enters through
//! [`TimerTable::expired`]; calling it early, late or twice is harmless: only entries at or before `now` come
//! out, and each comes out once.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

/// What a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// The greeting and negotiation deadline.
    Handshake,
    /// The deadline of the command with this id.
    Command(u64),
}

/// Deadlines ordered by time, then by owner.
///
/// Deadlines mostly arrive in order (every command gets `now` plus the same timeout, and `now` does not go
/// back), and mostly end in order (replies come in order): those live in a sorted `VecDeque`, appended at the
/// back and removed from the front, with no allocation once it has its working size and no tree to walk. A
/// deadline earlier than the last one armed goes to a `BTreeSet` beside it. Either way the pair is ordered by
/// `(instant, owner)`, so the earliest is the smaller of their two fronts.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    /// Armed in order: sorted.
    in_order: VecDeque<(Instant, Timer)>,
    /// Armed out of order.
    others: BTreeSet<(Instant, Timer)>,
}

impl TimerTable {
    /// Arms a deadline. The caller keeps the instant to [`cancel`](Self::cancel) it later.
    pub(crate) fn set(&mut self, at: Instant, timer: Timer) {
        let entry = (at, timer);
        if self.in_order.back().is_none_or(|last| *last < entry) {
            self.in_order.push_back(entry);
        } else {
            self.others.insert(entry);
        }
    }

    /// Disarms a deadline that was set with the same instant.
    pub(crate) fn cancel(&mut self, at: Instant, timer: Timer) {
        let entry = (at, timer);
        if self.in_order.front() == Some(&entry) {
            self.in_order.pop_front();
        } else if let Ok(k) = self.in_order.binary_search(&entry) {
            self.in_order.remove(k);
        } else {
            self.others.remove(&entry);
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.earliest().map(|(at, _)| at)
    }

    /// The earliest entry.
    fn earliest(&self) -> Option<(Instant, Timer)> {
        match (self.in_order.front(), self.others.first()) {
            (Some(a), Some(b)) => Some(*a.min(b)),
            (a, b) => a.or(b).copied(),
        }
    }

    /// Removes and returns the earliest deadline at or before `now`.
    pub(crate) fn expired(&mut self, now: Instant) -> Option<Timer> {
        let (at, timer) = self.earliest().filter(|(at, _)| *at <= now)?;
        self.cancel(at, timer);
        Some(timer)
    }

    /// Disarms everything.
    pub(crate) fn clear(&mut self) {
        self.in_order.clear();
        self.others.clear();
    }

    /// Entries the in-order queue has room for (the set of others frees its nodes as they go).
    pub(crate) fn capacity(&self) -> usize {
        self.in_order.capacity()
    }

    /// Frees a queue a burst of commands left big, once it is empty.
    pub(crate) fn release_idle_memory(&mut self, keep: usize) {
        if self.in_order.is_empty() && self.in_order.capacity() > keep {
            self.in_order = VecDeque::new();
        }
    }

    /// Armed deadlines.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.in_order.len() + self.others.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    proptest! {
        /// Whatever deadlines are set and cancelled, and however often the clock is polled, every armed
        /// deadline fires exactly once, in time order, never before its instant.
        #[test]
        fn fires_each_once_in_order(
            ops in proptest::collection::vec((0u64..50, any::<bool>()), 0..60),
            polls in proptest::collection::vec(0u64..60, 0..20),
        ) {
            let base = Instant::now();
            let mut table = TimerTable::default();
            let mut armed = std::collections::BTreeMap::new();
            for (id, (ms, cancel)) in ops.into_iter().enumerate() {
                let (at, timer) = (base + Duration::from_millis(ms), Timer::Command(id as u64));
                table.set(at, timer);
                if cancel {
                    table.cancel(at, timer);
                } else {
                    armed.insert(timer, at);
                }
            }
            let mut fired = Vec::new();
            let mut polls = polls;
            polls.sort_unstable();
            polls.push(1000);
            for p in polls {
                let now = base + Duration::from_millis(p);
                while let Some(t) = table.expired(now) {
                    let at = armed[&t];
                    prop_assert!(at <= now);
                    fired.push((at, t));
                }
                if let Some(next) = table.next() { prop_assert!(next > now); }
            }
            let mut expected: Vec<_> = armed.into_iter().map(|(t, at)| (at, t)).collect();
            expected.sort();
            prop_assert_eq!(fired, expected);
            prop_assert_eq!(table.len(), 0);
        }

        /// Deadlines mostly in order (the queue) with some earlier ones (the tree), any of them cancelled later
        /// and ids reused: the table fires what a model set fires, in order, each once.
        #[test]
        fn matches_a_model_set(
            ops in proptest::collection::vec((0u64..4, any::<bool>(), proptest::option::of(any::<u8>())), 0..80),
            polls in proptest::collection::vec(0u64..300, 0..20),
        ) {
            let base = Instant::now();
            let mut table = TimerTable::default();
            let mut model = std::collections::BTreeSet::new();
            let mut last = 0;
            for (id, (step, earlier, cancel)) in ops.into_iter().enumerate() {
                let ms = if earlier { last / 2 } else { last + step };
                last = last.max(ms);
                let entry = (base + Duration::from_millis(ms), Timer::Command(id as u64 % 8));
                if model.insert(entry) {
                    table.set(entry.0, entry.1);
                }
                if let Some(pick) = cancel {
                    let victim = *model.iter().nth(usize::from(pick) % model.len()).unwrap();
                    model.remove(&victim);
                    table.cancel(victim.0, victim.1);
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert_eq!(table.next(), model.first().map(|e| e.0));
            }
            let mut polls = polls;
            polls.sort_unstable();
            for p in polls {
                let now = base + Duration::from_millis(p);
                while let Some(t) = table.expired(now) {
                    let first = model.pop_first().unwrap();
                    prop_assert_eq!(first.1, t);
                    prop_assert!(first.0 <= now);
                }
                prop_assert!(model.first().is_none_or(|e| e.0 > now));
            }
        }
    }
}
