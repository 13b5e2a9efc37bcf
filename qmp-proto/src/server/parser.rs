//! QEMU's JSON parser (`qobject/json-parser.c`) over the tokens of one message, with its error texts.
//!
//! The first error wins, as in QEMU: `{"a":}` is "expecting value", not also "Missing value in dict".
//! Recursion is bounded by the lexer's nesting limit (1024).

use std::borrow::Cow;

use super::lexer::Kind;
use super::qobject::{mod_utf8_codepoint, QDict, QObject};

/// The tokens of one message, and where the parser is.
struct Parser<'a> {
    tokens: &'a [(Kind, usize, usize)],
    text: &'a [u8],
    next: usize,
    error: Option<Vec<u8>>,
}

/// Parses the tokens of one message into a value, or QEMU's error description.
pub(crate) fn parse(tokens: &[(Kind, usize, usize)], text: &[u8]) -> Result<QObject, Vec<u8>> {
    let mut p = Parser { tokens, text, next: 0, error: None };
    let value = p.value();
    match (value, p.error) {
        (_, Some(e)) => Err(e),
        (Some(v), None) => Ok(v),
        (None, None) => Err(b"JSON parse error, premature EOI".to_vec()),
    }
}

impl<'a> Parser<'a> {
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

    fn pop(&mut self) -> Option<(Kind, &'a [u8])> {
        let &(kind, start, end) = self.tokens.get(self.next)?;
        self.next += 1;
        Some((kind, &self.text[start..end]))
    }

    fn value(&mut self) -> Option<QObject> {
        let Some(kind) = self.peek() else {
            self.fail("premature EOI");
            return None;
        };
        match kind {
            Kind::LCurly => self.object(),
            Kind::LSquare => self.array(),
            Kind::Integer | Kind::Float => {
                let (kind, text) = self.pop()?;
                Some(number(kind, text))
            }
            Kind::String => {
                let (_, text) = self.pop()?;
                match parse_string(text) {
                    Ok(s) => Some(QObject::String(s.into_owned())),
                    Err(e) => {
                        self.fail(e);
                        None
                    }
                }
            }
            Kind::Keyword => {
                let (_, text) = self.pop()?;
                match text {
                    b"true" => Some(QObject::Bool(true)),
                    b"false" => Some(QObject::Bool(false)),
                    b"null" => Some(QObject::Null),
                    other => {
                        let mut msg = b"invalid keyword '".to_vec();
                        msg.extend_from_slice(other);
                        msg.push(b'\'');
                        self.fail(msg);
                        None
                    }
                }
            }
            _ => {
                self.fail("expecting value");
                None
            }
        }
    }

    fn pair(&mut self, dict: &mut QDict) -> bool {
        if self.peek().is_none() {
            self.fail("premature EOI");
            return false;
        }
        // A string key is decoded without being made a value: most are plain and borrowed from the token.
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
        if dict.contains(&key) {
            self.fail("duplicate key");
            return false;
        }
        dict.put(key, value);
        true
    }

    fn object(&mut self) -> Option<QObject> {
        self.pop(); // {
        let mut dict = QDict::new();
        match self.peek() {
            None => {
                self.fail("premature EOI");
                return None;
            }
            Some(Kind::RCurly) => {
                self.pop();
                return Some(QObject::Dict(dict));
            }
            Some(_) => {}
        }
        if !self.pair(&mut dict) {
            return None;
        }
        loop {
            match self.pop().map(|t| t.0) {
                None => {
                    self.fail("premature EOI");
                    return None;
                }
                Some(Kind::RCurly) => return Some(QObject::Dict(dict)),
                Some(Kind::Comma) => {
                    if !self.pair(&mut dict) {
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

    fn array(&mut self) -> Option<QObject> {
        self.pop(); // [
        let mut list = Vec::new();
        match self.peek() {
            None => {
                self.fail("premature EOI");
                return None;
            }
            Some(Kind::RSquare) => {
                self.pop();
                return Some(QObject::List(list));
            }
            Some(_) => {}
        }
        let Some(first) = self.value() else {
            self.fail("expecting value");
            return None;
        };
        list.push(first);
        loop {
            match self.pop().map(|t| t.0) {
                None => {
                    self.fail("premature EOI");
                    return None;
                }
                Some(Kind::RSquare) => return Some(QObject::List(list)),
                Some(Kind::Comma) => {
                    let Some(item) = self.value() else {
                        self.fail("expecting value");
                        return None;
                    };
                    list.push(item);
                }
                Some(_) => {
                    self.fail("expected separator in list");
                    return None;
                }
            }
        }
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
fn parse_string(token: &[u8]) -> Result<Cow<'_, [u8]>, Vec<u8>> {
    // Plain ASCII without escapes (most strings) decodes to itself.
    let body = &token[1..token.len().saturating_sub(1).max(1)];
    if body.iter().all(|&b| b.is_ascii() && b != b'\\' && b != 0) {
        return Ok(Cow::Borrowed(body));
    }
    let quote = token[0];
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
                b'\'' => Some(b'\''),
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
            out.extend_from_slice(&token[i..i + used]);
            i += used;
        }
    }
    Ok(Cow::Owned(out))
}
