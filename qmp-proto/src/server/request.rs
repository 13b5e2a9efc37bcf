//! A request read without building it: only what dispatch needs of a command object, its top-level members: the
//! `execute` / `exec-oob` name, the `arguments` as JSON text ([`Arguments`]), the id as the bytes QEMU will echo,
//! and the first member that has no business there.
//!
//! This is the server's hot path. No value tree is built for the arguments (they stay text), nor for the ids
//! (kept as the text the client wrote; QEMU writes the common ones, an integer, a plain string, a keyword, back
//! as they came). A command read whole by the fast path costs no allocation: its name and id are short texts
//! kept inline, and its arguments are a slice of the server's input buffer ([`Members::into_command`] leaves
//! them to the caller, who owns that buffer). What QEMU reads differently from standard JSON takes the slow
//! path through [`QObject`]s ([`Arguments`] has the table).
//!
//! Two readers find the members ([`Members`]): the [`Summary`] sink of QEMU's parser, which reads any message
//! and reports every error QEMU reports, and the [`fast`](super::fast) path, which reads only the common
//! messages whole in one pass and leaves everything else to the first. Both give the same [`Members`] for the
//! messages the fast path reads.
//!
//! Checking the members (QEMU's `qmp_dispatch_check_obj`) waits for dispatch, which knows whether OOB is
//! enabled: [`CommandObject::check`] walks the members in QEMU's hash order, so that of two faults the one QEMU
//! reports is reported.

use std::cmp::Reverse;
use std::ops::Range;

use bytes::Bytes;
use serde_json::Value;

use super::arguments::Arguments;
use super::builtin::c_str;
use super::lexer::Kind;
use super::parse_bytes;
use super::parser::{parse_string, parse_with, Decoded, Keyword, Sink, Token};
use super::qobject::{bucket, QDict, QObject, PLAIN};
use super::short::ShortBytes;

/// A message read in full.
// Lives only on the stack between reading a command and dispatching it: boxing the object would cost an
// allocation per command for nothing (the lint fires when serde_json's `preserve_order`, enabled elsewhere in the
// workspace, makes the lazily built map larger).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub(crate) enum Request {
    /// Valid JSON, but not an object.
    NotObject,
    /// A JSON object: a command, once [checked](CommandObject::check).
    Object(CommandObject),
}

/// The members of a command object that dispatch looks at. `execute`, `exec-oob` and `arguments` come with
/// their insertion number (`seq`), which with their key's hash bucket gives QEMU's iteration order, and
/// whether their value has the right type.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct CommandObject {
    /// `execute`: insertion number, and whether it is a string.
    execute: Option<(u32, bool)>,
    /// `exec-oob`: insertion number, and whether it is a string.
    exec_oob: Option<(u32, bool)>,
    /// The name (valid UTF-8), when exactly one of `execute` and `exec-oob` is present, as a string.
    name: Option<ShortBytes>,
    /// `arguments`: insertion number, and whether it is an object.
    arguments_seq: Option<(u32, bool)>,
    /// The `arguments` object.
    arguments: Option<Arguments>,
    /// The id: its tokens as the client wrote them (without whitespace between them).
    id: Option<ShortBytes>,
    /// The bytes QEMU writes for the id (see [`echo`]) when they are not the id's text (rare: `1e3`).
    echo: Option<Box<[u8]>>,
    /// The first other member in QEMU's order: its key's bucket, its insertion number, its key.
    unexpected: Option<Box<(u32, u32, Vec<u8>)>>,
    /// The `arguments` as QEMU's values, for the commands the server answers itself (see [`is_builtin`]).
    builtin_arguments: Option<Box<QDict>>,
}

/// True for the commands the server may answer itself. Their arguments are read as QEMU's values (as QEMU
/// checks them, in its member order), not as text. (A match on the bytes: one jump on the length and one
/// comparison, not a comparison per name.)
pub(crate) fn is_builtin(name: &[u8]) -> bool {
    matches!(name, b"qmp_capabilities" | b"guest-sync" | b"guest-sync-delimited")
}

/// What dispatch needs of a command read, whichever reader read it: a [`CommandObject`] (any command object),
/// or a [`PlainCommand`](super::plain::PlainCommand) (a common command taken straight from the input).
pub(crate) trait ReadCommand {
    /// QEMU's `qmp_dispatch_check_obj`: Ok with whether the command came as `exec-oob`, or the first fault
    /// QEMU reports. The name and arguments stay in place, for [`name`](Self::name) and
    /// [`into_parts`](Self::into_parts).
    fn check(&self, allow_oob: bool) -> Result<bool, String>;
    /// The command name (valid UTF-8), once [`check`](Self::check) passed; empty before.
    fn name(&self) -> &[u8];
    /// The bytes the reply echoes for the id (it never fails the check: usable whatever the check finds).
    fn echo(&self) -> Option<&[u8]>;
    /// The `arguments` as values, for the commands the server answers itself (see [`is_builtin`]).
    fn builtin_arguments(&self) -> Option<&QDict>;
    /// What a command handed to the caller keeps, and the echo the server keeps until the reply. Taken once
    /// [`check`](Self::check) passed, and moved straight to where they go.
    fn into_parts(self) -> Parts;
}

/// A command's parts, as [`ReadCommand::into_parts`] gives them.
#[derive(Debug, PartialEq)]
pub(crate) struct Parts {
    /// The name (valid UTF-8).
    pub(crate) name: ShortBytes,
    /// The arguments, `{}` without any.
    pub(crate) arguments: Arguments,
    /// The id's text (see [`Command::id_text`](super::Command::id_text)).
    pub(crate) id: Option<ShortBytes>,
    /// The bytes the reply echoes for the id ([`ReadCommand::echo`]), a copy of their own.
    pub(crate) echo: Option<ShortBytes>,
}

impl ReadCommand for &mut CommandObject {
    fn check(&self, allow_oob: bool) -> Result<bool, String> {
        CommandObject::check(self, allow_oob)
    }

    fn name(&self) -> &[u8] {
        self.name.as_ref().map_or(&[][..], ShortBytes::as_bytes)
    }

    fn echo(&self) -> Option<&[u8]> {
        self.echo.as_deref().or(self.id.as_ref().map(ShortBytes::as_bytes))
    }

    fn builtin_arguments(&self) -> Option<&QDict> {
        self.builtin_arguments.as_deref()
    }

    #[inline]
    fn into_parts(self) -> Parts {
        // Nearly always the id as written: a copy of a fixed size.
        let echo = match &self.echo {
            Some(echo) => Some(ShortBytes::new(echo)),
            None => self.id.clone(),
        };
        let name = self.name.take().unwrap_or_else(|| ShortBytes::new(b""));
        Parts { name, arguments: self.arguments.take().unwrap_or_default(), id: self.id.take(), echo }
    }
}

/// The members [`CommandObject::check`] walks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Member {
    Execute,
    ExecOob,
    Arguments,
    Unexpected,
}

impl CommandObject {
    /// True for QEMU's `qmp_is_oob()`: `exec-oob` without `execute`.
    pub(crate) fn is_oob(&self) -> bool {
        self.exec_oob.is_some() && self.execute.is_none()
    }

    /// Gives the command the text of its `arguments` when [`Members::into_command`] left it to the caller.
    pub(crate) fn set_arguments(&mut self, text: Bytes) {
        self.arguments = Some(Arguments::from_verbatim(text));
    }

    /// QEMU's `qmp_dispatch_check_obj`: the members checked in QEMU's hash order, the first fault reported.
    /// Returns whether the command came as `exec-oob` (see [`ReadCommand::check`]).
    pub(crate) fn check(&self, allow_oob: bool) -> Result<bool, String> {
        // Without a fault, the order of the members does not matter: the common case needs no walk.
        let one_exec = match (self.execute, self.exec_oob) {
            (Some((_, true)), None) => Some(false),
            (None, Some((_, true))) if allow_oob => Some(true),
            _ => None,
        };
        let arguments_ok = self.arguments_seq.is_none_or(|a| a.1);
        if let (Some(oob), true, None) = (one_exec, arguments_ok, &self.unexpected) {
            // One `execute` or `exec-oob`, a string: the name is there.
            return match self.name {
                Some(_) => Ok(oob),
                None => Err("QMP input lacks member 'execute'".into()),
            };
        }
        self.check_in_order(allow_oob)
    }

    /// [`check`](Self::check) the long way: in QEMU's order, for the first fault.
    fn check_in_order(&self, allow_oob: bool) -> Result<bool, String> {
        const EXECUTE: u32 = bucket(b"execute");
        const EXEC_OOB: u32 = bucket(b"exec-oob");
        const ARGUMENTS: u32 = bucket(b"arguments");
        let mut order = [(0, Reverse(0), Member::Unexpected); 4];
        let mut members = 0;
        let mut add = |bucket: u32, seq: u32, member| {
            order[members] = (bucket, Reverse(seq), member);
            members += 1;
        };
        if let Some((seq, _)) = self.execute {
            add(EXECUTE, seq, Member::Execute);
        }
        if let Some((seq, _)) = self.exec_oob {
            add(EXEC_OOB, seq, Member::ExecOob);
        }
        if let Some((seq, _)) = self.arguments_seq {
            add(ARGUMENTS, seq, Member::Arguments);
        }
        if let Some(unexpected) = &self.unexpected {
            add(unexpected.0, unexpected.1, Member::Unexpected);
        }
        let order = &mut order[..members];
        order.sort_unstable_by_key(|&(bucket, seq, _)| (bucket, seq));
        let mut exec: Option<Member> = None;
        for &(_, _, member) in order.iter() {
            let (key, is_string) = match member {
                Member::Execute => ("execute", self.execute.is_some_and(|e| e.1)),
                Member::ExecOob if allow_oob => ("exec-oob", self.exec_oob.is_some_and(|e| e.1)),
                Member::ExecOob => return Err("QMP input member 'exec-oob' is unexpected".into()),
                Member::Arguments => {
                    if self.arguments_seq.is_some_and(|a| !a.1) {
                        return Err("QMP input member 'arguments' must be an object".into());
                    }
                    continue;
                }
                Member::Unexpected => {
                    let key = self.unexpected.as_ref().map_or(&[][..], |u| &u.2[..]);
                    return Err(format!("QMP input member '{}' is unexpected", c_str(key)));
                }
            };
            if !is_string {
                return Err(format!("QMP input member '{key}' must be a string"));
            }
            if let Some(first) = exec {
                let first = if first == Member::Execute { "execute" } else { "exec-oob" };
                return Err(format!("QMP input member '{key}' clashes with '{first}'"));
            }
            exec = Some(member);
        }
        match (exec, &self.name) {
            (Some(member), Some(_)) => Ok(member == Member::ExecOob),
            _ => Err("QMP input lacks member 'execute'".into()),
        }
    }
}

/// Where a top-level member's value is in the message text, and what it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Found {
    /// Insertion number (QDict's).
    pub(crate) seq: u32,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) shape: Shape,
    /// The text is standard JSON for what QEMU reads (see [`Arguments`]).
    pub(crate) json: bool,
    /// No whitespace between the value's tokens.
    pub(crate) compact: bool,
    /// A one-token value QEMU writes back as it was written: a double-quoted string of printable ASCII
    /// without escapes, an integer that fits 64 bits but `-0`, a keyword (known to the fast path; the
    /// parser's sink leaves it false, and the text is then looked at when needed).
    pub(crate) plain: bool,
}

/// What a value is, as far as dispatch cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Object,
    List,
    String,
    Scalar,
}

/// The top-level members of a command object read, as places in the message text.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Members {
    pub(crate) execute: Option<Found>,
    pub(crate) exec_oob: Option<Found>,
    pub(crate) arguments: Option<Found>,
    pub(crate) id: Option<Found>,
    /// The other member first in QEMU's order: bucket, insertion number, and where its key's token is.
    pub(crate) unexpected: Option<(u32, u32, usize, usize)>,
}

impl Members {
    /// Records member number `seq`, whose key is `key` (decoded; its token at `key_start..key_end`).
    pub(crate) fn record(&mut self, key: &[u8], key_start: usize, key_end: usize, value: Found) {
        // Told apart by their first byte (three values: compared, not a jump table on the length, whose target
        // changes from member to member and is mispredicted), then compared whole.
        let slot = match key.first() {
            Some(b'e') if key == b"execute" => &mut self.execute,
            Some(b'a') if key == b"arguments" => &mut self.arguments,
            Some(b'i') if key == b"id" => &mut self.id,
            Some(b'e') if key == b"exec-oob" => &mut self.exec_oob,
            _ => {
                let order = (bucket(key), Reverse(value.seq));
                if self.unexpected.is_none_or(|(b, s, ..)| order < (b, Reverse(s))) {
                    self.unexpected = Some((order.0, value.seq, key_start, key_end));
                }
                return;
            }
        };
        *slot = Some(value);
    }

    /// The owned command object: the name decoded, the id's text kept, the arguments normalised when they
    /// are not the client's text as it is. When they are (standard JSON without whitespace between its
    /// tokens, nearly always), they are left out, and their place in `text` returned: the caller takes them
    /// from the buffer `text` came from ([`CommandObject::set_arguments`]), without copying them.
    pub(crate) fn into_command(self, text: &[u8]) -> (CommandObject, Option<Range<usize>>) {
        let is_string = |found: Found| (found.seq, found.shape == Shape::String);
        let (execute, exec_oob) = (self.execute.map(is_string), self.exec_oob.map(is_string));
        let name = match (self.execute, self.exec_oob) {
            (Some(found), None) | (None, Some(found)) if found.shape == Shape::String => Some(decode_name(text, found)),
            _ => None,
        };
        let arguments = self.arguments.filter(|found| found.shape == Shape::Object);
        let builtin_arguments = match (&name, arguments) {
            (Some(name), Some(found)) if is_builtin(name.as_bytes()) => {
                match parse_bytes(&text[found.start..found.end]) {
                    Ok(QObject::Dict(dict)) => Some(Box::new(dict)),
                    _ => None,
                }
            }
            _ => None,
        };
        let verbatim = arguments.filter(|found| found.json && found.compact).map(|found| found.start..found.end);
        let id = self.id.map(|found| match found.compact {
            // The tokens without whitespace between them, as the lexer keeps them: the same however the input
            // came (only the fast path reads an id with whitespace, and its strings have none).
            true => ShortBytes::from_range(text, found.start, found.end),
            false => ShortBytes::new(&without_whitespace(&text[found.start..found.end])),
        });
        let echo = match (&id, self.id) {
            (Some(id), Some(found)) if !found.plain => echo(id.as_bytes()),
            _ => None,
        };
        let object = CommandObject {
            execute,
            exec_oob,
            name,
            arguments_seq: self.arguments.map(|found| (found.seq, found.shape == Shape::Object)),
            arguments: arguments.filter(|_| verbatim.is_none()).map(|found| read_arguments(text, found)),
            id,
            echo,
            unexpected: self.unexpected.map(|(bucket, seq, start, end)| {
                let key = parse_string(&text[start..end]).map(|k| k.bytes.into_owned()).unwrap_or_default();
                Box::new((bucket, seq, key))
            }),
            builtin_arguments,
        };
        (object, verbatim)
    }

    /// [`into_command`](Self::into_command), the arguments copied out of `text`.
    pub(crate) fn into_command_copied(self, text: &[u8]) -> CommandObject {
        let (mut object, verbatim) = self.into_command(text);
        if let Some(range) = verbatim {
            object.set_arguments(Bytes::copy_from_slice(&text[range]));
        }
        object
    }
}

/// A command name (the string `found` in `text`): QEMU's string, as Rust text (U+FFFD for what is not UTF-8).
fn decode_name(text: &[u8], found: Found) -> ShortBytes {
    let token = &text[found.start..found.end];
    let body = &token[1..token.len() - 1];
    if found.plain {
        return ShortBytes::from_range(text, found.start + 1, found.end - 1);
    }
    if token[0] == b'"' && body.is_ascii() && memchr::memchr(b'\\', body).is_none() {
        // No escape, ASCII: the name as written.
        return ShortBytes::new(body);
    }
    let bytes = parse_string(token).map(|s| s.bytes.into_owned()).unwrap_or_default();
    ShortBytes::new(String::from_utf8_lossy(&bytes).as_bytes())
}

/// The `arguments` object QEMU reads differently from its text, or with whitespace between its tokens: the
/// tokens' text without it, or QEMU's reading of it re-encoded.
fn read_arguments(text: &[u8], found: Found) -> Arguments {
    let text = &text[found.start..found.end];
    if found.json {
        let text = Bytes::from(without_whitespace(text));
        // `{}`: no member.
        let empty = text.len() == 2;
        return Arguments::from_checked(text, empty);
    }
    // Valid JSON was read already: it parses again. A JSON value always serializes.
    let value = parse_bytes(text).unwrap_or(QObject::Null);
    let empty = matches!(&value, QObject::Dict(dict) if dict.iter().next().is_none());
    Arguments::from_checked(Bytes::from(serde_json::to_vec(&value.into_json()).unwrap_or_default()), empty)
}

/// Standard JSON text without the whitespace between its tokens.
fn without_whitespace(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            (in_string, escaped) = (escaped || b != b'"', !escaped && b == b'\\');
        } else if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            continue;
        } else {
            in_string = b == b'"';
        }
        out.push(b);
    }
    out
}

/// The bytes QEMU writes for an id whose text the client wrote `text` (`1e3` as `1000`, non-ASCII as
/// `\uXXXX`, `1e400` as `inf`) when they are not the text itself (`None` for the common ids).
fn echo(text: &[u8]) -> Option<Box<[u8]>> {
    if written_as_read(text) {
        return None;
    }
    // Valid JSON was read already: it parses again.
    let value = parse_bytes(text).unwrap_or(QObject::Null);
    let mut echo = Vec::new();
    value.write(&mut echo);
    (echo != text).then(|| echo.into_boxed_slice())
}

/// An id as JSON, from the text the client wrote (`1e400` as `null`).
pub(crate) fn id_value(text: &[u8]) -> Value {
    if written_as_read(text) {
        if let Some(value) = plain_value(text) {
            return value;
        }
    }
    // Valid JSON was read already: it parses again.
    parse_bytes(text).unwrap_or(QObject::Null).into_json()
}

/// True for a one-token id that QEMU writes back exactly as it came (a keyword, an integer that fits 64 bits
/// but `-0`, a double-quoted string of printable ASCII without escapes).
fn written_as_read(text: &[u8]) -> bool {
    match text.first() {
        Some(b'"') => text[1..text.len() - 1].iter().all(|&b| PLAIN[usize::from(b)]),
        Some(b't' | b'f' | b'n') => matches!(text, b"true" | b"false" | b"null"),
        Some(b'-' | b'0'..=b'9') => {
            let digits = text.strip_prefix(b"-").unwrap_or(text);
            // Up to 18 digits always fit 64 bits, whatever the sign: no need to compute the value.
            let short = digits.len() <= 18 && !digits.is_empty() && digits.iter().all(u8::is_ascii_digit);
            text != b"-0" && (short || integer(text).is_some())
        }
        _ => false,
    }
}

/// The value of an id [`written_as_read`]; `None` for any other.
fn plain_value(text: &[u8]) -> Option<Value> {
    match text.first()? {
        b'"' => {
            let body = &text[1..text.len() - 1];
            let plain = body.iter().all(|&b| PLAIN[usize::from(b)]);
            // Printable ASCII is UTF-8.
            plain.then(|| Value::String(body.iter().map(|&b| char::from(b)).collect()))
        }
        b't' if text == b"true" => Some(Value::Bool(true)),
        b'f' if text == b"false" => Some(Value::Bool(false)),
        b'n' if text == b"null" => Some(Value::Null),
        b'-' | b'0'..=b'9' if text != b"-0" => integer(text),
        _ => None,
    }
}

/// The value of an integer token that fits 64 bits (as QEMU reads it: `i64` if it fits, else `u64`); `None`
/// for anything else (a float token, more than 64 bits).
fn integer(text: &[u8]) -> Option<Value> {
    let (negative, digits) = match text.split_first()? {
        (b'-', digits) => (true, digits),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let magnitude = digits.iter().try_fold(0u64, |n, &d| {
        let digit = char::from(d).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })?;
    if !negative {
        return Some(i64::try_from(magnitude).map_or(Value::from(magnitude), Value::from));
    }
    // -9223372036854775808 is the one negative whose magnitude is not an i64.
    let value = 0i64.checked_sub_unsigned(magnitude)?;
    Some(Value::from(value))
}

/// Reads one message's tokens with QEMU's parser: the request, or QEMU's id-less error description. `keys` is
/// scratch space, kept by the caller to reuse its allocation.
pub(crate) fn read_request(tokens: &[Token], text: &[u8], keys: &mut Vec<KeyRef>) -> Result<Request, Vec<u8>> {
    keys.clear();
    let mut sink = Summary { tokens, text, keys, depth: 0, top: Members::default() };
    let value = parse_with(tokens, text, &mut sink)?;
    if value.shape != Shape::Object {
        return Ok(Request::NotObject);
    }
    Ok(Request::Object(sink.top.into_command_copied(text)))
}

/// What a value read is: the sink's value.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// Its tokens: `at..end`.
    at: usize,
    end: usize,
    shape: Shape,
    json: bool,
}

/// An object or list being read.
struct Open {
    at: usize,
    /// Where its keys start in [`Summary::keys`].
    keys: usize,
    /// Members so far (QDict's insertion numbers).
    members: u32,
    json: bool,
    /// The message's own object (not one nested in it).
    top: bool,
}

/// A key of an object being read, for the duplicate check: the body of its token, or its decoded bytes when
/// it has escapes.
#[derive(Debug)]
pub(crate) enum KeyRef {
    Text(usize, usize),
    Decoded(Vec<u8>),
}

/// The sink that keeps only the top-level members. See the [module docs](self).
struct Summary<'a, 't> {
    tokens: &'a [Token],
    text: &'t [u8],
    keys: &'a mut Vec<KeyRef>,
    /// Objects and lists open.
    depth: u32,
    top: Members,
}

impl Summary<'_, '_> {
    fn key_bytes<'k>(&'k self, key: &'k KeyRef) -> &'k [u8] {
        match key {
            KeyRef::Text(start, end) => &self.text[*start..*end],
            KeyRef::Decoded(bytes) => bytes,
        }
    }

    fn open(&mut self, at: usize) -> Open {
        self.depth += 1;
        Open { at, keys: self.keys.len(), members: 0, json: true, top: self.depth == 1 }
    }

    fn close(&mut self, open: Open, end: usize, shape: Shape) -> Span {
        self.depth -= 1;
        self.keys.truncate(open.keys);
        Span { at: open.at, end, shape, json: open.json }
    }
}

impl<'t> Sink<'t> for Summary<'_, 't> {
    type Value = Span;
    type Object = Open;
    type List = Open;

    fn number(&mut self, kind: Kind, text: &'t [u8], at: usize) -> Span {
        Span { at, end: at + 1, shape: Shape::Scalar, json: number_is_json(kind, text) }
    }

    fn string(&mut self, string: Decoded<'t>, at: usize) -> Span {
        Span { at, end: at + 1, shape: Shape::String, json: string.json }
    }

    fn keyword(&mut self, _keyword: Keyword, at: usize) -> Span {
        Span { at, end: at + 1, shape: Shape::Scalar, json: true }
    }

    fn object(&mut self, at: usize) -> Open {
        self.open(at)
    }

    fn has_key(&self, object: &Open, key: &[u8]) -> bool {
        self.keys[object.keys..].iter().any(|k| self.key_bytes(k) == key)
    }

    fn put(&mut self, object: &mut Open, key: Decoded<'t>, key_at: usize, value: Span) {
        object.json &= key.json && value.json;
        let seq = object.members;
        object.members += 1;
        let (_, key_start, key_end) = self.tokens[key_at];
        if object.top {
            let found = Found {
                seq,
                start: self.tokens[value.at].1,
                end: self.tokens[value.end - 1].2,
                shape: value.shape,
                json: value.json,
                // The lexer keeps no whitespace between tokens: checked here rather than assumed.
                compact: self.tokens[value.at..value.end].windows(2).all(|pair| pair[0].2 == pair[1].1),
                plain: false,
            };
            self.top.record(&key.bytes, key_start, key_end, found);
        }
        self.keys.push(match key.bytes {
            std::borrow::Cow::Borrowed(_) => KeyRef::Text(key_start + 1, key_end - 1),
            std::borrow::Cow::Owned(bytes) => KeyRef::Decoded(bytes),
        });
    }

    fn end_object(&mut self, object: Open, end: usize) -> Span {
        self.close(object, end, Shape::Object)
    }

    fn list(&mut self, at: usize) -> Open {
        self.open(at)
    }

    fn push(&mut self, list: &mut Open, item: Span) {
        list.json &= item.json;
    }

    fn end_list(&mut self, list: Open, end: usize) -> Span {
        self.close(list, end, Shape::List)
    }
}

/// True when a number token is, in standard JSON, the number QEMU reads: not `-0` (QEMU's integer 0, a
/// float to JSON parsers) and not beyond `f64` (QEMU's infinity).
fn number_is_json(kind: Kind, text: &[u8]) -> bool {
    match kind {
        // Up to 19 digits always fit an i64 or u64 (or are `-0`); longer ones may be floats, even infinite.
        Kind::Integer if text.len() < 20 => text != b"-0",
        _ => std::str::from_utf8(text).ok().and_then(|s| s.parse::<f64>().ok()).is_some_and(f64::is_finite),
    }
}
