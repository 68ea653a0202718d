//! The edgeplane edge runtime.
//!
//! - [`host`]: wasmtime running guest ABI v1 modules, with limits and deadlines.
//! - [`pool`]: the threads wasm runs on, and instance supervision (restart with backoff).
//! - [`agent`]: identity, registration, heartbeats, and reconciling instances with Assignments.
//! - [`config`]: flags and their validation.

pub mod host;
pub mod pool;
pub mod agent;
pub mod config;
