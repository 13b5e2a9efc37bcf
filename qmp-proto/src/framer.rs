//! Framing: cutting a byte stream into JSON values, without parsing them.
//!
//! QMP servers end messages with `\r\n`, qemu-ga with `\n`, `pretty=on` monitors spread one object over many
//! lines, and `guest-sync-delimited` puts a raw 0xFF byte before its reply. Splitting on newlines gets all of
//! that wrong, so the [`Framer`] frames by JSON value: it skips whitespace between values, tracks strings,
//! escapes and nesting depth, and reports a value when its depth returns to zero.
//!
//! Properties the rest of the crate relies on:
//! - **Resumable, no rescans.** The scanner state survives between [`Framer::feed`] calls, so feeding N bytes
//!   one at a time costs O(N) in total, the same as feeding them at once, and yields the same frames.
//! - **Bounded.** A value longer than the configured maximum is not buffered: its bytes are dropped as they are
//!   scanned and one [`Frame::Oversized`] is reported when it ends. The framer never holds more than the
//!   maximum message size.
//! - **0xFF resynchronises.** 0xFF never occurs in QEMU's JSON output. Anywhere in the stream it yields
//!   [`Frame::Delimiter`]; an unfinished value before it is reported as [`Frame::Truncated`].
//! - **Garbage is framed too.** A top-level token that does not start an object, array or string (QEMU never
//!   sends one, a broken peer might) runs to the next whitespace, 0xFF, `{`, `[` or `"`, and is handed on as a
//!   message so that classification can report it as not understood.

use bytes::{Bytes, BytesMut};

/// One unit cut from the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete top-level JSON value (or top-level garbage token), exactly as received.
    Message(Bytes),
    /// A 0xFF byte outside any value: the `guest-sync-delimited` marker.
    Delimiter,
    /// A value longer than the maximum message size; its bytes were dropped. `len` counts them all.
    Oversized {
        /// Length of the whole value in bytes.
        len: u64,
        /// The integer id of a reply, when the value ends with an `"id": N` member (QEMU writes the id last in
        /// success replies), so that the command it answers can be ended instead of waiting for a timeout.
        id: Option<u64>,
    },
    /// A value cut short by a 0xFF byte; its bytes (possibly incomplete if it was also oversized) are dropped.
    Truncated {
        /// Bytes of the unfinished value that were dropped.
        len: u64,
    },
}

/// Where the scanner is, between bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between values: whitespace is skipped.
    Between,
    /// Inside an object or array, outside strings.
    Structure,
    /// Inside a string; `depth` tells whether it is a top-level string.
    String,
    /// Right after a backslash inside a string.
    Escape,
    /// Inside a top-level garbage token.
    Token,
}

/// Byte classes used outside strings.
const PLAIN: u8 = 0;
const OPEN: u8 = 1;
const CLOSE: u8 = 2;
const QUOTE: u8 = 3;
const DELIM: u8 = 4;
const SPACE: u8 = 5;

const CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    t[b'{' as usize] = OPEN;
    t[b'[' as usize] = OPEN;
    t[b'}' as usize] = CLOSE;
    t[b']' as usize] = CLOSE;
    t[b'"' as usize] = QUOTE;
    t[0xFF] = DELIM;
    t[b' ' as usize] = SPACE;
    t[b'\t' as usize] = SPACE;
    t[b'\r' as usize] = SPACE;
    t[b'\n' as usize] = SPACE;
    t
};

/// Incremental JSON value framer with a size limit. See the [module docs](self).
#[derive(Debug)]
pub struct Framer {
    /// Bytes of the unfinished value that arrived in earlier `feed` calls (empty while discarding).
    partial: BytesMut,
    state: State,
    depth: u32,
    /// Length so far of the unfinished value, including bytes dropped while discarding.
    value_len: u64,
    /// The unfinished value is over the limit and its bytes are being dropped.
    discarding: bool,
    max_message_size: usize,
    /// The last bytes of a value being discarded, to find a trailing `"id": N` member.
    tail: Vec<u8>,
}

/// Bytes of an oversized value's end kept to find its id.
const TAIL: usize = 48;

impl Framer {
    /// A framer that reports values longer than `max_message_size` bytes as [`Frame::Oversized`].
    pub fn new(max_message_size: usize) -> Self {
        Framer {
            partial: BytesMut::new(),
            state: State::Between,
            depth: 0,
            value_len: 0,
            discarding: false,
            max_message_size: max_message_size.max(1),
            tail: Vec::new(),
        }
    }

    /// True when a value has started but not ended (for example, at EOF: the stream was cut mid-message).
    pub fn in_message(&self) -> bool {
        self.state != State::Between
    }

    /// Bytes currently buffered for an unfinished value. Never more than the maximum message size.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Bytes of the unfinished value received so far, those dropped for being over the limit included.
    pub fn message_len(&self) -> u64 {
        if self.in_message() {
            self.value_len
        } else {
            0
        }
    }

    /// Scans `input` and calls `emit` for every frame that ends in it, in order. Whatever is left of an
    /// unfinished value is kept (or counted, when it is over the limit) for the next call.
    pub fn feed(&mut self, input: &[u8], mut emit: impl FnMut(Frame)) {
        let mut i = 0;
        // Start (in `input`) of the current value's bytes not yet copied into `partial`.
        let mut start = 0;
        let n = input.len();
        while i < n {
            match self.state {
                State::Between => {
                    // Skip whitespace and delimiters between values.
                    let b = input[i];
                    match CLASS[b as usize] {
                        SPACE => {
                            i += 1;
                            continue;
                        }
                        DELIM => {
                            emit(Frame::Delimiter);
                            i += 1;
                            continue;
                        }
                        OPEN => {
                            self.state = State::Structure;
                            self.depth = 1;
                        }
                        QUOTE => {
                            self.state = State::String;
                            self.depth = 0;
                        }
                        _ => {
                            self.state = State::Token;
                            self.depth = 0;
                        }
                    }
                    start = i;
                    self.value_len = 0;
                    i += 1;
                }
                State::Structure => {
                    // Hot loop: skip plain bytes (numbers, literals, punctuation, whitespace).
                    let mut class = PLAIN;
                    while i < n {
                        class = CLASS[input[i] as usize];
                        if class != PLAIN && class != SPACE {
                            break;
                        }
                        i += 1;
                    }
                    if i == n {
                        break;
                    }
                    match class {
                        OPEN => {
                            self.depth += 1;
                            i += 1;
                        }
                        CLOSE => {
                            self.depth -= 1;
                            i += 1;
                            if self.depth == 0 {
                                self.finish(input, start, i, &mut emit);
                            }
                        }
                        QUOTE => {
                            self.state = State::String;
                            i += 1;
                        }
                        _ => {
                            // DELIM: the value is cut short.
                            self.truncate(start, i, &mut emit);
                        }
                    }
                }
                State::String => match memchr::memchr3(b'"', b'\\', 0xFF, &input[i..]) {
                    None => i = n,
                    Some(k) => {
                        i += k;
                        match input[i] {
                            b'"' => {
                                i += 1;
                                if self.depth == 0 {
                                    self.finish(input, start, i, &mut emit);
                                } else {
                                    self.state = State::Structure;
                                }
                            }
                            b'\\' => {
                                self.state = State::Escape;
                                i += 1;
                            }
                            _ => self.truncate(start, i, &mut emit),
                        }
                    }
                },
                State::Escape => {
                    if input[i] == 0xFF {
                        self.truncate(start, i, &mut emit);
                    } else {
                        self.state = State::String;
                        i += 1;
                    }
                }
                State::Token => {
                    match input[i..].iter().position(|&b| matches!(CLASS[b as usize], SPACE | DELIM | OPEN | QUOTE)) {
                        None => i = n,
                        Some(k) => {
                            i += k;
                            // The terminator is not part of the token; `Between` handles it next.
                            self.finish(input, start, i, &mut emit);
                        }
                    }
                }
            }
            // Enforce the limit on the value scanned so far (its bytes in `input` run from `start` to `i`).
            if self.state != State::Between && !self.discarding {
                self.check_limit(input, &mut start, i);
            }
        }
        if self.state != State::Between {
            self.keep(input, start, n);
        }
    }

    /// Called at the end of a value: `input[start..end]` is its last part.
    fn finish(&mut self, input: &[u8], start: usize, end: usize, emit: &mut impl FnMut(Frame)) {
        self.state = State::Between;
        self.depth = 0;
        let len = self.value_len + (end - start) as u64;
        let too_long = self.discarding || len > self.max_message_size as u64;
        if too_long && !self.discarding {
            self.begin_discard(&input[start..end]);
        } else if too_long {
            push_tail(&mut self.tail, &input[start..end]);
        }
        self.value_len = 0;
        self.discarding = false;
        if too_long {
            emit(Frame::Oversized { len, id: trailing_id(&self.tail) });
            self.tail.clear();
            return;
        }
        let frame = if self.partial.is_empty() {
            Bytes::copy_from_slice(&input[start..end])
        } else {
            self.partial.extend_from_slice(&input[start..end]);
            self.partial.split().freeze()
        };
        emit(Frame::Message(frame));
    }

    /// Called when a 0xFF byte at `input[at]` cuts the current value short. Leaves the 0xFF to `Between`.
    fn truncate(&mut self, start: usize, at: usize, emit: &mut impl FnMut(Frame)) {
        let len = self.value_len + (at - start) as u64;
        self.state = State::Between;
        self.depth = 0;
        self.value_len = 0;
        self.discarding = false;
        self.partial.clear();
        self.tail.clear();
        emit(Frame::Truncated { len });
    }

    /// Switches to discarding when the unfinished value has grown past the limit.
    fn check_limit(&mut self, input: &[u8], start: &mut usize, i: usize) {
        let len = self.value_len + (i - *start) as u64;
        if len > self.max_message_size as u64 {
            self.begin_discard(&input[*start..i]);
            self.value_len = len;
            *start = i;
        }
    }

    /// Drops the buffered part of the value (`partial` followed by `recent`), keeping only its last bytes.
    fn begin_discard(&mut self, recent: &[u8]) {
        self.discarding = true;
        self.tail.clear();
        push_tail(&mut self.tail, &self.partial);
        push_tail(&mut self.tail, recent);
        self.partial.clear();
    }

    /// Keeps the unfinished tail `input[start..end]` for the next call (or only counts it, when discarding).
    fn keep(&mut self, input: &[u8], start: usize, end: usize) {
        self.value_len += (end - start) as u64;
        if self.discarding {
            push_tail(&mut self.tail, &input[start..end]);
        } else if self.value_len > self.max_message_size as u64 {
            self.begin_discard(&input[start..end]);
        } else {
            self.partial.extend_from_slice(&input[start..end]);
        }
    }
}

/// Appends `bytes` to `tail`, keeping only the last [`TAIL`] bytes.
fn push_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[bytes.len().saturating_sub(TAIL)..];
    let excess = (tail.len() + bytes.len()).saturating_sub(TAIL);
    tail.drain(..excess.min(tail.len()));
    tail.extend_from_slice(bytes);
}

/// The id of a value that ends with `, "id": N }` (or `{ "id": N }`), N a non-negative integer.
///
/// The last byte is the top-level `}` and the byte before it (spaces aside) is a digit, which cannot end a
/// string or a nested value: so N is a member of the top-level object, and so is the key `"id"` before it.
fn trailing_id(tail: &[u8]) -> Option<u64> {
    fn trim_end(s: &[u8]) -> &[u8] {
        let n = s.iter().rposition(|b| !b" \t\r\n".contains(b)).map_or(0, |p| p + 1);
        &s[..n]
    }
    let s = trim_end(tail).strip_suffix(b"}")?;
    let s = trim_end(s);
    let digits = s.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let (s, number) = s.split_at(s.len() - digits);
    let s = trim_end(trim_end(s).strip_suffix(b":")?).strip_suffix(b"\"id\"")?;
    if !matches!(trim_end(s).last(), Some(b',' | b'{')) {
        return None;
    }
    std::str::from_utf8(number).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, |fr| out.push(fr));
        }
        out
    }

    fn msg(s: &str) -> Frame {
        Frame::Message(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn crlf_lf_and_pretty() {
        let input = b"{\"a\": 1}\r\n{\"b\": \"}\"}\n{\r\n    \"return\": {\r\n    }\r\n}\r\n";
        assert_eq!(
            frames(1024, &[input]),
            vec![msg("{\"a\": 1}"), msg("{\"b\": \"}\"}"), msg("{\r\n    \"return\": {\r\n    }\r\n}")]
        );
    }

    #[test]
    fn escapes_and_nested_brackets_in_strings() {
        let input = br#"{"a": "x\"}{[\\", "b": [1, {"c": "]"}]}"#;
        assert_eq!(frames(1024, &[input]), vec![msg(std::str::from_utf8(input).unwrap())]);
    }

    #[test]
    fn delimiter_and_truncation() {
        let out = frames(1024, &[b"\xff{\"return\": 1}\n{\"x\": \xff{}"]);
        assert_eq!(
            out,
            vec![Frame::Delimiter, msg("{\"return\": 1}"), Frame::Truncated { len: 6 }, Frame::Delimiter, msg("{}")]
        );
    }

    #[test]
    fn garbage_tokens_are_framed() {
        let out = frames(1024, &[b"garbage{} 12 \"s\" }"]);
        assert_eq!(out, vec![msg("garbage"), msg("{}"), msg("12"), msg("\"s\"")]);
        // The trailing "}" token has no terminator yet: it waits, like QEMU's lexer.
    }

    #[test]
    fn oversized_is_skipped_and_the_next_message_survives() {
        let big = format!("{{\"return\": \"{}\"}}", "x".repeat(100));
        let input = format!("{big}\r\n{{\"return\": 2}}\r\n");
        for chunk in [1usize, 3, 7, 1000] {
            let chunks: Vec<&[u8]> = input.as_bytes().chunks(chunk).collect();
            let mut f = Framer::new(50);
            let mut out = Vec::new();
            for c in chunks {
                f.feed(c, |fr| out.push(fr));
                assert!(f.buffered() <= 50);
            }
            assert_eq!(out, vec![Frame::Oversized { len: big.len() as u64, id: None }, msg("{\"return\": 2}")]);
        }
    }

    #[test]
    fn oversized_reply_keeps_its_trailing_id() {
        let big = format!("{{\"return\": \"{}\", \"id\": 42}}", "x".repeat(200));
        let tricky = format!("{{\"return\": {{\"id\": 7}}, \"x\": \"{}\"}}", "y".repeat(200));
        let input = format!("{big}\r\n{tricky}\r\n");
        for chunk in [1usize, 5, 64, 10_000] {
            let chunks: Vec<&[u8]> = input.as_bytes().chunks(chunk).collect();
            assert_eq!(
                frames(100, &chunks),
                vec![
                    Frame::Oversized { len: big.len() as u64, id: Some(42) },
                    Frame::Oversized { len: tricky.len() as u64, id: None }
                ],
                "chunk {chunk}"
            );
        }
        assert_eq!(trailing_id(b"{\"id\": 3}"), Some(3));
        assert_eq!(trailing_id(b"x\\\"id\": 3}"), None);
        assert_eq!(trailing_id(b"[1, {\"id\": 3}}"), None);
        assert_eq!(trailing_id(b", \"id\": \"3\"}"), None);
    }

    #[test]
    fn byte_at_a_time_matches_whole() {
        let input: &[u8] = b" {\"a\":[1,2,{\"b\":\"\\\\\"}]}\r\n\xff{\"c\":\"\\u00e9\"}\ninf {\"d\":inf}";
        let whole = frames(1024, &[input]);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(frames(1024, &bytes), whole);
    }
}
