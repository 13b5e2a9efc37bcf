//! [`Runtime`]: the little an executor must provide to run a connection — a timer and a way to spawn the
//! driver — and the built-in implementations for smol and async-std (quinn's runtime glue, in miniature).
//!
//! The protocol needs no runtime at all (it is [`qmp_proto`]); the driver needs a clock to wake it at the
//! core's next deadline, and the convenience constructors need to spawn the driver. Everything else (channels,
//! broadcast, wake-ups) is runtime-neutral.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// An async executor and timer source. Implement it to run connections on an executor this crate has no
/// feature for; [`Smol`] and [`AsyncStd`] are provided behind the features of the same names.
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// A timer that fires at `at`.
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>>;
    /// Runs `future` to completion in the background (used to spawn the connection's driver).
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>);
}

/// A resettable one-shot timer, as the driver uses it: armed for one instant at a time.
pub trait AsyncTimer: Send + fmt::Debug + 'static {
    /// Re-arms the timer for `at`, forgetting the previous instant.
    fn reset(self: Pin<&mut Self>, at: Instant);
    /// `Ready` once the armed instant has passed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// The runtime used when [`Options::runtime`](crate::Options::runtime) was not set: [`Smol`] when the `smol`
/// feature is on, else [`AsyncStd`] when the `async-std` feature is on, else none.
pub fn default_runtime() -> Option<Arc<dyn Runtime>> {
    #[cfg(any(feature = "smol", feature = "async-std"))]
    return Some(builtin());
    #[cfg(not(any(feature = "smol", feature = "async-std")))]
    return None;
}

/// The runtime of the enabled features: smol first.
#[cfg(any(feature = "smol", feature = "async-std"))]
pub(crate) fn builtin() -> Arc<dyn Runtime> {
    #[cfg(feature = "smol")]
    return Arc::new(Smol);
    #[cfg(all(feature = "async-std", not(feature = "smol")))]
    return Arc::new(AsyncStd);
}

/// smol: `async-io` timers, tasks on smol's global executor (`smol::spawn`, detached).
#[cfg(feature = "smol")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

#[cfg(feature = "smol")]
impl Runtime for Smol {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(SmolTimer(async_io::Timer::at(at)))
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        smol::spawn(future).detach();
    }
}

#[cfg(feature = "smol")]
#[derive(Debug)]
struct SmolTimer(async_io::Timer);

#[cfg(feature = "smol")]
impl AsyncTimer for SmolTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.0.set_at(at);
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

/// async-std: `async_std::task::sleep` timers and `async_std::task::spawn`. async-std is deprecated upstream
/// (its authors point to smol); it keeps working here behind its feature.
#[cfg(feature = "async-std")]
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

#[cfg(feature = "async-std")]
impl Runtime for AsyncStd {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(AsyncStdTimer(sleep_until(at)))
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        // Dropping async-std's JoinHandle detaches the task.
        drop(async_std::task::spawn(future));
    }
}

#[cfg(feature = "async-std")]
type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

#[cfg(feature = "async-std")]
fn sleep_until(at: Instant) -> Sleep {
    Box::pin(async_std::task::sleep(at.saturating_duration_since(Instant::now())))
}

#[cfg(feature = "async-std")]
struct AsyncStdTimer(Sleep);

#[cfg(feature = "async-std")]
impl fmt::Debug for AsyncStdTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AsyncStdTimer")
    }
}

#[cfg(feature = "async-std")]
impl AsyncTimer for AsyncStdTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.0 = sleep_until(at);
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl<R: Runtime + ?Sized> Runtime for Arc<R> {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        (**self).new_timer(at)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        (**self).spawn(future)
    }
}
