//! The edgeplane edge runtime.
//!
//! - [`host`]: wasmtime running guest ABI v1 modules, with limits and deadlines.
//! - [`precompiled`]: loading modules the orchestrators compiled ahead of time (the one `unsafe`).
//! - [`pool`]: the threads wasm runs on, and instance supervision (restart with backoff).
//! - [`agent`]: identity, registration, heartbeats, and reconciling instances with Assignments.
//! - [`dataplane`]: ingest, routing through workloads and topics, sinks, backpressure, counters.
//! - [`outbox`]: the durable store-and-forward queue to the cloud, sealed at rest.
//! - [`storage`]: the node's storage key and the AEAD its data at rest is sealed with.
//! - [`mqtt`]: MQTT ingest (and the client `mqtt` sinks publish with).
//! - [`metrics`]: Prometheus metrics (prometheus-client).
//! - [`api`]: the node's own HTTP API (ingest, status, metrics).
//! - [`config`]: flags and their validation.
//!
//! # Threads
//! The async reactor (two workers) runs the agent's loops, the node's HTTP API and MQTT; it
//! never waits on disk or on guest code. Wasm runs on the [`pool`]'s threads, the outbox's
//! files belong to its writer thread, and file reads and writes of the agent, downloads'
//! caching and module compiles go to blocking threads.

pub mod agent;
pub mod api;
pub mod config;
pub mod dataplane;
pub mod host;
pub mod metrics;
pub mod mqtt;
pub mod outbox;
pub mod pool;
pub mod precompiled;
pub mod storage;
