//! [`Options`]: connection settings shared by [`Qmp`](crate::Qmp) and [`GuestAgent`](crate::GuestAgent), the
//! same as `qmp-blocking`'s plus the [`Runtime`] to run on.

use std::sync::Arc;
use std::time::Duration;

use qmp_proto::Config;

use crate::runtime::Runtime;

/// Server events the core may hold between two drains. The driver drains after every read, so this only has to
/// cover the events of one read buffer (64 KiB); it is a safety bound, not the subscribers' buffer.
const CORE_EVENT_QUEUE: usize = 64 * 1024;

/// Connection settings, the same as `qmp-tokio`'s plus the runtime. `Options::default()` suits most uses.
///
/// ```
/// use std::time::Duration;
/// let opts = qmp_smol::Options::default()
///     .connect_timeout(Duration::from_secs(2))
///     .command_timeout(Some(Duration::from_secs(60)))
///     .event_buffer(256)
///     .oob(false);
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Option<Duration>,
    pub(crate) max_message_size: usize,
    pub(crate) oob: bool,
    pub(crate) event_buffer: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) max_pending: usize,
    pub(crate) runtime: Option<Arc<dyn Runtime>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Some(Duration::from_secs(30)),
            max_message_size: 10 << 20,
            oob: true,
            event_buffer: 1024,
            max_in_flight: 8,
            max_pending: 1024,
            runtime: None,
        }
    }
}

impl Options {
    /// Time allowed for connecting, the greeting and negotiation (QMP), or the first `guest-sync-delimited` (QGA).
    /// QEMU greets a second client only after the first disconnects: this is what stops the wait. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Default deadline of each command (`None`: wait forever). Default 30 s.
    pub fn command_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Largest accepted server message; larger ones are skipped and reported. Default 10 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Negotiate out-of-band execution when the server offers it. Default true.
    pub fn oob(mut self, enable: bool) -> Self {
        self.oob = enable;
        self
    }

    /// Events each subscriber of [`Qmp::events`](crate::Qmp::events) may fall behind by; beyond that its oldest
    /// unread events are dropped and it gets [`EventItem::Lagged`](crate::EventItem::Lagged). Default 1024.
    pub fn event_buffer(mut self, events: usize) -> Self {
        self.event_buffer = events.max(1);
        self
    }

    /// In-band commands on the wire at once. Default 8 (QEMU's queue length).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Commands accepted by the connection at once (queued or on the wire). Beyond that, `execute` waits for room
    /// instead of failing. Default 1024.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }

    /// The runtime that spawns the driver and provides its timer. Default: [`default_runtime`](crate::default_runtime)
    /// (smol when its feature is on, else async-std). Set it to [`AsyncStd`](crate::AsyncStd) when both features
    /// are on and the program runs on async-std, or to your own [`Runtime`].
    pub fn runtime(mut self, runtime: impl Runtime) -> Self {
        self.runtime = Some(Arc::new(runtime));
        self
    }

    /// The configured runtime, else the built-in one.
    #[cfg(any(feature = "smol", feature = "async-std"))]
    pub(crate) fn runtime_or_default(&self) -> Arc<dyn Runtime> {
        self.runtime.clone().unwrap_or_else(crate::runtime::builtin)
    }

    pub(crate) fn to_config(&self, base: Config) -> Config {
        let config = base
            .max_message_size(self.max_message_size)
            .enable_oob(self.oob)
            .max_in_flight(self.max_in_flight)
            .max_pending(self.max_pending)
            .max_queued_events(CORE_EVENT_QUEUE);
        match config.mode() {
            qmp_proto::Mode::Qmp => config.handshake_timeout(Some(self.connect_timeout)),
            _ => config,
        }
    }
}
