//! [`IdPool`]: the wire ids of a client's requests. Each new request takes the smallest id not in use, so ids
//! stay as short as the number of requests alive at once allows (one digit up to 9 of them), however many
//! commands a connection has carried.
//!
//! QEMU reads its monitor one byte at a time and spends about 2.4 us of CPU per command byte: a 7-digit id, what
//! a counter reaches after a million commands, costs ~14 us more per command than a 1-digit one.
//!
//! An id is in use from the moment it is taken until the client releases it, which it does only once no reply
//! can carry it any more: the reply came, the command was never written, a `guest-sync-delimited` passed every
//! earlier reply, or the connection ended. A cancelled or timed-out command keeps its id until its late reply
//! arrives (see [`Client::abandoned`](crate::Client::abandoned)), so a reply is never routed to a newer command.

/// The set of wire ids in use, as a bitmap: bit `i` of word `w` is id `64 * w + i + 1` (ids start at 1). Its
/// size follows the largest id in use, bounded by the most requests the client lets live at once
/// ([`Config::max_pending`](crate::Config::max_pending) plus its own handshake request): 17 words by default.
#[derive(Debug, Default)]
pub(crate) struct IdPool {
    used: Vec<u64>,
}

impl IdPool {
    /// Takes the smallest id not in use.
    pub(crate) fn take(&mut self) -> u64 {
        for (w, word) in self.used.iter_mut().enumerate() {
            if *word != u64::MAX {
                let bit = word.trailing_ones();
                *word |= 1 << bit;
                return w as u64 * 64 + u64::from(bit) + 1;
            }
        }
        self.used.push(1);
        (self.used.len() as u64 - 1) * 64 + 1
    }

    /// Gives `id` back: the next [`take`](Self::take) may return it.
    pub(crate) fn release(&mut self, id: u64) {
        let Some(index) = id.checked_sub(1) else {
            return;
        };
        let (w, bit) = ((index / 64) as usize, index % 64);
        if let Some(word) = self.used.get_mut(w) {
            debug_assert!(*word & (1 << bit) != 0, "id {id} released twice");
            *word &= !(1 << bit);
        }
        // The first word stays: one command at a time then takes and gives back id 1 with no push or pop.
        while self.used.len() > 1 && self.used.last() == Some(&0) {
            self.used.pop();
        }
    }

    /// Gives every id back (the session ended).
    pub(crate) fn clear(&mut self) {
        self.used = Vec::new();
    }

    /// Ids in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.used.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// The requests of a client, by wire id: a vector indexed by `id - 1`. The [`IdPool`] keeps the ids small and
/// dense, so this is a table lookup where a hash map would hash and probe (several times per command); its
/// length follows the largest id in use (at least 1 once used), with the same bound.
#[derive(Debug)]
pub(crate) struct Slots<T> {
    slots: Vec<Option<T>>,
    len: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots { slots: Vec::new(), len: 0 }
    }
}

impl<T> Slots<T> {
    /// The index of `id`, when it can be one (ids start at 1).
    fn index(id: u64) -> Option<usize> {
        usize::try_from(id.checked_sub(1)?).ok()
    }

    /// The entry of `id`.
    pub(crate) fn get(&self, id: &u64) -> Option<&T> {
        self.slots.get(Self::index(*id)?)?.as_ref()
    }

    /// The entry of `id`, to change it.
    pub(crate) fn get_mut(&mut self, id: &u64) -> Option<&mut T> {
        self.slots.get_mut(Self::index(*id)?)?.as_mut()
    }

    /// Sets the entry of `id` (an id from the pool, so never 0 and never far past the others).
    pub(crate) fn insert(&mut self, id: u64, value: T) {
        let Some(k) = Self::index(id) else {
            return;
        };
        if k >= self.slots.len() {
            self.slots.resize_with(k + 1, || None);
        }
        if self.slots[k].replace(value).is_none() {
            self.len += 1;
        }
    }

    /// Takes the entry of `id` out.
    pub(crate) fn remove(&mut self, id: &u64) -> Option<T> {
        let value = self.slots.get_mut(Self::index(*id)?)?.take()?;
        self.len -= 1;
        // The first slot stays: one command at a time then reuses it, with no resizing.
        while self.slots.len() > 1 && matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        Some(value)
    }

    /// The entries, by id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.slots.iter().enumerate().filter_map(|(k, v)| Some((k as u64 + 1, v.as_ref()?)))
    }

    /// The entries.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    /// Entries in use.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries there is room for without allocating.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Removes every entry (keeps the memory).
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn takes_the_smallest_free_id() {
        let mut pool = IdPool::default();
        assert_eq!((1..=70).map(|_| pool.take()).collect::<Vec<_>>(), (1..=70).collect::<Vec<_>>());
        pool.release(3);
        pool.release(65);
        assert_eq!(pool.take(), 3);
        assert_eq!(pool.take(), 65);
        assert_eq!(pool.take(), 71);
        for id in 1..=71 {
            pool.release(id);
        }
        assert_eq!(pool.used, [0], "an empty pool keeps its first word only");
        assert_eq!(pool.take(), 1);
    }

    proptest! {
        /// Slots against a model map, ids taken from a pool: same entries; the vector ends at the largest id.
        #[test]
        fn slots_match_a_model(ops in proptest::collection::vec(any::<(bool, u8)>(), 0..300)) {
            let (mut pool, mut slots, mut model) = (IdPool::default(), Slots::default(), std::collections::BTreeMap::new());
            for (insert, pick) in ops {
                if insert || model.is_empty() {
                    let id = pool.take();
                    slots.insert(id, u32::from(pick));
                    model.insert(id, u32::from(pick));
                } else {
                    let id = *model.keys().nth(usize::from(pick) % model.len()).unwrap();
                    prop_assert_eq!(slots.remove(&id), model.remove(&id));
                    pool.release(id);
                    prop_assert_eq!(slots.remove(&id), None);
                }
                prop_assert_eq!(slots.len(), model.len());
                prop_assert_eq!(slots.iter().map(|(k, v)| (k, *v)).collect::<Vec<_>>(), model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
                // The largest id in use, and the first slot once there was one.
                prop_assert_eq!(slots.slots.len() as u64, model.keys().last().copied().unwrap_or(0).max(1));
                prop_assert_eq!(slots.get(&0), None);
                prop_assert_eq!(slots.get(&u64::MAX), None);
            }
        }

        /// Against a model set: every take returns the smallest id not in use, never one in use; the bitmap
        /// never grows past the largest id in use (its first word aside).
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(any::<(bool, u8)>(), 0..400)) {
            let (mut pool, mut model) = (IdPool::default(), BTreeSet::new());
            for (take, pick) in ops {
                if take || model.is_empty() {
                    let id = pool.take();
                    let smallest = (1..).find(|i| !model.contains(i)).unwrap();
                    prop_assert_eq!(id, smallest);
                    model.insert(id);
                } else {
                    let id = *model.iter().nth(usize::from(pick) % model.len()).unwrap();
                    model.remove(&id);
                    pool.release(id);
                }
                prop_assert_eq!(pool.len(), model.len());
                let max = model.last().copied().unwrap_or(0);
                prop_assert_eq!(pool.used.len() as u64, max.div_ceil(64).max(1));
            }
        }
    }
}
