//! QEMU's JSON parser (`qobject/json-parser.c`) over the tokens of one message, with its error texts.
//!
//! The first error wins, as in QEMU: `{"a":}` is "expecting value", not also "Missing value in dict".
//! Recursion is bounded by the lexer's nesting limit (1024).
//!
//! One grammar, and a [`Sink`] that decides what is made of the values read: [`QObject`]s (the values the
//! server needs whole: ids QEMU re-writes, the arguments of the commands it answers itself, JSON text the
//! caller passes), or nothing but what dispatch needs (the [`summary`](super::request) of a command, the hot
//! path). Either way the same input is accepted and the same error reported: the sink only builds.

use std::borrow::Cow;

use super::lexer::Kind;
use super::qobject::{mod_utf8_codepoint, QDict, QObject};

/// A token: its kind and its range in the message text.
pub(crate) type Token = (Kind, usize, usize);

/// A string token decoded.
pub(crate) struct Decoded<'t> {
    /// The string as QEMU holds it (modified UTF-8): borrowed from the token when it has no escape.
    pub(crate) bytes: Cow<'t, [u8]>,
    /// The token is this string in standard JSON as well: double quotes, no `\'` escape, no `C0 80` (QEMU's
    /// U+0000, invalid UTF-8).
    pub(crate) json: bool,
}

/// `true`, `false` or `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    True,
    False,
    Null,
}

/// What the parser makes of the values it reads. Each call names the value's first token (`at`, an index in
/// the token list) and, for objects and lists, the end of its tokens.
pub(crate) trait Sink<'t> {
    /// A value read.
    type Value;
    /// An object being read.
    type Object;
    /// A list being read.
    type List;
    /// A number token (`Integer` or `Float`).
    fn number(&mut self, kind: Kind, text: &'t [u8], at: usize) -> Self::Value;
    /// A string token, decoded.
    fn string(&mut self, string: Decoded<'t>, at: usize) -> Self::Value;
    /// A keyword.
    fn keyword(&mut self, keyword: Keyword, at: usize) -> Self::Value;
    /// An object starts.
    fn object(&mut self, at: usize) -> Self::Object;
    /// True when `object` has the member `key` already (QEMU's "duplicate key").
    fn has_key(&self, object: &Self::Object, key: &[u8]) -> bool;
    /// A member read in full; its key is the string token at `key_at`.
    fn put(&mut self, object: &mut Self::Object, key: Decoded<'t>, key_at: usize, value: Self::Value);
    /// The object ends before token `end`.
    fn end_object(&mut self, object: Self::Object, end: usize) -> Self::Value;
    /// A list starts.
    fn list(&mut self, at: usize) -> Self::List;
    /// An item read in full.
    fn push(&mut self, list: &mut Self::List, item: Self::Value);
    /// The list ends before token `end`.
    fn end_list(&mut self, list: Self::List, end: usize) -> Self::Value;
}

/// The tokens of one message, and where the parser is.
struct Parser<'a, 't, S> {
    tokens: &'a [Token],
    text: &'t [u8],
    next: usize,
    error: Option<Vec<u8>>,
    sink: &'a mut S,
}

/// Parses the tokens of one message into what `sink` makes of it, or QEMU's error description.
pub(crate) fn parse_with<'t, S: Sink<'t>>(tokens: &[Token], text: &'t [u8], sink: &mut S) -> Result<S::Value, Vec<u8>> {
    let mut p = Parser { tokens, text, next: 0, error: None, sink };
    let value = p.value();
    match (value, p.error) {
        (_, Some(e)) => Err(e),
        (Some(v), None) => Ok(v),
        (None, None) => Err(b"JSON parse error, premature EOI".to_vec()),
    }
}

/// Parses the tokens of one message into a value, or QEMU's error description.
pub(crate) fn parse(tokens: &[Token], text: &[u8]) -> Result<QObject, Vec<u8>> {
    parse_with(tokens, text, &mut Values)
}

impl<'a, 't, S: Sink<'t>> Parser<'a, 't, S> {
    fn fail(&mut self, msg: impl AsRef<[u8]>) {
        if self.error.is_none() {
            let mut e = b"JSON parse error, ".to_vec();
            e.extend_from_slice(msg.as_ref());
            self.error = Some(e);
        }
    }

    fn peek(&self) -> Option<Kind> {
        self.tokens.get(self.next).map(|t| t.0)
    }

    fn pop(&mut self) -> Option<(Kind, &'t [u8])> {
        let &(kind, start, end) = self.tokens.get(self.next)?;
        self.next += 1;
        Some((kind, &self.text[start..end]))
    }

    fn value(&mut self) -> Option<S::Value> {
        let Some(kind) = self.peek() else {
            self.fail("premature EOI");
            return None;
        };
        let at = self.next;
        match kind {
            Kind::LCurly => self.object(),
            Kind::LSquare => self.array(),
            Kind::Integer | Kind::Float => {
                let (kind, text) = self.pop()?;
                Some(self.sink.number(kind, text, at))
            }
            Kind::String => {
                let (_, text) = self.pop()?;
                match parse_string(text) {
                    Ok(s) => Some(self.sink.string(s, at)),
                    Err(e) => {
                        self.fail(e);
                        None
                    }
                }
            }
            Kind::Keyword => {
                let (_, text) = self.pop()?;
                let keyword = match text {
                    b"true" => Keyword::True,
                    b"false" => Keyword::False,
                    b"null" => Keyword::Null,
                    other => {
                        let mut msg = b"invalid keyword '".to_vec();
                        msg.extend_from_slice(other);
                        msg.push(b'\'');
                        self.fail(msg);
                        return None;
                    }
                };
                Some(self.sink.keyword(keyword, at))
            }
            _ => {
                self.fail("expecting value");
                None
            }
        }
    }

    fn pair(&mut self, object: &mut S::Object) -> bool {
        if self.peek().is_none() {
            self.fail("premature EOI");
            return false;
        }
        // A string key is decoded without being made a value: most are plain and borrowed from the token.
        let key_at = self.next;
        let key = if self.peek() == Some(Kind::String) {
            let Some((_, text)) = self.pop() else { return false };
            match parse_string(text) {
                Ok(key) => key,
                Err(e) => {
                    self.fail(e);
                    return false;
                }
            }
        } else {
            // Not a string: whatever error the value has comes first.
            self.value();
            self.fail("key is not a string in object");
            return false;
        };
        match self.pop() {
            None => {
                self.fail("premature EOI");
                return false;
            }
            Some((Kind::Colon, _)) => {}
            Some(_) => {
                self.fail("missing : in object pair");
                return false;
            }
        }
        let Some(value) = self.value() else {
            self.fail("Missing value in dict");
            return false;
        };
        if self.sink.has_key(object, &key.bytes) {
            self.fail("duplicate key");
            return false;
        }
        self.sink.put(object, key, key_at, value);
        true
    }

    fn object(&mut self) -> Option<S::Value> {
        let at = self.next;
        self.pop(); // {
        let mut object = self.sink.object(at);
        match self.peek() {
            None => {
                self.fail("premature EOI");
                return None;
            }
            Some(Kind::RCurly) => {
                self.pop();
                return Some(self.sink.end_object(object, self.next));
            }
            Some(_) => {}
        }
        if !self.pair(&mut object) {
            return None;
        }
        loop {
            match self.pop().map(|t| t.0) {
                None => {
                    self.fail("premature EOI");
                    return None;
                }
                Some(Kind::RCurly) => return Some(self.sink.end_object(object, self.next)),
                Some(Kind::Comma) => {
                    if !self.pair(&mut object) {
                        return None;
                    }
                }
                Some(_) => {
                    self.fail("expected separator in dict");
                    return None;
                }
            }
        }
    }

    fn array(&mut self) -> Option<S::Value> {
        let at = self.next;
        self.pop(); // [
        let mut list = self.sink.list(at);
        match self.peek() {
            None => {
                self.fail("premature EOI");
                return None;
            }
            Some(Kind::RSquare) => {
                self.pop();
                return Some(self.sink.end_list(list, self.next));
            }
            Some(_) => {}
        }
        let Some(first) = self.value() else {
            self.fail("expecting value");
            return None;
        };
        self.sink.push(&mut list, first);
        loop {
            match self.pop().map(|t| t.0) {
                None => {
                    self.fail("premature EOI");
                    return None;
                }
                Some(Kind::RSquare) => return Some(self.sink.end_list(list, self.next)),
                Some(Kind::Comma) => {
                    let Some(item) = self.value() else {
                        self.fail("expecting value");
                        return None;
                    };
                    self.sink.push(&mut list, item);
                }
                Some(_) => {
                    self.fail("expected separator in list");
                    return None;
                }
            }
        }
    }
}

/// The sink that builds [`QObject`]s.
pub(crate) struct Values;

impl<'t> Sink<'t> for Values {
    type Value = QObject;
    type Object = QDict;
    type List = Vec<QObject>;

    fn number(&mut self, kind: Kind, text: &'t [u8], _at: usize) -> QObject {
        number(kind, text)
    }

    fn string(&mut self, string: Decoded<'t>, _at: usize) -> QObject {
        QObject::String(string.bytes.into_owned())
    }

    fn keyword(&mut self, keyword: Keyword, _at: usize) -> QObject {
        match keyword {
            Keyword::True => QObject::Bool(true),
            Keyword::False => QObject::Bool(false),
            Keyword::Null => QObject::Null,
        }
    }

    fn object(&mut self, _at: usize) -> QDict {
        QDict::new()
    }

    fn has_key(&self, object: &QDict, key: &[u8]) -> bool {
        object.contains(key)
    }

    fn put(&mut self, object: &mut QDict, key: Decoded<'t>, _key_at: usize, value: QObject) {
        object.put(key.bytes, value);
    }

    fn end_object(&mut self, object: QDict, _end: usize) -> QObject {
        QObject::Dict(object)
    }

    fn list(&mut self, _at: usize) -> Vec<QObject> {
        Vec::new()
    }

    fn push(&mut self, list: &mut Vec<QObject>, item: QObject) {
        list.push(item);
    }

    fn end_list(&mut self, list: Vec<QObject>, _end: usize) -> QObject {
        QObject::List(list)
    }
}

/// A number token as QEMU stores it: a signed integer if it fits, else unsigned, else a double.
fn number(kind: Kind, text: &[u8]) -> QObject {
    let s = std::str::from_utf8(text).unwrap_or("");
    if kind == Kind::Integer {
        if let Ok(i) = s.parse::<i64>() {
            return QObject::Int(i);
        }
        if !s.starts_with('-') {
            if let Ok(u) = s.parse::<u64>() {
                return QObject::UInt(u);
            }
        }
    }
    QObject::Double(s.parse::<f64>().unwrap_or(0.0))
}

/// The four hex digits at `s[at..]`, as QEMU's `cvt4hex` reads them.
fn hex4(s: &[u8], at: usize) -> Option<u32> {
    let digits = s.get(at..at + 4)?;
    digits.iter().try_fold(0u32, |cp, &d| Some(cp << 4 | char::from(d).to_digit(16)?))
}

/// QEMU's `is_valid_codepoint`.
fn valid_codepoint(cp: u32) -> bool {
    cp <= 0x10_FFFF && !(0xFDD0..=0xFDEF).contains(&cp) && cp & 0xFFFE != 0xFFFE && !(0xD800..=0xDFFF).contains(&cp)
}

/// Modified UTF-8 of a valid code point (U+0000 as `C0 80`).
fn push_mod_utf8(out: &mut Vec<u8>, cp: u32) {
    if cp == 0 {
        out.extend_from_slice(&[0xC0, 0x80]);
    } else if let Some(c) = char::from_u32(cp) {
        let mut buf = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// Decodes a string token (quotes included) into QEMU's string bytes, or QEMU's error text.
pub(crate) fn parse_string(token: &[u8]) -> Result<Decoded<'_>, Vec<u8>> {
    let quote = token[0];
    // Plain ASCII without escapes (most strings) decodes to itself.
    let body = &token[1..token.len().saturating_sub(1).max(1)];
    if body.iter().all(|&b| b.is_ascii() && b != b'\\' && b != 0) {
        return Ok(Decoded { bytes: Cow::Borrowed(body), json: quote == b'"' });
    }
    let mut json = quote == b'"';
    let mut out = Vec::with_capacity(token.len());
    let mut i = 1;
    while i < token.len() && token[i] != quote {
        if token[i] == b'\\' {
            let begin = i;
            i += 1;
            let c = token.get(i).copied().unwrap_or(0);
            i += 1;
            let plain = match c {
                b'"' => Some(b'"'),
                b'\'' => {
                    // QEMU's extension: JSON has no such escape.
                    json = false;
                    Some(b'\'')
                }
                b'\\' => Some(b'\\'),
                b'/' => Some(b'/'),
                b'b' => Some(8),
                b'f' => Some(12),
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                b'u' => None,
                _ => return Err(b"invalid escape sequence in string".to_vec()),
            };
            if let Some(b) = plain {
                out.push(b);
                continue;
            }
            let mut cp = hex4(token, i);
            i += 4;
            if let Some(lead @ 0xD800..=0xDBFF) = cp {
                if token.get(i) == Some(&b'\\') && token.get(i + 1) == Some(&b'u') {
                    let high = 0x10000 + ((lead & 0x3FF) << 10);
                    cp = match hex4(token, i + 2) {
                        Some(trail @ 0xDC00..=0xDFFF) => {
                            i += 6;
                            Some(high | (trail & 0x3FF))
                        }
                        _ => None,
                    };
                }
            }
            match cp.filter(|&cp| valid_codepoint(cp)) {
                Some(cp) => push_mod_utf8(&mut out, cp),
                None => {
                    let mut msg = token[begin..i.min(token.len())].to_vec();
                    msg.extend_from_slice(b" is not a valid Unicode character");
                    return Err(msg);
                }
            }
        } else {
            let (cp, used) = mod_utf8_codepoint(&token[i..]);
            if cp.is_none() {
                return Err(b"invalid UTF-8 sequence in string".to_vec());
            }
            // QEMU's U+0000 (`C0 80`) is not UTF-8.
            json &= cp != Some(0);
            out.extend_from_slice(&token[i..i + used]);
            i += used;
        }
    }
    Ok(Decoded { bytes: Cow::Owned(out), json })
}
