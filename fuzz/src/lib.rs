//! Helpers shared by the fuzz targets in `fuzz_targets/`.

use qmp_proto::{ClientEvent, ProtocolViolation, QmpError, RawJson};

/// Cuts `len` bytes into chunks whose lengths come from `seed` (a small xorshift generator): the same seed
/// always gives the same cuts, so a crash reproduces from its input alone.
pub fn chunks(seed: u8, len: usize) -> Vec<std::ops::Range<usize>> {
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let r = next();
        // Mostly short chunks (1..=8 bytes), sometimes up to 256.
        let max = 1usize << (r % 9);
        let n = 1 + (next() as usize % max);
        let end = (at + n).min(len);
        out.push(at..end);
        at = end;
    }
    out
}

/// A full, comparable description of an event (`Debug` of [`RawJson`] is shortened; this is not).
pub fn event_key(ev: &ClientEvent) -> String {
    match ev {
        ClientEvent::Greeting(g) => format!("greeting {g:?}"),
        ClientEvent::Ready { oob } => format!("ready oob={oob}"),
        ClientEvent::Reply { id, result: Ok(v) } => format!("reply {id} ok {}", v.raw_str()),
        ClientEvent::Reply { id, result: Err(e) } => format!("reply {id} err {}", error_key(e)),
        ClientEvent::Event(e) => {
            format!("event {:?} data={:?} ts={:?}", e.name, e.data.as_ref().map(RawJson::raw_str), e.timestamp)
        }
        ClientEvent::TimedOut { id } => format!("timed out {id}"),
        ClientEvent::EventsDropped { count } => format!("dropped {count}"),
        ClientEvent::ProtocolViolation(v) => format!("violation {}", violation_key(v)),
        ClientEvent::Closed(cause) => format!("closed {cause:?}"),
        other => format!("{other:?}"),
    }
}

fn error_key(e: &QmpError) -> String {
    format!("{:?} {:?} {}", e.class, e.desc, e.raw.raw_str())
}

fn violation_key(v: &ProtocolViolation) -> String {
    match v {
        ProtocolViolation::UnknownId { id } => format!("unknown id {}", id.raw_str()),
        ProtocolViolation::IdlessReply { value } => format!("idless reply {}", value.raw_str()),
        ProtocolViolation::IdlessError(e) => format!("idless error {}", error_key(e)),
        other => format!("{other:?}"),
    }
}

/// Events the client may drop under pressure (server events and violation reports).
pub fn is_report(ev: &ClientEvent) -> bool {
    matches!(ev, ClientEvent::Event(_) | ClientEvent::ProtocolViolation(_))
}

/// Every byte a message-carrying event holds, to check it against the message size limit.
pub fn message_len(ev: &ClientEvent) -> Option<usize> {
    match ev {
        ClientEvent::Reply { result: Ok(v), .. } => Some(v.as_bytes().len()),
        ClientEvent::Reply { result: Err(e), .. } => Some(e.raw.as_bytes().len()),
        ClientEvent::ProtocolViolation(
            ProtocolViolation::NotJson { bytes, .. } | ProtocolViolation::UnknownShape { bytes, .. },
        ) => Some(bytes.len()),
        ClientEvent::ProtocolViolation(ProtocolViolation::UnknownId { id }) => Some(id.as_bytes().len()),
        ClientEvent::ProtocolViolation(ProtocolViolation::IdlessReply { value }) => Some(value.as_bytes().len()),
        ClientEvent::ProtocolViolation(ProtocolViolation::IdlessError(e)) => Some(e.raw.as_bytes().len()),
        ClientEvent::Event(e) => Some(e.name.len() + e.data.as_ref().map_or(0, |d| d.as_bytes().len())),
        _ => None,
    }
}

/// One command as a client wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Its `id`; 0 when it has none (an in-band command of a client that matches replies by order: the client
    /// never uses 0 as an id).
    pub id: u64,
    /// Its `execute` (or `exec-oob`) name.
    pub name: String,
    /// Sent as `exec-oob`.
    pub oob: bool,
    /// Preceded by a 0xFF byte.
    pub ff: bool,
    /// Preceded by one space byte (the byte a file descriptor rides on).
    pub space: bool,
    /// Offset of its opening brace in the bytes parsed.
    pub start: usize,
    /// Its `arguments.tag`, when that is an unsigned integer (a harness's mark to tell commands apart).
    pub tag: Option<u64>,
}

/// Splits bytes written by a client into its commands, checking that they are whole JSON objects, each with a
/// string `execute` or `exec-oob` member and an unsigned integer `id` (or none, in-band only), with a 0xFF byte only directly before a
/// `guest-sync-delimited` (and only when `allow_ff`), and at most one space byte before a command (where a file
/// descriptor is passed). Returns each command in order.
pub fn parse_commands(mut bytes: &[u8], allow_ff: bool) -> Vec<Command> {
    let total = bytes.len();
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let ff = bytes[0] == 0xFF;
        if ff {
            assert!(allow_ff, "0xFF written outside guest-agent mode");
            bytes = &bytes[1..];
        }
        let space = bytes.first() == Some(&b' ');
        if space {
            bytes = &bytes[1..];
        }
        let start = total - bytes.len();
        assert_eq!(
            bytes.first(),
            Some(&b'{'),
            "transmit does not start a JSON object: {:?}",
            String::from_utf8_lossy(bytes)
        );
        // Arguments may nest deeper than serde_json's default limit of 128 (QEMU takes 1024).
        let mut de = serde_json::Deserializer::from_slice(bytes);
        de.disable_recursion_limit();
        let mut stream = de.into_iter::<serde_json::Value>();
        let value = match stream.next() {
            Some(Ok(v)) => v,
            other => panic!("transmit is not whole JSON: {other:?} in {:?}", String::from_utf8_lossy(bytes)),
        };
        bytes = &bytes[stream.byte_offset()..];
        let obj = value.as_object().expect("a command is an object");
        let (name, oob) = match (obj.get("execute"), obj.get("exec-oob")) {
            (Some(serde_json::Value::String(n)), None) => (n.clone(), false),
            (None, Some(serde_json::Value::String(n))) => (n.clone(), true),
            _ => panic!("command without exactly one execute/exec-oob: {value}"),
        };
        let id = match obj.get("id") {
            None => {
                assert!(!oob, "exec-oob without an id");
                0
            }
            Some(id) => id.as_u64().filter(|&id| id != 0).expect("command id is a u64 other than 0"),
        };
        for key in obj.keys() {
            assert!(matches!(key.as_str(), "execute" | "exec-oob" | "arguments" | "id"), "stray member {key}");
        }
        if let Some(args) = obj.get("arguments") {
            assert!(args.as_object().is_some_and(|a| !a.is_empty()), "arguments must be a non-empty object");
        }
        assert!(!ff || name == "guest-sync-delimited", "0xFF before {name}");
        assert!(!(ff && space), "a sync command carries no file descriptor");
        let tag = obj.get("arguments").and_then(|a| a.get("tag")).and_then(serde_json::Value::as_u64);
        out.push(Command { id, name, oob, ff, space, start, tag });
    }
    out
}

/// A cheap fingerprint of an event, for comparing long runs: whether the client may drop or coalesce it
/// under pressure (a server report, or the drop counter itself), and a hash of its full content (raw payload
/// bytes, not their `Debug` form). Use [`event_key`] to print one.
pub fn event_digest(ev: &ClientEvent) -> (bool, u64) {
    use std::hash::{Hash, Hasher};
    let mut h = Fx(0);
    std::mem::discriminant(ev).hash(&mut h);
    let error = |h: &mut Fx, e: &QmpError| {
        (&e.class, &e.desc, e.raw.as_bytes()).hash(h);
    };
    match ev {
        ClientEvent::Greeting(g) => {
            (&g.version, g.raw_version.as_ref().map(RawJson::as_bytes), &g.capabilities).hash(&mut h)
        }
        ClientEvent::Ready { oob } => oob.hash(&mut h),
        ClientEvent::Reply { id, result: Ok(v) } => (id, v.as_bytes()).hash(&mut h),
        ClientEvent::Reply { id, result: Err(e) } => {
            id.hash(&mut h);
            error(&mut h, e);
        }
        ClientEvent::Event(e) => (&e.name, e.data.as_ref().map(RawJson::as_bytes), e.timestamp).hash(&mut h),
        ClientEvent::TimedOut { id } => id.hash(&mut h),
        ClientEvent::EventsDropped { count } => count.hash(&mut h),
        ClientEvent::ProtocolViolation(v) => {
            std::mem::discriminant(v).hash(&mut h);
            match v {
                ProtocolViolation::UnknownId { id } => id.as_bytes().hash(&mut h),
                ProtocolViolation::IdlessReply { value } => value.as_bytes().hash(&mut h),
                ProtocolViolation::IdlessError(e) => error(&mut h, e),
                ProtocolViolation::NotJson { bytes, reason } => (&bytes[..], reason).hash(&mut h),
                ProtocolViolation::UnknownShape { bytes, id, reason } => {
                    (&bytes[..], id.as_ref().map(RawJson::as_bytes), reason).hash(&mut h)
                }
                ProtocolViolation::Oversized { len, limit } => (len, limit).hash(&mut h),
                ProtocolViolation::Truncated { len } => len.hash(&mut h),
                other => format!("{other:?}").hash(&mut h),
            }
        }
        other => format!("{other:?}").hash(&mut h),
    }
    (is_report(ev) || matches!(ev, ClientEvent::EventsDropped { .. }), h.finish())
}

/// A small, fast, non-cryptographic hasher (the Fx hash of rustc), eight bytes at a time.
struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        for &b in words.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}
