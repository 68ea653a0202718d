//! Serving an axum router over HTTPS, with the doors a public service needs.
//!
//! - Connections beyond [`ServeLimits::max_connections`], or beyond
//!   [`ServeLimits::max_connections_per_ip`] from one address, are closed at once: one client
//!   holding many connections open (a slow-loris attack) cannot starve the others.
//! - The TLS handshake must finish within [`ServeLimits::handshake_timeout`], and a request's
//!   headers must arrive within [`ServeLimits::header_read_timeout`] of its first byte.
//! - At most [`ServeLimits::concurrent_handshakes`] handshakes do their cryptography at once;
//!   a client waits for its turn only once its ClientHello has arrived, so connections that
//!   send nothing never hold one.
//! - Every request carries a [`Connection`] extension: the client's address, the
//!   certificate it presented (verified by rustls against the cluster CA), if any, and a way
//!   to learn when the connection closes ([`Connection::closed`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::LazyConfigAcceptor;
use tower::ServiceExt as _;

use crate::cert::PeerCertificate;

/// The bounds of an HTTPS server.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// TLS handshakes past their ClientHello in progress at once; the others wait their
    /// turn. Thousands of clients reconnecting together (after a failover) would otherwise
    /// take every core for seconds, and a request or a Raft message already under way with
    /// them.
    pub concurrent_handshakes: usize,
    /// How long open connections may finish their requests after shutdown begins.
    pub drain_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 8192,
            max_connections_per_ip: 256,
            concurrent_handshakes: 32,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// What a request knows about the connection it came on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Unique among this server's connections.
    pub id: u64,
    pub remote: SocketAddr,
    /// The client's certificate, verified against the cluster CA; `None` when it sent none.
    pub certificate: Option<Arc<PeerCertificate>>,
    /// Never sent on: its sender lives as long as the connection is served, so its dropping
    /// is the close.
    open: watch::Receiver<()>,
}

impl Connection {
    /// Completes once the connection is closed: by the client, by the kernel for a client
    /// that died (its socket closed, so the next read sees the end or a reset), or by this
    /// server. An idle keep-alive connection is read all along, so a peer's close is seen at
    /// once; a peer cut off without a close (a partition) is not seen here at all.
    pub async fn closed(&self) {
        let mut open = self.open.clone();
        while open.changed().await.is_ok() {}
    }
}

/// Counts of what the server turned away, for metrics.
#[derive(Debug, Default)]
pub struct ServeCounters {
    /// Connections closed at once: over the limit in all or for their address.
    pub connections_refused: AtomicU64,
    /// TLS handshakes that failed or timed out (no certificate where one is required, one the
    /// CA did not issue or that has expired, or not TLS at all).
    pub handshakes_failed: AtomicU64,
}

/// Serves `app` on `listener` over TLS until `shutdown` completes, then lets open requests
/// finish for [`ServeLimits::drain_timeout`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    limits: ServeLimits,
    counters: Arc<ServeCounters>,
    shutdown: impl Future<Output = ()>,
) {
    let per_ip = Arc::new(Mutex::new(HashMap::<IpAddr, usize>::new()));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next_id = 0u64;
    let handshakes = Arc::new(Semaphore::new(limits.concurrent_handshakes));
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically out of file descriptors; back off rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = Slot::take(&per_ip, remote.ip(), connections.len(), &limits) else {
            counters.connections_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, "closing a connection over the limit");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let (tls, app, counters, stopping, handshakes) = (tls.clone(), app.clone(), counters.clone(), stopping.clone(), handshakes.clone());
        connections.spawn(async move {
            let _slot = slot;
            let handshake = async {
                // The ClientHello first, which costs nothing to wait for; then a turn for the
                // part that costs CPU (key exchange, signature, the client's certificate).
                let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
                let _turn = handshakes.acquire().await;
                hello.into_stream(tls).await
            };
            let stream = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    counters.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%remote, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    counters.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| PeerCertificate::from_der(leaf).ok())
                .map(Arc::new);
            // Dropped when this task ends, whichever way the connection ends.
            let (_open, open) = watch::channel(());
            let connection = Connection { id, remote, certificate, open };
            let service = app.map_request(move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(connection.clone());
                request.extensions_mut().insert(ConnectInfo(remote));
                request
            });
            serve_connection(stream, TowerToHyperService::new(service), limits, stopping).await;
        });
    }
    let _ = stop.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.drain_timeout, drained).await.is_err() {
        tracing::warn!("open connections did not finish within {:?}; closing them", limits.drain_timeout);
        connections.abort_all();
    }
}

async fn serve_connection<S>(
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    service: TowerToHyperService<S>,
    limits: ServeLimits,
    mut stopping: watch::Receiver<bool>,
) where
    S: tower::Service<axum::http::Request<Incoming>, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + Unpin
        + 'static,
    S::Future: Send + Unpin + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let mut connection = builder.serve_connection(TokioIo::new(stream), service);
    let served = tokio::select! {
        finished = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => Some(finished),
        _ = stopping.wait_for(|stop| *stop) => None,
    };
    let finished = match served {
        Some(finished) => finished,
        None => {
            std::pin::Pin::new(&mut connection).graceful_shutdown();
            std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)).await
        }
    };
    if finished.is_ok() {
        linger(connection.into_parts().io.into_inner()).await;
    }
}

/// Closes a connection the way a client expects after an answer it got before it finished
/// sending (a 413, or a refusal before the body was read): first reads and discards what it
/// still sends, for a moment, so that it can read the answer instead of having its
/// connection reset under it (TCP's lingering close).
async fn linger(mut stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const LINGER: Duration = Duration::from_secs(2);
    const MAX_DISCARD: usize = 64 << 20;
    let _ = stream.flush().await;
    let drain = async {
        let mut buf = vec![0u8; 64 << 10];
        let mut discarded = 0;
        while discarded < MAX_DISCARD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
    let _ = stream.shutdown().await;
}

/// A connection's place within the limits; given back when dropped.
struct Slot {
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Slot {
    fn take(per_ip: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, open: usize, limits: &ServeLimits) -> Option<Slot> {
        if open >= limits.max_connections {
            return None;
        }
        let mut counts = per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= limits.max_connections_per_ip {
            return None;
        }
        *count += 1;
        Some(Slot { per_ip: per_ip.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}
