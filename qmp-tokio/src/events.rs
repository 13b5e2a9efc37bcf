//! [`Events`]: a subscriber's stream of server events. Every subscriber gets every event (optionally only some
//! names); one that falls more than [`Options::event_buffer`](crate::Options::event_buffer) behind loses the oldest
//! and gets [`EventItem::Lagged`] instead. The driver never waits for subscribers, so commands keep working
//! whether anyone reads events or not.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use qmp_proto::adapter::EventItem;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

/// A stream of [`EventItem`]s from one connection; from [`Qmp::events`](crate::Qmp::events) or
/// [`Qmp::events_named`](crate::Qmp::events_named). It sees the events that arrive after it was created, and ends
/// when the connection does (after the events received before the end).
///
/// Use it as a [`Stream`] (with `tokio_stream::StreamExt` or `futures::StreamExt`), or call [`Events::recv`].
pub struct Events {
    inner: Option<BroadcastStream<EventItem>>,
    names: Option<Arc<[String]>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("ended", &self.inner.is_none()).field("names", &self.names).finish()
    }
}

impl Events {
    pub(crate) fn new(rx: Option<broadcast::Receiver<EventItem>>, names: Option<Arc<[String]>>) -> Self {
        Events { inner: rx.map(BroadcastStream::new), names }
    }

    /// The next item, or `None` once the connection is over and every event before the end was taken.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future loses no event; the next call returns it.
    pub async fn recv(&mut self) -> Option<EventItem> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Events {
    type Item = EventItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EventItem>> {
        loop {
            let Some(inner) = self.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(Pin::new(inner).poll_next(cx)) {
                None => {
                    self.inner = None;
                    return Poll::Ready(None);
                }
                Some(Ok(item)) if !item.passes(self.names.as_deref()) => continue,
                Some(Ok(item)) => return Poll::Ready(Some(item)),
                Some(Err(BroadcastStreamRecvError::Lagged(n))) => return Poll::Ready(Some(EventItem::Lagged(n))),
            }
        }
    }
}
