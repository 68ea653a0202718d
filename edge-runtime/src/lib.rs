//! The edgeplane edge runtime.
//!
//! - [`host`]: wasmtime running guest ABI v1 modules, with limits and deadlines.
//! - [`pool`]: the threads wasm runs on, and instance supervision (restart with backoff).
//! - [`agent`]: identity, registration, heartbeats, and reconciling instances with Assignments.
//! - [`dataplane`]: ingest, routing through workloads and topics, sinks, backpressure, counters.
//! - [`outbox`]: the durable store-and-forward queue to the cloud.
//! - [`mqtt`]: MQTT ingest (and the client `mqtt` sinks publish with).
//! - [`config`]: flags and their validation.

pub mod host;
pub mod pool;
pub mod agent;
pub mod config;
pub mod dataplane;
pub mod mqtt;
pub mod outbox;
