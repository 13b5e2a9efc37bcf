//! Round trips through the proxy against round trips straight to QEMU, on two monitors of ONE
//! qemu-storage-daemon (a monitor serves one client at a time): the proxy holds monitor 1, the direct client
//! monitor 2. Two comparisons, each interleaved and best of ROUNDS runs:
//! - one client, one command at a time: through the proxy vs direct (target: at least 0.8x);
//! - total rate of 4 clients through the proxy (each one command at a time, then each two: QEMU's queue of 8
//!   full, shared round-robin) vs ONE direct client with 8 commands in flight (target: at least 1.0x).
//!
//! Then the flood rows ([`proxy_flood`]): what a flood of events from a fake QEMU costs (CPU per event, as
//! fast as a reading client takes it and at a steady rate), and round trips through the proxy during a steady
//! flood, with and without a client that stops reading (target: 1.0x, it costs the others nothing), for a
//! client that reads the flood and for one that takes no events.
//!
//! ```sh
//! cargo run --release -p qmp-bench --bin proxy -- [ROUND_TRIPS [ROUNDS [FLOOD_EVENTS]]]   # 4000 5 20000
//! FLOOD_ONLY=1 cargo run --release -p qmp-bench --bin proxy     # the flood rows only (no QEMU needed)
//! ```
//! Everything runs in this process (the proxy too) on a 2-thread tokio runtime. Besides the rates it prints
//! the process's CPU time per command (best of the rounds): direct, it is the client's; through the proxy, the
//! client's and the proxy's, so the difference is what the proxy spends on a command (QEMU, another process,
//! is not counted). CPU time is disturbed less than wall time by other work on the machine.

mod measure;
mod proxy_flood;

use measure::Meter;
use proxy_flood::{Flood, Run};

use qmp_async::proxy::{self, Policy, Profile, Proxy, ProxyOptions, Rule};
use qmp_tests::servers::QemuServer;
use qmp_tokio::{Options, Qmp, Tokio};
use serde_json::Value;

/// `n` round trips of query-version on `qmp`, `window` in flight; seconds and CPU seconds taken.
async fn run(qmp: &Qmp, n: usize, window: usize) -> (f64, f64) {
    run_clients(std::slice::from_ref(qmp), window, n).await
}

/// `n` round trips shared by `clients`, each with `window` in flight; seconds and CPU seconds taken.
async fn run_clients(clients: &[Qmp], window: usize, n: usize) -> (f64, f64) {
    let meter = Meter::start();
    let per_client = n / clients.len() / window;
    let tasks: Vec<_> = clients
        .iter()
        .flat_map(|qmp| std::iter::repeat_n(qmp, window))
        .map(|qmp| {
            let qmp = qmp.clone();
            tokio::spawn(async move {
                for _ in 0..per_client {
                    let _: Value = qmp.execute("query-version", ()).await.expect("query-version");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let cost = meter.stop();
    (cost.secs, cost.cpu)
}

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, rounds, flood_events) = (arg(1, 4000), arg(2, 5), arg(3, 20_000));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    if std::env::var("FLOOD_ONLY").is_ok() {
        runtime.block_on(flood_rows(n.min(2000), rounds, flood_events));
        return;
    }
    let server = QemuServer::storage_daemon_two_monitors().expect("start qemu-storage-daemon");
    runtime.block_on(async {
        let upstream = Qmp::connect_unix(server.socket_path(), Options::default().command_timeout(None))
            .await
            .expect("proxy upstream");
        let policy = Policy::new(vec![Rule::new("all").profile(Profile::Full)]);
        let proxy = Proxy::new(upstream, policy, ProxyOptions::default());
        let path = server.dir().join("proxy.sock");
        tokio::spawn(proxy::serve_unix(Tokio, &proxy, &path).expect("bind"));
        let direct = Qmp::connect_unix(server.second_monitor_path(), Options::default()).await.expect("direct");
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(Qmp::connect_unix(&path, Options::default()).await.expect("proxied client"));
        }
        println!("{n} round trips of query-version per run, best of {rounds} rounds, {}", server.binary().display());
        let mut best = [f64::MAX; 5];
        let mut cpu = [f64::MAX; 5];
        for _ in 0..rounds {
            let runs = [
                run(&direct, n, 1).await,
                run(&clients[0], n, 1).await,
                run(&direct, n, 8).await,
                run_clients(&clients, 1, n).await,
                run_clients(&clients, 2, n).await,
            ];
            for (i, (secs, cpu_secs)) in runs.into_iter().enumerate() {
                best[i] = best[i].min(secs);
                cpu[i] = cpu[i].min(cpu_secs);
            }
        }
        let rate = best.map(|secs| n as f64 / secs);
        let us = cpu.map(|secs| secs / n as f64 * 1e6);
        println!("direct, 1 in flight:               {:>8.0} commands/s  cpu {:>5.1} us/command", rate[0], us[0]);
        println!(
            "proxy, 1 client, 1 in flight:      {:>8.0} commands/s  cpu {:>5.1} us/command  {:.2}x of direct (target 0.8x)",
            rate[1],
            us[1],
            rate[1] / rate[0]
        );
        println!("direct, 8 in flight:               {:>8.0} commands/s  cpu {:>5.1} us/command", rate[2], us[2]);
        println!(
            "proxy, 4 clients, 1 in flight each: {:>7.0} commands/s  cpu {:>5.1} us/command  {:.2}x of direct with 8 in flight (target 1.0x)",
            rate[3],
            us[3],
            rate[3] / rate[2]
        );
        println!(
            "proxy, 4 clients, 2 in flight each: {:>7.0} commands/s  cpu {:>5.1} us/command  {:.2}x of direct with 8 in flight (target 1.0x)",
            rate[4],
            us[4],
            rate[4] / rate[2]
        );
        println!(
            "the proxy's own CPU per command: {:.1} us (1 client), {:.1} us (4 clients, 2 each, against direct with 8 in flight)",
            us[1] - us[0],
            us[4] - us[2]
        );
        flood_rows(n.min(2000), rounds, flood_events).await;
    });
}

/// Clients that read (and discard) the flood, besides the reader, for the CPU one more client costs per event.
const MORE_READERS: usize = 4;

/// The flood rows (see [`proxy_flood`]): best of `rounds` interleaved runs.
async fn flood_rows(quiet_round_trips: usize, rounds: usize, events: usize) {
    let flood = Flood::start().await;
    let mut best = [Run::default(); 10];
    for _ in 0..rounds {
        let runs = [
            flood.alone(events, None, false, 0).await,
            flood.alone(events, Some(proxy_flood::RATE), false, 0).await,
            flood.alone(events, Some(proxy_flood::RATE), true, 0).await,
            flood.alone(events, Some(proxy_flood::RATE), false, MORE_READERS).await,
            flood.quiet(&flood.reader, quiet_round_trips).await,
            flood.flooded(&flood.reader, events, false).await,
            flood.flooded(&flood.reader, events, true).await,
            flood.quiet(&flood.no_events, quiet_round_trips).await,
            flood.flooded(&flood.no_events, events, false).await,
            flood.flooded(&flood.no_events, events, true).await,
        ];
        for (best, run) in best.iter_mut().zip(runs) {
            best.round_trips = best.round_trips.max(run.round_trips);
            best.events = best.events.max(run.events);
            best.cpu_per_event =
                if best.cpu_per_event == 0.0 { run.cpu_per_event } else { best.cpu_per_event.min(run.cpu_per_event) };
        }
    }
    let [fastest, steady, steady_stalled, steady_readers, quiet, flooded, stalled, quiet_none, flooded_none, stalled_none] =
        best;
    println!("\nfloods of {events} events from a fake QEMU (this process) through the proxy to a reading client; best of {rounds}");
    for (what, run) in [("as fast as the reader takes them", fastest), ("at a steady rate", steady)] {
        println!(
            "flood alone, {what:<33} {:>7.0} events/s  cpu {:>4.1} us/event: {:.2} cores (fake QEMU, proxy, reader)",
            run.events,
            run.cpu_per_event,
            run.events * run.cpu_per_event / 1e6
        );
    }
    println!(
        "flood alone, at a steady rate, a stalled client: cpu {:>4.1} us/event: {:.2}x of the flood without it (target 1.0x)",
        steady_stalled.cpu_per_event,
        steady_stalled.cpu_per_event / steady.cpu_per_event
    );
    println!(
        "flood alone, at a steady rate, {MORE_READERS} more clients reading: cpu {:>4.1} us/event: +{:.2} us per event and client",
        steady_readers.cpu_per_event,
        (steady_readers.cpu_per_event - steady.cpu_per_event) / MORE_READERS as f64
    );
    println!("round trips, at a steady {} events/s:", proxy_flood::RATE);
    println!("client taking events, no flood:          {:>8.0} round trips/s", quiet.round_trips);
    println!(
        "  during the flood (it reads it):        {:>8.0} round trips/s  {:.2}x of no flood",
        flooded.round_trips,
        flooded.round_trips / quiet.round_trips
    );
    println!(
        "  during the flood, a stalled client:    {:>8.0} round trips/s  {:.2}x of the flood without it (target 1.0x)",
        stalled.round_trips,
        stalled.round_trips / flooded.round_trips
    );
    println!("client taking no events (events = []):  {:>8.0} round trips/s", quiet_none.round_trips);
    println!(
        "  during the flood:                      {:>8.0} round trips/s  {:.2}x of no flood",
        flooded_none.round_trips,
        flooded_none.round_trips / quiet_none.round_trips
    );
    println!(
        "  during the flood, a stalled client:    {:>8.0} round trips/s  {:.2}x of the flood without it (target 1.0x)",
        stalled_none.round_trips,
        stalled_none.round_trips / flooded_none.round_trips
    );
}
