//! Who may connect to the proxy over TCP (`qmp_async::proxy::serve_tls`, `serve_tcp_insecure`), on smol, with a
//! real qemu-storage-daemon 10 upstream: a client with a certificate of the trusted CA gets a greeting and runs
//! what the rule naming its subject allows; a verified client that no rule names, one whose certificate comes
//! from another CA, one with no certificate, one that says nothing and one that does not speak TLS get no
//! greeting; plain TCP works on loopback and is refused anywhere else.

use std::net::{SocketAddr, TcpListener};

use qmp_async::proxy::{self, Policy, Profile, Proxy, ProxyOptions, Rule};
use qmp_async::tls::TlsAcceptor;
use qmp_smol::{Error, Options, Qmp, Smol};
use qmp_tests::require;
use qmp_tests::servers::QemuServer;
use qmp_tests::tls::{self, TlsClient, ALICE};
use rustls::pki_types::ServerName;
use serde_json::Value;

/// A proxy on smol for the QEMU at `server`, under `policy`.
async fn start_proxy(server: &QemuServer, policy: Policy) -> Proxy<Smol> {
    let options = Options::default().command_timeout(None);
    let qemu = Qmp::connect_unix(server.socket_path(), options).await.expect("connect to QEMU");
    Proxy::new(qemu, policy.validate().expect("valid policy"), ProxyOptions::default())
}

fn loopback_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    (listener, addr)
}

fn acceptor() -> TlsAcceptor {
    TlsAcceptor::from_pem_files(tls::data("server.pem"), tls::data("server.key"), tls::data("ca.pem"))
        .expect("the test certificates")
}

/// Our own client over TLS with the certificate `NAME.pem`.
async fn qmp_over_tls(addr: SocketAddr, name: &str) -> Result<Qmp, Error> {
    let tcp = smol::net::TcpStream::connect(addr).await.expect("connect");
    let connector = futures_rustls::TlsConnector::from(tls::client_config(Some(name)));
    let stream = connector.connect(ServerName::try_from("localhost").expect("name"), tcp).await.expect("handshake");
    Qmp::from_stream(stream, Options::default()).await
}

/// What a refused client sees: the end of the session, or the TLS alert that ends it; never a greeting.
fn assert_no_greeting(addr: SocketAddr, certificate: Option<&str>, alert: &str) {
    let mut client = TlsClient::connect(addr, certificate);
    match client.read_to_end() {
        Ok(bytes) => assert!(bytes.is_empty() && alert.is_empty(), "{certificate:?} read {bytes:?}"),
        Err(e) => assert!(!alert.is_empty() && e.to_string().contains(alert), "{certificate:?}: {e}"),
    }
}

#[test]
fn tls_clients_are_known_by_their_certificate_and_refused_without_a_good_one() {
    let server = require!(QemuServer::storage_daemon());
    smol::block_on(async {
        let policy = Policy::new(vec![
            Rule::new("operators").subject(ALICE).allow(["query-*"]),
            Rule::new("nobody-else").uid(0).profile(Profile::Full),
        ]);
        let proxy = start_proxy(&server, policy).await;
        let (listener, addr) = loopback_listener();
        smol::spawn(proxy::serve_tls(Smol::default(), &proxy, listener, acceptor()).expect("serve")).detach();

        // The good client: QEMU's greeting through the proxy, and what its rule allows.
        let alice = qmp_over_tls(addr, "client").await.expect("a greeting over TLS");
        let major = server.version().major;
        assert_eq!(alice.greeting().version.as_ref().map(|v| v.major), Some(major), "QEMU's own version");
        let version: Value = alice.execute("query-version", ()).await.expect("allowed");
        assert_eq!(version["qemu"]["major"].as_u64(), Some(major));
        let add = alice.execute::<Value>("blockdev-add", serde_json::json!({"driver": "null-co", "node-name": "n0"}));
        match add.await {
            Err(Error::Qmp(e)) => {
                assert_eq!(e.desc, "The command blockdev-add is denied by the proxy policy 'operators'")
            }
            other => panic!("expected a denial, got {other:?}"),
        }
        let nodes: Value = proxy.upstream().execute("query-named-block-nodes", ()).await.expect("upstream");
        assert_eq!(nodes, Value::Array(vec![]), "the denied command never reached QEMU");

        // Refused before any greeting: a verified certificate no rule names, one from another CA (with alice's
        // very subject), none at all.
        let (tls_refusals, policy_refusals) =
            ([(Some("other-client"), "UnknownCA"), (None, "CertificateRequired")], [(Some("bob"), "")]);
        for (certificate, alert) in tls_refusals.into_iter().chain(policy_refusals) {
            smol::unblock(move || assert_no_greeting(addr, certificate, alert)).await;
        }
        assert_eq!(proxy.clients(), 1, "only alice is connected");
        alice.close().await;
    });
}

#[test]
fn a_silent_client_and_a_plain_one_on_the_tls_port_get_no_greeting() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let server = require!(QemuServer::storage_daemon());
    smol::block_on(async {
        let proxy = start_proxy(&server, Policy::new(vec![Rule::new("all").profile(Profile::Full)])).await;
        let (listener, addr) = loopback_listener();
        let acceptor = acceptor().with_handshake_timeout(Duration::from_millis(300));
        smol::spawn(proxy::serve_tls(Smol::default(), &proxy, listener, acceptor).expect("serve")).detach();
        smol::unblock(move || {
            // Says nothing: disconnected once the handshake timeout has passed.
            let mut silent = std::net::TcpStream::connect(addr).expect("connect");
            silent.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            let started = Instant::now();
            let mut got = Vec::new();
            silent.read_to_end(&mut got).expect("the end of the stream");
            assert!(got.is_empty(), "{got:?}");
            assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
            // Speaks plain QMP: a TLS alert at most, never QMP.
            let mut plain = std::net::TcpStream::connect(addr).expect("connect");
            plain.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            plain.write_all(b"{\"execute\": \"qmp_capabilities\"}\r\n").expect("write");
            let mut got = Vec::new();
            let _ = plain.read_to_end(&mut got);
            assert!(!got.contains(&b'{'), "{}", String::from_utf8_lossy(&got));
        })
        .await;
        assert_eq!(proxy.clients(), 0);
    });
}

#[test]
fn plain_tcp_is_served_on_loopback_only() {
    let server = require!(QemuServer::storage_daemon());
    smol::block_on(async {
        let proxy = start_proxy(&server, Policy::new(vec![Rule::new("local").profile(Profile::ReadOnly)])).await;
        for everywhere in ["0.0.0.0:0", "[::]:0"] {
            let Ok(listener) = TcpListener::bind(everywhere) else { continue }; // no IPv6 here
            let Err(refused) = proxy::serve_tcp_insecure(Smol::default(), &proxy, listener) else {
                panic!("plain TCP served on {everywhere}")
            };
            assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied, "{everywhere}");
            assert!(refused.to_string().contains("loopback address only"), "{refused}");
        }
        let (listener, addr) = loopback_listener();
        smol::spawn(proxy::serve_tcp_insecure(Smol::default(), &proxy, listener).expect("loopback")).detach();
        let tcp = smol::net::TcpStream::connect(addr).await.expect("connect");
        let client = Qmp::from_stream(tcp, Options::default()).await.expect("a greeting over plain TCP");
        let status: Value = client.execute("query-version", ()).await.expect("read-only allows queries");
        assert!(status["qemu"].is_object(), "{status}");
        client.close().await;
    });
}
