//! The proxy's shared state: the [`Router`] and, for each client, the channels to its session. Sessions submit
//! commands here; the commands the router releases are run upstream, each in its own task, and their outcomes
//! routed back; QEMU's events are fanned out here to every client's bounded queue.
//!
//! The lock is a plain mutex, held only for table updates, never across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use qmp_proto::server::Token;
use qmp_proto::ServerEvent;

use super::routing::{ClientId, Dispatch, Router};
use super::upstream::{self, Forward, Outcome};
use crate::runtime::Runtime;
use crate::serve::Shutdown;
use crate::Qmp;

/// What the hub hands a new client's session.
pub(crate) struct Attached {
    pub(crate) client: ClientId,
    pub(crate) replies: async_channel::Receiver<(Token, Outcome)>,
    pub(crate) events: async_channel::Receiver<Arc<ServerEvent>>,
    /// Set when the client fell too far behind with events: it must be disconnected.
    pub(crate) kicked: Arc<Shutdown>,
    /// Events it lost (when kicked).
    pub(crate) lost: Arc<AtomicU64>,
}

struct Link {
    replies: async_channel::Sender<(Token, Outcome)>,
    events: async_channel::Sender<Arc<ServerEvent>>,
    kicked: Arc<Shutdown>,
    lost: Arc<AtomicU64>,
}

struct State {
    router: Router<Token, Forward>,
    links: HashMap<ClientId, Link>,
}

/// See the [module docs](self).
pub(crate) struct Hub<R> {
    pub(crate) upstream: Qmp<R>,
    state: Mutex<State>,
    event_queue: usize,
    /// Set when the proxy stops (asked to, or QEMU went away).
    pub(crate) shutdown: Arc<Shutdown>,
}

impl<R: Runtime> Hub<R> {
    pub(crate) fn new(upstream: Qmp<R>, window: usize, event_queue: usize) -> Arc<Self> {
        let state = State { router: Router::new(window), links: HashMap::new() };
        Arc::new(Hub { upstream, state: Mutex::new(state), event_queue: event_queue.max(1), shutdown: Arc::default() })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held left the tables consistent (updates are single calls): go on.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a client.
    pub(crate) fn attach(&self) -> Attached {
        let (replies_tx, replies) = async_channel::unbounded();
        let (events_tx, events) = async_channel::bounded(self.event_queue);
        let kicked = Arc::<Shutdown>::default();
        let lost = Arc::new(AtomicU64::new(0));
        let mut state = self.lock();
        let client = state.router.add_client();
        let link = Link { replies: replies_tx, events: events_tx, kicked: kicked.clone(), lost: lost.clone() };
        state.links.insert(client, link);
        Attached { client, replies, events, kicked, lost }
    }

    /// Forgets a client: its waiting commands are dropped, replies to the others swallowed.
    pub(crate) fn detach(&self, client: ClientId) {
        let mut state = self.lock();
        state.router.remove_client(client);
        state.links.remove(&client);
    }

    /// Clients attached.
    pub(crate) fn clients(&self) -> usize {
        self.lock().links.len()
    }

    /// Queues a client's command and sends what the router releases.
    pub(crate) fn submit(self: &Arc<Self>, client: ClientId, token: Token, command: Forward) {
        let released = {
            let mut state = self.lock();
            let oob = command.oob;
            state.router.submit(client, token, oob, command);
            released(&mut state.router)
        };
        self.send(released);
    }

    /// Runs each released command upstream in a task of its own, which routes the outcome back.
    fn send(self: &Arc<Self>, released: Vec<Dispatch<Forward>>) {
        for dispatch in released {
            let hub = self.clone();
            self.upstream.handle().runtime.spawn(async move {
                let outcome = upstream::run(&hub.upstream, dispatch.payload).await;
                hub.finish(dispatch.ticket, outcome);
            });
        }
    }

    fn finish(self: &Arc<Self>, ticket: super::routing::Ticket, outcome: Outcome) {
        let released = {
            let mut state = self.lock();
            if let Some((client, token)) = state.router.complete(ticket) {
                if let Some(link) = state.links.get(&client) {
                    // Unbounded: a session has at most QEMU's queue length of commands out.
                    let _ = link.replies.try_send((token, outcome));
                }
            } else {
                tracing::debug!("a reply for a client that has gone was swallowed");
            }
            released(&mut state.router)
        };
        self.send(released);
    }

    /// Puts `event` in every client's queue; a client whose queue is full is kicked, with a count of what it
    /// lost. Never waits.
    pub(crate) fn fan_out(&self, event: ServerEvent) {
        let event = Arc::new(event);
        let state = self.lock();
        for (client, link) in &state.links {
            if link.kicked.is_set() {
                link.lost.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            if link.events.try_send(event.clone()).is_err() {
                link.lost.store(link.events.len() as u64 + 1, Ordering::SeqCst);
                tracing::warn!(client = client.get(), "client does not read its events: disconnecting it");
                link.kicked.request();
            }
        }
    }
}

fn released(router: &mut Router<Token, Forward>) -> Vec<Dispatch<Forward>> {
    std::iter::from_fn(|| router.poll_dispatch()).collect()
}
