//! The uplink: the outbox's records go to the orchestrators' cloud sink in order, oldest
//! first, and are acknowledged (deleted) only after the orchestrators have committed them.
//!
//! Resending is always safe (the sink deduplicates by stream and sequence number), so every
//! failure is retried: unreachable orchestrators with a backoff capped at one second (a
//! backlog starts draining within a second of the cloud's return), refusals the node cannot
//! fix by itself (401: it registers again; 413: smaller batches) likewise. A record is set
//! aside (counted, never silently) only when the orchestrators say that record itself is
//! invalid (400 naming `records[i]`), after narrowing the batch down to it, or when the sink
//! refuses it for good (its stream limit).

use std::sync::Arc;
use std::time::Duration;

use edgeplane_api::data::{self, UpRecord, UploadRequest, UploadResponse};
use edgeplane_api::Status;
use edgeplane_client::{Method, Request, Retry, StatusCode};

use super::{Agent, AgentError};
use crate::outbox::{DataKind, OutboxError, Stored};

/// One upload carries at most this many records and about this many bytes of data.
const UPLOAD_RECORDS: usize = 1000;
const UPLOAD_BYTES: usize = 1 << 20;

/// What one upload attempt did.
enum Upload {
    Nothing,
    Sent,
    /// The batch holds something the orchestrators refuse: try fewer records at once.
    Narrow,
}

/// Why an upload attempt failed; it is tried again.
#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("the outbox")]
    Outbox(#[from] OutboxError),
    #[error("the orchestrators refused the upload: {0}")]
    Refused(Box<Status>),
}

impl From<edgeplane_client::ClientError> for UploadError {
    fn from(e: edgeplane_client::ClientError) -> UploadError {
        UploadError::Agent(e.into())
    }
}

impl Agent {
    /// Sends the outbox to the orchestrators, oldest first, for as long as the node runs.
    pub(super) async fn upload_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        let mut batch = UPLOAD_RECORDS;
        loop {
            match self.upload_once(batch).await {
                Ok(Upload::Sent) => {
                    backoff = Duration::from_millis(50);
                    batch = UPLOAD_RECORDS;
                }
                Ok(Upload::Narrow) => batch = (batch / 10).max(1),
                Ok(Upload::Nothing) => {
                    // Nothing waiting: sleep until an append (or a second, as a safety net).
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.dataplane.appended.notified()).await;
                }
                Err(e) => {
                    match &e {
                        UploadError::Refused(status) => tracing::warn!("upload refused, retrying: {status}"),
                        other => tracing::debug!(error = %other, "upload failed, retrying"),
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Sends one batch of at most `max_records` of the oldest records.
    async fn upload_once(&self, max_records: usize) -> Result<Upload, UploadError> {
        let outbox = self.dataplane.outbox().clone();
        let peeked = tokio::task::spawn_blocking(move || outbox.peek(max_records, UPLOAD_BYTES))
            .await
            .map_err(|e| UploadError::Outbox(OutboxError::WriteFailed(e.to_string())))??;
        let outbox = self.dataplane.outbox();
        if peeked.records.is_empty() {
            if peeked.unreadable.is_empty() {
                return Ok(Upload::Nothing);
            }
            // Only damaged records waiting: count them and move past.
            outbox.ack(peeked.upto, peeked.unreadable).await?;
            return Ok(Upload::Sent);
        }
        let count = peeked.records.len();
        if !self.enrolled() {
            self.enroll().await?;
        }
        let body = UploadRequest { records: peeked.records.into_iter().map(up_record).collect() };
        let request = Request::new(Method::POST, data::upload_path(&self.config.name))
            .json(&body)
            // The sink deduplicates: sending it again is safe.
            .retry(Retry::Idempotent);
        let body_bytes = request.body.as_ref().map_or(0, |(b, _)| b.len() as u64);
        let sent = std::time::Instant::now();
        let answer = self.client().send(request).await?;
        self.dataplane.metrics().upload_seconds.observe(sent.elapsed().as_secs_f64());
        let status = (!answer.is_success()).then(|| answer.status_error());
        let names_records = status.as_ref().is_some_and(|s| s.details.causes.iter().any(|c| c.field.starts_with("records[")));
        match verdict(answer.status, names_records, count) {
            Verdict::Delivered => {
                let response: UploadResponse = answer.json()?;
                tracing::debug!(accepted = response.accepted, duplicates = response.duplicates, "uploaded");
                if response.stale > 0 {
                    tracing::warn!(
                        records = response.stale,
                        "the orchestrators fenced records of an assignment generation that has moved elsewhere"
                    );
                }
                if response.refused > 0 {
                    tracing::error!(
                        records = response.refused,
                        "the orchestrators refused records of new streams: this node has as many streams as the sink keeps"
                    );
                }
                self.dataplane.uploaded(body_bytes, response.stale, response.refused);
                outbox.ack(peeked.upto, peeked.unreadable).await?;
                Ok(Upload::Sent)
            }
            Verdict::SetAside => {
                let status = status.expect("a refusal has a status");
                tracing::error!(upto = peeked.upto, "the orchestrators refuse an outbox record as invalid; setting it aside: {status}");
                self.dataplane.uploaded(0, 0, 1);
                outbox.reject(peeked.upto, peeked.unreadable).await?;
                Ok(Upload::Sent)
            }
            Verdict::Narrow => Ok(Upload::Narrow),
            Verdict::Register => {
                tracing::warn!("the orchestrators no longer accept this node's certificate; enrolling again");
                self.enroll().await?;
                Err(UploadError::Refused(Box::new(status.expect("a refusal has a status"))))
            }
            Verdict::Retry => Err(UploadError::Refused(Box::new(status.expect("a refusal has a status")))),
        }
    }
}

/// What to do with the answer to an upload of `count` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Committed: acknowledge the records.
    Delivered,
    /// The one record sent is invalid in itself: set it aside, counted.
    SetAside,
    /// Something in the batch is refused: send fewer records at once to find it.
    Narrow,
    /// The certificate is no longer accepted: enroll again, then retry.
    Register,
    /// Nothing the node can change: retry as it is, with backoff.
    Retry,
}

/// The uplink's rules. `names_records`: the refusal names fields of `records[i]`, i.e. the
/// records themselves are at fault, not the request.
fn verdict(status: StatusCode, names_records: bool, count: usize) -> Verdict {
    match status {
        s if s.is_success() => Verdict::Delivered,
        // Invalid records, or records of streams the node does not own (403): they can never
        // be accepted.
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY | StatusCode::FORBIDDEN if names_records => {
            if count == 1 {
                Verdict::SetAside
            } else {
                Verdict::Narrow
            }
        }
        StatusCode::PAYLOAD_TOO_LARGE if count > 1 => Verdict::Narrow,
        StatusCode::UNAUTHORIZED => Verdict::Register,
        // A single record too large for the orchestrators' limit, a request they cannot read,
        // an orchestrator error: none of it is the record's fault, and none of it is lost.
        _ => Verdict::Retry,
    }
}

/// An outbox record in the upload's form: readings decoded, other data in base64.
fn up_record(stored: Stored) -> UpRecord {
    use base64::Engine as _;
    let r = stored.record;
    let decoded = match r.kind {
        DataKind::Readings => data::decode_batch(&r.data).ok(),
        DataKind::Opaque => None,
    };
    let (readings, opaque) = match decoded {
        Some(readings) => (readings, None),
        // Not a batch after all (the outbox checksums it, so this is a bug): send the bytes.
        None => (Vec::new(), Some(base64::engine::general_purpose::STANDARD.encode(&r.data))),
    };
    UpRecord {
        stream: r.stream,
        seq: stored.seq,
        namespace: r.namespace,
        workload: r.workload,
        output: r.output,
        generation: r.generation,
        model: r.model,
        produced_ms: r.produced_ms,
        readings,
        opaque,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only an invalid record, named by the orchestrators and isolated, is ever set aside.
    /// (Before, any 400, 413 or 422 for a single record set it aside for good.)
    #[test]
    fn only_a_record_named_invalid_is_set_aside() {
        let cases = [
            (StatusCode::OK, false, 10, Verdict::Delivered),
            (StatusCode::BAD_REQUEST, true, 1, Verdict::SetAside),
            (StatusCode::UNPROCESSABLE_ENTITY, true, 1, Verdict::SetAside),
            (StatusCode::FORBIDDEN, true, 1, Verdict::SetAside),
            (StatusCode::FORBIDDEN, false, 1, Verdict::Retry),
            (StatusCode::BAD_REQUEST, true, 10, Verdict::Narrow),
            (StatusCode::BAD_REQUEST, false, 1, Verdict::Retry),
            (StatusCode::PAYLOAD_TOO_LARGE, false, 10, Verdict::Narrow),
            (StatusCode::PAYLOAD_TOO_LARGE, false, 1, Verdict::Retry),
            (StatusCode::UNAUTHORIZED, false, 1, Verdict::Register),
            (StatusCode::SERVICE_UNAVAILABLE, false, 1, Verdict::Retry),
            (StatusCode::GATEWAY_TIMEOUT, false, 1, Verdict::Retry),
            (StatusCode::INTERNAL_SERVER_ERROR, false, 1, Verdict::Retry),
        ];
        for (status, names_records, count, expected) in cases {
            assert_eq!(verdict(status, names_records, count), expected, "{status} naming records {names_records}, {count} record(s)");
        }
    }
}
