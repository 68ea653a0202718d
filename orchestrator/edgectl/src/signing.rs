//! `edgectl key create` and `--sign`: ed25519 keys that sign modules and models over their
//! kind, name, version and digest (docs/security.md).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use edgeplane_tls::signing::{self, SigningKey};
use sha2::Digest as _;

use crate::Failure;

/// Writes `<dir>/<name>.key` (the private key, PKCS#8 PEM, owner-only) and `<dir>/<name>.pub`
/// (the public key line a TrustPolicy and an edge's `--trusted-signers` take), refusing to
/// replace either; prints the public key.
pub fn create(name: &str, dir: &Path) -> Result<(), Failure> {
    edgeplane_api::validate::dns_subdomain(name).map_err(|e| Failure::Usage(format!("key name: {e}")))?;
    let key = SigningKey::generate().map_err(|e| Failure::Usage(e.to_string()))?;
    let public = key.public_key().to_string();
    let write = |file: &str, text: &str, mode: u32| -> Result<(), Failure> {
        let path = dir.join(file);
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&path).map_err(|e| {
            Failure::Usage(format!(
                "cannot create {}: {e}{}",
                path.display(),
                if path.exists() { " (keys are never overwritten)" } else { "" }
            ))
        })?;
        out.write_all(text.as_bytes())
            .and_then(|()| out.sync_all())
            .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))
    };
    write(&format!("{name}.key"), &key.to_pem(), 0o600)?;
    write(&format!("{name}.pub"), &format!("{public}\n"), 0o644)?;
    println!("{public}");
    eprintln!("wrote {0}/{name}.key (keep it secret) and {0}/{name}.pub", dir.display());
    Ok(())
}

/// The query parameters that sign a push of `bytes` as `kind` `name`@`version` with the key in
/// `key_file`.
pub fn sign(key_file: &str, kind: &str, name: &str, version: &str, bytes: &[u8]) -> Result<Vec<(&'static str, String)>, Failure> {
    let pem = std::fs::read_to_string(key_file).map_err(|e| Failure::Usage(format!("cannot read {key_file}: {e}")))?;
    let key = SigningKey::from_pem(&pem).map_err(|e| Failure::Usage(format!("{key_file}: {e}")))?;
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(bytes));
    let signature = key.sign(&signing::message(kind, name, version, &digest));
    Ok(vec![("signer", key.public_key().to_string()), ("signature", signature)])
}
