//! Typed QMP and guest-agent commands and events for every qmp-rs adapter, from the existing
//! [`qapi-qmp`](https://docs.rs/qapi-qmp) and [`qapi-qga`](https://docs.rs/qapi-qga) crates.
//!
//! Those crates generate a Rust type for every command and event in QEMU's schema; this crate does not generate
//! a second copy. It is the one adapter-neutral place that turns a [`qapi_spec::Command`] into what an adapter
//! sends (a name and JSON arguments), the adapter's raw reply ([`RawJson`]) into the command's typed result, and
//! a [`ServerEvent`] into a typed event. The adapters' `qapi` features (`qmp-tokio`, `qmp-smol`) are built on it;
//! the functions here are what they call, and work just as well by hand with any adapter:
//!
//! ```
//! use qmp_proto::RawJson;
//! use qmp_qapi::qapi_qmp::query_version;
//!
//! let cmd = query_version {};
//! assert_eq!(qmp_qapi::name(&cmd), "query-version");
//! assert_eq!(qmp_qapi::arguments(&cmd).unwrap(), None); // no arguments: the member is omitted
//! // ... the adapter runs the command and gets back its `return` value, raw:
//! let ret = RawJson::from_json(
//!     r#"{"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian 1:10.0.2+ds-2"}"#,
//! ).unwrap();
//! let version = qmp_qapi::decode::<query_version>(&ret).unwrap();
//! assert_eq!(version.qemu.major, 10);
//! ```
//!
//! # Versions
//! `qapi-qmp` 0.15 carries QEMU 9.1's schema and `qapi-qga` 0.13 its guest-agent schema. Replies of other QEMU
//! versions deserialize as long as they fit that schema: a newer QEMU's extra members are ignored, but a member the
//! schema requires and the server does not send, or an enum value the schema no longer (or not yet) has, fails
//! with a [`serde_json::Error`] (the adapters report a decode error; the untyped `execute` of the same command
//! still works). Checked against real servers by `qmp-tokio`'s tests:
//!
//! | server | deserialized | failed |
//! |---|---|---|
//! | qemu-system-x86_64 7.2 (`-M none`) | `query-version`, `query-status`, `query-commands`, `query-qmp-schema`, `query-kvm`, `query-yank` (OOB), `query-fdsets`, `query-block-jobs`, `query-chardev`, `query-name`, `query-iothreads`, `query-current-machine`, `query-migrate-parameters`, and 40 more argument-less queries; `STOP`/`RESUME` events | `query-machines` (missing `acpi`, added in 8.0), `query-migrate-capabilities` (unknown variant `compress`, removed in 9.1), `query-sev` (missing `sev-type`, added in 9.1) |
//! | qemu-storage-daemon 10.0 | `query-version`, `query-qmp-schema`, `query-commands`, `query-named-block-nodes`, `query-block-jobs`, `query-block-exports`, every other argument-less query it has; `JOB_STATUS_CHANGE` events | none found |
//! | qemu-storage-daemon 7.2 | every argument-less query it has | none found |
//! | qemu-ga 7.2 | `guest-ping`, `guest-info`, `guest-get-time`, `guest-sync` | none found |
//!
//! One more gap: an event whose timestamp is QEMU's "no clock" marker (-1, -1) does not fit `qapi-spec`'s
//! unsigned `Timestamp`, so [`qmp_event`] fails for it; the raw event is still there.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "qga")]
pub use qapi_qga;
#[cfg(feature = "qmp")]
pub use qapi_qmp;
pub use qapi_spec::{self, Command, Empty, Event};
use qmp_proto::{RawJson, ServerEvent};

/// The command's wire name (`C::NAME`), for example `"query-version"`.
pub fn name<C: Command>(_command: &C) -> &'static str {
    C::NAME
}

/// Whether QEMU allows the command out of band (`C::ALLOW_OOB`).
pub fn allows_oob<C: Command>(_command: &C) -> bool {
    C::ALLOW_OOB
}

/// The command's arguments as a JSON object, or `None` when it has none (an empty object is omitted, as the
/// core omits it). For adapters whose `execute` takes `impl Serialize`, passing the command itself is the same.
pub fn arguments<C: Command>(command: &C) -> Result<Option<RawJson>, serde_json::Error> {
    let text = serde_json::to_string(command)?;
    if text == "{}" || text == "null" {
        return Ok(None);
    }
    RawJson::from_json(&text).map(Some)
}

/// Deserializes a command's raw `return` value into its typed result, `C::Ok`.
pub fn decode<C: Command>(ret: &RawJson) -> Result<C::Ok, serde_json::Error> {
    ret.deserialize()
}

/// The event's `data` as the typed event `E` (for example `qapi_qmp::JOB_STATUS_CHANGE`), or `None` when the
/// event is another one. An event without `data` reads as `{}`.
pub fn event<E: Event>(event: &ServerEvent) -> Option<Result<E, serde_json::Error>> {
    if event.name != E::NAME {
        return None;
    }
    Some(match &event.data {
        Some(data) => data.deserialize(),
        None => serde_json::from_str("{}"),
    })
}

/// The event as [`qapi_qmp::Event`], the enum of every QMP event (name, data and timestamp).
///
/// Fails for an event the schema does not know (a QEMU newer than the schema), data that does not fit it, a
/// missing timestamp, or QEMU's "no clock" timestamp (-1, -1), which `qapi-spec` cannot represent.
#[cfg(feature = "qmp")]
pub fn qmp_event(event: &ServerEvent) -> Result<qapi_qmp::Event, serde_json::Error> {
    let mut json = String::with_capacity(64 + event.data.as_ref().map_or(0, |d| d.as_bytes().len()));
    json.push_str("{\"event\":");
    json.push_str(&serde_json::to_string(&event.name)?);
    if let Some(data) = &event.data {
        json.push_str(",\"data\":");
        json.push_str(data.raw_str());
    }
    if let Some(ts) = event.timestamp {
        json.push_str(&format!(",\"timestamp\":{{\"seconds\":{},\"microseconds\":{}}}", ts.seconds, ts.microseconds));
    }
    json.push('}');
    serde_json::from_str(&json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmp_proto::Timestamp;

    fn raw(s: &str) -> RawJson {
        RawJson::from_json(s).unwrap()
    }

    fn ev(name: &str, data: Option<&str>, ts: Option<(i64, i64)>) -> ServerEvent {
        ServerEvent {
            name: name.into(),
            data: data.map(raw),
            timestamp: ts.map(|(seconds, microseconds)| Timestamp { seconds, microseconds }),
        }
    }

    #[test]
    fn arguments_of_a_command_with_members() {
        let cmd = qapi_qmp::getfd { fdname: "f0".into() };
        assert_eq!(name(&cmd), "getfd");
        assert!(!allows_oob(&cmd));
        assert_eq!(arguments(&cmd).unwrap().unwrap().raw_str(), r#"{"fdname":"f0"}"#);
        assert!(allows_oob(&qapi_qmp::query_yank {}));
    }

    #[test]
    fn decode_replies_recorded_from_qemu() {
        // qemu-system-x86_64 7.2 (shared corpus, qsys-events-runstate)
        let status =
            decode::<qapi_qmp::query_status>(&raw(r#"{"status": "prelaunch", "singlestep": false, "running": false}"#))
                .unwrap();
        assert!(!status.running);
        let empty = decode::<qapi_qmp::stop>(&raw("{}"));
        assert!(empty.is_ok());
        assert!(decode::<qapi_qmp::query_status>(&raw(r#"{"status": 1}"#)).is_err());
    }

    #[test]
    fn typed_events() {
        let stop = ev("STOP", None, Some((1_700_000_000, 5)));
        let typed = qmp_event(&stop).unwrap();
        assert!(matches!(typed, qapi_qmp::Event::STOP { .. }), "{typed:?}");
        assert!(event::<qapi_qmp::STOP>(&stop).unwrap().is_ok());
        assert!(event::<qapi_qmp::RESUME>(&stop).is_none());

        let job =
            ev("JOB_STATUS_CHANGE", Some(r#"{"status": "created", "id": "job0"}"#), Some((1_700_000_000, 123_456)));
        let Some(Ok(data)) = event::<qapi_qmp::JOB_STATUS_CHANGE>(&job) else { panic!() };
        assert_eq!(data.id, "job0");
        assert!(matches!(qmp_event(&job).unwrap(), qapi_qmp::Event::JOB_STATUS_CHANGE { .. }));

        assert!(qmp_event(&ev("STOP", None, Some((-1, -1)))).is_err(), "no-clock marker");
        assert!(qmp_event(&ev("NO_SUCH_EVENT", None, Some((1, 1)))).is_err());
    }
}
