//! [`RawJson`]: a JSON payload kept as the bytes it arrived in, until the user asks for a type.
//!
//! Routing a reply or an event never builds a `serde_json::Value`. The payload (`return`, `data`, an error's
//! body) stays a slice of the received message, shared by reference count, and is parsed once, into the type
//! the user chooses, when they call [`RawJson::deserialize`].

use bytes::Bytes;
use serde::de::DeserializeOwned;

/// A JSON value received from the server, kept unparsed: the bytes of one JSON value.
///
/// Every `RawJson` holds valid JSON, with one exception that is checked later: the payload of a reply the
/// [`Client`](crate::Client) routed (`return`, when it is an object or array) is validated when it is parsed,
/// not when it arrives (see [`classify_framed`](crate::message::classify_framed)); until then it is known only
/// to be balanced (strings closed, brackets matched). Parsing it ([`deserialize`](Self::deserialize),
/// [`as_value`](Self::as_value)) returns serde_json's syntax error if it is not valid JSON.
///
/// Cheap to clone (reference-counted). Parse it with [`deserialize`](Self::deserialize) or
/// [`as_value`](Self::as_value), or read the text with [`raw_str`](Self::raw_str).
///
/// ```
/// use qmp_proto::RawJson;
/// let raw = RawJson::from_json(r#"{"running": true, "status": "running"}"#).unwrap();
/// #[derive(serde::Deserialize)]
/// struct Status { running: bool }
/// assert!(raw.deserialize::<Status>().unwrap().running);
/// assert_eq!(raw.as_value().unwrap()["status"], "running");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawJson(Bytes);

impl RawJson {
    /// Wraps the bytes of one JSON value as the classifier found it (valid, or balanced and checked when parsed).
    pub(crate) fn from_valid(bytes: Bytes) -> Self {
        RawJson(bytes)
    }

    /// Checks that `text` is one valid JSON value and wraps it. Useful in tests and for building replies.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let raw: &serde_json::value::RawValue = serde_json::from_str(text)?;
        Ok(RawJson(Bytes::copy_from_slice(raw.get().as_bytes())))
    }

    /// The JSON text, exactly as the server sent it (escapes and spacing included); empty if the bytes are not
    /// UTF-8, which only a reply payload not yet validated can be (see the type's docs; QEMU writes ASCII).
    pub fn raw_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The bytes of the JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying shared buffer.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// Parses the payload into `T`. This is also where a reply payload is validated: text that is not valid JSON
    /// fails here with serde_json's syntax error.
    ///
    /// Commands without a return value answer `{}`: deserialize those into [`serde::de::IgnoredAny`] or a
    /// struct with no fields, not `()` (which expects `null`).
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }

    /// Parses the payload into a `serde_json::Value` tree.
    pub fn as_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.deserialize()
    }
}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 256;
        let text = String::from_utf8_lossy(&self.0);
        if text.len() <= SHOWN {
            write!(f, "RawJson({text})")
        } else {
            let mut cut = SHOWN;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            write!(f, "RawJson({}... {} bytes)", &text[..cut], text.len())
        }
    }
}

impl std::fmt::Display for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}
