//! Hand-made edge cases (an integration test, so that the generated code is not compiled a second time for a
//! unit-test build) of drift: replies of one release decoded by the merged types, unknown values and
//! members kept, events with odd timestamps or unknown names. (Real servers: `tests/tests/qapi_drift.rs` and
//! `tests/tests/qapi_schema_walk.rs`.)

use qmp_proto::{RawJson, ServerEvent, Timestamp};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use qmp_qapi::qga::commands::GuestInfo;
use qmp_qapi::qmp::{self, commands::*, Event};

/// Decodes `json` as `T`, checks that encoding gives `json` back, and returns the value.
fn roundtrip<T: DeserializeOwned + Serialize>(json: Value) -> T {
    let typed: T = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), json);
    typed
}

fn server_event(name: &str, data: Option<Value>, timestamp: Option<(i64, i64)>) -> ServerEvent {
    ServerEvent {
        name: name.into(),
        data: data.map(|d| RawJson::from_json(&d.to_string()).unwrap()),
        timestamp: timestamp.map(|(seconds, microseconds)| Timestamp { seconds, microseconds }),
    }
}

#[test]
fn a_member_added_later_is_optional() {
    // qemu-system 7.2's query-machines entry: no `acpi` (added in 8.0).
    let machine = json!({"name": "pc-q35-7.2", "hotpluggable-cpus": true, "numa-mem-supported": false,
        "alias": "q35", "cpu-max": 288, "deprecated": false, "default-ram-id": "pc.ram"});
    let machines: Vec<qmp::MachineInfo> = roundtrip(json!([machine]));
    assert_eq!(machines[0].acpi, None);
    assert_eq!(machines[0].cpu_max, 288);
}

#[test]
fn a_member_removed_later_is_kept() {
    // 7.2's query-status has `singlestep` (gone in 10.0).
    let status: qmp::StatusInfo = roundtrip(json!({"status": "prelaunch", "singlestep": false, "running": false}));
    assert_eq!(status.singlestep, Some(false));
    assert_eq!(status.status, qmp::RunState::Prelaunch);
}

#[test]
fn enum_values_of_any_release_and_unknown_ones() {
    let caps: Vec<qmp::MigrationCapabilityStatus> =
        roundtrip(json!([{"capability": "compress", "state": false}, {"capability": "from-qemu-99", "state": true}]));
    assert_eq!(caps[0].capability, qmp::MigrationCapability::Compress);
    assert_eq!(caps[1].capability, qmp::MigrationCapability::Other("from-qemu-99".into()));
    assert_eq!(caps[1].capability.as_str(), "from-qemu-99");
    assert_eq!(qmp::MigrationCapability::from("compress"), qmp::MigrationCapability::Compress);
    assert!(qmp::MigrationCapability::VALUES.contains(&"compress"));
}

#[test]
fn unknown_members_are_kept() {
    let version: qmp::VersionInfo = roundtrip(json!({"qemu": {"major": 99, "minor": 1, "micro": 0, "rc": 2},
        "package": "", "from-the-future": {"a": [1]}}));
    assert_eq!(version.qemu.major, 99);
    assert_eq!(version.extra_members["from-the-future"], json!({"a": [1]}));
    assert_eq!(version.qemu.extra_members["rc"], json!(2));
}

#[test]
fn introspection_default_null_stays_apart_from_absent() {
    let members: Vec<qmp::SchemaInfoObjectMember> =
        roundtrip(json!([{"name": "a", "type": "str", "default": null}, {"name": "b", "type": "int"}]));
    assert_eq!(members[0].default, Some(Value::Null), "optional");
    assert_eq!(members[1].default, None, "required");
}

#[test]
fn numbers_keep_their_json_form() {
    let rate = json!({"status": "measured", "start-time": 1, "calc-time": 1, "dirty-rate": 12,
        "mode": "page-sampling", "sample-pages": 512});
    let info: qmp::DirtyRateInfo = roundtrip(rate);
    assert_eq!(info.dirty_rate, Some(12));
    let stats = json!({"avg_rd_queue_depth": 0, "avg_wr_queue_depth": 0.25, "interval_length": 1,
        "min_rd_latency_ns": 0, "max_rd_latency_ns": 0, "avg_rd_latency_ns": 0, "min_wr_latency_ns": 0,
        "max_wr_latency_ns": 0, "avg_wr_latency_ns": 0, "min_flush_latency_ns": 0, "max_flush_latency_ns": 0,
        "avg_flush_latency_ns": 0});
    let typed: qmp::BlockDeviceTimedStats = roundtrip(stats);
    assert!(typed.avg_rd_queue_depth.is_u64() && typed.avg_wr_queue_depth.is_f64());
}

#[test]
fn unions_choose_their_branch_and_keep_unknown_ones() {
    let file = json!({"driver": "file", "node-name": "f0", "filename": "/tmp/x", "aio": "threads"});
    let opts: qmp::BlockdevOptions = roundtrip(file);
    assert_eq!(opts.base.node_name.as_deref(), Some("f0"));
    let qmp::BlockdevOptionsBranch::File(branch) = &opts.branch else { panic!("{opts:?}") };
    assert_eq!(branch.filename, "/tmp/x");

    let future = json!({"driver": "driver-of-qemu-99", "node-name": "n0", "speed": 3});
    let opts: qmp::BlockdevOptions = roundtrip(future);
    assert_eq!(opts.base.driver.as_str(), "driver-of-qemu-99");
    let qmp::BlockdevOptionsBranch::Other(rest) = &opts.branch else { panic!("{opts:?}") };
    assert_eq!(rest["speed"], 3);

    // A command whose arguments are a union (`boxed`): what `blockdev-add` sends.
    let add: BlockdevAdd = serde_json::from_value(json!({"driver": "null-co", "node-name": "null0"})).unwrap();
    assert_eq!(qmp_qapi::arguments(&add).unwrap().unwrap().raw_str(), r#"{"driver":"null-co","node-name":"null0"}"#);
}

#[test]
fn a_struct_that_became_a_union_decodes_both_forms() {
    // SevInfo: a struct in 7.2, a union on `sev-type` in 10.0.
    let old = json!({"enabled": false, "api-major": 0, "api-minor": 0, "build-id": 0, "policy": 0, "state": "uninit",
        "handle": 0});
    let sev: qmp::SevInfo = roundtrip(old);
    assert_eq!(sev.base.sev_type, None);
    let new = json!({"enabled": true, "api-major": 1, "api-minor": 2, "build-id": 3, "state": "running",
        "sev-type": "sev", "policy": 1, "handle": 2});
    let sev: qmp::SevInfo = roundtrip(new);
    assert!(matches!(sev.branch, qmp::SevInfoBranch::Sev(_)), "{sev:?}");
}

#[test]
fn alternates_choose_by_json_type() {
    let by_name: qmp::BlockdevRef = roundtrip(json!("node0"));
    assert_eq!(by_name, qmp::BlockdevRef::Reference("node0".into()));
    let inline: qmp::BlockdevRef = roundtrip(json!({"driver": "null-co"}));
    assert!(matches!(inline, qmp::BlockdevRef::Definition(_)));
    let other: qmp::BlockdevRef = roundtrip(json!(17));
    assert_eq!(other, qmp::BlockdevRef::Other(json!(17)));
    // `backing: null` (no backing file) stays apart from an absent `backing`.
    let qcow2: qmp::BlockdevOptions = roundtrip(json!({"driver": "qcow2", "file": "f0", "backing": null}));
    let qmp::BlockdevOptionsBranch::Qcow2(q) = &qcow2.branch else { panic!() };
    assert_eq!(q.backing.as_deref(), Some(&qmp::BlockdevRefOrNull::Null(())));
}

#[test]
fn commands_know_their_wire_facts() {
    assert_eq!(qmp_qapi::name(&QueryVersion::default()), "query-version");
    assert!(qmp_qapi::allows_oob(&QueryYank::default()));
    assert!(!qmp_qapi::allows_oob(&QueryStatus::default()));
    assert_eq!(qmp_qapi::arguments(&QueryStatus::default()).unwrap(), None);
    let getfd = Getfd { fdname: "f0".into(), extra_members: Default::default() };
    assert_eq!(qmp_qapi::arguments(&getfd).unwrap().unwrap().raw_str(), r#"{"fdname":"f0"}"#);
    const { assert!(!<qmp_qapi::qga::commands::GuestShutdown as qmp_qapi::Command>::SUCCESS_RESPONSE) };
    let empty = qmp_qapi::decode::<Stop>(&RawJson::from_json("{}").unwrap()).unwrap();
    assert!(empty.is_empty());
    assert!(qmp::COMMANDS.contains(&"query-cpus-fast"));
}

#[test]
fn events_with_odd_timestamps_names_and_values() {
    let no_clock = server_event("STOP", None, Some((-1, -1)));
    let typed = qmp_qapi::qmp_event(&no_clock).unwrap();
    assert!(matches!(typed, Event::Stop(_)));
    assert_eq!(
        qmp_qapi::encode_event(&typed, no_clock.timestamp).unwrap(),
        json!({"event": "STOP", "timestamp": {"seconds": -1, "microseconds": -1}})
    );

    let no_timestamp = server_event("RESUME", None, None);
    let typed = qmp_qapi::qmp_event(&no_timestamp).unwrap();
    assert_eq!(qmp_qapi::encode_event(&typed, None).unwrap(), json!({"event": "RESUME"}));

    let unknown = server_event("EVENT_OF_QEMU_99", Some(json!({"x": 1})), Some((1, 2)));
    let typed = qmp_qapi::qmp_event(&unknown).unwrap();
    assert_eq!(typed, Event::Other { name: "EVENT_OF_QEMU_99".into(), data: Some(json!({"x": 1})) });
    assert_eq!(typed.name(), "EVENT_OF_QEMU_99");
    assert_eq!(
        qmp_qapi::encode_event(&typed, unknown.timestamp).unwrap(),
        json!({"event": "EVENT_OF_QEMU_99", "data": {"x": 1}, "timestamp": {"seconds": 1, "microseconds": 2}})
    );

    let new_status = server_event("JOB_STATUS_CHANGE", Some(json!({"id": "j0", "status": "teleported"})), None);
    let Event::JobStatusChange(data) = qmp_qapi::qmp_event(&new_status).unwrap() else { panic!() };
    assert_eq!(data.status, qmp::JobStatus::Other("teleported".into()));
    let data = qmp_qapi::event::<qmp::events::JobStatusChange>(&new_status).unwrap().unwrap();
    assert_eq!(data.id, "j0");
    assert!(qmp_qapi::event::<qmp::events::Stop>(&new_status).is_none());

    // An event the schema knows without members, sent with data by a newer QEMU: the data is kept.
    let grown = server_event("STOP", Some(json!({"reason": "new"})), None);
    let typed = qmp_qapi::qmp_event(&grown).unwrap();
    assert_eq!(qmp_qapi::encode_event(&typed, None).unwrap(), json!({"event": "STOP", "data": {"reason": "new"}}));
}

#[test]
fn guest_agent_types() {
    let info: qmp_qapi::Empty = json!({}).as_object().unwrap().clone();
    assert!(info.is_empty());
    let reply = json!({"version": "7.2.15", "supported_commands": [
        {"enabled": true, "name": "guest-ping", "success-response": true}]});
    let typed: <GuestInfo as qmp_qapi::Command>::Ok = roundtrip(reply);
    assert_eq!(typed.version, "7.2.15");
}
