//! [`Events`]: a subscriber's stream of server events, with [`EventItem::Lagged`] markers where it fell behind,
//! and the driver's side of it (`Publisher`).
//!
//! # Delivery
//! Events travel on one bounded broadcast channel (`async-broadcast` in overflow mode, at most
//! [`Options::event_buffer`](crate::Options::event_buffer) events, allocated as they come). Every subscriber sees
//! every event published after it subscribed, in order; **the first subscriber also gets every event since the
//! connection started**, the greeting on (the channel keeps them for it, within the same bound): events that
//! arrive during the handshake, before `connect` returns, are not lost. When the channel is full the driver never
//! waits: the oldest event is dropped, and each subscriber that had not taken it yet gets one
//! [`EventItem::Lagged`]`(n)` (n = the events it missed) before its next event. An event published while no
//! subscriber exists (after the first one went away) is counted: [`Qmp::unobserved_events`](crate::Qmp::unobserved_events).
//! Memory stays bounded whatever a subscriber does; commands keep working while nobody reads. The stream ends
//! once the session is over and the events received before the end were taken.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_broadcast::{RecvError, TrySendError};
use futures_core::Stream;
use qmp_proto::ServerEvent;

use crate::shared::Shared;

/// One item of an [`Events`] stream.
///
/// With the `qapi` feature, `EventItem::to_qapi` gives the typed event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventItem {
    /// A server event.
    Event(ServerEvent),
    /// This many events were lost before the next item: the subscriber fell behind (or, rarely, the connection
    /// dropped them before any subscriber could see them). With a name filter, the count covers events of every
    /// name.
    Lagged(u64),
}

impl EventItem {
    /// The event, unless this is a lag marker.
    pub fn event(&self) -> Option<&ServerEvent> {
        match self {
            EventItem::Event(ev) => Some(ev),
            EventItem::Lagged(_) => None,
        }
    }

    /// Whether a subscriber that wants only the events named `names` (`None`: every event) gets this item. Lag
    /// markers always pass.
    pub fn passes(&self, names: Option<&[String]>) -> bool {
        match (self, names) {
            (EventItem::Event(ev), Some(names)) => names.contains(&ev.name),
            _ => true,
        }
    }
}

/// A stream of [`EventItem`]s from one connection; from [`Qmp::events`](crate::Qmp::events) or
/// [`Qmp::events_named`](crate::Qmp::events_named). See the [module docs](self) for the delivery rules.
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
    pub(crate) fn new(shared: &Shared, names: Option<Arc<[String]>>) -> Self {
        Events { rx: shared.subscribe(), names }
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

/// Events the channel holds room for before it grows (doubling, up to the configured bound).
const INITIAL_ROOM: usize = 4;

/// The driver's end of the event channel.
pub(crate) struct Publisher {
    tx: async_broadcast::Sender<EventItem>,
    max: usize,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher").field("held", &self.tx.len()).field("max", &self.max).finish()
    }
}

impl Publisher {
    /// A channel for at most `max` waiting events: the publisher, the receiver kept for the first subscriber, and
    /// the inactive receiver later subscribers are cloned from.
    pub(crate) fn new(
        max: usize,
    ) -> (Publisher, async_broadcast::Receiver<EventItem>, async_broadcast::InactiveReceiver<EventItem>) {
        let (mut tx, first) = async_broadcast::broadcast(INITIAL_ROOM.min(max));
        tx.set_overflow(true);
        tx.set_await_active(false);
        let later = first.clone().deactivate();
        (Publisher { tx, max }, first, later)
    }

    /// Publishes `item` without waiting; counts it in `shared` when no subscriber can receive it.
    pub(crate) fn publish(&mut self, item: EventItem, shared: &Shared) {
        let room = self.tx.capacity();
        if self.tx.len() == room && room < self.max {
            self.tx.set_capacity((room * 2).min(self.max));
        }
        match self.tx.try_broadcast(item) {
            Ok(_) => {}
            Err(TrySendError::Inactive(item)) => shared.count_unobserved(match item {
                EventItem::Event(_) => 1,
                EventItem::Lagged(n) => n,
            }),
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {}
        }
    }

    /// The session is over: subscribers read what was sent, then their streams end.
    pub(crate) fn close(&self) {
        self.tx.close();
    }
}
