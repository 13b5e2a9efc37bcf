//! `-v`: the wire traffic, shown as it happens. A [`Tap`] wraps the connection's stream and prints each
//! complete line it writes (`> ...`) or reads (`< ...`); the protocol code above it does not know.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use qmp_blocking::Transport;

use super::printer::{Kind, Printer};

/// A stream that shows its traffic.
pub struct Tap {
    inner: Box<dyn Transport>,
    printer: Arc<Printer>,
    quiet: Arc<AtomicBool>,
    /// Incoming bytes after the last line end.
    incoming: Vec<u8>,
    /// Scratch for outgoing lines.
    outgoing: Vec<u8>,
}

impl Tap {
    /// Wraps `inner`; nothing is shown while `quiet` holds.
    pub fn wrap(inner: Box<dyn Transport>, printer: Arc<Printer>, quiet: Arc<AtomicBool>) -> Box<dyn Transport> {
        Box::new(Tap { inner, printer, quiet, incoming: Vec::new(), outgoing: Vec::new() })
    }
}

/// Moves `bytes` into `pending` and prints each complete line with `marker`.
fn show(pending: &mut Vec<u8>, bytes: &[u8], marker: &str, printer: &Printer, quiet: &AtomicBool) {
    if quiet.load(Ordering::SeqCst) {
        pending.clear();
        return;
    }
    pending.extend_from_slice(bytes);
    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=end).collect();
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if !text.is_empty() {
            printer.print(Kind::Diagnostic, &format!("{marker} {text}"));
        }
    }
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        show(&mut self.incoming, &buf[..n], "<", &self.printer, &self.quiet);
        Ok(n)
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // The client writes whole messages, not always with a line end: each write is shown as it is.
        show(&mut self.outgoing, &buf[..n], ">", &self.printer, &self.quiet);
        show(&mut self.outgoing, b"\n", ">", &self.printer, &self.quiet);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Transport for Tap {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(timeout)
    }
}
