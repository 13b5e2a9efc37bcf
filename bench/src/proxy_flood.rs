//! The flood rows of the proxy bench: a client's round trips through the proxy while QEMU floods events, to show
//! what a client that stops reading costs the others (target: nothing) and what a flood costs a client that takes
//! no events (a rule with `events = []`, as a metrics collector would have).
//!
//! qemu-storage-daemon floods nothing on demand, so QEMU here is our own server (`qmp_tokio::serve_unix`, in this
//! process: its CPU is shared with the proxy's) answering `query-status`. The flood has a steady rate,
//! [`RATE`] events a second, in bursts of [`BURST`], each sent on schedule once the client that reads events
//! (the "reader") has received the burst before (so the fake's own queue, 256 events per session, never drops
//! one): every run is the same flood, and it leaves CPU to spare, so that what a round trip waits for is the
//! proxy, not a machine saturated by the flood (a flood as fast as the reader takes it saturates two cores:
//! the round trips then get what CPU is left, and the rates only measure the machine's load).
//!
//! A stalled client negotiates, then never reads: the proxy disconnects it once its queue
//! ([`ProxyOptions::event_queue`](qmp_async::proxy::ProxyOptions::event_queue)) is full, and the claim is that
//! until then and after, the others do as many round trips as during the same flood without it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use qmp_async::proxy::{self, Policy, Profile, Proxy, ProxyOptions, Rule};
use qmp_async::serve::{ServeOptions, ServerConfig, ServerHandle, Service};
use qmp_tokio::{EventItem, Options, Qmp, Tokio};
use serde_json::{json, Value};

use crate::measure::Meter;

/// Events sent at once.
pub const BURST: usize = 100;

/// Events a second.
pub const RATE: u64 = 20_000;

/// A fake QEMU that floods events, a proxy in front of it with two listeners (every event; none), a reader
/// that takes events and counts them, and a client that takes none.
pub struct Flood {
    _dir: tempfile::TempDir,
    qemu: ServerHandle,
    all_events: PathBuf,
    /// Takes every event (and counts them in `received`).
    pub reader: Qmp,
    received: Arc<AtomicUsize>,
    /// Under the rule `events = []`.
    pub no_events: Qmp,
}

/// One run: the measured client's round trips per second, and the flood's events per second (0 without one).
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub round_trips: f64,
    pub events: f64,
    /// CPU microseconds of this process per event of the flood.
    pub cpu_per_event: f64,
}

impl Flood {
    /// Starts the fake QEMU, the proxy and its two clients.
    pub async fn start() -> Flood {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fake, all_events, no_events) =
            (dir.path().join("fake.sock"), dir.path().join("proxy.sock"), dir.path().join("metrics.sock"));
        let service = Service::new(ServerConfig::qmp().version(10, 0, 2, "fake"))
            .command("query-status", |_| async { Ok(json!({"status": "running", "running": true})) });
        let (qemu, serving) = qmp_tokio::serve_unix(&fake, service, ServeOptions::default()).expect("fake QEMU");
        tokio::spawn(serving);
        let upstream = Qmp::connect_unix(&fake, Options::default().command_timeout(None).event_buffer(1 << 16))
            .await
            .expect("proxy upstream");
        let policy = Policy::new(vec![
            Rule::new("metrics").listener(no_events.display().to_string()).allow(["query-*"]).events(NONE),
            Rule::new("all").profile(Profile::Full),
        ]);
        let proxy = Proxy::new(upstream, policy.validate().expect("policy"), ProxyOptions::default());
        for path in [&all_events, &no_events] {
            tokio::spawn(proxy::serve_unix(Tokio, &proxy, path).expect("bind"));
        }
        let reader = Qmp::connect_unix(&all_events, Options::default().event_buffer(1 << 16)).await.expect("reader");
        let received = Arc::new(AtomicUsize::new(0));
        let mut events = reader.events();
        let counter = received.clone();
        tokio::spawn(async move {
            while let Some(item) = events.next().await {
                let n = match item {
                    EventItem::Lagged(n) => n as usize,
                    _ => 1,
                };
                counter.fetch_add(n, Ordering::SeqCst);
            }
        });
        let no_events = Qmp::connect_unix(&no_events, Options::default()).await.expect("metrics client");
        Flood { _dir: dir, qemu, all_events, reader, received, no_events }
    }

    /// Round trips of `measured` with no flood (`n` of them).
    pub async fn quiet(&self, measured: &Qmp, n: usize) -> Run {
        let started = Instant::now();
        for _ in 0..n {
            let _: Value = measured.execute("query-status", ()).await.expect("query-status");
        }
        Run { round_trips: n as f64 / started.elapsed().as_secs_f64(), events: 0.0, cpu_per_event: 0.0 }
    }

    /// Round trips of `measured` while `events` events flood every client at [`RATE`] (with a client that
    /// never reads connected first when `stalled`).
    pub async fn flooded(&self, measured: &Qmp, events: usize, stalled: bool) -> Run {
        self.flood(Some(measured), events, stalled, Some(RATE)).await
    }

    /// The flood alone, at `rate` events a second or as fast as the reader takes it (with a client that never
    /// reads connected first when `stalled`, and `more_readers` clients that read and discard what they get):
    /// its CPU per event.
    pub async fn alone(&self, events: usize, rate: Option<u64>, stalled: bool, more_readers: usize) -> Run {
        let readers: Vec<UnixStream> = (0..more_readers).map(|_| discarding_client(&self.all_events)).collect();
        let run = self.flood(None, events, stalled, rate).await;
        for reader in readers {
            let _ = reader.shutdown(std::net::Shutdown::Both);
        }
        run
    }

    async fn flood(&self, measured: Option<&Qmp>, events: usize, stalled: bool, rate: Option<u64>) -> Run {
        let stalled = stalled.then(|| stalled_client(&self.all_events));
        let (qemu, received) = (self.qemu.clone(), self.received.clone());
        let meter = Meter::start();
        let flood = tokio::task::spawn_blocking(move || flood(&qemu, &received, events, rate));
        let mut round_trips = 0usize;
        while let Some(measured) = measured.filter(|_| !flood.is_finished()) {
            let _: Value = measured.execute("query-status", ()).await.expect("query-status during the flood");
            round_trips += 1;
        }
        flood.await.expect("flood");
        let cost = meter.stop();
        drop(stalled);
        Run {
            round_trips: round_trips as f64 / cost.secs,
            events: events as f64 / cost.secs,
            cpu_per_event: cost.cpu / events as f64 * 1e6,
        }
    }
}

/// `events = []`.
const NONE: [&str; 0] = [];

/// Sends `events` events in bursts, at `rate` events a second (if any), each once the reader has received the
/// one before.
fn flood(qemu: &ServerHandle, received: &AtomicUsize, events: usize, rate: Option<u64>) {
    let base = received.load(Ordering::SeqCst);
    let started = Instant::now();
    for n in 0..events {
        if let Some(rate) = rate.filter(|_| n % BURST == 0) {
            let due = started + Duration::from_micros(n as u64 * 1_000_000 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        while qemu.event("FLOOD", Some(json!({"n": n}))) == 0 {
            std::thread::yield_now();
        }
        if n % BURST == BURST - 1 || n == events - 1 {
            let burst = Instant::now();
            while received.load(Ordering::SeqCst) < base + n + 1 {
                assert!(burst.elapsed() < Duration::from_secs(30), "the reader got event {n} late");
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }
}

/// A client that negotiates and then never reads.
fn stalled_client(path: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(path).expect("connect");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("greeting");
    stream.write_all(br#"{"execute":"qmp_capabilities"}"#).expect("negotiate");
    line.clear();
    reader.read_line(&mut line).expect("negotiated");
    assert_eq!(line, "{\"return\": {}}\r\n");
    stream
}

/// A client that negotiates, then reads and discards everything (in a thread of its own) until shut down.
fn discarding_client(path: &Path) -> UnixStream {
    let stream = stalled_client(path);
    let mut reader = stream.try_clone().expect("clone");
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    stream
}
