//! Random operation sequences against a fake server, checking the client's invariants after every step:
//!
//! - `in_flight() <= max_in_flight`, and it equals the in-band commands the server holds unanswered (QMP; in
//!   guest-agent mode, those sent since the last resync);
//! - every request ends exactly once (`Reply`, `TimedOut`, `Failed`, a successful `cancel`, or `Closed`), and
//!   `pending()` counts exactly the requests not ended; a written command answered only on failure ends with
//!   its error, at its deadline (as a success) or, as a success before `Closed`, at EOF;
//! - a command cancelled or timed out while queued is never transmitted; no command is transmitted twice;
//! - every server event or violation is delivered or counted in `EventsDropped` (QMP);
//! - `Closed` comes once and nothing follows it; later calls fail with the same sticky cause.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{err, event, greeting, idless_err, ret, Driver, Ev};
use proptest::prelude::*;
use qmp_proto::{Config, ConnectionError, ExecuteOptions, Mode, UsageError};

#[derive(Debug, Clone)]
enum Op {
    Execute {
        deadline: Option<u64>,
    },
    ExecuteOob {
        deadline: Option<u64>,
    },
    ExecuteNoReply {
        deadline: Option<u64>,
    },
    /// The server reports the failure of one of the written commands answered only on failure.
    FailSilent(usize),
    GuestSync {
        deadline: Option<u64>,
    },
    Cancel(usize),
    /// The server answers one of the commands it holds, fed in two pieces cut at `cut`.
    Reply {
        pick: usize,
        error: bool,
        cut: usize,
    },
    /// A guest-agent resync reply with the wrong nonce.
    StaleSync(usize),
    /// A reply to an id already answered.
    DuplicateReply(usize),
    Greet,
    Events(usize),
    IdlessError,
    Garbage,
    Advance(u64),
    SpuriousTimeout,
    Eof,
    EofMidMessage,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    let deadline = prop::option::weighted(0.4, 1u64..3_000);
    prop_oneof![
        6 => deadline.clone().prop_map(|deadline| Op::Execute { deadline }),
        2 => deadline.clone().prop_map(|deadline| Op::ExecuteOob { deadline }),
        1 => deadline.clone().prop_map(|deadline| Op::ExecuteNoReply { deadline }),
        1 => any::<usize>().prop_map(Op::FailSilent),
        1 => deadline.prop_map(|deadline| Op::GuestSync { deadline }),
        2 => any::<usize>().prop_map(Op::Cancel),
        10 => (any::<usize>(), prop::bool::weighted(0.15), any::<usize>())
            .prop_map(|(pick, error, cut)| Op::Reply { pick, error, cut }),
        1 => any::<usize>().prop_map(Op::StaleSync),
        1 => any::<usize>().prop_map(Op::DuplicateReply),
        2 => Just(Op::Greet),
        2 => (1usize..8).prop_map(Op::Events),
        1 => Just(Op::IdlessError),
        1 => Just(Op::Garbage),
        3 => (0u64..2_000).prop_map(Op::Advance),
        1 => Just(Op::SpuriousTimeout),
    ]
}

/// Sequences of `op()`, with at most one way of ending the session inserted somewhere (operations after it
/// check that nothing happens after `Closed`).
fn ops() -> impl Strategy<Value = Vec<Op>> {
    let end = prop::option::weighted(
        0.5,
        (any::<usize>(), prop_oneof![Just(Op::Eof), Just(Op::EofMidMessage), Just(Op::Close)]),
    );
    (prop::collection::vec(op(), 0..80), end).prop_map(|(mut ops, end)| {
        if let Some((at, op)) = end {
            ops.insert(at % (ops.len() + 1), op);
        }
        ops
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// Issued, not ended.
    Open,
    Ended,
}

/// A command the fake server received and has not answered.
#[derive(Debug, Clone)]
struct Held {
    id: u64,
    oob: bool,
    /// `guest-sync-delimited`'s nonce.
    nonce: Option<u64>,
    /// Sent before the latest resync: the agent answers it before the sync's marker.
    stale: bool,
}

struct Model {
    d: Driver,
    mode: Mode,
    max_in_flight: usize,
    offer_oob: bool,
    greeted: bool,
    max_pending: usize,
    /// Requests issued by the test, by wire id: the life of the latest request with that id (ids are reused).
    life: HashMap<u64, Life>,
    /// Issued requests in order, for picking.
    issued: Vec<qmp_proto::RequestId>,
    /// The latest `RequestId` with each wire id.
    ids: HashMap<u64, qmp_proto::RequestId>,
    /// Ids of `guest_sync` requests.
    syncs: Vec<u64>,
    /// Ids ended before they were transmitted (cancelled or timed out in the queue).
    ended_unsent: Vec<u64>,
    transmitted: HashMap<u64, usize>,
    held: Vec<Held>,
    answered: Vec<u64>,
    /// Commands answered only on failure that were written, with their deadline (ms of virtual time).
    silent: Vec<(u64, Option<std::time::Instant>)>,
    /// Commands answered only on failure, by id, with their deadline.
    silent_issued: HashMap<u64, Option<std::time::Instant>>,
    /// Events processed so far in `d.log`, commands processed so far in `d.sent`.
    log_seen: usize,
    sent_seen: usize,
    closed: Option<ConnectionError>,
    /// Server events and violations produced while the session could report them.
    reports_expected: u64,
    reports_seen: u64,
}

impl Model {
    fn new(mode: Mode, max_in_flight: usize, max_pending: usize, max_events: usize, offer_oob: bool) -> Self {
        Self::with_sync(mode, max_in_flight, max_pending, max_events, offer_oob, false)
    }

    /// `sync_on_connect`: guest-agent mode starts with the client's own sync (nonce 999, id 1, 20 s deadline).
    fn with_sync(
        mode: Mode,
        max_in_flight: usize,
        max_pending: usize,
        max_events: usize,
        offer_oob: bool,
        sync_on_connect: bool,
    ) -> Self {
        let base = match mode {
            Mode::Qmp => Config::qmp().handshake_timeout(Some(Duration::from_secs(20))),
            Mode::GuestAgent if sync_on_connect => {
                Config::guest_agent().sync_on_connect(999).handshake_timeout(Some(Duration::from_secs(20)))
            }
            Mode::GuestAgent => Config::guest_agent(),
        };
        let config = base.max_in_flight(max_in_flight).max_pending(max_pending).max_queued_events(max_events);
        let mut m = Model {
            d: Driver::new(config),
            mode,
            max_in_flight,
            max_pending,
            offer_oob,
            greeted: false,
            life: HashMap::new(),
            issued: Vec::new(),
            ids: HashMap::new(),
            syncs: Vec::new(),
            ended_unsent: Vec::new(),
            transmitted: HashMap::new(),
            held: Vec::new(),
            answered: Vec::new(),
            silent: Vec::new(),
            silent_issued: HashMap::new(),
            log_seen: 0,
            sent_seen: 0,
            closed: None,
            reports_expected: 0,
            reports_seen: 0,
        };
        m.observe();
        m
    }

    fn can_report(&self) -> bool {
        self.closed.is_none() && (self.mode == Mode::GuestAgent || self.greeted)
    }

    /// Processes what the driver recorded since the last call, checking every invariant.
    fn observe(&mut self) {
        // Commands transmitted.
        let new_sent: Vec<_> = self.d.sent[self.sent_seen..].to_vec();
        self.sent_seen = self.d.sent.len();
        // Commands on the wire when a resync went out; checked once this step's events are known.
        let mut before_resync = Vec::new();
        for cmd in new_sent {
            assert!(self.closed.is_none(), "transmitted after Closed: {cmd:?}");
            if cmd.name == "qmp_capabilities" {
                // The client's own request: it takes the smallest free id when the greeting comes.
                assert_ne!(self.life.get(&cmd.id), Some(&Life::Open), "qmp_capabilities took a live id");
                self.transmitted.remove(&cmd.id);
                self.ended_unsent.retain(|&x| x != cmd.id);
                self.answered.retain(|&x| x != cmd.id);
                self.life.insert(cmd.id, Life::Ended); // not the test's: no event ends it
            }
            let n = self.transmitted.entry(cmd.id).or_insert(0);
            *n += 1;
            assert_eq!(*n, 1, "command {} transmitted twice", cmd.id);
            assert!(!self.ended_unsent.contains(&cmd.id), "command {} transmitted after it ended in the queue", cmd.id);
            if cmd.name == "qmp_capabilities" {
                assert_eq!(self.mode, Mode::Qmp);
            } else if cmd.name == "guest-sync-delimited" && cmd.id == 1 && !self.life.contains_key(&1) {
                assert_eq!(self.mode, Mode::GuestAgent, "the connect-time sync");
            } else {
                assert!(self.life.contains_key(&cmd.id), "transmitted an id never issued: {cmd:?}");
            }
            let nonce = (cmd.name == "guest-sync-delimited").then(|| {
                assert!(cmd.after_ff, "guest-sync-delimited without its 0xFF");
                cmd.args.as_ref().and_then(|a| a["id"].as_u64()).expect("nonce")
            });
            if nonce.is_some() {
                before_resync.extend(self.held.iter().filter(|h| !h.stale && !h.oob).map(|h| h.id));
                self.held.iter_mut().for_each(|h| h.stale = true);
            }
            let no_reply = ["guest-shutdown", "quit-no-reply"].contains(&cmd.name.as_str());
            if no_reply {
                self.silent.push((cmd.id, self.silent_issued[&cmd.id]));
            } else {
                self.held.push(Held { id: cmd.id, oob: cmd.oob, nonce, stale: false });
            }
        }
        // Events.
        let new_events: Vec<Ev> = self.d.log[self.log_seen..].to_vec();
        self.log_seen = self.d.log.len();
        for ev in new_events {
            assert!(self.closed.is_none(), "event after Closed: {ev:?}");
            if let Some(id) = ev.ends() {
                let life = self.life.get_mut(&id).unwrap_or_else(|| panic!("{ev:?} for an id never issued"));
                assert_eq!(*life, Life::Open, "request {id} ended twice: {ev:?}");
                *life = Life::Ended;
                if let Some(at) = self.silent.iter().position(|(s, _)| *s == id) {
                    // Written and answered only on failure: an error, or a success at its deadline or EOF.
                    let (_, deadline) = self.silent.remove(at);
                    assert!(!matches!(ev, Ev::TimedOut { .. }), "written silent command {id} timed out");
                    if let Ev::ReplyOk { raw, .. } = &ev {
                        assert_eq!(raw, "{}");
                        let at_deadline = deadline.is_some_and(|d| d <= self.d.now);
                        let eof = self.d.client.is_closed();
                        assert!(at_deadline || eof, "silent command {id} succeeded before its deadline or EOF");
                    }
                }
                if matches!(ev, Ev::TimedOut { .. }) && !self.transmitted.contains_key(&id) {
                    self.ended_unsent.push(id);
                }
                continue;
            }
            match ev {
                Ev::Closed(cause) => {
                    if matches!(cause, ConnectionError::Eof | ConnectionError::EofMidMessage { .. }) {
                        let open: Vec<_> = self.silent.iter().filter(|(id, _)| self.life[id] == Life::Open).collect();
                        assert!(open.is_empty(), "silent commands {open:?} not ended before EOF closed");
                    }
                    for life in self.life.values_mut() {
                        *life = Life::Ended;
                    }
                    self.closed = Some(cause);
                }
                Ev::EventsDropped { count } => {
                    assert!(count > 0);
                    self.reports_seen += count;
                }
                Ev::Event { .. }
                | Ev::UnknownId { .. }
                | Ev::IdlessReply { .. }
                | Ev::IdlessError { .. }
                | Ev::NotJson { .. }
                | Ev::UnknownShape { .. }
                | Ev::UnexpectedGreeting
                | Ev::Oversized { .. }
                | Ev::Truncated { .. } => self.reports_seen += 1,
                Ev::Greeting { .. } | Ev::Ready { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        // A resync waits for every command on the wire, except those the client gave up on.
        for id in before_resync {
            assert_eq!(self.life.get(&id), Some(&Life::Ended), "a resync went out while {id} was on the wire");
        }
        // Invariants.
        let c = &self.d.client;
        assert!(c.in_flight() <= self.max_in_flight, "in_flight {} over {}", c.in_flight(), self.max_in_flight);
        let open = self.life.values().filter(|l| **l == Life::Open).count();
        assert_eq!(c.pending(), open, "pending() vs requests not ended");
        if self.closed.is_none() {
            let on_wire = self.held.iter().filter(|h| !h.oob && !h.stale).count();
            assert_eq!(c.in_flight(), on_wire, "in_flight() vs what the server holds: {:?}", self.held);
            assert!(on_wire <= self.max_in_flight);
            if self.mode == Mode::Qmp {
                assert_eq!(self.reports_seen, self.reports_expected, "reports delivered or counted as dropped");
            }
            self.check_progress();
        } else {
            assert!(c.is_closed());
            assert_eq!(c.in_flight(), 0);
            assert_eq!(c.poll_timeout(), None);
            assert_eq!(c.connection_error(), self.closed.as_ref());
        }
    }

    /// Liveness: a command waits in the queue only for a reason (not ready, no free slot, a resync on the wire,
    /// or, for a resync, a live command on the wire).
    fn check_progress(&self) {
        let c = &self.d.client;
        let current = |rid: &&qmp_proto::RequestId| self.ids.get(&rid.as_u64()) == Some(*rid);
        let Some(head) = self
            .issued
            .iter()
            .filter(current)
            .map(|rid| rid.as_u64())
            .find(|id| self.life[id] == Life::Open && !self.transmitted.contains_key(id))
        else {
            return;
        };
        if !c.is_ready() || c.in_flight() >= self.max_in_flight {
            return;
        }
        let open_on_wire = |sync: bool| {
            self.held
                .iter()
                .any(|h| !h.oob && self.life.get(&h.id) == Some(&Life::Open) && (!sync || h.nonce.is_some()))
        };
        if open_on_wire(true) {
            return; // a resync runs alone
        }
        if self.syncs.contains(&head) && open_on_wire(false) {
            return; // a resync waits for an empty pipe
        }
        panic!("command {head} waits for nothing: in_flight {}, held {:?}", c.in_flight(), self.held);
    }

    fn issue(&mut self, result: Result<qmp_proto::RequestId, UsageError>, oob: bool) {
        match &result {
            Ok(id) => {
                let id = *id;
                assert!(self.closed.is_none());
                assert!(self.issued.last().is_none_or(|last| *last < id), "request ids increase");
                self.life.insert(id.as_u64(), Life::Open);
                self.issued.push(id);
                self.ids.insert(id.as_u64(), id);
            }
            Err(UsageError::Closed(cause)) => assert_eq!(Some(cause), self.closed.as_ref(), "sticky cause"),
            Err(UsageError::QueueFull { limit }) => {
                // Full means every place is taken, by a live request or by an abandoned one awaiting its reply.
                assert_eq!(self.d.client.pending() + self.d.client.abandoned(), *limit);
            }
            Err(UsageError::OobNotNegotiated) => assert!(oob && !self.d.client.oob_enabled()),
            Err(UsageError::OobInGuestAgentMode) => assert!(oob && self.mode == Mode::GuestAgent),
            Err(UsageError::NotGuestAgent) => assert_eq!(self.mode, Mode::Qmp),
            Err(e) => panic!("unexpected {e:?}"),
        }
        let before = self.d.wire.len();
        self.d.pump();
        if let Err(UsageError::OobNotNegotiated) = result {
            assert_eq!(self.d.wire.len(), before, "a refused OOB command transmitted something");
        }
        self.observe();
    }

    /// A request took wire id `id.as_u64()`: checks that no reply can still carry it, and forgets what the
    /// model knew about the id's earlier lives.
    fn new_life(&mut self, id: qmp_proto::RequestId) {
        let wire = id.as_u64();
        assert_ne!(self.life.get(&wire), Some(&Life::Open), "id {wire} taken while a live request has it");
        // The server still holds an abandoned command with that id (unless a resync passed it): its reply would
        // be taken for the new command's.
        let held = self.held.iter().any(|h| h.id == wire && !h.stale);
        assert!(!held, "id {wire} taken while the server may still answer it: {:?}", self.held);
        // The smallest free id: at most every place taken, plus the client's own handshake request.
        assert!(wire as usize <= self.max_pending + 2, "id {wire} is not the smallest free one");
        self.held.retain(|h| h.id != wire); // answered before a resync's marker, discarded
        self.transmitted.remove(&wire);
        self.ended_unsent.retain(|&x| x != wire);
        self.answered.retain(|&x| x != wire);
        self.silent.retain(|(x, _)| *x != wire);
        self.silent_issued.remove(&wire);
        self.syncs.retain(|&x| x != wire);
    }

    fn feed(&mut self, bytes: &[u8], cut: Option<usize>) {
        let at = cut.map_or(bytes.len(), |c| c % (bytes.len() + 1));
        self.d.input(&bytes[..at]);
        self.d.input(&bytes[at..]);
        self.observe();
    }

    fn deadline(&self, ms: Option<u64>) -> ExecuteOptions {
        ExecuteOptions::new().deadline_opt(ms.map(|ms| self.d.now + Duration::from_millis(ms)))
    }

    fn apply(&mut self, op: &Op) {
        let reportable = self.can_report();
        match op {
            Op::Execute { deadline } => {
                let r = self.d.client.execute("query-status", None::<&()>, self.deadline(*deadline));
                if let Ok(id) = r {
                    self.new_life(id);
                }
                self.issue(r, false);
            }
            Op::ExecuteOob { deadline } => {
                let r = self.d.client.execute("query-yank", None::<&()>, self.deadline(*deadline).oob());
                if let Ok(id) = r {
                    self.new_life(id);
                }
                self.issue(r, true);
            }
            Op::ExecuteNoReply { deadline } => {
                let opts = self.deadline(*deadline);
                let (name, opts) = match self.mode {
                    Mode::GuestAgent => ("guest-shutdown", opts),
                    Mode::Qmp => ("quit-no-reply", opts.expect_reply(false)),
                };
                let r = self.d.client.execute(name, None::<&()>, opts);
                if let Ok(id) = &r {
                    self.new_life(*id);
                    self.silent_issued.insert(id.as_u64(), opts.get_deadline());
                }
                self.issue(r, false);
            }
            Op::FailSilent(ix) => {
                let open: Vec<u64> =
                    self.silent.iter().map(|(id, _)| *id).filter(|id| self.life[id] == Life::Open).collect();
                if open.is_empty() {
                    return;
                }
                let id = open[ix % open.len()];
                self.feed(err(id, "GenericError", "no shutdown").as_bytes(), None);
                assert_eq!(self.life[&id], Life::Ended, "the error ended silent command {id}");
            }
            Op::GuestSync { deadline } => {
                let nonce = 1000 + self.issued.len() as u32;
                let r = self.d.client.guest_sync(nonce, self.deadline(*deadline));
                if let Ok(id) = &r {
                    self.new_life(*id);
                    self.syncs.push(id.as_u64());
                }
                self.issue(r, false);
            }
            Op::Cancel(ix) => {
                if self.issued.is_empty() {
                    return;
                }
                let rid = self.issued[ix % self.issued.len()];
                let id = rid.as_u64();
                let was_open = self.life[&id] == Life::Open && self.ids[&id] == rid;
                let cancelled = self.d.client.cancel(rid);
                assert_eq!(cancelled, was_open, "cancel({id}) returns whether the request was still open");
                if cancelled {
                    self.life.insert(id, Life::Ended);
                    if !self.transmitted.contains_key(&id) {
                        self.ended_unsent.push(id);
                    }
                }
                self.d.pump();
                self.observe();
            }
            Op::Reply { pick, error, cut } => {
                if self.held.is_empty() {
                    return;
                }
                let h = self.held.remove(pick % self.held.len());
                self.answered.push(h.id);
                let bytes = match (h.nonce, self.mode) {
                    (Some(nonce), _) => {
                        let mut b = idless_err("JSON parse error, stray '\\uFFFD'").replace("\r\n", "\n").into_bytes();
                        b.push(0xFF);
                        b.extend_from_slice(format!("{{\"return\": {nonce}, \"id\": {}}}\n", h.id).as_bytes());
                        b
                    }
                    (None, _) if *error => err(h.id, "GenericError", "no").into_bytes(),
                    (None, _) => ret(h.id, "{}").into_bytes(),
                };
                // An id-less error from the agent during a resync is discarded; otherwise none is produced here.
                self.feed(&bytes, Some(*cut));
            }
            Op::StaleSync(ix) => {
                // Only while the sync is live: a reply with its id is its answer once the client gave up on it.
                // The connect-time sync is not the test's request: it is live until Ready.
                let live = |h: &&Held| self.life.get(&h.id).map_or(!self.d.client.is_ready(), |l| *l == Life::Open);
                let syncs: Vec<&Held> = self.held.iter().filter(|h| h.nonce.is_some()).filter(live).collect();
                if syncs.is_empty() {
                    return;
                }
                let h = syncs[ix % syncs.len()];
                let mut b = vec![0xFF];
                b.extend_from_slice(
                    format!("{{\"return\": {}, \"id\": {}}}\n", h.nonce.unwrap_or(0) + 7, h.id).as_bytes(),
                );
                self.feed(&b, None);
            }
            Op::DuplicateReply(ix) => {
                if self.answered.is_empty() || self.mode == Mode::GuestAgent {
                    return;
                }
                let id = self.answered[ix % self.answered.len()];
                if reportable {
                    self.reports_expected += 1;
                }
                self.feed(ret(id, "{}").as_bytes(), None);
            }
            Op::Greet => {
                if self.mode == Mode::GuestAgent {
                    return;
                }
                if self.greeted && reportable {
                    self.reports_expected += 1; // UnexpectedGreeting
                }
                self.greeted = true;
                let g = greeting(self.offer_oob);
                self.feed(g.as_bytes(), None);
            }
            Op::Events(n) => {
                if self.mode == Mode::GuestAgent {
                    return;
                }
                let bytes: String = (0..*n).map(|i| event("TICK", None, i as i64, 0)).collect();
                if reportable {
                    self.reports_expected += *n as u64;
                }
                self.feed(bytes.as_bytes(), None);
            }
            Op::IdlessError => {
                if self.mode == Mode::GuestAgent {
                    return; // it would be discarded during a resync
                }
                if reportable {
                    self.reports_expected += 1;
                }
                self.feed(idless_err("JSON parse error, stray").as_bytes(), None);
            }
            Op::Garbage => {
                if self.mode == Mode::GuestAgent {
                    return;
                }
                if reportable {
                    self.reports_expected += 1;
                }
                self.feed(b"{\"return\": {}, \"id\": inf}\r\n", None);
            }
            Op::Advance(ms) => {
                let to = self.d.now + Duration::from_millis(*ms);
                self.d.now = to;
                self.d.client.handle_timeout(to);
                self.d.pump();
                self.observe();
            }
            Op::SpuriousTimeout => {
                let now = self.d.now;
                self.d.client.handle_timeout(now);
                self.d.pump();
                self.observe();
            }
            Op::Eof => {
                self.d.eof();
                self.observe();
            }
            Op::EofMidMessage => {
                self.d.input(b"{\"return\": {\"x\": [1, ");
                self.d.eof();
                self.observe();
                if let Some(cause) = &self.closed {
                    assert!(
                        matches!(cause, ConnectionError::EofMidMessage { .. }) || self.d.log.len() == self.log_seen,
                        "{cause:?}"
                    );
                }
            }
            Op::Close => {
                self.d.client.close();
                self.d.pump();
                self.observe();
            }
        }
    }

    /// Ends the session and checks that every request ended exactly once.
    fn finish(mut self) {
        let was_closed = self.closed.clone();
        self.d.client.close();
        self.d.pump();
        self.observe();
        assert!(self.closed.is_some());
        if let Some(cause) = was_closed {
            assert_eq!(self.closed, Some(cause), "the first cause wins");
        }
        assert!(self.life.values().all(|l| *l == Life::Ended));
        let closed_events = self.d.log.iter().filter(|e| e.is_closed()).count();
        assert_eq!(closed_events, 1);
        assert!(self.d.log.last().is_some_and(Ev::is_closed));
        // Sticky, and inert.
        let cause = self.closed.clone();
        assert!(matches!(self.d.client.execute("x", None::<&()>, ExecuteOptions::new()),
            Err(UsageError::Closed(c)) if Some(&c) == cause.as_ref()));
        self.d.client.handle_input(b"{\"return\": {}, \"id\": 1}\r\n");
        self.d.client.handle_eof();
        self.d.client.handle_timeout(self.d.now + Duration::from_secs(3600));
        assert!(self.d.client.poll_event().is_none());
        assert_eq!(self.d.client.poll_transmit(&mut Vec::new()), 0);
    }
}

fn run(mode: Mode, max_in_flight: usize, max_pending: usize, max_events: usize, offer_oob: bool, ops: &[Op]) {
    run_with_sync(mode, max_in_flight, max_pending, max_events, offer_oob, false, ops)
}

fn run_with_sync(
    mode: Mode,
    max_in_flight: usize,
    max_pending: usize,
    max_events: usize,
    offer_oob: bool,
    sync_on_connect: bool,
    ops: &[Op],
) {
    let mut m = Model::with_sync(mode, max_in_flight, max_pending, max_events, offer_oob, sync_on_connect);
    for op in ops {
        m.apply(op);
    }
    m.finish();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn qmp_operation_sequences_keep_invariants(
        max_in_flight in 1usize..5,
        max_pending in 2usize..12,
        max_events in 1usize..6,
        offer_oob in any::<bool>(),
        handshake_first in prop::bool::weighted(0.75),
        cut in any::<usize>(),
        ops in ops(),
    ) {
        // Mostly start from a completed handshake, so that most sequences get past it.
        let mut all = Vec::new();
        if handshake_first {
            all.extend([Op::Greet, Op::Reply { pick: 0, error: false, cut }]);
        }
        all.extend(ops);
        run(Mode::Qmp, max_in_flight, max_pending, max_events, offer_oob, &all);
    }

    #[test]
    fn guest_agent_operation_sequences_keep_invariants(
        max_in_flight in 1usize..5,
        max_pending in 2usize..12,
        sync_on_connect in any::<bool>(),
        answer_sync_first in prop::bool::weighted(0.75),
        cut in any::<usize>(),
        ops in ops(),
    ) {
        // With a connect-time sync, mostly answer it first, so that most sequences get past it.
        let mut all = Vec::new();
        if sync_on_connect && answer_sync_first {
            all.push(Op::Reply { pick: 0, error: false, cut });
        }
        all.extend(ops);
        run_with_sync(Mode::GuestAgent, max_in_flight, max_pending, 4, false, sync_on_connect, &all);
    }
}

/// A fixed sequence through the harness, so the model itself is known to see what it claims.
#[test]
fn the_model_sees_a_plain_session() {
    let mut m = Model::new(Mode::Qmp, 2, 8, 4, true);
    for op in
        [Op::Execute { deadline: None }, Op::Execute { deadline: Some(100) }, Op::Execute { deadline: None }, Op::Greet]
    {
        m.apply(&op);
    }
    assert_eq!(m.d.sent.len(), 1, "only qmp_capabilities before Ready");
    m.apply(&Op::Reply { pick: 0, error: false, cut: 7 });
    assert!(m.d.client.is_ready());
    assert_eq!(m.d.client.in_flight(), 2);
    m.apply(&Op::Advance(100));
    assert_eq!(m.d.log.iter().filter(|e| matches!(e, Ev::TimedOut { .. })).count(), 1);
    m.apply(&Op::Events(6));
    assert_eq!(m.reports_seen, 6);
    m.apply(&Op::Eof);
    assert_eq!(m.closed, Some(ConnectionError::Eof));
    m.finish();
}
