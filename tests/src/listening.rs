//! Waiting until a program listens on a unix socket path, without connecting to it.
//!
//! A server's socket file appears when it is bound, a moment before the server listens on it: a test that
//! connects as soon as the file exists can get `ECONNREFUSED` in that moment (CI saw it under load). A probe
//! connection would be one client more than the test means to have (QEMU serves one at a time; the proxy
//! counts and logs its clients), so this reads the kernel's table of unix sockets instead: `/proc/net/unix`
//! lists every socket with its flags, and `__SO_ACCEPTCON` (0x10000) marks one that listens.

use std::path::Path;
use std::time::{Duration, Instant};

/// The flag `/proc/net/unix` shows for a socket that listens (`__SO_ACCEPTCON`).
const LISTENING: u32 = 0x0001_0000;

/// Whether some socket listens on `path` now, by `/proc/net/unix`.
pub fn is_listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else { return false };
    let Some(want) = path.to_str() else { return false };
    table.lines().skip(1).any(|line| {
        let flags = line.split_whitespace().nth(3).and_then(|f| u32::from_str_radix(f, 16).ok());
        flags.is_some_and(|f| f & LISTENING != 0) && path_field(line) == Some(want)
    })
}

/// The path of a `/proc/net/unix` line (Num RefCount Protocol Flags Type St Inode Path): the rest of the line
/// after seven fields, spaces included; `None` for a socket without one.
fn path_field(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for _ in 0..7 {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    Some(rest.trim_end()).filter(|p| !p.is_empty())
}

/// Waits until a socket listens on `path`, polling every 5 ms; panics after `timeout` naming `what`.
pub fn wait_listening(path: &Path, timeout: Duration, what: &str) {
    let start = Instant::now();
    while !is_listening(path) {
        assert!(start.elapsed() < timeout, "{what} did not listen on {} within {timeout:?}", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixListener};

    #[test]
    fn a_bound_socket_listens_only_after_listen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bound = dir.path().join("bound only");
        let _datagram = UnixDatagram::bind(&bound).expect("bind");
        assert!(bound.exists() && !is_listening(&bound), "a bound socket that does not listen");
        let listen = dir.path().join("listens here");
        assert!(!is_listening(&listen));
        let _listener = UnixListener::bind(&listen).expect("listen");
        assert!(is_listening(&listen));
        wait_listening(&listen, Duration::from_secs(1), "the listener");
    }
}
