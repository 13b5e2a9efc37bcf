//! The proxy's shared state: the [`Router`], the connection to QEMU (replaced when the proxy reconnects), the
//! greeting new clients get, and, for each client, the channels to its session. Sessions submit commands here;
//! the commands the router releases are sent upstream, and their outcomes routed back from the upstream
//! connection's driver task;
//! QEMU's events are fanned out here to every client's bounded queue.
//!
//! While QEMU is away (in [`UpstreamLoss::Hold`] mode) a command is answered at once with an error in QEMU's
//! format, and nothing waits for the connection to come back.
//!
//! The lock is a plain mutex, held only for table updates, never across an await.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use qmp_proto::server::{EncodedEvent, Failure, ServerConfig, Token};
use qmp_proto::{RawJson, ServerEvent, Timestamp};

use super::policy::Rule;
use super::routing::{ClientId, Dispatch, Router, Ticket};
use super::upstream::{self, Forward, Outcome};
use super::{ProxyOptions, UpstreamLoss};
use crate::runtime::Runtime;
use crate::serve::Shutdown;
use crate::{Error, Qmp};

/// Makes a new connection to QEMU, for reconnecting.
pub(crate) type Connector<R> =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Qmp<R>, Error>> + Send>> + Send + Sync>;

/// What the hub hands a new client's session.
pub(crate) struct Attached {
    pub(crate) client: ClientId,
    pub(crate) replies: async_channel::Receiver<(Token, Outcome)>,
    pub(crate) events: async_channel::Receiver<Arc<EncodedEvent>>,
    /// Set when the client fell too far behind with events: it must be disconnected.
    pub(crate) kicked: Arc<Shutdown>,
    /// Events it lost (when kicked).
    pub(crate) lost: Arc<AtomicU64>,
}

struct Link {
    /// Which events the client takes (its rule's [`Rule::takes_event`]).
    rule: Rule,
    replies: async_channel::Sender<(Token, Outcome)>,
    events: async_channel::Sender<Arc<EncodedEvent>>,
    kicked: Arc<Shutdown>,
    lost: Arc<AtomicU64>,
}

struct State<R> {
    router: Router<Token, Forward>,
    links: HashMap<ClientId, Link>,
    /// The connection to QEMU: the live one, or the last one while the proxy reconnects.
    upstream: Qmp<R>,
    /// False from the moment the proxy noticed QEMU had gone until it is connected again.
    connected: bool,
    /// What a new client is greeted with (the version of the QEMU connected last).
    config: ServerConfig,
}

/// See the [module docs](self).
pub(crate) struct Hub<R> {
    pub(crate) runtime: R,
    state: Mutex<State<R>>,
    event_queue: usize,
    /// What to do when QEMU goes away, and how long to wait between attempts to reconnect.
    pub(crate) options: ProxyOptions,
    /// How to reconnect (none: the proxy cannot, and stops when QEMU goes away).
    pub(crate) connector: Option<Connector<R>>,
    /// Set when the proxy stops (asked to, or QEMU went away and it does not hold its clients).
    pub(crate) shutdown: Arc<Shutdown>,
    /// Asked to reconnect now rather than after the current pause.
    reconnect_asked: AtomicBool,
    reconnect_event: event_listener::Event,
}

impl<R: Runtime> Hub<R> {
    pub(crate) fn new(upstream: Qmp<R>, options: ProxyOptions, connector: Option<Connector<R>>) -> Arc<Self> {
        let config = upstream::client_config(&upstream);
        let runtime = upstream.handle().runtime.clone();
        let state =
            State { router: Router::new(options.window), links: HashMap::new(), upstream, connected: true, config };
        Arc::new(Hub {
            runtime,
            state: Mutex::new(state),
            event_queue: options.event_queue.max(1),
            options,
            connector,
            shutdown: Arc::default(),
            reconnect_asked: AtomicBool::new(false),
            reconnect_event: event_listener::Event::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<R>> {
        // A panic while the lock was held left the tables consistent (updates are single calls): go on.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The connection to QEMU (the last one, while the proxy reconnects).
    pub(crate) fn upstream(&self) -> Qmp<R> {
        self.lock().upstream.clone()
    }

    /// Whether QEMU is connected now.
    pub(crate) fn is_connected(&self) -> bool {
        self.lock().connected
    }

    /// What a client connecting now is greeted with.
    pub(crate) fn client_config(&self) -> ServerConfig {
        self.lock().config.clone()
    }

    /// Whether the proxy holds its clients when QEMU goes away (it can reconnect and is asked to).
    pub(crate) fn holds_clients(&self) -> bool {
        self.options.on_upstream_loss == UpstreamLoss::Hold && self.connector.is_some()
    }

    /// QEMU has gone: commands are refused until [`reconnected`](Self::reconnected).
    pub(crate) fn disconnected(&self) {
        self.lock().connected = false;
    }

    /// A new connection to QEMU: commands go to it from now on, and new clients get its greeting.
    pub(crate) fn reconnected(&self, upstream: Qmp<R>) {
        let mut state = self.lock();
        state.config = upstream::client_config(&upstream);
        state.upstream = upstream;
        state.connected = true;
    }

    /// Asks the proxy to reconnect now if QEMU is away (see
    /// [`wait_for_reconnect_request`](Self::wait_for_reconnect_request)); does nothing while it is connected.
    pub(crate) fn request_reconnect(&self) {
        if !self.is_connected() {
            self.reconnect_asked.store(true, Ordering::SeqCst);
            self.reconnect_event.notify(usize::MAX);
        }
    }

    /// Waits until [`request_reconnect`](Self::request_reconnect) is called (or was, since the last wait).
    pub(crate) async fn wait_for_reconnect_request(&self) {
        loop {
            if self.reconnect_asked.swap(false, Ordering::SeqCst) {
                return;
            }
            let listener = self.reconnect_event.listen();
            if self.reconnect_asked.swap(false, Ordering::SeqCst) {
                return;
            }
            listener.await;
        }
    }

    /// Registers a client under `rule` (which decides the events it gets).
    pub(crate) fn attach(&self, rule: &Rule) -> Attached {
        let (replies_tx, replies) = async_channel::unbounded();
        // A client that takes no event needs no room for any.
        let queue = if rule.takes_no_events() { 1 } else { self.event_queue };
        let (events_tx, events) = async_channel::bounded(queue);
        let kicked = Arc::<Shutdown>::default();
        let lost = Arc::new(AtomicU64::new(0));
        let mut state = self.lock();
        let client = state.router.add_client();
        let link = Link {
            rule: rule.clone(),
            replies: replies_tx,
            events: events_tx,
            kicked: kicked.clone(),
            lost: lost.clone(),
        };
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

    /// Queues a client's command and sends what the router releases; while QEMU is away, answers it at once.
    pub(crate) fn submit(self: &Arc<Self>, client: ClientId, token: Token, command: Forward) {
        let released = {
            let mut state = self.lock();
            if !state.connected {
                if let Some(link) = state.links.get(&client) {
                    let failure = Failure::generic(format!(
                        "QEMU is not connected: the proxy is reconnecting; {} was not run",
                        command.name
                    ));
                    let _ = link.replies.try_send((token, Outcome::Failed(failure)));
                }
                return;
            }
            let oob = command.oob;
            state.router.submit(client, token, oob, command);
            Released::take(&mut state)
        };
        self.send(released);
    }

    /// Sends each released command upstream; its outcome is routed back by [`finish`](Self::finish).
    fn send(self: &Arc<Self>, released: Option<Released<R>>) {
        let Some(Released { first, rest, upstream }) = released else { return };
        for dispatch in std::iter::once(first).chain(rest) {
            let (hub, ticket) = (self.clone(), dispatch.ticket);
            upstream::send(&upstream, dispatch.payload, move |outcome| hub.finish(ticket, outcome));
        }
    }

    fn finish(self: &Arc<Self>, ticket: Ticket, outcome: Outcome) {
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
            Released::take(&mut state)
        };
        self.send(released);
    }

    /// Puts `event` in the queue of every client that takes it, encoded once for all of them; a client whose
    /// queue is full is kicked, with a count of what it lost. Never waits.
    pub(crate) fn fan_out(&self, event: ServerEvent) {
        let state = self.lock();
        let mut encoded = None;
        for (client, link) in &state.links {
            if !link.rule.takes_event(&event.name) {
                continue;
            }
            let event = match &mut encoded {
                Some(encoded) => encoded,
                None => match encode(&event) {
                    Some(event) => encoded.insert(event),
                    None => return,
                },
            };
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

/// The commands the router released, taken under the lock and sent after it is released, with the connection
/// they go to. A command is released per command submitted or answered, most of the time one: it needs no
/// allocation, nor does an empty release (no clone of the connection either).
struct Released<R> {
    first: Dispatch<Forward>,
    rest: Vec<Dispatch<Forward>>,
    upstream: Qmp<R>,
}

impl<R: Runtime> Released<R> {
    fn take(state: &mut State<R>) -> Option<Self> {
        let first = state.router.poll_dispatch()?;
        let rest = std::iter::from_fn(|| state.router.poll_dispatch()).collect();
        Some(Released { first, rest, upstream: state.upstream.clone() })
    }
}

/// `event` as every client gets it (QEMU's layout); `None`, logged, if its data is not JSON (it was parsed from
/// QEMU's output, so it is).
fn encode(event: &ServerEvent) -> Option<Arc<EncodedEvent>> {
    let timestamp = event.timestamp.unwrap_or(Timestamp { seconds: -1, microseconds: -1 });
    match EncodedEvent::new(&event.name, event.data.as_ref().map(RawJson::raw_str), timestamp) {
        Ok(encoded) => Some(Arc::new(encoded)),
        Err(e) => {
            tracing::warn!(%e, event = event.name, "event not passed on");
            None
        }
    }
}
