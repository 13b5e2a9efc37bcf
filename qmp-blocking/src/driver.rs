//! The driver: one loop that moves bytes and time between a [`Transport`] and the `qmp-proto` core.
//!
//! It holds no protocol logic. Each turn follows the core's contract: drain events into local state (replies by
//! id, events into a bounded buffer), write what the core wants written, then read with a timeout that ends at
//! the earliest of the core's deadline and the caller's.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use foldhash::fast::FixedState;
use qmp_proto::adapter::{is_hangup, Violations};
use qmp_proto::{ClientEvent, ConnectionError, QmpError, RawJson, RequestError, RequestId, ServerEvent};

use crate::transport::Transport;
use crate::Error;

/// Bytes read at once (the core keeps what it needs).
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The read buffer of every connection driven on this thread: zeroed once per thread, not once per read
    /// (zeroing 16 KiB on the stack for every read was the driver's largest user-space cost per command), and
    /// held by the thread, not by each idle connection.
    static READ_BUF: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}
/// An output buffer larger than this is given back once written.
const KEEP_OUTPUT: usize = 16 * 1024;
/// After a write finds the server gone, how long a read may take to collect what it sent before hanging up.
const HANGUP_READ: Duration = Duration::from_millis(100);

/// How one request ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Reply(Result<RawJson, QmpError>),
    Failed(RequestError),
    TimedOut,
}

#[derive(Debug)]
pub(crate) struct Driver<S> {
    pub(crate) stream: S,
    pub(crate) core: qmp_proto::Client,
    write_buf: Vec<u8>,
    pub(crate) ready: bool,
    /// Replies not yet taken, by request. Looked up two or three times a command: hashed with foldhash's fixed
    /// seed, not SipHash (the keys are the core's request ids, nothing the server chose).
    pub(crate) outcomes: HashMap<RequestId, Outcome, FixedState>,
    /// The request [`wait`](Self::wait) is driving for: its outcome goes to `waited`, not through the map.
    waiting: Option<RequestId>,
    waited: Option<Outcome>,
    pub(crate) events: VecDeque<ServerEvent>,
    event_capacity: usize,
    pub(crate) dropped_events: u64,
    pub(crate) violations: Violations,
    pub(crate) closed: Option<ConnectionError>,
    /// The read timeout set on the stream, once one was: it is changed only when it no longer fits (a system
    /// call saved on almost every read).
    read_timeout: Option<Option<Duration>>,
}

impl<S: Transport> Driver<S> {
    pub(crate) fn new(stream: S, core: qmp_proto::Client, event_capacity: usize) -> Self {
        Driver {
            stream,
            core,
            write_buf: Vec::new(),
            ready: false,
            outcomes: HashMap::default(),
            waiting: None,
            waited: None,
            events: VecDeque::new(),
            event_capacity,
            dropped_events: 0,
            violations: Violations::default(),
            closed: None,
            read_timeout: None,
        }
    }

    /// Runs the loop until `done` holds, the connection closes, or `deadline` passes. Returns whether `done` held.
    ///
    /// The clock is read only when there is a deadline to read against (the core's or `deadline`). `now`, when
    /// given, is a reading the caller took just before (the one that set its command's deadline): it serves the
    /// first read instead of a second reading, whose timeout is then longer by the time since, a few
    /// microseconds (one write).
    pub(crate) fn run_until(
        &mut self,
        deadline: Option<Instant>,
        mut now: Option<Instant>,
        mut done: impl FnMut(&Self) -> bool,
    ) -> bool {
        loop {
            self.drain();
            if done(self) {
                return true;
            }
            if self.closed.is_some() {
                return false;
            }
            let wake = match (self.core.poll_timeout(), deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(at) = wake else {
                self.read_once(None);
                continue;
            };
            let now = now.take().unwrap_or_else(Instant::now);
            if deadline.is_some_and(|d| d <= now) {
                return false;
            }
            if at <= now {
                self.core.handle_timeout(now);
                continue;
            }
            self.read_once(Some(at - now));
        }
    }

    /// Writes what the core has to send now (and takes in its pending events).
    pub(crate) fn flush(&mut self) {
        self.drain();
    }

    /// Moves the core's outputs into local state and writes what it has to send.
    fn drain(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                ClientEvent::Greeting(_) => {}
                ClientEvent::Ready { .. } => self.ready = true,
                ClientEvent::Reply { id, result } => self.settle(id, Outcome::Reply(result)),
                ClientEvent::Failed { id, error } => self.settle(id, Outcome::Failed(error)),
                ClientEvent::TimedOut { id } => self.settle(id, Outcome::TimedOut),
                ClientEvent::Event(ev) => {
                    if self.events.len() < self.event_capacity {
                        self.events.push_back(ev);
                    } else {
                        self.dropped_events += 1;
                    }
                }
                ClientEvent::EventsDropped { count } => self.dropped_events += count,
                ClientEvent::ProtocolViolation(v) => self.violations.push(v),
                ClientEvent::Closed(cause) => self.closed = Some(cause),
                _ => {}
            }
        }
        self.core.poll_transmit(&mut self.write_buf);
        if !self.write_buf.is_empty() {
            let result = self.stream.write_all(&self.write_buf).and_then(|()| self.stream.flush());
            if self.write_buf.capacity() > KEEP_OUTPUT {
                self.write_buf = Vec::new();
            } else {
                self.write_buf.clear();
            }
            if let Err(e) = result {
                if is_hangup(e.kind()) {
                    // The server hung up: what it sent before is still readable, and its end of the stream is
                    // the cause (the same error as when no write was pending).
                    self.read_once(Some(HANGUP_READ));
                }
                if self.closed.is_none() && !self.core.is_closed() {
                    self.core.handle_transport_error(e.to_string());
                }
                self.drain();
            }
        }
    }

    /// Keeps how request `id` ended until it is collected.
    fn settle(&mut self, id: RequestId, outcome: Outcome) {
        if self.waiting == Some(id) {
            self.waited = Some(outcome);
        } else {
            self.outcomes.insert(id, outcome);
        }
    }

    /// One read, bounded by `timeout`.
    fn read_once(&mut self, timeout: Option<Duration>) {
        // A zero timeout means "block forever" to std; never pass one.
        let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        if !self.read_timeout.is_some_and(|set| timeout_fits(set, timeout)) {
            // Somewhat shorter than asked, so that it still fits the next reads, whose deadlines come a little
            // closer each time: waking early is harmless (the loop reads again), waking late is not.
            let set = timeout.map(|t| (t * 3 / 4).max(Duration::from_millis(1)));
            if let Err(e) = self.stream.set_read_timeout(set) {
                self.core.handle_transport_error(e.to_string());
                return;
            }
            self.read_timeout = Some(set);
        }
        let read = READ_BUF.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => self.read_into(&mut buf[..]),
            // Only if a read ran inside another on this thread (nothing here does): a buffer of its own.
            Err(_) => self.read_into(&mut [0u8; READ_CHUNK]),
        });
        match read {
            Ok(()) => {}
            Err(e) if is_hangup(e.kind()) => self.core.handle_eof(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                self.core.handle_timeout(Instant::now())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => self.core.handle_transport_error(e.to_string()),
        }
    }

    /// Reads once into `buf` and gives the core what came (the end of the stream too).
    fn read_into(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let n = self.stream.read(buf)?;
        if n == 0 {
            self.core.handle_eof();
        } else {
            self.core.handle_input(&buf[..n]);
        }
        Ok(())
    }

    /// Drives until the handshake is done.
    pub(crate) fn handshake(&mut self) -> Result<(), Error> {
        if self.run_until(None, None, |d| d.ready) {
            return Ok(());
        }
        Err(Error::Connection(self.closed.clone().unwrap_or(ConnectionError::Local)))
    }

    /// Drives until request `id` ends, and returns its reply.
    pub(crate) fn wait(&mut self, id: RequestId) -> Result<RawJson, Error> {
        self.wait_from(id, None)
    }

    /// [`wait`](Self::wait), given the clock reading that set the command's deadline, taken just before it was
    /// issued (see [`run_until`](Self::run_until)).
    pub(crate) fn wait_from(&mut self, id: RequestId, now: Option<Instant>) -> Result<RawJson, Error> {
        // Ended while another request was waited for, or not yet: then the loop runs until it ends.
        let mut outcome = if self.outcomes.is_empty() { None } else { self.outcomes.remove(&id) };
        if outcome.is_none() {
            self.waiting = Some(id);
            self.run_until(None, now, |d| d.waited.is_some());
            self.waiting = None;
            outcome = self.waited.take();
        }
        match outcome {
            Some(Outcome::Reply(Ok(raw))) => Ok(raw),
            Some(Outcome::Reply(Err(e))) => Err(Error::Qmp(e)),
            Some(Outcome::Failed(e)) => Err(Error::Request(e)),
            Some(Outcome::TimedOut) => Err(Error::TimedOut),
            None => Err(Error::Connection(self.closed.clone().unwrap_or(ConnectionError::Local))),
        }
    }

    /// The next buffered event, reading for up to `timeout` if there is none.
    pub(crate) fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<ServerEvent>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        self.run_until(deadline, None, |d| !d.events.is_empty());
        match self.events.pop_front() {
            Some(ev) => Ok(Some(ev)),
            None => match &self.closed {
                Some(cause) => Err(Error::Connection(cause.clone())),
                None => Ok(None),
            },
        }
    }

    /// The first buffered event that `wanted` picks, reading for up to `timeout` if there is none; the other
    /// events stay buffered, in order, for [`next_event`](Self::next_event).
    pub(crate) fn next_event_where(
        &mut self,
        mut wanted: impl FnMut(&ServerEvent) -> bool,
        timeout: Option<Duration>,
    ) -> Result<Option<ServerEvent>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        self.run_until(deadline, None, |d| d.events.iter().any(&mut wanted));
        match self.events.iter().position(&mut wanted) {
            Some(at) => Ok(self.events.remove(at)),
            None => match &self.closed {
                Some(cause) => Err(Error::Connection(cause.clone())),
                None => Ok(None),
            },
        }
    }

    pub(crate) fn close(&mut self) {
        self.core.close();
        self.drain();
    }
}

/// Whether a read timeout already `set` on the stream serves a read that must end within `wanted`: never later,
/// and not much earlier (at least half of it), so that early wake-ups stay few.
fn timeout_fits(set: Option<Duration>, wanted: Option<Duration>) -> bool {
    match (set, wanted) {
        (None, None) => true,
        (Some(set), Some(wanted)) => set <= wanted && set >= wanted / 2,
        _ => false,
    }
}

/// A fresh nonce for `guest-sync-delimited`: std's per-process random hasher keys (each hasher differs). The core
/// takes the nonce it is given; randomness is the caller's, as the clock is.
pub(crate) fn random_nonce() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    (std::collections::hash_map::RandomState::new().build_hasher().finish() >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::timeout_fits;
    use std::time::Duration;

    #[test]
    fn a_set_timeout_fits_when_never_later_and_not_much_earlier() {
        let ms = Duration::from_millis;
        assert!(timeout_fits(None, None));
        assert!(!timeout_fits(None, Some(ms(10))), "blocking forever would wake late");
        assert!(!timeout_fits(Some(ms(10)), None), "a timeout would wake needlessly");
        assert!(timeout_fits(Some(ms(10)), Some(ms(10))));
        assert!(timeout_fits(Some(ms(10)), Some(ms(20))));
        assert!(!timeout_fits(Some(ms(10)), Some(ms(21))), "too early");
        assert!(!timeout_fits(Some(ms(10)), Some(ms(9))), "too late");
    }
}
