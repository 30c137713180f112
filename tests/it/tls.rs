//! TLS and mutual TLS on the real server, with a CA generated in the test (rcgen): tonic
//! clients over https, the metrics port over TLS, clients without a valid certificate
//! refused, and a renewed certificate taken up without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use loyalscore::proto::v1::scoring_client::ScoringClient;
use loyalscore::registry::{Expect, Registry};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::server::{features_request, typical, wait_for, TestServer};
use crate::support::{promote, publish};

/// A CA, and certificates it signs, written as PEM files.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf certificate for `names` as (certificate PEM, key PEM).
    fn leaf(&self, cn: &str, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    // Written aside and renamed, as a Secret volume updates: never half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

async fn serving(dir: &Path) -> String {
    let path = dir.join("reg");
    let path = path.to_str().unwrap().to_string();
    let reg = Registry::open(&path).unwrap();
    publish(&reg, "v001").await;
    promote(&reg, "v001", Expect::Absent).await;
    path
}

async fn tls_channel(
    server: &TestServer,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://localhost:{}", server.addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn scores(ch: Channel) -> Result<String, tonic::Status> {
    let r = ScoringClient::new(ch)
        .score(features_request("c1", typical()))
        .await?;
    Ok(r.into_inner().model_version)
}

/// A raw TLS client (rustls) trusting `ca`, presenting `identity` when given.
fn connector(ca: &str, identity: Option<&(String, String)>) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The common name of the certificate a TLS server at `port` presents.
async fn presented_cn(port: u16, ca: &str) -> String {
    let connector = connector(ca, None);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let text = String::from_utf8_lossy(&der).to_string();
    ["server-1", "server-2"]
        .into_iter()
        .find(|cn| text.contains(cn))
        .unwrap_or("?")
        .to_string()
}

/// TLS on both ports: an https client that trusts the CA scores; a plaintext one cannot; the
/// metrics port speaks TLS too; a renewed certificate is presented to new connections
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_clients_and_takes_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let registry = serving(dir.path()).await;
    let ca = Ca::new("test CA");
    let (cert, key) = ca.leaf("server-1", &["localhost", "127.0.0.1"]);
    let cert_file = write(dir.path(), "tls.crt", &cert);
    let key_file = write(dir.path(), "tls.key", &key);
    let (c, k) = (cert_file.clone(), key_file.clone());
    let server = TestServer::start(&registry, move |cfg| {
        cfg.tls_cert = Some(c.to_str().unwrap().into());
        cfg.tls_key = Some(k.to_str().unwrap().into());
    })
    .await;
    let mut version = None;
    for _ in 0..100 {
        if let Ok(ch) = tls_channel(&server, &ca.pem, None).await {
            if let Ok(v) = scores(ch).await {
                version = Some(v);
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(version.as_deref(), Some("v001"));

    let plain = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(ch) => scores(ch).await.is_err(),
    };
    assert!(refused, "a plaintext client was answered");
    assert_eq!(
        presented_cn(server.metrics_addr.port(), &ca.pem).await,
        "server-1"
    );

    // Renewal: new files in place; new connections get the new certificate.
    let (cert2, key2) = ca.leaf("server-2", &["localhost", "127.0.0.1"]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    write(dir.path(), "tls.key", &key2);
    write(dir.path(), "tls.crt", &cert2);
    let port = server.addr.port();
    wait_for(async || presented_cn(port, &ca.pem).await == "server-2").await;
    let ch = tls_channel(&server, &ca.pem, None).await.unwrap();
    assert_eq!(scores(ch).await.unwrap(), "v001");
    server.stop().await;
}

/// Mutual TLS: a client with a certificate from the client CA scores; one without a
/// certificate, or with one from another CA, is refused at the handshake (and counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_valid_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let registry = serving(dir.path()).await;
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let strangers = Ca::new("someone else's CA");
    let (cert, key) = ca.leaf("server-1", &["localhost"]);
    let files = [
        write(dir.path(), "tls.crt", &cert),
        write(dir.path(), "tls.key", &key),
        write(dir.path(), "clients.pem", &clients.pem),
    ];
    let f = files.clone();
    let server = TestServer::start(&registry, move |cfg| {
        cfg.tls_cert = Some(f[0].to_str().unwrap().into());
        cfg.tls_key = Some(f[1].to_str().unwrap().into());
        cfg.tls_client_ca = Some(f[2].to_str().unwrap().into());
    })
    .await;
    let good = clients.leaf("crm-service", &["crm.internal"]);
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(ch) = tls_channel(&server, &ca.pem, Some(&good)).await {
            if let Ok(v) = scores(ch).await {
                answered = Some(v);
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(answered.as_deref(), Some("v001"));

    let bad = strangers.leaf("intruder", &["crm.internal"]);
    for identity in [None, Some(&bad)] {
        let refused = match tls_channel(&server, &ca.pem, identity).await {
            Err(_) => true,
            Ok(ch) => scores(ch).await.is_err(),
        };
        assert!(refused, "a client without a valid certificate was answered");
    }
    // Scraped over mTLS as Prometheus would, it says how many handshakes failed.
    let text = metrics_over_mtls(&server, &ca.pem, &good).await;
    let failed = crate::hostile::metric(&text, "loyalscore_tls_handshake_failures_total", &[]);
    assert!(failed >= 2.0, "{failed} handshake failures counted");
    server.stop().await;
}

/// GET /metrics over TLS with a client certificate.
async fn metrics_over_mtls(server: &TestServer, ca: &str, id: &(String, String)) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = connector(ca, Some(id));
    let tcp = tokio::net::TcpStream::connect(server.metrics_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}
