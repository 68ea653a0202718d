//! Heartbeats: every `--heartbeat-ms`, the node's load and every instance's state go to the
//! leader. They take nothing that downloads or compiles hold, so a node stays Ready while it
//! fetches a large module.
//!
//! A heartbeat goes first as a request of its own, which finds the leader (a follower answers
//! 503 naming it, and the client follows) and enrolls the node again if its certificate is no
//! longer accepted. The next ones go as lines of one long-lived request to the orchestrator
//! that took it (`edgeplane_api::node::heartbeat_stream_path`), which costs the leader a
//! fraction of a request each. The stream is given up, and the next heartbeat is a request
//! again, when the leader ends it (it no longer leads, the certificate changed), when the
//! connection fails, or when a heartbeat goes unacknowledged for four intervals (a leader cut
//! off or frozen: its kernel may take the bytes long after it stopped reading them).

use std::sync::Arc;
use std::time::Duration;

use edgeplane_api::node::{self, HeartbeatStreamEvent, InstanceReport, NDJSON};
use edgeplane_api::resources::NodeLoad;
use edgeplane_client::{Lines, Method, Request, Retry, StatusCode};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};

use super::{Agent, AgentError};

/// Why a heartbeat stream was given up.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("the orchestrator did not open it: {0}")]
    NotOpened(String),
    #[error("the orchestrator ended it: {0}")]
    Ended(String),
    #[error("the connection failed: {0}")]
    Failed(String),
    #[error("no acknowledgement for {0:?}")]
    Silent(Duration),
}

impl Agent {
    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.config.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.heartbeat_once().await {
                Ok(server) => {
                    let end = self.heartbeat_stream(&server, &mut ticker).await;
                    tracing::debug!(%server, "heartbeat stream given up: {end}");
                }
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// One heartbeat as a request; the orchestrator that took it.
    async fn heartbeat_once(&self) -> Result<String, AgentError> {
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
            s if s.is_success() => Ok(answer.server),
            StatusCode::UNAUTHORIZED => {
                tracing::warn!(
                    "the orchestrators no longer accept this node's certificate ({}); enrolling again",
                    answer.status_error().message
                );
                self.enroll().await?;
                Err(AgentError::Refused { what: "heartbeat", status: Box::new(answer.status_error()) })
            }
            _ => Err(AgentError::Refused { what: "heartbeat", status: Box::new(answer.status_error()) }),
        }
    }

    /// Heartbeats at every tick of `ticker` as lines of one request to `server`, until the
    /// stream is given up; why it was.
    async fn heartbeat_stream(&self, server: &str, ticker: &mut Interval) -> StreamEnd {
        let patience = self.config.heartbeat * 4;
        // One heartbeat waits here at most: the connection takes them as fast as they come,
        // and one it has not taken by the next tick is dropped (the acknowledgements say when
        // a stream stalls).
        let (lines, body) = edgeplane_client::fed_body(1);
        let path = node::heartbeat_stream_path(&self.config.name);
        let client = self.client();
        let opened = client.open_stream(server, &path, NDJSON, body, patience);
        // The head comes once the first line is on its way.
        ticker.tick().await;
        if lines.try_send(self.heartbeat_line()).is_err() {
            return StreamEnd::Failed("the request ended before its first heartbeat".to_owned());
        }
        let mut answers = match opened.await {
            Ok(Ok(live)) => live.bytes_stream(),
            Ok(Err(refusal)) => return StreamEnd::NotOpened(refusal.status_error().to_string()),
            Err(e) => return StreamEnd::NotOpened(e.to_string()),
        };
        let mut sent = 1u64;
        let mut acknowledged = 0u64;
        // Since when the oldest heartbeat not acknowledged has waited.
        let mut waiting_since = Some(Instant::now());
        let mut answer_lines = Lines::default();
        loop {
            let deadline = waiting_since.map(|since| since + patience);
            tokio::select! {
                _ = ticker.tick() => {
                    match lines.try_send(self.heartbeat_line()) {
                        Ok(()) => sent += 1,
                        Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return StreamEnd::Failed("the request's body was dropped".to_owned()),
                    }
                    waiting_since.get_or_insert_with(Instant::now);
                }
                answer = answers.next() => {
                    let chunk = match answer {
                        Some(Ok(chunk)) => chunk,
                        Some(Err(e)) => return StreamEnd::Failed(e.to_string()),
                        None => return StreamEnd::Ended("the answer ended without a reason".to_owned()),
                    };
                    answer_lines.push(&chunk);
                    while let Some(line) = answer_lines.next_line() {
                        let event: HeartbeatStreamEvent = match serde_json::from_slice(&line) {
                            Ok(event) => event,
                            Err(e) => return StreamEnd::Failed(format!("an answer line that is not a stream event: {e}")),
                        };
                        if let Some(status) = event.end {
                            return StreamEnd::Ended(status.to_string());
                        }
                        if event.received > acknowledged {
                            acknowledged = event.received;
                            // Acknowledgements are cumulative: all sent, or the next wait starts now.
                            waiting_since = (acknowledged < sent).then(Instant::now);
                        }
                    }
                }
                () = sleep_until(deadline) => return StreamEnd::Silent(patience),
            }
        }
    }

    fn heartbeat_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(&self.heartbeat()).expect("heartbeats serialize");
        line.push(b'\n');
        line
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
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
