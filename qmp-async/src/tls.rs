//! TLS on the server side with client certificates (feature `tls`): what the proxy's TCP listener speaks.
//!
//! A QMP monitor is root-equivalent, so a TCP listener admits only clients that prove who they are: a
//! [`TlsAcceptor`] presents the server's certificate and requires a client certificate that chains to a given
//! CA (rustls' `WebPkiClientVerifier`, crypto by `ring`). A client without one, or with one from another CA,
//! fails the handshake, and nothing else is ever written to it. The verified certificate's subject becomes the
//! client's identity ([`ClientCertificate`]): the whole distinguished name in the string form of RFC 4514
//! (`CN=alice,OU=operators,O=example`, as `openssl x509 -noout -subject -nameopt RFC2253` prints it), and its
//! common name (`alice`).
//!
//! The stream is any [`Transport`] (a runtime's TCP stream), so this works on every runtime: the handshake is
//! `futures-rustls` over the transport, and the result, a [`TlsStream`], is a [`Transport`] again.
//!
//! ```no_run
//! # fn example() -> Result<(), qmp_async::tls::TlsConfigError> {
//! use qmp_async::tls::TlsAcceptor;
//!
//! let acceptor = TlsAcceptor::from_pem_files("server.pem", "server.key", "clients-ca.pem")?;
//! # let _ = acceptor; Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use x509_cert::der::Decode;

use crate::transport::{Io, Transport};

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A PEM file could not be read, or held nothing usable.
    #[error("{}: {what}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        what: String,
    },
    /// rustls refused the certificates or the key (a key that does not match the certificate, say).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA could not be used to verify client certificates.
    #[error("client CA: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

fn file_error(path: &Path, what: impl fmt::Display) -> TlsConfigError {
    TlsConfigError::File { path: path.to_owned(), what: what.to_string() }
}

/// Reads every certificate of the PEM file `path` (at least one).
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no certificate in the file (PEM, -----BEGIN CERTIFICATE-----)"));
    }
    Ok(certificates)
}

/// The verified certificate of a TLS client: who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientCertificate {
    /// The subject's distinguished name in the string form of RFC 4514 (most specific part first:
    /// `CN=alice,OU=operators,O=example`).
    pub subject: String,
    /// The subject's common name (`alice`), if it has one.
    pub common_name: Option<String>,
}

impl ClientCertificate {
    /// Reads the subject of the DER-encoded certificate `der`.
    pub fn from_der(der: &[u8]) -> Result<Self, x509_cert::der::Error> {
        let certificate = x509_cert::Certificate::from_der(der)?;
        let subject = certificate.tbs_certificate().subject();
        let common_name = subject.common_name()?.map(|name| name.value().into_owned());
        Ok(ClientCertificate { subject: subject.to_string(), common_name })
    }
}

/// How long a client has to complete its handshake, unless told otherwise
/// ([`TlsAcceptor::with_handshake_timeout`]).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS clients that present a certificate chaining to a given CA. Cheap to clone.
#[derive(Clone)]
pub struct TlsAcceptor {
    acceptor: futures_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor").field("handshake_timeout", &self.handshake_timeout).finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// An acceptor presenting the certificate chain of the PEM file `certificate` (the server's certificate
    /// first, then any intermediates) with the private key of the PEM file `key` (PKCS#8, SEC1 or PKCS#1), that
    /// requires every client to present a certificate chaining to one of the CA certificates of the PEM file
    /// `client_ca`. TLS 1.3 and 1.2, rustls' safe defaults, crypto by `ring`.
    pub fn from_pem_files(
        certificate: impl AsRef<Path>,
        key: impl AsRef<Path>,
        client_ca: impl AsRef<Path>,
    ) -> Result<Self, TlsConfigError> {
        let chain = read_certificates(certificate.as_ref())?;
        let key_path = key.as_ref();
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| file_error(key_path, e))?;
        let ca_path = client_ca.as_ref();
        let mut roots = RootCertStore::empty();
        for ca in read_certificates(ca_path)? {
            roots.add(ca).map_err(|e| file_error(ca_path, e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        Ok(TlsAcceptor::new(Arc::new(config)))
    }

    /// An acceptor with a rustls configuration of your own. A configuration that does not require client
    /// certificates admits anonymous clients: [`accept`](Self::accept) then gives no [`ClientCertificate`].
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsAcceptor {
            acceptor: futures_rustls::TlsAcceptor::from(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// How long a client may take to complete its handshake before a listener (the proxy's `serve_tls`)
    /// disconnects it. Default [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a client may take to complete its handshake (see
    /// [`with_handshake_timeout`](Self::with_handshake_timeout)).
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Runs the server's side of the handshake over `io`, and gives the encrypted stream and the client's
    /// verified certificate. A client that fails the handshake (no certificate, one from another CA, an
    /// expired one, not TLS at all) gets an error: [`io::ErrorKind::InvalidData`] with rustls' reason.
    ///
    /// Not bounded in time here: a client that sends nothing keeps it waiting. A listener bounds it with
    /// [`handshake_timeout`](Self::handshake_timeout), as the proxy's `serve_tls` does.
    ///
    /// # Cancel safety
    /// Dropping it drops the connection.
    pub async fn accept<T: Transport>(&self, io: T) -> io::Result<(TlsStream<T>, Option<ClientCertificate>)> {
        let stream = self.acceptor.accept(Plain(io)).await?;
        let certificate = match stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()) {
            Some(der) => Some(ClientCertificate::from_der(der).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("unreadable client certificate: {e}"))
            })?),
            None => None,
        };
        Ok((TlsStream(Io::new(stream)), certificate))
    }
}

/// A [`Transport`] as a futures-io stream, for futures-rustls.
#[derive(Debug)]
struct Plain<T>(T);

impl<T: Transport> AsyncRead for Plain<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.get_mut().0.poll_read(cx, buf)
    }
}

impl<T: Transport> AsyncWrite for Plain<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().0.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().0.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().0.poll_shutdown(cx)
    }
}

/// The server's side of a TLS connection over the transport `T`, itself a [`Transport`] (no descriptor
/// passing). Shutting it down sends TLS's close_notify, then shuts `T` down.
pub struct TlsStream<T>(Io<futures_rustls::server::TlsStream<Plain<T>>>);

impl<T> fmt::Debug for TlsStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream").finish_non_exhaustive()
    }
}

impl<T: Transport> Transport for TlsStream<T> {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.0.poll_read(cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.poll_write(cx, buf)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tls").join(name)
    }

    /// The subject as we read it is the subject as openssl prints it (RFC 2253/4514), recorded by
    /// scripts/gen-test-certs beside each certificate.
    #[test]
    fn subjects_read_as_openssl_prints_them() {
        for (name, common_name) in [("client", "alice"), ("bob", "bob"), ("other-client", "alice")] {
            let der = CertificateDer::from_pem_file(data(&format!("{name}.pem"))).expect("certificate");
            let certificate = ClientCertificate::from_der(&der).expect("readable");
            let openssl = std::fs::read_to_string(data(&format!("{name}.subject"))).expect("subject file");
            assert_eq!(certificate.subject, openssl.trim_end(), "{name}");
            assert_eq!(certificate.common_name.as_deref(), Some(common_name), "{name}");
        }
    }

    #[test]
    fn configurations_from_files_and_their_errors() {
        TlsAcceptor::from_pem_files(data("server.pem"), data("server.key"), data("ca.pem")).expect("valid");
        let missing = TlsAcceptor::from_pem_files(data("nope.pem"), data("server.key"), data("ca.pem"));
        let err = missing.expect_err("missing file").to_string();
        assert!(err.contains("nope.pem"), "{err}");
        let no_certificate = TlsAcceptor::from_pem_files(data("server.key"), data("server.key"), data("ca.pem"));
        let err = no_certificate.expect_err("a key is no certificate").to_string();
        assert!(err.contains("server.key: no certificate"), "{err}");
        let mismatched = TlsAcceptor::from_pem_files(data("server.pem"), data("client.key"), data("ca.pem"));
        let err = mismatched.expect_err("the key of another certificate").to_string();
        assert!(err.starts_with("TLS configuration:"), "{err}");
    }
}
