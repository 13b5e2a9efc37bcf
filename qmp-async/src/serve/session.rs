//! One connection served by a [`Service`]: the [`Backend`] that hands commands to their handlers (spawned on the
//! runtime) and feeds the core their results and the events broadcast by the
//! [`ServerHandle`](super::ServerHandle). The connection loop itself is [`connection`](super::connection).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use qmp_proto::server::{Event, Server, Token};

use super::connection::{self, Backend, Close, ShutdownWatch};
use super::service::{Reply, Request, Service};
use super::{Broadcast, Shutdown};
use crate::runtime::Runtime;
use crate::transport::Transport;

/// Runs one connection with `service` until the client hangs up or `shutdown` fires.
pub(crate) async fn run<R: Runtime, T: Transport>(
    runtime: R,
    io: T,
    service: Arc<Service>,
    events: async_broadcast::Receiver<Arc<Broadcast>>,
    shutdown: Arc<Shutdown>,
) {
    let (results_tx, results_rx) = async_channel::unbounded();
    let config = service.server_config();
    let backend = Handlers {
        results_tx,
        results_rx: Box::pin(results_rx),
        events: Box::pin(events),
        shutdown: ShutdownWatch::new(shutdown),
        service,
        runtime,
    };
    connection::run(config, io, backend).await
}

struct Handlers<R> {
    results_tx: async_channel::Sender<(Token, Reply)>,
    results_rx: Pin<Box<async_channel::Receiver<(Token, Reply)>>>,
    events: Pin<Box<async_broadcast::Receiver<Arc<Broadcast>>>>,
    shutdown: ShutdownWatch,
    service: Arc<Service>,
    runtime: R,
}

impl<R: Runtime> Backend for Handlers<R> {
    fn poll_feed(&mut self, cx: &mut Context<'_>, server: &mut Server, _unwritten: usize) -> bool {
        let mut progress = false;
        while let Poll::Ready(Some((token, reply))) = self.results_rx.as_mut().poll_next(cx) {
            // A token the core no longer knows belongs to a command of a closed session: nothing to do.
            let _ = server.reply(token, reply);
            progress = true;
        }
        while let Poll::Ready(Some(event)) = self.events.as_mut().poll_next(cx) {
            server.event(&event.name, event.data.as_ref(), event.timestamp);
            progress = true;
        }
        progress
    }

    fn on_event(&mut self, _server: &mut Server, event: Event) {
        match event {
            Event::Command(cmd) => {
                let request = Request { name: cmd.name().to_owned(), arguments: cmd.arguments, oob: cmd.oob };
                let reply = self.service.call(request);
                let results = self.results_tx.clone();
                let token = cmd.token;
                self.runtime.spawn(async move {
                    let reply = reply.await;
                    // The session may have ended meanwhile: then nobody waits for it.
                    let _ = results.send((token, reply)).await;
                });
            }
            Event::Negotiated { oob } => tracing::debug!(oob, "client negotiated"),
            Event::Closed(reason) => tracing::debug!(?reason, "served session closed"),
            _ => {}
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _server: &Server) -> Close {
        if self.shutdown.poll(cx) {
            Close::Gracefully
        } else {
            Close::No
        }
    }
}
