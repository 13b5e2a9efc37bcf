//! QEMU's events to every client: one task reads the upstream connection's event stream and puts each event in
//! every client's bounded queue ([`Hub::fan_out`]); when the stream ends, QEMU has gone and the proxy stops.
//!
//! The task never waits for a client: a client whose queue is full is disconnected with a count of the events it
//! lost, and QEMU, the proxy and the other clients go on.

use std::sync::Arc;

use super::hub::Hub;
use crate::events::EventItem;
use crate::runtime::Runtime;

/// Spawns the fan-out task of `hub`.
pub(crate) fn spawn<R: Runtime>(hub: Arc<Hub<R>>) {
    let mut events = hub.upstream.events();
    let runtime = hub.upstream.handle().runtime.clone();
    runtime.spawn(async move {
        while let Some(item) = events.recv().await {
            match item {
                EventItem::Event(event) => hub.fan_out(event),
                EventItem::Lagged(n) => tracing::warn!(lost = n, "the proxy fell behind QEMU's events"),
            }
        }
        let why = hub.upstream.connection_error();
        tracing::warn!(?why, "QEMU's connection is over: the proxy stops");
        hub.shutdown.request();
    });
}
