//! Encryption at rest for the edge's data: the node's storage key is a
//! [`edgeplane_tls::sealing::SealingKey`] (ChaCha20-Poly1305), kept in `--storage-key FILE` or
//! made owner-only at `<data-dir>/storage.key` on the first start.

pub use edgeplane_tls::sealing::{SealingKey as StorageKey, OVERHEAD};
