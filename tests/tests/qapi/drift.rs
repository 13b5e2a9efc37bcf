//! The generated types of qmp-qapi against every server we run: every read-only query (`query-*`, `x-query-*`,
//! the guest agent's `guest-get-*` and other info commands) that takes no required argument decodes, and
//! encodes back to exactly the JSON the server sent; so do the events those servers emit. Servers: qsd 10 and
//! qsd 7.2 with file, qcow2, LUKS and null nodes and an NBD export; qemu-system 7.2 with `-M none`, and with
//! `-M q35 -S` plus a drive, a NIC and a LUKS node; qemu-ga 7.2.
//!
//! Each test prints its row of the table (`--nocapture`): queries tried, answered, decoded, re-encoded equal.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{qga_commands, qmp_commands, Outcome};
use qmp_blocking::{Client, Error, GuestAgent, Options};
use qmp_tests::require;
use qmp_tests::servers::{QemuServer, ServerKind};
use serde_json::{json, Value};

/// One server's row.
#[derive(Default)]
struct Row {
    tried: usize,
    answered: usize,
    decoded: usize,
    equal: usize,
    refused: Vec<String>,
    failures: Vec<String>,
}

impl Row {
    fn record(&mut self, what: &str, outcome: Option<Outcome>) {
        match outcome {
            None => self.failures.push(format!("{what}: not in the generated schema")),
            Some(Outcome::Equal(debug)) => {
                self.decoded += 1;
                self.equal += 1;
                // SevInfo was a struct in 7.2 and is a union on `sev-type` since 9.1: a 7.2 reply has no
                // discriminator, so `handle` and `policy` (branch members since 9.1) stay in the `Other` branch.
                let expected = what == "query-sev" && debug.contains("sev_type: None");
                if let Some(unknown) = crate::support::unknown_in(&debug).filter(|_| !expected) {
                    self.failures.push(format!("{what}: kept something the schema does not know: {unknown}"));
                }
            }
            Some(Outcome::Differs { encoded }) => {
                self.decoded += 1;
                self.failures.push(format!("{what}: re-encoded differently: {encoded}"));
            }
            Some(Outcome::Failed(e)) => self.failures.push(format!("{what}: {e}")),
        }
    }

    fn finish(self, server: &str, events: &EventRow) {
        let mut line = format!(
            "| {server} | {} | {} | {} | {} | {}/{}/{} |",
            self.tried, self.answered, self.decoded, self.equal, events.seen, events.decoded, events.equal
        );
        if !self.refused.is_empty() {
            let _ = write!(line, " refused by the server: {}", self.refused.join("; "));
        }
        println!("{line}");
        let mut failures = self.failures;
        failures.extend(events.failures.iter().cloned());
        assert!(failures.is_empty(), "{server}:\n{}", failures.join("\n"));
        assert!(self.answered > 0 && self.answered == self.equal, "{server}: nothing checked");
    }
}

#[derive(Default)]
struct EventRow {
    seen: usize,
    decoded: usize,
    equal: usize,
    failures: Vec<String>,
}

fn options() -> Options {
    Options::default().command_timeout(Some(Duration::from_secs(30)))
}

/// Whether a guest-agent command only reads (never `guest-shutdown`, `guest-suspend-*`, `guest-set-*`, ...).
fn guest_info_command(name: &str) -> bool {
    name == "guest-info"
        || name == "guest-ping"
        || name == "guest-fsfreeze-status"
        || name.starts_with("guest-get-")
        || name.starts_with("guest-network-get-")
}

/// Runs every argument-less read-only query the server lists in `query-commands`.
fn query_all(qmp: &mut Client) -> Row {
    let mut row = Row::default();
    let commands: Vec<Value> = qmp.execute("query-commands", ()).unwrap();
    let mut names: Vec<String> = commands.iter().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect();
    names.sort();
    for name in names.iter().filter(|n| n.starts_with("query-") || n.starts_with("x-query-")) {
        match qmp_commands::takes_no_required_argument(name) {
            None => {
                row.failures.push(format!("{name}: not in the generated schema"));
                continue;
            }
            Some(false) => continue,
            Some(true) => {}
        }
        row.tried += 1;
        let raw = match qmp.execute_raw(name, None) {
            Ok(raw) => raw,
            Err(Error::Qmp(e)) => {
                row.refused.push(format!("{name} ({})", e.class));
                continue;
            }
            Err(e) => panic!("{name}: {e}"),
        };
        row.answered += 1;
        let raw: Value = raw.deserialize().unwrap();
        row.record(name, qmp_commands::result(name, &raw));
    }
    row
}

/// Decodes and re-encodes every event the client has buffered.
fn check_events(qmp: &mut Client) -> EventRow {
    let mut row = EventRow::default();
    while let Some(event) = qmp.next_event(Some(Duration::from_millis(200))).unwrap() {
        row.seen += 1;
        let mut raw = json!({"event": event.name});
        if let Some(data) = &event.data {
            raw["data"] = data.deserialize().unwrap();
        }
        if let Some(ts) = event.timestamp {
            raw["timestamp"] = json!({"seconds": ts.seconds, "microseconds": ts.microseconds});
        }
        match qmp_qapi::qmp_event(&event) {
            Err(e) => row.failures.push(format!("event {raw}: {e}")),
            Ok(typed) => {
                row.decoded += 1;
                if let Some(unknown) = crate::support::unknown_in(&format!("{typed:?}")) {
                    row.failures.push(format!("event {raw}: kept something the schema does not know: {unknown}"));
                }
                match qmp_qapi::encode_event(&typed, event.timestamp) {
                    Ok(encoded) if encoded == raw => row.equal += 1,
                    other => row.failures.push(format!("event {raw}: re-encoded as {other:?}")),
                }
            }
        }
    }
    row
}

fn run(qmp: &mut Client, command: &str, args: Value) -> Value {
    qmp.execute(command, &args).unwrap_or_else(|e| panic!("{command} {args}: {e}"))
}

/// Waits until the job has concluded, then dismisses it.
fn finish_job(qmp: &mut Client, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs: Vec<Value> = qmp.execute("query-jobs", ()).unwrap();
        let job = jobs.iter().find(|j| j["id"] == id).unwrap_or_else(|| panic!("job {id} gone: {jobs:?}"));
        if job["status"] == "concluded" {
            assert!(job.get("error").is_none(), "{job}");
            break;
        }
        assert!(Instant::now() < deadline, "job {id} did not conclude: {job}");
        std::thread::sleep(Duration::from_millis(20));
    }
    run(qmp, "job-dismiss", json!({"id": id}));
}

/// Adds block nodes with real data behind them: a raw file, a qcow2 image and a LUKS image (formatted over QMP
/// with `blockdev-create`, which also emits job events), and a null node.
fn add_block_nodes(qmp: &mut Client, dir: &Path) {
    run(qmp, "object-add", json!({"qom-type": "secret", "id": "sec0", "data": "hunter2"}));
    for (file, node, format) in
        [("raw.img", "raw0", None), ("image.qcow2", "qcow0", Some("qcow2")), ("image.luks", "luks0", Some("luks"))]
    {
        let path = dir.join(file);
        std::fs::File::create(&path).unwrap();
        let file_node = format!("{node}-file");
        run(qmp, "blockdev-add", json!({"driver": "file", "node-name": file_node, "filename": path}));
        let Some(format) = format else { continue };
        let mut options = json!({"driver": format, "file": file_node, "size": 1 << 20});
        if format == "luks" {
            options["key-secret"] = json!("sec0");
            options["iter-time"] = json!(10);
        }
        let job = format!("create-{node}");
        run(qmp, "blockdev-create", json!({"job-id": job, "options": options}));
        finish_job(qmp, &job);
        let mut add = json!({"driver": format, "node-name": node, "file": file_node});
        if format == "luks" {
            add["key-secret"] = json!("sec0");
        }
        run(qmp, "blockdev-add", add);
    }
    run(qmp, "blockdev-add", json!({"driver": "null-co", "node-name": "null0", "size": 1 << 20}));
}

fn storage_daemon(server: QemuServer, label: &str) {
    let mut qmp = Client::connect_unix(server.socket_path(), options()).unwrap();
    add_block_nodes(&mut qmp, server.dir());
    let nbd = server.dir().join("nbd.sock");
    run(&mut qmp, "nbd-server-start", json!({"addr": {"type": "unix", "data": {"path": nbd}}}));
    run(&mut qmp, "block-export-add", json!({"type": "nbd", "id": "export0", "node-name": "qcow0"}));
    let row = query_all(&mut qmp);
    let events = check_events(&mut qmp);
    assert!(events.seen >= 6, "blockdev-create's job events: {}", events.seen);
    row.finish(label, &events);
}

#[test]
fn storage_daemon_10() {
    let server = require!(QemuServer::storage_daemon());
    let label = format!("qemu-storage-daemon {}", server.version());
    storage_daemon(server, &label);
}

#[test]
fn storage_daemon_72() {
    storage_daemon(require!(QemuServer::storage_daemon_72()), "qemu-storage-daemon 7.2");
}

#[test]
fn system_72_machine_none() {
    let server = require!(QemuServer::system());
    let mut qmp = Client::connect_unix(server.socket_path(), options()).unwrap();
    run(&mut qmp, "stop", json!({}));
    run(&mut qmp, "cont", json!({}));
    let row = query_all(&mut qmp);
    let events = check_events(&mut qmp);
    assert!(events.seen >= 2, "STOP and RESUME");
    row.finish("qemu-system-x86_64 7.2 -M none", &events);
}

#[test]
fn system_72_q35_with_devices() {
    let server = require!(QemuServer::start_with_extra_args(ServerKind::System, |dir| {
        let disk = dir.join("disk.img");
        std::fs::File::create(&disk).and_then(|f| f.set_len(1 << 20)).unwrap();
        let drive = format!("file={},format=raw,if=none,id=drive0", disk.display());
        ["-M", "q35", "-S", "-drive", &drive, "-device", "virtio-blk-pci,drive=drive0,id=disk0"]
            .into_iter()
            .chain(["-netdev", "user,id=net0", "-device", "e1000,netdev=net0,id=nic0"])
            .map(OsString::from)
            .collect()
    }));
    let mut qmp = Client::connect_unix(server.socket_path(), options()).unwrap();
    add_block_nodes(&mut qmp, server.dir());
    let row = query_all(&mut qmp);
    let events = check_events(&mut qmp);
    row.finish("qemu-system-x86_64 7.2 -M q35 -S (drive, NIC, LUKS)", &events);
}

#[test]
fn guest_agent_72() {
    let server = require!(QemuServer::guest_agent());
    let mut ga = GuestAgent::connect_unix(server.socket_path(), options()).unwrap();
    let info: Value = ga.execute("guest-info", ()).unwrap();
    let mut names: Vec<&str> = info["supported_commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["enabled"] == true)
        .filter_map(|c| c["name"].as_str())
        .filter(|n| guest_info_command(n))
        .collect();
    names.sort();
    let mut row = Row::default();
    for name in names {
        match qga_commands::takes_no_required_argument(name) {
            None => {
                row.failures.push(format!("{name}: not in the generated schema"));
                continue;
            }
            Some(false) => continue,
            Some(true) => {}
        }
        row.tried += 1;
        let raw = match ga.execute_raw(name, None) {
            Ok(raw) => raw,
            Err(Error::Qmp(e)) => {
                row.refused.push(format!("{name} ({}: {})", e.class, e.desc));
                continue;
            }
            Err(e) => panic!("{name}: {e}"),
        };
        row.answered += 1;
        let raw: Value = raw.deserialize().unwrap();
        row.record(name, qga_commands::result(name, &raw));
    }
    row.finish("qemu-ga 7.2", &EventRow::default());
}
