//! Signatures over modules and models: ed25519 (ring), over the artifact's kind, name, version
//! and digest ([`message`]). The digest ties the signature to the bytes, the rest to what the
//! bytes are published as, so a signature cannot vouch for another artifact, another version
//! or a model passed off as a module.
//!
//! A private key is PKCS#8 in PEM (`-----BEGIN PRIVATE KEY-----`, as `edgectl key create` and
//! `openssl genpkey -algorithm ed25519` write it); a public key is written `ed25519:` and the
//! standard base64 of its 32 bytes, one line that fits a YAML field and a trust-roots file.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const PEM_LABEL: &str = "PRIVATE KEY";

/// What can be wrong with a key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("not an ed25519 public key: {0}")]
    PublicKey(String),
    #[error("not an ed25519 private key (PKCS#8 PEM): {0}")]
    PrivateKey(String),
    #[error("the signature is not base64 of 64 bytes")]
    SignatureEncoding,
    #[error("the signature does not verify with key {key} over {what}")]
    Mismatch { key: String, what: String },
    #[error("generating a key failed")]
    Generate,
}

/// The bytes a signature covers. `kind` is `module` or `model`; the digest is `sha256:<hex>`.
pub fn message(kind: &str, name: &str, version: &str, digest: &str) -> Vec<u8> {
    format!("edgeplane artifact signature v1\nkind: {kind}\nname: {name}\nversion: {version}\ndigest: {digest}\n").into_bytes()
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub const PREFIX: &'static str = "ed25519:";

    /// Checks `signature` (base64) over `message`.
    pub fn verify(&self, message: &[u8], signature: &str, what: &str) -> Result<(), SigningError> {
        let signature = B64.decode(signature.trim()).ok().filter(|s| s.len() == 64).ok_or(SigningError::SignatureEncoding)?;
        UnparsedPublicKey::new(&ED25519, self.0)
            .verify(message, &signature)
            .map_err(|_| SigningError::Mismatch { key: self.to_string(), what: what.to_owned() })
    }
}

impl FromStr for PublicKey {
    type Err = SigningError;

    fn from_str(text: &str) -> Result<Self, SigningError> {
        let text = text.trim();
        let encoded = text
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| SigningError::PublicKey(format!("{text:?} must start with {:?}", Self::PREFIX)))?;
        let bytes = B64.decode(encoded).map_err(|e| SigningError::PublicKey(format!("{text:?}: {e}")))?;
        let key: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| SigningError::PublicKey(format!("{text:?} holds {} bytes, not 32", b.len())))?;
        Ok(PublicKey(key))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, B64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// An ed25519 private key, with its PKCS#8 encoding for writing it out.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public_key())
    }
}

impl SigningKey {
    pub fn generate() -> Result<Self, SigningError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| SigningError::Generate)?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| SigningError::Generate)?;
        Ok(SigningKey { pair, pkcs8: pkcs8.as_ref().to_vec() })
    }

    /// Reads a PKCS#8 PEM private key (v1, as OpenSSL writes it, or v2 with the public key).
    pub fn from_pem(text: &str) -> Result<Self, SigningError> {
        let begin = format!("-----BEGIN {PEM_LABEL}-----");
        let end = format!("-----END {PEM_LABEL}-----");
        let body = text
            .split_once(&begin)
            .and_then(|(_, rest)| rest.split_once(&end))
            .map(|(body, _)| body)
            .ok_or_else(|| SigningError::PrivateKey(format!("no {begin} block")))?;
        let der = B64.decode(body.split_whitespace().collect::<String>()).map_err(|e| SigningError::PrivateKey(e.to_string()))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| SigningError::PrivateKey(e.to_string()))?;
        Ok(SigningKey { pair, pkcs8: der })
    }

    pub fn to_pem(&self) -> String {
        let encoded = B64.encode(&self.pkcs8);
        let mut pem = format!("-----BEGIN {PEM_LABEL}-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str(&format!("-----END {PEM_LABEL}-----\n"));
        pem
    }

    pub fn public_key(&self) -> PublicKey {
        let mut key = [0; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(key)
    }

    /// The signature over `message`, in base64.
    pub fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.pair.sign(message).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let key = SigningKey::generate().expect("key");
        let other = SigningKey::generate().expect("key");
        let signed = message("module", "filter", "1.0.0", "sha256:aa");
        let signature = key.sign(&signed);
        assert_eq!(key.public_key().verify(&signed, &signature, "filter@1.0.0"), Ok(()));
        for (what, public, msg) in [
            ("another key", other.public_key(), signed.clone()),
            ("another digest", key.public_key(), message("module", "filter", "1.0.0", "sha256:ab")),
            ("another version", key.public_key(), message("module", "filter", "1.0.1", "sha256:aa")),
            ("another kind", key.public_key(), message("model", "filter", "1.0.0", "sha256:aa")),
        ] {
            assert!(
                matches!(public.verify(&msg, &signature, "x"), Err(SigningError::Mismatch { .. })),
                "a signature must not verify with {what}"
            );
        }
        assert_eq!(key.public_key().verify(&signed, "not base64!", "x"), Err(SigningError::SignatureEncoding));
    }

    #[test]
    fn keys_round_trip_through_their_text_forms() {
        let key = SigningKey::generate().expect("key");
        let again = SigningKey::from_pem(&key.to_pem()).expect("the PEM reads back");
        assert_eq!(again.public_key(), key.public_key());
        let public: PublicKey = key.public_key().to_string().parse().expect("the public key reads back");
        assert_eq!(public, key.public_key());
        assert!("ed25519:AAAA".parse::<PublicKey>().is_err(), "3 bytes are not a key");
        assert!("rsa:AAAA".parse::<PublicKey>().is_err());
        assert!(SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
    }

    #[test]
    fn openssl_keys_are_read() {
        // `openssl genpkey -algorithm ed25519`: PKCS#8 v1, without the public key.
        let pem =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKUPh+SK56/QG/+I+KjyYh/l22O24Fq8nWKxioexg25/\n-----END PRIVATE KEY-----\n";
        let key = SigningKey::from_pem(pem).expect("an OpenSSL key");
        let signed = message("model", "m", "1.0.0", "sha256:00");
        assert_eq!(key.public_key().verify(&signed, &key.sign(&signed), "m"), Ok(()));
    }
}
