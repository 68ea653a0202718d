//! Replication for the edgeplane orchestrator, built on raft-rs.
//!
//! raft-rs is consensus only; this crate brings the rest: the log's storage, the state
//! machine's driving, the transport between processes and the async shell around them.
//!
//! # Layout
//! - [`engine`]: the pure core. An [`engine::Engine`] owns the `RawNode`, the in-memory log and
//!   the [`edgeplane_core::ClusterState`]; it handles a Ready in two halves around persistence
//!   and does no IO, so the deterministic simulation (`tests/simulation.rs`) runs the very code
//!   production runs.
//! - [`storage`]: [`storage::LogStore`] (what raft-rs reads) and [`storage::WriteBatch`] (every
//!   change to durable state, with its reference meaning in [`storage::LogState::apply`]).
//! - [`disk`]: the durable copy, an append-only log of batches in segment files: one record
//!   and one `fdatasync` per batch.
//! - [`node`]: the tokio actor that owns an engine, persists on a blocking thread, matches
//!   proposals to callers by request id, batches ReadIndex rounds, and times requests out.
//! - [`restore`]: seeding a new member's empty data directory from a backup's state.
//! - [`transport`]: one persistent framed TCP connection per peer with bounded queues.
//! - [`net`]: where every connection is built (the place mTLS goes).
//! - [`watch`]: the history and live feed of applied changes, for watchers.
//! - [`logging`]: raft-rs's slog output bridged into `tracing`.
//! - [`metrics`]: Prometheus metrics of all of the above.

pub mod disk;
pub mod engine;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod node;
pub mod restore;
pub mod storage;
pub mod transport;
pub mod watch;

pub use engine::{Engine, EngineConfig, EngineStatus};
pub use node::{NodeConfig, NodeHandle, ReadError, WriteError};
