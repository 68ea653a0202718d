//! Little-endian loads and short-string helpers for the hot paths.
//!
//! Written so that each load is one instruction on wasm32 too: LLVM merges a copy of a
//! `[u8; N]` out of a slice into one (unaligned) load, but not `from_le_bytes([b[0], b[1],
//! ...])`, which on wasm32 stays N byte loads. And short comparisons avoid calling `memcmp`,
//! a byte loop on wasm32.

/// The `N` bytes at `at`, or `None` if `bytes` is too short.
#[inline(always)]
pub(crate) fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The `u64` at `at`; 0 if out of bounds (callers check bounds first).
#[inline(always)]
pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    array(bytes, at).map_or(0, u64::from_le_bytes)
}

/// The `u32` at `at`; 0 if out of bounds (callers check bounds first).
#[inline(always)]
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    array(bytes, at).map_or(0, u32::from_le_bytes)
}

/// `buf.extend_from_slice(bytes)`, with two 8-byte stores instead of a call to `memcpy` (a
/// byte loop on wasm32) for 8 to 16 bytes, the usual length of device and metric names.
#[inline(always)]
pub(crate) fn extend(buf: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if (8..=16).contains(&n) {
        let end = buf.len() + n;
        buf.extend_from_slice(&u64_at(bytes, 0).to_le_bytes());
        // The second word overlaps the first unless n == 16.
        buf.truncate(end - 8);
        buf.extend_from_slice(&u64_at(bytes, n - 8).to_le_bytes());
    } else {
        buf.extend_from_slice(bytes);
    }
}

/// The OR of all bytes, spread over a word: two overlapping loads cover 4 to 16 bytes.
#[inline(always)]
fn or_all(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    if n >= 8 {
        let mut acc = u64_at(bytes, n - 8);
        let mut at = 0;
        while at + 8 < n {
            acc |= u64_at(bytes, at);
            at += 8;
        }
        acc
    } else if n >= 4 {
        u64::from(u32_at(bytes, 0) | u32_at(bytes, n - 4))
    } else {
        bytes.iter().fold(0, |acc, &b| acc | u64::from(b))
    }
}

#[inline(always)]
pub(crate) fn is_ascii(bytes: &[u8]) -> bool {
    or_all(bytes) & 0x8080_8080_8080_8080 == 0
}

/// `a == b`, comparing up to 16 bytes with two loads per side.
#[inline(always)]
pub(crate) fn eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        8..=16 => u64_at(a, 0) == u64_at(b, 0) && u64_at(a, n - 8) == u64_at(b, n - 8),
        4..=7 => u32_at(a, 0) == u32_at(b, 0) && u32_at(a, n - 4) == u32_at(b, n - 4),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads() {
        let bytes: Vec<u8> = (1..=20).collect();
        assert_eq!(u64_at(&bytes, 1), u64::from_le_bytes([2, 3, 4, 5, 6, 7, 8, 9]));
        assert_eq!(u32_at(&bytes, 16), u32::from_le_bytes([17, 18, 19, 20]));
        assert_eq!(array::<2>(&bytes, 19), None);
        assert_eq!(array::<2>(&bytes, usize::MAX), None);
        assert_eq!(u64_at(&bytes, 13), 0);
    }

    #[test]
    fn extends() {
        for n in 0..40 {
            let src: Vec<u8> = (0..n as u8).collect();
            let mut buf = vec![0xaa; 3];
            extend(&mut buf, &src);
            assert_eq!(buf[..3], [0xaa; 3]);
            assert_eq!(buf[3..], src[..]);
        }
    }

    #[test]
    fn ascii_and_equality_at_every_length_and_position() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(is_ascii(&a));
            assert!(eq(&a, &a.clone()));
            if n > 0 {
                assert!(!eq(&a, &a[..n - 1]));
            }
            for i in 0..n {
                let mut b = a.clone();
                b[i] = 0xc3;
                assert!(!is_ascii(&b), "length {n}, byte {i}");
                assert!(!eq(&a, &b), "length {n}, byte {i}");
            }
        }
    }
}
