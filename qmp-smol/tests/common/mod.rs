//! The runtime a test body runs on, so one suite runs under smol and under async-std alike.

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use qmp_smol::Options;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a test needs from an executor.
pub trait Rt: 'static {
    /// For messages.
    const NAME: &'static str;
    /// Runs a test body to completion.
    fn block_on<F: Future>(f: F) -> F::Output;
    /// Spawns a task; the returned future resolves to its output.
    fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> BoxFuture<T>;
    /// Sleeps.
    fn sleep(d: Duration) -> BoxFuture<()>;
    /// The qmp-smol runtime the handles run on.
    type Net: qmp_async::Net + qmp_async::Streams<async_io::Async<std::os::unix::net::UnixStream>>;
    /// Default options (the runtime is the handle type's).
    fn options() -> Options {
        Options::default()
    }
    /// This runtime, for `with_driver`.
    fn runtime() -> Self::Net {
        Self::Net::default()
    }
}

/// The handles on `R`'s runtime.
pub type Qmp<R> = qmp_async::Qmp<<R as Rt>::Net>;
/// The guest-agent handle on `R`'s runtime.
pub type GuestAgent<R> = qmp_async::GuestAgent<<R as Rt>::Net>;
/// The listener on `R`'s runtime.
pub type Listener<R> = qmp_async::Listener<<R as Rt>::Net>;

/// smol: `smol::block_on`, `smol::spawn`, async-io timers.
pub struct Smol;

impl Rt for Smol {
    const NAME: &'static str = "smol";

    fn block_on<F: Future>(f: F) -> F::Output {
        smol::block_on(f)
    }

    fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> BoxFuture<T> {
        Box::pin(smol::spawn(f))
    }

    fn sleep(d: Duration) -> BoxFuture<()> {
        Box::pin(async move {
            async_io::Timer::after(d).await;
        })
    }

    type Net = qmp_smol::Smol;
}

/// async-std: `async_std::task::{block_on, spawn, sleep}`.
pub struct AsyncStd;

impl Rt for AsyncStd {
    const NAME: &'static str = "async-std";

    fn block_on<F: Future>(f: F) -> F::Output {
        async_std::task::block_on(f)
    }

    fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> BoxFuture<T> {
        Box::pin(async_std::task::spawn(f))
    }

    fn sleep(d: Duration) -> BoxFuture<()> {
        Box::pin(async_std::task::sleep(d))
    }

    type Net = qmp_smol::AsyncStd;
}

/// Runs `f` on `R`, failing the test if it takes longer than `limit`.
pub fn run<R: Rt, F: Future<Output = ()>>(limit: Duration, f: F) {
    R::block_on(futures_lite::future::or(f, async move {
        R::sleep(limit).await;
        panic!("test did not finish within {limit:?} on {}", R::NAME);
    }))
}
