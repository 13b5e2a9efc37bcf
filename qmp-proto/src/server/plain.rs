//! [`PlainCommand`]: the command clients send nearly always, read straight from the input in one pass.
//!
//! Clients write a command's members in one order: `execute`, then `arguments` and `id` (our
//! [`Client`](crate::Client), and serde_json's encoding of a struct). [`read_plain`] reads exactly such a
//! command, when its members need no check and no decoding: an `execute` string of printable ASCII (not a command
//! the server answers itself), `arguments` an object as standard JSON without whitespace between its tokens or
//! none, an id QEMU writes back as it came or none, nothing else. It matches the member keys as the literal
//! bytes they are, so the top-level object costs no key bookkeeping (no duplicate check, no [`Members`]); only
//! the `arguments` object is read by the [fast path](super::fast)'s general scan. Dispatch then takes the name,
//! id and arguments from the input as they are, into the command handed to the caller: no
//! [`CommandObject`](super::request::CommandObject) is built in between.
//!
//! On anything else it gives up having changed nothing, and the general readers read the same bytes; both
//! routes reach the caller the same way ([`ReadCommand`]; the property test of the fast path checks that they
//! agree on every message this one reads).
//!
//! [`Members`]: super::request::Members

use std::ops::Range;

use super::arguments::Arguments;
use super::fast::{read_object, Miss};
use super::qobject::QDict;
use super::request::{is_builtin, Parts, ReadCommand, Shape};
use super::short::ShortBytes;

/// A plain command read from a message's text: its name and id copied, and where its `arguments` are, left in
/// the input for the caller to take without a copy ([`with_arguments`](Self::with_arguments)).
#[derive(Debug)]
pub(crate) struct Plain {
    name: ShortBytes,
    id: Option<ShortBytes>,
    /// The id again, as the server keeps it until the reply: read from the input too, not copied from `id`
    /// just written (a copy of bytes just stored in pieces waits for the stores).
    echo: Option<ShortBytes>,
    /// Where the `arguments` object's text is in the input, if it has one.
    pub(crate) arguments: Option<Range<usize>>,
}

impl Plain {
    /// The command, given its `arguments` text (`None` without any).
    pub(crate) fn with_arguments(self, arguments: Option<Arguments>) -> PlainCommand {
        PlainCommand { name: self.name, arguments: arguments.unwrap_or_default(), id: self.id, echo: self.echo }
    }
}

/// A plain command, ready for dispatch. See the [module docs](self).
pub(crate) struct PlainCommand {
    /// Printable ASCII.
    name: ShortBytes,
    arguments: Arguments,
    /// Written back as it came.
    id: Option<ShortBytes>,
    echo: Option<ShortBytes>,
}

/// Reads a plain command whole at the start of `input` (after any whitespace): returns the bytes it used (up
/// to the closing brace) and the command, or why not (the general readers must read it). The short texts are
/// copied in fixed-size blocks, which may reach past the message: pass the whole input.
pub(crate) fn read_plain(input: &[u8], max_size: usize) -> Result<(usize, Plain), Miss> {
    let (used, (name, id, arguments)) = read_object(input, max_size, |scan| {
        scan.skip_whitespace();
        scan.literal(b"\"execute\"")?;
        scan.member_value()?;
        scan.literal(b"\"")?;
        let name = scan.at;
        scan.string_body()?;
        let name = name..scan.at - 1;
        let (mut arguments, mut id) = (None, None);
        loop {
            scan.skip_whitespace();
            match scan.next()? {
                b'}' => return Some((name, id, arguments)),
                b',' => scan.skip_whitespace(),
                _ => return None,
            }
            if arguments.is_none() && scan.literal(b"\"arguments\"").is_some() {
                scan.member_value()?;
                let (start, spaces) = (scan.at, scan.spaces);
                scan.literal(b"{")?;
                scan.object(None, 2)?;
                // Compact: the text is what QEMU would read, as it is.
                (scan.spaces == spaces).then_some(())?;
                arguments = Some(start..scan.at);
            } else if id.is_none() && scan.literal(b"\"id\"").is_some() {
                scan.member_value()?;
                let start = scan.at;
                // One token: printable ASCII without escapes, an integer that fits 64 bits but `-0`, a keyword.
                let (Shape::String | Shape::Scalar) = scan.value(1)? else { return None };
                id = Some(start..scan.at);
            } else {
                return None;
            }
        }
    })?;
    if is_builtin(&input[name.clone()]) {
        return Err(Miss::Other);
    }
    let copy = |at: Range<usize>| ShortBytes::from_range(input, at.start, at.end);
    Ok((used, Plain { name: copy(name), id: id.clone().map(copy), echo: id.map(copy), arguments }))
}

impl ReadCommand for PlainCommand {
    fn check(&self, _allow_oob: bool) -> Result<bool, String> {
        // One `execute`, a string; `arguments` an object; nothing else: in band, and nothing to report.
        Ok(false)
    }

    fn name(&self) -> &[u8] {
        self.name.as_bytes()
    }

    fn echo(&self) -> Option<&[u8]> {
        self.id.as_ref().map(ShortBytes::as_bytes)
    }

    fn builtin_arguments(&self) -> Option<&QDict> {
        None
    }

    fn into_parts(self) -> Parts {
        Parts { name: self.name, arguments: self.arguments, id: self.id, echo: self.echo }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name, id and arguments `read_plain` finds in `input`, as text, or `None`.
    fn read(input: &str) -> Option<(usize, String, Option<String>, Option<String>)> {
        let (used, plain) = read_plain(input.as_bytes(), usize::MAX).ok()?;
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).expect("ASCII");
        let arguments = plain.arguments.clone().map(|at| input[at].to_string());
        Some((used, text(plain.name.as_bytes()), plain.id.as_ref().map(|id| text(id.as_bytes())), arguments))
    }

    #[test]
    fn commands_as_clients_write_them_are_read_in_one_pass() {
        let some = |used: usize, name: &str, id: Option<&str>, arguments: Option<&str>| {
            Some((used, name.to_string(), id.map(String::from), arguments.map(String::from)))
        };
        assert_eq!(read(r#"{"execute":"query-status","id":7}"#), some(33, "query-status", Some("7"), None));
        assert_eq!(read(r#"{"execute":"q"}{"execute":"r"}"#), some(15, "q", None, None), "the first message only");
        let both = r#"{"execute":"job-complete","arguments":{"id":"mr","n":[1,{}]},"id":"a b"}"#;
        assert_eq!(read(both), some(both.len(), "job-complete", Some(r#""a b""#), Some(r#"{"id":"mr","n":[1,{}]}"#)));
        let id_first = r#" { "execute" : "x" , "id" : -3 , "arguments" : {} } "#;
        assert_eq!(read(id_first), some(id_first.len() - 1, "x", Some("-3"), Some("{}")), "whitespace between members");
    }

    #[test]
    fn other_commands_are_left_to_the_general_readers() {
        for input in [
            r#"{"id":1,"execute":"q"}"#,
            r#"{"execute":"q","id":1,"id":2}"#,
            r#"{"execute":"q","arguments":{},"arguments":{}}"#,
            r#"{"execute":"q","execute":"r"}"#,
            r#"{"execute":"q","arguments":{"a": 1}}"#,
            r#"{"execute":"q","arguments":[]}"#,
            r#"{"execute":"q","arguments":{"a":1,"a":2}}"#,
            r#"{"execute":"q","id":[1]}"#,
            r#"{"execute":"q","id":1.5}"#,
            r#"{"execute":"q","id":"\u0041"}"#,
            r#"{"execute":"a\u0062"}"#,
            r#"{"execute":1}"#,
            r#"{"execute":"q","extra":1}"#,
            r#"{"exec-oob":"q"}"#,
            r#"{"execute":"qmp_capabilities"}"#,
            r#"{"execute":"guest-sync-delimited","arguments":{"id":1}}"#,
            r#"{"execute":"q""#,
            r#"{"execute":"q","id":1"#,
        ] {
            assert_eq!(read(input), None, "{input}");
        }
        assert_eq!(read_plain(br#"{"execute":"x"}"#, 15).err(), Some(Miss::Other), "at the size limit");
        assert!(read_plain(br#"{"execute":"x"}"#, 16).is_ok());
    }
}
