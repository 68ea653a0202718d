//! The failover rules against small local servers.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use axum::http::StatusCode as Code;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use edgeplane_api::Status;

use super::*;

/// One CA for the whole test binary, and a server certificate for 127.0.0.1.
fn pki() -> &'static (edgeplane_tls::CertificateAuthority, edgeplane_tls::TlsIdentity) {
    static PKI: std::sync::OnceLock<(edgeplane_tls::CertificateAuthority, edgeplane_tls::TlsIdentity)> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let ca = edgeplane_tls::CertificateAuthority::create("client tests").expect("ca");
        let subject = edgeplane_tls::Subject::Server { name: "test server".into(), addresses: vec!["127.0.0.1".parse().expect("ip")] };
        let (issued, key) = ca.issue_with_key(&subject, Duration::from_secs(3600)).expect("server cert");
        let identity = edgeplane_tls::TlsIdentity::from_pem(&issued.pem, &key).expect("identity");
        (ca, identity)
    })
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ca, identity) = pki();
    let current = edgeplane_tls::config::CurrentIdentity::new(identity).expect("identity");
    let tls = edgeplane_tls::config::server_config(ca.cert_pem(), current, edgeplane_tls::ClientAuth::Optional).expect("server tls");
    let counters = Arc::default();
    let limits = edgeplane_tls::serve::ServeLimits::default();
    tokio::spawn(edgeplane_tls::serve::serve(listener, Arc::new(tls), router, limits, counters, std::future::pending()));
    addr
}

fn tls() -> rustls::ClientConfig {
    edgeplane_tls::config::client_config(pki().0.cert_pem(), None).expect("client tls")
}

fn status(code: u16, reason: StatusReason, hint: Option<SocketAddr>) -> impl IntoResponse {
    let mut s = Status::new(code, reason, "from the test server");
    s.details.leader_api_addr = hint.map(|h| h.to_string());
    (Code::from_u16(code).expect("code"), Json(s))
}

fn client(servers: &[SocketAddr]) -> Client {
    let options = ClientOptions { deadline: Duration::from_secs(5), ..ClientOptions::default() };
    Client::new(&servers.iter().map(ToString::to_string).collect::<Vec<_>>(), options, tls()).expect("client")
}

/// A closed port: bound once, then released.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

#[tokio::test]
async fn a_503_moves_on_to_the_leader_it_names() {
    let leader = serve(Router::new().route("/x", post(|| async { "done" }))).await;
    let follower =
        serve(Router::new().route("/x", post(move || async move { status(503, StatusReason::ServiceUnavailable, Some(leader)) }))).await;
    // The leader is not even configured: the hint alone leads there.
    let answer = client(&[follower]).send(Request::new(Method::POST, "/x")).await.expect("answered");
    assert_eq!((answer.status, answer.server.clone(), &answer.body[..]), (StatusCode::OK, format!("https://{leader}"), &b"done"[..]));
}

#[tokio::test]
async fn a_504_is_final_for_writes_and_retried_for_idempotent_requests() {
    let slow = serve(Router::new().route("/x", post(|| async { status(504, StatusReason::Timeout, None) }))).await;
    let hits = Arc::new(AtomicU32::new(0));
    let counted = hits.clone();
    let fine = serve(Router::new().route(
        "/x",
        post(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            async { "ok" }
        }),
    ))
    .await;
    let c = client(&[slow, fine]);
    let once = c.send(Request::new(Method::POST, "/x")).await.expect("answered");
    assert_eq!(once.status, StatusCode::GATEWAY_TIMEOUT, "a write whose outcome is unknown is not sent again");
    assert_eq!(hits.load(Ordering::Relaxed), 0);
    let again = c.send(Request::new(Method::POST, "/x").retry(Retry::Idempotent)).await.expect("answered");
    assert_eq!((again.status, hits.load(Ordering::Relaxed)), (StatusCode::OK, 1));
    // The server that answered is tried first next time.
    assert_eq!(c.send(Request::new(Method::POST, "/x")).await.expect("answered").status, StatusCode::OK);
    assert_eq!(hits.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn nothing_listening_anywhere_fails_fast_and_says_so() {
    let c = Client::new(
        &[closed_port().to_string(), closed_port().to_string()],
        ClientOptions { deadline: Duration::from_secs(3600), ..Default::default() },
        tls(),
    )
    .expect("client");
    let started = Instant::now();
    let err = c.send(Request::get("/v1/cluster")).await.expect_err("nothing listens");
    assert!(matches!(err, ClientError::Unreachable { nothing_listens: true, .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("connection refused") && text.contains("check --server"), "{text}");
    // Not a timing goal: without the rule this would wait out the hour-long deadline.
    assert!(started.elapsed() < Duration::from_secs(600), "gave up after {:?}", started.elapsed());
}

#[tokio::test]
async fn an_answer_that_is_not_a_status_says_the_server_is_not_an_orchestrator() {
    let edge = serve(Router::new().route("/healthz", get(|| async { "ok" }))).await;
    let answer = client(&[edge]).send(Request::get("/v1/cluster")).await.expect("answered");
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let status = answer.status_error();
    assert!(
        status.message.contains("not an edgeplane Status") && status.message.contains("orchestrator's API address"),
        "{}",
        status.message
    );
}

#[test]
fn server_addresses_are_checked() {
    let bad = |s: &str| Client::new(&[s.to_owned()], ClientOptions::default(), tls()).expect_err(s).to_string();
    assert!(bad("http://127.0.0.1:1").contains("HTTPS only"), "{}", bad("http://127.0.0.1:1"));
    assert!(bad("ftp://127.0.0.1:1").contains("unsupported scheme \"ftp\""));
    assert!(bad("127.0.0.1:1/v1").contains("expected host:port"));
    assert!(bad("").contains("no orchestrator address"));
    let ok = Client::new(&["127.0.0.1:1".to_owned(), "https://127.0.0.2:2/".to_owned()], ClientOptions::default(), tls()).expect("valid");
    assert_eq!(ok.servers(), ["https://127.0.0.1:1", "https://127.0.0.2:2"]);
}

#[tokio::test]
async fn a_server_the_cluster_ca_did_not_certify_is_not_trusted() {
    let addr = serve(Router::new().route("/v1/cluster", get(|| async { "secret" }))).await;
    let stranger = edgeplane_tls::CertificateAuthority::create("another CA").expect("ca");
    let tls = edgeplane_tls::config::client_config(stranger.cert_pem(), None).expect("tls");
    let c =
        Client::new(&[addr.to_string()], ClientOptions { deadline: Duration::from_secs(2), ..Default::default() }, tls).expect("client");
    let err = c.send(Request::get("/v1/cluster")).await.expect_err("the server's certificate does not verify");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[test]
fn lines_come_whole_however_the_chunks_cut_them() {
    let mut lines = Lines::default();
    lines.push(b"{\"a\":1}\n{\"b\"");
    assert_eq!(lines.next_line(), Some(b"{\"a\":1}".to_vec()));
    assert_eq!(lines.next_line(), None, "half a line is not a line");
    lines.push(b":2}\n\n");
    assert_eq!(lines.next_line(), Some(b"{\"b\":2}".to_vec()));
    assert_eq!(lines.next_line(), Some(Vec::new()));
    assert_eq!(lines.next_line(), None);
}
