//! Who the node is, and how it proves it.
//!
//! - `identity.json` in the data directory: the node's name and uid (chosen on the first
//!   start; a new data directory is a new incarnation of the node).
//! - `node.key` and `node.crt`: the node's private key (made here, never sent anywhere) and
//!   the certificate the cluster CA issued for it. Owner-only.
//!
//! Without a certificate the node enrolls: it makes a key and a signing request and sends the
//! request with its bootstrap token. It renews the certificate itself once two thirds of its
//! lifetime have passed, authenticated by the current one. A certificate the orchestrators no
//! longer accept (401: the node was revoked or deleted) makes it enroll again, which needs a
//! bootstrap token again: a stolen certificate is worth nothing once revoked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edgeplane_api::auth::{node_certificate_path, CertificateResponse, EnrollRequest, RenewRequest, ENROLL};
use edgeplane_client::{Method, Request};
use edgeplane_tls::config::CurrentIdentity;
use edgeplane_tls::{KeyAndRequest, PeerCertificate, TlsIdentity};
use serde::{Deserialize, Serialize};

use super::files::{Access, AtRest, FileError};
use super::{lock, Agent, AgentError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Identity {
    name: String,
    uid: String,
}

const FILE: &str = "identity.json";
const KEY: &str = "node.key";
const CERT: &str = "node.crt";

/// The identity in `dir`, created with a fresh uid on the first start.
pub(super) async fn load_or_create(dir: PathBuf, name: String, at_rest: AtRest) -> Result<Identity, AgentError> {
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|source| FileError::Io { path: dir.clone(), source })?;
        let path = dir.join(FILE);
        match at_rest.read_json::<Identity>(&path)? {
            Some(identity) if identity.name == name => Ok(identity),
            Some(identity) => Err(AgentError::WrongIdentity { path: path.display().to_string(), owner: identity.name, name }),
            None => {
                let identity = Identity { name, uid: random_hex(16) };
                at_rest.write_json(&path, &identity, Access::Owner)?;
                Ok(identity)
            }
        }
    })
    .await
    .unwrap_or_else(|e| Err(AgentError::File(FileError::Io { path: PathBuf::from(FILE), source: std::io::Error::other(e) })))
}

/// The node's certificate, as the TLS configurations see it, and its validity.
#[derive(Debug)]
pub struct NodeCertificate {
    /// What every TLS configuration of the node presents (empty until enrolled).
    pub current: Arc<CurrentIdentity>,
    /// When to renew it, and when it expires (seconds since the Unix epoch).
    validity: std::sync::Mutex<Option<Validity>>,
    /// When this process last installed a certificate.
    installed: std::sync::Mutex<Option<std::time::Instant>>,
}

impl NodeCertificate {
    /// The certificate saved in `dir`, if any (an unreadable one is ignored: the node enrolls
    /// again). Blocks.
    pub fn load(dir: &Path, at_rest: &AtRest) -> NodeCertificate {
        let text = |file: &str| at_rest.read(&dir.join(file)).ok().flatten().and_then(|bytes| String::from_utf8(bytes).ok());
        let loaded = text(CERT)
            .zip(text(KEY))
            .and_then(|(cert, key)| Some((TlsIdentity::from_pem(&cert, &key).ok()?, PeerCertificate::from_pem(&cert).ok()?)));
        match loaded {
            Some((identity, parsed)) => match CurrentIdentity::new(&identity) {
                Ok(current) => NodeCertificate {
                    current,
                    validity: std::sync::Mutex::new(Some(Validity::from_now(parsed.not_after))),
                    installed: std::sync::Mutex::new(None),
                },
                Err(_) => NodeCertificate::none(),
            },
            None => NodeCertificate::none(),
        }
    }

    fn none() -> NodeCertificate {
        NodeCertificate { current: CurrentIdentity::empty(), validity: std::sync::Mutex::new(None), installed: std::sync::Mutex::new(None) }
    }

    fn validity(&self) -> Option<Validity> {
        *lock(&self.validity)
    }

    /// Whether a certificate was installed after `instant` (by another task).
    fn enrolled_after(&self, instant: std::time::Instant) -> bool {
        lock(&self.installed).is_some_and(|at| at > instant)
    }
}

/// When a certificate is renewed, and when it expires.
#[derive(Debug, Clone, Copy)]
struct Validity {
    renew_at: i64,
    not_after: i64,
}

impl Validity {
    /// Renewal once two thirds of the time left from now have passed. Counted from when the
    /// node got (or loaded) the certificate, not from its not-before: the CA backdates that
    /// for clock skew, which would make a short-lived certificate due at once, and forever.
    fn from_now(not_after: i64) -> Validity {
        let now = now_s();
        Validity { renew_at: now + (not_after - now).max(0) * 2 / 3, not_after }
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Agent {
    /// Whether the node holds a certificate that has not expired.
    pub(super) fn enrolled(&self) -> bool {
        self.certificate.validity().is_some_and(|v| v.not_after > now_s())
    }

    /// Enrolls with the bootstrap token: a new key, a signing request, and the certificate
    /// the orchestrators issue for it.
    pub(super) async fn enroll(&self) -> Result<(), AgentError> {
        // One enrollment at a time (heartbeats and uploads both find the node not enrolled):
        // a second would replace the certificate the first just installed.
        let started = std::time::Instant::now();
        let _one = self.enrolling.lock().await;
        if self.certificate.enrolled_after(started) {
            return Ok(());
        }
        let bootstrap = self.config.bootstrap_token.as_deref().ok_or(AgentError::NoBootstrapToken)?;
        if self.certificate.current.is_set() && !self.enrolled() {
            // Cut off longer than the certificate lived: an expired certificate fails every
            // handshake, so enroll presenting none.
            tracing::info!(node = %self.config.name, "the node's certificate expired; enrolling again");
            self.certificate.current.clear();
            self.reconnect()?;
        }
        let name = self.config.name.clone();
        let fresh = tokio::task::spawn_blocking(move || KeyAndRequest::generate(&name))
            .await
            .map_err(|e| AgentError::Tls(e.to_string()))?
            .map_err(|e| AgentError::Tls(e.to_string()))?;
        let uid = lock(&self.identity).uid.clone();
        let request = EnrollRequest {
            name: self.config.name.clone(),
            uid,
            csr: fresh.request_pem.clone(),
            labels: self.config.labels.clone(),
            tier: self.config.tier,
            capabilities: self.config.capabilities.clone(),
            capacity: self.config.capacity.clone(),
        };
        let answer = self.client().send(Request::new(Method::POST, ENROLL).json(&request).bearer(Some(bootstrap))).await?;
        if !answer.is_success() {
            return Err(AgentError::Refused { what: "enrollment", status: Box::new(answer.status_error()) });
        }
        self.install(fresh.key_pem, answer.json()?).await?;
        tracing::info!(node = %self.config.name, "enrolled");
        Ok(())
    }

    /// Renews the certificate once two thirds of its lifetime have passed.
    pub(super) async fn renew_if_due(&self) -> Result<(), AgentError> {
        let Some(validity) = self.certificate.validity() else { return Ok(()) };
        if now_s() < validity.renew_at {
            return Ok(());
        }
        let _one = self.enrolling.lock().await;
        let name = self.config.name.clone();
        let fresh = tokio::task::spawn_blocking(move || KeyAndRequest::generate(&name))
            .await
            .map_err(|e| AgentError::Tls(e.to_string()))?
            .map_err(|e| AgentError::Tls(e.to_string()))?;
        let request =
            Request::new(Method::POST, node_certificate_path(&self.config.name)).json(&RenewRequest { csr: fresh.request_pem.clone() });
        let answer = self.client().send(request).await?;
        if !answer.is_success() {
            return Err(AgentError::Refused { what: "certificate renewal", status: Box::new(answer.status_error()) });
        }
        self.install(fresh.key_pem, answer.json()?).await?;
        tracing::info!(node = %self.config.name, "renewed its certificate");
        Ok(())
    }

    /// Saves a new key and certificate (the key first: a certificate without its key is
    /// useless), presents them from now on, and starts new connections with them.
    async fn install(&self, key_pem: String, issued: CertificateResponse) -> Result<(), AgentError> {
        if issued.ca.trim() != self.config.ca_pem.trim() {
            tracing::warn!("the orchestrators sent a CA certificate other than --ca-cert; keeping --ca-cert");
        }
        let identity = TlsIdentity::from_pem(&issued.certificate, &key_pem).map_err(|e| AgentError::Tls(e.to_string()))?;
        let parsed = PeerCertificate::from_pem(&issued.certificate).map_err(|e| AgentError::Tls(e.to_string()))?;
        let dir = self.config.data_dir.clone();
        let cert = issued.certificate.clone();
        let at_rest = self.at_rest.clone();
        tokio::task::spawn_blocking(move || -> Result<(), FileError> {
            at_rest.write(&dir.join(KEY), key_pem.as_bytes(), Access::Owner)?;
            at_rest.write(&dir.join(CERT), cert.as_bytes(), Access::Owner)
        })
        .await
        .map_err(|e| AgentError::Tls(e.to_string()))??;
        self.certificate.current.replace(&identity).map_err(|e| AgentError::Tls(e.to_string()))?;
        *lock(&self.certificate.validity) = Some(Validity::from_now(parsed.not_after));
        *lock(&self.certificate.installed) = Some(std::time::Instant::now());
        // Pooled connections present the old certificate; new ones the new.
        self.reconnect()?;
        Ok(())
    }

    /// Renews the certificate when due, until the process stops.
    pub(super) async fn renewal_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(e) = self.renew_if_due().await {
                tracing::warn!("certificate renewal failed: {e}; retrying");
            }
        }
    }
}

/// Hex of `bytes` random bytes from the operating system.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    edgeplane_tls::config::provider().secure_random.fill(&mut buf).expect("the operating system's random source works");
    edgeplane_api::hex::encode(&buf)
}
