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
//! - **File descriptors** a client passes over its unix socket (SCM_RIGHTS) are held, in order, for its next
//!   commands that take one (`getfd`, `add-fd`), and reach QEMU with that command and no other.
//! - **Fairness**: QEMU's in-band queue (8 commands) is shared round-robin between clients ([`Router`]): a
//!   client that floods commands cannot starve the others.
//! - **Events** fan out to every negotiated client through a bounded queue per client
//!   ([`ProxyOptions::event_queue`]). A client that stops reading is disconnected, with the count of events it
//!   lost logged, and never stalls QEMU, the proxy or the other clients.
//! - **Policy**: each client gets the first [`Rule`] of the [`Policy`] matching its [`Identity`] (listener, unix
//!   peer uid/gid, TLS subject); no rule, no greeting. A denied command gets an error naming the rule and never
//!   reaches QEMU. `qmp_capabilities` is the client's own negotiation with the proxy; `quit` needs
//!   [`Rule::allow_quit`].
//! - **Who may connect**: [`serve_unix`] knows each client by its peer credentials (SO_PEERCRED);
//!   `serve_tls` (feature `tls`) listens on TCP with TLS and requires a client certificate chaining to a CA of
//!   yours, whose subject the policy matches; [`serve_tcp_insecure`] serves plain TCP on a loopback address
//!   only. A client refused by any of these never gets a greeting.
//! - **Audit**: with [`Proxy::with_audit`], one JSON line per command ([`AuditLog`]).
//! - **Faults**: when QEMU goes away every command passed on ends with a `GenericError` ("QEMU is gone: ..."),
//!   then every client is closed and the proxy stops. A client that disconnects mid-command leaves QEMU
//!   consistent: the command runs, its reply is swallowed.
//!
//! ```no_run
//! # async fn example<R: qmp_async::Net>() -> Result<(), Box<dyn std::error::Error>> {
//! use qmp_async::proxy::{serve_unix, Policy, Profile, Proxy, ProxyOptions, Rule};
//! use qmp_async::{Options, Qmp};
//!
//! let qemu = Qmp::<R>::connect_unix("/run/vm0/qmp.sock", Options::default().command_timeout(None)).await?;
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

pub mod audit;
mod downstream;
mod fanout;
mod hub;
mod listen;
pub mod policy;
pub mod routing;
mod upstream;

use std::io;
use std::sync::Arc;

use qmp_proto::server::ServerConfig;

pub use audit::AuditLog;
#[cfg(feature = "tls")]
pub use listen::serve_tls;
pub use listen::{check_loopback, serve_tcp_insecure, serve_unix};
pub use policy::{glob_matches, Identity, Policy, PolicyError, Profile, Rule};
pub use routing::{ClientId, Dispatch, Router, Ticket, QMP_REQ_QUEUE_LEN_MAX};

use crate::runtime::Runtime;
use crate::serve::connection;
use crate::transport::Transport;
use crate::Qmp;

/// Settings of a [`Proxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyOptions {
    event_queue: usize,
    window: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions { event_queue: 1024, window: QMP_REQ_QUEUE_LEN_MAX }
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
}

/// A proxy over one QEMU connection. Cheap to clone. See the [module docs](self).
#[derive(Clone)]
pub struct Proxy<R: Runtime> {
    hub: Arc<hub::Hub<R>>,
    policy: Arc<Policy>,
    config: ServerConfig,
    audit: Option<Arc<AuditLog>>,
}

impl<R: Runtime> std::fmt::Debug for Proxy<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("clients", &self.clients()).field("policy", &self.policy).finish()
    }
}

impl<R: Runtime> Proxy<R> {
    /// A proxy for `upstream` (best connected with no command timeout: clients wait as long as they choose)
    /// under `policy`. Starts passing QEMU's events on at once (on `upstream`'s runtime).
    pub fn new(upstream: Qmp<R>, policy: Policy, options: ProxyOptions) -> Self {
        let config = upstream::client_config(&upstream);
        let hub = hub::Hub::new(upstream, options.window, options.event_queue);
        fanout::spawn(hub.clone());
        Proxy { hub, policy: Arc::new(policy), config, audit: None }
    }

    /// Records every client command to `audit` (JSON lines: identity, rule, command, arguments if asked for,
    /// result class, duration). Set it before serving: clients served by earlier clones are not recorded.
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(Arc::new(audit));
        self
    }

    /// The connection to QEMU.
    pub fn upstream(&self) -> &Qmp<R> {
        &self.hub.upstream
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.hub.clients()
    }

    /// Stops the proxy: no more clients are accepted, and every client is closed once its commands have been
    /// answered. The upstream connection stays open (close it with [`Qmp::close`]).
    pub fn shutdown(&self) {
        self.hub.shutdown.request();
    }

    /// True once the proxy stopped (asked to, or QEMU went away).
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
        connection::run(self.config.clone(), io, backend).await;
        Ok(())
    }
}
