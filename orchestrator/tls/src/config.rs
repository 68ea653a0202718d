//! rustls configurations, always with the ring provider and the cluster CA as the only root.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

use crate::TlsError;

/// The crypto provider of every configuration: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether a server asks its clients for certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a certificate of the CA (Raft peers).
    Required,
    /// A client may present one (people, programs, nodes); without one it must authenticate
    /// otherwise (a bearer token) or stay anonymous. A certificate it presents must verify.
    Optional,
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl TlsIdentity {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<TlsIdentity, TlsError> {
        Ok(TlsIdentity { chain: certificates(cert_pem, "the certificate")?, key: private_key(key_pem)? })
    }

    /// Reads `cert` and `key` (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
        TlsIdentity::from_pem(&read(cert)?, &read(key)?)
    }

    fn certified(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let key = provider().key_provider.load_private_key(self.key.clone_key())?;
        Ok(Arc::new(CertifiedKey::new(self.chain.clone(), key)))
    }
}

/// Reads a text file, saying which one when it cannot.
pub fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source })
}

/// Every certificate in a PEM text; at least one.
pub fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what: what.to_owned(), why: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { what: what.to_owned() });
    }
    Ok(chain)
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem { what: "the private key".to_owned(), why: e.to_string() })
}

/// The trust store: the cluster CA's certificate(s).
pub fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem, "the CA certificate")? {
        roots.add(cert)?;
    }
    Ok(Arc::new(roots))
}

/// A client configuration that trusts the CA only and presents `identity`, if any.
pub fn client_config(ca_pem: &str, identity: Option<&TlsIdentity>) -> Result<ClientConfig, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?.with_root_certificates(roots(ca_pem)?);
    Ok(match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    })
}

/// A client configuration whose certificate can be replaced while it is in use (a node that
/// renews its certificate): new connections present the current one.
pub fn client_config_renewable(ca_pem: &str, identity: Arc<CurrentIdentity>) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_cert_resolver(identity))
}

/// A server configuration presenting `identity` (replaceable), trusting the CA for client
/// certificates.
pub fn server_config(ca_pem: &str, identity: Arc<CurrentIdentity>, client_auth: ClientAuth) -> Result<ServerConfig, TlsError> {
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider());
    if client_auth == ClientAuth::Optional {
        verifier = verifier.allow_unauthenticated();
    }
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier.build()?)
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A certificate and key that can be replaced (renewal) while configurations use it, or be
/// absent (a node not yet enrolled: as a client it presents nothing, as a server it cannot
/// complete a handshake).
#[derive(Debug, Default)]
pub struct CurrentIdentity {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CurrentIdentity {
    pub fn new(identity: &TlsIdentity) -> Result<Arc<CurrentIdentity>, TlsError> {
        Ok(Arc::new(CurrentIdentity { current: RwLock::new(Some(identity.certified()?)) }))
    }

    /// No certificate yet.
    pub fn empty() -> Arc<CurrentIdentity> {
        Arc::new(CurrentIdentity::default())
    }

    /// From now on, handshakes present `identity`.
    pub fn replace(&self, identity: &TlsIdentity) -> Result<(), TlsError> {
        let certified = identity.certified()?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(certified);
        Ok(())
    }

    /// From now on, handshakes present nothing (an expired certificate would fail them).
    pub fn clear(&self) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub fn is_set(&self) -> bool {
        self.get().is_some()
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ResolvesClientCert for CurrentIdentity {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for CurrentIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}
