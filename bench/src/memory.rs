//! Resident memory per idle negotiated QMP connection, for every adapter, with a raw minimal connection as the
//! floor in the same run; then the growth after one ~9 MiB reply on one of the connections (buffers must grow on
//! demand and shrink back, not pin 9 MiB for the connection's life).
//!
//! ```sh
//! cargo run --release -p qmp-bench --bin memory -- --connections 1000   # the default
//! ```
//!
//! The binary re-executes itself: once as a fake QMP server on a unix socket (`--serve`, its memory not counted),
//! then once per case (`--case`), so no case inherits another's heap or threads. A case opens one warm-up
//! connection (lazy runtime threads and globals), reads RSS (`/proc/self/statm`), opens N connections and
//! negotiates each, runs one `query-version` on each, sleeps, reads RSS again: (idle - before) / N is the
//! figure per connection. Then `x-big` (a ~9 MiB reply) on one connection, the reply dropped, a sleep, and RSS
//! once more: its growth over the idle figure is what the big reply left behind. It needs N + 64 open files
//! (`ulimit -n 4096` for 1000 connections where the limit is lower).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

const GREETING: &str =
    r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, "capabilities": ["oob"]}}"#;
const VERSION: &str = r#"{"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "v10.0.2"}"#;
/// The size of the `x-big` reply's string.
const BIG: usize = 9 << 20;
/// How long a case waits for the connections and the allocator to settle before reading RSS.
const SETTLE: Duration = Duration::from_millis(200);

/// The cases: command-line name and table name, the raw floor first.
const CASES: [(&str, &str); 6] = [
    ("raw", "raw UnixStream (floor)"),
    ("blocking", "qmp-blocking"),
    ("tokio-current", "qmp-tokio (current_thread)"),
    ("tokio-multi", "qmp-tokio (multi_thread, 2)"),
    ("smol", "qmp-smol (smol)"),
    ("async-std", "qmp-smol (async-std)"),
];

/// RSS in bytes at three points of a case.
#[derive(Debug, Clone, Copy)]
struct Measured {
    before: u64,
    idle: u64,
    big: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let n: usize = flag("--connections").map_or(1000, |v| v.parse().expect("--connections N"));
    if let Some(path) = flag("--serve") {
        serve(Path::new(&path));
    } else if let Some(case) = flag("--case") {
        let path = PathBuf::from(flag("--socket").expect("--socket PATH"));
        let m = run_case(&case, &path, n);
        println!("RSS {} {} {}", m.before, m.idle, m.big);
    } else {
        parent(n);
    }
}

/// Starts the server, runs every case in a child of its own and prints the table.
fn parent(n: usize) {
    check_open_files(n + 64);
    let exe = std::env::current_exe().expect("current_exe");
    let path = std::env::temp_dir().join(format!("qmp-bench-memory-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut server =
        Command::new(&exe).arg("--serve").arg(&path).stdout(Stdio::piped()).spawn().expect("start the fake server");
    let mut ready = String::new();
    BufReader::new(server.stdout.take().expect("server stdout")).read_line(&mut ready).expect("server ready");
    assert_eq!(ready.trim(), "ready", "fake server did not start");

    let page = page_size();
    println!("{n} idle connections per case, page size {page} B, x-big reply {} MiB", BIG >> 20);
    let mut rows = Vec::new();
    for (case, name) in CASES {
        let out = Command::new(&exe)
            .args(["--case", case, "--connections", &n.to_string(), "--socket"])
            .arg(&path)
            .stderr(Stdio::inherit())
            .output()
            .expect("run a case");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().find_map(|l| l.strip_prefix("RSS ")).unwrap_or_else(|| panic!("case {case} failed"));
        let v: Vec<u64> = line.split(' ').map(|x| x.parse().expect("RSS figure")).collect();
        let m = Measured { before: v[0], idle: v[1], big: v[2] };
        eprintln!("{name}: RSS {} -> {} -> {} KiB", m.before >> 10, m.idle >> 10, m.big >> 10);
        rows.push((name, m));
    }
    server.kill().ok();
    server.wait().ok();
    let _ = std::fs::remove_file(&path);

    let kib = |bytes: i64| bytes as f64 / 1024.0;
    let per_conn = |m: &Measured| kib(m.idle as i64 - m.before as i64) / n as f64;
    let floor = per_conn(&rows[0].1);
    println!("\n| adapter | idle KiB/conn | raw floor KiB/conn | after 9 MiB reply: extra KiB | RSS before / idle / after, MiB |");
    println!("|---|---|---|---|---|");
    for (name, m) in &rows {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "| {name} | {:.2} | {floor:.2} | {:.0} | {:.1} / {:.1} / {:.1} |",
            per_conn(m),
            kib(m.big as i64 - m.idle as i64),
            mib(m.before),
            mib(m.idle),
            mib(m.big)
        );
    }
}

/// One case, in this process: RSS before, with `n` idle connections, and after one big reply.
fn run_case(case: &str, path: &Path, n: usize) -> Measured {
    match case {
        "raw" => raw_case(path, n),
        "blocking" => blocking_case(path, n),
        "tokio-current" => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async_case::<qmp_tokio::Tokio>(path, n))
        }
        "tokio-multi" => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
            rt.block_on(async_case::<qmp_tokio::Tokio>(path, n))
        }
        "smol" => smol::block_on(async_case::<qmp_smol::Smol>(path, n)),
        "async-std" => async_std::task::block_on(async_case::<qmp_smol::AsyncStd>(path, n)),
        other => panic!("unknown case {other}"),
    }
}

/// The floor: a std socket that reads the greeting, negotiates and runs `query-version` by hand, and keeps
/// nothing but the socket.
fn raw_case(path: &Path, n: usize) -> Measured {
    fn connect(path: &Path) -> UnixStream {
        let mut s = UnixStream::connect(path).expect("connect");
        read_line(&mut s).expect("greeting");
        s.write_all(b"{\"execute\": \"qmp_capabilities\", \"id\": 0}\n").expect("send");
        read_line(&mut s).expect("capabilities reply");
        s.write_all(b"{\"execute\": \"query-version\", \"id\": 1}\n").expect("send");
        read_line(&mut s).expect("query-version reply");
        s
    }
    let _warm = connect(path);
    let before = rss();
    let mut conns: Vec<UnixStream> = (0..n).map(|_| connect(path)).collect();
    std::thread::sleep(SETTLE);
    let idle = rss();
    conns[0].write_all(b"{\"execute\": \"x-big\", \"id\": 2}\n").expect("send");
    let reply = read_line(&mut conns[0]).expect("x-big reply");
    assert!(reply.len() > BIG, "x-big reply too short");
    drop(reply);
    std::thread::sleep(SETTLE);
    Measured { before, idle, big: rss() }
}

/// One line from the raw socket, read with a stack buffer; the protocol is strictly request-reply here, so
/// nothing past the line arrives.
fn read_line(s: &mut UnixStream) -> io::Result<Vec<u8>> {
    let (mut line, mut buf) = (Vec::new(), [0u8; 4096]);
    while !line.ends_with(b"\n") {
        let got = s.read(&mut buf)?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        line.extend_from_slice(&buf[..got]);
    }
    Ok(line)
}

fn blocking_case(path: &Path, n: usize) -> Measured {
    let connect = || {
        let mut c = qmp_blocking::Client::connect_unix(path, Default::default()).expect("connect");
        c.execute_raw("query-version", None).expect("query-version");
        c
    };
    let _warm = connect();
    let before = rss();
    let mut conns: Vec<_> = (0..n).map(|_| connect()).collect();
    std::thread::sleep(SETTLE);
    let idle = rss();
    drop(conns[0].execute_raw("x-big", None).expect("x-big"));
    std::thread::sleep(SETTLE);
    Measured { before, idle, big: rss() }
}

/// Every async adapter, on whichever runtime `R` is (run inside that runtime's `block_on`).
async fn async_case<R: qmp_async::Net>(path: &Path, n: usize) -> Measured {
    let connect = || async {
        let qmp = qmp_async::Qmp::<R>::connect_unix(path, Default::default()).await.expect("connect");
        qmp.execute_raw("query-version", None).await.expect("query-version");
        qmp
    };
    let _warm = connect().await;
    let before = rss();
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(connect().await);
    }
    settle::<R>().await;
    let idle = rss();
    drop(conns[0].execute_raw("x-big", None).await.expect("x-big"));
    settle::<R>().await;
    Measured { before, idle, big: rss() }
}

/// Sleeps [`SETTLE`] on `R`'s own timer, so its executor keeps running.
async fn settle<R: qmp_async::Net>() {
    use qmp_async::Timer;
    let runtime = R::default();
    let mut timer = std::pin::pin!(runtime.timer(runtime.now() + SETTLE));
    std::future::poll_fn(|cx| timer.as_mut().poll_fire(cx)).await
}

/// The fake server: greets, then answers each command by its JSON value; one thread per client.
fn serve(path: &Path) {
    let listener = UnixListener::bind(path).expect("bind the fake server");
    let big: Arc<str> = format!("\"{}\"", "x".repeat(BIG)).into();
    println!("ready");
    io::stdout().flush().expect("stdout");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let big = big.clone();
        std::thread::Builder::new()
            .stack_size(128 << 10)
            .spawn(move || {
                let _ = serve_client(stream, &big);
            })
            .expect("server thread");
    }
}

fn serve_client(stream: UnixStream, big: &str) -> io::Result<()> {
    let mut out = stream.try_clone()?;
    out.write_all(format!("{GREETING}\r\n").as_bytes())?;
    for command in serde_json::Deserializer::from_reader(BufReader::new(stream)).into_iter::<Value>() {
        let command = command.map_err(io::Error::other)?;
        let id = command.get("id").cloned().unwrap_or(Value::Null);
        let name = command.get("execute").or_else(|| command.get("exec-oob")).and_then(Value::as_str);
        let reply = match name.unwrap_or("") {
            "qmp_capabilities" => format!("{{\"return\": {{}}, \"id\": {id}}}\r\n"),
            "query-version" => format!("{{\"return\": {VERSION}, \"id\": {id}}}\r\n"),
            "x-big" => format!("{{\"return\": {big}, \"id\": {id}}}\r\n"),
            other => format!(
                "{{\"error\": {{\"class\": \"CommandNotFound\", \"desc\": \"The command {other} has not been found\"}}, \"id\": {id}}}\r\n"
            ),
        };
        out.write_all(reply.as_bytes())?;
    }
    Ok(())
}

/// This process's resident set, in bytes (`/proc/self/statm`: resident pages times the page size).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm resident");
    pages * page_size()
}

/// The page size, from the first mapping's `KernelPageSize` in `/proc/self/smaps`.
fn page_size() -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let kb = smaps.lines().find_map(|l| l.strip_prefix("KernelPageSize:")).expect("KernelPageSize");
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().expect("page size") * 1024
}

/// Exits with advice when fewer than `needed` files may be open.
fn check_open_files(needed: usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3));
    if let Some(Ok(soft)) = soft.map(str::parse::<usize>) {
        if soft < needed {
            eprintln!(
                "open-file limit {soft} is below the {needed} needed: run `ulimit -n {}` first",
                needed.max(4096)
            );
            std::process::exit(2);
        }
    }
}
