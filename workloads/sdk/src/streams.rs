//! Per-stream state: a map from (device, metric) to a workload's state for that stream.
//!
//! Workloads look a stream up for every reading, which makes this the hottest code after
//! parsing: lookups take `&str`s, hash them in a few multiplications, compare short strings a
//! word at a time, and allocate only when a stream is first seen. A small open-addressing
//! table does this better than std's `HashMap`, whose lookups by a borrowed pair would need a
//! key copied into a scratch buffer, and whose default hasher (SipHash) alone costs more than
//! a simple workload's work.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::bytes::{self, u32_at, u64_at};

/// A `HashMap` with [`FastHasher`].
pub type FastHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A fast, deterministic, non-cryptographic hasher: eight bytes at a time, a multiply per
/// word and a full avalanche at the end (tables take the bucket from the low bits and, in
/// hashbrown, a tag from the high ones, so both must depend on every input bit).
///
/// Not keyed, hence not resistant to keys chosen to collide (HashDoS): wasm32-unknown-unknown
/// has no randomness to key it with. Colliding keys slow lookups down; they stay correct.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastHasher {
    hash: u64,
}

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl FastHasher {
    #[inline(always)]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash ^ word).wrapping_mul(MULTIPLIER).rotate_left(29);
    }

    /// Adds `bytes` and their length. The words read cover every byte (some twice), so
    /// together with the length they determine the input.
    #[inline(always)]
    fn add_bytes(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        if n >= 8 {
            let mut at = 0;
            while at + 8 < n {
                self.add(u64_at(bytes, at));
                at += 8;
            }
            self.add(u64_at(bytes, n - 8));
        } else if n >= 4 {
            self.add(u64::from(u32_at(bytes, 0)) | u64::from(u32_at(bytes, n - 4)) << 32);
        } else if n > 0 {
            self.add(u64::from(bytes[0]) | u64::from(bytes[n / 2]) << 8 | u64::from(bytes[n - 1]) << 16);
        }
        self.add(n as u64);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.add_bytes(bytes);
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The MurmurHash3 finalizer.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The hash of a stream, from both ends of both names (8 bytes each, overlapping for short
/// names): two rounds per name, the names in parallel, a round to join them, the finalizer.
/// Every word goes through at least one multiply-rotate round before the join, so words that
/// differ only in their high bytes do not collide (plain products of each word would).
/// Names over 16 bytes also go through the hasher for their middle bytes: identifiers like
/// `line-4/press-17/motor` often differ only there.
#[inline(always)]
fn stream_hash(device: &str, metric: &str) -> u64 {
    let (device, metric) = (device.as_bytes(), metric.as_bytes());
    let (d0, d1) = ends(device);
    let (m0, m1) = ends(metric);
    let mut d = FastHasher { hash: 0x243f_6a88_85a3_08d3 };
    d.add(d0);
    d.add(d1);
    let mut m = FastHasher { hash: 0x1319_8a2e_0370_7344 };
    m.add(m0);
    m.add(m1);
    d.add((device.len() as u64) << 32 | metric.len() as u64);
    let mut hasher = FastHasher { hash: d.hash ^ m.hash };
    if device.len() > 16 {
        hasher.add_bytes(device);
    }
    if metric.len() > 16 {
        hasher.add_bytes(metric);
    }
    hasher.finish()
}

/// The first and last 8 bytes (fewer for short input; with the length they determine inputs
/// of up to 16 bytes).
#[inline(always)]
fn ends(bytes: &[u8]) -> (u64, u64) {
    let n = bytes.len();
    if n >= 8 {
        (u64_at(bytes, 0), u64_at(bytes, n - 8))
    } else if n >= 4 {
        (u64::from(u32_at(bytes, 0)), u64::from(u32_at(bytes, n - 4)))
    } else if n > 0 {
        (u64::from(bytes[0]) | u64::from(bytes[n / 2]) << 8 | u64::from(bytes[n - 1]) << 16, 0)
    } else {
        (0, 0)
    }
}

/// A stream's identity and its state.
#[derive(Debug, Clone)]
pub struct Stream<V> {
    device: String,
    metric: String,
    hash: u64,
    pub state: V,
}

impl<V> Stream<V> {
    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn metric(&self) -> &str {
        &self.metric
    }
}

/// State per (device, metric) stream, in the order streams were first seen. Streams are
/// never removed (except all at once), so positions are stable.
#[derive(Debug, Clone)]
pub struct StreamMap<V> {
    /// Open addressing with linear probing, at most half full. A slot holds the high half of
    /// the stream's hash (so that most mismatches are decided without touching the stream)
    /// and, in the low half, `p + 1` for the stream at position `p`; 0 is an empty slot. The
    /// length is 0 or a power of two.
    slots: Vec<u64>,
    streams: Vec<Stream<V>>,
}

impl<V> Default for StreamMap<V> {
    fn default() -> Self {
        Self { slots: Vec::new(), streams: Vec::new() }
    }
}

impl<V> StreamMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream's position, inserting `new()` if the stream was not seen before.
    #[inline]
    pub fn position_or_insert_with(&mut self, device: &str, metric: &str, new: impl FnOnce() -> V) -> usize {
        let hash = stream_hash(device, metric);
        match self.find(hash, device, metric) {
            Some(position) => position,
            None => self.insert(hash, device, metric, new()),
        }
    }

    /// The stream, inserting `new()` if it was not seen before.
    #[inline]
    pub fn get_or_insert_with(&mut self, device: &str, metric: &str, new: impl FnOnce() -> V) -> &mut Stream<V> {
        let position = self.position_or_insert_with(device, metric, new);
        &mut self.streams[position]
    }

    /// Looks a stream up without inserting it.
    pub fn get(&self, device: &str, metric: &str) -> Option<&Stream<V>> {
        let position = self.find(stream_hash(device, metric), device, metric)?;
        Some(&self.streams[position])
    }

    pub fn get_mut(&mut self, device: &str, metric: &str) -> Option<&mut Stream<V>> {
        let position = self.find(stream_hash(device, metric), device, metric)?;
        Some(&mut self.streams[position])
    }

    /// The stream at `position` (see [`StreamMap::position_or_insert_with`]).
    pub fn at(&self, position: usize) -> &Stream<V> {
        &self.streams[position]
    }

    pub fn at_mut(&mut self, position: usize) -> &mut Stream<V> {
        &mut self.streams[position]
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// All streams, in the order they were first seen.
    pub fn iter(&self) -> std::slice::Iter<'_, Stream<V>> {
        self.streams.iter()
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Stream<V>> {
        self.streams.iter_mut()
    }

    /// Forgets every stream.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.streams.clear();
    }

    #[inline(always)]
    fn find(&self, hash: u64, device: &str, metric: &str) -> Option<usize> {
        let mask = self.slots.len().wrapping_sub(1);
        let mut i = hash as usize & mask;
        loop {
            // At most half full, so an empty slot ends every probe sequence.
            let slot = *self.slots.get(i)?;
            if slot == 0 {
                return None;
            }
            if slot >> 32 == hash >> 32 {
                let position = (slot as u32 - 1) as usize;
                let stream = &self.streams[position];
                if bytes::eq(stream.device.as_bytes(), device.as_bytes()) && bytes::eq(stream.metric.as_bytes(), metric.as_bytes()) {
                    return Some(position);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds a stream known to be absent.
    #[inline(never)]
    fn insert(&mut self, hash: u64, device: &str, metric: &str, state: V) -> usize {
        let position = self.streams.len();
        let slot = u32::try_from(position + 1).expect("more than 2^32 - 1 streams");
        if (position + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.streams.push(Stream { device: device.to_owned(), metric: metric.to_owned(), hash, state });
        self.place(hash, slot);
        position
    }

    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(16);
        self.slots.clear();
        self.slots.resize(len, 0);
        for position in 0..self.streams.len() {
            self.place(self.streams[position].hash, position as u32 + 1);
        }
    }

    fn place(&mut self, hash: u64, slot: u32) {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = hash & 0xffff_ffff_0000_0000 | u64::from(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash + ?Sized>(value: &T) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one_compat(value)
    }

    trait HashOne {
        fn hash_one_compat<T: Hash + ?Sized>(&self, value: &T) -> u64;
    }

    // `BuildHasher::hash_one` is newer than Rust 1.63.
    impl<B: BuildHasher> HashOne for B {
        fn hash_one_compat<T: Hash + ?Sized>(&self, value: &T) -> u64 {
            let mut hasher = self.build_hasher();
            value.hash(&mut hasher);
            hasher.finish()
        }
    }

    #[test]
    fn hasher_is_deterministic_and_spreads() {
        assert_eq!(hash("press-7"), hash("press-7"));
        assert_ne!(hash("press-7"), hash("press-8"));
        assert_ne!(hash(&b"a"[..]), hash(&b"a\0"[..]));
        for n in 0..40 {
            let a: Vec<u8> = (0..n as u8).collect();
            let mut b = a.clone();
            for i in 0..n {
                b[i] ^= 0x40;
                assert_ne!(hash(&a[..]), hash(&b[..]), "length {n}, byte {i}");
                b[i] ^= 0x40;
            }
        }
        // Low and high bits both vary across near-identical keys.
        let hashes: Vec<u64> = (0..1000).map(|i| hash(&format!("sensor-{i}"))).collect();
        let low: std::collections::BTreeSet<u64> = hashes.iter().map(|h| h & 0x3ff).collect();
        let high: std::collections::BTreeSet<u64> = hashes.iter().map(|h| h >> 54).collect();
        assert!(low.len() > 550 && high.len() > 550, "low {} high {}", low.len(), high.len());
    }

    #[test]
    fn stream_hash_spreads() {
        let mut low = std::collections::BTreeSet::new();
        let mut tags = std::collections::BTreeSet::new();
        for i in 0..1000 {
            let h = stream_hash(&format!("press-{i}"), if i % 2 == 0 { "temperature" } else { "rpm" });
            low.insert(h & 0x3ff);
            tags.insert(h >> 32);
        }
        assert!(low.len() > 550, "{}", low.len());
        // Distinct 32-bit tags: a chance of 1e-4 to fail for a random function, while summing
        // per-word products collided on these keys.
        assert_eq!(tags.len(), 1000);
        // Pinned to what an independent model of the function computes (the model checked it
        // for collisions on structured key sets).
        assert_eq!(stream_hash("press-7", "temperature"), 0xb923_d047_c8fd_7b56);
        assert_ne!(stream_hash("a", "bc"), stream_hash("ab", "c"));
        assert_ne!(stream_hash("", "x"), stream_hash("x", ""));
        // Long names that differ only in the middle.
        assert_ne!(stream_hash("line-4/press-17/motor-a", "t"), stream_hash("line-4/press-18/motor-a", "t"));
        assert_ne!(stream_hash("d", "line-4/press-17/motor-a"), stream_hash("d", "line-4/press-18/motor-a"));
    }

    #[test]
    fn streams_by_device_and_metric() {
        let mut map: StreamMap<u32> = StreamMap::new();
        map.get_or_insert_with("a", "bc", || 1).state += 10;
        map.get_or_insert_with("ab", "c", || 2);
        map.get_or_insert_with("a", "bc", || unreachable!()).state += 100;
        assert_eq!(map.len(), 2);
        assert_eq!(map.get("a", "bc").map(|s| s.state), Some(111));
        assert_eq!(map.get("ab", "c").map(|s| s.state), Some(2));
        assert!(map.get("abc", "").is_none());
        let order: Vec<(&str, &str)> = map.iter().map(|s| (s.device(), s.metric())).collect();
        assert_eq!(order, [("a", "bc"), ("ab", "c")]);
        assert_eq!(map.position_or_insert_with("ab", "c", || 0), 1);
        assert_eq!(map.at(1).state, 2);
        map.clear();
        assert!(map.is_empty() && map.get("a", "bc").is_none());
    }

    #[test]
    fn many_streams() {
        let mut map: StreamMap<usize> = StreamMap::new();
        for i in 0..10_000 {
            let device = format!("dev-{}", i % 100);
            let metric = format!("m{}", i / 100);
            assert_eq!(map.get_or_insert_with(&device, &metric, || i).state, i);
        }
        assert_eq!(map.len(), 10_000);
        // Every stream is still found after the table grew, at its first-seen position.
        for i in 0..10_000 {
            let (device, metric) = (format!("dev-{}", i % 100), format!("m{}", i / 100));
            assert_eq!(map.position_or_insert_with(&device, &metric, || unreachable!()), i);
            map.get_mut(&device, &metric).unwrap().state += 1;
        }
        assert!(map.iter().enumerate().all(|(i, s)| s.state == i + 1));
        assert!(map.get("dev-1", "m100").is_none());
    }
}
