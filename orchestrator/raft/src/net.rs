//! Every network connection the orchestrator makes or accepts is built here.
//!
//! Callers see only [`Listener`], [`Stream`] and [`Network`]; when mTLS arrives it is a change
//! to this module (wrap the TCP stream in a rustls stream, check the peer certificate), not to
//! the transport, the API server or the clients.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long to wait for a TCP connection to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection, plaintext today; an encrypted stream later without changing its users.
#[derive(Debug)]
pub struct Stream {
    inner: TcpStream,
}

impl Stream {
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A bound listening socket that yields [`Stream`]s.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
}

impl Listener {
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let (tcp, addr) = self.inner.accept().await?;
        configure(&tcp);
        Ok((Stream { inner: tcp }, addr))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Builds connections. Cheap to clone; one per process.
#[derive(Debug, Clone, Default)]
pub struct Network {
    _private: (),
}

impl Network {
    /// Connections without encryption or authentication.
    pub fn plaintext() -> Self {
        Network { _private: () }
    }

    pub async fn bind(&self, addr: SocketAddr) -> io::Result<Listener> {
        let inner = TcpListener::bind(addr).await?;
        Ok(Listener { inner })
    }

    pub async fn connect(&self, addr: SocketAddr) -> io::Result<Stream> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {addr} timed out")))??;
        configure(&tcp);
        Ok(Stream { inner: tcp })
    }
}

fn configure(tcp: &TcpStream) {
    // Raft heartbeats and votes are small and latency-bound.
    let _ = tcp.set_nodelay(true);
}
