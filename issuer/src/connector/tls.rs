//! TLS and HTTP clients for connectors: which CAs to trust (`rootCA`, `rootCAData`, `rootCAs`, the Mozilla
//! roots otherwise), client certificates, and `insecureSkipVerify`. Errors are strings that name the file or
//! key; `Connectors::new` reports them at start-up.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How long a connector waits for an upstream to accept a connection.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connector waits for one upstream request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a connector's trust comes from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Trust {
    /// PEM certificates to trust instead of the Mozilla roots (empty: the Mozilla roots).
    pub(crate) root_cas: Vec<String>,
    /// Accept any server certificate (development only; `check-config` warns).
    pub(crate) insecure_skip_verify: bool,
    /// PEM client certificate chain and key, for mutual TLS.
    pub(crate) client_identity: Option<(String, String)>,
}

/// Reads a PEM file named by a config key, for error messages naming both.
pub(crate) fn read_pem(key: &str, path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{key}: cannot read {path}: {e}"))
}

/// A rustls client configuration for `trust` (LDAP).
pub(crate) fn rustls_config(trust: &Trust) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if trust.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        if trust.root_cas.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for pem in &trust.root_cas {
            let mut any = false;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("root CA: not PEM: {e}"))?;
                roots.add(cert).map_err(|e| format!("root CA: {e}"))?;
                any = true;
            }
            if !any {
                return Err("root CA: no PEM certificate found".into());
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match &trust.client_identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("client key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate: {e}"))?
        }
    };
    Ok(Arc::new(config))
}

/// An HTTP client for an upstream API: no redirects followed (an OAuth response is never a redirect to
/// chase), bounded connect and request times, and `trust`.
pub(crate) fn http_client(trust: &Trust) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("tokengate-issuer/", env!("CARGO_PKG_VERSION")))
        // The peer certificate, for `check-config --probe` (its expiry).
        .tls_info(true)
        .danger_accept_invalid_certs(trust.insecure_skip_verify);
    if !trust.root_cas.is_empty() {
        b = b.tls_built_in_root_certs(false);
        for pem in &trust.root_cas {
            for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| format!("root CA: {e}"))? {
                b = b.add_root_certificate(cert);
            }
        }
    }
    b.build().map_err(|e| e.to_string())
}

/// `insecureSkipVerify`: still checks handshake signatures (so the session key is the server's), but not
/// who the server is.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether an error from reqwest means the upstream could not be reached (retry later) rather than that it
/// answered.
pub(crate) fn unreachable(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

/// `check-config --probe` for an HTTP upstream: GET `url` (with HTTP Basic `basic`, if given). Any HTTP
/// answer below 500 means the upstream is reachable; the report says which status came back and carries
/// the TLS peer certificate.
pub(crate) async fn probe_http(
    client: &reqwest::Client,
    url: &str,
    basic: Option<(&str, &str)>,
    insecure_skip_verify: bool,
) -> Result<super::ProbeReport, super::ConnectorError> {
    let mut req = client.get(url).header("accept", "application/json");
    if let Some((user, password)) = basic {
        req = req.basic_auth(user, Some(password));
    }
    let r = req.send().await.map_err(|e| super::ConnectorError::Unavailable(format!("{url}: {e}")))?;
    let status = r.status();
    if status.is_server_error() {
        return Err(super::ConnectorError::Unavailable(format!("{url} answered {status}")));
    }
    let peer_certificate =
        r.extensions().get::<reqwest::tls::TlsInfo>().and_then(|t| t.peer_certificate()).map(<[u8]>::to_vec);
    Ok(super::ProbeReport {
        detail: format!("{url} answered {status}"),
        peer_certificate,
        tls_warning: insecure_skip_verify.then(|| "certificate verification is off (insecureSkipVerify)".to_owned()),
    })
}

/// The `notAfter` of a DER certificate, as Unix time.
pub fn certificate_not_after(der: &[u8]) -> Option<i64> {
    x509_parser::parse_x509_certificate(der).ok().map(|(_, c)| c.validity().not_after.timestamp())
}
