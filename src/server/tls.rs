//! TLS for the gRPC and metrics ports (rustls): a certificate chain and key from PEM files,
//! re-read when they change (as cert-manager renews them), and optionally client
//! certificates checked against a CA (mTLS). On the gRPC port each handshake runs in a task
//! of its own within the handshake timeout, so a slow client holds up nobody else's.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::{Stream, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::conn::Limited;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {path}: {reason}")]
    File {
        flag: &'static str,
        path: String,
        reason: String,
    },
    #[error("--tls-cert and --tls-key go together; --tls-client-ca needs both")]
    Incomplete,
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("--tls-client-ca: {0}")]
    Verifier(String),
}

/// The PEM files TLS is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
    /// Clients must present a certificate this CA signed.
    pub client_ca: Option<String>,
}

impl TlsFiles {
    /// The files the flags name: none (plaintext), or a certificate and its key.
    pub fn from_flags(
        cert: Option<&str>,
        key: Option<&str>,
        client_ca: Option<&str>,
    ) -> Result<Option<Self>, TlsError> {
        let some = |s: Option<&str>| s.filter(|p| !p.is_empty()).map(str::to_string);
        match (some(cert), some(key), some(client_ca)) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), client_ca) => Ok(Some(TlsFiles {
                cert,
                key,
                client_ca,
            })),
            _ => Err(TlsError::Incomplete),
        }
    }
}

fn certs(flag: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = |reason: String| TlsError::File {
        flag,
        path: path.to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file(e.to_string()))?;
    if certs.is_empty() {
        return Err(file("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// A server configuration from the files, offering `alpn` (h2 for gRPC).
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certs("--tls-cert", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::File {
        flag: "--tls-key",
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs("--tls-client-ca", ca)? {
                roots.add(c)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The TLS configuration in force, replaced when its files change.
pub struct Tls {
    files: TlsFiles,
    alpn: Vec<&'static [u8]>,
    current: ArcSwap<ServerConfig>,
}

impl Tls {
    pub fn load(files: TlsFiles, alpn: &[&'static [u8]]) -> Result<Arc<Self>, TlsError> {
        let config = server_config(&files, alpn)?;
        Ok(Arc::new(Tls {
            files,
            alpn: alpn.to_vec(),
            current: ArcSwap::from_pointee(config),
        }))
    }

    /// For one connection: the configuration in force when it arrived.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Loads the files again, keeping the configuration in force if they do not load
    /// (connections already open keep theirs).
    pub fn reload(&self) -> Result<(), TlsError> {
        self.current
            .store(Arc::new(server_config(&self.files, &self.alpn)?));
        Ok(())
    }

    /// The files to follow (`server::follow`).
    pub fn paths(&self) -> Vec<String> {
        let f = &self.files;
        let mut out = vec![f.cert.clone(), f.key.clone()];
        out.extend(f.client_ca.clone());
        out
    }
}

/// A connection on the gRPC port, TLS or not.
pub enum Conn {
    Plain(Limited),
    Tls(Box<tokio_rustls::server::TlsStream<Limited>>),
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Conn::Plain(c) => c.connect_info(),
            Conn::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(c) => Pin::new(c).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(c) => Pin::new(c).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(c) => Pin::new(c).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(c) => Pin::new(c).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(c) => c.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The connections to serve: `incoming` as it is without TLS; with TLS, each after its
/// handshake, done in a task of its own within `timeout`. `failed` is called for each
/// handshake that fails or takes too long (a client without a valid certificate, say).
pub fn handshakes<S>(
    incoming: S,
    tls: Option<Arc<Tls>>,
    timeout: Duration,
    failed: impl Fn() + Clone + Send + Sync + 'static,
) -> impl Stream<Item = std::io::Result<Conn>>
where
    S: Stream<Item = std::io::Result<Limited>> + Send + 'static,
{
    let Some(tls) = tls else {
        return incoming.map(|c| c.map(Conn::Plain)).left_stream();
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        loop {
            // Stops with the server (the receiver dropped), not at the next connection.
            let next = tokio::select! {
                n = incoming.next() => n,
                () = tx.closed() => None,
            };
            match next {
                None => return,
                Some(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                }
                Some(Ok(io)) => {
                    let (acceptor, tx, failed) = (tls.acceptor(), tx.clone(), failed.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(timeout, acceptor.accept(io)).await {
                            Ok(Ok(s)) => {
                                let _ = tx.send(Ok(Conn::Tls(Box::new(s)))).await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                failed();
                            }
                            Err(_) => failed(),
                        }
                    });
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).right_stream()
}

/// The metrics port's listener with TLS: handshakes one at a time, each within `timeout`
/// (scrapes are few; a client that stalls one delays the next scrape, nothing else).
pub struct TlsListener {
    pub tcp: tokio::net::TcpListener,
    pub tls: Arc<Tls>,
    pub timeout: Duration,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                // Out of file descriptors, say: give the system a moment.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let handshake = self.tls.acceptor().accept(tcp);
            if let Ok(Ok(s)) = tokio::time::timeout(self.timeout, handshake).await {
                return (s, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
