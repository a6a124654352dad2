//! TLS to Marathon: a TLS-terminating proxy (rustls, a CA and certificates made by the test)
//! in front of the simulator. The server is started from the real command-line flags
//! (`--marathon https://…`, `--marathon-ca-file`, the client certificate flags) and follows
//! the simulator over REST and the event stream; without the CA the sync fails with a TLS
//! error and the server keeps running. A rotated token file is picked up after a 401.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;
use common::*;
use hickory_proto::rr::RecordType;
use marathon_dns::config::{Cli, Command};
use marathon_dns::marathon::client::Auth;
use marathon_dns::server::{self, Running, Settings};
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

/// A test CA, a server certificate for 127.0.0.1 and a client certificate, all from it.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "marathon-dns test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("ca cert");

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server params");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, &ca)
        .expect("server cert");

    let client_key = KeyPair::generate().expect("client key");
    let mut client_params =
        CertificateParams::new(vec!["marathon-dns".to_string()]).expect("client params");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params
        .signed_by(&client_key, &ca)
        .expect("client cert");

    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server_cert: server_cert.der().clone(),
        server_key: server_key.serialize_der(),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The proxy's TLS settings; with `require_client_cert`, only clients with a certificate
/// from the test CA get through.
fn server_config(pki: &Pki, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).expect("ca");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone()));
    Arc::new(
        builder
            .with_single_cert(vec![pki.server_cert.clone()], key)
            .expect("server cert"),
    )
}

/// Connections the proxy saw: accepted TCP, completed TLS handshakes.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    handshakes: AtomicUsize,
}

/// A TLS-terminating proxy on an ephemeral loopback port in front of `upstream` (plain TCP).
async fn tls_proxy(config: Arc<rustls::ServerConfig>, upstream: SocketAddr) -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("proxy addr").port();
    let seen = Arc::new(Seen::default());
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let counts = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counts.connections.fetch_add(1, Ordering::Relaxed);
            let acceptor = acceptor.clone();
            let counts = Arc::clone(&counts);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counts.handshakes.fetch_add(1, Ordering::Relaxed);
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, seen)
}

fn web_app() -> SimApp {
    SimApp::new(
        "/prod/web",
        SimNetwork::Host,
        vec![SimPort::tcp(Some("http"), 0)],
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path.to_string_lossy().into_owned()
}

/// Settings from a `serve` command line (the real flags), made test-friendly like
/// [`settings`]: ephemeral ports, the repo's zones. Leader lookup is off: the simulator
/// advertises its own plain address, the proxy is what must be used (Marathon behind a
/// TLS-terminating load balancer).
fn settings_from_flags(flags: &[&str]) -> Settings {
    let mut argv = vec!["marathon-dns", "serve", "--no-leader-lookup"];
    argv.extend_from_slice(flags);
    let cli = Cli::try_parse_from(argv).expect("flags parse");
    let Some(Command::Serve(args)) = cli.command else {
        panic!("not the serve command");
    };
    let from_flags = Settings::from_args(&args).expect("settings");
    let base = settings(from_flags.marathon.clone());
    Settings {
        listen: base.listen,
        admin_listen: base.admin_listen,
        zones_dir: base.zones_dir,
        ..from_flags
    }
}

async fn srv_count(dns: SocketAddr, name: &str) -> usize {
    srv(&q(dns, name, RecordType::SRV).await).len()
}

async fn start_synced(s: Settings) -> Running {
    let running = server::start(s).await.expect("server starts");
    tokio::time::timeout(TIMEOUT, running.wait_live())
        .await
        .expect("live over TLS in time");
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_marathon_is_followed_over_rest_and_the_event_stream() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app());
    sim.start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");
    let pki = pki();
    let (port, seen) = tls_proxy(server_config(&pki, false), sim.addr()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let url = format!("https://127.0.0.1:{port}");

    let running = start_synced(settings_from_flags(&[
        "--marathon",
        &url,
        "--marathon-ca-file",
        &ca,
    ]))
    .await;
    let dns = running.udp[0];
    // The initial snapshot came over REST through the proxy.
    assert_eq!(srv_count(dns, "_web._tcp.prod.marathon.local").await, 1);
    assert!(sim.requests("/v2/apps") >= 1, "REST went to the simulator");
    assert!(
        sim.requests("/v2/events") >= 1,
        "the event stream went to the simulator"
    );
    assert!(running.status.stream_connected());
    let handshakes = seen.handshakes.load(Ordering::Relaxed);
    assert!(handshakes >= 2, "REST and stream over TLS: {handshakes}");

    // A task start reaches DNS through the event stream (over TLS): no resync is due
    // (the default interval is minutes).
    sim.start_task("/prod/web", "127.0.0.12", &[])
        .expect("task");
    eventually(
        "the new task, seen through the TLS event stream",
        || async { srv_count(dns, "_web._tcp.prod.marathon.local").await == 2 },
    )
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_the_sync_fails_with_a_tls_error_and_the_server_keeps_running() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app());
    sim.start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");
    let pki = pki();
    let (port, seen) = tls_proxy(server_config(&pki, false), sim.addr()).await;
    let url = format!("https://127.0.0.1:{port}");
    let s = settings_from_flags(&["--marathon", &url]);

    // The error a sync gets, as the server logs it: it names the certificate problem.
    let client = server::marathon_client(&s).expect("client");
    let base = reqwest::Url::parse(&format!("{url}/")).expect("url");
    let err = client.apps(&base).await.expect_err("untrusted certificate");
    let text = err.to_string();
    println!("without the CA: {text}");
    assert!(
        text.contains("certificate") && text.contains("UnknownIssuer"),
        "not a clear TLS error: {text}"
    );

    let running = server::start(s)
        .await
        .expect("server starts without Marathon");
    eventually("the server tried Marathon over TLS", || async {
        seen.connections.load(Ordering::Relaxed) >= 2
    })
    .await;
    // Still answering DNS (its static zones), not synced, nothing got through the proxy.
    let m = q(
        running.udp[0],
        "_web._tcp.prod.marathon.local",
        RecordType::SRV,
    )
    .await;
    assert!(srv(&m).is_empty());
    assert!(!running.status.is_synced());
    assert_eq!(seen.handshakes.load(Ordering::Relaxed), 0);
    assert_eq!(sim.requests("/v2/apps"), 0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app());
    sim.start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");
    let pki = pki();
    let (port, _) = tls_proxy(server_config(&pki, true), sim.addr()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let cert = write(dir.path(), "client.pem", &pki.client_cert_pem);
    let key = write(dir.path(), "client.key", &pki.client_key_pem);
    let url = format!("https://127.0.0.1:{port}");

    // Without a client certificate the proxy refuses the handshake.
    let s = settings_from_flags(&["--marathon", &url, "--marathon-ca-file", &ca]);
    let client = server::marathon_client(&s).expect("client");
    let base = reqwest::Url::parse(&format!("{url}/")).expect("url");
    let before = sim.requests("/v2/apps");
    let err = client.apps(&base).await.expect_err("no client certificate");
    println!("without a client certificate: {err}");
    // In TLS 1.3 the server judges the client certificate after the client has finished its
    // half of the handshake, so the client sees either the `CertificateRequired` alert or, when
    // its request raced the alert, a connection closed under it. Either way nothing reached
    // Marathon: that is what the user relies on.
    assert_eq!(sim.requests("/v2/apps"), before, "{err}");

    let running = start_synced(settings_from_flags(&[
        "--marathon",
        &url,
        "--marathon-ca-file",
        &ca,
        "--marathon-client-cert",
        &cert,
        "--marathon-client-key",
        &key,
    ]))
    .await;
    let dns = running.udp[0];
    assert_eq!(srv_count(dns, "_web._tcp.prod.marathon.local").await, 1);
    sim.start_task("/prod/web", "127.0.0.12", &[])
        .expect("task");
    eventually("the new task over mutual TLS", || async {
        srv_count(dns, "_web._tcp.prod.marathon.local").await == 2
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_read_again_after_a_401() {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(web_app());
    sim.start_task("/prod/web", "127.0.0.11", &[])
        .expect("task");
    let pki = pki();
    let (port, _) = tls_proxy(server_config(&pki, false), sim.addr()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let token = write(dir.path(), "token", "first-token\n");
    sim.require_auth(Some(Auth::Token("first-token".into()).header_value()));
    let url = format!("https://127.0.0.1:{port}");
    let s = settings_from_flags(&[
        "--marathon",
        &url,
        "--marathon-ca-file",
        &ca,
        "--marathon-token-file",
        &token,
    ]);
    let client = server::marathon_client(&s).expect("client");
    let base = reqwest::Url::parse(&format!("{url}/")).expect("url");
    assert_eq!(client.apps(&base).await.expect("first token").0.len(), 1);

    // The token expires: Marathon wants the new one, which is written to the file.
    sim.require_auth(Some(Auth::Token("second-token".into()).header_value()));
    write(dir.path(), "token", "second-token\n");
    let (apps, _) = client.apps(&base).await.expect("re-read after the 401");
    assert_eq!(apps.len(), 1);
    assert_eq!(client.auth(), Some(Auth::Token("second-token".into())));

    // An unchanged file is not retried forever: the 401 is the answer.
    sim.require_auth(Some(Auth::Token("third-token".into()).header_value()));
    let err = client.apps(&base).await.expect_err("stale token");
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_from_https_to_plain_http_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Behind the TLS proxy, a "standby" that redirects to a plain-http "leader".
    let standby = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let standby_addr = standby.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = standby.accept().await {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/v2/apps\r\n\
                      Content-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let pki = pki();
    let (port, _) = tls_proxy(server_config(&pki, false), standby_addr).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let url = format!("https://127.0.0.1:{port}");
    let s = settings_from_flags(&[
        "--marathon",
        &url,
        "--marathon-ca-file",
        &ca,
        "--marathon-token",
        "secret-token",
    ]);
    let client = server::marathon_client(&s).expect("client");
    let base = reqwest::Url::parse(&format!("{url}/")).expect("url");
    let err = client.apps(&base).await.expect_err("downgrade");
    assert!(
        matches!(
            err,
            marathon_dns::marathon::client::ClientError::Downgrade { .. }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("secret-token"));
}
