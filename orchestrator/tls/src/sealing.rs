//! Encryption at rest: an AEAD (ChaCha20-Poly1305, ring) under a 256-bit key kept in a file of
//! 64 hex digits. The edge's storage key (`--storage-key FILE`, or `<data-dir>/storage.key`
//! made owner-only on the first start) seals its outbox; a backup key seals the control plane's
//! backups ([`crate::backup`]). A sealed item is `nonce (12) || ciphertext ||
//! tag (16)`, with a random nonce of its own; the associated data says what the item is, so a
//! sealed item cannot be passed off as another kind. Opening fails on any changed, cut or
//! foreign byte: damage is detected, never read as data.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom as _, SystemRandom};

/// What sealing adds to an item: the nonce and the tag.
pub const OVERHEAD: usize = NONCE_LEN + 16;

/// A 256-bit key that seals and opens items.
pub struct SealingKey {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> SealingKey {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte ChaCha20-Poly1305 key");
        SealingKey { key: LessSafeKey::new(key), random: SystemRandom::new() }
    }

    /// Reads the key from `path` (64 hex digits), or, when `create` and the file does not
    /// exist, makes a random one there, owner-only.
    pub fn load(path: &Path, create: bool) -> Result<SealingKey, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let hex = text.trim();
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| hex.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
                    .collect::<Option<_>>()
                    .filter(|b: &Vec<u8>| b.len() == 32 && hex.len() == 64)
                    .ok_or_else(|| format!("{} must hold 64 hex digits (a 256-bit key)", path.display()))?;
                let mut key = [0; 32];
                key.copy_from_slice(&bytes);
                Ok(SealingKey::from_bytes(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut key = [0u8; 32];
                SystemRandom::new().fill(&mut key).map_err(|_| "no randomness for a key".to_owned())?;
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                file.write_all(format!("{hex}\n").as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Ok(SealingKey::from_bytes(&key))
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Appends `plaintext` sealed to `out`.
    pub fn seal_into(&self, out: &mut Vec<u8>, plaintext: &[u8], aad: &[u8]) {
        let mut nonce = [0u8; NONCE_LEN];
        // The kernel's generator does not fail on Linux once booted; a nonce of zeros would be
        // reused, so refuse to go on rather than seal with it.
        self.random.fill(&mut nonce).expect("random bytes for a nonce");
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(start + NONCE_LEN);
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .expect("sealing in memory does not fail");
        out.extend_from_slice(&body);
    }

    /// The plaintext of a sealed item, if it is intact and was sealed with this key and `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let nonce = Nonce::try_assume_unique_for_key(sealed.get(..NONCE_LEN)?).ok()?;
        let mut body = sealed.get(NONCE_LEN..)?.to_vec();
        let plain_len = self.key.open_in_place(nonce, Aad::from(aad), &mut body).ok()?.len();
        body.truncate(plain_len);
        Some(body)
    }
}

/// How every sealed file starts.
pub const SEALED_FILE_MAGIC: &[u8] = b"EDGEPLANE-SEALED 1\n";

/// What a sealed file's tag also covers: which file it is, so that one sealed file cannot
/// stand in for another.
fn file_aad(name: &str) -> Vec<u8> {
    [&b"edgeplane file\0"[..], name.as_bytes()].concat()
}

impl SealingKey {
    /// The contents of a file named `name` (its name, not its path), sealed.
    pub fn seal_file(&self, name: &str, contents: &[u8]) -> Vec<u8> {
        let mut sealed = SEALED_FILE_MAGIC.to_vec();
        self.seal_into(&mut sealed, contents, &file_aad(name));
        sealed
    }

    /// The contents of a sealed file named `name`: `None` if it is not one, or does not open
    /// (changed, cut, another key, another file's).
    pub fn open_file(&self, name: &str, file: &[u8]) -> Option<Vec<u8>> {
        self.open(file.strip_prefix(SEALED_FILE_MAGIC)?, &file_aad(name))
    }
}

/// Whether `file` is a sealed file.
pub fn is_sealed_file(file: &[u8]) -> bool {
    file.starts_with(SEALED_FILE_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_items_open_only_intact_with_their_key_and_purpose() {
        let key = SealingKey::from_bytes(&[7; 32]);
        let mut sealed = Vec::new();
        key.seal_into(&mut sealed, b"readings", b"outbox");
        assert_eq!(sealed.len(), b"readings".len() + OVERHEAD);
        assert_eq!(key.open(&sealed, b"outbox").as_deref(), Some(&b"readings"[..]));
        assert_eq!(key.open(&sealed, b"assignments"), None, "another purpose");
        assert_eq!(SealingKey::from_bytes(&[8; 32]).open(&sealed, b"outbox"), None, "another key");
        for at in [0, NONCE_LEN, sealed.len() - 1] {
            let mut flipped = sealed.clone();
            flipped[at] ^= 1;
            assert_eq!(key.open(&flipped, b"outbox"), None, "a flipped byte at {at}");
        }
        assert_eq!(key.open(&sealed[..sealed.len() - 1], b"outbox"), None, "cut short");
        let mut again = Vec::new();
        key.seal_into(&mut again, b"readings", b"outbox");
        assert_ne!(again, sealed, "every item has a nonce of its own");
    }

    #[test]
    fn keys_are_made_owner_only_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("storage.key");
        assert!(SealingKey::load(&path, false).is_err(), "no file, not asked to create one");
        let made = SealingKey::load(&path, true).expect("made");
        assert_eq!(std::fs::metadata(&path).expect("file").permissions().mode() & 0o777, 0o600);
        let mut sealed = Vec::new();
        made.seal_into(&mut sealed, b"x", b"t");
        let read = SealingKey::load(&path, true).expect("read back");
        assert_eq!(read.open(&sealed, b"t").as_deref(), Some(&b"x"[..]));
        std::fs::write(&path, "not hex").expect("write");
        assert!(SealingKey::load(&path, true).expect_err("not a key").contains("64 hex digits"));
    }
}
