//! Round trips of `query-version` on one qemu-storage-daemon, sequential and with 8 in flight, through qmp-smol
//! under smol and under async-std, and through a raw-socket floor (a minimal hand-written loop over the same
//! async-io socket) in the same run. Prints commands/s and the ratio to the floor.
//!
//! ```sh
//! cargo run --release -p qmp-smol --example roundtrip --features async-std -- [ROUND_TRIPS [ROUNDS]]
//! ```
//! The daemon is `QMP_TEST_QSD`, else `/usr/local/bin/qemu-storage-daemon-10`, else `qemu-storage-daemon`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_io::Async;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use qmp_smol::{Options, Qmp};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let rounds: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let daemon = Daemon::start();
    let path = daemon.socket.clone();
    let on_smol = |f: Caller| -> Caller { Box::pin(smol::spawn(f)) };
    // Interleaved rounds, best of each: the figures of a shared machine are noisy, and noise only slows down.
    let mut best = [(0f64, 0f64); 3];
    for _ in 0..rounds {
        let floor = (smol::block_on(raw_floor(&path, n, 1)), smol::block_on(raw_floor(&path, n, 8)));
        let on = smol::block_on(adapter(&path, n, Options::default().runtime(qmp_smol::Smol), on_smol));
        #[cfg(feature = "async-std")]
        let std_on = {
            let on_async_std = |f: Caller| -> Caller { Box::pin(async_std::task::spawn(f)) };
            let options = Options::default().runtime(qmp_smol::AsyncStd);
            async_std::task::block_on(adapter(&path, n, options, on_async_std))
        };
        #[cfg(not(feature = "async-std"))]
        let std_on = (0.0, 0.0);
        for (b, r) in best.iter_mut().zip([floor, on, std_on]) {
            *b = (b.0.max(r.0), b.1.max(r.1));
        }
    }
    let [floor, on_smol, on_async_std] = best;
    println!("{n} round trips, best of {rounds} rounds");
    println!("{:<24} {:>12} {:>12}", "", "sequential", "8 in flight");
    println!("{:<24} {:>10.0}/s {:>10.0}/s", "raw socket floor", floor.0, floor.1);
    let report = |name: &str, (seq, pipe): (f64, f64)| {
        println!(
            "{name:<24} {seq:>10.0}/s {pipe:>10.0}/s   ({:.2}x, {:.2}x of the floor)",
            seq / floor.0,
            pipe / floor.1
        );
    };
    report("qmp-smol on smol", on_smol);
    if cfg!(feature = "async-std") {
        report("qmp-smol on async-std", on_async_std);
    }
}

type Caller = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Commands per second through the adapter: one caller in sequence, then 8 concurrent callers (tasks).
async fn adapter(path: &Path, n: usize, options: Options, spawn: fn(Caller) -> Caller) -> (f64, f64) {
    let qmp = Qmp::connect_unix(path, options).await.expect("connect");
    for _ in 0..100 {
        qmp.execute::<serde::de::IgnoredAny>("query-version", ()).await.expect("warm-up");
    }
    let started = Instant::now();
    for _ in 0..n {
        qmp.execute_raw("query-version", None).await.expect("query-version");
    }
    let seq = n as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let qmp = qmp.clone();
            spawn(Box::pin(async move {
                for _ in 0..n / 8 {
                    qmp.execute_raw("query-version", None).await.expect("query-version");
                }
            }))
        })
        .collect();
    for caller in callers {
        caller.await;
    }
    let pipe = (n / 8 * 8) as f64 / started.elapsed().as_secs_f64();
    qmp.close().await;
    (seq, pipe)
}

/// The floor: negotiate by hand, then keep `depth` compact commands with integer ids on the wire, reading
/// replies by line (QEMU ends each with CRLF).
async fn raw_floor(path: &Path, n: usize, depth: usize) -> f64 {
    let mut conn = RawConn {
        sock: Async::<UnixStream>::connect(path).await.expect("connect"),
        buf: vec![0u8; 64 * 1024],
        pending: Vec::new(),
    };
    conn.read_line().await; // greeting
    conn.sock.write_all(br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":0}"#).await.unwrap();
    conn.read_line().await;
    let started = Instant::now();
    let mut sent = 0;
    let mut out = Vec::new();
    for _ in 0..depth.min(n) {
        sent += 1;
        out.extend_from_slice(format!(r#"{{"execute":"query-version","id":{sent}}}"#).as_bytes());
    }
    conn.sock.write_all(&out).await.unwrap();
    for _ in 0..n {
        conn.read_line().await;
        if sent < n {
            sent += 1;
            conn.sock.write_all(format!(r#"{{"execute":"query-version","id":{sent}}}"#).as_bytes()).await.unwrap();
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

struct RawConn {
    sock: Async<UnixStream>,
    buf: Vec<u8>,
    pending: Vec<u8>,
}

impl RawConn {
    /// Reads up to and including the next CRLF.
    async fn read_line(&mut self) {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\r\n") {
                self.pending.drain(..end + 2);
                return;
            }
            let k = self.sock.read(&mut self.buf).await.expect("read");
            assert!(k > 0, "EOF");
            self.pending.extend_from_slice(&self.buf[..k]);
        }
    }
}

/// qemu-storage-daemon on a temporary socket, killed on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let binary = std::env::var_os("QMP_TEST_QSD").map(PathBuf::from).unwrap_or_else(|| {
            let qsd10 = PathBuf::from("/usr/local/bin/qemu-storage-daemon-10");
            if qsd10.exists() {
                qsd10
            } else {
                PathBuf::from("qemu-storage-daemon")
            }
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("qmp.sock");
        let child = Command::new(&binary)
            .arg("--chardev")
            .arg(format!("socket,path={},server=on,wait=off,id=c0", socket.display()))
            .args(["--monitor", "chardev=c0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let started = Instant::now();
        loop {
            if let Ok(mut probe) = UnixStream::connect(&socket) {
                // Read the greeting so the daemon is fully up, then leave.
                let _ = probe.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = probe.read(&mut [0u8; 512]);
                let _ = probe.flush();
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "qemu-storage-daemon did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon { child, socket, _dir: dir }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
