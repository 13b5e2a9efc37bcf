//! The proxy: many clients on one QEMU monitor, each with its own policy.
//!
//! QEMU serves one client per monitor. A [`Proxy`] holds that one connection (a [`Qmp`], negotiated with OOB
//! when QEMU offers it) and serves any number of clients, each speaking plain QMP to its own
//! [`qmp_proto::Server`]: the greeting carries QEMU's real version and the capabilities the proxy can honour,
//! each client negotiates on its own, and malformed input gets QEMU's own error texts.
//!
//! - **Routing**: a client's command goes to QEMU under an id of the proxy's (a small integer of the upstream
//!   connection); the reply goes back to that client only, with the client's own id restored exactly, whatever
//!   its JSON type (the client's server kept it). Id-less commands work. `exec-oob` stays out of band.
//! - **Replies are QEMU's bytes**: a reply's `return` value or `error` object reaches the client byte for byte
//!   as QEMU wrote it (member order, spacing, numbers), only the id being the client's
//!   ([`Server::reply_raw`](qmp_proto::Server::reply_raw)). A `pretty=on` monitor's replies, spread over lines,
//!   are written on one line, so that line-based clients (qemu.qmp, qmp-shell) keep working.
//! - **File descriptors** a client passes over its unix socket (SCM_RIGHTS) are held, in order, for its next
//!   commands that take one (`getfd`, `add-fd`), and reach QEMU with that command and no other.
//! - **Fairness**: QEMU's in-band queue (8 commands) is shared round-robin between clients ([`Router`]): a
//!   client that floods commands cannot starve the others.
//! - **Events** fan out to every negotiated client through a bounded queue per client
//!   ([`ProxyOptions::event_queue`]), each encoded once for all of them
//!   ([`EncodedEvent`](qmp_proto::server::EncodedEvent)): a client costs a copy per event, not an encoding. A client that stops reading is disconnected, with the count of events it
//!   lost logged, and never stalls QEMU, the proxy or the other clients. A rule may narrow the events its
//!   clients get, or give them none ([`Rule::events`]: a metrics collector needs none).
//! - **Policy**: each client gets the first [`Rule`] of the [`Policy`] matching its [`Identity`] (listener, unix
//!   peer uid/gid, TLS subject); no rule, no greeting. A denied command gets an error naming the rule and never
//!   reaches QEMU. `qmp_capabilities` is the client's own negotiation with the proxy; `quit` needs
//!   [`Rule::allow_quit`].
//! - **Who may connect**: [`serve_unix`] knows each client by its peer credentials (SO_PEERCRED);
//!   `serve_tls` (feature `tls`) listens on TCP with TLS and requires a client certificate chaining to a CA of
//!   yours, whose subject the policy matches; [`serve_tcp_insecure`] serves plain TCP on a loopback address
//!   only. A client refused by any of these never gets a greeting.
//! - **Audit**: with [`Proxy::with_audit`], one JSON line per command ([`AuditLog`]).
//! - **Upstream**: a unix socket or a TCP address ([`Upstream`]); [`Proxy::connect`] connects to it (and knows
//!   where to reconnect), [`Proxy::new`] takes a connection made by the caller. Connect it with
//!   [`Options::in_band_ids`](crate::Options::in_band_ids)`(false)`, as `qmp proxy` does: the clients' in-band
//!   commands then reach QEMU without an id (QEMU answers them in order), 7+ bytes fewer for it to read one at a
//!   time, which is what limits the rate of many clients on one monitor.
//! - **Faults**: when QEMU goes away every command passed on ends with a `GenericError` ("QEMU is gone: ..."),
//!   then, by default ([`UpstreamLoss::Close`]), every client is closed and the proxy stops. With
//!   [`UpstreamLoss::Hold`] (and a proxy made by [`Proxy::connect`]) the clients stay connected: a command
//!   sent while QEMU is away gets a `GenericError` at once ("QEMU is not connected: ..."), and the proxy
//!   reconnects with a bounded backoff ([`ProxyOptions::reconnect_delay`]), at once when told to
//!   ([`Proxy::reconnect`]; `qmp proxy` does on SIGHUP). The new connection negotiates afresh; new clients get
//!   the new QEMU's greeting (its version), clients already connected go on with their session. A client that
//!   disconnects mid-command leaves QEMU consistent: the command runs, its reply is swallowed.
//!
//! ```no_run
//! # async fn example<R: qmp_async::Net>() -> Result<(), Box<dyn std::error::Error>> {
//! use qmp_async::proxy::{serve_unix, Policy, Profile, Proxy, ProxyOptions, Rule};
//! use qmp_async::{Options, Qmp};
//!
//! let upstream_options = Options::default().command_timeout(None).in_band_ids(false);
//! let qemu = Qmp::<R>::connect_unix("/run/vm0/qmp.sock", upstream_options).await?;
//! let policy = Policy::new(vec![
//!     Rule::new("admin").uid(0).profile(Profile::Full),
//!     Rule::new("metrics").uid(1000).profile(Profile::ReadOnly),
//! ])
//! .validate()?;
//! let proxy = Proxy::new(qemu, policy, ProxyOptions::default());
//! serve_unix(R::default(), &proxy, "/run/vm0/qmp-proxy.sock")?.await?; // until QEMU goes or proxy.shutdown()
//! # Ok(()) }
//! ```
//!
//! Over TCP with TLS (feature `tls`): clients present a certificate from your CA, and rules name them by its
//! subject or common name.
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # async fn example<R: qmp_async::Net>(proxy: qmp_async::proxy::Proxy<R>) -> Result<(), Box<dyn std::error::Error>> {
//! use qmp_async::proxy::serve_tls;
//! use qmp_async::tls::TlsAcceptor;
//!
//! // The proxy's policy names TLS clients: Rule::new("alice").common_name("alice").profile(Profile::Full)
//! let acceptor = TlsAcceptor::from_pem_files("server.pem", "server.key", "clients-ca.pem")?;
//! let listener = std::net::TcpListener::bind("0.0.0.0:4444")?;
//! serve_tls(R::default(), &proxy, listener, acceptor)?.await?;
//! # Ok(()) }
//! ```

mod address;
pub mod audit;
mod downstream;
mod fanout;
mod hub;
mod listen;
pub mod policy;
mod reconnect;
pub mod routing;
mod upstream;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use qmp_proto::adapter::Options;

pub use address::{Upstream, UpstreamParseError};
pub use audit::AuditLog;
#[cfg(feature = "tls")]
pub use listen::serve_tls;
pub use listen::{check_loopback, serve_tcp_insecure, serve_unix};
pub use policy::{glob_matches, Identity, Policy, PolicyError, Profile, Rule};
pub use routing::{ClientId, Dispatch, Router, Ticket, QMP_REQ_QUEUE_LEN_MAX};

use crate::runtime::{Net, Runtime};
use crate::serve::connection;
use crate::transport::Transport;
use crate::{Error, Qmp};

/// What the proxy does when QEMU goes away (its connection ends). Either way every command QEMU had not
/// answered ends with a `GenericError` ("QEMU is gone: ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UpstreamLoss {
    /// Closes every client (once its commands have been answered) and stops. The default.
    #[default]
    Close,
    /// Keeps the clients connected and reconnects (see the [module docs](self)); needs a proxy made by
    /// [`Proxy::connect`], which knows where QEMU was (one made by [`Proxy::new`] closes).
    Hold,
}

/// Settings of a [`Proxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyOptions {
    event_queue: usize,
    window: usize,
    on_upstream_loss: UpstreamLoss,
    reconnect_delay: (Duration, Duration),
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            event_queue: 1024,
            window: QMP_REQ_QUEUE_LEN_MAX,
            on_upstream_loss: UpstreamLoss::Close,
            reconnect_delay: (Duration::from_millis(100), Duration::from_secs(5)),
        }
    }
}

impl ProxyOptions {
    /// Events a client may fall behind by before it is disconnected (at least 1). Default 1024.
    pub fn event_queue(mut self, events: usize) -> Self {
        self.event_queue = events.max(1);
        self
    }

    /// In-band commands of all clients on QEMU's wire at once (at least 1). Default 8, QEMU's queue length;
    /// keep the upstream connection's [`Options::max_in_flight`](crate::Options::max_in_flight) at least as large.
    pub fn window(mut self, commands: usize) -> Self {
        self.window = commands.max(1);
        self
    }

    /// What to do when QEMU goes away. Default [`UpstreamLoss::Close`].
    pub fn on_upstream_loss(mut self, loss: UpstreamLoss) -> Self {
        self.on_upstream_loss = loss;
        self
    }

    /// The pauses before each attempt to reconnect ([`UpstreamLoss::Hold`]): `shortest` before the first,
    /// doubled after each failure up to `longest` (raised to `shortest` if less). Default 100 ms to 5 s.
    pub fn reconnect_delay(mut self, shortest: Duration, longest: Duration) -> Self {
        self.reconnect_delay = (shortest, longest.max(shortest));
        self
    }
}

/// A proxy over one QEMU connection. Cheap to clone. See the [module docs](self).
#[derive(Clone)]
pub struct Proxy<R: Runtime> {
    hub: Arc<hub::Hub<R>>,
    policy: Arc<Policy>,
    audit: Option<Arc<AuditLog>>,
}

impl<R: Runtime> std::fmt::Debug for Proxy<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("clients", &self.clients()).field("policy", &self.policy).finish()
    }
}

impl<R: Runtime> Proxy<R> {
    /// A proxy for `upstream` (best connected with no command timeout: clients wait as long as they choose)
    /// under `policy`. Starts passing QEMU's events on at once (on `upstream`'s runtime). It cannot reconnect:
    /// when QEMU goes away it stops, whatever [`ProxyOptions::on_upstream_loss`] says (see
    /// [`connect`](Self::connect)).
    pub fn new(upstream: Qmp<R>, policy: Policy, options: ProxyOptions) -> Self {
        Proxy::start(upstream, policy, options, None)
    }

    fn start(upstream: Qmp<R>, policy: Policy, options: ProxyOptions, connector: Option<hub::Connector<R>>) -> Self {
        let hub = hub::Hub::new(upstream, options, connector);
        fanout::spawn(hub.clone());
        Proxy { hub, policy: Arc::new(policy), audit: None }
    }

    /// Records every client command to `audit` (JSON lines: identity, rule, command, arguments if asked for,
    /// result class, duration). Set it before serving: clients served by earlier clones are not recorded.
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(Arc::new(audit));
        self
    }

    /// The connection to QEMU: the live one, or, while the proxy reconnects, the one that ended.
    pub fn upstream(&self) -> Qmp<R> {
        self.hub.upstream()
    }

    /// True while QEMU is connected (false from the moment the proxy noticed it had gone until it reconnects).
    pub fn is_upstream_connected(&self) -> bool {
        self.hub.is_connected()
    }

    /// While QEMU is away and the proxy holds its clients ([`UpstreamLoss::Hold`]), tries to reconnect now
    /// rather than after the current pause (an operator restarted QEMU: `qmp proxy` calls this on SIGHUP).
    /// Does nothing while QEMU is connected.
    pub fn reconnect(&self) {
        self.hub.request_reconnect();
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.hub.clients()
    }

    /// Stops the proxy: no more clients are accepted, every client is closed once its commands have been
    /// answered, and no reconnection is tried any more. The upstream connection stays open (close it with
    /// [`Qmp::close`]).
    pub fn shutdown(&self) {
        self.hub.shutdown.request();
    }

    /// True once the proxy stopped (asked to, or QEMU went away and it does not hold its clients).
    pub fn is_stopped(&self) -> bool {
        self.hub.shutdown.is_set()
    }

    /// Serves one client over `io` until it leaves or the proxy stops. A client that no rule of the policy
    /// admits is refused: the stream is shut down and closed before any greeting, and this returns
    /// [`io::ErrorKind::PermissionDenied`].
    ///
    /// # Cancel safety
    /// Dropping it disconnects the client at once; its commands already passed on run and their replies are
    /// swallowed.
    pub async fn serve_client<T: Transport>(&self, mut io: T, identity: Identity) -> io::Result<()> {
        let Some(rule) = self.policy.rule_for(&identity) else {
            tracing::warn!(%identity, "client refused: no rule of the policy admits it");
            // An orderly end (a TLS client gets close_notify); nothing but the handshake was written before.
            let _ = std::future::poll_fn(|cx| io.poll_shutdown(cx)).await;
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("no policy rule admits {identity}")));
        };
        if self.is_stopped() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "the proxy has stopped"));
        }
        let backend =
            downstream::Downstream::new(self.hub.clone(), rule.clone(), Arc::new(identity), self.audit.clone());
        connection::run(self.hub.client_config(), io, backend).await;
        Ok(())
    }
}

impl<R: Net> Proxy<R> {
    /// Connects to QEMU at `upstream` with `upstream_options` (best with no command timeout: clients wait as
    /// long as they choose, and without in-band ids: see the module docs) and makes a proxy for it, under `policy`; with [`UpstreamLoss::Hold`] it reconnects
    /// there when QEMU goes away. Fails as the first connection fails.
    ///
    /// ```no_run
    /// # async fn example<R: qmp_async::Net>() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use qmp_async::proxy::{Policy, Proxy, ProxyOptions, UpstreamLoss};
    /// use qmp_async::Options;
    ///
    /// let options = ProxyOptions::default()
    ///     .on_upstream_loss(UpstreamLoss::Hold)
    ///     .reconnect_delay(Duration::from_millis(100), Duration::from_secs(5));
    /// let upstream = "127.0.0.1:4444".parse()?; // or a unix socket path
    /// let upstream_options = Options::default().command_timeout(None).in_band_ids(false);
    /// let proxy = Proxy::<R>::connect(upstream, upstream_options, Policy::owner_only(0), options).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn connect(
        upstream: Upstream,
        upstream_options: Options,
        policy: Policy,
        options: ProxyOptions,
    ) -> Result<Self, Error> {
        let qemu = upstream.connect::<R>(upstream_options.clone()).await?;
        let connector: hub::Connector<R> = Box::new(move || {
            let (upstream, upstream_options) = (upstream.clone(), upstream_options.clone());
            Box::pin(async move { upstream.connect::<R>(upstream_options).await })
        });
        Ok(Proxy::start(qemu, policy, options, Some(connector)))
    }
}
