//! Heartbeats: every `--heartbeat-ms`, the node's load and every instance's state go to the
//! leader (a follower answers 503 naming it, and the client follows). They take nothing that
//! downloads or compiles hold, so a node stays Ready while it fetches a large module.

use std::sync::Arc;

use edgeplane_api::node::{self, InstanceReport};
use edgeplane_api::resources::NodeLoad;
use edgeplane_client::{Method, Request, Retry, StatusCode};

use super::{Agent, AgentError};

impl Agent {
    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.config.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(e) = self.heartbeat_once().await {
                tracing::debug!(error = %e, "heartbeat failed");
            }
        }
    }

    async fn heartbeat_once(&self) -> Result<(), AgentError> {
        if !self.enrolled() {
            self.enroll().await?;
        }
        let request = Request::new(Method::POST, node::heartbeat_path(&self.config.name))
            .json(&self.heartbeat())
            // A heartbeat sent twice is a heartbeat.
            .retry(Retry::Idempotent)
            .attempt_timeout(self.config.heartbeat * 4);
        let answer = self.client().send(request).await?;
        match answer.status {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => {
                tracing::warn!(
                    "the orchestrators no longer accept this node's certificate ({}); enrolling again",
                    answer.status_error().message
                );
                self.enroll().await
            }
            _ => Err(AgentError::Refused { what: "heartbeat", status: Box::new(answer.status_error()) }),
        }
    }
}

/// The node's load, from /proc and its instances.
pub(super) fn node_load(meter: &mut LoadMeter, instances: &[InstanceReport]) -> NodeLoad {
    let (cpu_millis, memory_mib) = meter.sample();
    NodeLoad { cpu_millis, memory_mib, instances: instances.len() as u32, queue_depth: instances.iter().map(|i| i.queue_depth).sum() }
}

/// The process's CPU use since the previous sample, and its resident memory, from /proc
/// (in-memory files the kernel answers at once: no disk IO).
#[derive(Debug, Default)]
pub(super) struct LoadMeter {
    last: Option<(std::time::Instant, u64)>,
}

impl LoadMeter {
    fn sample(&mut self) -> (u32, u64) {
        let ticks = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
            // Fields after the command name (which may contain spaces) start after ')'.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        });
        let rss_pages =
            std::fs::read_to_string("/proc/self/statm").ok().and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok()).unwrap_or(0);
        let now = std::time::Instant::now();
        let cpu = match (self.last, ticks) {
            // Linux reports CPU time in clock ticks of 1/100 s.
            (Some((then, before)), Some(t)) => {
                let elapsed = now.duration_since(then).as_secs_f64().max(1e-3);
                ((t.saturating_sub(before)) as f64 * 10.0 / elapsed) as u32
            }
            _ => 0,
        };
        if let Some(t) = ticks {
            self.last = Some((now, t));
        }
        (cpu, rss_pages * 4096 / (1 << 20))
    }
}
