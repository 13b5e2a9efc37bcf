//! Typed QMP and guest-agent commands, results and events that hold for every QEMU from 7.2 to 10.0,
//! generated from QEMU's own QAPI schema of several releases, for every qmp-rs adapter.
//!
//! ```
//! use qmp_proto::RawJson;
//! use qmp_qapi::qmp::commands::QueryVersion;
//!
//! let cmd = QueryVersion::default();
//! assert_eq!(qmp_qapi::name(&cmd), "query-version");
//! assert_eq!(qmp_qapi::arguments(&cmd).unwrap(), None); // no arguments: the member is omitted
//! // ... the adapter runs the command and gets back its `return` value, raw:
//! let ret = RawJson::from_json(
//!     r#"{"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian 1:10.0.2+ds-2"}"#,
//! ).unwrap();
//! let version = qmp_qapi::decode::<QueryVersion>(&ret).unwrap();
//! assert_eq!(version.qemu.major, 10);
//! ```
//!
//! The adapters run them directly: `execute_typed` on `qmp_async::Qmp` / `GuestAgent` (feature `qapi`, so on
//! qmp-tokio and qmp-smol too) and on `qmp_blocking::Client` / `GuestAgent` (feature `qapi`).
//!
//! # One set of types for several releases
//! The generator (`qmp-qapi-gen`, a workspace tool) reads the schema of each release and merges them:
//! - A member is required only if every release that has its struct requires it; a member that any release
//!   lacks or makes optional is an `Option`.
//! - Every enum has an `Other(String)` variant: a value this schema does not know decodes, and encodes back as
//!   sent.
//! - Every struct has `extra_members`: the members it does not know, so decoding then encoding returns what the
//!   server sent (compared as JSON values).
//! - Unions are a `base` (the common members) and a `branch` chosen by the discriminator; an unknown
//!   discriminator value keeps the remaining members in `Other`. Alternates pick their branch by JSON type and
//!   keep a value of any other JSON type in `Other`.
//! - Optional members that can be `null` (`any`, alternates with a `null` branch) keep `null` apart from absent.
//! - `number` is a [`serde_json::Number`], so an integer stays an integer.
//! - Events: [`qmp::Event`] has a variant per known event and `Other` for the rest; the timestamp stays with the
//!   adapter's [`ServerEvent`] (a signed pair: QEMU's "no clock" `(-1, -1)` and a missing one both decode).
//! - Each item's docs say in which input releases it exists ("since 10.0 (not in 7.2)", "until 7.2"), its
//!   features (`deprecated`, `unstable`) and its build condition (`CONFIG_*`, `TARGET_*`: the types of every
//!   target are included).
//!
//! Names: types as in the schema (`BlockdevOptions`), commands in [`qmp::commands`] in UpperCamelCase
//! (`query-named-block-nodes` -> `QueryNamedBlockNodes`), event data in [`qmp::events`] (`BLOCK_JOB_COMPLETED`
//! -> `BlockJobCompleted`), members in snake_case (`node-name` -> `node_name`, `type` -> `type_`).
//!
//! # What the server has: [`ServerSchema`]
//! A type that exists in the merged schema may be missing from the server at hand. [`ServerSchema`] reads the
//! server's `query-qmp-schema` once and answers "does it have command X, argument member Y, enum value Z".
//!
//! # Checked against real servers
//! `tests/tests/qapi/drift.rs` runs every read-only query (`query-*`, `x-query-*`; qemu-ga's `guest-info`,
//! `guest-ping`, `guest-fsfreeze-status`, `guest-get-*`, `guest-network-get-*`) that takes no required argument,
//! decodes the reply and encodes it again, comparing the JSON values; it also does so for every event the servers
//! emitted, and fails if anything landed in `extra_members` or `Other`:
//!
//! | server | queries tried | answered | decoded | re-encoded equal | events seen/decoded/equal |
//! |---|---|---|---|---|---|
//! | qemu-system-x86_64 7.2 `-M none` | 68 | 58 | 58 | 58 | 2/2/2 |
//! | qemu-system-x86_64 7.2 `-M q35 -S`, a virtio-blk drive, an e1000 NIC, qcow2 and LUKS nodes | 68 | 60 | 60 | 60 | 12/12/12 |
//! | qemu-storage-daemon 10.0 with raw, qcow2, LUKS and null nodes and an NBD export | 11 | 11 | 11 | 11 | 12/12/12 |
//! | qemu-storage-daemon 7.2, the same nodes | 11 | 11 | 11 | 11 | 12/12/12 |
//! | qemu-ga 7.2 | 16 | 16 | 16 | 16 | - |
//!
//! ("Answered": the others are refused by the server itself on this host, e.g. `query-sgx` without SGX.)
//! `tests/tests/qapi/schema_walk.rs` walks the live `query-qmp-schema` of qsd 10.0 and qemu-system 7.2 and
//! builds values that use every member, enum value and branch of every command's arguments and result and every
//! event's data (1880 and 2449 values): each decodes with nothing unknown and encodes back unchanged.
//!
//! One documented gap: `SevInfo` was a struct in 7.2 and is a union on `sev-type` in 10.0; a 7.2 reply has no
//! discriminator, so its `handle` and `policy` stay (kept, untyped) in `SevInfoBranch::Other`.
//!
//! # Compile time
//! The generated code is about 22,500 lines for QMP and 1,900 for the guest agent. A debug build of this crate
//! took 64 s of CPU with feature `qmp` alone and 6 s with `qga` alone (measured on a shared, loaded 2-core
//! machine); depend on it with `default-features = false` and the one you need to pay for one.
//!
//! # Where the schema comes from, and its licence
//! QEMU's QAPI schema files (`qapi/*.json`, `qga/qapi-schema.json`) are GPL-2.0-or-later. The generator's
//! inputs, `qmp-qapi-gen/schema/<release>/{qmp,qga}.json`, are extracts of them taken from Debian's source
//! packages (`qemu` 1:7.2+dfsg, 1:10.0.2+ds): the definitions only (names, types, members, features,
//! conditions), without QEMU's documentation text. The generated code in `src/generated/` holds those interface
//! facts and which releases have them, and no QEMU prose. The extracts carry QEMU's licence
//! (`qmp-qapi-gen/schema/README.md`).
//!
//! # Adding a release
//! `cargo run -p qmp-qapi-gen -- extract 9.2 /path/to/qemu-9.2-source` (writes `qmp-qapi-gen/schema/9.2/`),
//! then `cargo run -p qmp-qapi-gen -- generate`. The test `qmp-qapi-gen/tests/current.rs` fails while the
//! checked-in code differs from what the inputs generate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[macro_use]
mod support;
mod server_schema;

// The generated modules are checked against the generator's output byte for byte, so rustfmt leaves them alone.
#[cfg(feature = "qga")]
#[path = "generated/qga.rs"]
#[rustfmt::skip]
pub mod qga;
#[cfg(feature = "qmp")]
#[path = "generated/qmp.rs"]
#[rustfmt::skip]
pub mod qmp;

use qmp_proto::{RawJson, ServerEvent};
pub use server_schema::ServerSchema;
pub use support::{Command, Empty, EventData, QType};

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

/// The event's `data` as the typed event data `E` (for example `qmp::events::JobStatusChange`), or `None` when
/// the event is another one. An event without `data` reads as `{}`.
pub fn event<E: EventData>(event: &ServerEvent) -> Option<Result<E, serde_json::Error>> {
    if event.name != E::NAME {
        return None;
    }
    Some(serde_json::from_str(event.data.as_ref().map_or("{}", RawJson::raw_str)))
}

/// The event as [`qmp::Event`]. Only data that contradicts the schema fails (a string where it has a number);
/// an unknown event is [`qmp::Event::Other`], and the timestamp is not looked at.
#[cfg(feature = "qmp")]
pub fn qmp_event(event: &ServerEvent) -> Result<qmp::Event, serde_json::Error> {
    qmp::Event::decode(&event.name, event.data.as_ref().map(RawJson::raw_str))
}

/// The event message as QEMU sends it (`event`, `data` when there is any, `timestamp` when given): the inverse of
/// [`qmp_event`].
#[cfg(feature = "qmp")]
pub fn encode_event(
    event: &qmp::Event,
    timestamp: Option<qmp_proto::Timestamp>,
) -> Result<serde_json::Value, serde_json::Error> {
    let mut map = serde_json::Map::new();
    map.insert("event".into(), event.name().into());
    if let Some(data) = event.data()? {
        map.insert("data".into(), data);
    }
    if let Some(ts) = timestamp {
        map.insert("timestamp".into(), serde_json::json!({"seconds": ts.seconds, "microseconds": ts.microseconds}));
    }
    Ok(serde_json::Value::Object(map))
}
