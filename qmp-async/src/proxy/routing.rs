//! [`Router`]: the proxy's sans-IO routing table. Which client's command goes to QEMU next, and whose reply a
//! reply is.
//!
//! Every client has its own queue of commands waiting for QEMU. In-band commands share QEMU's in-band queue (a
//! window of [`QMP_REQ_QUEUE_LEN_MAX`] commands on the wire) **round-robin between clients**: a client that
//! floods commands gets one turn per round like everybody else. Out-of-band commands bypass the window, as they
//! bypass QEMU's queue. Each command sent upstream gets a [`Ticket`]; the reply to a ticket goes back to the
//! client and token it came from, and to no one else. A client that goes away is forgotten at once: its waiting
//! commands are dropped, and the replies of those already on the wire are swallowed when they come.
//!
//! No I/O, no clock, no locks: the async proxy drives it, tests and the fuzzer drive it by hand.
//!
//! ```
//! use qmp_async::proxy::Router;
//!
//! let mut router: Router<&str, &str> = Router::new(8);
//! let (a, b) = (router.add_client(), router.add_client());
//! router.submit(a, "a1", false, "query-status");
//! router.submit(a, "a2", false, "query-version");
//! router.submit(b, "b1", false, "query-block");
//! let first = router.poll_dispatch().unwrap();
//! let second = router.poll_dispatch().unwrap();
//! assert_eq!((first.payload, second.payload), ("query-status", "query-block")); // a, then b: round-robin
//! assert_eq!(router.complete(second.ticket), Some((b, "b1")));
//! router.remove_client(a);
//! assert_eq!(router.complete(first.ticket), None); // a is gone: its late reply is swallowed
//! ```

use std::collections::{HashMap, VecDeque};

pub use qmp_proto::server::QMP_REQ_QUEUE_LEN_MAX;

/// A client of the proxy, as the router knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

impl ClientId {
    /// The number, for logs (unique for the router's lifetime).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// One command sent upstream, to route its reply back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

/// A command the router releases to QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch<P> {
    /// Pass it to [`Router::complete`] when QEMU answers.
    pub ticket: Ticket,
    /// The client it came from.
    pub client: ClientId,
    /// Out of band: it did not take a place in the in-band window.
    pub oob: bool,
    /// What the caller submitted (the command).
    pub payload: P,
}

#[derive(Debug)]
struct Waiting<T, P> {
    token: T,
    payload: P,
}

#[derive(Debug)]
struct Client<T, P> {
    in_band: VecDeque<Waiting<T, P>>,
}

#[derive(Debug, Clone, Copy)]
struct OnTheWire<T> {
    /// `None` once the client has gone: the reply is swallowed.
    client: Option<(ClientId, T)>,
    oob: bool,
}

/// The proxy's routing table and scheduler. `T` is the client-side token of a command (what its session needs
/// to answer it), `P` the command itself. See the [module docs](self).
#[derive(Debug)]
pub struct Router<T, P> {
    window: usize,
    clients: HashMap<ClientId, Client<T, P>>,
    /// Clients with in-band commands waiting, in turn order; each appears at most once.
    turns: VecDeque<ClientId>,
    /// Out-of-band commands, in arrival order: they go at once.
    oob: VecDeque<(ClientId, Waiting<T, P>)>,
    wire: HashMap<Ticket, OnTheWire<T>>,
    in_band_on_wire: usize,
    next_client: u64,
    next_ticket: u64,
}

impl<T: Copy, P> Router<T, P> {
    /// A router that keeps at most `window` in-band commands on the wire (at least 1; QEMU's queue holds
    /// [`QMP_REQ_QUEUE_LEN_MAX`]).
    pub fn new(window: usize) -> Self {
        Router {
            window: window.max(1),
            clients: HashMap::new(),
            turns: VecDeque::new(),
            oob: VecDeque::new(),
            wire: HashMap::new(),
            in_band_on_wire: 0,
            next_client: 0,
            next_ticket: 0,
        }
    }

    /// Registers a new client.
    pub fn add_client(&mut self) -> ClientId {
        self.next_client += 1;
        let id = ClientId(self.next_client);
        self.clients.insert(id, Client { in_band: VecDeque::new() });
        id
    }

    /// Forgets `client`: its waiting commands are dropped (returned, so that their resources can be released),
    /// and replies to its commands on the wire will be swallowed.
    pub fn remove_client(&mut self, client: ClientId) -> Vec<P> {
        let mut dropped = Vec::new();
        if let Some(state) = self.clients.remove(&client) {
            dropped.extend(state.in_band.into_iter().map(|w| w.payload));
        }
        self.turns.retain(|c| *c != client);
        let (mine, others): (VecDeque<_>, VecDeque<_>) = self.oob.drain(..).partition(|(c, _)| *c == client);
        self.oob = others;
        dropped.extend(mine.into_iter().map(|(_, w)| w.payload));
        for entry in self.wire.values_mut() {
            if matches!(entry.client, Some((c, _)) if c == client) {
                entry.client = None;
            }
        }
        dropped
    }

    /// True while `client` is registered.
    pub fn has_client(&self, client: ClientId) -> bool {
        self.clients.contains_key(&client)
    }

    /// Clients registered.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Queues a command of `client` (`token` identifies it to the client's session). Returns false, and drops
    /// nothing, when the client is not registered (gone already).
    pub fn submit(&mut self, client: ClientId, token: T, oob: bool, payload: P) -> bool {
        let Some(state) = self.clients.get_mut(&client) else { return false };
        let waiting = Waiting { token, payload };
        if oob {
            self.oob.push_back((client, waiting));
        } else {
            if state.in_band.is_empty() {
                self.turns.push_back(client);
            }
            state.in_band.push_back(waiting);
        }
        true
    }

    /// The next command to send upstream: any out-of-band command first, then the next client's in-band
    /// command in turn while the window has room. Call it until it returns `None` after every change.
    pub fn poll_dispatch(&mut self) -> Option<Dispatch<P>> {
        if let Some((client, waiting)) = self.oob.pop_front() {
            return Some(self.put_on_wire(client, waiting, true));
        }
        if self.in_band_on_wire >= self.window {
            return None;
        }
        let client = self.turns.pop_front()?;
        let state = self.clients.get_mut(&client).expect("a client with a turn is registered");
        let waiting = state.in_band.pop_front().expect("a client with a turn has a command waiting");
        if !state.in_band.is_empty() {
            self.turns.push_back(client);
        }
        self.in_band_on_wire += 1;
        Some(self.put_on_wire(client, waiting, false))
    }

    fn put_on_wire(&mut self, client: ClientId, waiting: Waiting<T, P>, oob: bool) -> Dispatch<P> {
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        self.wire.insert(ticket, OnTheWire { client: Some((client, waiting.token)), oob });
        Dispatch { ticket, client, oob, payload: waiting.payload }
    }

    /// QEMU answered `ticket` (or the command ended otherwise): whose reply it is, or `None` when its client
    /// has gone (swallow it) or the ticket is unknown. Frees its place in the window.
    pub fn complete(&mut self, ticket: Ticket) -> Option<(ClientId, T)> {
        let entry = self.wire.remove(&ticket)?;
        if !entry.oob {
            self.in_band_on_wire -= 1;
        }
        entry.client
    }

    /// Commands sent upstream and not completed (in-band and out-of-band).
    pub fn on_the_wire(&self) -> usize {
        self.wire.len()
    }

    /// In-band commands sent upstream and not completed (at most the window).
    pub fn in_band_on_the_wire(&self) -> usize {
        self.in_band_on_wire
    }

    /// Commands waiting for their turn.
    pub fn waiting(&self) -> usize {
        self.oob.len() + self.clients.values().map(|c| c.in_band.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(router: &mut Router<u32, (u64, u32)>) -> Vec<Dispatch<(u64, u32)>> {
        std::iter::from_fn(|| router.poll_dispatch()).collect()
    }

    #[test]
    fn a_flooding_client_gets_one_turn_per_round() {
        let mut router = Router::new(2);
        let (a, b, c) = (router.add_client(), router.add_client(), router.add_client());
        for n in 0..100 {
            router.submit(a, n, false, (a.get(), n));
        }
        router.submit(b, 0, false, (b.get(), 0));
        router.submit(c, 0, false, (c.get(), 0));
        let mut order = Vec::new();
        for _ in 0..6 {
            let sent = drain(&mut router);
            assert!(router.in_band_on_the_wire() <= 2);
            for d in sent {
                order.push(d.client);
                assert_eq!(router.complete(d.ticket).map(|(c, _)| c), Some(d.client));
            }
        }
        assert_eq!(&order[..4], &[a, b, c, a], "round-robin, not first come first served");
    }

    #[test]
    fn oob_bypasses_a_full_window() {
        let mut router = Router::new(1);
        let a = router.add_client();
        router.submit(a, 1, false, (1, 1));
        router.submit(a, 2, false, (1, 2));
        assert_eq!(drain(&mut router).len(), 1);
        router.submit(a, 3, true, (1, 3));
        let sent = drain(&mut router);
        assert_eq!(sent.len(), 1);
        assert!(sent[0].oob);
        assert_eq!(router.complete(sent[0].ticket), Some((a, 3)));
        assert!(router.poll_dispatch().is_none(), "the window is still full");
    }

    #[test]
    fn replies_of_a_gone_client_are_swallowed_and_free_the_window() {
        let mut router = Router::new(1);
        let (a, b) = (router.add_client(), router.add_client());
        router.submit(a, 1, false, (1, 1));
        router.submit(a, 2, false, (1, 2));
        router.submit(b, 7, false, (2, 7));
        let first = router.poll_dispatch().expect("a's first");
        assert_eq!(router.remove_client(a), vec![(1, 2)]);
        assert!(!router.submit(a, 3, false, (1, 3)));
        assert!(router.poll_dispatch().is_none());
        assert_eq!(router.complete(first.ticket), None);
        assert_eq!(router.complete(first.ticket), None, "a ticket completes once");
        let next = router.poll_dispatch().expect("b's turn");
        assert_eq!(router.complete(next.ticket), Some((b, 7)));
        assert_eq!((router.on_the_wire(), router.waiting()), (0, 0));
    }
}
