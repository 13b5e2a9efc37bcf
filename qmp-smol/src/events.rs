//! [`Events`]: a subscriber's stream of server events, with [`EventItem::Lagged`] markers where it fell behind.
//!
//! # Lag semantics
//! Events travel on one bounded broadcast channel (`async-broadcast` in overflow mode, capacity
//! [`Options::event_buffer`](crate::Options::event_buffer)). Every subscriber sees every event published after
//! it subscribed, in order. When the channel is full the driver never waits: the oldest event is dropped, and
//! each subscriber that had not taken it yet gets one [`EventItem::Lagged`]`(n)` (n = the events it missed)
//! before its next event. Memory stays bounded whatever a subscriber does; a fast subscriber loses nothing
//! because of a slow one; commands keep working while nobody reads. Events that arrive while no subscriber
//! exists are not kept. The stream ends once the session is over and the events received before the end were
//! taken.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_broadcast::RecvError;
use futures_core::Stream;
use qmp_proto::adapter::EventItem;

/// A stream of [`EventItem`]s from one connection; from [`Qmp::events`](crate::Qmp::events) or
/// [`Qmp::events_named`](crate::Qmp::events_named). See the [module docs](self) for the lag semantics.
///
/// Use it as a [`Stream`] (with `futures_lite::StreamExt` or `futures::StreamExt`), or call [`Events::recv`].
pub struct Events {
    rx: async_broadcast::Receiver<EventItem>,
    names: Option<Arc<[String]>>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").field("names", &self.names).field("buffered", &self.rx.len()).finish()
    }
}

impl Events {
    pub(crate) fn new(rx: async_broadcast::Receiver<EventItem>, names: Option<Arc<[String]>>) -> Self {
        Events { rx, names }
    }

    /// The next item, or `None` once the connection is over and every event before the end was taken.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses no event; the next call returns it.
    pub async fn recv(&mut self) -> Option<EventItem> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Events held in the channel right now (shared by every subscriber of this connection; at most
    /// [`Options::event_buffer`](crate::Options::event_buffer)).
    pub fn buffered(&self) -> usize {
        self.rx.len()
    }
}

impl Stream for Events {
    type Item = EventItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<EventItem>> {
        loop {
            let item = match Pin::new(&mut self.rx).poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item,
            };
            return Poll::Ready(match item {
                None | Some(Err(RecvError::Closed)) => None,
                Some(Err(RecvError::Overflowed(n))) => Some(EventItem::Lagged(n)),
                Some(Ok(item)) if !item.passes(self.names.as_deref()) => continue,
                Some(Ok(item)) => Some(item),
            });
        }
    }
}
