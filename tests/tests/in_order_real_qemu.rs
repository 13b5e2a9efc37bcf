//! `Config::in_band_ids(false)` against real QEMU (qemu-storage-daemon 10, qemu-system-x86_64 7.2): in-band
//! commands go without ids and QEMU's id-less replies are matched by order. The core is driven directly over a
//! blocking socket, so that the test owns the clock: a command times out on the wire deterministically.
//!
//! Each command's reply names it: `x-order-N` is an unknown command, and QEMU's error says
//! `The command x-order-N has not been found`, so a reply routed to the wrong command shows. The OOB command is
//! `query-yank`: on qemu-system it runs out of band; qemu-storage-daemon has no OOB-capable command, and its
//! monitor's I/O thread answers `exec-oob` of an unknown one at once, out of band, with its id (CommandNotFound).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use qmp_proto::{Client, ClientEvent, Config, ExecuteOptions, RequestId};
use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use serde_json::Value;

/// The core over a blocking unix socket, driven by the contract: after each input or call, drain events, then
/// write what it transmits.
struct Conn {
    client: Client,
    sock: UnixStream,
    events: Vec<ClientEvent>,
}

impl Conn {
    fn connect(server: &QemuServer) -> Conn {
        let sock = UnixStream::connect(server.socket_path()).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
        let client = Client::new(Config::qmp().in_band_ids(false), Instant::now());
        let mut conn = Conn { client, sock, events: Vec::new() };
        conn.wait_for(|ev| matches!(ev, ClientEvent::Ready { .. }));
        assert!(conn.client.oob_enabled(), "QEMU offers oob on these monitors");
        conn.events.clear();
        conn
    }

    fn pump(&mut self) {
        self.events.extend(std::iter::from_fn(|| self.client.poll_event()));
        let mut out = Vec::new();
        self.client.poll_transmit(&mut out);
        self.sock.write_all(&out).expect("write");
    }

    /// Reads until an event matching `done` has come; returns the events from that read on.
    fn wait_for(&mut self, done: impl Fn(&ClientEvent) -> bool) {
        self.pump();
        let mut buf = [0u8; 65536];
        while !self.events.iter().any(&done) {
            let n = self.sock.read(&mut buf).expect("read");
            assert!(n > 0, "QEMU closed the connection; events: {:?}", self.events);
            self.client.handle_input(&buf[..n]);
            self.pump();
        }
    }

    fn exec(&mut self, name: &str, opts: ExecuteOptions) -> RequestId {
        let id = self.client.execute_no_args(name, opts).expect("execute");
        self.pump();
        id
    }

    /// Waits for the replies of `ids`; checks that each names its command; returns the other events.
    fn expect_replies(&mut self, ids: &[(RequestId, String)]) -> Vec<ClientEvent> {
        let answered = |evs: &[ClientEvent], id: RequestId| {
            evs.iter().any(|ev| matches!(ev, ClientEvent::Reply { id: got, .. } if *got == id))
        };
        for (id, _) in ids {
            self.wait_for(|ev| matches!(ev, ClientEvent::Reply { id: got, .. } if got == id));
        }
        let mut others = Vec::new();
        for ev in self.events.drain(..) {
            let ClientEvent::Reply { id, result } = ev else {
                others.push(ev);
                continue;
            };
            let (_, name) = ids.iter().find(|(i, _)| *i == id).expect("a reply to a command of this step");
            match result {
                Err(e) => assert_eq!(e.desc, format!("The command {name} has not been found"), "{id}"),
                Ok(raw) => {
                    let v: Value = raw.deserialize().expect("JSON");
                    match name.as_str() {
                        "query-version" => assert!(v["qemu"]["major"].is_u64(), "{v}"),
                        "query-yank" => assert!(v.is_array(), "{v}"),
                        other => panic!("{other} answered {v}"),
                    }
                }
            }
        }
        assert!(ids.iter().all(|(id, _)| !answered(&others, *id)));
        others
    }
}

fn by_order_on_real_qemu(server: &QemuServer) {
    let mut c = Conn::connect(server);
    let opts = ExecuteOptions::new;
    // Sequential: one command at a time, a valid one and an unknown one in turn.
    for n in 0..20 {
        let name = if n % 2 == 0 { "query-version".to_string() } else { format!("x-order-{n}") };
        let id = c.exec(&name, opts());
        assert!(!id.is_on_wire());
        let others = c.expect_replies(&[(id, name)]);
        assert!(others.is_empty(), "{others:?}");
    }
    // Eight in flight (more queued), with OOB commands between them: OOB keeps its id and may overtake.
    let mut ids = Vec::new();
    for n in 0..40 {
        let (name, o) = match n % 5 {
            0 => ("query-yank".to_string(), opts().oob()),
            1 | 3 => ("query-version".to_string(), opts()),
            _ => (format!("x-order-{n}"), opts()),
        };
        let id = c.client.execute_no_args(&name, o).expect("execute");
        assert_eq!(id.is_on_wire(), name == "query-yank");
        ids.push((id, name));
    }
    c.pump();
    assert_eq!(c.client.in_flight(), 8);
    let others = c.expect_replies(&ids);
    assert!(others.is_empty(), "{others:?}");
    // A command that times out on the wire: its late reply (a 100+ KB schema) is swallowed, the next reply is
    // the next command's.
    let start = Instant::now();
    let slow = c.exec("query-qmp-schema", opts().deadline(start + Duration::from_millis(1)));
    c.client.handle_timeout(start + Duration::from_secs(60));
    c.pump();
    assert!(matches!(c.events.as_slice(), [ClientEvent::TimedOut { id }] if *id == slow), "{:?}", c.events);
    c.events.clear();
    assert_eq!(c.client.abandoned(), 1);
    // A cancelled one: same.
    let cancelled = c.exec("x-order-cancelled", opts());
    assert!(c.client.cancel(cancelled));
    c.pump();
    let after = [c.exec("query-version", opts()), c.exec("x-order-after", opts())];
    let others = c.expect_replies(&[(after[0], "query-version".into()), (after[1], "x-order-after".into())]);
    assert!(others.is_empty(), "late replies were not swallowed: {others:?}");
    assert_eq!((c.client.abandoned(), c.client.in_flight(), c.client.pending()), (0, 0, 0));
}

#[test]
fn qsd10_replies_matched_by_order() {
    let server = require!(QemuServer::storage_daemon());
    by_order_on_real_qemu(&server);
}

#[test]
fn qsys72_replies_matched_by_order() {
    let server = require!(QemuServer::system());
    by_order_on_real_qemu(&server);
}

/// The adapters pass the setting through (`Options::in_band_ids`): qmp-blocking, pipelined, on
/// qemu-storage-daemon 10. (The proxy's tests run qmp-tokio's upstream with it.)
#[test]
fn qsd10_blocking_adapter_without_ids() {
    use qmp_blocking::{Client as Blocking, Error, Options};
    let server = require!(QemuServer::storage_daemon());
    let mut qmp = Blocking::connect_unix(server.socket_path(), Options::default().in_band_ids(false)).expect("connect");
    let pending: Vec<_> = (0..12)
        .map(|n| {
            let name = if n % 3 == 0 { "query-version".to_string() } else { format!("x-order-{n}") };
            (qmp.submit(&name, ()).expect("submit"), name)
        })
        .collect();
    for (p, name) in pending {
        match qmp.wait(p) {
            Ok(raw) => {
                assert_eq!(name, "query-version");
                assert!(raw.deserialize::<Value>().expect("JSON")["qemu"]["major"].is_u64());
            }
            Err(Error::Qmp(e)) => assert_eq!(e.desc, format!("The command {name} has not been found")),
            Err(e) => panic!("{name}: {e}"),
        }
    }
    // qemu-storage-daemon has no OOB-capable command: its monitor answers at once, out of band, with the id.
    match qmp.execute_oob::<Value>("query-yank", ()) {
        Err(Error::Qmp(e)) => assert_eq!(e.desc, "The command query-yank has not been found"),
        other => panic!("query-yank on qemu-storage-daemon: {other:?}"),
    }
    let _: Value = qmp.execute("query-version", ()).expect("in-band after it");
}
