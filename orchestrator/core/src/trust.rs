//! Which signers a namespace trusts for its modules and models, from its TrustPolicies. The
//! registry asks at push and the scheduler before every new placement, so removing a key from
//! a policy stops new placements of what only that key signed. Pure: whether a signature is
//! valid is checked with the key at push (`edgeplane_tls::signing`), and again by every edge
//! that has trust roots of its own.

use edgeplane_api::resources::{ArtifactKind, ArtifactSignature, TrustPolicySpec};
use serde::Deserialize as _;

use crate::ClusterState;

/// Whether `what` (e.g. `module filter@1.0.0`), of `kind`, signed with `signature` or not, may
/// be pushed into or placed in `namespace`. Where no TrustPolicy requires signatures anything
/// may; where one does, the signer must be a key some TrustPolicy of the namespace trusts for
/// `kind`. The error says what is missing, for a refusal or a Workload's condition.
pub fn admit(
    state: &ClusterState,
    namespace: &str,
    kind: ArtifactKind,
    what: &str,
    signature: Option<&ArtifactSignature>,
) -> Result<(), String> {
    let policies: Vec<(String, TrustPolicySpec)> = state
        .list("trustpolicies", Some(namespace))
        .filter_map(|(key, object)| {
            let spec = object.value.get("spec").and_then(|v| TrustPolicySpec::deserialize(v).ok())?;
            Some((key.name.clone(), spec))
        })
        .collect();
    let requiring: Vec<&str> = policies.iter().filter(|(_, p)| p.require_signatures).map(|(name, _)| name.as_str()).collect();
    if requiring.is_empty() {
        return Ok(());
    }
    let Some(signature) = signature else {
        return Err(format!(
            "{what} is not signed, and TrustPolicy {} in namespace {namespace} requires signatures (edgectl {} push --sign)",
            requiring.join(", "),
            kind.as_str()
        ));
    };
    let trusted = policies
        .iter()
        .flat_map(|(_, p)| &p.keys)
        .any(|k| k.public_key == signature.key && (k.artifacts.is_empty() || k.artifacts.contains(&kind)));
    if trusted {
        Ok(())
    } else {
        Err(format!(
            "{what} is signed by {}, which no TrustPolicy in namespace {namespace} trusts to sign {}s",
            signature.key,
            kind.as_str()
        ))
    }
}

#[cfg(test)]
mod tests {
    use edgeplane_api::resources::TrustedKey;
    use serde_json::json;

    use super::*;
    use crate::{Command, ObjectKey, Precondition};

    const KEY_A: &str = "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const KEY_B: &str = "ed25519:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=";

    fn with_policy(require: bool, keys: Vec<TrustedKey>) -> ClusterState {
        let mut state = ClusterState::default();
        let spec = TrustPolicySpec { require_signatures: require, keys };
        let put = Command::Put {
            key: ObjectKey::new("trustpolicies", "ns", "release"),
            value: json!({"kind": "TrustPolicy", "metadata": {"name": "release", "namespace": "ns"}, "spec": spec}),
            precondition: Precondition::None,
        };
        state.apply(1, put).expect("put");
        state
    }

    fn signed(key: &str) -> ArtifactSignature {
        ArtifactSignature { key: key.to_owned(), signature: "c2ln".to_owned() }
    }

    #[test]
    fn without_a_requiring_policy_anything_goes() {
        let state = with_policy(false, vec![TrustedKey { name: "a".into(), public_key: KEY_A.into(), artifacts: vec![] }]);
        assert_eq!(admit(&state, "ns", ArtifactKind::Module, "module m@1.0.0", None), Ok(()));
        assert_eq!(admit(&ClusterState::default(), "ns", ArtifactKind::Model, "model m@1.0.0", Some(&signed(KEY_B))), Ok(()));
    }

    #[test]
    fn a_requiring_policy_admits_only_its_keys_for_their_kinds() {
        let keys = vec![
            TrustedKey { name: "a".into(), public_key: KEY_A.into(), artifacts: vec![] },
            TrustedKey { name: "b".into(), public_key: KEY_B.into(), artifacts: vec![ArtifactKind::Model] },
        ];
        let state = with_policy(true, keys);
        let unsigned = admit(&state, "ns", ArtifactKind::Module, "module m@1.0.0", None).expect_err("unsigned");
        assert!(unsigned.contains("is not signed, and TrustPolicy release in namespace ns requires signatures"), "{unsigned}");
        assert_eq!(admit(&state, "ns", ArtifactKind::Module, "module m@1.0.0", Some(&signed(KEY_A))), Ok(()));
        assert_eq!(admit(&state, "ns", ArtifactKind::Model, "model m@1.0.0", Some(&signed(KEY_B))), Ok(()));
        let wrong_kind =
            admit(&state, "ns", ArtifactKind::Module, "module m@1.0.0", Some(&signed(KEY_B))).expect_err("b signs models only");
        assert!(wrong_kind.contains("which no TrustPolicy in namespace ns trusts to sign modules"), "{wrong_kind}");
        // Another namespace has no policy.
        assert_eq!(admit(&state, "other", ArtifactKind::Module, "module m@1.0.0", None), Ok(()));
    }
}
