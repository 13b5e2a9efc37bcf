//! [`PendingTable`]: the commands handed to the caller and not answered yet, found by their [`Token`].
//!
//! Tokens are the server's own numbers, given in increasing order, so the table is a queue sorted by token:
//! a new command goes at the back, a lookup is a binary search, and answering in order (what nearly every
//! caller does: in-band commands are handed over one at a time) removes from the front. It holds few
//! entries: one in-band command and at most [`ServerConfig::max_queued_commands`](super::ServerConfig)
//! out-of-band ones (the server stops reading at that many).

use std::collections::VecDeque;

use super::response::Id;
use super::Token;

/// A command handed to the caller and not answered yet.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The id as the reply echoes it.
    pub(crate) id: Echo,
    pub(crate) oob: bool,
    pub(crate) silent_on_success: bool,
}

/// Bytes an id kept until its reply: up to 16 in one 128-bit word (the common ids: copied from the input with
/// one load and one store, and moved whole, not byte by byte), longer ones on the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Echo {
    /// The command had no id.
    None,
    /// The bytes, little-endian in the word; the bytes past `len` are zero.
    Short {
        word: u128,
        len: u8,
    },
    Long(Box<[u8]>),
}

/// Bytes an [`Echo`] keeps in its word.
const SHORT: usize = 16;

impl Echo {
    /// The id's bytes, or none.
    pub(crate) fn new(bytes: Option<&[u8]>) -> Echo {
        match bytes {
            None => Echo::None,
            Some(bytes) if bytes.len() <= SHORT => {
                let mut word = [0; SHORT];
                word[..bytes.len()].copy_from_slice(bytes);
                Echo::Short { word: u128::from_le_bytes(word), len: bytes.len() as u8 }
            }
            Some(bytes) => Echo::Long(bytes.into()),
        }
    }

    /// `text[start..end]`, read as one 128-bit word when `text` has 16 bytes from `start`.
    pub(crate) fn from_range(text: &[u8], start: usize, end: usize) -> Echo {
        let len = end - start;
        match text.get(start..start + SHORT).and_then(|window| <[u8; SHORT]>::try_from(window).ok()) {
            Some(window) if len <= SHORT => {
                // The bytes past the id are not kept.
                let mask = u128::MAX.checked_shr(8 * (SHORT - len) as u32).unwrap_or(0);
                Echo::Short { word: u128::from_le_bytes(window) & mask, len: len as u8 }
            }
            _ => Echo::new(Some(&text[start..end])),
        }
    }

    /// The id, `None` without one.
    pub(crate) fn as_id(&self) -> Option<&Echo> {
        (*self != Echo::None).then_some(self)
    }

    /// The bytes, `None` without an id.
    #[cfg(test)]
    fn to_vec(&self) -> Option<Vec<u8>> {
        self.as_id().map(|id| {
            let mut out = Vec::new();
            id.append_to(&mut out);
            out
        })
    }
}

impl Id for &Echo {
    fn append_to(&self, out: &mut Vec<u8>) {
        match self {
            Echo::None => {}
            Echo::Short { word, len } => {
                // All sixteen bytes, then the ones past the id cut: a copy of a fixed size (no call).
                let end = out.len() + usize::from(*len);
                out.extend_from_slice(&word.to_le_bytes());
                out.truncate(end);
            }
            Echo::Long(bytes) => out.extend_from_slice(bytes),
        }
    }
}

/// The commands waiting for a reply. See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct PendingTable {
    /// Sorted by token.
    entries: VecDeque<(Token, Pending)>,
}

impl PendingTable {
    /// Adds a command whose token is greater than every token added before.
    pub(crate) fn insert(&mut self, token: Token, pending: Pending) {
        debug_assert!(self.entries.back().is_none_or(|(last, _)| *last < token), "tokens increase");
        self.entries.push_back((token, pending));
    }

    fn find(&self, token: Token) -> Option<usize> {
        self.entries.binary_search_by_key(&token, |(t, _)| *t).ok()
    }

    pub(crate) fn contains(&self, token: Token) -> bool {
        self.find(token).is_some()
    }

    pub(crate) fn remove(&mut self, token: Token) -> Option<Pending> {
        // Answers come in order, nearly always: the oldest first.
        if self.entries.front().is_some_and(|(first, _)| *first == token) {
            return self.entries.pop_front().map(|(_, pending)| pending);
        }
        let at = self.find(token)?;
        self.entries.remove(at).map(|(_, pending)| pending)
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        Pending { id: Echo::None, oob: false, silent_on_success: false }
    }

    #[test]
    fn ids_read_back_whatever_their_length_and_place() {
        assert_eq!(Echo::new(None).to_vec(), None);
        for len in [0, 1, 15, SHORT, SHORT + 1, 100] {
            let id: Vec<u8> = (1..=len).map(|i| i as u8).collect();
            let kept = Echo::new(Some(&id));
            assert_eq!(kept.to_vec().as_deref(), Some(&id[..]));
            assert_eq!(matches!(kept, Echo::Short { .. }), len <= SHORT);
            let padded = [b"x".as_slice(), &id, &[7; 40]].concat();
            assert_eq!(Echo::from_range(&padded, 1, 1 + len), kept, "from a window");
            assert_eq!(Echo::from_range(&id, 0, len), kept, "without bytes to spare");
        }
    }

    #[test]
    fn commands_are_found_and_removed_in_any_order() {
        let mut table = PendingTable::default();
        for n in 1..=5 {
            table.insert(Token(n), pending());
        }
        assert!(table.remove(Token(3)).is_some());
        assert!(!table.contains(Token(3)));
        assert!(table.remove(Token(3)).is_none(), "answered once");
        assert!(table.remove(Token(1)).is_some());
        assert!(table.contains(Token(5)) && table.contains(Token(2)) && !table.contains(Token(6)));
        table.clear();
        assert!(!table.contains(Token(2)));
    }
}
