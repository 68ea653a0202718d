//! The node's own trust roots (`--trusted-signers`): with them, the node runs only modules and
//! model files whose signature verifies with one of these keys over the name, version and
//! digest the Assignment names, and the bytes it fetches must have that digest (checked where
//! they are fetched). What the orchestrators say they trust does not matter here, so a
//! compromised control plane cannot make the node run unsigned code. Without them the node
//! runs what it is assigned, as before.

use std::path::Path;

use edgeplane_api::resources::{ArtifactKind, ArtifactSignature, AssignedModel, AssignmentSpec, ModelArtifact};
use edgeplane_tls::signing::{self, PublicKey};

/// Reads a trust-roots file: one public key (`ed25519:...`) per line; blank lines and `#`
/// comments are skipped.
pub fn read_trust_roots(path: &Path) -> Result<Vec<PublicKey>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        keys.push(line.parse().map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?);
    }
    if keys.is_empty() {
        return Err(format!("{} names no key", path.display()));
    }
    Ok(keys)
}

/// Checks an Assignment's module against the node's trust roots, if it has any.
pub fn check_module(roots: Option<&[PublicKey]>, spec: &AssignmentSpec) -> Result<(), String> {
    let Some(roots) = roots else { return Ok(()) };
    let signed = spec
        .module_signature
        .as_ref()
        .ok_or_else(|| format!("module {} is not signed, and this node runs only what its trusted signers signed", spec.module_ref))?;
    let what = format!("module {}@{}", signed.name, signed.version);
    verify(roots, ArtifactKind::Module, (&signed.name, &signed.version, &spec.module_digest), &signed.signature, &what)
}

/// Checks an Assignment's model file against the node's trust roots, if it has any.
pub fn check_model(roots: Option<&[PublicKey]>, model: &AssignedModel, artifact: &ModelArtifact) -> Result<(), String> {
    let Some(roots) = roots else { return Ok(()) };
    let what = format!("model {}@{}", model.name, model.version);
    let signature = artifact
        .signature
        .as_ref()
        .ok_or_else(|| format!("{what} is not signed, and this node runs only what its trusted signers signed"))?;
    verify(roots, ArtifactKind::Model, (&model.name, &model.version, &artifact.digest), signature, &what)
}

fn verify(
    roots: &[PublicKey],
    kind: ArtifactKind,
    (name, version, digest): (&str, &str, &str),
    signature: &ArtifactSignature,
    what: &str,
) -> Result<(), String> {
    let key: PublicKey = signature.key.parse().map_err(|e: signing::SigningError| format!("{what}: {e}"))?;
    if !roots.contains(&key) {
        return Err(format!("{what} is signed by {key}, which is not among this node's trusted signers"));
    }
    key.verify(&signing::message(kind.as_str(), name, version, digest), &signature.signature, &format!("{what} ({digest})"))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use edgeplane_api::resources::SignedModule;
    use edgeplane_tls::signing::SigningKey;

    use super::*;

    fn assignment(signed: Option<SignedModule>, digest: &str) -> AssignmentSpec {
        serde_json::from_value(serde_json::json!({
            "workload": "w", "replica": 0, "nodeName": "n", "generation": 1,
            "moduleRef": "filter@1.0.0", "moduleDigest": digest, "moduleSignature": signed,
        }))
        .expect("an assignment")
    }

    fn signed_by(key: &SigningKey, digest: &str) -> SignedModule {
        let signature = key.sign(&signing::message("module", "filter", "1.0.0", digest));
        SignedModule {
            name: "filter".into(),
            version: "1.0.0".into(),
            signature: ArtifactSignature { key: key.public_key().to_string(), signature },
        }
    }

    #[test]
    fn only_what_a_trusted_signer_signed_runs() {
        let trusted = SigningKey::generate().expect("key");
        let stranger = SigningKey::generate().expect("key");
        let roots = [trusted.public_key()];
        let digest = "sha256:0a";
        assert_eq!(check_module(Some(&roots), &assignment(Some(signed_by(&trusted, digest)), digest)), Ok(()));
        assert_eq!(check_module(None, &assignment(None, digest)), Ok(()), "no trust roots, no check");

        let unsigned = check_module(Some(&roots), &assignment(None, digest)).expect_err("unsigned");
        assert!(unsigned.contains("is not signed"), "{unsigned}");
        let foreign = check_module(Some(&roots), &assignment(Some(signed_by(&stranger, digest)), digest)).expect_err("untrusted");
        assert!(foreign.contains("is not among this node's trusted signers"), "{foreign}");
        // A signature over other bytes: the orchestrators hand out another digest.
        let swapped = check_module(Some(&roots), &assignment(Some(signed_by(&trusted, digest)), "sha256:0b")).expect_err("other bytes");
        assert!(swapped.contains("does not verify"), "{swapped}");
    }

    #[test]
    fn model_files_need_a_trusted_signature_too() {
        let trusted = SigningKey::generate().expect("key");
        let roots = [trusted.public_key()];
        let model: AssignedModel =
            serde_json::from_value(serde_json::json!({"name": "detector", "version": "2.0.0", "format": "onnx"})).expect("a model");
        let artifact = |signature: Option<ArtifactSignature>| -> ModelArtifact {
            serde_json::from_value(serde_json::json!({
                "digest": "sha256:0c", "sizeBytes": 1, "inputs": [], "outputs": [], "backends": ["tract"], "signature": signature,
            }))
            .expect("an artifact")
        };
        let signed = |version: &str| ArtifactSignature {
            key: trusted.public_key().to_string(),
            signature: trusted.sign(&signing::message("model", "detector", version, "sha256:0c")),
        };
        assert_eq!(check_model(Some(&roots), &model, &artifact(Some(signed("2.0.0")))), Ok(()));
        let unsigned = check_model(Some(&roots), &model, &artifact(None)).expect_err("unsigned");
        assert!(unsigned.contains("model detector@2.0.0 is not signed"), "{unsigned}");
        // Signed for another version: a rollback to bytes the signer never vouched for as 2.0.0.
        let other = check_model(Some(&roots), &model, &artifact(Some(signed("1.0.0")))).expect_err("other version");
        assert!(other.contains("does not verify"), "{other}");
    }
}
