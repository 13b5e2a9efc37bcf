//! [`SourceWake`]: whether a source (the input, the timer) may have something. The driver polls a source only
//! after it said something (more may follow), or after it woke the driver since the last poll that found
//! nothing; a turn woken by anything else (a caller's new command, another source) leaves it alone, its waker
//! still registered from that poll.
//!
//! On async-io (smol, async-std) every read is a system call made before the reactor is asked to wait, so a read
//! on a turn a caller woke, or right after writing a command, finds nothing every time: one `recvfrom` per
//! command that the raw floor does not make. The timer is armed for the oldest deadline and rarely moves: polling
//! it on every turn (three a command) only re-registered its waker (tokio: ~2% of the CPU per command).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

/// The waker one source is polled with: it notes that the source may have something, then wakes the engine
/// (`engine.rs`), whose waker the connection is always polled with: it never changes, so nothing is registered
/// per poll.
#[derive(Debug)]
pub(super) struct SourceWake {
    may_poll: AtomicBool,
    engine: Waker,
}

impl SourceWake {
    /// A waker for one source that wakes `engine`, and its state. The source is to be polled at first.
    pub(super) fn new(engine: &Waker) -> (Arc<SourceWake>, Waker) {
        let wake = Arc::new(SourceWake { may_poll: AtomicBool::new(true), engine: engine.clone() });
        let waker = Waker::from(Arc::clone(&wake));
        (wake, waker)
    }

    /// Whether to poll the source, forgetting it: cleared before the poll, so a wake-up that comes while the poll
    /// registers its waker is never lost.
    pub(super) fn take(&self) -> bool {
        self.may_poll.swap(false, Ordering::AcqRel)
    }

    /// Poll the source next turn (it returned something, or it was re-armed).
    pub(super) fn set(&self) {
        self.may_poll.store(true, Ordering::Release);
    }
}

impl Wake for SourceWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.set();
        self.engine.wake_by_ref();
    }
}
