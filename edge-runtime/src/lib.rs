//! The edgeplane edge runtime.
//!
//! - [`host`]: wasmtime running guest ABI v1 modules, with limits and deadlines.
//! - [`pool`]: the threads wasm runs on, and instance supervision (restart with backoff).

pub mod host;
pub mod pool;
