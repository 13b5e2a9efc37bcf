//! Events as QEMU writes them: the object `qmp_event_build_dict()` builds (event, timestamp, then the data the
//! generated code adds), and [`EncodedEvent`], one event encoded once for many sessions.

use super::qobject::{QDict, QObject};
use super::{parse_text, ServerUsageError};
use crate::message::Timestamp;

/// The event object, members inserted in QEMU's order (its hash table decides the order they are written in).
pub(super) fn event_object(name: &str, data: Option<QObject>, timestamp: Timestamp) -> QObject {
    let mut ts = QDict::new();
    ts.put("seconds", QObject::Int(timestamp.seconds));
    ts.put("microseconds", QObject::Int(timestamp.microseconds));
    let mut dict = QDict::new();
    dict.put("event", QObject::str(name));
    dict.put("timestamp", QObject::Dict(ts));
    if let Some(data) = data {
        dict.put("data", data);
    }
    QObject::Dict(dict)
}

/// An event encoded once, byte for byte as [`Server::event_json`](super::Server::event_json) writes it, to be
/// sent to any number of sessions with [`Server::event_encoded`](super::Server::event_encoded): a fan-out (a
/// proxy passing QEMU's events to its clients) pays for the encoding once, not once per client.
///
/// ```
/// use qmp_proto::server::{EncodedEvent, Server, ServerConfig};
/// use qmp_proto::Timestamp;
///
/// let event = EncodedEvent::new("STOP", None, Timestamp { seconds: 1, microseconds: 2 }).unwrap();
/// let mut server = Server::new(ServerConfig::qmp());
/// server.handle_input(br#"{"execute":"qmp_capabilities"}"#);
/// server.event_encoded(&event);
/// let mut out = Vec::new();
/// server.poll_transmit(&mut out);
/// let out = String::from_utf8(out).unwrap();
/// assert!(out.ends_with("{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// The object, without a line ending (each session adds its mode's).
    bytes: Vec<u8>,
}

impl EncodedEvent {
    /// The event `name` with `data` (JSON text, members written in the order given) and `timestamp`.
    pub fn new(name: &str, data: Option<&str>, timestamp: Timestamp) -> Result<Self, ServerUsageError> {
        let data = data.map(parse_text).transpose()?;
        let mut bytes = Vec::new();
        event_object(name, data, timestamp).write(&mut bytes);
        Ok(EncodedEvent { bytes })
    }

    /// The encoded object (no line ending).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{EventOutcome, Server, ServerConfig};

    fn negotiated() -> Server {
        let mut server = Server::new(ServerConfig::qmp());
        server.handle_input(br#"{"execute":"qmp_capabilities"}"#);
        let mut greeting_and_reply = Vec::new();
        server.poll_transmit(&mut greeting_and_reply);
        server
    }

    #[test]
    fn encoded_once_written_as_event_json_writes_it() {
        let timestamp = Timestamp { seconds: 1_700_000_000, microseconds: 42 };
        for data in
            [None, Some(r#"{"device": "j0", "len": 10, "offset": 0, "speed": 0, "type": "mirror"}"#), Some("null")]
        {
            let (mut by_json, mut by_encoded) = (negotiated(), negotiated());
            assert_eq!(by_json.event_json("BLOCK_JOB_READY", data, timestamp), Ok(EventOutcome::Sent));
            let encoded = EncodedEvent::new("BLOCK_JOB_READY", data, timestamp).expect("valid");
            assert_eq!(by_encoded.event_encoded(&encoded), EventOutcome::Sent);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            by_json.poll_transmit(&mut a);
            by_encoded.poll_transmit(&mut b);
            assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b), "{data:?}");
        }
        assert!(EncodedEvent::new("X", Some("{"), timestamp).is_err());
        let encoded = EncodedEvent::new("STOP", None, timestamp).expect("valid");
        assert_eq!(Server::new(ServerConfig::qmp()).event_encoded(&encoded), EventOutcome::NotNegotiated);
    }
}
