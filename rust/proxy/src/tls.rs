//! TLS on listeners: termination from PEM files (Gateway SIMPLE / MUTUAL),
//! and reading a ClientHello's SNI without terminating (PASSTHROUGH).

use meshfast_ir as ir;
use rustls::server::{Acceptor, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// A ClientHello bigger than this is not one we will wait for.
const MAX_CLIENT_HELLO: usize = 64 << 10;
/// Handshakes (and SNI peeks) that take longer are dropped, so half-open TLS
/// connections cannot pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path:?}: {message}")]
    Pem {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("{path:?} holds no certificate")]
    NoCertificate { path: String },
    #[error("TLS settings rejected: {0}")]
    Config(String),
}

fn certs(what: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A listener's TLS: the acceptor and the mesh behaviour around it.
#[derive(Clone)]
pub struct ListenerTls {
    pub acceptor: TlsAcceptor,
    /// Plaintext connections are served too (Istio PERMISSIVE).
    pub permissive: bool,
    /// Set `x-forwarded-client-cert` from the client's SPIFFE ID.
    pub forward_client_cert: bool,
    /// Our own SPIFFE ID (`By=` in `x-forwarded-client-cert`).
    pub identity: Option<std::sync::Arc<str>>,
}

pub fn listener_tls(tls: &ir::TlsServer) -> Result<ListenerTls, TlsError> {
    let chain = certs("certificate chain", &tls.cert_chain)?;
    let identity = chain
        .first()
        .and_then(crate::spiffe::identity)
        .map(std::sync::Arc::from);
    Ok(ListenerTls {
        acceptor: acceptor(tls, chain)?,
        permissive: tls.permissive,
        forward_client_cert: tls.forward_client_cert,
        identity,
    })
}

/// A TLS acceptor for `tls` (its certificate `chain` already read), advertising h2 and
/// http/1.1 by ALPN.
fn acceptor(
    tls: &ir::TlsServer,
    chain: Vec<CertificateDer<'static>>,
) -> Result<TlsAcceptor, TlsError> {
    let key = PrivateKeyDer::from_pem_file(&tls.private_key).map_err(|e| TlsError::Pem {
        what: "private key",
        path: tls.private_key.clone(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version.as_deref() {
        Some("TLSV1_3") => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs("client CA", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What the first bytes of a passthrough connection said.
#[derive(Debug)]
pub enum Hello {
    /// A ClientHello, with its SNI (lowercased, trailing dot removed) if any.
    Tls(Option<String>),
    /// Not TLS: Istio treats such traffic on a TLS port as plain TCP.
    NotTls,
}

/// Reads the ClientHello and returns what it says with every byte read, so
/// the connection can be passed on untouched. None: closed, too big, or slow.
pub async fn peek_sni(stream: &mut TcpStream) -> Option<(Hello, Vec<u8>)> {
    let read = async {
        let mut acceptor = Acceptor::default();
        let mut seen = Vec::with_capacity(1024);
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 || seen.len() + n > MAX_CLIENT_HELLO {
                return None;
            }
            seen.extend_from_slice(&buf[..n]);
            // A TLS record starts with the handshake content type (22).
            if seen[0] != 22 || acceptor.read_tls(&mut &buf[..n]).is_err() {
                return Some((Hello::NotTls, seen));
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let sni = accepted
                        .client_hello()
                        .server_name()
                        .map(|s| s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase());
                    return Some((Hello::Tls(sni), seen));
                }
                Ok(None) => {}
                Err(_) => return Some((Hello::NotTls, seen)),
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, read)
        .await
        .ok()
        .flatten()
}

/// Istio SNI match: exact (any case), `*.suffix`, or `*`.
pub fn sni_matches(pattern: &str, sni: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => sni.len() > suffix.len() && sni.ends_with(suffix),
        None => pattern == sni,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_patterns() {
        assert!(sni_matches("*", "a.b"));
        assert!(sni_matches("*.example.com", "api.example.com"));
        assert!(!sni_matches("*.example.com", "example.com"));
        assert!(sni_matches("api.example.com", "api.example.com"));
        assert!(!sni_matches("api.example.com", "www.example.com"));
    }

    #[test]
    fn missing_files_are_clear_errors() {
        let Err(err) = listener_tls(&ir::TlsServer {
            cert_chain: "/nonexistent/cert.pem".into(),
            private_key: "/nonexistent/key.pem".into(),
            ..Default::default()
        }) else {
            panic!("a missing file must fail");
        };
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
