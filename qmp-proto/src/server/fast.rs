//! The fast path of reading a command: one pass over a whole message that finds its top-level [`Members`]
//! without tokens, values or allocations, for the messages clients send nearly always.
//!
//! It reads only a command object whole in the input and made of the common parts: strings of printable
//! ASCII without escapes, integers that are standard JSON (not `-0`, fewer than 20 characters), `true`,
//! `false`, `null`, and objects (at most [`MAX_MEMBERS`] members, no key twice) and lists nested at most
//! [`MAX_DEPTH`] deep. On anything else (an escape, a float, a single quote, non-ASCII, a syntax error, a
//! duplicate key, the input ending first) it gives up having changed nothing, and the lexer and QEMU's parser
//! read the same bytes: they accept every message this path accepts, and find the same members in it (the
//! property test below checks it), so only the cost differs.
//!
//! When it gives up because the input ends first, with every byte before the end one it reads, it says so
//! ([`Miss::Incomplete`]): the lexer could neither complete that message nor report an error in it yet, so
//! the server may keep those bytes for the next read to complete, and read the message whole then (the
//! property test checks this on every prefix of its messages).
//!
//! QEMU's limits cannot be reached here: a message this path reads has fewer bytes than the size and token
//! limits (checked), and nests far less deep than 1024.

use super::lexer::MAX_TOKEN_COUNT;
// What a string may hold on this path: the bytes QEMU writes as they are.
use super::qobject::PLAIN;
use super::request::{Found, Members, Shape};

/// Members an object may have on this path (the duplicate check compares each key with the ones before it).
pub(crate) const MAX_MEMBERS: usize = 16;
/// Nesting this path reads.
pub(crate) const MAX_DEPTH: usize = 16;

/// Why the fast path did not read a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The input ends before the message does, and every byte before the end is one this path reads: the
    /// lexer could not complete the message either (nor find an error in it), and more bytes may let this path
    /// read it whole.
    Incomplete,
    /// Not a message this path reads, or over a limit: the lexer must read it.
    Other,
}

/// Reads a command object whole at the start of `input` (after any whitespace). Returns the bytes it used
/// (up to the closing brace) and its top-level members, or why not (the lexer must read it).
pub(crate) fn read_command(input: &[u8], max_size: usize) -> Result<(usize, Members), Miss> {
    read_object(input, max_size, |scan| {
        let mut members = Members::default();
        scan.object(Some(&mut members), 1)?;
        Some(members)
    })
}

/// Reads an object whole at the start of `input` (after any whitespace), its members read by `members` (from
/// after the opening brace up to and with the closing one). Returns the bytes used and what `members` gave,
/// or why not; an object over the size or token limit is not read.
pub(crate) fn read_object<T>(
    input: &[u8],
    max_size: usize,
    members: impl FnOnce(&mut Scan) -> Option<T>,
) -> Result<(usize, T), Miss> {
    let mut scan = Scan::new(input);
    let read = (|| {
        scan.skip_whitespace();
        let first = scan.at;
        scan.literal(b"{")?;
        let read = members(&mut scan)?;
        // Tokens take no more bytes than the message: within the limits, whatever the tokens are.
        let len = scan.at - first;
        (len < max_size && len < MAX_TOKEN_COUNT).then_some((scan.at, read))
    })();
    read.ok_or(scan.miss())
}

/// Where the scan is (also [`read_plain`](super::plain::read_plain)'s).
pub(crate) struct Scan<'a> {
    input: &'a [u8],
    pub(crate) at: usize,
    /// Runs of whitespace skipped so far (a value without any between its tokens is copied as it is).
    pub(crate) spaces: usize,
    /// The scan reached the end of the input (see [`Miss::Incomplete`]).
    ended: bool,
}

impl<'a> Scan<'a> {
    /// At the start of `input`.
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Scan { input, at: 0, spaces: 0, ended: false }
    }

    /// Why the scan failed: it reached the end of the input, or it did not.
    pub(crate) fn miss(&self) -> Miss {
        if self.ended {
            Miss::Incomplete
        } else {
            Miss::Other
        }
    }

    /// Steps over `bytes` when the input goes on with them.
    #[inline]
    pub(crate) fn literal<const N: usize>(&mut self, bytes: &[u8; N]) -> Option<()> {
        let Some(next) = self.input.get(self.at..self.at + N) else {
            // The input ends within the literal, or differs from it before its end.
            self.ended |= bytes.starts_with(&self.input[self.at..]);
            return None;
        };
        (next == bytes).then(|| self.at += N)
    }

    /// The `:` after a member's key, and the whitespace around it: what comes before its value.
    #[inline(always)]
    pub(crate) fn member_value(&mut self) -> Option<()> {
        self.skip_whitespace();
        self.literal(b":")?;
        self.skip_whitespace();
        Some(())
    }

    pub(crate) fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn peek(&mut self) -> Option<u8> {
        match self.input.get(self.at) {
            Some(&b) => Some(b),
            None => self.end(),
        }
    }

    /// Notes that the scan reached the end of the input; `None`, for the caller to return.
    #[cold]
    fn end<T>(&mut self) -> Option<T> {
        self.ended = true;
        None
    }

    pub(crate) fn skip_whitespace(&mut self) {
        if matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.spaces += 1;
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
                self.at += 1;
            }
        }
    }

    /// An object after its `{`; records its members in `top` when it is the message's own object.
    pub(crate) fn object(&mut self, mut top: Option<&mut Members>, depth: usize) -> Option<()> {
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        // Where the keys so far are (a message this path reads is shorter than 4 GiB).
        let mut keys = [(0u32, 0u32); MAX_MEMBERS];
        let mut count = 0;
        // A bit per key so far, chosen by its length and first and last bytes: a key whose bit is not set yet is
        // not among them, known without a loop over them (whose exit a processor mispredicts).
        let mut seen = 0u64;
        loop {
            let key_start = self.at;
            if self.next()? != b'"' {
                return None;
            }
            self.string_body()?;
            let key = (key_start + 1, self.at - 1);
            let bytes = |(start, end): (u32, u32)| &self.input[start as usize..end as usize];
            let short = (u32::try_from(key.0).ok()?, u32::try_from(key.1).ok()?);
            let bit = key_bit(&self.input[key.0..key.1]);
            if count == MAX_MEMBERS || (seen & bit != 0 && keys[..count].iter().any(|&k| bytes(k) == bytes(short))) {
                return None;
            }
            seen |= bit;
            keys[count] = short;
            count += 1;
            self.skip_whitespace();
            if self.next()? != b':' {
                return None;
            }
            self.skip_whitespace();
            let (start, spaces) = (self.at, self.spaces);
            let shape = self.value(depth)?;
            if let Some(top) = top.as_deref_mut() {
                let compact = self.spaces == spaces;
                // A string here is printable ASCII without escapes, a scalar an integer that fits 64 bits (fewer
                // than 20 characters, not `-0`) or a keyword: QEMU writes them back as they are.
                let plain = matches!(shape, Shape::String | Shape::Scalar);
                let found = Found { seq: count as u32 - 1, start, end: self.at, shape, json: true, compact, plain };
                top.record(&self.input[key.0..key.1], key_start, key.1 + 1, found);
            }
            self.skip_whitespace();
            match self.next()? {
                b',' => self.skip_whitespace(),
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// A list after its `[`.
    fn list(&mut self, depth: usize) -> Option<()> {
        self.skip_whitespace();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(());
        }
        loop {
            self.value(depth)?;
            self.skip_whitespace();
            match self.next()? {
                b',' => self.skip_whitespace(),
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// A value inside an object or list at `depth`.
    pub(crate) fn value(&mut self, depth: usize) -> Option<Shape> {
        let b = self.next()?;
        match b {
            b'"' => self.string_body().map(|()| Shape::String),
            b'{' if depth < MAX_DEPTH => self.object(None, depth + 1).map(|()| Shape::Object),
            b'[' if depth < MAX_DEPTH => self.list(depth + 1).map(|()| Shape::List),
            b'-' | b'0'..=b'9' => self.integer(b).map(|()| Shape::Scalar),
            b't' | b'f' | b'n' => self.keyword().map(|()| Shape::Scalar),
            _ => None,
        }
    }

    /// The rest of a string after its opening quote, up to and with its closing one.
    #[inline]
    pub(crate) fn string_body(&mut self) -> Option<()> {
        let end = self.first_in_words(self.at, not_plain, |b| !PLAIN[usize::from(b)])?;
        (self.input[end] == b'"').then(|| self.at = end + 1)
    }

    /// Where the first byte from `at` on that `stops` is, `None` if the input ends first. Eight bytes at a time
    /// (`in_word` marks the bytes that stop in a little-endian word), so that a short string or number costs
    /// one step, not one unpredictable branch per byte; the last bytes one at a time.
    #[inline]
    fn first_in_words(&mut self, mut at: usize, in_word: fn(u64) -> u64, stops: impl Fn(u8) -> bool) -> Option<usize> {
        while let Some(word) = self.input.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
            let marks = in_word(u64::from_le_bytes(word));
            if marks != 0 {
                return Some(at + (marks.trailing_zeros() / 8) as usize);
            }
            at += 8;
        }
        match self.input[at..].iter().position(|&b| stops(b)) {
            Some(i) => Some(at + i),
            None => self.end(),
        }
    }

    /// The rest of an integer after its first byte `first`: a token the lexer makes an integer (and standard
    /// JSON reads as one), ended by a byte that cannot extend it.
    fn integer(&mut self, first: u8) -> Option<()> {
        let start = self.at - 1;
        let digits_at = if first == b'-' { self.at } else { start };
        let end = self.first_in_words(digits_at, not_digit, |b| !b.is_ascii_digit());
        let digits = end.unwrap_or(self.input.len()) - digits_at;
        if digits > 1 && self.input[digits_at] == b'0' {
            // A digit after a leading zero: an error to the lexer at once, whatever follows.
            self.ended = false;
        }
        let end = end?;
        // No digits; a leading zero; a fraction or exponent; `-0`; 20 characters or more (maybe beyond 64 bits).
        let leading_zero = digits > 0 && self.input[digits_at] == b'0' && (digits > 1 || first == b'-');
        if digits == 0 || leading_zero || matches!(self.input[end], b'.' | b'e' | b'E') || end - start >= 20 {
            return None;
        }
        self.at = end;
        Some(())
    }

    /// The rest of `true`, `false` or `null` after its first byte, ended by a byte that is not a letter.
    fn keyword(&mut self) -> Option<()> {
        let start = self.at - 1;
        let Some(len) = self.input[start..].iter().position(|b| !b.is_ascii_lowercase()) else {
            return self.end();
        };
        matches!(&self.input[start..start + len], b"true" | b"false" | b"null").then(|| self.at = start + len)
    }
}

/// The bit of [`Scan::object`]'s duplicate check for a key: the same for the same key.
fn key_bit(key: &[u8]) -> u64 {
    let (first, last) = (key.first().copied().unwrap_or(0), key.last().copied().unwrap_or(0));
    let mix = (key.len() as u32).wrapping_mul(0x9E37_79B9) ^ u32::from(first) << 8 ^ u32::from(last).wrapping_mul(37);
    1 << (mix.wrapping_mul(0x85EB_CA6B) >> 26)
}

/// Each byte's lowest seven bits.
const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
/// Each byte's top bit.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// `b` in every byte.
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// The top bit of each byte of `word` (little-endian) that is not [`PLAIN`]: a control byte, DEL, non-ASCII,
/// the quote or the backslash.
const fn not_plain(word: u64) -> u64 {
    // Each test works on the bytes' low seven bits, where no sum reaches the next byte (at most 0x7F + 0x7F);
    // non-ASCII bytes are marked by their own top bit.
    let low = word & LOW7;
    // 0x7F plus one reaches 0x80.
    let del = low + splat(1);
    // The top bit of each sum is set unless the byte is a control byte (below 0x20 plus 0x60 stays under
    // 0x80), the quote or the backslash (zero once XORed with it: plus 0x7F stays under 0x80).
    let kept = (low + splat(0x60)) & ((low ^ splat(b'"')) + LOW7) & ((low ^ splat(b'\\')) + LOW7);
    (word | del | !kept) & HIGH
}

/// The top bit of each byte of `word` (little-endian) that is not an ASCII digit.
const fn not_digit(word: u64) -> u64 {
    let low = word & LOW7;
    // Below `0`: the sum stays under 0x80. Above `9`: it reaches 0x80.
    let below = !(low + splat(0x80 - b'0')) & HIGH;
    let above = (low + splat(0x80 - b'9' - 1)) & HIGH;
    (word & HIGH) | below | above
}

#[cfg(test)]
mod tests {
    use super::super::arguments::Arguments;
    use super::super::lexer::{Lexed, Lexer};
    use super::super::plain::{read_plain, Plain};
    use super::super::request::{read_request, CommandObject, ReadCommand, Request};
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    /// What the lexer and QEMU's parser read at the start of `input`: the bytes used and the request.
    fn by_the_lexer(input: &[u8]) -> Option<(usize, Result<Request, Vec<u8>>)> {
        let mut lexer = Lexer::new(usize::MAX);
        let mut keys = Vec::new();
        let mut read = None;
        let mut used = 0;
        while read.is_none() && used < input.len() {
            used += lexer.feed_until_message(&input[used..], &mut |lexed| {
                read = Some(match lexed {
                    Lexed::Message { tokens, text } => read_request(tokens, text, &mut keys),
                    Lexed::Error(desc) => Err(desc),
                })
            });
        }
        read.map(|r| (used, r))
    }

    fn agree(input: &[u8]) -> Result<(), TestCaseError> {
        let plain = read_plain(input, usize::MAX);
        if let Ok((used, members)) = read_command(input, usize::MAX) {
            if let Ok((plain_used, plain)) = plain {
                prop_assert_eq!(plain_used, used, "{}", String::from_utf8_lossy(input));
                plain_agrees(plain, members.clone().into_command_copied(&input[..used]), input)?;
            }
            let fast = Request::Object(members.into_command_copied(&input[..used]));
            let (lexer_used, lexed) = by_the_lexer(input).expect("the lexer reads what the fast path reads");
            prop_assert_eq!(used, lexer_used, "{}", String::from_utf8_lossy(input));
            prop_assert_eq!(Ok(fast), lexed, "{}", String::from_utf8_lossy(input));
            // Cut short, the message is one to wait for.
            for end in 0..used {
                prop_assert_eq!(read_command(&input[..end], usize::MAX).err(), Some(Miss::Incomplete));
            }
        } else {
            prop_assert!(
                plain.is_err(),
                "the fast path reads what is read as plain: {}",
                String::from_utf8_lossy(input)
            );
        }
        for end in 0..=input.len() {
            incomplete_is_incomplete(&input[..end])?;
        }
        Ok(())
    }

    /// Where either fast reader says the input ends first, the lexer completes no message and finds no error.
    fn incomplete_is_incomplete(input: &[u8]) -> Result<(), TestCaseError> {
        let general = read_command(input, usize::MAX).err() == Some(Miss::Incomplete);
        let plain = read_plain(input, usize::MAX).err() == Some(Miss::Incomplete);
        if general || plain {
            prop_assert!(by_the_lexer(input).is_none(), "{}", String::from_utf8_lossy(input));
        }
        // The plain reader's messages are the general one's (the server skips the second when the first ends).
        prop_assert!(!plain || general, "{}", String::from_utf8_lossy(input));
        Ok(())
    }

    /// A plain command reaches dispatch as the command object read from the same text does.
    fn plain_agrees(plain: Plain, mut object: CommandObject, text: &[u8]) -> Result<(), TestCaseError> {
        let arguments = plain.arguments.clone().map(|at| Arguments::from_verbatim(Bytes::copy_from_slice(&text[at])));
        let plain = plain.with_arguments(arguments);
        let object = &mut object;
        for allow_oob in [false, true] {
            prop_assert_eq!(plain.check(allow_oob), object.check(allow_oob));
        }
        prop_assert_eq!(plain.name(), ReadCommand::name(&object));
        prop_assert_eq!(plain.echo(), object.echo());
        prop_assert!(plain.builtin_arguments().is_none() && object.builtin_arguments().is_none());
        prop_assert_eq!(plain.into_parts(), object.into_parts());
        Ok(())
    }

    #[test]
    fn common_commands_take_the_fast_path() {
        for input in [
            &br#"{"execute":"query-status","id":7}"#[..],
            br#" {"execute": "blockdev-add", "arguments": {"driver": "null-co", "size": 67108864, "x": [true, null, -1, {}]}, "id": "a b"}"#,
            br#"{"exec-oob":"x","id":0,"extra":false,"execute":1}"#,
            br#"{}"#,
        ] {
            assert!(read_command(input, usize::MAX).is_ok(), "{}", String::from_utf8_lossy(input));
            agree(input).unwrap();
        }
        for input in [
            &br#"{"execute":"x","id":1.5}"#[..],
            br#"{"execute":"x","id":-0}"#,
            br#"{"execute":"x\n"}"#,
            br#"{"execute":'x'}"#,
            br#"{"a":1,"a":2}"#,
            br#"{"a":01}"#,
            br#"{"a":truex}"#,
            br#"[1]"#,
            br#"{"a":12345678901234567890}"#,
        ] {
            assert_eq!(read_command(input, usize::MAX).err(), Some(Miss::Other), "{}", String::from_utf8_lossy(input));
        }
        for input in
            [&br#"{"a":1"#[..], b" ", br#"{"a":[-"#, br#"{"a":"b"#, br#"{"a":tr"#, br#"{"a":12345678901234567890"#]
        {
            assert_eq!(
                read_command(input, usize::MAX).err(),
                Some(Miss::Incomplete),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(read_command(br#"{"a":00"#, usize::MAX).err(), Some(Miss::Other), "the lexer's error already");
        assert_eq!(read_command(br#"{"execute":"x"}"#, 15).err(), Some(Miss::Other), "at the size limit");
        assert!(read_command(br#"{"execute":"x"}"#, 16).is_ok());
    }

    /// The word-at-a-time tests mark exactly the bytes the bytewise ones stop at, whatever the byte and where.
    #[test]
    fn word_tests_mark_the_bytes_byte_tests_stop_at() {
        for b in 0..=255u8 {
            for lane in 0..8 {
                let mut word = [b'a'; 8];
                word[lane] = b;
                let marked = |in_word: fn(u64) -> u64| in_word(u64::from_le_bytes(word)) >> (8 * lane) & 0x80 != 0;
                assert_eq!(marked(not_plain), !PLAIN[usize::from(b)], "{b:#x} in lane {lane}");
                let mut digits = [b'5'; 8];
                digits[lane] = b;
                let marked = not_digit(u64::from_le_bytes(digits)) >> (8 * lane) & 0x80 != 0;
                assert_eq!(marked, !b.is_ascii_digit(), "{b:#x} in lane {lane}");
                let others = not_plain(u64::from_le_bytes(word)) & !(0x80 << (8 * lane));
                assert_eq!(others, 0, "only the byte itself is marked");
            }
        }
    }

    /// Parts of messages near the common ones: valid, and broken in the ways the fast path must notice.
    const PARTS: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b" ",
        b"\r\n",
        b"\"execute\"",
        b"\"exec-oob\"",
        b"\"arguments\"",
        b"\"id\"",
        b"\"query-status\"",
        b"\"node-name\"",
        b"\"a\\u0062\"",
        b"'x'",
        b"\"\xc3\xa9\"",
        b"\"\x7f\"",
        b"0",
        b"-0",
        b"-12",
        b"007",
        b"1.5",
        b"2e3",
        b"12345678901234567890",
        b"true",
        b"nul",
        b"x",
        b"\x01",
    ];

    fn messages() -> impl Strategy<Value = Vec<u8>> {
        let parts = || prop::collection::vec(prop::sample::select(PARTS), 0..12).prop_map(|p| p.concat());
        let command = (0..4usize, any::<i32>(), parts()).prop_map(|(shape, id, extra)| {
            let (head, tail) = match shape {
                0 => (r#"{"execute":"q","arguments":{"a":["#.to_string(), format!(r#"]}},"id":{id}}}"#)),
                1 => (format!(r#"{{"execute":"q","id":{id},"#), "}".to_string()),
                2 => (r#"{"exec-oob":"q","#.to_string(), r#""arguments":{}}"#.to_string()),
                _ => ("{".to_string(), "}".to_string()),
            };
            [head.as_bytes(), &extra, tail.as_bytes()].concat()
        });
        prop_oneof![1 => command, 1 => parts(), 2 => valid_command(), 2 => compact_command()]
    }

    /// Commands as clients write them (no whitespace between tokens), mostly plain, with or without arguments
    /// and id, some named as the commands the server answers itself.
    fn compact_command() -> impl Strategy<Value = Vec<u8>> {
        let names = prop::sample::select(&["q", "query-status", "qmp_capabilities", "guest-sync", r"a\u0062"][..]);
        (names, prop::option::of(value()), prop::option::of(value())).prop_map(|(name, arguments, id)| {
            let mut command = format!(r#"{{"execute":"{name}""#);
            if let Some(arguments) = arguments {
                command += &format!(r#","arguments":{{"a":{}}}"#, without_spaces(&arguments));
            }
            if let Some(id) = id {
                command += &format!(r#","id":{}"#, without_spaces(&id));
            }
            (command + "}").into_bytes()
        })
    }

    /// JSON text without the spaces between tokens ([`value`]'s strings have no quote inside).
    fn without_spaces(json: &str) -> String {
        let mut in_string = None;
        json.chars()
            .filter(|&c| {
                match in_string {
                    Some(quote) if c == quote => in_string = None,
                    None if c == '"' || c == '\'' => in_string = Some(c),
                    _ => {}
                }
                c != ' ' || in_string.is_some()
            })
            .collect()
    }

    /// JSON values, mostly of the fast path's kinds, some of other kinds, some with a key twice.
    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            8 => prop::sample::select(&["0", "-12", "true", "null", "\"s t\"", "\"\""][..]),
            1 => prop::sample::select(&["1.5", "-0", "'q'", "\"\\u0041\"", "\"\u{e9}\"", "nul"][..]),
        ];
        leaf.prop_map(String::from).prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec(("[a-d]", inner), 0..4).prop_map(|members| {
                    let members: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
                    format!("{{ {} }}", members.join(" ,"))
                }),
            ]
        })
    }

    /// Commands whose arguments and id are any [`value`].
    fn valid_command() -> impl Strategy<Value = Vec<u8>> {
        (value(), value()).prop_map(|(arguments, id)| {
            format!(r#"{{"execute": "q", "arguments":{arguments},"id":{id}}}"#).into_bytes()
        })
    }

    /// The generated messages test something: many take the fast path, many do not.
    #[test]
    fn generated_messages_take_both_paths() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let inputs: Vec<Vec<u8>> =
            (0..1000).map(|_| messages().new_tree(&mut runner).expect("a message").current()).collect();
        let fast = inputs.iter().filter_map(|input| read_command(input, usize::MAX).ok()).collect::<Vec<_>>();
        assert!((100..900).contains(&fast.len()), "{} of 1000 took the fast path", fast.len());
        let plain = inputs.iter().filter(|input| read_plain(input, usize::MAX).is_ok()).count();
        assert!((50..fast.len() - 50).contains(&plain), "{plain} of the {} were plain commands", fast.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Whatever the fast path reads, the lexer and QEMU's parser read the same way.
        #[test]
        fn the_fast_path_reads_as_the_lexer_does(input in messages()) {
            agree(&input)?;
        }
    }
}
