//! Every connection between Raft peers is built here.
//!
//! Peers speak mutual TLS: each presents its member certificate (issued by the cluster CA when
//! the cluster was initialised) and checks the other's. A connection is established only when
//! the certificate verifies against the CA and names the member the other side must be: the
//! member we dialled, or, for an accepted connection, the member id its certificate carries,
//! which the transport then holds every message on it to. Callers see only [`Listener`],
//! [`Incoming`], [`Stream`] and [`Network`].
//!
//! [`Network::plaintext`] exists for unit tests of the transport's framing; orchestrators
//! always run [`Network::mutual_tls`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use edgeplane_tls::pki::ParsedSubject;
use edgeplane_tls::PeerCertificate;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long to wait for a TCP connection to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS side of a member: its server and client configurations (both present the member's
/// certificate and require the peer's).
#[derive(Clone)]
pub struct PeerTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
    /// The address outbound connections leave from (the member's own peer address), so that
    /// the network sees each member's traffic come from that member.
    pub source_ip: Option<IpAddr>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").field("source_ip", &self.source_ip).finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Inner {
    Plain(TcpStream),
    Accepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Dialled(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// An established connection to a peer.
#[derive(Debug)]
pub struct Stream {
    inner: Inner,
    /// The member id the peer's certificate names (`None` in plaintext).
    peer_member: Option<u64>,
}

impl Stream {
    /// The member id the peer proved with its certificate; `None` only in plaintext.
    pub fn peer_member(&self) -> Option<u64> {
        self.peer_member
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.get_mut().inner {
            Inner::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Inner::Accepted($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
            Inner::Dialled($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Plain(s) => s.is_write_vectored(),
            Inner::Accepted(s) => s.is_write_vectored(),
            Inner::Dialled(s) => s.is_write_vectored(),
        }
    }
}

/// A bound listening socket.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    tls: Option<PeerTls>,
}

/// An accepted TCP connection whose TLS handshake has yet to happen (on the caller's task, so
/// that one slow peer does not hold up accepting the others).
#[derive(Debug)]
pub struct Incoming {
    tcp: TcpStream,
    tls: Option<PeerTls>,
}

impl Listener {
    pub async fn accept(&self) -> io::Result<(Incoming, SocketAddr)> {
        let (tcp, addr) = self.inner.accept().await?;
        configure(&tcp);
        Ok((Incoming { tcp, tls: self.tls.clone() }, addr))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Incoming {
    /// Completes the handshake: the peer must present a member certificate of the cluster CA.
    pub async fn establish(self) -> io::Result<Stream> {
        let Some(tls) = self.tls else { return Ok(Stream { inner: Inner::Plain(self.tcp), peer_member: None }) };
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(self.tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake timed out"))??;
        let member = member_of(stream.get_ref().1.peer_certificates())?;
        Ok(Stream { inner: Inner::Accepted(Box::new(stream)), peer_member: Some(member) })
    }
}

/// The member id a presented certificate chain names.
fn member_of(chain: Option<&[rustls::pki_types::CertificateDer<'static>]>) -> io::Result<u64> {
    let denied = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
    let leaf = chain.and_then(|c| c.first()).ok_or_else(|| denied("the peer presented no certificate".to_owned()))?;
    let certificate = PeerCertificate::from_der(leaf).map_err(|e| denied(e.to_string()))?;
    match certificate.subject() {
        Some(ParsedSubject::Orchestrator(id)) => Ok(id),
        _ => Err(denied(format!("the peer's certificate ({:?}) is not an orchestrator's", certificate.common_name))),
    }
}

/// Builds connections. Cheap to clone; one per process.
#[derive(Debug, Clone, Default)]
pub struct Network {
    tls: Option<PeerTls>,
}

impl Network {
    /// Connections without encryption or authentication: for tests of the framing only.
    pub fn plaintext() -> Self {
        Network { tls: None }
    }

    /// Mutual TLS with the cluster CA.
    pub fn mutual_tls(tls: PeerTls) -> Self {
        Network { tls: Some(tls) }
    }

    pub async fn bind(&self, addr: SocketAddr) -> io::Result<Listener> {
        let inner = TcpListener::bind(addr).await?;
        Ok(Listener { inner, tls: self.tls.clone() })
    }

    /// Connects to member `member` at `addr`; with TLS, the peer must prove it is that member.
    pub async fn connect(&self, addr: SocketAddr, member: u64) -> io::Result<Stream> {
        let source = self.tls.as_ref().and_then(|t| t.source_ip);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, dial(addr, source))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {addr} timed out")))??;
        configure(&tcp);
        let Some(tls) = &self.tls else { return Ok(Stream { inner: Inner::Plain(tcp), peer_member: None }) };
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connector.connect(name, tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("the TLS handshake with {addr} timed out")))??;
        let proven = member_of(stream.get_ref().1.peer_certificates())?;
        if proven != member {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{addr} presented the certificate of member {proven}, not of member {member}"),
            ));
        }
        Ok(Stream { inner: Inner::Dialled(Box::new(stream)), peer_member: Some(proven) })
    }
}

async fn dial(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = source.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) else { return TcpStream::connect(addr).await };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

fn configure(tcp: &TcpStream) {
    // Raft heartbeats and votes are small and latency-bound.
    let _ = tcp.set_nodelay(true);
}
