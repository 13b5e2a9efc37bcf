//! Arbitrary server bytes into a QMP client and a guest-agent client: whole, one byte at a time, and in chunks
//! chosen by the input (draining events after each chunk). Never a panic; the same events in all three
//! feedings (fewer dropped reports at most, when drained more often); every buffer within its limit: no
//! message over the size limit, the event queue within `max_queued_events` plus the events that are never
//! dropped; only whole commands written.
//!
//! Input: `[flags, chunk_seed, server bytes...]`. `flags` picks the limits and how many commands are issued
//! before any input (see `Setup::new`), so replies can be routed, and whether the QMP client matches in-band
//! replies by order (`Config::in_band_ids(false)`: then replies without an id are routed too).
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use qmp_fuzz::{chunks, event_digest, event_key, is_report, message_len, parse_commands};
use qmp_proto::{Client, ClientEvent, Config, ConnectionError, ExecuteOptions, Mode};

struct Setup {
    config: Config,
    /// Commands issued before any input (ids 1..=n; in QMP mode `qmp_capabilities` then takes n + 1).
    commands: usize,
    /// Guest-agent mode: start with `guest_sync(4242)`. (Its bit, in QMP mode: `in_band_ids(false)`.)
    sync: bool,
}

impl Setup {
    fn new(mode: Mode, flags: u8) -> Self {
        let base = match mode {
            Mode::Qmp => Config::qmp(),
            Mode::GuestAgent => Config::guest_agent(),
        };
        let config = base
            .max_message_size([10 << 20, 512, 128, 32][usize::from(flags & 3)])
            .max_queued_events(if flags & 4 == 0 { 1024 } else { 3 })
            .enable_oob(flags & 8 == 0)
            .max_in_flight(if flags & 0x80 == 0 { 8 } else { 1 })
            // The same bit as `sync`: QMP mode matches in-band replies by order (ignored by the guest agent).
            .in_band_ids(flags & 0x40 == 0);
        Setup { config, commands: usize::from((flags >> 4) & 3), sync: flags & 0x40 != 0 }
    }
}

#[derive(Debug, PartialEq)]
struct Outcome {
    /// Every event (whether it is a server report, and a digest of all of it), drained at the points the
    /// feeding chose. QMP_FUZZ_TRACE=1 prints them in full.
    events: Vec<(bool, u64)>,
    /// Server reports (events and violations), kept or dropped.
    reports: u64,
    /// Reports dropped.
    dropped: u64,
    /// Everything the client wrote before the EOF.
    transmit: Vec<u8>,
}

/// How the input is cut into `handle_input` calls.
enum Feeding<'a> {
    Whole,
    Bytes,
    Chunks(&'a [std::ops::Range<usize>]),
}

fn run(setup: &Setup, input: &[u8], feeding: &Feeding, drain_each: bool) -> Outcome {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let trace = *TRACE.get_or_init(|| std::env::var_os("QMP_FUZZ_TRACE").is_some());
    if trace {
        eprintln!("-- {:?}, drained {}", setup.config.mode(), if drain_each { "each time" } else { "at the end" });
    }
    let limit = setup.config.get_max_message_size();
    let mut client = Client::new(setup.config.clone(), Instant::now());
    let mut requests = 0;
    if setup.sync && setup.config.mode() == Mode::GuestAgent {
        client.guest_sync(4242, ExecuteOptions::new()).expect("guest_sync on a fresh client");
        requests += 1;
    }
    for _ in 0..setup.commands {
        client.execute("query-status", None::<&()>, ExecuteOptions::new()).expect("execute on a fresh client");
        requests += 1;
    }
    let mut out = Outcome { events: Vec::new(), reports: 0, dropped: 0, transmit: Vec::new() };
    // Everything the client can hold between drains: the server reports it may keep, plus one entry per other
    // event (greeting, ready, a reply per request, closed) and one drop counter before and after each of them.
    let bound = setup.config.get_max_queued_events() + 2 * (requests + 4) + 1;
    let mut closed = false;
    let mut drain = |client: &mut Client, out: &mut Outcome| {
        let mut held = 0;
        while let Some(ev) = client.poll_event() {
            held += 1;
            assert!(!closed, "event after Closed: {ev:?}");
            if let Some(len) = message_len(&ev) {
                assert!(len <= limit, "{len}-byte message passed a {limit}-byte limit: {ev:?}");
            }
            match &ev {
                ClientEvent::ProtocolViolation(qmp_proto::ProtocolViolation::Oversized { len, .. }) => {
                    assert!(*len > limit as u64, "oversized at {len} <= {limit}");
                    out.reports += 1;
                }
                ClientEvent::EventsDropped { count } => {
                    out.reports += count;
                    out.dropped += count;
                }
                // It counts the bytes of the unfinished message received, kept or not (the framer never holds
                // more than the limit: framer_vs_serde checks that).
                ClientEvent::Closed(ConnectionError::EofMidMessage { buffered }) => {
                    assert!(*buffered <= input.len() as u64, "{buffered} bytes of a message in {} bytes", input.len())
                }
                ev if is_report(ev) => out.reports += 1,
                _ => {}
            }
            closed |= matches!(ev, ClientEvent::Closed(_));
            if trace {
                eprintln!("{}", event_key(&ev));
            }
            out.events.push(event_digest(&ev));
        }
        assert!(held <= bound, "{held} events held at once (bound {bound})");
    };
    let mut feed = |bytes: &[u8]| {
        client.handle_input(bytes);
        if drain_each {
            drain(&mut client, &mut out);
        }
    };
    match feeding {
        Feeding::Whole => feed(input),
        Feeding::Bytes => input.chunks(1).for_each(feed),
        Feeding::Chunks(cuts) => cuts.iter().for_each(|cut| feed(&input[cut.clone()])),
    }
    client.poll_transmit(&mut out.transmit);
    // The client only ever writes whole commands: ours, and qmp_capabilities.
    let written = parse_commands(&out.transmit, setup.config.mode() == Mode::GuestAgent);
    assert!(written.len() <= requests + 1, "{} commands written for {requests} requests", written.len());
    client.handle_eof();
    drain(&mut client, &mut out);
    assert!(closed, "EOF must close");
    out
}

fuzz_target!(|data: &[u8]| {
    let [flags, seed, ref input @ ..] = *data else { return };
    let cuts = chunks(seed, input.len());
    for mode in [Mode::Qmp, Mode::GuestAgent] {
        let setup = Setup::new(mode, flags);
        let reference = run(&setup, input, &Feeding::Whole, false);
        assert_eq!(reference, run(&setup, input, &Feeding::Bytes, false), "byte at a time differs from whole");
        // In chunks, draining after every chunk as the driving contract asks: that can only drop fewer
        // reports. The same replies in the same order; the same reports when none were dropped.
        let chunked = run(&setup, input, &Feeding::Chunks(&cuts), true);
        assert_eq!(reference.reports, chunked.reports, "reports counted differently");
        assert_eq!(reference.transmit, chunked.transmit, "chunks wrote other bytes");
        assert!(chunked.dropped <= reference.dropped, "draining more often dropped more");
        if chunked.dropped == reference.dropped {
            assert_eq!(reference.events, chunked.events, "chunks differ from whole");
        } else {
            // Replies, greeting, ready, closed: never dropped.
            let routed = |o: &Outcome| -> Vec<u64> { o.events.iter().filter(|(r, _)| !r).map(|(_, d)| *d).collect() };
            assert_eq!(routed(&reference), routed(&chunked), "chunks routed differently");
        }
    }
});
