//! TLS for every edgeplane link: the REST API, the Raft peer transport, edge runtimes' calls
//! to the orchestrators, the edge's own API and MQTT.
//!
//! Each cluster has one certificate authority, created when the cluster is initialised. It
//! issues every certificate: the orchestrators' (mutual TLS between Raft peers, HTTPS for the
//! API), the edge nodes' (enrolled with a bootstrap token, renewed by the node), and people's and
//! programs' client certificates. Who a certificate belongs to is in its subject, the way
//! Kubernetes does it (user in the common name, groups in the organizations); [`pki::Subject`]
//! is the one place that convention is written and read.
//!
//! # Layout
//! - [`pki`]: the certificate authority, the subjects it issues to, keys and signing requests.
//! - [`cert`]: what a presented certificate says (subject, serial, expiry).
//! - [`config`]: rustls client and server configurations (ring only), and an identity that
//!   can be replaced while connections use it (renewal).
//! - [`signing`]: ed25519 keys and the signatures over modules and models.
//! - [`sealing`]: keys that seal data at rest (the edge's storage, backups);
//!   [`backup`]: the sealed backup file.
//! - [`durable`]: files written whole or not at all (temporary, fsync, rename, directory fsync).
//! - [`serve`]: the HTTPS accept loop for an axum router: handshake and header timeouts,
//!   connection limits in all and per client address, the peer's certificate on every request.

pub mod backup;
pub mod cert;
pub mod config;
pub mod durable;
pub mod pki;
pub mod sealing;
pub mod serve;
pub mod signing;

pub use cert::PeerCertificate;
pub use config::{ClientAuth, TlsIdentity};
pub use pki::{CertificateAuthority, Issued, KeyAndRequest, Subject};

/// Everything that can go wrong with keys, certificates and TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is not valid PEM: {why}")]
    Pem { what: String, why: String },
    #[error("{what}: no certificate in it")]
    NoCertificate { what: String },
    #[error("the certificate authority: {0}")]
    Authority(String),
    #[error("the certificate signing request: {0}")]
    Request(String),
    #[error("the certificate: {0}")]
    Certificate(String),
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    #[error("TLS client verification")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}
