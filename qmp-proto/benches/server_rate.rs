//! The server frames and dispatches at no less than the client's rate: the same volume of bytes, commands into a
//! [`Server`] versus replies into a [`Client`], timed in the same run, printed as a ratio.
//!
//! ```text
//! cargo bench -p qmp-proto --bench server_rate             # about 20 s
//! cargo bench -p qmp-proto --bench server_rate -- --quick  # fewer samples
//! ```
//!
//! A plain `harness = false` binary. Both sides are driven the way an adapter drives them, in 8 KiB reads (what
//! `qmp_async::serve` reads at once), draining events and output after every read:
//!
//! - `server`: a negotiated QMP server fed commands as our client writes them (compact, integer ids); each
//!   command handed over (its arguments JSON text, as [`Event::Command`] gives them) has its name read and is
//!   answered at once with `{}` (in-band commands are handed over one at a time, so the next is read
//!   only once this one is answered), and its reply taken from `poll_transmit`. Answering with `{}` keeps the
//!   caller's own work (building a bigger return value) out of the server's figure;
//! - `client`: a negotiated QMP client with 1 000 commands executed (untimed, just before) fed the replies
//!   QEMU writes to them, each routed to its command and delivered as a reply event (its payload raw, as the
//!   client delivers it);
//! - `client+w`: the same, but the client's writing of the commands is timed too (the workload's commands,
//!   executed with their arguments as JSON text, taken from `poll_transmit`), as the server's writing of the
//!   replies is: each side then reads the other's messages and writes its own. The first ratio leaves the
//!   client's writing out and so asks more of the server; both are printed.
//!
//! Two workloads, each side's input cut to the same number of bytes (1 MiB):
//!
//! - `query-status`: `{"execute":"query-status","id":N}` against `{"return": {}, "id": N}\r\n`: the smallest
//!   messages, where the per-message costs weigh most;
//! - `session mix`: the commands of a block-job session recorded from qemu-storage-daemon 10
//!   (`qsd-events-block-jobs.json` in the shared corpus: `blockdev-add` and `blockdev-backup` with arguments,
//!   `query-block-jobs`, `job-complete`, plus `query-status`) against the replies QEMU sent to them (a
//!   `query-block-jobs` list, `query-status`'s object, `{}`), in turn.
//!
//! Time is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not the wall clock, so other work on the machine
//! slows neither side as much; samples are taken in turns (server, client, server, ...) and each side's median
//! is reported, with the spread (fastest and slowest sample). Then the server fed one byte per call, at 1 MiB
//! and 4 MiB of `query-status` commands: the same cost per byte at both sizes is O(n).
//!
//! To look at one part under `perf record`: `QMP_BENCH_ONLY=TEXT` runs only the workloads whose name contains
//! TEXT (`QMP_BENCH_ONLY="session mix"`; `one byte` for the byte-at-a-time part), and `QMP_BENCH_SIDE=server`
//! (or `client`) only that side of them (no ratio is printed then).
//!
//! For counts that do not depend on the machine's load, run it under cachegrind with `QMP_BENCH_NO_CLOCK=1`:
//! the clock (read through the vDSO, which valgrind does not map) is not read then, and every time printed is
//! zero; the instruction counts are the measure (`QMP_BENCH_ONLY="session mix" QMP_BENCH_SIDE=server
//! QMP_BENCH_NO_CLOCK=1 valgrind --tool=cachegrind --cache-sim=no --branch-sim=yes BENCH --quick`: the session
//! mix read six times).

use std::hint::black_box;
use std::time::{Duration, Instant};

use qmp_proto::server::{Event, Server, ServerConfig};
use qmp_proto::{Client, ClientEvent, Config, ExecuteOptions, RawJson};
use rustix::time::{clock_gettime, ClockId};

/// Bytes of input per measured run, for each side.
const VOLUME: usize = 1 << 20;
/// Read size: what `qmp_async::serve` reads at once.
const READ: usize = 8 * 1024;
/// Commands each client has pending (replies are routed among them).
const ROUND: usize = 1000;
const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n{\"return\": {}, \"id\": 1}\r\n";

/// The thread's CPU time so far (zero with `QMP_BENCH_NO_CLOCK`: see the module docs).
fn cpu_time() -> Duration {
    static NO_CLOCK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *NO_CLOCK.get_or_init(|| std::env::var_os("QMP_BENCH_NO_CLOCK").is_some()) {
        return Duration::ZERO;
    }
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// One kind of traffic: the commands our client writes in turn, and the replies QEMU sends to them.
struct Workload {
    name: &'static str,
    /// Commands with `{id}` where the id goes.
    commands: &'static [&'static str],
    /// The replies, in the same order, with `{id}` where the id goes.
    replies: &'static [&'static str],
}

const QUERY_STATUS: Workload = Workload {
    name: "query-status",
    commands: &[r#"{"execute":"query-status","id":{id}}"#],
    replies: &["{\"return\": {}, \"id\": {id}}\r\n"],
};

/// Commands and replies of `qsd-events-block-jobs.json` (qemu-storage-daemon 10.0.2), and `query-status`'s
/// reply as QEMU writes it.
const SESSION_MIX: Workload = Workload {
    name: "session mix",
    commands: &[
        r#"{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"src","size":67108864},"id":{id}}"#,
        r#"{"execute":"blockdev-backup","arguments":{"job-id":"bk","device":"src","target":"dst","sync":"full"},"id":{id}}"#,
        r#"{"execute":"query-block-jobs","id":{id}}"#,
        r#"{"execute":"job-complete","arguments":{"id":"mr"},"id":{id}}"#,
        r#"{"execute":"query-status","id":{id}}"#,
    ],
    replies: &[
        "{\"return\": {}, \"id\": {id}}\r\n",
        "{\"return\": {}, \"id\": {id}}\r\n",
        "{\"return\": [{\"auto-finalize\": true, \"io-status\": \"ok\", \"device\": \"mr\", \"auto-dismiss\": true, \"busy\": false, \"len\": 67108864, \"offset\": 67108864, \"status\": \"ready\", \"paused\": false, \"speed\": 0, \"ready\": true, \"type\": \"mirror\", \"actively-synced\": false}], \"id\": {id}}\r\n",
        "{\"return\": {}, \"id\": {id}}\r\n",
        "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}, \"id\": {id}}\r\n",
    ],
};

/// The workload's commands in turn, at least `volume` bytes (the byte counts are printed).
fn commands(workload: &Workload, volume: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(volume + 256);
    for (id, command) in (2u64..).zip(workload.commands.iter().cycle()) {
        if out.len() >= volume {
            break;
        }
        out.extend_from_slice(command.replace("{id}", &id.to_string()).as_bytes());
    }
    out
}

/// The workload's replies in turn, to the commands of [`ready_client`] (whose ids are `ids`), in rounds of at
/// most [`ROUND`] (one client per round), about `volume` bytes in all.
fn replies(workload: &Workload, volume: usize, ids: &[u64]) -> Vec<(Vec<u8>, usize)> {
    let mut rounds = Vec::new();
    let mut total = 0;
    let mut reply = workload.replies.iter().cycle();
    while total < volume {
        let (mut round, mut count) = (Vec::new(), 0);
        for id in ids {
            if total + round.len() >= volume {
                break;
            }
            let text = reply.next().expect("a cycle never ends");
            round.extend_from_slice(text.replace("{id}", &id.to_string()).as_bytes());
            count += 1;
        }
        total += round.len();
        rounds.push((round, count));
    }
    rounds
}

fn negotiated_server() -> Server {
    let mut server = Server::new(ServerConfig::qmp());
    server.handle_input(br#"{"execute":"qmp_capabilities"}"#);
    while server.poll_event().is_some() {}
    let mut out = Vec::new();
    server.poll_transmit(&mut out);
    server
}

/// Feeds `input` to a negotiated server in pieces of `read` bytes, answering every command as it is handed over.
/// Returns the CPU time and the number of commands answered.
fn drive_server(input: &[u8], read: usize) -> (Duration, usize) {
    let mut server = negotiated_server();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut answered = 0;
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let start = cpu_time();
    for piece in input.chunks(read) {
        server.handle_input(piece);
        while let Some(event) = server.poll_event() {
            if let Event::Command(cmd) = black_box(event) {
                // What a handler reads first, to know what to do.
                black_box(cmd.name());
                server.reply(cmd.token, Ok(empty.clone())).expect("reply");
                answered += 1;
            }
        }
        server.poll_transmit(&mut out);
        black_box(&out);
        out.clear();
    }
    (cpu_time() - start, answered)
}

/// A negotiated client with [`ROUND`] commands executed, and the ids it wrote.
fn ready_client() -> (Client, Vec<u64>) {
    let config = Config::qmp().max_pending(ROUND + 16).max_in_flight(ROUND);
    let mut client = Client::new(config, Instant::now());
    client.handle_input(GREETING);
    while client.poll_event().is_some() {}
    for _ in 0..ROUND {
        client.execute("query-status", None::<&()>, ExecuteOptions::new()).expect("execute");
    }
    let mut out = Vec::new();
    client.poll_transmit(&mut out);
    let ids = serde_json::Deserializer::from_slice(&out)
        .into_iter::<serde_json::Value>()
        .map(|command| command.expect("a command"))
        .filter(|command| command["execute"] == "query-status")
        .map(|command| command["id"].as_u64().expect("an id"))
        .collect();
    (client, ids)
}

/// A workload's commands as a client executes them: the name, and the arguments as JSON text.
fn parsed_commands(workload: &Workload) -> Vec<(String, Option<RawJson>)> {
    let parse = |template: &&str| {
        let command: serde_json::Value = serde_json::from_str(&template.replace("{id}", "0")).expect("a command");
        let name = command["execute"].as_str().expect("a name").to_owned();
        let arguments = command.get("arguments").map(|a| RawJson::from_json(&a.to_string()).expect("an object"));
        (name, arguments)
    };
    workload.commands.iter().map(parse).collect()
}

/// A negotiated client, no command executed.
fn negotiated_client() -> Client {
    let config = Config::qmp().max_pending(ROUND + 16).max_in_flight(ROUND);
    let mut client = Client::new(config, Instant::now());
    client.handle_input(GREETING);
    while client.poll_event().is_some() {}
    client
}

/// Feeds each round of replies to a fresh client (made untimed) in reads of [`READ`] bytes. With `writing`,
/// the client executes the commands they answer first (the `commands` in turn, one per reply; their ids are
/// those [`ready_client`] gives), timed too; without, [`ready_client`] executed them untimed. Returns the CPU
/// time and the number of replies delivered.
fn drive_clients(rounds: &[(Vec<u8>, usize)], writing: Option<&[(String, Option<RawJson>)]>) -> (Duration, usize) {
    let mut total = Duration::ZERO;
    let mut delivered = 0;
    let mut out = Vec::new();
    for (round, count) in rounds {
        let mut client = if writing.is_some() { negotiated_client() } else { ready_client().0 };
        let start = cpu_time();
        if let Some(commands) = writing {
            for (name, arguments) in commands.iter().cycle().take(*count) {
                client.execute_raw(name, arguments.as_ref(), ExecuteOptions::new()).expect("execute");
            }
            client.poll_transmit(&mut out);
            black_box(&out);
            out.clear();
        }
        for piece in round.chunks(READ) {
            client.handle_input(piece);
            while let Some(event) = client.poll_event() {
                match black_box(event) {
                    ClientEvent::Reply { result: Ok(_), .. } => delivered += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            client.poll_transmit(&mut out);
            out.clear();
        }
        total += cpu_time() - start;
    }
    (total, delivered)
}

/// Median, fastest and slowest of the samples.
fn summary(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[0], samples[samples.len() - 1])
}

fn mb_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Which parts to run: `QMP_BENCH_ONLY` and `QMP_BENCH_SIDE` (see the module docs).
struct Only {
    text: Option<String>,
    side: Option<String>,
}

impl Only {
    fn from_env() -> Self {
        Only { text: std::env::var("QMP_BENCH_ONLY").ok(), side: std::env::var("QMP_BENCH_SIDE").ok() }
    }

    fn runs(&self, part: &str) -> bool {
        self.text.as_deref().is_none_or(|text| part.contains(text))
    }

    fn side(&self, side: &str) -> bool {
        self.side.as_deref().is_none_or(|s| s == side)
    }
}

/// Times one workload on both sides (or the one `only` names); returns the server's median time per byte of
/// 8 KiB reads, in ns (`None` when the server side was not run).
fn compare(workload: &Workload, samples: usize, only: &Only) -> Option<f64> {
    let cmds = commands(workload, VOLUME);
    let rounds = replies(workload, cmds.len(), &ready_client().1);
    let reply_bytes: usize = rounds.iter().map(|(round, _)| round.len()).sum();
    let written = parsed_commands(workload);
    let (run_server, run_client) = (only.side("server"), only.side("client"));
    // Warm-up, and the counts.
    let n_commands = if run_server { drive_server(&cmds, READ).1 } else { 0 };
    let n_replies = if run_client { drive_clients(&rounds, None).1 } else { 0 };
    if run_client {
        assert_eq!(drive_clients(&rounds, Some(&written)).1, n_replies, "every reply delivered");
    }
    let (mut server_times, mut client_times, mut writing_times) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..samples {
        if run_server {
            server_times.push(drive_server(&cmds, READ).0);
        }
        if run_client {
            client_times.push(drive_clients(&rounds, None).0);
            writing_times.push(drive_clients(&rounds, Some(&written)).0);
        }
    }
    println!("{}: {samples} samples each, in turns, CPU time, medians (fastest .. slowest):", workload.name);
    let server = run_server.then(|| {
        let (server, s_min, s_max) = summary(server_times);
        println!(
            "  server: {:>8} B of commands ({n_commands} commands) in {:>8.2?} ({s_min:.2?} .. {s_max:.2?}): {:>7.1} MB/s, {:>5.2} M commands/s",
            cmds.len(),
            server,
            mb_s(cmds.len(), server),
            n_commands as f64 / server.as_secs_f64() / 1e6
        );
        server
    });
    let client = run_client.then(|| {
        let (client, c_min, c_max) = summary(client_times);
        println!(
            "  client: {:>8} B of replies  ({n_replies} replies)  in {:>8.2?} ({c_min:.2?} .. {c_max:.2?}): {:>7.1} MB/s, {:>5.2} M replies/s",
            reply_bytes,
            client,
            mb_s(reply_bytes, client),
            n_replies as f64 / client.as_secs_f64() / 1e6
        );
        let (writing, w_min, w_max) = summary(writing_times);
        println!(
            "  client+w: {:>6} B of replies  ({n_replies} replies)  in {:>8.2?} ({w_min:.2?} .. {w_max:.2?}): {:>7.1} MB/s, {:>5.2} M replies/s (commands written too)",
            reply_bytes,
            writing,
            mb_s(reply_bytes, writing),
            n_replies as f64 / writing.as_secs_f64() / 1e6
        );
        (client, writing)
    });
    if let (Some(server), Some((client, writing))) = (server, client) {
        let verdict = |ratio: f64| if ratio >= 1.0 { "(met: >= 1)" } else { "(NOT met: < 1)" };
        let ratio = mb_s(cmds.len(), server) / mb_s(reply_bytes, client);
        println!("  server / client rate (bytes per CPU second): {ratio:.2}x {}", verdict(ratio));
        let ratio = mb_s(cmds.len(), server) / mb_s(reply_bytes, writing);
        println!("  server / client+w rate (each side reading and writing): {ratio:.2}x {}", verdict(ratio));
    }
    server.map(|server| server.as_secs_f64() * 1e9 / cmds.len() as f64)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let samples = if quick { 5 } else { 21 };
    let only = Only::from_env();
    println!("server_rate: load average {}", load());
    // The server's cost per byte of `query-status` in 8 KiB reads, to compare one byte per call with.
    let whole_cost = only.runs(QUERY_STATUS.name).then(|| compare(&QUERY_STATUS, samples, &only)).flatten();
    if only.runs(SESSION_MIX.name) {
        compare(&SESSION_MIX, samples, &only);
    }

    // O(n) one byte at a time: cost per byte at 1 MiB and at 4 MiB of commands.
    if only.runs("one byte") && only.side("server") {
        let (small, big) = (commands(&QUERY_STATUS, VOLUME), commands(&QUERY_STATUS, 4 * VOLUME));
        let per_byte = |input: &[u8]| {
            let times: Vec<Duration> = (0..if quick { 3 } else { 5 }).map(|_| drive_server(input, 1).0).collect();
            summary(times).0.as_secs_f64() * 1e9 / input.len() as f64
        };
        let (small_cost, big_cost) = (per_byte(&small), per_byte(&big));
        let against_reads =
            whole_cost.map(|whole| format!(", {:.2}x the cost of 8 KiB reads", small_cost / whole)).unwrap_or_default();
        println!(
            "server fed one byte per call: {small_cost:.1} ns/byte at 1 MiB, {big_cost:.1} ns/byte at 4 MiB ({:.2}x; O(n) is 1x){against_reads}",
            big_cost / small_cost,
        );
    }
    println!("server_rate: load average {}", load());
}
