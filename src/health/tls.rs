//! TLS client set-up for HTTPS checks: rustls with the ring provider, one
//! shared client configuration per kind of verification.
//!
//! `verify: false` accepts any certificate, as keepalived's SSL_GET does
//! (backends often carry self-signed ones); the handshake signature is
//! still checked against the certificate's key, so the TLS exchange itself
//! is sound. `verify: true` checks against the system's CA store
//! (`/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`), loaded once.
//!
//! Owns: client configurations and server names. Must not: open sockets.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore};

use super::{SpecError, TlsOptions};

/// Checks that the configured server name can be sent.
pub(super) fn validate(options: &TlsOptions) -> Result<(), SpecError> {
    match &options.server_name {
        Some(name) if ServerName::try_from(name.as_str()).is_err() => {
            Err(SpecError::ServerName(name.clone()))
        }
        _ => Ok(()),
    }
}

/// The name sent in SNI and checked in the certificate: the configured
/// one, else the Host header's name (without a port), else the target's
/// address.
pub(super) fn server_name(
    options: &TlsOptions,
    host: Option<&str>,
    target: SocketAddr,
) -> ServerName<'static> {
    let from_host = host
        .map(strip_port)
        .and_then(|h| ServerName::try_from(h).ok());
    let configured = options
        .server_name
        .as_deref()
        .and_then(|n| ServerName::try_from(n).ok());
    configured
        .or(from_host)
        .map(|n| n.to_owned())
        .unwrap_or_else(|| ServerName::IpAddress(target.ip().into()))
}

/// "name:port" → "name", "[v6]:port" → "v6", "v6" stays.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    if host.parse::<IpAddr>().is_ok() {
        return host;
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Client configurations shared by all HTTPS checks of one checker.
#[derive(Debug, Default)]
pub(super) struct TlsConfigs {
    verifying: OnceLock<Arc<ClientConfig>>,
    accepting: OnceLock<Arc<ClientConfig>>,
}

impl TlsConfigs {
    /// The client configuration for `options` (built on first use).
    pub fn config(&self, options: &TlsOptions) -> Result<Arc<ClientConfig>, rustls::Error> {
        let cell = if options.verify {
            &self.verifying
        } else {
            &self.accepting
        };
        if let Some(c) = cell.get() {
            return Ok(c.clone());
        }
        let config = build(options.verify)?;
        Ok(cell.get_or_init(|| Arc::new(config)).clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

fn build(verify: bool) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = if verify {
        builder
            .with_root_certificates(system_roots())
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    };
    Ok(config)
}

/// The system's CA certificates; unreadable ones are skipped (a check
/// against a backend they would have vouched for then fails with an
/// unknown issuer, which names the problem).
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    roots
}

/// Accepts any server certificate; still checks handshake signatures.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(name: Option<&str>) -> TlsOptions {
        TlsOptions {
            server_name: name.map(str::to_string),
            verify: true,
        }
    }

    #[test]
    fn server_name_precedence() {
        let target: SocketAddr = "198.18.0.1:443".parse().unwrap();
        let name = |s: &'static str| ServerName::try_from(s).unwrap();
        let pick = |o: &TlsOptions, h: Option<&str>| server_name(o, h, target);
        assert_eq!(
            pick(&opts(Some("api.test")), Some("web.test")),
            name("api.test")
        );
        assert_eq!(pick(&opts(None), Some("web.test:8443")), name("web.test"));
        assert_eq!(pick(&opts(None), None), name("198.18.0.1"));
        let v6 = pick(&opts(None), Some("[2001:db8::1]:8443"));
        assert_eq!(v6, name("2001:db8::1"));
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("web.test:80"), "web.test");
        assert_eq!(strip_port("web.test"), "web.test");
        assert_eq!(strip_port("[2001:db8::1]:80"), "2001:db8::1");
        assert_eq!(strip_port("2001:db8::1"), "2001:db8::1");
    }

    #[test]
    fn validates_names_and_builds_both_configs() {
        assert!(validate(&opts(Some("web.test"))).is_ok());
        assert!(validate(&opts(Some("198.18.0.1"))).is_ok());
        assert!(validate(&opts(Some("bad name!"))).is_err());
        let configs = TlsConfigs::default();
        assert!(configs.config(&opts(None)).is_ok());
        let accept = TlsOptions {
            server_name: None,
            verify: false,
        };
        assert!(configs.config(&accept).is_ok());
    }
}
