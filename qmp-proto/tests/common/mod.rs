//! Helpers shared by the integration tests: a normalized, comparable view of [`ClientEvent`]s, a parser for
//! what the client transmitted, and a scripted in-memory driver with virtual time that plays the server.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use qmp_proto::{
    Client, ClientEvent, Config, ConnectionError, ExecuteOptions, ProtocolViolation, RequestError, RequestId,
};
use serde_json::Value;

/// A [`ClientEvent`] reduced to plain, comparable data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Greeting {
        version: String,
        caps: Vec<String>,
    },
    Ready {
        oob: bool,
    },
    ReplyOk {
        id: u64,
        raw: String,
    },
    ReplyErr {
        id: u64,
        class: String,
        desc: String,
        raw: String,
    },
    Event {
        name: String,
        data: Option<String>,
        ts: Option<(i64, i64)>,
    },
    TimedOut {
        id: u64,
    },
    /// `ClientEvent::Failed` with `RequestError::ReplyTooLarge`.
    ReplyTooLarge {
        id: u64,
        len: u64,
        limit: usize,
    },
    EventsDropped {
        count: u64,
    },
    UnknownId {
        id: String,
    },
    IdlessReply {
        value: String,
    },
    IdlessError {
        class: String,
        desc: String,
    },
    NotJson {
        bytes: Vec<u8>,
        reason: String,
    },
    UnknownShape {
        bytes: Vec<u8>,
        id: Option<String>,
        reason: String,
    },
    Oversized {
        len: u64,
        limit: usize,
    },
    Truncated {
        len: u64,
    },
    UnexpectedGreeting,
    Closed(ConnectionError),
}

impl Ev {
    /// The id of a `Reply` or `TimedOut`, the events that end a request.
    pub fn ends(&self) -> Option<u64> {
        match self {
            Ev::ReplyOk { id, .. } | Ev::ReplyErr { id, .. } | Ev::TimedOut { id } | Ev::ReplyTooLarge { id, .. } => {
                Some(*id)
            }
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self, Ev::Closed(_))
    }
}

/// Normalizes one event. Panics on a variant these tests do not know yet (so a new one gets looked at).
pub fn norm(ev: ClientEvent) -> Ev {
    match ev {
        ClientEvent::Greeting(g) => Ev::Greeting { version: g.version_string(), caps: g.capabilities },
        ClientEvent::Ready { oob } => Ev::Ready { oob },
        ClientEvent::Reply { id, result: Ok(raw) } => Ev::ReplyOk { id: id.as_u64(), raw: raw.raw_str().to_owned() },
        ClientEvent::Reply { id, result: Err(e) } => {
            Ev::ReplyErr { id: id.as_u64(), class: e.class, desc: e.desc, raw: e.raw.raw_str().to_owned() }
        }
        ClientEvent::Event(e) => Ev::Event {
            name: e.name,
            data: e.data.map(|d| d.raw_str().to_owned()),
            ts: e.timestamp.map(|t| (t.seconds, t.microseconds)),
        },
        ClientEvent::TimedOut { id } => Ev::TimedOut { id: id.as_u64() },
        ClientEvent::Failed { id, error } => match error {
            RequestError::ReplyTooLarge { len, limit } => Ev::ReplyTooLarge { id: id.as_u64(), len, limit },
            other => panic!("unknown request error {other:?}"),
        },
        ClientEvent::EventsDropped { count } => Ev::EventsDropped { count },
        ClientEvent::ProtocolViolation(v) => match v {
            ProtocolViolation::UnknownId { id } => Ev::UnknownId { id: id.raw_str().to_owned() },
            ProtocolViolation::IdlessReply { value } => Ev::IdlessReply { value: value.raw_str().to_owned() },
            ProtocolViolation::IdlessError(e) => Ev::IdlessError { class: e.class, desc: e.desc },
            ProtocolViolation::NotJson { bytes, reason } => Ev::NotJson { bytes: bytes.to_vec(), reason },
            ProtocolViolation::UnknownShape { bytes, id, reason } => {
                Ev::UnknownShape { bytes: bytes.to_vec(), id: id.map(|id| id.raw_str().to_owned()), reason }
            }
            ProtocolViolation::Oversized { len, limit } => Ev::Oversized { len, limit },
            ProtocolViolation::Truncated { len } => Ev::Truncated { len },
            ProtocolViolation::UnexpectedGreeting => Ev::UnexpectedGreeting,
            other => panic!("unknown protocol violation {other:?}"),
        },
        ClientEvent::Closed(cause) => Ev::Closed(cause),
        other => panic!("unknown client event {other:?}"),
    }
}

/// Drains every event, normalized.
pub fn drain(client: &mut Client) -> Vec<Ev> {
    std::iter::from_fn(|| client.poll_event()).map(norm).collect()
}

/// One unit of what the client wrote.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    /// A raw 0xFF byte (the guest-agent resynchronisation marker).
    Ff,
    /// One JSON command.
    Cmd(Value),
}

/// Splits transmitted bytes into 0xFF markers and JSON commands. Panics if anything is left over: the client
/// must only ever transmit whole messages.
pub fn parse_wire(bytes: &[u8]) -> Vec<Wire> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        if bytes[pos] == 0xFF {
            out.push(Wire::Ff);
            pos += 1;
            continue;
        }
        let end = bytes[pos..].iter().position(|&b| b == 0xFF).map_or(bytes.len(), |k| pos + k);
        let mut stream = serde_json::Deserializer::from_slice(&bytes[pos..end]).into_iter::<Value>();
        for v in stream.by_ref() {
            let v = v.unwrap_or_else(|e| panic!("client transmitted invalid JSON ({e}): {:?}", lossy(bytes)));
            assert!(v.is_object(), "client transmitted a non-object: {v}");
            out.push(Wire::Cmd(v));
        }
        assert_eq!(stream.byte_offset(), end - pos, "trailing bytes in transmit: {:?}", lossy(bytes));
        pos = end;
    }
    out
}

pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command as the fake server sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cmd {
    pub name: String,
    pub oob: bool,
    pub args: Option<Value>,
    /// The id; 0 for a command sent without one ([`Config::in_band_ids`](qmp_proto::Config::in_band_ids)).
    pub id: u64,
    /// Preceded by a 0xFF byte.
    pub after_ff: bool,
}

/// Reads the commands out of transmitted bytes, checking their shape.
pub fn commands(bytes: &[u8]) -> Vec<Cmd> {
    let mut out = Vec::new();
    let mut after_ff = false;
    for w in parse_wire(bytes) {
        match w {
            Wire::Ff => after_ff = true,
            Wire::Cmd(v) => {
                let obj = v.as_object().expect("object");
                let (name, oob) = match (obj.get("execute"), obj.get("exec-oob")) {
                    (Some(Value::String(n)), None) => (n.clone(), false),
                    (None, Some(Value::String(n))) => (n.clone(), true),
                    _ => panic!("command without exactly one of execute/exec-oob: {v}"),
                };
                let id = match obj.get("id") {
                    None => 0,
                    Some(id) => id.as_u64().unwrap_or_else(|| panic!("command without u64 id: {v}")),
                };
                for k in obj.keys() {
                    assert!(["execute", "exec-oob", "arguments", "id"].contains(&k.as_str()), "unexpected member {k}");
                }
                let args = obj.get("arguments").cloned();
                if let Some(a) = &args {
                    assert!(
                        a.is_object() && !a.as_object().unwrap().is_empty(),
                        "arguments must be a non-empty object"
                    );
                }
                out.push(Cmd { name, oob, args, id, after_ff });
                after_ff = false;
            }
        }
    }
    assert!(!after_ff, "a 0xFF marker with no command after it");
    out
}

/// The greeting of qemu-storage-daemon 10.0.2, optionally without the `oob` capability.
pub fn greeting(oob: bool) -> String {
    let caps = if oob { r#"["oob"]"# } else { "[]" };
    format!(
        r#"{{"QMP": {{"version": {{"qemu": {{"micro": 2, "minor": 0, "major": 10}}, "package": "Debian 1:10.0.2+ds-2+deb13u1~bpo12+1"}}, "capabilities": {caps}}}}}"#
    ) + "\r\n"
}

/// `{"return": VALUE, "id": ID}` with CRLF.
pub fn ret(id: u64, value: &str) -> String {
    format!("{{\"return\": {value}, \"id\": {id}}}\r\n")
}

/// `{"id": ID, "error": {...}}` with CRLF (QEMU's key order for errors).
pub fn err(id: u64, class: &str, desc: &str) -> String {
    format!("{{\"id\": {id}, \"error\": {{\"class\": \"{class}\", \"desc\": \"{desc}\"}}}}\r\n")
}

/// An id-less error, as QEMU raises before it reads the id.
pub fn idless_err(desc: &str) -> String {
    format!("{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"{desc}\"}}}}\r\n")
}

/// An event with a timestamp.
pub fn event(name: &str, data: Option<&str>, secs: i64, micros: i64) -> String {
    match data {
        Some(d) => format!(
            "{{\"timestamp\": {{\"seconds\": {secs}, \"microseconds\": {micros}}}, \"event\": \"{name}\", \"data\": {d}}}\r\n"
        ),
        None => format!("{{\"timestamp\": {{\"seconds\": {secs}, \"microseconds\": {micros}}}, \"event\": \"{name}\"}}\r\n"),
    }
}

/// A client driven by the contract in the crate docs, on virtual time, with the server played by the test.
///
/// Every input or call goes through a method that then drains `poll_event`, calls `poll_transmit` and reads
/// `poll_timeout`, recording everything.
pub struct Driver {
    pub client: Client,
    pub base: Instant,
    pub now: Instant,
    /// Every event so far, in order.
    pub log: Vec<Ev>,
    /// Every command transmitted so far, in order.
    pub sent: Vec<Cmd>,
    /// Every byte transmitted so far.
    pub wire: Vec<u8>,
    /// The last `poll_timeout`.
    pub timeout: Option<Instant>,
}

impl Driver {
    pub fn new(config: Config) -> Self {
        let base = Instant::now();
        let client = Client::new(config, base);
        let mut d =
            Driver { client, base, now: base, log: Vec::new(), sent: Vec::new(), wire: Vec::new(), timeout: None };
        d.pump();
        d
    }

    /// Steps 1-3 of the contract: events, transmit, timeout. Returns the new events.
    pub fn pump(&mut self) -> Vec<Ev> {
        let evs = drain(&mut self.client);
        self.log.extend(evs.iter().cloned());
        let mut out = Vec::new();
        let n = self.client.poll_transmit(&mut out);
        assert_eq!(n, out.len(), "poll_transmit must return the number of bytes appended");
        self.sent.extend(commands(&out));
        self.wire.extend_from_slice(&out);
        self.timeout = self.client.poll_timeout();
        // The contract says nothing more happens until the next input or call.
        assert!(self.client.poll_event().is_none());
        evs
    }

    /// Commands transmitted since the `from`th one.
    pub fn sent_since(&self, from: usize) -> &[Cmd] {
        &self.sent[from..]
    }

    pub fn input(&mut self, bytes: impl AsRef<[u8]>) -> Vec<Ev> {
        self.client.handle_input(bytes.as_ref());
        self.pump()
    }

    /// Feeds the bytes one at a time (pumping after each), returning every event.
    pub fn input_bytewise(&mut self, bytes: impl AsRef<[u8]>) -> Vec<Ev> {
        let mut evs = Vec::new();
        for b in bytes.as_ref() {
            evs.extend(self.input([*b]));
        }
        evs
    }

    pub fn eof(&mut self) -> Vec<Ev> {
        self.client.handle_eof();
        self.pump()
    }

    /// Moves the virtual clock to `base + ms` and calls `handle_timeout`.
    pub fn at(&mut self, ms: u64) -> Vec<Ev> {
        self.now = self.base + Duration::from_millis(ms);
        self.client.handle_timeout(self.now);
        self.pump()
    }

    pub fn deadline(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    pub fn exec(&mut self, name: &str, opts: ExecuteOptions) -> RequestId {
        let id = self.client.execute(name, None::<&()>, opts).unwrap_or_else(|e| panic!("execute {name}: {e}"));
        self.pump();
        id
    }

    pub fn exec_with_deadline(&mut self, name: &str, deadline_ms: u64) -> RequestId {
        let at = self.deadline(deadline_ms);
        self.exec(name, ExecuteOptions::new().deadline(at))
    }

    pub fn exec_args(&mut self, name: &str, args: &Value, opts: ExecuteOptions) -> RequestId {
        let id = self.client.execute(name, Some(args), opts).unwrap_or_else(|e| panic!("execute {name}: {e}"));
        self.pump();
        id
    }

    pub fn cancel(&mut self, id: RequestId) -> bool {
        let r = self.client.cancel(id);
        self.pump();
        r
    }

    /// The last command transmitted with this name.
    pub fn last_sent(&self, name: &str) -> &Cmd {
        self.sent.iter().rev().find(|c| c.name == name).unwrap_or_else(|| panic!("{name} was never sent"))
    }

    /// QMP: greeting, then the `qmp_capabilities` reply. Returns the events of both steps.
    pub fn handshake(&mut self, offer_oob: bool) -> Vec<Ev> {
        let mut evs = self.input(greeting(offer_oob));
        let neg = self.last_sent("qmp_capabilities").id;
        evs.extend(self.input(ret(neg, "{}")));
        assert!(self.client.is_ready(), "not ready after the handshake: {evs:?}");
        evs
    }
}
