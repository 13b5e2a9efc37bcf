//! Round trips through the proxy against round trips straight to QEMU, on two monitors of ONE
//! qemu-storage-daemon (a monitor serves one client at a time): the proxy holds monitor 1, the direct client
//! monitor 2. Two comparisons, each interleaved and best of ROUNDS runs:
//! - one client, one command at a time: through the proxy vs direct (target: at least 0.8x);
//! - total rate of 4 clients through the proxy (each one command at a time, QEMU's queue shared round-robin)
//!   vs ONE direct client with 8 commands in flight (target: at least 1.0x).
//!
//! ```sh
//! cargo run --release -p qmp-bench --bin proxy -- [ROUND_TRIPS [ROUNDS]]   # defaults: 4000 5
//! ```
//! Everything runs in this process (the proxy too) on a 2-thread tokio runtime. Besides the rates it prints
//! the process's CPU time per command (best of the rounds): direct, it is the client's; through the proxy, the
//! client's and the proxy's, so the difference is what the proxy spends on a command (QEMU, another process,
//! is not counted). CPU time is disturbed less than wall time by other work on the machine.

mod measure;

use measure::Meter;

use qmp_async::proxy::{self, Policy, Profile, Proxy, ProxyOptions, Rule};
use qmp_tests::servers::QemuServer;
use qmp_tokio::{Options, Qmp, Tokio};
use serde_json::Value;

/// `n` round trips of query-version on `qmp`, `window` in flight; seconds and CPU seconds taken.
async fn run(qmp: &Qmp, n: usize, window: usize) -> (f64, f64) {
    run_clients(&vec![qmp.clone(); window], n).await
}

/// `n` round trips shared by `clients`, each one at a time; seconds and CPU seconds taken.
async fn run_clients(clients: &[Qmp], n: usize) -> (f64, f64) {
    let meter = Meter::start();
    let per_client = n / clients.len();
    let tasks: Vec<_> = clients
        .iter()
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
    let (n, rounds) = (arg(1, 4000), arg(2, 5));
    let server = QemuServer::storage_daemon_two_monitors().expect("start qemu-storage-daemon");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
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
        let mut best = [f64::MAX; 4];
        let mut cpu = [f64::MAX; 4];
        for _ in 0..rounds {
            let runs = [
                run(&direct, n, 1).await,
                run(&clients[0], n, 1).await,
                run(&direct, n, 8).await,
                run_clients(&clients, n).await,
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
            "the proxy's own CPU per command: {:.1} us (1 client), {:.1} us (4 clients, against direct with 8 in flight)",
            us[1] - us[0],
            us[3] - us[2]
        );
    });
}
