//! The cluster's certificate authority and the subjects it issues certificates to.
//!
//! A certificate's subject says who holds it, as in Kubernetes: the user in the common name,
//! the groups in the organization. The CA sets every field of what it signs itself (subject,
//! alternative names, usages, validity, a random serial); a signing request contributes its
//! public key only, so nobody can ask for more than the caller is entitled to.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::TlsError;

/// The group of every orchestrator (Raft member).
pub const ORCHESTRATORS_GROUP: &str = "system:orchestrators";
/// The group of every enrolled edge node.
pub const NODES_GROUP: &str = "system:nodes";
const ORCHESTRATOR_PREFIX: &str = "system:orchestrator:";
const NODE_PREFIX: &str = "system:node:";
/// Names under this prefix belong to the system: no user certificate may claim one.
pub const SYSTEM_PREFIX: &str = "system:";
/// The DNS suffix of edge nodes' serving names: node `line-a` serves as `line-a.nodes.edgeplane`.
pub const NODE_DNS_SUFFIX: &str = "nodes.edgeplane";

/// How long certificates are valid before the moment they are issued: clocks disagree a little.
const BACKDATE: time::Duration = time::Duration::minutes(5);

/// Who a certificate is issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Raft member `id`, serving at `addresses` (the API and peer listeners' IPs).
    Orchestrator { id: u64, addresses: Vec<IpAddr> },
    /// An enrolled edge node. Its serving name is `<name>.nodes.edgeplane` and never an IP:
    /// a node cannot be issued anything that would let it pass for an orchestrator.
    Node { name: String },
    /// A person or program (client authentication only). `group` is at most one: that is
    /// what the signing library can write; certificates made elsewhere may carry several,
    /// and every one is read.
    User { name: String, group: Option<String> },
    /// A service that is neither (an MQTT broker), serving at `addresses`.
    Server { name: String, addresses: Vec<IpAddr> },
}

impl Subject {
    /// The user name a certificate with this subject authenticates as.
    pub fn user(&self) -> String {
        match self {
            Subject::Orchestrator { id, .. } => format!("{ORCHESTRATOR_PREFIX}{id}"),
            Subject::Node { name } => format!("{NODE_PREFIX}{name}"),
            Subject::User { name, .. } | Subject::Server { name, .. } => name.clone(),
        }
    }

    /// The node's serving name, as clients of its API verify it.
    pub fn node_server_name(node: &str) -> String {
        format!("{node}.{NODE_DNS_SUFFIX}")
    }

    /// Reads a subject back from a certificate's common name and organizations: the member
    /// id of an orchestrator, the name of a node, or a user and its groups. Only the CA makes
    /// certificates, and it never gives a user a `system:` name, so these cannot be forged.
    pub fn parse(common_name: &str, organizations: &[String]) -> Option<ParsedSubject> {
        let in_group = |g: &str| organizations.iter().any(|o| o == g);
        if let Some(id) = common_name.strip_prefix(ORCHESTRATOR_PREFIX) {
            return (in_group(ORCHESTRATORS_GROUP)).then(|| id.parse().ok().map(ParsedSubject::Orchestrator)).flatten();
        }
        if let Some(name) = common_name.strip_prefix(NODE_PREFIX) {
            return (in_group(NODES_GROUP) && !name.is_empty()).then(|| ParsedSubject::Node(name.to_owned()));
        }
        if common_name.is_empty() || common_name.starts_with(SYSTEM_PREFIX) {
            return None;
        }
        Some(ParsedSubject::User { name: common_name.to_owned(), groups: organizations.to_vec() })
    }

    fn params(&self, lifetime: Duration, now: OffsetDateTime, serial: SerialNumber) -> Result<CertificateParams, TlsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.user());
        let (group, sans, usages): (Option<&str>, Vec<SanType>, Vec<ExtendedKeyUsagePurpose>) = match self {
            Subject::Orchestrator { id, addresses } => (
                Some(ORCHESTRATORS_GROUP),
                addresses.iter().map(|ip| SanType::IpAddress(*ip)).chain([dns(&format!("orchestrator-{id}.edgeplane"))?]).collect(),
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            ),
            Subject::Node { name } => (
                Some(NODES_GROUP),
                vec![dns(&Subject::node_server_name(name))?],
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            ),
            Subject::User { name, group } => {
                if name.is_empty() || name.starts_with(SYSTEM_PREFIX) || group.as_deref().is_some_and(|g| g.starts_with(SYSTEM_PREFIX)) {
                    return Err(TlsError::Certificate(format!("user and group names may not be empty or start with {SYSTEM_PREFIX:?}")));
                }
                (group.as_deref(), Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth])
            }
            Subject::Server { addresses, .. } => {
                (None, addresses.iter().map(|ip| SanType::IpAddress(*ip)).collect(), vec![ExtendedKeyUsagePurpose::ServerAuth])
            }
        };
        if let Some(group) = group {
            dn.push(DnType::OrganizationName, group);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = now + lifetime;
        params.serial_number = Some(serial);
        Ok(params)
    }
}

/// A subject as read back from a presented certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedSubject {
    Orchestrator(u64),
    Node(String),
    User { name: String, groups: Vec<String> },
}

fn dns(name: &str) -> Result<SanType, TlsError> {
    Ok(SanType::DnsName(name.try_into().map_err(|e| TlsError::Certificate(format!("{name:?} is not a DNS name: {e}")))?))
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    /// Lowercase hex, as [`crate::PeerCertificate::serial`] reads it back.
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

/// The cluster's certificate authority: its certificate, and its key to sign with.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new CA named `name`, valid for ten years.
    pub fn create(name: &str) -> Result<CertificateAuthority, TlsError> {
        let key = KeyPair::generate().map_err(authority)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + time::Duration::days(3650);
        params.serial_number = Some(random_serial()?.0);
        let cert = params.self_signed(&key).map_err(authority)?;
        let key_pem = key.serialize_pem();
        Ok(CertificateAuthority { cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    /// The CA from its certificate and key (PEM, the key PKCS#8).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<CertificateAuthority, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::Authority(format!("the key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| TlsError::Authority(format!("the certificate: {e}")))?;
        Ok(CertificateAuthority { issuer, cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned() })
    }

    /// The CA's certificate: what every party trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PKCS#8 PEM), to be written owner-only.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate for `subject` on a new key; returns the key (PEM) too.
    pub fn issue_with_key(&self, subject: &Subject, lifetime: Duration) -> Result<(Issued, String), TlsError> {
        self.issue_with_key_at(subject, std::time::SystemTime::now(), lifetime)
    }

    /// [`CertificateAuthority::issue_with_key`] as if issued at `issued_at`: a certificate
    /// that has already expired, or one from a clock that runs behind, for tests of both.
    pub fn issue_with_key_at(
        &self,
        subject: &Subject,
        issued_at: std::time::SystemTime,
        lifetime: Duration,
    ) -> Result<(Issued, String), TlsError> {
        let key = KeyPair::generate().map_err(authority)?;
        let issued = self.issue(subject, &key, OffsetDateTime::from(issued_at), lifetime)?;
        Ok((issued, key.serialize_pem()))
    }

    /// Signs a certificate signing request (PEM) for `subject`. The request's signature must
    /// verify (its sender holds the key); of the request only the public key is used.
    pub fn sign_request(&self, request_pem: &str, subject: &Subject, lifetime: Duration) -> Result<Issued, TlsError> {
        let request = CertificateSigningRequestParams::from_pem(request_pem).map_err(|e| TlsError::Request(e.to_string()))?;
        self.issue(subject, &request.public_key, OffsetDateTime::now_utc(), lifetime)
    }

    fn issue(
        &self,
        subject: &Subject,
        public_key: &impl PublicKeyData,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<Issued, TlsError> {
        let (serial, serial_hex) = random_serial()?;
        let params = subject.params(lifetime, now, serial)?;
        let not_after = params.not_after.unix_timestamp();
        let cert = params.signed_by(public_key, &self.issuer).map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(Issued { pem: cert.pem(), serial: serial_hex, not_after })
    }
}

fn authority(e: rcgen::Error) -> TlsError {
    TlsError::Authority(e.to_string())
}

/// 16 random bytes, the top bit clear (serials are positive) and the first byte non-zero (so
/// the encoding is exactly these bytes and reads back the same).
fn random_serial() -> Result<(SerialNumber, String), TlsError> {
    let mut bytes = [0u8; 16];
    crate::config::provider().secure_random.fill(&mut bytes).map_err(|_| TlsError::Authority("no randomness".to_owned()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok((SerialNumber::from_slice(&bytes), hex))
}

/// A new private key and a signing request for it: what an edge node or a user sends to be
/// issued a certificate. The key never leaves the one who made it.
#[derive(Debug, Clone)]
pub struct KeyAndRequest {
    /// PKCS#8 PEM.
    pub key_pem: String,
    pub request_pem: String,
}

impl KeyAndRequest {
    pub fn generate(common_name: &str) -> Result<KeyAndRequest, TlsError> {
        let key = KeyPair::generate().map_err(|e| TlsError::Request(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        let request = params.serialize_request(&key).map_err(|e| TlsError::Request(e.to_string()))?;
        let request_pem = request.pem().map_err(|e| TlsError::Request(e.to_string()))?;
        Ok(KeyAndRequest { key_pem: key.serialize_pem(), request_pem })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PeerCertificate;

    #[test]
    fn what_the_ca_issues_reads_back_as_issued() {
        let ca = CertificateAuthority::create("test CA").expect("ca");
        let ca = CertificateAuthority::load(ca.cert_pem(), ca.key_pem()).expect("reload");
        let request = KeyAndRequest::generate("anything the node likes").expect("csr");
        let issued =
            ca.sign_request(&request.request_pem, &Subject::Node { name: "line-a".into() }, Duration::from_secs(3600)).expect("sign");
        let cert = PeerCertificate::from_pem(&issued.pem).expect("parse");
        assert_eq!(cert.serial, issued.serial);
        assert_eq!(cert.not_after, issued.not_after);
        assert_eq!(cert.subject(), Some(ParsedSubject::Node("line-a".into())), "the CA sets the subject, not the request");

        let (member, _key) = ca
            .issue_with_key(&Subject::Orchestrator { id: 3, addresses: vec!["127.0.0.3".parse().expect("ip")] }, Duration::from_secs(60))
            .expect("member");
        assert_eq!(PeerCertificate::from_pem(&member.pem).expect("parse").subject(), Some(ParsedSubject::Orchestrator(3)));
        let (user, _key) =
            ca.issue_with_key(&Subject::User { name: "alice".into(), group: Some("ops".into()) }, Duration::from_secs(60)).expect("user");
        assert_eq!(
            PeerCertificate::from_pem(&user.pem).expect("parse").subject(),
            Some(ParsedSubject::User { name: "alice".into(), groups: vec!["ops".into()] })
        );
        assert_ne!(member.serial, user.serial);
    }

    #[test]
    fn users_cannot_be_given_system_names_and_forged_subjects_do_not_parse() {
        let ca = CertificateAuthority::create("test CA").expect("ca");
        for (name, group) in [("system:node:line-a", None), ("alice", Some("system:nodes")), ("", None)] {
            let subject = Subject::User { name: name.into(), group: group.map(str::to_owned) };
            assert!(ca.issue_with_key(&subject, Duration::from_secs(60)).is_err(), "{subject:?}");
        }
        assert_eq!(Subject::parse("system:node:x", &[]), None, "a node name without the nodes group");
        assert_eq!(Subject::parse("system:orchestrator:x", &[ORCHESTRATORS_GROUP.into()]), None);
        assert_eq!(Subject::parse("system:anything", &[]), None);
    }

    #[test]
    fn a_tampered_request_is_refused() {
        let ca = CertificateAuthority::create("test CA").expect("ca");
        assert!(ca.sign_request("not a request", &Subject::Node { name: "n".into() }, Duration::from_secs(60)).is_err());
        let request = KeyAndRequest::generate("n").expect("csr");
        // Flip a byte inside the base64 body: the signature no longer verifies, or it no
        // longer parses; either way nothing is issued.
        let mut pem = request.request_pem.into_bytes();
        let at = pem.len() / 2;
        pem[at] = if pem[at] == b'A' { b'B' } else { b'A' };
        let pem = String::from_utf8(pem).expect("ascii");
        assert!(ca.sign_request(&pem, &Subject::Node { name: "n".into() }, Duration::from_secs(60)).is_err());
    }
}
