//! Digests, tokens and their comparison.

pub(crate) use edgeplane_api::hex::{encode as hex, sha256 as sha256_hex};

/// `sha256:` and the hex digest, as modules are named.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// `bytes` random bytes from the operating system's CSPRNG (through ring), hex-encoded.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS random source failing means nothing secure can be made: stop rather than
    // hand out a guessable token.
    edgeplane_tls::config::provider().secure_random.fill(&mut buf).expect("the operating system's random source works");
    hex(&buf)
}

/// Compares secrets in time that does not depend on where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_random_tokens_are_lowercase_hex() {
        assert_eq!(sha256_digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let token = random_hex(8);
        assert!(token.len() == 16 && token.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{token}");
        assert_ne!(random_hex(8), token, "random");
    }
}
