//! Mesh identities: SPIFFE IDs (`spiffe://trust-domain/ns/NS/sa/SA`) carried
//! as URI subject alternative names of workload certificates, as Istio does.
//!
//! Istio's ISTIO_MUTUAL checks the server by its SPIFFE ID, not by a DNS name,
//! so WebPKI's server-name check does not apply: [`SpiffeVerifier`] checks the
//! chain against the mesh root and then the URI SAN.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::{DigitallySignedStruct, Error, SignatureScheme};

/// The SPIFFE ID of a certificate: its first `spiffe://` URI SAN.
pub fn identity(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let id = cert
        .valid_uri_names()
        .find(|uri| uri.starts_with("spiffe://"))
        .map(str::to_owned);
    id
}

/// `spiffe://td/...` → `td`.
pub fn trust_domain(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let td = rest.split('/').next()?;
    (!td.is_empty()).then_some(td)
}

/// Chain to the mesh roots, then the server's SPIFFE ID: one of `allowed`, or
/// (none given) any identity of `trust_domain`.
#[derive(Debug)]
pub struct SpiffeVerifier {
    roots: Vec<TrustAnchor<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
    allowed: Vec<String>,
    trust_domain: Option<String>,
}

impl SpiffeVerifier {
    pub fn new(
        roots: Vec<TrustAnchor<'static>>,
        algorithms: WebPkiSupportedAlgorithms,
        allowed: Vec<String>,
        trust_domain: Option<String>,
    ) -> Self {
        Self {
            roots,
            algorithms,
            allowed,
            trust_domain,
        }
    }

    fn accepts(&self, id: &str) -> bool {
        if !self.allowed.is_empty() {
            return self.allowed.iter().any(|a| a == id);
        }
        match &self.trust_domain {
            Some(td) => trust_domain(id) == Some(td.as_str()),
            None => true,
        }
    }
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| Error::General(format!("bad server certificate: {e}")))?;
        cert.verify_for_usage(
            self.algorithms.all,
            &self.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| Error::General(format!("server certificate not from the mesh CA: {e}")))?;
        let id = cert
            .valid_uri_names()
            .find(|uri| uri.starts_with("spiffe://"))
            .ok_or_else(|| Error::General("server certificate has no SPIFFE ID".into()))?;
        if !self.accepts(id) {
            return Err(Error::General(format!(
                "server identity {id} is not one the DestinationRule allows"
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domains() {
        assert_eq!(
            trust_domain("spiffe://cluster.local/ns/a/sa/b"),
            Some("cluster.local")
        );
        assert_eq!(trust_domain("spiffe:///ns"), None);
        assert_eq!(trust_domain("https://x"), None);
    }

    #[test]
    fn allowed_ids_win_over_the_trust_domain() {
        let v = |allowed: Vec<String>, td: Option<&str>| {
            SpiffeVerifier::new(
                Vec::new(),
                rustls::crypto::ring::default_provider().signature_verification_algorithms,
                allowed,
                td.map(str::to_owned),
            )
        };
        let id = "spiffe://cluster.local/ns/default/sa/reviews";
        assert!(v(vec![], Some("cluster.local")).accepts(id));
        assert!(!v(vec![], Some("other.org")).accepts(id));
        assert!(v(vec![id.into()], Some("other.org")).accepts(id));
        assert!(!v(vec!["spiffe://cluster.local/ns/default/sa/x".into()], None).accepts(id));
    }
}
