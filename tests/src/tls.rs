//! TLS for the tests of the proxy's TCP listener: the test certificates of `tests/data/tls/` (written by
//! `scripts/gen-test-certs`) and a blocking rustls client that reads QMP lines.
//!
//! | file | what |
//! | --- | --- |
//! | `ca.pem` | the test CA, which signed the server's certificate and the good clients' |
//! | `server.pem`, `server.key` | the proxy's certificate, for `localhost`, `127.0.0.1` and `::1` |
//! | `client.pem`, `client.key` | a good client: [`ALICE`] |
//! | `bob.pem`, `bob.key` | another good client: `CN=bob,O=qmp-rs tests` |
//! | `other-client.pem`, `other-client.key` | alice's very subject, signed by another CA (`other-ca.pem`) |

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// The subject of `client.pem`, in the string form of RFC 4514 (as the proxy reads it).
pub const ALICE: &str = "CN=alice,OU=operators,O=qmp-rs tests";

/// The path of the test file `name` (`ca.pem`, `client.key`, ...).
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/tls").join(name)
}

/// A client configuration that trusts the test CA for the server, presenting the certificate `NAME.pem` (key
/// `NAME.key`) when `client` is `Some(NAME)`, none otherwise.
pub fn client_config(client: Option<&str>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(data("ca.pem")).expect("ca.pem")).expect("a CA certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match client {
        Some(name) => {
            let chain = vec![CertificateDer::from_pem_file(data(&format!("{name}.pem"))).expect("certificate")];
            let key = PrivateKeyDer::from_pem_file(data(&format!("{name}.key"))).expect("key");
            builder.with_client_auth_cert(chain, key).expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A blocking TLS client of the server at `addr` (as `localhost`), reading lines with a 10 s timeout.
#[derive(Debug)]
pub struct TlsClient {
    reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Connects to `addr` with the certificate `client` (see [`client_config`]). The handshake completes when
    /// the first line is read: with TLS 1.3 the client finishes before the server has checked its certificate.
    pub fn connect(addr: SocketAddr, client: Option<&str>) -> TlsClient {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let name = ServerName::try_from("localhost").expect("a server name");
        let tls = ClientConnection::new(client_config(client), name).expect("a TLS client");
        TlsClient { reader: BufReader::new(StreamOwned::new(tls, tcp)) }
    }

    /// The next line (CRLF included); `Ok("")` at the end of the stream, `Err` when the TLS session failed (a
    /// refused certificate comes back as an alert).
    pub fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line)
    }

    /// Writes `text` and flushes it.
    pub fn send(&mut self, text: &str) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(text.as_bytes())?;
        stream.flush()
    }

    /// Everything the server sends until the session ends, or the error that ends it: for a refused client,
    /// no greeting at all.
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        self.reader.read_to_end(&mut all)?;
        Ok(all)
    }
}
