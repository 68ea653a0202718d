//! Trust from the command line: bootstrap tokens for edge nodes, certificates for people and
//! programs, ServiceAccount tokens, revoking a node or a certificate, who am I, and the audit
//! log (`audit log`, `audit verify`).

use std::collections::BTreeMap;
use std::path::Path;

use edgeplane_api::audit::{verify, AuditPage, AuditRecord, AUDIT, GENESIS};
use edgeplane_api::auth::{
    node_certificate_path, service_account_token_path, BootstrapTokenInfo, BootstrapTokenRequest, CertificateResponse, TokenCreated,
    UserCertificateRequest, WhoAmI, BOOTSTRAP_TOKENS, CERTIFICATES, WHOAMI,
};
use edgeplane_client::Method;

use crate::{Client, Failure};

/// `1h`, `30m`, `90s`, `2d`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 30m, 1h, 2d)"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(scale).filter(|s| *s > 0).ok_or_else(|| format!("{text:?} is not a positive duration"))
}

pub struct NewToken<'a> {
    pub ttl: &'a str,
    pub node: Option<&'a str>,
    pub labels: &'a [String],
    pub uses: u32,
    pub description: &'a str,
}

pub async fn token_create(client: &Client, new: NewToken<'_>) -> Result<(), Failure> {
    let ttl_seconds = parse_duration(new.ttl).map_err(Failure::Usage)?;
    let mut labels = BTreeMap::new();
    for label in new.labels {
        let (k, v) = label.split_once('=').ok_or_else(|| Failure::Usage(format!("--labels {label:?}: expected KEY=VALUE")))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    let request = BootstrapTokenRequest {
        ttl_seconds,
        node: new.node.map(str::to_owned),
        labels,
        uses: new.uses,
        description: new.description.to_owned(),
    };
    let body = serde_json::to_string(&request).expect("serializable");
    let (_, created): (_, TokenCreated) = client.call(Method::POST, BOOTSTRAP_TOKENS, &[], Some(body)).await?;
    outln!("{}", created.token);
    eprintln!("# shown once; give it to the edge runtime as --bootstrap-token (EDGEPLANE_BOOTSTRAP_TOKEN)");
    Ok(())
}

pub async fn token_list(client: &Client, json: bool) -> Result<(), Failure> {
    let (_, tokens): (_, Vec<BootstrapTokenInfo>) = client.call(Method::GET, BOOTSTRAP_TOKENS, &[], None).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&tokens).expect("serializable"));
        return Ok(());
    }
    if tokens.is_empty() {
        eprintln!("No bootstrap tokens.");
        return Ok(());
    }
    outln!("{:<10} {:<22} {:>5}  {:<16} {:<20} CREATED BY", "ID", "EXPIRES", "USES", "NODE", "LABELS");
    for t in tokens {
        let expires = jiff::Timestamp::from_millisecond(t.expires_at_ms as i64)
            .map_or_else(|_| t.expires_at_ms.to_string(), |ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outln!(
            "{:<10} {:<22} {:>5}  {:<16} {:<20} {}",
            t.id,
            expires,
            t.uses_left,
            t.node.unwrap_or_else(|| "-".into()),
            labels.join(","),
            t.created_by
        );
    }
    Ok(())
}

pub async fn token_delete(client: &Client, id: &str) -> Result<(), Failure> {
    client.call_empty(Method::DELETE, &format!("{BOOTSTRAP_TOKENS}/{id}")).await?;
    outln!("bootstrap token {id} deleted");
    Ok(())
}

/// A key made here, a certificate the CA signs for it, and an edgectl configuration that
/// uses them, all in `out_dir`.
pub async fn user_create(
    client: &Client,
    user: &str,
    group: Option<&str>,
    days: u64,
    out_dir: &Path,
    servers: &[String],
) -> Result<(), Failure> {
    let fresh = edgeplane_tls::KeyAndRequest::generate(user).map_err(|e| Failure::Usage(e.to_string()))?;
    let request = UserCertificateRequest {
        user: user.to_owned(),
        group: group.map(str::to_owned),
        csr: fresh.request_pem,
        ttl_seconds: Some(days.saturating_mul(86_400)),
    };
    let body = serde_json::to_string(&request).expect("serializable");
    let (_, issued): (_, CertificateResponse) = client.call(Method::POST, CERTIFICATES, &[], Some(body)).await?;
    let files = crate::config::write_credentials(out_dir, &issued.ca, &issued.certificate, &fresh.key_pem, servers)
        .map_err(|e| Failure::Usage(format!("{}: {e}", out_dir.display())))?;
    outln!(
        "certificate for {user}{} (serial {}) written to {}",
        group.map(|g| format!(" in group {g}")).unwrap_or_default(),
        issued.serial,
        out_dir.display()
    );
    outln!("use it with: EDGECTL_CONFIG={} edgectl ...", files.display());
    Ok(())
}

pub async fn certificate_revoke(client: &Client, serial: &str) -> Result<(), Failure> {
    client.call_empty(Method::DELETE, &format!("{CERTIFICATES}/{serial}")).await?;
    outln!("certificate {serial} revoked");
    Ok(())
}

pub async fn node_revoke(client: &Client, node: &str) -> Result<(), Failure> {
    client.call_empty(Method::DELETE, &node_certificate_path(node)).await?;
    outln!("edgenode.edgeplane.io/{node}: every certificate revoked; it must enroll again with a bootstrap token");
    Ok(())
}

pub async fn service_account_token(client: &Client, namespace: &str, name: &str) -> Result<(), Failure> {
    let (_, created): (_, TokenCreated) = client.call(Method::POST, &service_account_token_path(namespace, name), &[], None).await?;
    outln!("{}", created.token);
    eprintln!("# shown once; earlier tokens of serviceaccount {namespace}/{name} no longer work");
    Ok(())
}

pub async fn whoami(client: &Client, json: bool) -> Result<(), Failure> {
    let (_, me): (_, WhoAmI) = client.call(Method::GET, WHOAMI, &[], None).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&me).expect("serializable"));
    } else {
        outln!("user:    {}\ngroups:  {}\nby:      {}", me.user, me.groups.join(", "), me.authenticated_by);
    }
    Ok(())
}

async fn page(client: &Client, after: u64, limit: usize) -> Result<AuditPage, Failure> {
    let query = [("after", after.to_string()), ("limit", limit.to_string())];
    let (_, page): (_, AuditPage) = client.call(Method::GET, AUDIT, &query, None).await?;
    Ok(page)
}

pub async fn audit_log(client: &Client, after: u64, limit: usize, json: bool) -> Result<(), Failure> {
    let page = page(client, after, limit).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&page).expect("serializable"));
        return Ok(());
    }
    outln!("{:>7}  {:<24} {:<28} {:<7} {:<52} {:>4}  OUTCOME", "SEQ", "TIME", "USER", "METHOD", "PATH", "CODE");
    for r in &page.records {
        let e = &r.event;
        let mut path = e.path.clone();
        if path.len() > 52 {
            path.truncate(49);
            path.push_str("...");
        }
        outln!("{:>7}  {:<24} {:<28} {:<7} {:<52} {:>4}  {}", r.seq, e.time, e.user, e.method, path, e.code, e.outcome);
    }
    eprintln!("# {} record(s); the chain's head is at {}", page.records.len(), page.head.seq);
    Ok(())
}

/// Walks the whole log from the first record, checking every link and hash, and that it ends
/// where the replicated head says. Exit 1 naming the first broken record.
pub async fn audit_verify(client: &Client) -> Result<(), Failure> {
    let mut at = (0u64, GENESIS.to_owned());
    let mut head = None;
    loop {
        let page = page(client, at.0, 1000).await?;
        head.get_or_insert(page.head.clone());
        if page.records.is_empty() {
            break;
        }
        let records: Vec<AuditRecord> = page.records;
        match verify((at.0, &at.1), &records) {
            Ok(next) => at = next,
            Err(broken) => return Err(broken_chain(broken.seq, &broken.why)),
        }
    }
    let head = head.unwrap_or_default();
    if at.0 < head.seq {
        return Err(broken_chain(
            at.0 + 1,
            &format!("the log ends at record {} but the cluster's chain reaches {}: records are missing", at.0, head.seq),
        ));
    }
    if at.0 == head.seq && head.seq > 0 && at.1 != head.hash {
        return Err(broken_chain(head.seq, "the last record's hash differs from the one the cluster replicated: the log was rewritten"));
    }
    outln!("audit log intact: {} record(s), chained from the first to the cluster's head ({})", at.0, short(&at.1));
    Ok(())
}

fn broken_chain(seq: u64, why: &str) -> Failure {
    let mut status =
        edgeplane_api::Status::new(422, edgeplane_api::StatusReason::Invalid, format!("audit log broken at record {seq}: {why}"));
    status.details.causes = vec![edgeplane_api::StatusCause { field: format!("records[seq={seq}]"), message: why.to_owned() }];
    Failure::Refused(Box::new(status))
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}
