//! TLS origination towards endpoints (DestinationRule `tls` SIMPLE / MUTUAL /
//! ISTIO_MUTUAL), with rustls: roots from a PEM file or the system, an
//! optional client certificate, and Istio's `subjectAltNames` /
//! `insecureSkipVerify`; ISTIO_MUTUAL checks SPIFFE IDs ([`SpiffeVerifier`]).

use crate::spiffe::SpiffeVerifier;
use crate::tls::TlsError;
use meshfast_ir as ir;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// A cluster's TLS settings, built once per snapshot.
#[derive(Clone)]
pub struct UpstreamTlsRt {
    pub connector: TlsConnector,
    /// Fixed SNI; None: the request's host.
    pub sni: Option<String>,
    /// Distinguishes this cluster's TLS connections in the pool.
    pub pool_key: Arc<str>,
}

impl std::fmt::Debug for UpstreamTlsRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTlsRt")
            .field("sni", &self.sni)
            .finish()
    }
}

fn pem_err(what: &'static str, path: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    }
}

impl UpstreamTlsRt {
    pub fn build(cluster: &str, tls: &ir::UpstreamTls, http2: bool) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        match &tls.ca_certs {
            Some(path) => {
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| pem_err("CA certificates", path, e))?
                {
                    let cert = cert.map_err(|e| pem_err("CA certificates", path, e))?;
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::Config(e.to_string()))?;
                }
            }
            None => {
                // Istio: an empty caCertificates trusts the system's roots.
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let verifier: Arc<dyn ServerCertVerifier> = if tls.istio_mutual {
            if tls.client_cert.is_none() || tls.private_key.is_none() || tls.ca_certs.is_none() {
                return Err(TlsError::Config(format!(
                    "cluster {cluster:?}: ISTIO_MUTUAL needs the sidecar's mesh identity \
                     (run with --certs DIR; `meshfast ca issue` makes one)"
                )));
            }
            let anchors = roots.roots.clone();
            Arc::new(SpiffeVerifier::new(
                anchors,
                provider.signature_verification_algorithms,
                tls.subject_alt_names.clone(),
                tls.trust_domain.clone(),
            ))
        } else {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            Arc::new(Verifier {
                webpki,
                subject_alt_names: tls.subject_alt_names.clone(),
                skip: tls.insecure_skip_verify,
            })
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&tls.client_cert, &tls.private_key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| pem_err("client certificate", cert, e))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| pem_err("private key", key, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Config(e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            sni: tls.sni.clone(),
            pool_key: Arc::from(format!("tls:{cluster}")),
        })
    }
}

/// WebPKI chain checks; with `subject_alt_names` the name checked is one of
/// those instead of the SNI; `skip` accepts anything (Istio's insecureSkipVerify).
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    subject_alt_names: Vec<String>,
    skip: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.skip {
            return Ok(ServerCertVerified::assertion());
        }
        if self.subject_alt_names.is_empty() {
            return self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp,
                now,
            );
        }
        let mut last = rustls::Error::General("no subjectAltNames to check".into());
        for san in &self.subject_alt_names {
            let Ok(name) = ServerName::try_from(san.as_str()) else {
                continue;
            };
            match self
                .webpki
                .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
