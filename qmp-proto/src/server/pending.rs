//! [`PendingTable`]: the commands handed to the caller and not answered yet, found by their [`Token`].
//!
//! Tokens are the server's own numbers, given in increasing order, so the table is a queue sorted by token:
//! a new command goes at the back, a lookup is a binary search, and answering in order (what nearly every
//! caller does: in-band commands are handed over one at a time) removes from the front. It holds few
//! entries: one in-band command and at most [`ServerConfig::max_queued_commands`](super::ServerConfig)
//! out-of-band ones (the server stops reading at that many).

use std::collections::VecDeque;

use super::short::ShortBytes;
use super::Token;

/// A command handed to the caller and not answered yet.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The bytes the reply echoes for the id, if the command had one.
    pub(crate) id: Option<ShortBytes>,
    pub(crate) oob: bool,
    pub(crate) silent_on_success: bool,
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
        Pending { id: None, oob: false, silent_on_success: false }
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
