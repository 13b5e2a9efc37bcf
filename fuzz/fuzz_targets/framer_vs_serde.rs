//! Differential: the framer against `serde_json::StreamDeserializer` on concatenations of JSON values separated
//! by arbitrary whitespace (and 0xFF markers, which the framer reports as delimiters and serde is shown as a
//! space): the same values with the same boundaries, whatever the chunking; with a small size limit, the same
//! boundaries with every value over the limit reported as oversized (with its trailing id, when it has one
//! that the framer can see), and never more than the limit buffered.
//!
//! Where the two may rightly differ is left out by construction: a number or literal at the very end of the
//! input has no terminator yet, so the framer must still be waiting for it (it emerges after one more space),
//! while serde takes it at EOF.
//!
//! Every message's [`Layout`](qmp_proto::framer::Layout) (where its first nested value ends, what the client's
//! classification relies on) is checked against the same end found byte by byte, whatever the chunking.
//!
//! Input: `[limit, chunk_seed, bytes...]`. When the bytes are such a concatenation already (recorded server
//! output is), they are used as they are; otherwise a concatenation is generated from them.
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use qmp_fuzz::chunks;
use qmp_proto::framer::{Frame, Framer};
use serde_json::value::RawValue;

const MAX_DEPTH: u32 = 1500;
const WS: [u8; 4] = *b" \t\r\n";

fn ws(u: &mut Unstructured, out: &mut Vec<u8>) -> arbitrary::Result<()> {
    // Mostly none, sometimes a few.
    if u.ratio(1, 3)? {
        for _ in 0..u.int_in_range(1..=4)? {
            out.push(*u.choose(&WS)?);
        }
    }
    Ok(())
}

fn string(u: &mut Unstructured, out: &mut Vec<u8>) -> arbitrary::Result<()> {
    out.push(b'"');
    for _ in 0..u.int_in_range(0..=12)? {
        match u.int_in_range(0..=9)? {
            0 => out.extend_from_slice(u.choose(&[
                &b"\\\""[..],
                b"\\\\",
                b"\\/",
                b"\\b",
                b"\\f",
                b"\\n",
                b"\\r",
                b"\\t",
            ])?),
            1 => {
                let c = u.int_in_range(0u32..=0xD7FF)?;
                out.extend_from_slice(format!("\\u{c:04X}").as_bytes());
            }
            2 => out.extend_from_slice(b"\\uD83D\\uDE00"),
            3 => out.extend_from_slice(u.choose(&[&b"{"[..], b"}", b"[", b"]", b",", b":", b" ", b"\\\\\\\""])?),
            4 => {
                let c: char = u.arbitrary()?;
                if c != '"' && c != '\\' && c >= ' ' {
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
            }
            _ => out.push(u.int_in_range(b'a'..=b'z')?),
        }
    }
    out.push(b'"');
    Ok(())
}

fn digits(u: &mut Unstructured, out: &mut Vec<u8>, first_nonzero: bool) -> arbitrary::Result<()> {
    let n = u.int_in_range(1..=5)?;
    for i in 0..n {
        let lo = if i == 0 && first_nonzero { b'1' } else { b'0' };
        out.push(u.int_in_range(lo..=b'9')?);
    }
    Ok(())
}

/// A number or a literal: a value that needs a terminator.
fn bare(u: &mut Unstructured, out: &mut Vec<u8>) -> arbitrary::Result<()> {
    match u.int_in_range(0..=4)? {
        0 => out.extend_from_slice(b"true"),
        1 => out.extend_from_slice(b"false"),
        2 => out.extend_from_slice(b"null"),
        _ => {
            if u.arbitrary()? {
                out.push(b'-');
            }
            if u.ratio(1, 4)? {
                out.push(b'0');
            } else {
                digits(u, out, true)?;
            }
            if u.ratio(1, 3)? {
                out.push(b'.');
                digits(u, out, false)?;
            }
            if u.ratio(1, 3)? {
                out.push(*u.choose(b"eE")?);
                if let Some(sign) = u.choose(&[None, Some(b'+'), Some(b'-')])? {
                    out.push(*sign);
                }
                digits(u, out, false)?;
            }
        }
    }
    Ok(())
}

/// Any JSON value, spaced at random inside. Returns whether it delimits itself (object, array, string).
fn value(u: &mut Unstructured, out: &mut Vec<u8>, depth: u32) -> arbitrary::Result<bool> {
    let top = if depth >= MAX_DEPTH { 1 } else { 3 };
    match u.int_in_range(0..=top)? {
        0 => bare(u, out).map(|()| false),
        1 => string(u, out).map(|()| true),
        kind => {
            let (open, close) = if kind == 2 { (b'[', b']') } else { (b'{', b'}') };
            out.push(open);
            ws(u, out)?;
            for i in 0..u.int_in_range(0..=3)? {
                if i > 0 {
                    out.push(b',');
                    ws(u, out)?;
                }
                if kind == 3 {
                    string(u, out)?;
                    ws(u, out)?;
                    out.push(b':');
                    ws(u, out)?;
                }
                value(u, out, depth + 1)?;
                ws(u, out)?;
            }
            out.push(close);
            Ok(true)
        }
    }
}

/// Values, whitespace and 0xFF markers; a number or literal is followed by a separator or by a value that
/// delimits itself.
fn generate(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut needs_separator = false;
    while !u.is_empty() {
        let before = out.len();
        ws(u, &mut out)?;
        if u.ratio(1, 8)? {
            out.push(0xFF);
            ws(u, &mut out)?;
        }
        let separated = out.len() > before;
        let mut value_bytes = Vec::new();
        let delimits = value(u, &mut value_bytes, 0)?;
        if needs_separator && !separated && !delimits {
            out.push(b' ');
        }
        out.extend_from_slice(&value_bytes);
        needs_separator = !delimits;
    }
    Ok(out)
}

/// What serde makes of `bytes` (0xFF shown as a space): the ranges of its values, or `None` if it rejects
/// them or a 0xFF falls inside a value.
fn serde_values(bytes: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let shown: Vec<u8> = bytes.iter().map(|&b| if b == 0xFF { b' ' } else { b }).collect();
    let mut ranges = Vec::new();
    for v in serde_json::Deserializer::from_slice(&shown).into_iter::<&RawValue>() {
        let v = v.ok()?;
        let start = v.get().as_ptr() as usize - shown.as_ptr() as usize;
        ranges.push(start..start + v.get().len());
    }
    let inside = |i: usize| ranges.iter().any(|r| r.contains(&i));
    (0..bytes.len()).all(|i| bytes[i] != 0xFF || !inside(i)).then_some(ranges)
}

/// The offset past the close bracket that first brings the depth of `message` from 2 back to 1, found byte by
/// byte: what the framer's [`Layout`](qmp_proto::framer::Layout) must say.
fn first_nested_end(message: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
    for (k, &b) in message.iter().enumerate() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, ..) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => depth += 1,
            (false, _, b'}' | b']') => {
                depth = depth.saturating_sub(1);
                if depth == 1 {
                    return Some(k + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The frames of `bytes` fed in chunks; each message's layout is checked against [`first_nested_end`]. Also
/// returns, for each oversized value in order, its layout's `begins_as_reply`.
fn frames(bytes: &[u8], max: usize, seed: u8, finish: bool) -> (Vec<Frame>, bool, Vec<bool>) {
    let mut framer = Framer::new(max);
    let mut out = Vec::new();
    let mut replies = Vec::new();
    let mut push = |f: Frame, layout: qmp_proto::framer::Layout| {
        match &f {
            Frame::Message(m) => {
                let text = String::from_utf8_lossy(m);
                assert_eq!(layout.first_nested_end(), first_nested_end(m), "layout of {text:?}");
                assert!(!layout.begins_as_reply(), "a message's layout says it began as an oversized reply");
            }
            Frame::Oversized { .. } => replies.push(layout.begins_as_reply()),
            _ => {}
        }
        out.push(f);
    };
    for cut in chunks(seed, bytes.len()) {
        framer.feed_framed(&bytes[cut], &mut push);
        assert!(framer.buffered() <= max, "{} bytes buffered over a {max}-byte limit", framer.buffered());
    }
    let waiting = framer.in_message();
    if finish {
        framer.feed_framed(b" ", &mut push);
    }
    assert!(!framer.in_message() || !finish);
    (out, waiting, replies)
}

/// Whether a value begins as QEMU's replies do: `{`, then a `"return"` or `"error"` key (whitespace aside).
fn begins_as_reply(text: &[u8]) -> bool {
    let s = String::from_utf8_lossy(text);
    let Some(rest) = s.trim_start_matches([' ', '\t', '\r', '\n']).strip_prefix('{') else {
        return false;
    };
    let rest = rest.trim_start_matches([' ', '\t', '\r', '\n']);
    rest.starts_with("\"return\"") || rest.starts_with("\"error\"")
}

/// The `id` member of an object as the framer should see it: a non-negative integer, the last one when
/// the key repeats. Read without parsing the other members (serde refuses numbers like `1e400` as values).
fn expected_id(text: &[u8]) -> Option<u64> {
    let mut de = serde_json::Deserializer::from_slice(text);
    de.disable_recursion_limit();
    let members: std::collections::HashMap<Key, &RawValue> = serde::Deserialize::deserialize(&mut de).ok()?;
    members.get(&Key(b"id".to_vec()))?.get().parse().ok()
}

/// A member's name as bytes: JSON allows escapes that are no Unicode text (a lone surrogate, `"\uD811"`),
/// which serde refuses as a `String` and decodes as bytes (WTF-8); the framer reads such names all the same.
#[derive(PartialEq, Eq, Hash)]
struct Key(Vec<u8>);

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Key, E> {
                Ok(Key(v.to_vec()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.as_bytes().to_vec()))
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit, seed, ref rest @ ..] = *data else { return };
    let generated;
    let (bytes, values) = match serde_values(rest) {
        Some(values) => (rest, values),
        None => {
            generated = match generate(&mut Unstructured::new(rest)) {
                Ok(g) => g,
                Err(_) => return,
            };
            let values = serde_values(&generated).unwrap_or_else(|| {
                panic!("serde rejects a generated concatenation: {:?}", String::from_utf8_lossy(&generated))
            });
            (&generated[..], values)
        }
    };
    // A bare value at the very end has no terminator: the framer waits for one.
    let open_end = values.last().is_some_and(|r| r.end == bytes.len() && !matches!(bytes[r.start], b'{' | b'[' | b'"'));
    let delimiters = bytes.iter().enumerate().filter(|(_, &b)| b == 0xFF).map(|(i, _)| i);
    let mut expected: Vec<(usize, Option<std::ops::Range<usize>>)> =
        values.iter().map(|r| (r.start, Some(r.clone()))).chain(delimiters.map(|i| (i, None))).collect();
    expected.sort_by_key(|(at, _)| *at);

    // No limit in the way: the same values, byte for byte, and delimiters where the 0xFF bytes are.
    let (got, waiting, _) = frames(bytes, bytes.len() + 1, seed, true);
    assert_eq!(waiting, open_end, "the framer should wait exactly for a bare value at the end");
    let want: Vec<Frame> = expected
        .iter()
        .map(|(_, r)| match r {
            Some(r) => Frame::Message(bytes[r.clone()].to_vec().into()),
            None => Frame::Delimiter,
        })
        .collect();
    assert_eq!(got, want, "framer and serde disagree on {:?}", String::from_utf8_lossy(bytes));

    // A small limit: the same boundaries; the values over it oversized, each with the id the framer may see.
    let max = usize::from(limit % 64) + 1;
    let (got, _, replies) = frames(bytes, max, seed, true);
    assert_eq!(got.len(), want.len());
    let mut replies = replies.into_iter();
    for (frame, (_, r)) in got.iter().zip(&expected) {
        match (frame, r) {
            (Frame::Delimiter, None) => {}
            (Frame::Message(m), Some(r)) => assert!(m[..] == bytes[r.clone()] && r.len() <= max),
            (Frame::Oversized { len, id }, Some(r)) => {
                let text = &bytes[r.clone()];
                assert!(*len == r.len() as u64 && r.len() > max, "oversized {len} for {} bytes", r.len());
                // Whether it began as a reply, told from its first 24 bytes (and nothing below that limit).
                let reply = replies.next().expect("a layout for each oversized value");
                let lossy = String::from_utf8_lossy(text);
                assert_eq!(reply, max >= 24 && begins_as_reply(&text[..text.len().min(24)]), "reply? {lossy:?}");
                if id.is_some() {
                    assert_eq!(*id, expected_id(text), "wrong trailing id in {:?}", String::from_utf8_lossy(text));
                }
                // The compact and QEMU forms of a reply's trailing id are always found.
                let tail = &text[text.len().saturating_sub(32)..];
                if let Some(n) = tail.windows(4).any(|w| w == b"\"id\"").then(|| expected_id(text)).flatten() {
                    if text.ends_with(format!(",\"id\":{n}}}").as_bytes())
                        || text.ends_with(format!(", \"id\": {n}}}").as_bytes())
                    {
                        assert_eq!(*id, Some(n), "missed trailing id in {:?}", String::from_utf8_lossy(text));
                    }
                }
            }
            (f, r) => panic!("frame {f:?} where {r:?} was expected"),
        }
    }
});
