//! Generators of QMP messages, valid and malformed, for property tests and fuzzing (feature `arbitrary`).
//!
//! Each generator draws its choices from an [`arbitrary::Unstructured`], so the same generators serve a fuzzer
//! (libFuzzer's bytes through `arbitrary`, see the [`ServerStream`], [`ClientStream`] and [`Malformed`]
//! types) and proptest (module `strategies`, feature `proptest`: it shrinks the bytes the choices come
//! from).
//!
//! - valid: [`command`] (`execute` / `exec-oob`, arguments, an id of any JSON type), [`reply`] (`return` or
//!   `error`), [`event`], [`greeting`], any JSON [`value`];
//! - malformed: [`malformed`]: bad JSON (truncated, a stray byte, a bad keyword, unbalanced brackets, a
//!   control character, 0xFF), valid JSON of a wrong shape, a message over a size limit, nesting deeper than
//!   QEMU's 1024 levels;
//! - streams: [`server_stream`] (a greeting, then replies, events and malformed messages as a server might
//!   send them, with QEMU's CRLF, the agent's LF, `pretty=on` or 0xFF delimiters) and [`client_stream`];
//! - [`split_points`]: where to cut a stream to feed it in chunks.
//!
//! ```
//! use arbitrary::Unstructured;
//! use qmp_test_kit::generate;
//!
//! let seed = [7u8; 64];
//! let mut u = Unstructured::new(&seed);
//! let command = generate::command(&mut u)?;
//! assert!(command.get("execute").or(command.get("exec-oob")).is_some());
//! let bytes = generate::server_stream(&mut u, 4096)?;
//! assert!(bytes.starts_with(b"{"));
//! # Ok::<(), arbitrary::Error>(())
//! ```

use arbitrary::{Arbitrary, Result, Unstructured};
use serde_json::{json, Map, Value};

/// Command names QEMU has, and a few it has not.
const COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-version",
    "query-status",
    "query-commands",
    "query-block",
    "query-named-block-nodes",
    "query-jobs",
    "blockdev-add",
    "blockdev-del",
    "blockdev-create",
    "job-dismiss",
    "stop",
    "cont",
    "quit",
    "guest-sync-delimited",
    "guest-info",
    "no-such-command",
];

/// Event names.
const EVENTS: &[&str] = &["JOB_STATUS_CHANGE", "BLOCK_JOB_READY", "STOP", "RESUME", "SHUTDOWN", "DEVICE_DELETED"];

/// Error classes.
const CLASSES: &[&str] = &["GenericError", "CommandNotFound", "DeviceNotFound", "KVMMissingCap"];

/// Keys of argument and data objects.
const KEYS: &[&str] = &["node-name", "driver", "id", "status", "size", "enable", "flat", "job-id", "device"];

/// Nesting of generated JSON values (well within every parser's limit; see [`malformed`] for deeper).
const VALUE_DEPTH: u32 = 4;

/// A string: a realistic key or name, or arbitrary text (quotes, escapes, control characters, non-ASCII).
pub fn string(u: &mut Unstructured) -> Result<String> {
    if u.ratio(1, 2)? {
        return Ok((*u.choose(KEYS)?).to_owned());
    }
    let len = u.int_in_range(0..=24)?;
    (0..len).map(|_| character(u)).collect()
}

/// Mostly printable ASCII; sometimes a control character, a quote or backslash, or any character.
fn character(u: &mut Unstructured) -> Result<char> {
    Ok(match u.int_in_range(0..=9)? {
        0 => char::from(u.int_in_range(0..=0x1fu8)?),
        1 => *u.choose(&['"', '\\', '/', '\u{7f}', '\u{ff}', '\u{2028}'])?,
        2 => u.arbitrary()?,
        _ => char::from(u.int_in_range(0x20..=0x7eu8)?),
    })
}

/// Any JSON value, nested at most `depth` levels.
pub fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let kinds = if depth == 0 { 5 } else { 7 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 if u.ratio(1, 4)? => json!(u.arbitrary::<u64>()?),
        2 => json!(u.arbitrary::<i64>()?),
        3 => {
            let f: f64 = u.arbitrary()?;
            if f.is_finite() {
                json!(f)
            } else {
                json!(0.5)
            }
        }
        4 => Value::String(string(u)?),
        5 => {
            let len = u.int_in_range(0..=4)?;
            Value::Array((0..len).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => Value::Object(object(u, depth - 1)?),
    })
}

/// A JSON object of up to four members.
pub fn object(u: &mut Unstructured, depth: u32) -> Result<Map<String, Value>> {
    let len = u.int_in_range(0..=4)?;
    (0..len).map(|_| Ok((string(u)?, value(u, depth)?))).collect()
}

/// An id as a client might send it: mostly an integer or a string, sometimes any JSON value.
pub fn id(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=3)? {
        0 => json!(u.int_in_range(0..=1000u32)?),
        1 => Value::String(string(u)?),
        _ => value(u, 1)?,
    })
}

/// A valid command: `{"execute" | "exec-oob": NAME, "arguments"?: {...}, "id"?: ID}`.
pub fn command(u: &mut Unstructured) -> Result<Value> {
    let mut message = Map::new();
    let name = if u.ratio(4, 5)? { (*u.choose(COMMANDS)?).to_owned() } else { string(u)? };
    let verb = if u.ratio(1, 8)? { "exec-oob" } else { "execute" };
    message.insert(verb.into(), Value::String(name));
    if u.arbitrary()? {
        message.insert("arguments".into(), Value::Object(object(u, VALUE_DEPTH - 1)?));
    }
    if u.ratio(3, 4)? {
        message.insert("id".into(), id(u)?);
    }
    Ok(Value::Object(message))
}

/// A valid reply: `{"return": VALUE, "id"?: ID}` or `{"error": {"class", "desc"}, "id"?: ID}`.
pub fn reply(u: &mut Unstructured) -> Result<Value> {
    let mut message = Map::new();
    if u.ratio(3, 4)? {
        message.insert("return".into(), value(u, VALUE_DEPTH)?);
    } else {
        let class = (*u.choose(CLASSES)?).to_owned();
        message.insert("error".into(), json!({"class": class, "desc": string(u)?}));
    }
    if u.ratio(7, 8)? {
        message.insert("id".into(), id(u)?);
    }
    Ok(Value::Object(message))
}

/// A valid event: `{"event": NAME, "data"?: {...}, "timestamp": {"seconds", "microseconds"}}`.
pub fn event(u: &mut Unstructured) -> Result<Value> {
    let name = if u.ratio(4, 5)? { (*u.choose(EVENTS)?).to_owned() } else { string(u)? };
    let seconds = u.int_in_range(-1..=4_000_000_000i64)?;
    let microseconds = u.int_in_range(-1..=999_999i64)?;
    let mut message = Map::new();
    message.insert("event".into(), Value::String(name));
    if u.arbitrary()? {
        message.insert("data".into(), Value::Object(object(u, VALUE_DEPTH - 1)?));
    }
    message.insert("timestamp".into(), json!({"seconds": seconds, "microseconds": microseconds}));
    Ok(Value::Object(message))
}

/// A valid greeting: `{"QMP": {"version": {"qemu": {"major", "minor", "micro"}, "package"}, "capabilities"}}`.
pub fn greeting(u: &mut Unstructured) -> Result<Value> {
    let version = json!({
        "qemu": {"major": u.int_in_range(2..=11u32)?, "minor": u.int_in_range(0..=2u32)?, "micro": u.int_in_range(0..=99u32)?},
        "package": string(u)?,
    });
    let capabilities: Vec<&str> = match u.int_in_range(0..=2)? {
        0 => vec![],
        1 => vec!["oob"],
        _ => vec!["oob", "future-capability"],
    };
    Ok(json!({"QMP": {"version": version, "capabilities": capabilities}}))
}

/// How a message is written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
#[non_exhaustive]
pub enum Framing {
    /// Compact JSON and CRLF, as QEMU's monitor writes.
    Crlf,
    /// Compact JSON and LF, as the guest agent writes.
    Lf,
    /// Indented over several lines (QEMU's `pretty=on`).
    Pretty,
    /// 0xFF, compact JSON and LF: the agent's `guest-sync-delimited` reply.
    Delimited,
    /// Compact JSON with nothing after it (messages run together; JSON framing still tells them apart).
    Bare,
}

/// `message` written with `framing`.
pub fn framed(message: &Value, framing: Framing) -> Vec<u8> {
    let mut out = Vec::new();
    match framing {
        Framing::Crlf => out.extend(format!("{message}\r\n").bytes()),
        Framing::Lf => out.extend(format!("{message}\n").bytes()),
        Framing::Pretty => out.extend(format!("{message:#}\n").bytes()),
        Framing::Delimited => {
            out.push(0xFF);
            out.extend(format!("{message}\n").bytes());
        }
        Framing::Bare => out.extend(message.to_string().bytes()),
    }
    out
}

/// A malformed message, at most about `max_size` bytes long (a "huge" one is just over it): bad JSON, a
/// valid JSON value of a shape QMP does not have, a message over `max_size`, or nesting deeper than 1024.
/// Like real corruption, a changed byte now and then leaves a valid message (a letter in a string changed).
pub fn malformed(u: &mut Unstructured, max_size: usize) -> Result<Vec<u8>> {
    let message = if u.arbitrary()? { reply(u)? } else { command(u)? };
    let text = message.to_string().into_bytes();
    Ok(match u.int_in_range(0..=9)? {
        // Cut short.
        0 => text[..u.int_in_range(0..=text.len())?].to_vec(),
        // A byte changed or inserted.
        1 | 2 => {
            let mut text = text;
            let at = u.int_in_range(0..=text.len() - 1)?;
            let byte = *u.choose(b"{}[]\",:'\\\x00\x01\x1f\xff\xc3a 0-")?;
            if u.arbitrary()? {
                text[at] = byte;
            } else {
                text.insert(at, byte);
            }
            text
        }
        3 => {
            u.choose(&[&b"garbage"[..], b"nul", b"tru", b"{'execute': 'x'}", b"]]", b"}", b"\x01", b"1e400"])?.to_vec()
        }
        // Valid JSON, wrong shape.
        4 => value(u, 2)?.to_string().into_bytes(),
        5 => wrong_shape(u)?.to_string().into_bytes(),
        6 => json!({"execute": string(u)?, "arguments": value(u, 1)?, "extra": true}).to_string().into_bytes(),
        // Over the limit.
        7 => json!({"return": "x".repeat(max_size), "id": 1}).to_string().into_bytes(),
        // Deeper than QEMU's limit (1024) and serde_json's (128).
        _ => {
            let depth = u.int_in_range(100..=1100)?;
            let (open, close) = if u.arbitrary()? { ("[", "]") } else { ("{\"a\":", "}") };
            let closed = if u.ratio(9, 10)? { depth } else { depth / 2 };
            format!("{}1{}", open.repeat(depth), close.repeat(closed)).into_bytes()
        }
    })
}

/// Valid JSON objects that are not QMP messages, or QMP messages with a member of the wrong type.
fn wrong_shape(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=7)? {
        0 => json!({"unknown": value(u, 1)?}),
        1 => json!({"return": value(u, 1)?, "error": {"class": "GenericError", "desc": "both"}}),
        2 => json!({"error": value(u, 0)?, "id": id(u)?}),
        3 => json!({"error": {"class": value(u, 0)?}, "id": id(u)?}),
        4 => json!({"event": value(u, 0)?, "timestamp": value(u, 1)?}),
        5 => json!({"QMP": value(u, 1)?}),
        6 => json!({"execute": value(u, 0)?, "id": id(u)?}),
        _ => json!({"execute": "query-status", "arguments": [value(u, 0)?]}),
    })
}

/// What a server might send: usually a greeting first, then replies, events and now and then a malformed
/// message, with any framing, up to about `max_size` bytes.
pub fn server_stream(u: &mut Unstructured, max_size: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if u.ratio(7, 8)? {
        out.extend(framed(&greeting(u)?, Framing::Crlf));
    }
    while out.len() < max_size && !u.is_empty() {
        let framing: Framing = u.arbitrary()?;
        match u.int_in_range(0..=9)? {
            0..=4 => out.extend(framed(&reply(u)?, framing)),
            5..=7 => out.extend(framed(&event(u)?, framing)),
            8 => out.extend(framed(&greeting(u)?, framing)),
            _ => {
                out.extend(malformed(u, max_size / 2)?);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    Ok(out)
}

/// What a client might send: commands (now and then a malformed one), up to about `max_size` bytes.
pub fn client_stream(u: &mut Unstructured, max_size: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if u.ratio(7, 8)? {
        out.extend_from_slice(b"{\"execute\": \"qmp_capabilities\"}\r\n");
    }
    while out.len() < max_size && !u.is_empty() {
        if u.ratio(1, 8)? {
            out.extend(malformed(u, max_size / 2)?);
        } else {
            let framing = if u.arbitrary()? { Framing::Crlf } else { Framing::Bare };
            out.extend(framed(&command(u)?, framing));
        }
    }
    Ok(out)
}

/// Increasing offsets in `0..len` at which to cut a stream of `len` bytes into chunks.
pub fn split_points(u: &mut Unstructured, len: usize) -> Result<Vec<usize>> {
    let mut points = Vec::new();
    let mut at = 0;
    while at < len && !u.is_empty() {
        at += u.int_in_range(1..=64)?;
        if at < len {
            points.push(at);
        }
    }
    Ok(points)
}

/// `bytes` cut at `points` (as [`split_points`] gives them).
pub fn chunks<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for &p in points.iter().filter(|&&p| p <= bytes.len()) {
        out.push(&bytes[start..p.max(start)]);
        start = p.max(start);
    }
    out.push(&bytes[start..]);
    out
}

/// Bytes a server might send ([`server_stream`] of at most 4 KiB), for fuzz targets:
/// `fuzz_target!(|stream: ServerStream| ...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStream(pub Vec<u8>);

/// Bytes a client might send ([`client_stream`] of at most 4 KiB), for fuzz targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStream(pub Vec<u8>);

/// One [`malformed`] message (limit 1 KiB), for fuzz targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub Vec<u8>);

/// The size the fuzzing types aim at.
const FUZZ_SIZE: usize = 4096;

impl<'a> Arbitrary<'a> for ServerStream {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        server_stream(u, FUZZ_SIZE).map(ServerStream)
    }
}

impl<'a> Arbitrary<'a> for ClientStream {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        client_stream(u, FUZZ_SIZE).map(ClientStream)
    }
}

impl<'a> Arbitrary<'a> for Malformed {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        malformed(u, 1024).map(Malformed)
    }
}
