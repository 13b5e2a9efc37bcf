//! QEMU's events to every client: one task reads the upstream connection's event stream and puts each event in
//! every client's bounded queue ([`Hub::fan_out`]). When the stream ends, QEMU has gone: the proxy stops, or,
//! holding its clients, reconnects ([`reconnect`]) and goes on with the new connection's events.
//!
//! The task never waits for a client: a client whose queue is full is disconnected with a count of the events it
//! lost, and QEMU, the proxy and the other clients go on.

use std::sync::Arc;

use super::hub::Hub;
use super::reconnect;
use crate::events::EventItem;
use crate::runtime::Runtime;

/// Spawns the fan-out task of `hub`.
pub(crate) fn spawn<R: Runtime>(hub: Arc<Hub<R>>) {
    let runtime = hub.runtime.clone();
    runtime.spawn(async move {
        loop {
            let upstream = hub.upstream();
            let mut events = upstream.events();
            while let Some(item) = events.recv().await {
                match item {
                    EventItem::Event(event) => hub.fan_out(event),
                    EventItem::Lagged(n) => tracing::warn!(lost = n, "the proxy fell behind QEMU's events"),
                }
            }
            drop(events);
            let why = upstream.connection_error();
            if hub.shutdown.is_set() {
                return;
            }
            if !hub.holds_clients() {
                tracing::warn!(?why, "QEMU's connection is over: the proxy stops");
                hub.shutdown.request();
                return;
            }
            tracing::warn!(?why, "QEMU's connection is over: holding the clients while the proxy reconnects");
            hub.disconnected();
            if !reconnect::until_connected(&hub).await {
                return;
            }
        }
    });
}
