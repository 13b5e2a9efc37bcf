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
//! Everything runs in this process (the proxy too) on a 2-thread tokio runtime.

use std::time::Instant;

use qmp_async::proxy::{self, Policy, Profile, Proxy, ProxyOptions, Rule};
use qmp_tests::servers::QemuServer;
use qmp_tokio::{Options, Qmp, Tokio};
use serde_json::Value;

/// `n` round trips of query-version on `qmp`, `window` in flight; seconds taken.
async fn run(qmp: &Qmp, n: usize, window: usize) -> f64 {
    let start = Instant::now();
    let per_task = n / window;
    let tasks: Vec<_> = (0..window)
        .map(|_| {
            let qmp = qmp.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let _: Value = qmp.execute("query-version", ()).await.expect("query-version");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    start.elapsed().as_secs_f64()
}

/// `n` round trips shared by `clients`, each one at a time; seconds taken.
async fn run_clients(clients: &[Qmp], n: usize) -> f64 {
    let start = Instant::now();
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
    start.elapsed().as_secs_f64()
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
        for _ in 0..rounds {
            best[0] = best[0].min(run(&direct, n, 1).await);
            best[1] = best[1].min(run(&clients[0], n, 1).await);
            best[2] = best[2].min(run(&direct, n, 8).await);
            best[3] = best[3].min(run_clients(&clients, n).await);
        }
        let rate = best.map(|secs| n as f64 / secs);
        println!("direct, 1 in flight:               {:>8.0} commands/s", rate[0]);
        println!(
            "proxy, 1 client, 1 in flight:      {:>8.0} commands/s  {:.2}x of direct (target 0.8x)",
            rate[1],
            rate[1] / rate[0]
        );
        println!("direct, 8 in flight:               {:>8.0} commands/s", rate[2]);
        println!(
            "proxy, 4 clients, 1 in flight each: {:>7.0} commands/s  {:.2}x of direct with 8 in flight (target 1.0x)",
            rate[3],
            rate[3] / rate[2]
        );
    });
}
