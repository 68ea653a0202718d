//! The one HTTP client of the orchestrators' API, used by the edge runtime's agent, `edgectl`,
//! the end-to-end tests and the benchmarks, so that all of them follow the same rules.
//!
//! # Which answers move on to the next orchestrator
//! - The request never reached a server (connection refused, connect timeout): next server.
//! - 503: the server did nothing and says so (no leader, overloaded, not the leader for
//!   heartbeats). Next server, and first the leader it names (`details.leaderApiAddr`).
//! - 504 or no answer in time after the request was sent: the write may or may not have taken
//!   effect. For [`Retry::Idempotent`] requests (reads, uploads the sink deduplicates,
//!   heartbeats) the next server is tried; for [`Retry::Once`] requests the answer is final
//!   and the caller sees the outcome is unknown.
//! - Any other answer is final.
//!
//! Between rounds over all servers the client waits with exponential backoff and jitter, until
//! the request's deadline. If every server refused the connection twice in a row (nothing
//! listens at any address given), it gives up at once: waiting would not help, and the error
//! says so.
//!
//! Every connection is HTTPS: the TLS configuration (the cluster CA to trust, and the
//! certificate to present, if any) comes from the caller, usually built with `edgeplane-tls`.
//! A bearer token (a ServiceAccount's) can be set for every request.
//!
//! The client depends on nothing of the orchestrator but [`edgeplane_api`]: the edge runtime
//! links it.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgeplane_api::{Status, StatusReason};
use reqwest::header::{HeaderMap, CONTENT_TYPE};
pub use reqwest::{Method, StatusCode};

/// How far a request may be retried on another server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Sending it twice is harmless: moves on after 503, 504 and timeouts too.
    Idempotent,
    /// Sending it twice may do it twice: moves on only when it surely did not take effect.
    Once,
}

/// Timeouts and backoff.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// To establish a TCP connection.
    pub connect_timeout: Duration,
    /// For one attempt's answer (headers and body), unless the request sets its own.
    pub attempt_timeout: Duration,
    /// For the whole request, over every attempt and wait.
    pub deadline: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Sent as `Authorization: Bearer` with every request that names no token of its own.
    pub bearer: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            bearer: None,
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// Path and query, e.g. `/v1/data?after=7`.
    pub path: String,
    pub body: Option<(Bytes, &'static str)>,
    pub bearer: Option<String>,
    pub retry: Retry,
    /// Overrides [`ClientOptions::attempt_timeout`] (long downloads, watches).
    pub attempt_timeout: Option<Duration>,
}

impl Request {
    pub fn new(method: Method, path: impl Into<String>) -> Request {
        let retry = if method == Method::GET { Retry::Idempotent } else { Retry::Once };
        Request { method, path: path.into(), body: None, bearer: None, retry, attempt_timeout: None }
    }

    pub fn get(path: impl Into<String>) -> Request {
        Request::new(Method::GET, path)
    }

    pub fn json(mut self, body: &impl serde::Serialize) -> Request {
        let bytes = serde_json::to_vec(body).expect("request bodies serialize");
        self.body = Some((bytes.into(), "application/json"));
        self
    }

    pub fn body(mut self, bytes: impl Into<Bytes>, content_type: &'static str) -> Request {
        self.body = Some((bytes.into(), content_type));
        self
    }

    pub fn bearer(mut self, token: Option<&str>) -> Request {
        self.bearer = token.map(str::to_owned);
        self
    }

    pub fn retry(mut self, retry: Retry) -> Request {
        self.retry = retry;
        self
    }

    pub fn attempt_timeout(mut self, timeout: Duration) -> Request {
        self.attempt_timeout = Some(timeout);
        self
    }
}

/// A final answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The server that gave it (`http://host:port`).
    pub server: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::UnexpectedAnswer {
            server: self.server.clone(),
            why: format!("{} with a body that is not the expected JSON: {e}", self.status),
        })
    }

    /// The failure this answer describes: its `Status` body, or, when the body is not one,
    /// a Status saying that the server does not look like an orchestrator.
    pub fn status_error(&self) -> Status {
        match serde_json::from_slice::<Status>(&self.body) {
            Ok(status) if status.kind == "Status" => status,
            _ => {
                let body = String::from_utf8_lossy(&self.body);
                let shown = if body.trim().is_empty() { "an empty body".to_owned() } else { format!("{:?}", truncate(body.trim(), 200)) };
                Status::new(
                    self.status.as_u16(),
                    StatusReason::InternalError,
                    format!(
                        "{} answered {} with {shown}, not an edgeplane Status; is it an orchestrator's API address (not an edge runtime's, or another service)?",
                        self.server, self.status
                    ),
                )
            }
        }
    }

    /// The `Warning` headers the server sent (Kubernetes style: `299 - "text"`), as text.
    pub fn warnings(&self) -> Vec<String> {
        self.headers
            .get_all(reqwest::header::WARNING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| {
                let text = v.strip_prefix("299 - ").unwrap_or(v);
                text.trim_matches('"').to_owned()
            })
            .collect()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Why a request got no final answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A server address that cannot be used.
    #[error("server {address:?}: {why}")]
    BadServer { address: String, why: String },
    /// No orchestrator answered for good before the deadline; each attempt's problem.
    #[error("no orchestrator could serve the request{}: {}", if *.nothing_listens { " (nothing listens at any address given; check --server)" } else { "" }, Attempts(.attempts))]
    Unreachable { attempts: Vec<(String, String)>, nothing_listens: bool },
    /// A request that must not be sent twice was sent and got no answer: it may or may not
    /// have taken effect.
    #[error("{server} did not answer in time; the request may or may not have taken effect")]
    OutcomeUnknown { server: String },
    #[error("{server} sent an unexpected answer: {why}")]
    UnexpectedAnswer { server: String, why: String },
}

struct Attempts<'a>(&'a [(String, String)]);

impl fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The last problem of each server, in the order they were tried.
        let mut seen: Vec<&(String, String)> = Vec::new();
        for attempt in self.0.iter().rev() {
            if !seen.iter().any(|s| s.0 == attempt.0) {
                seen.insert(0, attempt);
            }
        }
        let parts: Vec<String> = seen.iter().map(|(server, why)| format!("{server}: {why}")).collect();
        if parts.is_empty() {
            f.write_str("no attempt was made")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// What one attempt came to.
enum Outcome {
    Final(Response),
    /// Try elsewhere; maybe the leader the server named first.
    MoveOn {
        why: String,
        hint: Option<String>,
        refused: bool,
    },
    Unknown,
}

/// A client of several orchestrators. Cheap to share; clone the `Arc` it usually lives in.
#[derive(Debug)]
pub struct Client {
    servers: Vec<String>,
    http: reqwest::Client,
    options: ClientOptions,
    /// The server that answered last: tried first next time.
    preferred: AtomicUsize,
}

impl Client {
    /// A client of `servers` (`host:port` or `https://host:port`) over TLS configured by
    /// `tls`.
    pub fn new(servers: &[String], options: ClientOptions, tls: rustls::ClientConfig) -> Result<Client, ClientError> {
        let mut normalized = Vec::new();
        for address in servers.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            normalized.push(normalize(address)?);
        }
        if normalized.is_empty() {
            return Err(ClientError::BadServer { address: String::new(), why: "no orchestrator address given".to_owned() });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .use_preconfigured_tls(tls)
            .https_only(true)
            .build()
            .map_err(|e| ClientError::BadServer { address: normalized.join(","), why: e.to_string() })?;
        Ok(Client { servers: normalized, http, options, preferred: AtomicUsize::new(0) })
    }

    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Sends the request to the orchestrators by the rules above; returns the first final
    /// answer (any status code).
    pub async fn send(&self, request: Request) -> Result<Response, ClientError> {
        let (answer, _) = self.failover(&request, Mode::Whole).await?;
        Ok(answer)
    }

    /// Sends the request to one server, once, and returns whatever it answered (a 503 too):
    /// what tests use to see exactly what one orchestrator says. Errors only when no answer
    /// came.
    pub async fn send_to(&self, server: &str, request: Request) -> Result<Response, ClientError> {
        let server = normalize(server)?;
        let sent = match self.build(&server, &request).send().await {
            Ok(response) => read_whole(&server, response).await,
            Err(e) => Err(e),
        };
        sent.map_err(|e| {
            if e.is_connect() || e.is_builder() || request.retry == Retry::Idempotent {
                ClientError::Unreachable { nothing_listens: refused(&e), attempts: vec![(server.clone(), describe(&e))] }
            } else {
                ClientError::OutcomeUnknown { server: server.clone() }
            }
        })
    }

    /// Like [`Client::send`], but returns the live response of the first server that answered
    /// with success, for the caller to stream (watches); a final failure is read whole.
    pub async fn open(&self, request: Request) -> Result<Result<(String, reqwest::Response), Response>, ClientError> {
        match self.failover(&request, Mode::Open).await? {
            (answer, Some(live)) => Ok(Ok((answer.server, live))),
            (answer, None) => Ok(Err(answer)),
        }
    }

    /// Opens a request to `server` whose body goes out as the caller produces it (a heartbeat
    /// stream), once, and returns the live response as soon as its head arrives within
    /// `head_timeout`; a failure is read whole. The body has no deadline: the caller ends it.
    pub async fn open_stream(
        &self,
        server: &str,
        path: &str,
        content_type: &'static str,
        body: reqwest::Body,
        head_timeout: Duration,
    ) -> Result<Result<reqwest::Response, Response>, ClientError> {
        let server = normalize(server)?;
        let mut builder = self.http.post(format!("{server}{path}")).header(CONTENT_TYPE, content_type).body(body);
        if let Some(token) = &self.options.bearer {
            builder = builder.bearer_auth(token);
        }
        let unreachable = |why: String| ClientError::Unreachable { attempts: vec![(server.clone(), why)], nothing_listens: false };
        let live = match tokio::time::timeout(head_timeout, builder.send()).await {
            Err(_) => return Err(unreachable(format!("no answer within {head_timeout:?}"))),
            Ok(Err(e)) => return Err(unreachable(describe(&e))),
            Ok(Ok(live)) => live,
        };
        if live.status().is_success() {
            return Ok(Ok(live));
        }
        match tokio::time::timeout(head_timeout, read_whole(&server, live)).await {
            Ok(Ok(answer)) => Ok(Err(answer)),
            Ok(Err(e)) => Err(unreachable(describe(&e))),
            Err(_) => Err(unreachable(format!("no whole answer within {head_timeout:?}"))),
        }
    }

    fn build(&self, server: &str, request: &Request) -> reqwest::RequestBuilder {
        let mut builder = self.http.request(request.method.clone(), format!("{server}{}", request.path));
        if let Some(timeout) = request.attempt_timeout.or(Some(self.options.attempt_timeout)) {
            builder = builder.timeout(timeout);
        }
        if let Some(token) = request.bearer.as_ref().or(self.options.bearer.as_ref()) {
            builder = builder.bearer_auth(token);
        }
        if let Some((body, content_type)) = &request.body {
            builder = builder.header(CONTENT_TYPE, *content_type).body(body.clone());
        }
        builder
    }

    /// One attempt at one server. In [`Mode::Open`] a successful answer's body is left
    /// unread and returned beside the outcome.
    async fn attempt(&self, server: &str, request: &Request, mode: Mode) -> (Outcome, Option<reqwest::Response>) {
        let answer = match self.build(server, request).send().await {
            Ok(live) if mode == Mode::Open && live.status().is_success() => {
                let head =
                    Response { server: server.to_owned(), status: live.status(), headers: live.headers().clone(), body: Bytes::new() };
                return (Outcome::Final(head), Some(live));
            }
            Ok(response) => read_whole(server, response).await,
            Err(e) => Err(e),
        };
        (judge(request, answer), None)
    }
}

/// Whether an answer is read whole or left open for streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Whole,
    Open,
}

/// Applies the rules to one attempt's result.
fn judge(request: &Request, answer: Result<Response, reqwest::Error>) -> Outcome {
    match answer {
        Ok(response) if response.status == StatusCode::SERVICE_UNAVAILABLE => {
            let status = response.status_error();
            Outcome::MoveOn { why: format!("503: {}", status.message), hint: status.details.leader_api_addr, refused: false }
        }
        Ok(response) if response.status == StatusCode::GATEWAY_TIMEOUT && request.retry == Retry::Idempotent => {
            Outcome::MoveOn { why: format!("504: {}", response.status_error().message), hint: None, refused: false }
        }
        Ok(response) => Outcome::Final(response),
        Err(e) if e.is_connect() || e.is_builder() => Outcome::MoveOn { why: describe(&e), hint: None, refused: refused(&e) },
        Err(e) if request.retry == Retry::Idempotent => Outcome::MoveOn { why: describe(&e), hint: None, refused: false },
        Err(_) => Outcome::Unknown,
    }
}

impl Client {
    async fn failover(&self, request: &Request, mode: Mode) -> Result<(Response, Option<reqwest::Response>), ClientError> {
        let deadline = Instant::now() + self.options.deadline;
        let mut attempts: Vec<(String, String)> = Vec::new();
        let mut backoff = self.options.backoff_min;
        let mut refused_rounds = 0;
        loop {
            let first = self.preferred.load(Ordering::Relaxed) % self.servers.len();
            let mut order: Vec<String> = (0..self.servers.len()).map(|i| self.servers[(first + i) % self.servers.len()].clone()).collect();
            let mut all_refused = true;
            let mut i = 0;
            while i < order.len() {
                let server = order[i].clone();
                i += 1;
                match self.attempt(&server, request, mode).await {
                    (Outcome::Final(response), live) => {
                        if let Some(index) = self.servers.iter().position(|s| *s == server) {
                            self.preferred.store(index, Ordering::Relaxed);
                        }
                        return Ok((response, live));
                    }
                    (Outcome::Unknown, _) => return Err(ClientError::OutcomeUnknown { server }),
                    (Outcome::MoveOn { why, hint, refused }, _) => {
                        tracing::debug!(%server, path = %request.path, "moving on: {why}");
                        all_refused &= refused;
                        attempts.push((server, why));
                        // The leader a server names goes next (even if not configured).
                        if let Some(leader) = hint.and_then(|h| normalize(&h).ok()).filter(|l| !order[i..].contains(l)) {
                            order.insert(i, leader);
                        }
                    }
                }
            }
            refused_rounds = if all_refused { refused_rounds + 1 } else { 0 };
            let now = Instant::now();
            if now >= deadline || refused_rounds >= 2 {
                return Err(ClientError::Unreachable { attempts, nothing_listens: refused_rounds >= 2 });
            }
            // Jitter in [backoff / 2, backoff], so that many clients do not retry in step.
            let wait = backoff.mul_f64(0.5 + fastrand::f64() / 2.0).min(deadline - now);
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.options.backoff_max);
        }
    }
}

/// A request body the caller feeds a chunk at a time (a heartbeat stream's lines), for
/// [`Client::open_stream`]: at most `capacity` chunks wait for the connection, and the body
/// ends when the sender is dropped.
pub fn fed_body(capacity: usize) -> (tokio::sync::mpsc::Sender<Vec<u8>>, reqwest::Body) {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(capacity);
    let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (Ok::<_, std::io::Error>(chunk), receiver))
    });
    (sender, reqwest::Body::wrap_stream(chunks))
}

/// Lines of a body that arrives in chunks (a streamed answer), each without its `\n`.
#[derive(Debug, Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    pub fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
    }

    /// The next whole line, if one has arrived.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        let at = self.pending.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = self.pending.drain(..=at).collect();
        line.pop();
        Some(line)
    }
}

async fn read_whole(server: &str, response: reqwest::Response) -> Result<Response, reqwest::Error> {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await?;
    Ok(Response { server: server.to_owned(), status, headers, body })
}

/// `https://host:port` from `host:port` or a URL; other schemes are refused with why.
fn normalize(address: &str) -> Result<String, ClientError> {
    let bad = |why: String| ClientError::BadServer { address: address.to_owned(), why };
    let rest = match address.split_once("://") {
        None => address,
        Some(("https", rest)) => rest,
        Some(("http", _)) => return Err(bad("edgeplane speaks HTTPS only; use https://host:port or host:port".to_owned())),
        Some((scheme, _)) => return Err(bad(format!("unsupported scheme {scheme:?}; use host:port or https://host:port"))),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains(char::is_whitespace) {
        return Err(bad("expected host:port".to_owned()));
    }
    Ok(format!("https://{rest}"))
}

fn refused(e: &reqwest::Error) -> bool {
    io_kind(e) == Some(std::io::ErrorKind::ConnectionRefused)
}

fn io_kind(e: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

/// What went wrong with an attempt, in words that tell the user what to check.
fn describe(e: &reqwest::Error) -> String {
    match io_kind(e) {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused (nothing listens at that address)".to_owned(),
        Some(std::io::ErrorKind::TimedOut) => "no connection within the connect timeout (unreachable?)".to_owned(),
        Some(std::io::ErrorKind::ConnectionReset) => {
            "the connection was reset (refused by the server's TLS? check the certificate you present)".to_owned()
        }
        _ if e.is_timeout() => "no answer within the timeout".to_owned(),
        _ if e.is_connect() => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = s.to_string();
                source = s.source();
            }
            format!("cannot connect: {text}")
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
