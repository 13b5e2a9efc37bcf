//! [`Arguments`]: a command's `arguments` object handed over as JSON text, parsed only by whoever wants it.
//!
//! The server checks a command as QEMU does, but builds nothing from it: the handler decides what the
//! arguments become ([`Arguments::deserialize`] into its own type, [`Arguments::map`] for a
//! `serde_json::Map`), or passes them on as they are ([`Arguments::raw`], what the proxy does).
//!
//! The text it holds is documented on the type.

use std::ops::Index;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::raw::RawJson;

/// A command's `arguments`: one JSON object, as text.
///
/// The text is the tokens the client wrote, byte for byte, without the whitespace between them (so it is one
/// line, and the same however the client's bytes arrived), in all but a few cases where what QEMU reads is not
/// the text in standard JSON. Then the text is QEMU's reading of it, re-encoded as compact JSON (the rare, slow
/// path), its members sorted by key or in QEMU's dictionary order (as serde_json's `preserve_order` feature is
/// off or on in the build), not necessarily the client's order:
///
/// | the client wrote | QEMU reads | the handler sees |
/// |---|---|---|
/// | `'single quotes'` | a string | `"single quotes"` |
/// | `"it\'s"` (an escape JSON lacks) | `it's` | `"it's"` |
/// | the bytes `C0 80` in a string (QEMU's U+0000) | U+0000 | `"\u0000"` |
/// | `-0` | the integer 0 | `0` |
/// | a number beyond `f64` (`1e400`) | infinity | `null` |
///
/// Everything else QEMU accepts is standard JSON already and reaches the handler as written (member order,
/// escapes and number forms included: `1.5e3` stays `1.5e3`).
///
/// Read it as you need it: into your own type ([`deserialize`](Self::deserialize)), as a `serde_json` map
/// built on first use and kept ([`map`](Self::map), [`get`](Self::get), indexing), or as text
/// ([`raw_str`](Self::raw_str), [`raw`](Self::raw)). A command without `arguments` has the empty object `{}`.
///
/// ```
/// use qmp_proto::server::{Event, Server, ServerConfig};
///
/// let mut server = Server::new(ServerConfig::qmp());
/// server.handle_input(br#"{"execute":"qmp_capabilities"}"#);
/// server.handle_input(br#"{"execute":"blockdev-del","arguments":{"node-name":'disk0'}}"#);
/// let cmd = std::iter::from_fn(|| server.poll_event())
///     .find_map(|e| if let Event::Command(cmd) = e { Some(cmd) } else { None })
///     .unwrap();
/// // Single quotes are QEMU's extension: the handler gets them as standard JSON.
/// assert_eq!(cmd.arguments.raw_str(), r#"{"node-name":"disk0"}"#);
/// assert_eq!(cmd.arguments["node-name"], "disk0");
/// #[derive(serde::Deserialize)]
/// struct BlockdevDel {
///     #[serde(rename = "node-name")]
///     node_name: String,
/// }
/// assert_eq!(cmd.arguments.deserialize::<BlockdevDel>()?.node_name, "disk0");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone)]
pub struct Arguments {
    raw: RawJson,
    empty: bool,
    /// Boxed: most commands never ask for it, and every command is moved a few times.
    map: OnceLock<Box<Map<String, Value>>>,
}

/// The `arguments` of a command without any.
const EMPTY: &[u8] = b"{}";

impl Arguments {
    /// Arguments from the JSON text of an object the server checked (or normalised).
    pub(crate) fn from_checked(text: Bytes, empty: bool) -> Self {
        Arguments { raw: RawJson::from_valid(text), empty, map: OnceLock::new() }
    }

    /// Arguments from the client's text of an object, as it is (standard JSON without whitespace).
    pub(crate) fn from_verbatim(text: Bytes) -> Self {
        // `{}`: no member.
        let empty = text.len() == 2;
        Arguments::from_checked(text, empty)
    }

    /// The arguments of a command that has none: `{}`.
    pub fn none() -> Self {
        Arguments::from_checked(Bytes::from_static(EMPTY), true)
    }

    /// Arguments from JSON text, checked to be one object (for tests and for servers other than ours).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let raw = RawJson::from_json(text)?;
        // Counting members needs a parse; a map is what that parse gives, and it is kept.
        let map: Map<String, Value> = raw.deserialize()?;
        let arguments = Arguments { raw, empty: map.is_empty(), map: OnceLock::new() };
        let _ = arguments.map.set(Box::new(map));
        Ok(arguments)
    }

    /// True when the object has no member (or there was no `arguments` at all).
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// The JSON text of the object.
    pub fn raw_str(&self) -> &str {
        self.raw.raw_str()
    }

    /// The JSON text as a [`RawJson`] (cheap to clone: it shares the bytes), to pass the arguments on as they
    /// are.
    pub fn raw(&self) -> &RawJson {
        &self.raw
    }

    /// Parses the arguments into `T`, as QEMU's visitor would into the command's argument struct.
    ///
    /// serde_json refuses values nested more than 128 deep (QEMU allows 1024): [`map`](Self::map) reads those.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.raw.deserialize()
    }

    /// The arguments as a `serde_json` map, built on the first call and kept.
    pub fn map(&self) -> &Map<String, Value> {
        self.map.get_or_init(|| Box::new(build_map(&self.raw, self.empty)))
    }

    /// The arguments as a `serde_json` map, taken (built if no call to [`map`](Self::map) did yet).
    pub fn into_map(self) -> Map<String, Value> {
        match self.map.into_inner() {
            Some(map) => *map,
            None => build_map(&self.raw, self.empty),
        }
    }

    /// The member `name`, if present (from [`map`](Self::map)).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map().get(name)
    }
}

/// The map of a checked object's text.
fn build_map(raw: &RawJson, empty: bool) -> Map<String, Value> {
    if empty {
        return Map::new();
    }
    match raw.deserialize() {
        Ok(map) => map,
        // Only nesting beyond serde_json's limit gets here (the text is a JSON object the server checked):
        // QEMU's parser reads it, without that limit.
        Err(_) => match super::parse_text(raw.raw_str()) {
            Ok(super::qobject::QObject::Dict(dict)) => dict.into_json_map(),
            _ => Map::new(),
        },
    }
}

impl Default for Arguments {
    fn default() -> Self {
        Arguments::none()
    }
}

/// `arguments["name"]`: the member's value, or `null` when there is no such member (as indexing a
/// `serde_json::Value` gives).
impl Index<&str> for Arguments {
    type Output = Value;

    fn index(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(name).unwrap_or(&NULL)
    }
}

/// Equal when the texts are.
impl PartialEq for Arguments {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl std::fmt::Debug for Arguments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Arguments({:?})", self.raw)
    }
}

/// The JSON text.
impl std::fmt::Display for Arguments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.raw_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_arguments_read_as_an_empty_object() {
        let none = Arguments::none();
        assert!(none.is_empty());
        assert_eq!(none.raw_str(), "{}");
        assert!(none.map().is_empty());
        assert_eq!(none["x"], Value::Null);
        assert_eq!(none.deserialize::<Map<String, Value>>().unwrap(), Map::new());
    }

    #[test]
    fn text_is_read_as_a_map_once() {
        let args = Arguments::from_json(r#"{"b": [1, {"c": null}], "a": "x"}"#).unwrap();
        assert!(!args.is_empty());
        assert_eq!(args["a"], "x");
        assert_eq!(args.get("b").unwrap()[1]["c"], Value::Null);
        assert!(std::ptr::eq(args.map(), args.map()), "built once");
        assert_eq!(args.clone().into_map().len(), 2);
        assert!(Arguments::from_json("[1]").is_err(), "not an object");
        assert!(Arguments::from_json(r#"{"a":1}x"#).is_err());
    }

    #[test]
    fn nesting_beyond_serde_json_limit_still_reads_as_a_map() {
        let deep = format!(r#"{{"a": {}{}}}"#, "[".repeat(500), "]".repeat(500));
        let args = Arguments::from_checked(Bytes::from(deep), false);
        assert!(args.deserialize::<Value>().is_err(), "serde_json stops at 128");
        let mut depth = 0;
        let mut value = &args["a"];
        while let Some(inner) = value.as_array().and_then(|a| a.first()) {
            depth += 1;
            value = inner;
        }
        assert_eq!(depth, 499);
    }
}
