//! The floors: minimal hand-written QMP loops over each socket type, with no framing, routing or timers.
//!
//! They send the same bytes as the adapters (`{"execute":"query-version","id":N}`, N the smallest id free as the
//! core picks it: 1 sequentially, 1 to 8 with 8 in flight, since QEMU's cost grows with every command byte;
//! [`std_floor_ids`] can add a fixed offset to every id, to show what long ids cost), enable OOB as
//! the adapters do, and count replies by their CRLF ends (every `query-version` reply is one line). The pacing
//! lives in [`Pacer`]; each floor is only its socket's read and write calls around it.
//!
//! With `QMP_BENCH_FLOOR_DEADLINE=1` ([`deadline`]) each floor waits as the adapters do with their default 30 s
//! command deadline: the std floor sets a 30 s receive timeout on its socket (as qmp-blocking does), the async
//! floors keep one 30 s timer registered with their runtime for the whole loop (as the async adapters keep one
//! armed for the oldest deadline). Without it they have no deadline at all.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::measure::{Cost, Meter};

const NEGOTIATE: &[u8] = br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":1}"#;

/// The deadline the floors wait under: 30 s with `QMP_BENCH_FLOOR_DEADLINE=1`, else none.
pub fn deadline() -> Option<Duration> {
    (std::env::var("QMP_BENCH_FLOOR_DEADLINE").as_deref() == Ok("1")).then_some(Duration::from_secs(30))
}

/// Keeps `window` commands in flight until `n` have been answered.
struct Pacer {
    n: usize,
    window: usize,
    /// Added to every id.
    id_base: usize,
    sent: usize,
    lines: usize,
    prev_cr: bool,
    start: Option<Meter>,
}

impl Pacer {
    fn new(n: usize, window: usize) -> Self {
        Pacer { n, window, id_base: 0, sent: 0, lines: 0, prev_cr: false, start: None }
    }

    /// Takes in what was read; returns the bytes to write next (empty: nothing yet, keep reading).
    /// The first two lines are the greeting and the negotiation reply; the clock starts after them.
    fn on_read(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut got = chunk.windows(2).filter(|w| w == b"\r\n").count();
        if self.prev_cr && chunk.first() == Some(&b'\n') {
            got += 1;
        }
        self.prev_cr = chunk.last() == Some(&b'\r');
        let before = self.lines;
        self.lines += got;
        let mut out = Vec::new();
        if before < 2 && self.lines >= 2 {
            self.start = Some(Meter::start());
            while self.sent < self.window.min(self.n) {
                self.push(&mut out);
            }
            return out;
        }
        for _ in 0..self.lines.saturating_sub(2).min(got) {
            if self.sent < self.n {
                self.push(&mut out);
            }
        }
        out
    }

    fn push(&mut self, out: &mut Vec<u8>) {
        // Replies come in order, so the command answered last had id `sent % window + 1`: that id is free.
        let id = self.id_base + self.sent % self.window + 1;
        out.extend_from_slice(format!(r#"{{"execute":"query-version","id":{id}}}"#).as_bytes());
        self.sent += 1;
    }

    fn finished(&self) -> bool {
        self.lines >= self.n + 2
    }

    fn cost(&self) -> Cost {
        self.start.map_or(Cost { secs: 0.0, cpu: 0.0, switches: 0 }, Meter::stop)
    }
}

/// Round trips over a std `UnixStream`, `window` in flight; returns what `n` of them cost.
pub fn std_floor(path: &Path, n: usize, window: usize) -> Cost {
    std_floor_ids(path, n, window, 0)
}

/// Like [`std_floor`], with `id_base` added to every id (1,000,000: the 7-digit ids a counter reaches after a
/// million commands).
pub fn std_floor_ids(path: &Path, n: usize, window: usize, id_base: usize) -> Cost {
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(deadline()).expect("receive timeout");
    let (mut buf, mut pacer) = (vec![0u8; 64 * 1024], Pacer { id_base, ..Pacer::new(n, window) });
    s.write_all(NEGOTIATE).expect("write");
    while !pacer.finished() {
        let k = s.read(&mut buf).expect("read");
        assert!(k > 0, "EOF");
        s.write_all(&pacer.on_read(&buf[..k])).expect("write");
    }
    pacer.cost()
}

/// The same loop over tokio's `UnixStream`.
pub async fn tokio_floor(path: &Path, n: usize, window: usize) -> Cost {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(path).await.expect("connect");
    // Registered with the runtime at its first poll, and kept until the loop ends.
    let mut timer = deadline().map(|d| Box::pin(tokio::time::sleep(d)));
    if let Some(timer) = &mut timer {
        assert!(futures_lite::future::poll_once(timer.as_mut()).await.is_none(), "30 s have not passed");
    }
    let (mut buf, mut pacer) = (vec![0u8; 64 * 1024], Pacer::new(n, window));
    s.write_all(NEGOTIATE).await.expect("write");
    while !pacer.finished() {
        let k = s.read(&mut buf).await.expect("read");
        assert!(k > 0, "EOF");
        s.write_all(&pacer.on_read(&buf[..k])).await.expect("write");
    }
    pacer.cost()
}

/// The same loop over async-io's `Async<UnixStream>` (the socket qmp-smol uses under smol and async-std).
pub async fn async_io_floor(path: &Path, n: usize, window: usize) -> Cost {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let mut s = async_io::Async::<UnixStream>::connect(path).await.expect("connect");
    // Registered with the reactor at its first poll, and kept until the loop ends.
    let mut timer = deadline().map(async_io::Timer::after);
    if let Some(timer) = &mut timer {
        assert!(futures_lite::future::poll_once(timer).await.is_none(), "30 s have not passed");
    }
    let (mut buf, mut pacer) = (vec![0u8; 64 * 1024], Pacer::new(n, window));
    s.write_all(NEGOTIATE).await.expect("write");
    while !pacer.finished() {
        let k = s.read(&mut buf).await.expect("read");
        assert!(k > 0, "EOF");
        s.write_all(&pacer.on_read(&buf[..k])).await.expect("write");
    }
    pacer.cost()
}

#[cfg(test)]
mod tests {
    use super::Pacer;

    #[test]
    fn paces_a_window_and_counts_split_crlf_once() {
        let mut p = Pacer::new(3, 2);
        assert!(p.on_read(b"{greeting}\r").is_empty());
        let first = p.on_read(b"\n{negotiated}\r\n");
        assert_eq!(first, br#"{"execute":"query-version","id":1}{"execute":"query-version","id":2}"#);
        assert_eq!(p.on_read(b"{r}\r\n"), br#"{"execute":"query-version","id":1}"#);
        assert!(p.on_read(b"{r}\r\n{r}\r").is_empty());
        assert!(!p.finished());
        assert!(p.on_read(b"\n").is_empty());
        assert!(p.finished());
    }
}
