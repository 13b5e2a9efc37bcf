//! The proxy's listeners: who may connect, and how each client is known to the [`Policy`](super::Policy).
//!
//! A QMP socket is root-equivalent, so each kind of listener says who is at the other end before any greeting:
//!
//! | listener | identity | |
//! |---|---|---|
//! | [`serve_unix`] | the peer's uid, gid and pid (SO_PEERCRED) | the socket file's mode is the caller's |
//! | `serve_tls` (feature `tls`) | the subject of the client's certificate | verified against a CA |
//! | [`serve_tcp_insecure`] | none but the listener | a loopback address only |
//!
//! Every listener names its clients' listener: the socket path, or the TCP address bound (`127.0.0.1:4444`,
//! `[::1]:4444`), which a rule's `listener` condition matches. A client whose TLS handshake fails (no
//! certificate, one from another CA, none within the acceptor's handshake timeout, 10 s by default) or that no
//! rule admits is closed without a greeting. Each client is served in a task of its own, handshake included: a
//! slow one delays no other.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use super::{Identity, Proxy};
use crate::runtime::Net;
use crate::serve::{accept_until, Accept, Serving, TcpAccept, UnixAccept};
use crate::transport::{peer_credentials, Transport};

/// Binds a unix socket at `path` and returns the future that serves `proxy` on it: each client is identified by
/// its peer credentials (SO_PEERCRED) and the listener name `path`, admitted or refused by the policy, and
/// served in a task of its own. The future resolves when the proxy stops (QEMU gone, or
/// [`Proxy::shutdown`]); clients still connected are closed by the proxy on their own.
///
/// The socket is created with the process's umask: set the permissions you want on `path` (the `qmp proxy`
/// command makes it owner-only unless its policy names other users or groups).
pub fn serve_unix<R: Net>(runtime: R, proxy: &Proxy<R>, path: impl AsRef<Path>) -> io::Result<Serving> {
    let listener = UnixAccept::<R>(runtime.bind_unix(path.as_ref())?);
    let name = path.as_ref().display().to_string();
    Ok(serve_clients(runtime, proxy.clone(), listener, move |stream: R::UnixStream| {
        let mut identity = Identity::anonymous(name.clone());
        if let Some(creds) = stream.unix_socket().and_then(|fd| peer_credentials(fd).ok()) {
            identity = Identity::unix(name.clone(), creds.uid, creds.gid).with_pid(creds.pid);
        }
        std::future::ready(Some((stream, identity)))
    }))
}

/// Serves `proxy` over TLS on the bound TCP `listener` (to port 0, say, whose port `listener.local_addr()`
/// tells): every client must present a certificate that `acceptor` verifies (chaining to its client CA), and
/// is known by that certificate's subject and common name (see the [policy docs](super::policy)). A client
/// that fails the handshake or does not complete it within the acceptor's
/// [`handshake_timeout`](crate::tls::TlsAcceptor::handshake_timeout) is disconnected, logged, and never greeted.
/// The future resolves as [`serve_unix`]'s does.
#[cfg(feature = "tls")]
pub fn serve_tls<R: Net>(
    runtime: R,
    proxy: &Proxy<R>,
    listener: std::net::TcpListener,
    acceptor: crate::tls::TlsAcceptor,
) -> io::Result<Serving> {
    let name = listener.local_addr()?.to_string();
    let accept = TcpAccept::<R>(runtime.tcp_listener_from_std(listener)?);
    let timer = runtime.clone();
    Ok(serve_clients(runtime, proxy.clone(), accept, move |stream: R::TcpStream| {
        let (acceptor, name, runtime) = (acceptor.clone(), name.clone(), timer.clone());
        async move {
            let limit = acceptor.handshake_timeout();
            let deadline = runtime.timer(runtime.now() + limit);
            match crate::runtime::until(deadline, acceptor.accept(stream)).await {
                Some(Ok((stream, Some(certificate)))) => {
                    let mut identity = Identity::tls(name, certificate.subject);
                    identity.common_name = certificate.common_name;
                    Some((stream, identity))
                }
                // Only with a rustls configuration of the caller's that does not ask for certificates.
                Some(Ok((stream, None))) => Some((stream, Identity::anonymous(name))),
                Some(Err(error)) => {
                    tracing::warn!(listener = %name, %error, "TLS client refused: its handshake failed");
                    None
                }
                None => {
                    tracing::warn!(listener = %name, "TLS client refused: no handshake within {limit:?}");
                    None
                }
            }
        }
    }))
}

/// Serves `proxy` over plain TCP on the bound `listener`, which must be on a loopback address (127.0.0.0/8,
/// `::1`): anyone who can reach the port is a client, known only by the listener's name, so the policy alone
/// decides (give such a listener a rule of its own, with `listener = "127.0.0.1:PORT"`). Any other address is
/// refused with [`io::ErrorKind::PermissionDenied`] (use `serve_tls` there, feature `tls`). Logs a warning when it starts.
pub fn serve_tcp_insecure<R: Net>(
    runtime: R,
    proxy: &Proxy<R>,
    listener: std::net::TcpListener,
) -> io::Result<Serving> {
    let address = listener.local_addr()?;
    check_loopback(address)?;
    tracing::warn!(%address, "serving QMP over plain TCP: any local user or process can connect");
    let name = address.to_string();
    let accept = TcpAccept::<R>(runtime.tcp_listener_from_std(listener)?);
    Ok(serve_clients(runtime, proxy.clone(), accept, move |stream: R::TcpStream| {
        std::future::ready(Some((stream, Identity::anonymous(name.clone()))))
    }))
}

/// Whether plain TCP may be served at `address`: only on a loopback address.
pub fn check_loopback(address: SocketAddr) -> io::Result<()> {
    if address.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "plain TCP is served on a loopback address only (127.0.0.1, ::1), not on {address}: a QMP socket is \
             root-equivalent, so use TLS with client certificates there"
        ),
    ))
}

/// Accepts connections on `listener` until the proxy stops; each one is admitted by `admit` (which gives its
/// transport and identity, or `None` to drop it) and served, in a task of its own.
fn serve_clients<R, L, F, A, T>(runtime: R, proxy: Proxy<R>, listener: L, admit: F) -> Serving
where
    R: Net,
    L: Accept<R>,
    F: Fn(L::Stream) -> A + Send + Sync + 'static,
    A: Future<Output = Option<(T, Identity)>> + Send + 'static,
    T: Transport,
{
    Box::pin(async move {
        loop {
            let stream = match accept_until(&runtime, &listener, &proxy.hub.shutdown).await {
                None => return Ok(()),
                Some(Ok(stream)) => stream,
                Some(Err(e)) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Some(Err(e)) => return Err(e),
            };
            let admission = admit(stream);
            let proxy = proxy.clone();
            runtime.spawn(async move {
                if let Some((io, identity)) = admission.await {
                    let _ = proxy.serve_client(io, identity).await;
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tcp_only_on_loopback() {
        for ok in ["127.0.0.1:4444", "127.1.2.3:1", "[::1]:4444", "[::ffff:127.0.0.1]:4444"] {
            assert!(check_loopback(ok.parse().expect("address")).is_ok(), "{ok}");
        }
        for refused in ["0.0.0.0:4444", "[::]:4444", "192.0.2.1:4444", "[::ffff:192.0.2.1]:4444"] {
            let err = check_loopback(refused.parse().expect("address")).expect_err(refused);
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
            assert!(err.to_string().contains("loopback address only") && err.to_string().contains(refused), "{err}");
        }
    }
}
