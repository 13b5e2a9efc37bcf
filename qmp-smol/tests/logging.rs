//! Logging goes through `tracing` only: wire traffic at TRACE (target `qmp_async::wire`), the connection's
//! lifecycle at DEBUG. A process-wide subscriber records what a session emits (its own test binary, since the
//! global subscriber can be set once).
#![cfg(feature = "smol")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use qmp_smol::Qmp;
use qmp_tests::{require, servers::QemuServer};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

#[derive(Default)]
struct Recorder {
    next_span: AtomicU64,
    /// (level, target, message)
    events: Mutex<Vec<(Level, String, String)>>,
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let meta = event.metadata();
        self.events.lock().unwrap().push((*meta.level(), meta.target().to_owned(), message.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

struct Shared(Arc<Recorder>);

impl Subscriber for Shared {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.0.enabled(m)
    }
    fn new_span(&self, a: &Attributes<'_>) -> Id {
        self.0.new_span(a)
    }
    fn record(&self, i: &Id, r: &Record<'_>) {
        self.0.record(i, r)
    }
    fn record_follows_from(&self, a: &Id, b: &Id) {
        self.0.record_follows_from(a, b)
    }
    fn event(&self, e: &Event<'_>) {
        self.0.event(e)
    }
    fn enter(&self, i: &Id) {
        self.0.enter(i)
    }
    fn exit(&self, i: &Id) {
        self.0.exit(i)
    }
}

#[test]
fn wire_at_trace_lifecycle_at_debug() {
    let server = require!(QemuServer::storage_daemon());
    let recorder = Arc::new(Recorder::default());
    tracing::subscriber::set_global_default(Shared(recorder.clone())).expect("first subscriber");
    common::run::<common::Smol, _>(std::time::Duration::from_secs(30), async move {
        let qmp = Qmp::connect_unix(server.socket_path(), qmp_smol::Options::default()).await.expect("connect");
        let _: serde_json::Value = qmp.execute("query-version", ()).await.expect("query-version");
        qmp.close().await;
    });
    let events = recorder.events.lock().unwrap().clone();
    let wire: Vec<_> = events.iter().filter(|(_, target, _)| target == "qmp_async::wire").collect();
    assert!(wire.iter().all(|(level, _, _)| *level == Level::TRACE), "{wire:?}");
    assert!(wire.iter().any(|(_, _, m)| m.starts_with("-> ") && m.contains("query-version")), "{wire:?}");
    assert!(wire.iter().any(|(_, _, m)| m.starts_with("<- ") && m.contains("\"QMP\"")), "{wire:?}");
    let debug: Vec<_> = events.iter().filter(|(level, _, _)| *level == Level::DEBUG).map(|(_, _, m)| m).collect();
    for expected in ["QMP greeting", "session ready", "close requested", "connection closed", "driver finished"] {
        assert!(debug.iter().any(|m| m.as_str() == expected), "no DEBUG {expected:?} in {debug:?}");
    }
    assert!(events.iter().all(|(level, _, _)| *level >= Level::DEBUG), "nothing above DEBUG on a clean session");
}
