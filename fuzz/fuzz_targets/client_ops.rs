//! A sequence of operations against one client (execute, execute OOB, guest-sync, cancel, server input, timeout
//! at a time, EOF, close), with the invariants checked after every step:
//! - in-band commands on the wire never exceed `max_in_flight`;
//! - every request ends exactly once (reply, error, timeout, cancel or close), and `pending()` agrees; a
//!   written command answered only on failure never times out (its deadline ends it as a success) and, when
//!   the server goes away (EOF, transport error), ends as a success before `Closed`;
//! - a deadline never fires early, and every deadline at or before `now` has fired after `handle_timeout(now)`;
//! - nothing happens after `Closed`, which comes once, last, and ends every request;
//! - transmitted bytes are whole JSON commands, each written once, in-band ones in the order they were issued,
//!   never one that was cancelled or timed out before it went out;
//! - wire ids are reused, but a new request's id is never one of a live request, nor one a cancelled or timed-out
//!   command may still be answered with (until a reply with that id, a resync or the end of the session), and
//!   never more than `max_pending + 2` (the smallest free id).
//!
//! With `Config::in_band_ids(false)` (QMP, picked by the setup) in-band commands go without an id: the harness
//! gives every command a `tag` argument to recognise it on the wire, `Reply` sometimes answers without an id
//! (the client takes it for the oldest in-band command's), and the same invariants hold on the client's keys.
//!
//! Input: a `Setup`, then operations decoded with `Arbitrary` until the input runs out; `Op::Input { len }`
//! takes the next `len` bytes as server input. `scripts/gen-fuzz-seeds` writes this format: keep the variant
//! order of `Op` and `Name` in step with it.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use qmp_fuzz::parse_commands;
use qmp_proto::{Client, ClientEvent, Config, ConnectionError, ExecuteOptions, Mode, RequestId, UsageError};

#[derive(Arbitrary, Debug)]
struct Setup {
    guest_agent: bool,
    max_in_flight: u8,
    max_pending: u8,
    /// The event limit modulo 8; 128 and above also matches in-band replies by order (`in_band_ids(false)`).
    max_queued_events: u8,
    enable_oob: bool,
    /// QMP: the handshake deadline. Guest agent: `Some` syncs on connect (nonce 4242) with that deadline.
    handshake_ms: Option<u16>,
    /// 0: the default (10 MiB); otherwise this many bytes plus 16.
    max_message_size: u8,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Name {
    QueryStatus,
    /// No reply on success in guest-agent mode.
    GuestShutdown,
    /// Rejected: empty.
    Empty,
    /// Needs escaping.
    Quoted,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Execute {
        name: Name,
        args: bool,
        pass_fd: bool,
        deadline_ms: Option<u16>,
        expect_reply: Option<bool>,
    },
    ExecuteOob {
        deadline_ms: Option<u16>,
    },
    GuestSync {
        nonce: u16,
        deadline_ms: Option<u16>,
    },
    /// Cancels the `which`-th request issued (modulo their number).
    Cancel {
        which: u8,
    },
    /// The next `len` bytes of the fuzz input, as server bytes.
    Input {
        len: u16,
    },
    /// A greeting, offering `oob` or not.
    Greeting {
        oob: bool,
    },
    /// A reply to the `which`-th id written (modulo their number; past it, an id never written), split in two
    /// reads at `split`.
    Reply {
        which: u8,
        error: bool,
        split: u8,
    },
    /// A guest-sync-delimited reply (0xFF, then the nonce of the `which`-th sync, or a stale one).
    SyncReply {
        which: u8,
        stale: bool,
    },
    Event,
    /// `handle_timeout` at this many ms after the start (time may go backwards: that must be harmless).
    Timeout {
        at_ms: u16,
    },
    Eof,
    Close,
    TransportError,
}

#[derive(Debug)]
struct Open {
    /// `RequestId::serial`: the issue order (wire ids are reused).
    serial: u64,
    deadline: Option<Instant>,
    expect_reply: bool,
}

struct Harness {
    client: Client,
    mode: Mode,
    base: Instant,
    max_in_flight: usize,
    /// Requests issued and not ended, by wire id.
    open: BTreeMap<u64, Open>,
    /// Wire ids of written requests that ended without their reply (cancelled, timed out, a grace period
    /// passed): a late reply may still carry them, so no new request may take them. Cleared conservatively: when
    /// input that could answer them goes in, when a resync goes out, at the end.
    late: BTreeSet<u64>,
    max_pending: u64,
    /// Every request id issued, in order.
    issued: Vec<RequestId>,
    /// Nonces of the sync requests, by id.
    syncs: BTreeMap<u64, u16>,
    /// Ids written so far, in order (qmp_capabilities included).
    written: Vec<u64>,
    /// Wire ids written in their current request's life.
    written_set: BTreeSet<u64>,
    /// Requests that ended before they were written (wire ids, until reused): they must never be.
    never_written: BTreeSet<u64>,
    /// The serial of the last in-band command written.
    last_in_band: u64,
    /// Requests that pass a file descriptor (wire ids, current lives), and the serial of the last written.
    fd_requests: BTreeSet<u64>,
    last_fd_written: Option<u64>,
    handshake: Option<Instant>,
    ready: bool,
    closed: bool,
    /// In-band commands go without an id (`Config::in_band_ids(false)`).
    by_order: bool,
    /// Requests issued to go without an id, by the tag in their arguments: (key, serial).
    idless_tags: BTreeMap<u64, (u64, u64)>,
    /// The tag of the next command (in-band ids off).
    next_tag: u64,
    /// Keys of the current lives that go without an id.
    idless_keys: BTreeSet<u64>,
}

/// The nonce of the connect-time sync (guest-agent mode with a handshake deadline).
const CONNECT_NONCE: u32 = 4242;

fn at(base: Instant, ms: Option<u16>) -> Option<Instant> {
    ms.map(|ms| base + Duration::from_millis(ms.into()))
}

impl Harness {
    fn issue(&mut self, result: Result<RequestId, UsageError>, deadline: Option<Instant>, expect_reply: bool) {
        self.next_tag += 1;
        match result {
            Ok(id) => {
                assert!(!self.closed, "a closed client accepted a command");
                assert!(self.issued.last().is_none_or(|last| *last < id), "request ids must increase");
                let wire = id.as_u64();
                assert!(!self.open.contains_key(&wire), "id {id} taken while a live request has it");
                assert!(!self.late.contains(&wire), "id {id} taken while a late reply may still carry it");
                assert!(wire <= self.max_pending + 2, "id {id} is not the smallest free one");
                // A new life for this wire id.
                self.written_set.remove(&wire);
                self.never_written.remove(&wire);
                self.fd_requests.remove(&wire);
                self.syncs.remove(&wire);
                self.idless_keys.remove(&wire);
                if !id.is_on_wire() {
                    assert!(self.by_order, "{id} goes without an id, but in-band ids are on");
                    self.idless_keys.insert(wire);
                    self.idless_tags.insert(self.next_tag, (wire, id.serial()));
                }
                self.issued.push(id);
                self.open.insert(wire, Open { serial: id.serial(), deadline, expect_reply });
            }
            Err(UsageError::Closed(_)) => assert!(self.closed, "Closed error on an open client"),
            Err(UsageError::OobNotNegotiated) => assert!(self.mode == Mode::Qmp && !self.client.oob_enabled()),
            Err(UsageError::OobInGuestAgentMode) => assert_eq!(self.mode, Mode::GuestAgent),
            Err(UsageError::NotGuestAgent) => assert_eq!(self.mode, Mode::Qmp),
            // Cancelled and timed-out requests still awaiting their reply count too: `open` is a lower bound.
            Err(UsageError::QueueFull { limit }) => assert!(self.open.len() <= limit),
            Err(UsageError::EmptyCommand) => {}
            Err(e) => panic!("unexpected usage error {e}"),
        }
    }

    fn ended(&mut self, id: RequestId, now: Option<Instant>) -> Open {
        let open = self.open.remove(&id.as_u64()).unwrap_or_else(|| panic!("request {id} ended twice or never began"));
        assert_eq!(open.serial, id.serial(), "request {id} ended, but its wire id belongs to a newer request");
        if let Some(now) = now {
            assert!(open.deadline.is_some_and(|d| d <= now), "request {id} timed out early");
        }
        if !self.written_set.contains(&id.as_u64()) {
            self.never_written.insert(id.as_u64());
        }
        open
    }

    /// Takes the output and drains the events after a step, and checks every invariant. Output first: a
    /// command can be written and end in the same step (one that expects no reply, or a timeout right after).
    fn check(&mut self, now: Option<Instant>) {
        let (mut out, mut fds) = (Vec::new(), Vec::new());
        self.client.poll_transmit_with_fds(&mut out, &mut fds);
        if std::env::var_os("QMP_FUZZ_TRACE").is_some() && !out.is_empty() {
            eprintln!("  wrote {:?} fds {:?}", String::from_utf8_lossy(&out), fds);
        }
        // Closing drops whatever was not written yet.
        assert!(!self.closed || out.is_empty(), "bytes written after Closed");
        // Each descriptor rides on a space byte right before its command.
        let mut fd_at = fds.iter().map(|(at, id)| (*at, id.as_u64())).collect::<BTreeMap<_, _>>();
        let mut fd_written = Vec::new();
        let mut sync_written = false;
        for mut cmd in parse_commands(&out, self.mode == Mode::GuestAgent) {
            if cmd.id == 0 {
                // In-band without an id: its tag tells which request it is.
                assert!(self.by_order, "a command without an id");
                let tag = cmd.tag.expect("every command of the harness has a tag when ids are off");
                let (key, serial) = self.idless_tags.remove(&tag).expect("a tag issued to go without an id");
                assert!(self.open.get(&key).is_some_and(|o| o.serial == serial), "{key} written after it ended");
                cmd.id = key;
            } else {
                // (A key whose request ended is free for another life: qmp_capabilities may take it.)
                let live_idless = self.idless_keys.contains(&cmd.id) && self.open.contains_key(&cmd.id);
                assert!(!live_idless, "{} was to go without an id", cmd.id);
            }
            if cmd.name == "qmp_capabilities" {
                assert!(!self.ready && self.mode == Mode::Qmp, "qmp_capabilities out of place");
                // The client's own request takes the smallest free id when the greeting comes: a new life.
                assert!(!self.open.contains_key(&cmd.id), "qmp_capabilities took live id {}", cmd.id);
                assert!(!self.late.contains(&cmd.id), "qmp_capabilities took id {} a late reply may carry", cmd.id);
                self.never_written.remove(&cmd.id);
                self.written_set.remove(&cmd.id);
                self.fd_requests.remove(&cmd.id);
                self.idless_keys.remove(&cmd.id);
            }
            if let Some(at) = cmd.start.checked_sub(1) {
                assert_eq!(fd_at.remove(&at), cmd.space.then_some(cmd.id), "descriptor offsets");
            }
            assert_eq!(cmd.space, self.fd_requests.contains(&cmd.id), "a space byte exactly before fd commands");
            if cmd.space {
                fd_written.push(self.open.get(&cmd.id).map_or(0, |o| o.serial));
            }
            if cmd.oob {
                assert!(self.client.oob_enabled(), "exec-oob written without oob negotiated");
            } else if let Some(open) = self.open.get(&cmd.id) {
                let serial = open.serial;
                assert!(serial > self.last_in_band, "in-band command {} overtook an earlier one", cmd.id);
                self.last_in_band = serial;
            } else {
                // Only the client's own handshake request is written without the harness issuing it.
                assert!(cmd.name == "qmp_capabilities" || (cmd.name == "guest-sync-delimited" && cmd.id == 1));
            }
            if cmd.name == "guest-sync-delimited" {
                // It goes out alone, after every abandoned reply came or was given up on: the agent answers
                // them before it reads the sync, so their ids are free from here on (cleared after this step's
                // events: a command that timed out in this step, before the sync went out, is among them).
                sync_written = true;
            }
            assert!(!self.never_written.contains(&cmd.id), "command {} written after it ended", cmd.id);
            assert!(self.written_set.insert(cmd.id), "command {} written twice", cmd.id);
            self.written.push(cmd.id);
        }
        assert!(fd_at.is_empty(), "descriptor offsets not before a command: {fd_at:?}");
        while let Some(ev) = self.client.poll_event() {
            assert!(!self.closed, "event after Closed: {ev:?}");
            match ev {
                ClientEvent::Reply { id, result } => {
                    let open = self.ended(id, None);
                    let written = self.written_set.contains(&id.as_u64());
                    assert!(open.expect_reply || written, "{id} ended unwritten");
                    if !open.expect_reply && result.is_ok() && now.is_some() {
                        // Its grace period passed: a late error may still come.
                        self.late.insert(id.as_u64());
                    }
                }
                ClientEvent::TimedOut { id } => {
                    let open = self.ended(id, now);
                    let written = self.written_set.contains(&id.as_u64());
                    assert!(open.expect_reply || !written, "written no-reply command {id} timed out");
                    if written {
                        self.late.insert(id.as_u64());
                    }
                }
                ClientEvent::Failed { id, .. } => {
                    self.ended(id, None);
                }
                ClientEvent::Ready { .. } => {
                    assert!(!self.ready, "Ready twice");
                    self.ready = true;
                }
                ClientEvent::Closed(cause) => {
                    if matches!(
                        cause,
                        ConnectionError::Eof | ConnectionError::EofMidMessage { .. } | ConnectionError::Transport(_)
                    ) {
                        let silent =
                            self.open.iter().filter(|(id, o)| !o.expect_reply && self.written_set.contains(id));
                        assert_eq!(silent.count(), 0, "a written no-reply command outlived the server");
                    }
                    self.closed = true;
                    self.late.clear();
                    for id in std::mem::take(&mut self.open).into_keys() {
                        if !self.written_set.contains(&id) {
                            self.never_written.insert(id);
                        }
                    }
                }
                _ => {}
            }
        }
        if sync_written {
            self.late.clear();
        }
        // One descriptor-passing command on the wire at a time: each written one has ended before the next
        // (one that expects no reply ends as it is written).
        for serial in fd_written {
            if let Some(prev) = self.last_fd_written {
                let pending = self.open.values().any(|o| o.serial == prev);
                assert!(!pending, "fd command #{serial} written while #{prev} is pending");
            }
            self.last_fd_written = Some(serial);
        }
        if self.closed {
            assert_eq!(self.client.poll_timeout(), None, "a deadline after Closed");
            assert_eq!(self.client.pending(), 0);
            assert_eq!(self.client.in_flight(), 0);
        }
        assert!(self.client.in_flight() <= self.max_in_flight, "{} in flight", self.client.in_flight());
        assert_eq!(self.client.pending(), self.open.len(), "pending() disagrees: open {:?}", self.open);
        if !self.closed {
            // The next deadline is exactly the earliest one still armed.
            let earliest = self.open.values().filter_map(|o| o.deadline);
            let handshake = self.handshake.filter(|_| !self.ready);
            assert_eq!(self.client.poll_timeout(), earliest.chain(handshake).min(), "poll_timeout");
            if let Some(now) = now {
                assert!(self.client.poll_timeout().is_none_or(|t| t > now), "a deadline at or before now is armed");
            }
        }
    }

    /// The id a reply goes to: one written, or one never written.
    fn reply_id(&self, which: u8) -> u64 {
        match self.written.len() {
            0 => 1000 + u64::from(which),
            n if usize::from(which) < 2 * n => self.written[usize::from(which) % n],
            _ => 1000 + u64::from(which),
        }
    }
}

fn input(client: &mut Client, bytes: &[u8], split: u8) {
    let split = usize::from(split).min(bytes.len());
    client.handle_input(&bytes[..split]);
    client.handle_input(&bytes[split..]);
}

fn run(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let setup = Setup::arbitrary(&mut u)?;
    let base = Instant::now();
    let mut config = if setup.guest_agent { Config::guest_agent() } else { Config::qmp() };
    config = config
        .max_in_flight(usize::from(setup.max_in_flight % 10))
        .max_pending(usize::from(setup.max_pending % 20))
        .max_queued_events(usize::from(setup.max_queued_events % 8))
        .enable_oob(setup.enable_oob);
    let by_order = !setup.guest_agent && setup.max_queued_events >= 128;
    config = config.in_band_ids(!by_order);
    if setup.max_message_size != 0 {
        config = config.max_message_size(usize::from(setup.max_message_size) + 16);
    }
    let sync_on_connect = setup.guest_agent && setup.handshake_ms.is_some();
    if sync_on_connect {
        config = config.sync_on_connect(CONNECT_NONCE);
    }
    config = config.handshake_timeout(setup.handshake_ms.map(|ms| Duration::from_millis(ms.into())));
    // Without a connect-time sync, guest-agent mode has no handshake.
    let handshake = at(base, setup.handshake_ms).filter(|_| !setup.guest_agent || sync_on_connect);
    let max_in_flight = config.get_max_in_flight();
    let config_max_pending = config.get_max_pending() as u64;
    let mode = config.mode();
    let mut h = Harness {
        client: Client::new(config, base),
        mode,
        base,
        max_in_flight,
        open: BTreeMap::new(),
        late: BTreeSet::new(),
        max_pending: config_max_pending,
        issued: Vec::new(),
        syncs: BTreeMap::new(),
        written: Vec::new(),
        written_set: BTreeSet::new(),
        never_written: BTreeSet::new(),
        last_in_band: 0,
        fd_requests: BTreeSet::new(),
        last_fd_written: None,
        handshake,
        ready: false,
        closed: false,
        by_order,
        idless_tags: BTreeMap::new(),
        next_tag: 0,
        idless_keys: BTreeSet::new(),
    };
    if sync_on_connect {
        // The client's own sync (id 1): `SyncReply` answers it like the user's.
        h.syncs.insert(1, CONNECT_NONCE as u16);
    }
    h.check(None);
    // QMP_FUZZ_TRACE=1 prints the setup and each operation (to read a crash).
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let trace = *TRACE.get_or_init(|| std::env::var_os("QMP_FUZZ_TRACE").is_some());
    if trace {
        eprintln!("{setup:?}");
    }
    while !u.is_empty() {
        let op = Op::arbitrary(&mut u)?;
        if trace {
            eprintln!("{op:?}");
        }
        let mut now = None;
        match op {
            Op::Execute { name, args, pass_fd, deadline_ms, expect_reply } => {
                let name = match name {
                    Name::QueryStatus => "query-status",
                    Name::GuestShutdown => "guest-shutdown",
                    Name::Empty => "",
                    Name::Quoted => "x\"\\\u{e9}\n",
                };
                let deadline = at(h.base, deadline_ms);
                let mut opts = ExecuteOptions::new().deadline_opt(deadline);
                if let Some(e) = expect_reply {
                    opts = opts.expect_reply(e);
                }
                if pass_fd {
                    opts = opts.pass_fd();
                }
                let expect = expect_reply.unwrap_or(!(mode == Mode::GuestAgent && name == "guest-shutdown"));
                // With ids off, every command has arguments, with a tag to recognise it on the wire.
                let tag = h.next_tag + 1;
                let arguments = match (args, h.by_order) {
                    (_, true) => serde_json::json!({"a": [1, "\u{1F600}", null], "b": {}, "tag": tag}),
                    (true, false) => serde_json::json!({"a": [1, "\u{1F600}", null], "b": {}}),
                    (false, false) => serde_json::json!({}),
                };
                let r = h.client.execute(name, (args || h.by_order).then_some(&arguments), opts);
                let ok = r.as_ref().ok().copied();
                h.issue(r, deadline, expect);
                if let Some(id) = ok {
                    if pass_fd {
                        h.fd_requests.insert(id.as_u64());
                    }
                }
            }
            Op::ExecuteOob { deadline_ms } => {
                let deadline = at(h.base, deadline_ms);
                let r = h.client.execute("query-yank", None::<&()>, ExecuteOptions::new().oob().deadline_opt(deadline));
                if r.is_ok() {
                    assert!(h.client.oob_enabled());
                }
                h.issue(r, deadline, true);
            }
            Op::GuestSync { nonce, deadline_ms } => {
                let deadline = at(h.base, deadline_ms);
                let r = h.client.guest_sync(nonce.into(), ExecuteOptions::new().deadline_opt(deadline));
                let ok = r.as_ref().ok().copied();
                h.issue(r, deadline, true);
                if let Some(id) = ok {
                    h.syncs.insert(id.as_u64(), nonce);
                }
            }
            Op::Cancel { which } => {
                if !h.issued.is_empty() {
                    let id = h.issued[usize::from(which) % h.issued.len()];
                    let was_open = h.open.get(&id.as_u64()).is_some_and(|o| o.serial == id.serial());
                    assert_eq!(h.client.cancel(id), was_open, "cancel({id}) disagrees with the request's life");
                    if was_open {
                        h.ended(id, None);
                        if h.written_set.contains(&id.as_u64()) {
                            h.late.insert(id.as_u64());
                        }
                    }
                }
            }
            Op::Input { len } => {
                let bytes = u.bytes(usize::from(len).min(u.len()))?;
                // Any id these bytes could spell may have been answered.
                let text = String::from_utf8_lossy(bytes);
                h.late.retain(|id| !text.contains(&id.to_string()) && !h.idless_keys.contains(id));
                h.client.handle_input(bytes);
            }
            Op::Greeting { oob } => {
                let caps = if oob { r#"["oob"]"# } else { "[]" };
                let g = format!(
                    r#"{{"QMP": {{"version": {{"qemu": {{"micro": 2, "minor": 0, "major": 10}}, "package": ""}}, "capabilities": {caps}}}}}"#
                );
                h.client.handle_input(format!("{g}\r\n").as_bytes());
            }
            Op::Reply { which, error, split } if h.by_order && which % 2 == 1 => {
                // Without an id: the client matches it to the oldest in-band command on the wire.
                h.late.retain(|id| !h.idless_keys.contains(id));
                let msg = if error {
                    r#"{"error": {"class": "GenericError", "desc": "no"}}"#
                } else {
                    r#"{"return": {}}"#
                };
                input(&mut h.client, format!("{msg}\r\n").as_bytes(), split);
            }
            Op::Reply { which, error, split } => {
                let id = h.reply_id(which);
                h.late.remove(&id);
                let msg = if error {
                    format!(r#"{{"id": {id}, "error": {{"class": "GenericError", "desc": "no"}}}}"#)
                } else {
                    format!(r#"{{"return": {{}}, "id": {id}}}"#)
                };
                input(&mut h.client, format!("{msg}\r\n").as_bytes(), split);
            }
            Op::SyncReply { which, stale } => {
                let syncs: Vec<_> = h.syncs.iter().map(|(id, n)| (*id, *n)).collect();
                let (id, nonce) = if syncs.is_empty() { (999, 0) } else { syncs[usize::from(which) % syncs.len()] };
                let value = if stale { u64::from(nonce) + 70_000 } else { u64::from(nonce) };
                h.late.remove(&id);
                h.client.handle_input(format!("\u{1}\n\u{ff}{{\"return\": {value}, \"id\": {id}}}\n").as_bytes());
            }
            Op::Event => {
                h.client.handle_input(br#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#);
                h.client.handle_input(b"\r\n");
            }
            Op::Timeout { at_ms } => {
                let t = h.base + Duration::from_millis(at_ms.into());
                h.client.handle_timeout(t);
                now = Some(t);
            }
            Op::Eof => h.client.handle_eof(),
            Op::Close => h.client.close(),
            Op::TransportError => h.client.handle_transport_error("reset"),
        }
        h.check(now);
        if h.closed {
            // Nothing happens after Closed, whatever the caller does.
            h.client.handle_input(br#"{"return": {}, "id": 1}"#);
            h.client.handle_timeout(h.base + Duration::from_secs(100_000));
            h.client.handle_eof();
            let r = h.client.execute("query-status", None::<&()>, ExecuteOptions::new());
            assert!(matches!(r, Err(UsageError::Closed(_))), "execute after Closed: {r:?}");
            h.check(None);
        }
    }
    // End of input: the server goes away; every request must have ended.
    h.client.handle_eof();
    h.check(None);
    assert!(h.closed, "EOF did not close");
    assert!(h.open.is_empty(), "requests never ended: {:?}", h.open);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
