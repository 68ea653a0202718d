//! What a presented certificate says. rustls has verified the chain (issued by the cluster CA,
//! within its validity, the right key usage) before anything here reads it.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pki::{ParsedSubject, Subject};
use crate::TlsError;

/// The fields of a certificate that identify its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    pub common_name: String,
    /// Every organization (group) in the subject.
    pub organizations: Vec<String>,
    /// Lowercase hex of the serial number's bytes.
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

impl PeerCertificate {
    pub fn from_der(der: &[u8]) -> Result<PeerCertificate, TlsError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| TlsError::Certificate(e.to_string()))?;
        let subject = cert.subject();
        let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().ok().map(str::to_owned);
        let common_name = subject.iter_common_name().next().and_then(text).unwrap_or_default();
        let organizations: Vec<String> = subject.iter_organization().filter_map(text).collect();
        let serial = cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        Ok(PeerCertificate { common_name, organizations, serial, not_before, not_after })
    }

    /// The first certificate in a PEM text.
    pub fn from_pem(pem: &str) -> Result<PeerCertificate, TlsError> {
        let der = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .ok_or_else(|| TlsError::NoCertificate { what: "the PEM text".to_owned() })?
            .map_err(|e| TlsError::Pem { what: "the certificate".to_owned(), why: e.to_string() })?;
        PeerCertificate::from_der(&der)
    }

    /// Who the certificate says its holder is; `None` for a subject no certificate of this
    /// cluster's CA can have.
    pub fn subject(&self) -> Option<ParsedSubject> {
        Subject::parse(&self.common_name, &self.organizations)
    }
}
