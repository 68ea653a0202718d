//! Signed pushes: a module or model pushed with `?signer=ed25519:...&signature=...` (`edgectl
//! ... push --sign KEY`) has its signature checked over what is pushed, and a namespace whose
//! TrustPolicy requires signatures takes only what a key it trusts has signed. The signature is
//! kept with the artifact, copied into every Assignment that runs it, and checked again by
//! edges with trust roots of their own.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use edgeplane_api::resources::{ArtifactKind, ArtifactSignature};
use edgeplane_api::StatusReason;
use edgeplane_core::{trust, ClusterState};
use edgeplane_tls::signing::{self, PublicKey};

use crate::http::{cause, ApiError};

/// The query parameters of a signed push: the signer's public key and the signature.
pub(crate) const SIGNER: &str = "signer";
pub(crate) const SIGNATURE: &str = "signature";
pub(crate) const PARAMS: &[&str] = &[SIGNER, SIGNATURE];

/// The signature a push carries, if any, once it verifies over `kind`, `name`, `version` and
/// the digest of the bytes pushed; and whether `namespace` admits the artifact so signed.
pub(crate) fn check_push(
    params: &BTreeMap<String, String>,
    state: &ClusterState,
    namespace: &str,
    kind: ArtifactKind,
    (name, version, digest): (&str, &str, &str),
) -> Result<Option<ArtifactSignature>, ApiError> {
    let what = format!("{} {name}@{version}", kind.as_str());
    let signature = match (params.get(SIGNER), params.get(SIGNATURE)) {
        (None, None) => None,
        (Some(signer), Some(signature)) => {
            let refused = |field: &str, message: String| ApiError::unprocessable(vec![cause(format!("query.{field}"), message)]);
            let key: PublicKey = signer.parse().map_err(|e: signing::SigningError| refused(SIGNER, e.to_string()))?;
            key.verify(&signing::message(kind.as_str(), name, version, digest), signature, &format!("{what} ({digest})"))
                .map_err(|e| refused(SIGNATURE, e.to_string()))?;
            Some(ArtifactSignature { key: key.to_string(), signature: signature.clone() })
        }
        _ => return Err(ApiError::invalid(vec![cause("query", format!("{SIGNER} and {SIGNATURE} go together"))])),
    };
    trust::admit(state, namespace, kind, &what, signature.as_ref())
        .map_err(|why| ApiError::status(StatusCode::FORBIDDEN, StatusReason::Forbidden, why))?;
    Ok(signature)
}
