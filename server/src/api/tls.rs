//! TLS termination for the gRPC port and the HTTP port, with rustls: the
//! certificate and key come from PEM files and are reloaded without a restart
//! (SIGHUP, or when the files change: see `reload`); with a client CA, callers
//! must present a certificate it signed (mTLS). Each port offers its own
//! protocol in ALPN (`h2`, `http/1.1`). Connections are accepted by
//! `connections`, which runs the handshakes concurrently under a timeout.

use super::connections::Handshake;
use super::reload::Reload;
use crate::config::TlsFiles;
use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

/// The current TLS configuration, swapped whole on reload.
pub struct Tls {
    files: TlsFiles,
    acceptors: ArcSwap<Acceptors>,
    /// The file contents the acceptor was built from, to notice changes.
    loaded: Mutex<Vec<u8>>,
}

impl Tls {
    /// Builds the configuration; fails with a message naming the bad file.
    pub fn open(files: TlsFiles) -> Result<Arc<Tls>, String> {
        let (contents, acceptors) = build(&files)?;
        Ok(Arc::new(Tls { files, acceptors: ArcSwap::from_pointee(acceptors), loaded: Mutex::new(contents) }))
    }

    /// The TLS handshake for `connections::incoming` on a port speaking
    /// `protocol`, with the certificates current when each connection arrives.
    pub fn handshake(self: Arc<Self>, protocol: Protocol) -> Handshake<TlsStream<TcpStream>> {
        Arc::new(move |tcp: TcpStream| {
            let acceptors = self.acceptors.load();
            let acceptor = match protocol {
                Protocol::Grpc => acceptors.grpc.clone(),
                Protocol::Http => acceptors.http.clone(),
            };
            Box::pin(async move { acceptor.accept(tcp).await })
        })
    }
}

/// What a TLS port speaks inside the session.
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    /// gRPC: HTTP/2 (ALPN `h2`).
    Grpc,
    /// The HTTP API: HTTP/1.1 (ALPN `http/1.1`).
    Http,
}

/// One configuration, offered with each port's protocol.
struct Acceptors {
    grpc: TlsAcceptor,
    http: TlsAcceptor,
}

impl Reload for Tls {
    fn name(&self) -> &'static str {
        "TLS certificates"
    }

    fn reload(&self) {
        let mut loaded = self.loaded.lock().expect("TLS lock poisoned; this is a bug");
        match build(&self.files) {
            Ok((contents, _)) if contents == *loaded => {}
            Ok((contents, acceptors)) => {
                self.acceptors.store(Arc::new(acceptors));
                *loaded = contents;
                tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded; new connections use them");
            }
            Err(error) => tracing::error!(%error, "TLS certificates not reloaded; the previous ones stay in use"),
        }
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: cannot read: {e}", path.display()))
}

fn certificates(pem: &[u8], path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// Reads the files and builds the acceptors; also returns the files' contents.
fn build(files: &TlsFiles) -> Result<(Vec<u8>, Acceptors), String> {
    let cert_pem = read(&files.cert, "--tls-cert")?;
    let key_pem = read(&files.key, "--tls-key")?;
    let certs = certificates(&cert_pem, &files.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("--tls-key {}: not a PEM private key: {e}", files.key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut contents = [cert_pem, key_pem].concat();
    let builder = match &files.client_ca {
        Some(path) => {
            let ca_pem = read(path, "--tls-client-ca")?;
            let mut roots = RootCertStore::empty();
            for cert in certificates(&ca_pem, path, "--tls-client-ca")? {
                roots.add(cert).map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            }
            contents.extend(ca_pem);
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert {} and --tls-key {}: {e}", files.cert.display(), files.key.display()))?;
    let mut http = config.clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptors = Acceptors { grpc: TlsAcceptor::from(Arc::new(config)), http: TlsAcceptor::from(Arc::new(http)) };
    Ok((contents, acceptors))
}
