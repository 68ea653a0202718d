//! What the request handlers and the leader's loops share.

use std::sync::Arc;

use edgeplane_raft::watch::WatchHub;
use edgeplane_raft::NodeHandle;
use prometheus_client::registry::Registry;

use crate::audit::{Archive, AuditSink};
use crate::config::Config;
use crate::heartbeats::Heartbeats;
use crate::metrics::SinkMetrics;

/// Cloned for every request (axum's `State`): one reference count, however much is shared.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Debug)]
pub struct Shared {
    pub node: NodeHandle,
    pub watch: Arc<WatchHub>,
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    /// The leader's memory of heartbeats (empty on followers).
    pub heartbeats: Arc<Heartbeats>,
    pub sink_metrics: SinkMetrics,
    pub scheduler_metrics: crate::metrics::SchedulerMetrics,
    /// The cluster's certificate authority: signs node and user certificates.
    pub ca: Arc<edgeplane_tls::CertificateAuthority>,
    /// Records of requests that wrote nothing.
    pub audit: AuditSink,
    /// This member's archive of the audit chain.
    pub archive: Archive,
    pub backup_metrics: crate::backup::BackupMetrics,
    /// The other members' APIs, as this member (`None` in a cluster of one).
    pub other_members: Option<Arc<edgeplane_client::Client>>,
    /// Modules compiled ahead of time for the edges' targets.
    pub precompiler: crate::native::Precompiler,
}
