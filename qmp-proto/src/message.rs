//! Classification: what one framed server message is.
//!
//! One pass reads the message into a struct of optional borrowed fields (the raw JSON text of every payload),
//! never an untagged enum, so one unexpected member never hides the rest, and routing a reply costs no
//! `Value` tree. Payloads come out as [`RawJson`] slices of the message's own buffer. Messages written the
//! way QEMU writes them are read by a hand-written fast path (serde still reads the nested payloads); any
//! other goes through serde, and the two give the same answer.
//!
//! [`classify`] validates every payload it hands out. [`classify_framed`], what the client uses, takes a
//! reply's nested `return` payload whole from the framer's [`Layout`] and leaves its validation to the parse
//! that needs it: validating it here and again at `deserialize()` cost more than framing the message did. A
//! reply in the exact shape QEMU writes to this client, `{"return": V, "id": N}`, is then recognised by
//! comparing the few bytes around V, without reading it member by member.
//!
//! Shapes, checked in this order (the member that decides is in brackets):
//! greeting (`QMP`), event (`event`), success reply (`return`), error reply (`error`). Valid JSON of any other
//! shape is [`Message::UnknownShape`]; text that is not JSON at all (QEMU can write `"id": inf`) is
//! [`Message::NotJson`].

use std::borrow::Cow;

use bytes::{Buf, Bytes};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::error::QmpError;
use crate::framer::Layout;
use crate::raw::RawJson;

/// One message from the server, classified.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Message {
    /// The QMP greeting (`{"QMP": {...}}`).
    Greeting(Greeting),
    /// A success reply: `{"return": value, "id": ...}`.
    Return {
        /// The echoed id, exactly as sent back; `None` when the member was absent (`null` is `Some`).
        id: Option<RawJson>,
        /// The `return` payload: valid JSON from [`classify`]; from [`classify_framed`] (the client), an object
        /// or array is validated only when parsed.
        value: RawJson,
    },
    /// An error reply: `{"error": {"class": ..., "desc": ...}, "id": ...}`.
    Error {
        /// The echoed id; errors raised before QEMU read the id have none.
        id: Option<RawJson>,
        /// The error.
        error: QmpError,
    },
    /// An asynchronous event.
    Event(ServerEvent),
    /// Text that is not valid JSON (QEMU writes `inf` for an id of `1e400`).
    NotJson {
        /// The whole message.
        bytes: Bytes,
        /// What the JSON parser said.
        reason: String,
    },
    /// Valid JSON of a shape this crate does not know (not an object, a greeting without `capabilities`, an
    /// object with none of the members that decide, a member of the wrong type).
    UnknownShape {
        /// The whole message.
        bytes: Bytes,
        /// Its `id` member, exactly as sent, when it is an object that has one.
        id: Option<RawJson>,
        /// Why it was not understood.
        reason: String,
    },
}

/// The server's greeting: `{"QMP": {"version": ..., "capabilities": [...]}}`.
///
/// Only the `capabilities` array is required. Old servers and the QMP wiki show greetings without a
/// `version`, or with the version as a string (`{"qemu": "0.12.5", "package": ""}`); those are accepted, with
/// [`version`](Self::version) `None` and the member as sent in [`raw_version`](Self::raw_version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// QEMU's version, when the greeting gives it in today's shape
    /// (`{"qemu": {"major": M, "minor": N, "micro": P}, "package": "..."}`).
    pub version: Option<Version>,
    /// The `version` member exactly as sent, whenever it is present (whatever its shape).
    pub raw_version: Option<RawJson>,
    /// Capabilities the server offers (today only `oob` exists; unknown ones are kept, not rejected). Entries
    /// that are not strings are left out.
    pub capabilities: Vec<String>,
}

impl Greeting {
    /// The version for printing: `10.0.2` when it was given in today's shape, else the `version` member's JSON
    /// text as sent, else `unknown`. ([`Version`]'s `Display` adds the package string.)
    pub fn version_string(&self) -> String {
        match (&self.version, &self.raw_version) {
            (Some(v), _) => format!("{}.{}.{}", v.major, v.minor, v.micro),
            (None, Some(raw)) => raw.raw_str().to_owned(),
            (None, None) => "unknown".to_owned(),
        }
    }
}

/// A QEMU version as the greeting gives it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Micro version.
    pub micro: u64,
    /// Distribution package string (for example `Debian 1:10.0.2+ds-2`), possibly empty.
    pub package: String,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)?;
        if !self.package.is_empty() {
            write!(f, " ({})", self.package.trim())?;
        }
        Ok(())
    }
}

/// An asynchronous event from the server.
#[derive(Debug, Clone)]
pub struct ServerEvent {
    /// Event name, for example `JOB_STATUS_CHANGE`.
    pub name: String,
    /// The `data` member, when present (`Some` even when it is `null`).
    pub data: Option<RawJson>,
    /// When QEMU emitted it; `None` if the member was missing or malformed.
    pub timestamp: Option<Timestamp>,
}

/// An event timestamp, to the microsecond, as QEMU wrote it. Both fields are -1 when the host clock failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

impl Timestamp {
    /// The time as a [`std::time::SystemTime`], or `None` for QEMU's "no time" marker (-1/-1) or out-of-range values.
    pub fn to_system_time(self) -> Option<std::time::SystemTime> {
        let secs = u64::try_from(self.seconds).ok()?;
        let micros = u32::try_from(self.microseconds).ok().filter(|m| *m < 1_000_000)?;
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, micros * 1000))
    }
}

/// The members a server message may have, borrowed from its bytes.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "QMP", borrow, default)]
    qmp: Option<&'a RawValue>,
    #[serde(rename = "return", borrow, default, deserialize_with = "present")]
    ret: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

/// Keeps a member that is present as `Some`, even when its value is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// The `QMP` member of a greeting: only `capabilities` is required, `version` is read separately.
#[derive(Deserialize)]
struct GreetingBody<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    version: Option<&'a RawValue>,
    #[serde(borrow)]
    capabilities: Vec<&'a RawValue>,
}

/// A version in today's shape.
#[derive(Deserialize)]
struct VersionBody<'a> {
    qemu: VersionTriple,
    #[serde(borrow, default)]
    package: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct VersionTriple {
    major: u64,
    minor: u64,
    micro: u64,
}

/// Classifies one framed message, checking every payload it hands out: each [`RawJson`] in the result is one
/// valid JSON value. Never panics, whatever the bytes.
///
/// [`classify_framed`] is the faster form the [`Client`](crate::Client) uses.
pub fn classify(bytes: Bytes) -> Message {
    classify_with(bytes, Layout::default())
}

/// Classifies one message cut out by a [`Framer`](crate::framer::Framer), with the [`Layout`] the framer gave
/// with it ([`Framer::feed_framed`](crate::framer::Framer::feed_framed)). This is what the
/// [`Client`](crate::Client) does with every message. Never panics, whatever the bytes and layout.
///
/// The answer is [`classify`]'s, with one difference, which makes classification run at framing speed: a
/// reply's `return` payload that is an object or an array, and the first one in the message (as in every
/// reply QEMU writes, `{"return": ..., "id": N}`), is **not validated here**. Its extent comes from the
/// framer, which already scanned it; all that is known of it at this point is that its strings are closed, its
/// brackets balanced and it holds no 0xFF byte. It is validated once, when it is parsed:
/// [`RawJson::deserialize`] and [`RawJson::as_value`] fail with serde_json's syntax error if it is not valid
/// JSON (for the adapters, the per-command `Decode` error of the call it answers; the session goes on), and
/// [`RawJson::raw_str`] is empty if it is not UTF-8. The rest of the message (its other members, the `id`
/// that routes it) is read and checked exactly as [`classify`] does; so a message that `classify` calls
/// `NotJson` only because of such a payload is a `Return` here, routed to its command, and every other
/// message gets the same answer from both.
///
/// A layout that does not belong to these bytes yields a wrong answer (the same as for other bytes), never a
/// panic.
pub fn classify_framed(bytes: Bytes, layout: Layout) -> Message {
    classify_with(bytes, layout)
}

/// [`classify`] when `layout` describes nothing, [`classify_framed`] otherwise.
fn classify_with(bytes: Bytes, layout: Layout) -> Message {
    if let Some((value, id)) = qemu_reply(&bytes, layout) {
        let id = small_id(id).unwrap_or_else(|| bytes.slice_ref(id));
        // The message's own handle narrowed to the payload, rather than a second handle to count and drop.
        let start = value.as_ptr() as usize - bytes.as_ptr() as usize;
        let end = start + value.len();
        let mut value = bytes;
        value.truncate(end);
        value.advance(start);
        return Message::Return { id: Some(RawJson::from_valid(id)), value: RawJson::from_valid(value) };
    }
    let members = match read_members(&bytes, layout) {
        Some(members) => members,
        None => match serde_json::from_slice::<Envelope<'_>>(&bytes) {
            Ok(env) => Members::from(env),
            Err(e) => return unreadable(bytes, &e),
        },
    };
    let slice = |raw: &[u8]| RawJson::from_valid(bytes.slice_ref(raw));
    if let Some(body) = members.qmp {
        return match serde_json::from_str::<GreetingBody<'_>>(std::str::from_utf8(body).unwrap_or_default()) {
            Ok(g) => Message::Greeting(Greeting {
                version: g.version.and_then(parse_version),
                raw_version: g.version.map(|v| slice(v.get().as_bytes())),
                capabilities: g.capabilities.iter().filter_map(|c| serde_json::from_str(c.get()).ok()).collect(),
            }),
            Err(e) => {
                let id = members.id.map(slice);
                Message::UnknownShape { id, reason: format!("greeting of the wrong shape: {e}"), bytes }
            }
        };
    }
    if let Some(name) = members.event {
        let timestamp =
            members.timestamp.and_then(|t| qemu_timestamp(t).or_else(|| serde_json::from_slice::<Timestamp>(t).ok()));
        return Message::Event(ServerEvent { name: name.into_owned(), data: members.data.map(slice), timestamp });
    }
    let id = members.id.map(slice);
    if let Some(value) = members.ret {
        return Message::Return { id, value: slice(value) };
    }
    if let Some(body) = members.error {
        return Message::Error { id, error: QmpError::from_body(slice(body)) };
    }
    let reason = "object with none of QMP, event, return, error".to_owned();
    Message::UnknownShape { bytes, id, reason }
}

/// A message serde could not read as an envelope: text that is not JSON, or JSON of another shape.
fn unreadable(bytes: Bytes, error: &serde_json::Error) -> Message {
    // `RawValue` checks syntax without building anything, and without serde's recursion limit.
    if serde_json::from_slice::<&RawValue>(&bytes).is_err() {
        return Message::NotJson { reason: format!("not valid JSON: {error}"), bytes };
    }
    /// The `id` of an object whose other members serde could not read.
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow, default, deserialize_with = "present")]
        id: Option<&'a RawValue>,
    }
    let id = serde_json::from_slice::<IdOnly<'_>>(&bytes).ok().and_then(|m| m.id);
    let id = id.map(|raw| RawJson::from_valid(bytes.slice_ref(raw.get().as_bytes())));
    let reason = if bytes.first() == Some(&b'{') {
        format!("object of an unknown shape: {error}")
    } else {
        format!("not a JSON object: {error}")
    };
    Message::UnknownShape { bytes, id, reason }
}

/// A greeting's `version` member, when it has today's shape; `None` for any other (the caller keeps the text).
fn parse_version(raw: &RawValue) -> Option<Version> {
    let body: VersionBody<'_> = serde_json::from_str(raw.get()).ok()?;
    let package = body.package.and_then(|p| serde_json::from_str::<String>(p.get()).ok()).unwrap_or_default();
    let VersionTriple { major, minor, micro } = body.qemu;
    Some(Version { major, minor, micro, package })
}

// ----- the fast path ------------------------------------------------------------------------------------------
//
// serde's generic map machinery costs more than the reading itself on small messages, so messages written the
// way QEMU writes them are read by hand: the object's keys here, simple member values (short plain strings,
// integers, literals, empty objects and arrays, timestamps) here, other values by serde. Anything unusual
// (escaped or non-ASCII keys, repeated members, syntax errors, ...) makes the fast path give up, and the
// message goes through serde from the start: so when the fast path gives an answer, it is serde's answer.

/// The members a server message may have: the JSON text of each (valid UTF-8, but for a `return` taken
/// unchecked from the framer's layout), borrowed from the message.
#[derive(Debug, Default, PartialEq)]
struct Members<'a> {
    qmp: Option<&'a [u8]>,
    ret: Option<&'a [u8]>,
    error: Option<&'a [u8]>,
    event: Option<Cow<'a, str>>,
    data: Option<&'a [u8]>,
    timestamp: Option<&'a [u8]>,
    id: Option<&'a [u8]>,
}

impl<'a> From<Envelope<'a>> for Members<'a> {
    fn from(env: Envelope<'a>) -> Self {
        let text = |raw: &'a RawValue| raw.get().as_bytes();
        Members {
            qmp: env.qmp.map(text),
            ret: env.ret.map(text),
            error: env.error.map(text),
            event: env.event,
            data: env.data.map(text),
            timestamp: env.timestamp.map(text),
            id: env.id.map(text),
        }
    }
}

/// A success reply written exactly as QEMU writes one to this client, `{"return": V, "id": N}`, where V is the
/// message's first nested object or array (its end from the framer's layout) and N an integer id of ours:
/// `(V, N)` as text, found by comparing the bytes around V instead of reading member by member. `None` for any
/// other message, which [`read_members`] then reads; for these it would find the same two members.
fn qemu_reply(bytes: &[u8], layout: Layout) -> Option<(&[u8], &[u8])> {
    const RETURN: &[u8] = b"{\"return\": ";
    const ID: &[u8] = b", \"id\": ";
    let end = layout.first_nested_end()?;
    let start = RETURN.len();
    if !bytes.starts_with(RETURN) || !matches!(bytes.get(start), Some(b'{' | b'[')) {
        return None;
    }
    nested_end(bytes, start, end)?;
    let id = bytes.get(end..)?.strip_prefix(ID)?.strip_suffix(b"}")?;
    // A JSON integer without sign: `0`, or digits that do not start with `0`.
    let integer = match id {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    integer.then_some((&bytes[start..end], id))
}

/// An id of one or two digits (what the client's smallest-free ids nearly always are), as static text: the
/// same bytes as the reply's, without a reference to the message's buffer to count.
fn small_id(id: &[u8]) -> Option<Bytes> {
    /// "00", "01", ... "99".
    static PAIRS: [u8; 200] = {
        let mut t = [0u8; 200];
        let mut n = 0;
        while n < 100 {
            t[2 * n] = b'0' + (n / 10) as u8;
            t[2 * n + 1] = b'0' + (n % 10) as u8;
            n += 1;
        }
        t
    };
    let at = match *id {
        [d @ b'0'..=b'9'] => 2 * usize::from(d - b'0') + 1,
        [t @ b'0'..=b'9', d @ b'0'..=b'9'] => 2 * (10 * usize::from(t - b'0') + usize::from(d - b'0')),
        _ => return None,
    };
    Some(Bytes::from_static(&PAIRS[at..at + id.len()]))
}

/// Reads the members of a message by hand; `None` when it cannot tell them exactly as serde would. With a
/// layout from the framer, a `return` member that is the message's first object or array is taken whole from
/// it, unchecked (see [`classify_framed`]).
fn read_members(bytes: &[u8], layout: Layout) -> Option<Members<'_>> {
    let mut members = Members::default();
    let mut seen = 0u8;
    // Whether a member value so far was an object or array (the framer's layout tells the end of the first).
    let mut nested_seen = false;
    let mut p = skip_ws(bytes, 0);
    if bytes.get(p) != Some(&b'{') {
        return None;
    }
    p = skip_ws(bytes, p + 1);
    if bytes.get(p) == Some(&b'}') {
        return (skip_ws(bytes, p + 1) == bytes.len()).then_some(members);
    }
    loop {
        // A key in plain ASCII (no escapes): its text is its value.
        let key_end = plain_string_end(bytes, p)?;
        let key = &bytes[p + 1..key_end - 1];
        p = skip_ws(bytes, key_end);
        if bytes.get(p) != Some(&b':') {
            return None;
        }
        p = skip_ws(bytes, p + 1);
        let nested = matches!(bytes.get(p), Some(b'{' | b'['));
        let known = match layout.first_nested_end() {
            Some(end) if nested && !nested_seen && key == b"return" => nested_end(bytes, p, end),
            _ => None,
        };
        nested_seen |= nested;
        let (value, end) = match known {
            Some(end) => (&bytes[p..end], end),
            None => member_value(bytes, p, key == b"timestamp")?,
        };
        p = end;
        // Members that serde reads as `Option<&RawValue>` take `null` for absent; those read with `present`
        // (return, data, id) keep it.
        let not_null = (value != b"null").then_some(value);
        let bit = match key {
            b"QMP" => set(&mut members.qmp, not_null, 1),
            b"return" => set(&mut members.ret, Some(value), 2),
            b"error" => set(&mut members.error, not_null, 4),
            b"event" => {
                // Only a plain string (or null): an escaped name would need unescaping.
                members.event = match not_null {
                    None => None,
                    Some(v) if plain_string_end(v, 0) == Some(v.len()) => {
                        Some(Cow::Borrowed(std::str::from_utf8(&v[1..v.len() - 1]).ok()?))
                    }
                    Some(_) => return None,
                };
                8
            }
            b"data" => set(&mut members.data, Some(value), 16),
            b"timestamp" => set(&mut members.timestamp, not_null, 32),
            b"id" => set(&mut members.id, Some(value), 64),
            _ => 0,
        };
        if seen & bit != 0 {
            return None; // a repeated member: serde reports it
        }
        seen |= bit;
        p = skip_ws(bytes, p);
        match bytes.get(p) {
            Some(b',') => p = skip_ws(bytes, p + 1),
            Some(b'}') => return (skip_ws(bytes, p + 1) == bytes.len()).then_some(members),
            _ => return None,
        }
    }
}

/// `end`, when it can close the object or array that opens at `bytes[p]`: past it, in the message, at a
/// bracket of the same kind.
fn nested_end(bytes: &[u8], p: usize, end: usize) -> Option<usize> {
    let close = bytes[p] + 2; // '{' + 2 = '}', '[' + 2 = ']'
    (end > p + 1 && bytes.get(end - 1) == Some(&close)).then_some(end)
}

/// Stores a member and returns its bit.
fn set<'a>(slot: &mut Option<&'a [u8]>, value: Option<&'a [u8]>, bit: u8) -> u8 {
    *slot = value;
    bit
}

/// The JSON value at `bytes[p..]`: its text and where it ends. Simple values are read here, others by serde;
/// `None` when the value is not valid JSON.
fn member_value(bytes: &[u8], p: usize, timestamp: bool) -> Option<(&[u8], usize)> {
    let end = match bytes.get(p)? {
        b'"' => plain_string_end(bytes, p),
        b'-' | b'0'..=b'9' => integer_end(bytes, p),
        b't' => bytes[p..].starts_with(b"true").then_some(p + 4),
        b'f' => bytes[p..].starts_with(b"false").then_some(p + 5),
        b'n' => bytes[p..].starts_with(b"null").then_some(p + 4),
        b'{' if timestamp => timestamp_end(bytes, p),
        b'{' | b'[' => {
            let close = skip_ws(bytes, p + 1);
            (bytes.get(close) == Some(&(bytes[p] + 2))).then_some(close + 1) // "{}" or "[]"
        }
        _ => None,
    };
    if let Some(end) = end {
        return Some((&bytes[p..end], end)); // ASCII
    }
    let raw = <&RawValue>::deserialize(&mut serde_json::Deserializer::from_slice(&bytes[p..])).ok()?.get().as_bytes();
    Some((raw, raw.as_ptr() as usize - bytes.as_ptr() as usize + raw.len()))
}

/// The end of a string at `bytes[p..]` made of printable ASCII without escapes, or `None`.
fn plain_string_end(bytes: &[u8], p: usize) -> Option<usize> {
    if bytes.get(p) != Some(&b'"') {
        return None;
    }
    let len = bytes[p + 1..].iter().position(|&b| !(0x20..0x80).contains(&b) || b == b'"' || b == b'\\')?;
    (bytes[p + 1 + len] == b'"').then_some(p + len + 2)
}

/// The end of a JSON integer (`-?(0|[1-9][0-9]*)`) at `bytes[p..]`, or `None` if there is none or a fraction
/// or exponent follows (a number serde reads otherwise).
fn integer_end(bytes: &[u8], p: usize) -> Option<usize> {
    let start = p + usize::from(bytes.get(p) == Some(&b'-'));
    let digits = bytes.get(start..)?.iter().take_while(|b| b.is_ascii_digit()).count();
    let end = start + digits;
    let valid = digits == 1 || (digits > 1 && bytes[start] != b'0');
    (valid && !matches!(bytes.get(end), Some(b'.' | b'e' | b'E'))).then_some(end)
}

/// The end of a timestamp written exactly as QEMU writes it, `{"seconds": S, "microseconds": M}`, or `None`.
fn timestamp_end(bytes: &[u8], p: usize) -> Option<usize> {
    const SECONDS: &[u8] = b"{\"seconds\": ";
    const MICROSECONDS: &[u8] = b", \"microseconds\": ";
    let q = p + SECONDS.len();
    if !bytes[p..].starts_with(SECONDS) {
        return None;
    }
    let q = integer_end(bytes, q)?;
    if !bytes[q..].starts_with(MICROSECONDS) {
        return None;
    }
    let q = integer_end(bytes, q + MICROSECONDS.len())?;
    (bytes.get(q) == Some(&b'}')).then_some(q + 1)
}

/// The position of the first byte at or after `p` that is not JSON whitespace.
fn skip_ws(bytes: &[u8], mut p: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(p) {
        p += 1;
    }
    p
}

/// The value of a timestamp written exactly as QEMU writes it, when serde would read the same; `None` for
/// anything else (which serde then reads).
fn qemu_timestamp(raw: &[u8]) -> Option<Timestamp> {
    let rest = raw.strip_prefix(b"{\"seconds\": ")?;
    let (seconds, rest) = small_int(rest)?;
    let rest = rest.strip_prefix(b", \"microseconds\": ")?;
    let (microseconds, rest) = small_int(rest)?;
    (rest == b"}").then_some(Timestamp { seconds, microseconds })
}

/// A JSON integer of at most 18 digits at the start of `s`, and what follows it; `None` for anything serde
/// would not read as that `i64`: more digits, a fraction or exponent, and `-0` (a float for serde_json).
fn small_int(s: &[u8]) -> Option<(i64, &[u8])> {
    let end = integer_end(s, 0)?;
    let (negative, digits) = match s[..end].strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, &s[..end]),
    };
    if digits.len() > 18 || (negative && digits == b"0") {
        return None;
    }
    let value = digits.iter().fold(0i64, |v, &d| v * 10 + i64::from(d - b'0'));
    Some((if negative { -value } else { value }, &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Message {
        classify(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn greeting() {
        let m = c(
            r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian"}, "capabilities": ["oob"]}}"#,
        );
        let Message::Greeting(g) = m else { panic!("{m:?}") };
        assert_eq!(g.version.as_ref().map(ToString::to_string).as_deref(), Some("10.0.2 (Debian)"));
        assert_eq!(g.version_string(), "10.0.2");
        assert_eq!(
            g.raw_version.as_ref().map(RawJson::raw_str),
            Some(r#"{"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian"}"#)
        );
        assert_eq!(g.capabilities, vec!["oob".to_string()]);
    }

    /// Greetings of old servers and of the QMP wiki: no version, a version string, any other version shape.
    #[test]
    fn greetings_of_any_version_shape() {
        let cases = [
            (r#"{"QMP": {"capabilities": []}}"#, None, None, "unknown"),
            (
                r#"{"QMP": {"version": {"qemu": "0.12.5", "package": ""}, "capabilities": []}}"#,
                None,
                Some(r#"{"qemu": "0.12.5", "package": ""}"#),
                r#"{"qemu": "0.12.5", "package": ""}"#,
            ),
            (r#"{"QMP": {"version": "1.0", "capabilities": ["oob", 7]}}"#, None, Some(r#""1.0""#), r#""1.0""#),
            (r#"{"QMP": {"version": null, "capabilities": []}}"#, None, Some("null"), "null"),
            (
                r#"{"QMP": {"capabilities": [], "version": {"package": 1, "qemu": {"major": 7, "minor": 2, "micro": 22}}}}"#,
                Some("7.2.22"),
                Some(r#"{"package": 1, "qemu": {"major": 7, "minor": 2, "micro": 22}}"#),
                "7.2.22",
            ),
        ];
        for (text, version, raw, printed) in cases {
            let m = c(text);
            let Message::Greeting(g) = m else { panic!("{text}: {m:?}") };
            assert_eq!(
                g.version.as_ref().map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro)).as_deref(),
                version,
                "{text}"
            );
            assert_eq!(g.raw_version.as_ref().map(RawJson::raw_str), raw, "{text}");
            assert_eq!(g.version_string(), printed, "{text}");
        }
        let Message::Greeting(g) = c(r#"{"QMP": {"version": "1.0", "capabilities": ["oob", 7, "x"]}}"#) else {
            panic!()
        };
        assert_eq!(g.capabilities, ["oob", "x"]);
        // No capabilities array: not a greeting.
        for text in [r#"{"QMP": {"version": "1.0"}}"#, r#"{"QMP": {"capabilities": {}}}"#, r#"{"QMP": []}"#] {
            assert!(!matches!(c(text), Message::Greeting(_)), "{text}");
        }
    }

    #[test]
    fn replies_in_any_key_order_and_null_id() {
        let Message::Return { id, value } = c(r#"{"id": 7, "return": {"a": [1]}}"#) else { panic!() };
        assert_eq!(id.unwrap().raw_str(), "7");
        assert_eq!(value.raw_str(), r#"{"a": [1]}"#);
        let Message::Return { id, .. } = c(r#"{"return": {}, "id": null}"#) else { panic!() };
        assert_eq!(id.unwrap().raw_str(), "null");
        let Message::Return { id, .. } = c(r#"{"return": {}}"#) else { panic!() };
        assert!(id.is_none());
        let Message::Return { value, .. } = c(r#"{"return": null}"#) else { panic!() };
        assert_eq!(value.raw_str(), "null");
    }

    #[test]
    fn error_reply() {
        let m = c(r#"{"id": 1, "error": {"class": "CommandNotFound", "desc": "The command x has not been found"}}"#);
        let Message::Error { id, error } = m else { panic!() };
        assert_eq!(id.unwrap().raw_str(), "1");
        assert_eq!(error.class, "CommandNotFound");
        assert_eq!(error.desc, "The command x has not been found");
    }

    #[test]
    fn event_with_microseconds() {
        let m = c(r#"{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "STOP"}"#);
        let Message::Event(e) = m else { panic!() };
        assert_eq!(e.name, "STOP");
        assert!(e.data.is_none());
        assert_eq!(e.timestamp, Some(Timestamp { seconds: 1700000000, microseconds: 123456 }));
    }

    /// The fast path gives serde's answer or none, on QEMU's messages and on mutations of them.
    #[test]
    fn fast_path_agrees_with_serde() {
        let bases: &[&str] = &[
            r#"{"return": {}, "id": 12}"#,
            r#"{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "JOB_STATUS_CHANGE", "data": {"status": "running", "id": "job0"}}"#,
            r#"{"timestamp": {"seconds": -1, "microseconds": -1}, "event": "STOP"}"#,
            r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, "capabilities": ["oob"]}}"#,
            r#"{"id": "x", "error": {"class": "GenericError", "desc": "d\u00e9j\u00e0"}}"#,
            r#"{"return": [1, -0, 2.5, true, false, null, "\"", []], "id": null, "x": [{}]}"#,
            "{\r\n    \"return\": {\r\n    }, \"data\": null, \"timestamp\": null\r\n}",
        ];
        let alphabet: &[&[u8]] = &[
            b"",
            b" ",
            b"\"",
            b"\\",
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b":",
            b"0",
            b"-",
            b".",
            b"e",
            b"1",
            b"n",
            b"\x7f",
            b"\x01",
            b"\xc3\xa9",
            b"\xff",
            b"\"id\": 1, ",
            b"\"event\": \"E\", ",
            b"\"data\": null, ",
        ];
        let mut checked = 0;
        for base in bases {
            let base = base.as_bytes();
            let mut variants = vec![base.to_vec()];
            for at in 0..=base.len() {
                for piece in alphabet {
                    for cut in 0..2 {
                        let mut v = base[..at].to_vec();
                        v.extend_from_slice(piece);
                        v.extend_from_slice(&base[(at + cut).min(base.len())..]);
                        variants.push(v);
                    }
                }
            }
            for v in &variants {
                let serde = serde_json::from_slice::<Envelope<'_>>(v).map(Members::from);
                if let Some(fast) = read_members(v, Layout::default()) {
                    checked += 1;
                    assert_eq!(Ok(&fast), serde.as_ref().map_err(|_| ()), "{}", String::from_utf8_lossy(v));
                }
                if let Some(raw) = serde.as_ref().ok().and_then(|m| m.timestamp) {
                    let fast = qemu_timestamp(raw);
                    assert!(
                        fast.is_none() || fast == serde_json::from_slice(raw).ok(),
                        "{}",
                        String::from_utf8_lossy(raw)
                    );
                }
            }
        }
        assert!(checked > 1000, "{checked}");
        for (raw, want) in [
            (r#"{"seconds": -0, "microseconds": 1}"#, None),
            (r#"{"seconds": 1e3, "microseconds": 1}"#, None),
            (r#"{"seconds": 1234567890123456789, "microseconds": 1}"#, None),
            (r#"{"seconds": -5, "microseconds": 0}"#, Some(Timestamp { seconds: -5, microseconds: 0 })),
        ] {
            assert_eq!(qemu_timestamp(raw.as_bytes()), want, "{raw}");
        }
    }

    /// Frames `text` and classifies each message both ways.
    fn both_ways(text: &[u8]) -> Vec<(Message, Message)> {
        let mut framer = crate::framer::Framer::new(1 << 20);
        let mut out = Vec::new();
        framer.feed_framed(text, |frame, layout| {
            if let crate::framer::Frame::Message(m) = frame {
                out.push((classify(m.clone()), classify_framed(m, layout)));
            }
        });
        out
    }

    /// `classify_framed` gives `classify`'s answer, except for a reply whose nested `return` payload is not
    /// valid JSON: that one is a `Return` (routed by its id) whose payload fails to deserialize.
    #[test]
    fn framed_classification_agrees_but_for_invalid_return_payloads() {
        let bases: &[&str] = &[
            r#"{"return": [{"a": 1}, [2, "x"], {}], "id": 12}"#,
            r#"{"id": "x", "return": {"k": [1, 2.5e3, null, "\u00e9"]}}"#,
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "E", "data": {"a": [1]}, "return": [1]}"#,
            "{\r\n    \"return\": {\r\n    }\r\n}",
            r#"{"return": [1], "x": [2], "id": 3}"#,
            r#"{"error": {"class": "C", "desc": "d"}, "return": [[]], "id": 1}"#,
            // QEMU's own shape (read by `qemu_reply`).
            r#"{"return": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "v"}, "id": 42}"#,
            r#"{"return": [], "id": 0}"#,
        ];
        let alphabet: &[&[u8]] =
            &[b"", b" ", b"\"", b"\\", b"{", b"}", b"[", b"]", b",", b":", b"0", b"x", b"\xff", b"\xc3"];
        let (mut agreed, mut deferred) = (0, 0);
        for base in bases {
            let base = base.as_bytes();
            for at in 0..=base.len() {
                for piece in alphabet {
                    for cut in 0..2 {
                        let mut v = base[..at].to_vec();
                        v.extend_from_slice(piece);
                        v.extend_from_slice(&base[(at + cut).min(base.len())..]);
                        for (checked, framed) in both_ways(&v) {
                            let shown = String::from_utf8_lossy(&v);
                            match (&checked, &framed) {
                                (Message::NotJson { .. }, Message::Return { value, .. }) => {
                                    assert!(value.as_value().is_err(), "{shown}: {value:?} is valid");
                                    deferred += 1;
                                }
                                _ => {
                                    assert_eq!(format!("{checked:?}"), format!("{framed:?}"), "{shown}");
                                    agreed += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(agreed > 1000 && deferred > 100, "{agreed} agreed, {deferred} deferred");
        // QEMU's shape with garbage inside: routed, and the payload fails when parsed.
        let [(checked, Message::Return { id, value })] = &both_ways(br#"{"return": [1, garbage], "id": 2}"#)[..] else {
            panic!()
        };
        assert!(matches!(checked, Message::NotJson { .. }));
        assert_eq!(id.as_ref().map(RawJson::raw_str), Some("2"));
        assert!(value.deserialize::<serde_json::Value>().unwrap_err().is_syntax());
    }

    /// `qemu_reply` takes QEMU's exact shape only, and then finds what `read_members` finds.
    #[test]
    fn qemu_reply_takes_only_the_exact_shape() {
        let read = |text: &str| {
            let (framed, _) = &both_ways(text.as_bytes())[0];
            let mut layout = None;
            crate::framer::Framer::new(1 << 20).feed_framed(text.as_bytes(), |_, l| layout = Some(l));
            let layout = layout.unwrap();
            let fast = qemu_reply(text.as_bytes(), layout);
            if let Some((value, id)) = fast {
                let members = read_members(text.as_bytes(), layout).unwrap();
                assert_eq!((members.ret, members.id), (Some(value), Some(id)), "{text}");
                assert!(matches!(framed, Message::Return { .. }), "{text}");
            }
            fast.map(|(v, id)| (String::from_utf8_lossy(v).into_owned(), String::from_utf8_lossy(id).into_owned()))
        };
        let pair = |v: &str, id: &str| Some((v.to_owned(), id.to_owned()));
        assert_eq!(read(r#"{"return": {"a": [1, {}]}, "id": 17}"#), pair(r#"{"a": [1, {}]}"#, "17"));
        assert_eq!(read(r#"{"return": [], "id": 0}"#), pair("[]", "0"));
        for n in [0, 1, 7, 9, 10, 42, 99, 100, 12345] {
            let text = format!(r#"{{"return": {{}}, "id": {n}}}"#);
            let [(_, Message::Return { id: Some(id), .. })] = &both_ways(text.as_bytes())[..] else { panic!("{text}") };
            assert_eq!(id.raw_str(), n.to_string());
        }
        assert_eq!(read(r#"{"return": {}, "id": 18446744073709551616}"#), pair("{}", "18446744073709551616"));
        for other in [
            r#"{"return": {}, "id": 07}"#,
            r#"{"return": {}, "id": -1}"#,
            r#"{"return": {}, "id": 1.0}"#,
            r#"{"return": {}, "id": "1"}"#,
            r#"{"return": {}, "id": }"#,
            r#"{"return": {},  "id": 1}"#,
            r#"{"return": {}, "id": 1 }"#,
            r#"{"return":{}, "id": 1}"#,
            r#"{"return": 5, "id": 1}"#,
            r#"{"return": {}}"#,
            r#"{"return": {}, "id": 1, "x": 2}"#,
            r#"{"error": {}, "id": 1}"#,
        ] {
            assert_eq!(read(other), None, "{other}");
        }
        // A layout that belongs to other bytes: no answer, no panic.
        let layout = |text: &str| {
            let mut layout = Layout::default();
            crate::framer::Framer::new(1 << 20).feed_framed(text.as_bytes(), |_, l| layout = l);
            layout
        };
        let long = layout(r#"{"return": {"a": [1, 2, 3, 4, 5, 6, 7, 8, 9]}, "id": 1}"#);
        for short in [r#"{"return": {}, "id": 1}"#, r#"{"return": "#, r#"{"return": {"#] {
            assert_eq!(qemu_reply(short.as_bytes(), long), None, "{short}");
        }
    }

    #[test]
    fn not_json() {
        for s in [r#"{"return": {}, "id": inf}"#, "garbage", "[1, garbage", r#"{"id": 1, "x": 1"#, "{\"a\": \"\u{1}\"}"]
        {
            let m = c(s);
            assert!(matches!(&m, Message::NotJson { bytes, reason } if bytes == s && !reason.is_empty()), "{s}: {m:?}");
        }
    }

    #[test]
    fn unknown_shape_keeps_the_id() {
        let cases = [
            ("[1]", None),
            ("12", None),
            (r#""s""#, None),
            (r#"{"x": 1}"#, None),
            (r#"{"x": 1, "id": "a"}"#, Some(r#""a""#)),
            (r#"{"id": null}"#, Some("null")),
            (r#"{"QMP": 1, "id": 5}"#, Some("5")),
            (r#"{"event": 7, "id": {"k": [1]}}"#, Some(r#"{"k": [1]}"#)),
            (r#"{"return": 1, "return": 2, "id": 3}"#, Some("3")),
            (r#"{"id": 1, "id": 2}"#, None),
        ];
        for (s, want) in cases {
            let m = c(s);
            let Message::UnknownShape { bytes, id, reason } = m else { panic!("{s}: {m:?}") };
            assert_eq!(bytes, s.as_bytes(), "{s}");
            assert_eq!(id.as_ref().map(RawJson::raw_str), want, "{s}");
            assert!(!reason.is_empty());
        }
        // Deeper than serde's recursion limit is still valid JSON.
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        assert!(matches!(c(&deep), Message::UnknownShape { .. }));
    }
}
