//! Command encoding: the fewest bytes QEMU will accept.
//!
//! QEMU reads its monitor one byte per `read()` and spends about 2.4 us of CPU per command byte, so a command
//! is compact JSON with no spaces, `arguments` only when there are some, a small integer id (echoed back
//! exactly) and no trailing newline (QEMU needs none):
//! `{"execute":"query-status","id":3}`.

use serde::Serialize;

use crate::error::UsageError;

/// Serializes `args` as a command's `arguments`. `None` when there are none (`null`, `()`, `None` or `{}`),
/// so the member can be omitted; an error when they are not a JSON object.
pub fn encode_arguments<A: Serialize + ?Sized>(args: &A) -> Result<Option<Vec<u8>>, UsageError> {
    let mut bytes = Vec::with_capacity(128);
    Ok(append_arguments(&mut bytes, args)?.then_some(bytes))
}

/// [`encode_arguments`] appending to `out` (a buffer the client reuses: no allocation per command). Returns
/// whether there are arguments; when there are none, or on an error, `out` is left as it was.
pub(crate) fn append_arguments<A: Serialize + ?Sized>(out: &mut Vec<u8>, args: &A) -> Result<bool, UsageError> {
    let start = out.len();
    let verdict = match serde_json::to_writer(&mut *out, args) {
        Err(e) => Err(UsageError::InvalidArguments(e.to_string())),
        Ok(()) => match &out[start..] {
            b"null" | b"{}" => Ok(false),
            [b'{', ..] => Ok(true),
            bytes => Err(UsageError::InvalidArguments(format!(
                "got {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            ))),
        },
    };
    if !matches!(verdict, Ok(true)) {
        out.truncate(start);
    }
    verdict
}

/// Appends one command to `out`: `{"execute":NAME[,"arguments":ARGS],"id":ID}` (`exec-oob` when `oob`).
/// `args` must come from [`encode_arguments`].
pub fn encode_command(out: &mut Vec<u8>, name: &str, args: Option<&[u8]>, id: u64, oob: bool) {
    encode(out, name, args, Some(id), oob);
}

/// Appends one in-band command without an id: `{"execute":NAME[,"arguments":ARGS]}`. Its reply carries no id
/// either; QEMU answers in-band commands in order (see [`Config::in_band_ids`](crate::Config::in_band_ids)).
pub fn encode_command_without_id(out: &mut Vec<u8>, name: &str, args: Option<&[u8]>) {
    encode(out, name, args, None, false);
}

fn encode(out: &mut Vec<u8>, name: &str, args: Option<&[u8]>, id: Option<u64>, oob: bool) {
    const ARGUMENTS: &[u8] = b",\"arguments\":";
    // One reservation for the whole command (a name that needs escapes may still grow it).
    out.reserve(EXEC_OOB.len() + name.len() + 2 + args.map_or(0, |a| ARGUMENTS.len() + a.len()) + ID_TAIL_MAX);
    // Two appends of known length (each a few moves), not one of a length known only here (a `memcpy` call).
    if oob {
        out.extend_from_slice(EXEC_OOB);
    } else {
        out.extend_from_slice(EXECUTE);
    }
    write_string(out, name);
    if let Some(args) = args {
        out.extend_from_slice(ARGUMENTS);
        out.extend_from_slice(args);
    }
    match id {
        Some(id) => write_id_tail(out, id),
        None => out.push(b'}'),
    }
}

const EXECUTE: &[u8] = b"{\"execute\":";
const EXEC_OOB: &[u8] = b"{\"exec-oob\":";
const ID: &[u8] = b",\"id\":";
/// The longest `,"id":N}`: 20 digits.
const ID_TAIL_MAX: usize = ID.len() + 20 + 1;

/// Writes `s` as a JSON string; command names are plain ASCII, so escaping is the rare path.
fn write_string(out: &mut Vec<u8>, s: &str) {
    // Without `&&`: a test per byte and no branch, which the compiler unrolls.
    let escape = s.bytes().fold(false, |escape, b| escape | !PLAIN[usize::from(b)]);
    if escape {
        // Serializing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// The bytes a JSON string holds as they are: printable ASCII but `"` and `\`.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

/// Writes `,"id":N}`, the end of a command with an id: the whole buffer in one append of known length (a few
/// moves; `encode` reserved room for it), then cut to the digits N has.
fn write_id_tail(out: &mut Vec<u8>, n: u64) {
    let digits = n.checked_ilog10().map_or(1, |log| log as usize + 1);
    let mut tail = [0u8; ID_TAIL_MAX];
    tail[..ID.len()].copy_from_slice(ID);
    let end = ID.len() + digits;
    tail[end] = b'}';
    let mut rest = n;
    for d in tail[ID.len()..end].iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let len = out.len() + end + 1;
    out.extend_from_slice(&tail);
    out.truncate(len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(name: &str, args: Option<&[u8]>, id: u64, oob: bool) -> String {
        let mut out = Vec::new();
        encode_command(&mut out, name, args, id, oob);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn compact_forms() {
        assert_eq!(cmd("query-status", None, 3, false), r#"{"execute":"query-status","id":3}"#);
        assert_eq!(
            cmd("query-yank", None, 18446744073709551615, true),
            r#"{"exec-oob":"query-yank","id":18446744073709551615}"#
        );
        let args = encode_arguments(&serde_json::json!({"node-name": "n0"})).unwrap();
        assert_eq!(cmd("x", args.as_deref(), 0, false), r#"{"execute":"x","arguments":{"node-name":"n0"},"id":0}"#);
        assert_eq!(cmd("a\"b", None, 1, false), r#"{"execute":"a\"b","id":1}"#);
        let mut out = Vec::new();
        encode_command_without_id(&mut out, "x", args.as_deref());
        assert_eq!(out, br#"{"execute":"x","arguments":{"node-name":"n0"}}"#);
    }

    proptest::proptest! {
        /// Any name and id: the command is JSON that reads back as them (escaped names included), with no
        /// space in it when the name needs none.
        #[test]
        fn any_name_and_id_read_back(name in ".{0,12}|[\\x00-\\x7f]{0,12}", id: u64, oob: bool) {
            let encoded = cmd(&name, None, id, oob);
            let value: serde_json::Value = serde_json::from_str(&encoded).unwrap();
            let key = if oob { "exec-oob" } else { "execute" };
            proptest::prop_assert_eq!(encoded.len(), serde_json::to_string(&value).unwrap().len());
            proptest::prop_assert_eq!(value, serde_json::json!({ key: name, "id": id }));
        }
    }

    #[test]
    fn empty_arguments_are_omitted_and_non_objects_rejected() {
        assert_eq!(encode_arguments(&()).unwrap(), None);
        assert_eq!(encode_arguments(&None::<u8>).unwrap(), None);
        assert_eq!(encode_arguments(&serde_json::json!({})).unwrap(), None);
        assert!(encode_arguments(&[1, 2]).is_err());
        assert!(encode_arguments(&"x").is_err());
    }
}
