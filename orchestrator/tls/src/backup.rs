//! The sealed backup file: a header anyone may read and a body only the backup key opens.
//!
//! ```text
//! EDGEPLANE-BACKUP 1\n
//! <header: one line of JSON>\n
//! chunk*: u32 big-endian length || sealed chunk (nonce || ciphertext || tag)
//! ```
//!
//! The body (the control plane's state) is cut into chunks of [`CHUNK_BYTES`], each sealed
//! with [`SealingKey`] under associated data that binds it to the header (its sha256), to its
//! position, and to whether it is the last one. So a changed header, a chunk changed, dropped,
//! repeated or moved, a file cut at a chunk boundary or with bytes after its end, all fail to
//! open: nothing of a damaged backup is ever restored. What the header describes (index,
//! checksum of the state, ...) is the caller's format; this module only frames and seals it.

use ring::digest::{digest, SHA256};

use crate::sealing::{SealingKey, OVERHEAD};

/// The first line of every backup file.
pub const MAGIC: &[u8] = b"EDGEPLANE-BACKUP 1\n";

/// Plaintext bytes per sealed chunk.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Why a backup file cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupFileError {
    #[error("not an edgeplane backup (the file does not start with {:?})", String::from_utf8_lossy(MAGIC).trim_end())]
    NotABackup,
    #[error("the backup's header line is not terminated")]
    NoHeader,
    #[error("the backup is cut short after {chunks} chunk(s): its last chunk is missing")]
    Truncated { chunks: u64 },
    #[error("chunk {chunk} of the backup does not open with this key: the key is wrong, or the file was changed")]
    Sealed { chunk: u64 },
    #[error("{bytes} byte(s) follow the backup's last chunk")]
    TrailingBytes { bytes: usize },
}

/// Seals `body` under `key` into a backup file with `header` (one line: no newline inside).
pub fn seal(key: &SealingKey, header: &[u8], body: &[u8]) -> Vec<u8> {
    assert!(!header.contains(&b'\n'), "a backup header is one line");
    let chunks = body.len().div_ceil(CHUNK_BYTES).max(1);
    let mut out = Vec::with_capacity(MAGIC.len() + header.len() + 1 + body.len() + chunks * (4 + OVERHEAD));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(header);
    out.push(b'\n');
    let header_digest = digest(&SHA256, header);
    let mut sealed = Vec::with_capacity(CHUNK_BYTES + OVERHEAD);
    for (index, chunk) in chunk_slices(body).enumerate() {
        let last = index + 1 == chunks;
        sealed.clear();
        key.seal_into(&mut sealed, chunk, &chunk_aad(header_digest.as_ref(), index as u64, last));
        out.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        out.extend_from_slice(&sealed);
    }
    out
}

/// The header of a backup file, readable without the key (`edgectl backup inspect`).
pub fn header(file: &[u8]) -> Result<&[u8], BackupFileError> {
    split_header(file).map(|(header, _)| header)
}

/// Opens a backup file: its header and its body, if every chunk is intact and in place.
pub fn open(key: &SealingKey, file: &[u8]) -> Result<(Vec<u8>, Vec<u8>), BackupFileError> {
    let (header, mut rest) = split_header(file)?;
    let header_digest = digest(&SHA256, header);
    let mut body = Vec::new();
    let mut index = 0u64;
    loop {
        let Some((len, after)) = rest.split_first_chunk::<4>() else {
            return Err(BackupFileError::Truncated { chunks: index });
        };
        let len = u32::from_be_bytes(*len) as usize;
        let Some(sealed) = after.get(..len) else {
            return Err(BackupFileError::Truncated { chunks: index });
        };
        rest = &after[len..];
        let last = rest.is_empty();
        // A chunk sealed as the last one opens only as the last one, and the other way round:
        // a file cut at a chunk boundary, or with a chunk appended, fails here.
        let plain = key.open(sealed, &chunk_aad(header_digest.as_ref(), index, last)).ok_or_else(|| {
            if !last && key.open(sealed, &chunk_aad(header_digest.as_ref(), index, true)).is_some() {
                BackupFileError::TrailingBytes { bytes: rest.len() }
            } else if last && key.open(sealed, &chunk_aad(header_digest.as_ref(), index, false)).is_some() {
                BackupFileError::Truncated { chunks: index + 1 }
            } else {
                BackupFileError::Sealed { chunk: index }
            }
        })?;
        body.extend_from_slice(&plain);
        index += 1;
        if last {
            return Ok((header.to_vec(), body));
        }
    }
}

fn split_header(file: &[u8]) -> Result<(&[u8], &[u8]), BackupFileError> {
    let rest = file.strip_prefix(MAGIC).ok_or(BackupFileError::NotABackup)?;
    let end = rest.iter().position(|b| *b == b'\n').ok_or(BackupFileError::NoHeader)?;
    Ok((&rest[..end], &rest[end + 1..]))
}

/// The body in chunks; an empty body is one empty chunk (there is always a last one).
fn chunk_slices(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let empty: &[u8] = &[];
    body.chunks(CHUNK_BYTES).chain(body.is_empty().then_some(empty))
}

fn chunk_aad(header_digest: &[u8], index: u64, last: bool) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"edgeplane backup chunk\0");
    aad.extend_from_slice(header_digest);
    aad.extend_from_slice(&index.to_be_bytes());
    aad.push(u8::from(last));
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SealingKey {
        SealingKey::from_bytes(&[byte; 32])
    }

    /// A body of three chunks, the last one short.
    fn body() -> Vec<u8> {
        (0..2 * CHUNK_BYTES + 1000).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_sealed_backup_opens_with_its_key_and_hides_its_body() {
        let body = body();
        let file = seal(&key(1), br#"{"index":7}"#, &body);
        assert_eq!(header(&file), Ok(&br#"{"index":7}"#[..]));
        let (h, opened) = open(&key(1), &file).expect("opens");
        assert_eq!(h, br#"{"index":7}"#);
        assert!(opened == body, "the body comes back whole");
        assert!(!file.windows(64).any(|w| w == &body[1000..1064]), "the body is not in the file in clear");
        assert_eq!(open(&key(2), &file), Err(BackupFileError::Sealed { chunk: 0 }));
        let empty = seal(&key(1), b"{}", b"");
        assert_eq!(open(&key(1), &empty).expect("an empty body").1, b"");
    }

    #[test]
    fn every_kind_of_damage_is_refused() {
        let body = body();
        let file = seal(&key(1), br#"{"index":7}"#, &body);
        let body_start = MAGIC.len() + br#"{"index":7}"#.len() + 1;
        let chunk = 4 + CHUNK_BYTES + OVERHEAD;

        let mut header_changed = file.clone();
        header_changed[MAGIC.len() + 10] = b'8';
        assert_eq!(open(&key(1), &header_changed), Err(BackupFileError::Sealed { chunk: 0 }), "a changed header");

        let mut flipped = file.clone();
        flipped[body_start + chunk + 100] ^= 1;
        assert_eq!(open(&key(1), &flipped), Err(BackupFileError::Sealed { chunk: 1 }), "a flipped byte");

        let cut_at_boundary = &file[..body_start + 2 * chunk];
        assert_eq!(open(&key(1), cut_at_boundary), Err(BackupFileError::Truncated { chunks: 2 }), "cut after a chunk");
        assert_eq!(open(&key(1), &file[..file.len() - 1]), Err(BackupFileError::Truncated { chunks: 2 }), "cut mid-chunk");

        let mut longer = file.clone();
        longer.extend_from_slice(&file[body_start..body_start + chunk]);
        assert_eq!(open(&key(1), &longer), Err(BackupFileError::TrailingBytes { bytes: chunk }), "a chunk appended");

        let mut swapped = file[..body_start].to_vec();
        swapped.extend_from_slice(&file[body_start + chunk..body_start + 2 * chunk]);
        swapped.extend_from_slice(&file[body_start..body_start + chunk]);
        swapped.extend_from_slice(&file[body_start + 2 * chunk..]);
        assert_eq!(open(&key(1), &swapped), Err(BackupFileError::Sealed { chunk: 0 }), "chunks reordered");

        assert_eq!(open(&key(1), b"PK\x03\x04"), Err(BackupFileError::NotABackup));
        assert_eq!(open(&key(1), &file[..MAGIC.len() + 3]), Err(BackupFileError::NoHeader));
    }
}
