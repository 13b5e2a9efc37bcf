//! Classification: what one framed server message is.
//!
//! One serde pass reads the message into a struct of optional borrowed fields ([`RawValue`] for every payload),
//! never an untagged enum, so one unexpected member never hides the rest, and routing a reply costs no
//! `Value` tree. Payloads come out as [`RawJson`] slices of the message's own buffer.
//!
//! Shapes, checked in this order (the member that decides is in brackets):
//! greeting (`QMP`), event (`event`), success reply (`return`), error reply (`error`). Anything else, including
//! text that is not JSON at all (QEMU can write `"id": inf`), is [`Message::NotUnderstood`].

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::error::QmpError;
use crate::raw::RawJson;

/// One message from the server, classified.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Message {
    /// The QMP greeting (`{"QMP": {...}}`).
    Greeting(Greeting),
    /// A success reply: `{"return": value, "id": ...}`.
    Return {
        /// The echoed id, exactly as sent back; `None` when the member was absent (`null` is `Some`).
        id: Option<RawJson>,
        /// The `return` payload.
        value: RawJson,
    },
    /// An error reply: `{"error": {"class": ..., "desc": ...}, "id": ...}`.
    Error {
        /// The echoed id; errors raised before QEMU read the id have none.
        id: Option<RawJson>,
        /// The error.
        error: QmpError,
    },
    /// An asynchronous event.
    Event(ServerEvent),
    /// Valid JSON of an unknown shape, or invalid JSON.
    NotUnderstood {
        /// The whole message.
        bytes: Bytes,
        /// Why it was not understood.
        reason: String,
    },
}

/// The server's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// QEMU's version.
    pub version: Version,
    /// Capabilities the server offers (today only `oob` exists; unknown ones are kept, not rejected).
    pub capabilities: Vec<String>,
}

/// A QEMU version as the greeting gives it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Micro version.
    pub micro: u64,
    /// Distribution package string (for example `Debian 1:10.0.2+ds-2`), possibly empty.
    pub package: String,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)?;
        if !self.package.is_empty() {
            write!(f, " ({})", self.package.trim())?;
        }
        Ok(())
    }
}

/// An asynchronous event from the server.
#[derive(Debug, Clone)]
pub struct ServerEvent {
    /// Event name, for example `JOB_STATUS_CHANGE`.
    pub name: String,
    /// The `data` member, when present (`Some` even when it is `null`).
    pub data: Option<RawJson>,
    /// When QEMU emitted it; `None` if the member was missing or malformed.
    pub timestamp: Option<Timestamp>,
}

/// An event timestamp, to the microsecond, as QEMU wrote it. Both fields are -1 when the host clock failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

impl Timestamp {
    /// The time as a [`std::time::SystemTime`], or `None` for QEMU's "no time" marker (-1/-1) or out-of-range values.
    pub fn to_system_time(self) -> Option<std::time::SystemTime> {
        let secs = u64::try_from(self.seconds).ok()?;
        let micros = u32::try_from(self.microseconds).ok().filter(|m| *m < 1_000_000)?;
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, micros * 1000))
    }
}

/// The members a server message may have, borrowed from its bytes.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "QMP", borrow, default)]
    qmp: Option<&'a RawValue>,
    #[serde(rename = "return", borrow, default, deserialize_with = "present")]
    ret: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

/// Keeps a member that is present as `Some`, even when its value is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct GreetingBody {
    version: VersionBody,
    capabilities: Vec<String>,
}

#[derive(Deserialize)]
struct VersionBody {
    qemu: VersionTriple,
    #[serde(default)]
    package: String,
}

#[derive(Deserialize)]
struct VersionTriple {
    major: u64,
    minor: u64,
    micro: u64,
}

/// Classifies one framed message. Never panics, whatever the bytes.
pub fn classify(bytes: Bytes) -> Message {
    let env: Envelope<'_> = match serde_json::from_slice(&bytes) {
        Ok(env) => env,
        Err(e) => {
            let reason = if bytes.first() == Some(&b'{') {
                format!("invalid message: {e}")
            } else {
                format!("not a JSON object: {e}")
            };
            return Message::NotUnderstood { bytes, reason };
        }
    };
    let slice = |raw: &RawValue| RawJson::from_valid(bytes.slice_ref(raw.get().as_bytes()));
    if let Some(body) = env.qmp {
        return match serde_json::from_str::<GreetingBody>(body.get()) {
            Ok(g) => Message::Greeting(Greeting {
                version: Version {
                    major: g.version.qemu.major,
                    minor: g.version.qemu.minor,
                    micro: g.version.qemu.micro,
                    package: g.version.package,
                },
                capabilities: g.capabilities,
            }),
            Err(e) => Message::NotUnderstood { reason: format!("greeting of the wrong shape: {e}"), bytes },
        };
    }
    if let Some(name) = env.event {
        let timestamp = env.timestamp.and_then(|t| serde_json::from_str::<Timestamp>(t.get()).ok());
        return Message::Event(ServerEvent { name: name.into_owned(), data: env.data.map(slice), timestamp });
    }
    let id = env.id.map(slice);
    if let Some(value) = env.ret {
        return Message::Return { id, value: slice(value) };
    }
    if let Some(body) = env.error {
        return Message::Error { id, error: QmpError::from_body(slice(body)) };
    }
    Message::NotUnderstood { bytes, reason: "object with none of QMP, event, return, error".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Message {
        classify(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn greeting() {
        let m = c(
            r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian"}, "capabilities": ["oob"]}}"#,
        );
        let Message::Greeting(g) = m else { panic!("{m:?}") };
        assert_eq!(g.version.to_string(), "10.0.2 (Debian)");
        assert_eq!(g.capabilities, vec!["oob".to_string()]);
    }

    #[test]
    fn replies_in_any_key_order_and_null_id() {
        let Message::Return { id, value } = c(r#"{"id": 7, "return": {"a": [1]}}"#) else { panic!() };
        assert_eq!(id.unwrap().raw_str(), "7");
        assert_eq!(value.raw_str(), r#"{"a": [1]}"#);
        let Message::Return { id, .. } = c(r#"{"return": {}, "id": null}"#) else { panic!() };
        assert_eq!(id.unwrap().raw_str(), "null");
        let Message::Return { id, .. } = c(r#"{"return": {}}"#) else { panic!() };
        assert!(id.is_none());
        let Message::Return { value, .. } = c(r#"{"return": null}"#) else { panic!() };
        assert_eq!(value.raw_str(), "null");
    }

    #[test]
    fn error_reply() {
        let m = c(r#"{"id": 1, "error": {"class": "CommandNotFound", "desc": "The command x has not been found"}}"#);
        let Message::Error { id, error } = m else { panic!() };
        assert_eq!(id.unwrap().raw_str(), "1");
        assert_eq!(error.class, "CommandNotFound");
        assert_eq!(error.desc, "The command x has not been found");
    }

    #[test]
    fn event_with_microseconds() {
        let m = c(r#"{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "STOP"}"#);
        let Message::Event(e) = m else { panic!() };
        assert_eq!(e.name, "STOP");
        assert!(e.data.is_none());
        assert_eq!(e.timestamp, Some(Timestamp { seconds: 1700000000, microseconds: 123456 }));
    }

    #[test]
    fn not_understood() {
        for s in [r#"{"return": {}, "id": inf}"#, "garbage", "[1]", r#"{"x": 1}"#, r#"{"QMP": 1}"#] {
            assert!(matches!(c(s), Message::NotUnderstood { .. }), "{s}");
        }
    }
}
