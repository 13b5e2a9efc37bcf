//! [`ReadWake`]: whether there may be input. The driver reads only after a read that returned something (more
//! may follow), or after the transport woke it since the last read that found nothing; a turn woken by anything
//! else (a caller's new command, a timer) leaves the input alone, its waker still registered from that read.
//!
//! On async-io (smol, async-std) every read is a system call made before the reactor is asked to wait, so a read
//! on a turn a caller woke, or right after writing a command, finds nothing every time: one `recvfrom` per
//! command that the raw floor does not make.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use atomic_waker::AtomicWaker;

/// The waker the driver reads with: it notes that the input may have something, then wakes the driver's task.
#[derive(Debug)]
pub(super) struct ReadWake {
    may_read: AtomicBool,
    task: AtomicWaker,
}

impl ReadWake {
    /// A waker for reads, and its state. There may be input at first.
    pub(super) fn new() -> (Arc<ReadWake>, Waker) {
        let wake = Arc::new(ReadWake { may_read: AtomicBool::new(true), task: AtomicWaker::new() });
        let waker = Waker::from(Arc::clone(&wake));
        (wake, waker)
    }

    /// The task to wake from now on (called at the start of every poll of the driver).
    pub(super) fn register(&self, task: &Waker) {
        self.task.register(task);
    }

    /// Whether to read, forgetting it: cleared before the read, so a wake-up that comes while the read registers
    /// its waker is never lost.
    pub(super) fn take(&self) -> bool {
        self.may_read.swap(false, Ordering::AcqRel)
    }

    /// There may be more input (a read returned something).
    pub(super) fn set(&self) {
        self.may_read.store(true, Ordering::Release);
    }
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.set();
        self.task.wake();
    }
}
