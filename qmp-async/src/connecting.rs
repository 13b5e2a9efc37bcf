//! [`Connecting`]: the handshake of a connection whose driver the caller spawns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::Error;

/// A connection completing its handshake (QMP greeting and negotiation, or the guest agent's sync). Resolves
/// to the handle once the session is ready, or to the error that ended it. Its [`Driver`](crate::Driver) must
/// be running for it to make progress.
///
/// **Cancel safety**: dropping it drops the connection's only handle, which closes the session.
#[must_use = "futures do nothing unless polled"]
pub struct Connecting<T> {
    inner: Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>,
}

impl<T> Connecting<T> {
    pub(crate) fn new(inner: impl Future<Output = Result<T, Error>> + Send + 'static) -> Self {
        Connecting { inner: Box::pin(inner) }
    }
}

impl<T> fmt::Debug for Connecting<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connecting")
    }
}

impl<T> Future for Connecting<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
