//! `qmp proxy --upstream QEMU_SOCKET --listen PATH [--policy FILE]`: many clients on one QEMU monitor, each
//! under its policy rule (the library is `qmp_async::proxy`, run here on tokio). `--listen-tcp ADDR` serves
//! TCP too, with TLS and client certificates (`--tls-cert`, `--tls-key`, `--tls-client-ca`), or plain on a
//! loopback address with `--insecure-tcp`.
//!
//! `--upstream` is a unix socket path or a TCP address `HOST:PORT` (`unix:PATH` and `tcp:HOST:PORT` say which
//! when a name could be either, as QEMU's `-qmp` spells them).
//!
//! When QEMU goes away, `--on-upstream-loss close` (the default) ends every pending command with an error, closes
//! the clients and exits (status 3); `--on-upstream-loss hold` keeps the clients connected, answers their
//! commands with an error while QEMU is away, and reconnects to the same address: after
//! `--reconnect-min-delay` seconds (0.1), then pausing twice as long after each failed attempt, up to
//! `--reconnect-max-delay` (5); SIGHUP makes it try at once (after restarting QEMU, say).
//!
//! The policy is TOML, a list of `[[rule]]` tables tried in order; a client matching none is refused before any
//! greeting:
//!
//! ```toml
//! [[rule]]
//! name = "admin"            # named in denials and logs
//! uid = 0                   # conditions, all optional: uid, gid (unix peer credentials), listener (socket path
//!                           # or TCP address), subject or common_name (TLS client certificate)
//! profile = "full"          # one of: profile = "full" | "read-only", allow = [...], deny = [...]
//! allow_quit = true         # `quit` is never allowed by a glob or profile
//!
//! [[rule]]
//! name = "monitoring"
//! gid = 1001
//! allow = ["query-*", "qom-get"]
//! events = []               # the events its clients get: names and globs (["BLOCK_JOB_*"]); all when absent
//!
//! [[rule]]
//! name = "alice"
//! common_name = "alice"     # or subject = "CN=alice,OU=operators,O=example" (RFC 4514, as openssl prints it
//! profile = "full"          # with -nameopt RFC2253)
//! ```
//!
//! `--audit FILE` appends one JSON line per client command (`--audit-arguments` adds the arguments).
//!
//! Without `--policy`, only the user running the proxy may connect, to every command but `quit`. The socket is
//! created owner-only (0600) unless a rule admits other users (a rule without a uid, or with another uid):
//! then it is 0666 and the policy alone decides, from each peer's SO_PEERCRED credentials. Rules that only TLS
//! clients can match (a subject or common name) or that name another listener do not open the socket.
//!
//! TCP needs `--policy` (its clients match no uid), and TLS: the client must present a certificate that chains
//! to `--tls-client-ca`. Plain TCP (`--insecure-tcp`) is refused off loopback before anything starts, and
//! warned about on loopback.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use std::time::Duration;

use qmp_async::proxy::{self, AuditLog, Policy, Proxy, ProxyOptions, Upstream, UpstreamLoss};
use qmp_async::serve::Serving;
use qmp_async::tls::TlsAcceptor;
use qmp_tokio::{Options, Tokio};

use crate::output::Failure;

/// The arguments of `qmp proxy`.
#[derive(Debug, clap::Args)]
pub struct Settings {
    /// QEMU's QMP monitor (the one connection the proxy holds): a unix socket path, or HOST:PORT for TCP
    /// (`unix:PATH`, `tcp:HOST:PORT` to say which).
    #[arg(long, value_name = "QEMU_SOCKET")]
    upstream: Upstream,
    /// When QEMU goes away: close every client and exit, or hold them connected (their commands get an error
    /// meanwhile) and reconnect; SIGHUP makes a holding proxy reconnect at once.
    #[arg(long, value_enum, default_value_t = OnLoss::Close)]
    on_upstream_loss: OnLoss,
    /// Pause, in seconds, before the first attempt to reconnect (with `--on-upstream-loss hold`); each next
    /// attempt waits twice as long as the one before, up to --reconnect-max-delay.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.1)]
    reconnect_min_delay: f64,
    /// Longest pause, in seconds, between attempts to reconnect.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    reconnect_max_delay: f64,
    /// Unix socket to serve clients on (created; removed first if it is a stale socket).
    #[arg(long, value_name = "PATH", required_unless_present = "listen_tcp")]
    listen: Option<PathBuf>,
    /// TCP address to serve clients on (HOST:PORT; besides --listen or instead), with TLS: each client must present a certificate that
    /// chains to --tls-client-ca, and is known to the policy by its subject or common name. Needs --policy.
    #[arg(long, value_name = "ADDR", requires = "policy")]
    listen_tcp: Option<String>,
    /// The proxy's TLS certificate chain (PEM) for --listen-tcp.
    #[arg(long, value_name = "FILE", requires_all = ["listen_tcp", "tls_key", "tls_client_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA certificates (PEM) that clients' certificates must chain to.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Serve --listen-tcp without TLS: allowed on a loopback address only (127.0.0.1, ::1), where any local user
    /// can connect and the policy alone decides. Warned about.
    #[arg(long, requires = "listen_tcp", conflicts_with = "tls_cert")]
    insecure_tcp: bool,
    /// TOML policy file: `[[rule]]` tables (see the README).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Events a client may fall behind by before it is disconnected.
    #[arg(long, default_value_t = 1024)]
    event_queue: usize,
    /// Append one JSON line per client command to FILE (identity, rule, command, result class, duration).
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// Record the commands' arguments in the audit log too (they may hold secrets).
    #[arg(long, requires = "audit")]
    audit_arguments: bool,
}

/// `--on-upstream-loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnLoss {
    /// Close every client and exit.
    Close,
    /// Keep the clients and reconnect.
    Hold,
}

/// Reads and checks the policy file.
pub fn load_policy(path: &Path) -> Result<Policy, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("policy {}: {e}", path.display())))?;
    let policy: Policy = toml::from_str(&text)
        .map_err(|e| Failure::Usage(format!("policy {}: {}", path.display(), e.to_string().trim_end())))?;
    policy.validate().map_err(|e| Failure::Usage(format!("policy {}: {e}", path.display())))
}

/// Whether `policy` admits anyone but `owner` on the unix socket `listener` (then it must be reachable by
/// others): a rule for another uid, or for no uid, that a unix client of `listener` can match.
fn admits_others(policy: &Policy, owner: u32, listener: &str) -> bool {
    policy.rules().iter().any(|rule| {
        rule.get_uid() != Some(owner)
            && !rule.needs_certificate()
            && rule.get_listener().is_none_or(|name| name == listener)
    })
}

/// The TCP listener of `--listen-tcp`, bound, and how it admits clients.
struct TcpSettings {
    listener: TcpListener,
    address: SocketAddr,
    /// `None`: plain TCP (`--insecure-tcp`, on loopback).
    tls: Option<TlsAcceptor>,
}

/// Binds `--listen-tcp` and reads its TLS files, or checks that plain TCP is on loopback: before anything starts.
fn tcp_settings(settings: &Settings) -> Result<Option<TcpSettings>, Failure> {
    let Some(addr) = &settings.listen_tcp else { return Ok(None) };
    let tls = match (&settings.tls_cert, &settings.tls_key, &settings.tls_client_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            Some(TlsAcceptor::from_pem_files(cert, key, ca).map_err(|e| Failure::Usage(e.to_string()))?)
        }
        _ if settings.insecure_tcp => None,
        _ => {
            return Err(Failure::Usage(format!(
                "--listen-tcp {addr} needs TLS: --tls-cert, --tls-key and --tls-client-ca (or --insecure-tcp, \
                 on a loopback address only)"
            )))
        }
    };
    let listener = TcpListener::bind(addr).map_err(|e| Failure::Usage(format!("cannot listen on {addr}: {e}")))?;
    let address = listener.local_addr().map_err(|e| Failure::Usage(format!("{addr}: {e}")))?;
    if tls.is_none() {
        proxy::check_loopback(address).map_err(|e| Failure::Usage(format!("--insecure-tcp: {e}")))?;
    }
    Ok(Some(TcpSettings { listener, address, tls }))
}

/// Runs the proxy until QEMU goes away.
pub fn run(settings: Settings, timeout: Duration) -> Result<(), Failure> {
    for (option, seconds) in [
        ("--reconnect-min-delay", settings.reconnect_min_delay),
        ("--reconnect-max-delay", settings.reconnect_max_delay),
    ] {
        if !(seconds > 0.0 && seconds.is_finite()) {
            return Err(Failure::Usage(format!("{option} must be a positive number of seconds")));
        }
    }
    let owner = rustix::process::geteuid().as_raw();
    let policy = match &settings.policy {
        Some(path) => load_policy(path)?,
        None => Policy::owner_only(owner),
    };
    let unix_name = settings.listen.as_ref().map(|path| path.display().to_string()).unwrap_or_default();
    let mode = if admits_others(&policy, owner, &unix_name) { 0o666 } else { 0o600 };
    let tcp = tcp_settings(&settings)?;
    let audit = match &settings.audit {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Failure::Usage(format!("audit log {}: {e}", path.display())))?;
            Some(AuditLog::new(file).with_arguments(settings.audit_arguments))
        }
        None => None,
    };
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Connection(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        // QEMU answers in-band commands in order: without ids it reads 7+ bytes fewer per command.
        let upstream_options = Options::default().connect_timeout(timeout).command_timeout(None).in_band_ids(false);
        let loss = match settings.on_upstream_loss {
            OnLoss::Close => UpstreamLoss::Close,
            OnLoss::Hold => UpstreamLoss::Hold,
        };
        let options = ProxyOptions::default().event_queue(settings.event_queue).on_upstream_loss(loss).reconnect_delay(
            Duration::from_secs_f64(settings.reconnect_min_delay),
            Duration::from_secs_f64(settings.reconnect_max_delay),
        );
        let upstream = settings.upstream.clone();
        let mut proxy = Proxy::<Tokio>::connect(upstream, upstream_options, policy, options)
            .await
            .map_err(|e| Failure::Connection(format!("{}: {e}", settings.upstream)))?;
        let version = proxy.upstream().greeting().version_string();
        reconnect_on_sighup(&proxy)?;
        if let Some(audit) = audit {
            proxy = proxy.with_audit(audit);
        }
        let mut listeners: Vec<(String, Serving)> = Vec::new();
        let mut served_on = Vec::new();
        if let Some(path) = &settings.listen {
            remove_stale_socket(path)?;
            listeners.push((path.display().to_string(), bind(&proxy, path, mode)?));
            served_on.push(format!("{} (mode {mode:o})", path.display()));
        }
        if let Some(tcp) = tcp {
            let serving = match tcp.tls {
                Some(acceptor) => proxy::serve_tls(Tokio, &proxy, tcp.listener, acceptor),
                None => proxy::serve_tcp_insecure(Tokio, &proxy, tcp.listener),
            }
            .map_err(|e| Failure::Connection(format!("cannot listen on {}: {e}", tcp.address)))?;
            let kind = if settings.insecure_tcp { "plain TCP" } else { "TLS, client certificates required" };
            served_on.push(format!("{} ({kind})", tcp.address));
            listeners.push((tcp.address.to_string(), serving));
        }
        eprintln!(
            "qmp proxy: QEMU {version} at {} served on {} with {} policy rule(s)",
            settings.upstream,
            served_on.join(" and "),
            proxy.policy().rules().len()
        );
        if settings.insecure_tcp {
            eprintln!(
                "qmp proxy: WARNING: plain TCP without TLS (--insecure-tcp): any local user or process can connect \
                 to {}, and only the policy decides what it may run",
                served_on.last().map_or("", String::as_str)
            );
        }
        let result = serve_all(&proxy, listeners).await;
        if let Some(path) = &settings.listen {
            let _ = std::fs::remove_file(path);
        }
        result?;
        match proxy.upstream().connection_error() {
            Some(why) => Err(Failure::Connection(format!("QEMU's connection is over: {why}"))),
            None => Ok(()),
        }
    })
}

/// Serves every listener until the proxy stops; one that fails stops the proxy, and its error is returned.
async fn serve_all(proxy: &Proxy<Tokio>, listeners: Vec<(String, Serving)>) -> Result<(), Failure> {
    let tasks: Vec<_> = listeners
        .into_iter()
        .map(|(name, serving)| {
            let proxy = proxy.clone();
            let task = tokio::spawn(async move {
                let result = serving.await;
                if result.is_err() {
                    proxy.shutdown();
                }
                result
            });
            (name, task)
        })
        .collect();
    let mut failure = None;
    for (name, task) in tasks {
        let result = task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = result {
            failure.get_or_insert(Failure::Connection(format!("accepting on {name}: {e}")));
        }
    }
    failure.map_or(Ok(()), Err)
}

/// SIGHUP asks a proxy that holds its clients to reconnect now (a thread waits for it).
fn reconnect_on_sighup(proxy: &Proxy<Tokio>) -> Result<(), Failure> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| Failure::Connection(format!("cannot handle SIGHUP: {e}")))?;
    let proxy = proxy.clone();
    std::thread::spawn(move || {
        for _ in signals.forever() {
            tracing::info!(connected = proxy.is_upstream_connected(), "SIGHUP: reconnecting if QEMU is away");
            proxy.reconnect();
        }
    });
    Ok(())
}

/// Binds the listening socket with `mode` from the start (through the umask: no moment when others could
/// connect).
fn bind(proxy: &Proxy<Tokio>, path: &Path, mode: u32) -> Result<qmp_async::serve::Serving, Failure> {
    let mask = rustix::fs::Mode::from_bits_truncate(!mode & 0o777);
    let old = rustix::process::umask(mask);
    let bound = proxy::serve_unix(Tokio, proxy, path);
    rustix::process::umask(old);
    bound.map_err(|e| Failure::Connection(format!("cannot listen on {}: {e}", path.display())))
}

/// Removes `path` if it is a socket nobody listens on (left by a proxy that was killed).
fn remove_stale_socket(path: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_socket() {
        return Err(Failure::Usage(format!("{} exists and is not a socket", path.display())));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(Failure::Usage(format!("{} is in use by another server", path.display())));
    }
    std::fs::remove_file(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

/// Logs the proxy's lifecycle (clients, denials, disconnections) to stderr; `RUST_LOG`-style levels through
/// `QMP_LOG` (default `info`).
fn init_logging() {
    let level = std::env::var("QMP_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_target(false).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Policy, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, text).expect("write");
        load_policy(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn a_policy_file_reads_and_decides() {
        let policy = policy(
            "[[rule]]\nname = \"admin\"\nuid = 0\nprofile = \"full\"\nallow_quit = true\n\n\
             [[rule]]\nname = \"metrics\"\ngid = 1001\nallow = [\"query-*\"]\nevents = [\"BLOCK_JOB_*\"]\n",
        )
        .expect("valid");
        let metrics = policy.rule_for(&qmp_async::proxy::Identity::unix("s", 1000, 1001)).expect("metrics");
        assert_eq!(metrics.name(), "metrics");
        assert!(metrics.check("query-status").is_ok() && metrics.check("stop").is_err());
        assert!(metrics.takes_event("BLOCK_JOB_READY") && !metrics.takes_event("SHUTDOWN"));
        assert!(admits_others(&policy, 0, "s"), "the metrics rule admits other users");
        assert!(!admits_others(&Policy::owner_only(0), 0, "s"));
    }

    #[test]
    fn rules_that_no_unix_client_can_match_keep_the_socket_owner_only() {
        let policy = policy(
            "[[rule]]\nname = \"owner\"\nuid = 0\nprofile = \"full\"\n\n\
             [[rule]]\nname = \"alice\"\ncommon_name = \"alice\"\nprofile = \"full\"\n\n\
             [[rule]]\nname = \"tls\"\nsubject = \"CN=bob,O=example\"\nprofile = \"read-only\"\n\n\
             [[rule]]\nname = \"local-tcp\"\nlistener = \"127.0.0.1:4444\"\nprofile = \"read-only\"\n",
        )
        .expect("valid");
        assert!(!admits_others(&policy, 0, "/run/p.sock"));
        assert!(admits_others(&policy, 0, "127.0.0.1:4444"), "a rule naming the listener opens it");
        let bob = qmp_async::proxy::Identity::tls("127.0.0.1:5555", "CN=bob,O=example").with_common_name("bob");
        assert_eq!(policy.rule_for(&bob).map(|r| r.name()), Some("tls"));
    }

    #[test]
    fn an_invalid_policy_is_refused_with_a_clear_message() {
        for (text, why) in [
            ("[[rule]]\nname = \"x\"\nprofile = \"everything\"\n", "unknown variant `everything`"),
            ("[[rule]]\nname = \"x\"\nallow = [\"a\"]\ndeny = [\"b\"]\n", "give only one of profile, allow and deny"),
            ("[[rule]]\nname = \"x\"\nuid = 0\nprofile = \"full\"\ncolour = 1\n", "unknown field `colour`"),
            ("", "no rule"),
        ] {
            let err = policy(text).expect_err(why);
            assert!(err.contains(why) && err.contains("policy.toml"), "{err}");
        }
    }
}
