//! QEMU's JSON values (`QObject`) and how QEMU writes them.
//!
//! A server that answers like QEMU must write like QEMU: `", "` and `": "` separators, members in the order of
//! QEMU's `QDict` hash table (not the order they arrived in: replies read `{"return": ..., "id": 1}` but errors
//! `{"id": 1, "error": ...}`), strings as ASCII with upper-case `\uXXXX` escapes, a replacement character for
//! invalid UTF-8, integers exactly and other numbers as `%.17g`. Ids are echoed as QEMU re-writes them, so they
//! are kept in this model from parsing to the reply.

use serde_json::Value;

use super::short::ShortBytes;

/// A JSON value as QEMU holds it. Strings are byte strings in QEMU's modified UTF-8.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum QObject {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    String(Vec<u8>),
    List(Vec<QObject>),
    Dict(QDict),
}

/// Buckets of QEMU's `QDict` hash table (`QDICT_BUCKET_MAX`).
const BUCKETS: u32 = 512;

/// A dictionary that iterates in the order QEMU's `QDict` does: by hash bucket, the latest insertion first
/// within a bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct QDict {
    /// (bucket, insertion number, key, value), kept sorted in iteration order.
    entries: Vec<(u32, u64, ShortBytes, QObject)>,
    inserted: u64,
}

/// QEMU's `tdb_hash` of a key, reduced to a bucket.
pub(crate) const fn bucket(key: &[u8]) -> u32 {
    // A key is a C string: it ends at the first NUL. (A `const fn`, for the buckets of known keys.)
    let mut len = 0;
    while len < key.len() && key[len] != 0 {
        len += 1;
    }
    let mut value = 0x238F_13AFu32.wrapping_mul(len as u32);
    let mut i = 0;
    while i < len {
        value = value.wrapping_add((key[i] as u32) << ((i * 5) % 24));
        i += 1;
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345) % BUCKETS
}

impl QDict {
    pub(crate) fn new() -> Self {
        QDict::default()
    }

    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&QObject> {
        self.entries.iter().find(|e| e.2.as_bytes() == key.as_bytes()).map(|e| &e.3)
    }

    /// True when `key` is a member.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.entries.iter().any(|e| e.2.as_bytes() == key)
    }

    /// Adds a member, or replaces the value of an existing one in place (as `qdict_put_obj` does).
    pub(crate) fn put(&mut self, key: impl AsRef<[u8]>, value: QObject) {
        let key = key.as_ref();
        if let Some(e) = self.entries.iter_mut().find(|e| e.2.as_bytes() == key) {
            e.3 = value;
            return;
        }
        self.inserted += 1;
        let b = bucket(key);
        let seq = self.inserted;
        let at = self.entries.partition_point(|e| (e.0, u64::MAX - e.1) < (b, u64::MAX - seq));
        self.entries.insert(at, (b, seq, ShortBytes::new(key), value));
    }

    /// Members in QEMU's iteration order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &QObject)> {
        self.entries.iter().map(|e| (e.2.as_bytes(), &e.3))
    }

    /// Converts to a serde_json map, consuming the dictionary (see [`QObject::into_json`]).
    pub(crate) fn into_json_map(self) -> serde_json::Map<String, Value> {
        self.entries.into_iter().map(|(_, _, k, v)| (rust_string(k.as_bytes()), v.into_json())).collect()
    }
}

impl QObject {
    /// A string value from text.
    pub(crate) fn str(s: &str) -> QObject {
        QObject::String(s.as_bytes().to_vec())
    }

    /// A QEMU `QString` that holds `s` as modified UTF-8 (U+0000 as `C0 80`).
    fn from_rust_str(s: &str) -> QObject {
        if !s.contains('\0') {
            return QObject::str(s);
        }
        let mut out = Vec::with_capacity(s.len() + 1);
        for b in s.bytes() {
            if b == 0 {
                out.extend_from_slice(&[0xC0, 0x80]);
            } else {
                out.push(b);
            }
        }
        QObject::String(out)
    }

    /// Converts a serde_json value (a reply or event payload from the caller).
    pub(crate) fn from_json(value: &Value) -> QObject {
        match value {
            Value::Null => QObject::Null,
            Value::Bool(b) => QObject::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    QObject::Int(i)
                } else if let Some(u) = n.as_u64() {
                    QObject::UInt(u)
                } else {
                    QObject::Double(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => QObject::from_rust_str(s),
            Value::Array(items) => QObject::List(items.iter().map(QObject::from_json).collect()),
            Value::Object(map) => {
                let mut dict = QDict::new();
                for (k, v) in map {
                    dict.put(k.as_bytes(), QObject::from_json(v));
                }
                QObject::Dict(dict)
            }
        }
    }

    /// Converts to a serde_json value (arguments handed to the caller). Strings come from the parser, which
    /// accepts valid modified UTF-8 only; non-finite numbers (`1e400`) become `null`.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            QObject::Null => Value::Null,
            QObject::Bool(b) => Value::Bool(*b),
            QObject::Int(i) => Value::from(*i),
            QObject::UInt(u) => Value::from(*u),
            QObject::Double(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
            QObject::String(s) => Value::String(rust_string(s)),
            QObject::List(items) => Value::Array(items.iter().map(QObject::to_json).collect()),
            QObject::Dict(dict) => Value::Object(dict.iter().map(|(k, v)| (rust_string(k), v.to_json())).collect()),
        }
    }

    /// [`to_json`](Self::to_json), consuming the value: strings move into the result instead of being copied.
    pub(crate) fn into_json(self) -> Value {
        match self {
            QObject::String(s) => Value::String(rust_string_owned(s)),
            QObject::List(items) => Value::Array(items.into_iter().map(QObject::into_json).collect()),
            QObject::Dict(dict) => Value::Object(dict.into_json_map()),
            scalar => scalar.to_json(),
        }
    }

    /// Appends the value as QEMU's `qobject_to_json` writes it.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            QObject::Null => out.extend_from_slice(b"null"),
            QObject::Bool(true) => out.extend_from_slice(b"true"),
            QObject::Bool(false) => out.extend_from_slice(b"false"),
            QObject::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            QObject::UInt(u) => out.extend_from_slice(u.to_string().as_bytes()),
            QObject::Double(d) => out.extend_from_slice(format_g17(*d).as_bytes()),
            QObject::String(s) => write_string(out, s),
            QObject::List(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b", ");
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            QObject::Dict(dict) => {
                out.push(b'{');
                for (i, (k, v)) in dict.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b", ");
                    }
                    write_string(out, k);
                    out.extend_from_slice(b": ");
                    v.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

/// A Rust string from modified UTF-8 (`C0 80` is U+0000); anything invalid becomes U+FFFD.
fn rust_string(bytes: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(bytes) {
        // Valid modified UTF-8 that is valid UTF-8 too (no `C0 80`) reads the same both ways; see
        // [`rust_string_owned`].
        return s.to_owned();
    }
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        let (cp, used) = mod_utf8_codepoint(rest);
        out.push(cp.and_then(char::from_u32).unwrap_or('\u{FFFD}'));
        rest = &rest[used.max(1)..];
    }
    out
}

/// [`rust_string`], reusing the allocation when the bytes are UTF-8 already. The parser's strings are valid
/// modified UTF-8, which differs from UTF-8 only in writing U+0000 as `C0 80` (invalid UTF-8): any that is valid
/// UTF-8 reads the same both ways.
pub(crate) fn rust_string_owned(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| rust_string(e.as_bytes()))
}

/// QEMU's `mod_utf8_codepoint`: the code point at the start of `s` and the bytes it used, or `None` (with the
/// bytes to skip) for an invalid sequence. The end of `s` counts as a NUL byte.
pub(crate) fn mod_utf8_codepoint(s: &[u8]) -> (Option<u32>, usize) {
    const MIN_CP: [u32; 5] = [0x80, 0x800, 0x10000, 0x20_0000, 0x400_0000];
    let Some(&first) = s.first() else {
        return (None, 0);
    };
    let byte = u32::from(first);
    if byte < 0x80 {
        return (Some(byte), 1);
    }
    if byte >= 0xFE || byte & 0x40 == 0 {
        return (None, 1);
    }
    let len = (first.leading_ones()) as usize; // 2..=6
    let mut cp = byte & ((0x80u32 >> len) - 1);
    let mut used = 1;
    for i in 1..len {
        let b = u32::from(s.get(i).copied().unwrap_or(0));
        if b & 0xC0 != 0x80 {
            return (None, used);
        }
        used += 1;
        cp = (cp << 6) | (b & 0x3F);
    }
    let invalid = cp > 0x10_FFFF
        || (0xFDD0..=0xFDEF).contains(&cp)
        || cp & 0xFFFE == 0xFFFE
        || (0xD800..=0xDFFF).contains(&cp)
        || (cp < MIN_CP[len - 2] && !(cp == 0 && len == 2));
    (if invalid { None } else { Some(cp) }, used)
}

/// The bytes QEMU writes as they are: printable ASCII but the quote and the backslash.
pub(crate) const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7F {
        table[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    table
};

/// Appends `s` (a C string: it ends at a NUL) as QEMU writes a string: ASCII only, `\uXXXX` in upper case.
pub(crate) fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    let s = &s[..memchr::memchr(0, s).unwrap_or(s.len())];
    out.push(b'"');
    let mut rest = s;
    while !rest.is_empty() {
        // Fast path: a run of plain printable ASCII.
        let plain = rest.iter().position(|&b| !PLAIN[usize::from(b)]).unwrap_or(rest.len());
        if plain > 0 {
            out.extend_from_slice(&rest[..plain]);
            rest = &rest[plain..];
            continue;
        }
        let (cp, used) = mod_utf8_codepoint(rest);
        rest = &rest[used.max(1)..];
        match cp {
            Some(0x22) => out.extend_from_slice(b"\\\""),
            Some(0x5C) => out.extend_from_slice(b"\\\\"),
            Some(0x08) => out.extend_from_slice(b"\\b"),
            Some(0x0C) => out.extend_from_slice(b"\\f"),
            Some(0x0A) => out.extend_from_slice(b"\\n"),
            Some(0x0D) => out.extend_from_slice(b"\\r"),
            Some(0x09) => out.extend_from_slice(b"\\t"),
            other => {
                let cp = other.unwrap_or(0xFFFD);
                if cp > 0xFFFF {
                    let c = cp - 0x10000;
                    push_u16_escape(out, 0xD800 + (c >> 10));
                    push_u16_escape(out, 0xDC00 + (c & 0x3FF));
                } else if !(0x20..0x7F).contains(&cp) {
                    push_u16_escape(out, cp);
                } else {
                    out.push(cp as u8);
                }
            }
        }
    }
    out.push(b'"');
}

fn push_u16_escape(out: &mut Vec<u8>, unit: u32) {
    out.extend_from_slice(format!("\\u{unit:04X}").as_bytes());
}

/// C's `printf("%.17g", d)` (glibc), which QEMU uses for numbers that are not 64-bit integers.
pub(crate) fn format_g17(d: f64) -> String {
    if d.is_nan() {
        return if d.is_sign_negative() { "-nan".into() } else { "nan".into() };
    }
    if d.is_infinite() {
        return if d < 0.0 { "-inf".into() } else { "inf".into() };
    }
    const P: i32 = 17;
    // 17 significant digits in scientific form: d.dddddddddddddddde±X
    let sci = format!("{:.*e}", (P - 1) as usize, d);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..P).contains(&exp) {
        let mantissa = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (P - 1 - exp).max(0) as usize;
        trim_fraction(&format!("{d:.decimals$}")).to_string()
    }
}

/// Removes trailing zeros of a fraction, and the point when nothing is left after it.
fn trim_fraction(s: &str) -> &str {
    if !s.contains('.') {
        return s;
    }
    s.trim_end_matches('0').trim_end_matches('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &QObject) -> String {
        let mut out = Vec::new();
        v.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn g17_matches_printf() {
        assert_eq!(format_g17(1.5), "1.5");
        assert_eq!(format_g17(3.5), "3.5");
        assert_eq!(format_g17(1000.0), "1000");
        assert_eq!(format_g17(18446744073709551616.0), "1.8446744073709552e+19");
        assert_eq!(format_g17(0.1), "0.10000000000000001");
        assert_eq!(format_g17(1e-5), "1.0000000000000001e-05");
        assert_eq!(format_g17(0.0), "0");
        assert_eq!(format_g17(-0.0), "-0");
        assert_eq!(format_g17(f64::INFINITY), "inf");
        assert_eq!(format_g17(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn dicts_iterate_in_qemu_hash_order() {
        let mut reply = QDict::new();
        reply.put("return", QObject::Dict(QDict::new()));
        reply.put("id", QObject::Int(3));
        assert_eq!(json(&QObject::Dict(reply)), r#"{"return": {}, "id": 3}"#);
        let mut error = QDict::new();
        error.put("error", QObject::Null);
        error.put("id", QObject::Int(1));
        assert_eq!(json(&QObject::Dict(error)), r#"{"id": 1, "error": null}"#);
        let mut version = QDict::new();
        for k in ["major", "minor", "micro"] {
            version.put(k, QObject::Int(0));
        }
        assert_eq!(json(&QObject::Dict(version)), r#"{"micro": 0, "minor": 0, "major": 0}"#);
    }

    #[test]
    fn keys_of_any_length_and_strings_with_nul_convert() {
        let long = "k".repeat(64);
        let mut dict = QDict::new();
        for key in ["", "id", &"k".repeat(22), &long] {
            dict.put(key, QObject::String(b"a\xC0\x80b".to_vec()));
            assert!(dict.contains(key.as_bytes()));
        }
        let expected: serde_json::Map<String, Value> =
            dict.iter().map(|(k, _)| (rust_string(k), Value::from("a\0b"))).collect();
        assert_eq!(QObject::Dict(dict.clone()).to_json(), Value::Object(expected.clone()));
        assert_eq!(dict.clone().into_json_map(), expected);
    }

    #[test]
    fn strings_are_written_as_ascii() {
        let mut out = Vec::new();
        write_string(&mut out, "h\u{e9}\u{4e2d}\u{1F600}\"\\\n\t\x01\x7f".as_bytes());
        assert_eq!(String::from_utf8(out).unwrap(), r#""h\u00E9\u4E2D\uD83D\uDE00\"\\\n\t\u0001\u007F""#);
        let mut out = Vec::new();
        write_string(&mut out, b"x\xffy");
        assert_eq!(out, br#""x\uFFFDy""#);
    }
}
