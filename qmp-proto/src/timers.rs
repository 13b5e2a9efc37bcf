//! The deadline table: every command deadline plus the handshake deadline, ordered by time.
//!
//! Like quinn-proto's timer table, it is the only place time is kept. The caller's clock only enters through
//! [`TimerTable::expired`]; calling it early, late or twice is harmless: only entries at or before `now` come
//! out, and each comes out once.

use std::collections::BTreeSet;
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
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    entries: BTreeSet<(Instant, Timer)>,
}

impl TimerTable {
    /// Arms a deadline. The caller keeps the instant to [`cancel`](Self::cancel) it later.
    pub(crate) fn set(&mut self, at: Instant, timer: Timer) {
        self.entries.insert((at, timer));
    }

    /// Disarms a deadline that was set with the same instant.
    pub(crate) fn cancel(&mut self, at: Instant, timer: Timer) {
        self.entries.remove(&(at, timer));
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.entries.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest deadline at or before `now`.
    pub(crate) fn expired(&mut self, now: Instant) -> Option<Timer> {
        match self.entries.first() {
            Some(&(at, timer)) if at <= now => {
                self.entries.remove(&(at, timer));
                Some(timer)
            }
            _ => None,
        }
    }

    /// Disarms everything.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Armed deadlines.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
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
    }
}
