//! Reconnecting to QEMU while the proxy holds its clients ([`UpstreamLoss::Hold`]): attempts with a bounded
//! exponential backoff ([`ProxyOptions::reconnect_delay`]: from the shortest pause, doubled after each failed
//! attempt, up to the longest), cut short when the proxy is told to reconnect now ([`Proxy::reconnect`]) and
//! ended when it stops ([`Proxy::shutdown`]).
//!
//! A new connection negotiates afresh (OOB when the new QEMU offers it), and from then on commands go to it and
//! new clients are greeted with its version; clients already connected keep their session.
//!
//! [`Proxy::reconnect`]: super::Proxy::reconnect
//! [`Proxy::shutdown`]: super::Proxy::shutdown

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use super::hub::Hub;
#[cfg(doc)]
use super::{ProxyOptions, UpstreamLoss};
use crate::runtime::{until, Runtime};

/// Tries to connect until it works (true) or the proxy stops (false).
pub(crate) async fn until_connected<R: Runtime>(hub: &Hub<R>) -> bool {
    let Some(connect) = &hub.connector else { return false };
    let (shortest, longest) = hub.options.reconnect_delay;
    let mut pause = shortest;
    let mut attempts = 0u64;
    loop {
        if !pause_or_wake(hub, pause).await {
            return false;
        }
        attempts += 1;
        match connect().await {
            Ok(upstream) => {
                let version = upstream.greeting().version_string();
                tracing::info!(attempts, %version, "reconnected to QEMU");
                if hub.shutdown.is_set() {
                    upstream.close().await;
                    return false;
                }
                hub.reconnected(upstream);
                return true;
            }
            Err(e) => {
                tracing::info!(attempts, %e, next_in = ?pause.saturating_mul(2).min(longest), "QEMU is not back yet");
                pause = pause.saturating_mul(2).min(longest);
            }
        }
    }
}

/// Waits `pause`, or less when told to reconnect now; false when the proxy stops meanwhile.
async fn pause_or_wake<R: Runtime>(hub: &Hub<R>, pause: std::time::Duration) -> bool {
    let timer = hub.runtime.timer(hub.runtime.now() + pause);
    let mut asked = pin!(hub.wait_for_reconnect_request());
    let mut stopped = pin!(hub.shutdown.wait());
    let woken = until(
        timer,
        std::future::poll_fn(|cx| {
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            asked.as_mut().poll(cx).map(|()| true)
        }),
    )
    .await;
    woken.unwrap_or(true) && !hub.shutdown.is_set()
}
