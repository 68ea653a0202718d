//! `orchestrator init`: a new cluster's certificate authority, each member's certificate, and
//! an administrator's credential; `orchestrator pki issue`: certificates signed offline with
//! the CA's key (a server such as the MQTT broker, or a person or device).
//!
//! ```text
//! orchestrator init --dir DIR --member 1=PEER,API --member 2=PEER,API ...
//!   DIR/ca.crt, DIR/ca.key                       the cluster CA (keep ca.key safe)
//!   DIR/members/<id>/{ca.crt,ca.key,member.crt,member.key}   each member's --tls-dir
//!   DIR/admin/{ca.crt,client.crt,client.key}     a cluster administrator
//!   DIR/edgectl.toml                             edgectl's configuration for that administrator
//! ```
//!
//! Keys are written owner-only; nothing is overwritten.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use edgeplane_core::authz::CLUSTER_ADMINS_GROUP;
use edgeplane_tls::{CertificateAuthority, Subject};

use crate::config::Member;

/// Member certificates last this long; rotate them with `orchestrator pki issue --member`.
const MEMBER_CERT: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// The administrator's certificate from `init`.
const ADMIN_CERT: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Parser)]
#[command(name = "orchestrator init", about = "Create a new cluster's certificate authority, member certificates and an administrator")]
struct InitArgs {
    /// Where to write everything (created; must not hold a CA already).
    #[arg(long)]
    dir: PathBuf,
    /// Every member, as for `orchestrator --member`: ID=PEER_ADDR,API_ADDR.
    #[arg(long = "member", value_name = "ID=PEER,API", required = true)]
    members: Vec<String>,
    /// The administrator's user name (in group edgeplane:cluster-admins).
    #[arg(long, default_value = "admin")]
    admin: String,
}

#[derive(Debug, Parser)]
#[command(name = "orchestrator pki issue", about = "Sign a certificate with the cluster CA's key (offline)")]
struct IssueArgs {
    /// The directory holding ca.crt and ca.key (as `init` wrote it).
    #[arg(long)]
    ca_dir: PathBuf,
    /// Where to write ca.crt and the certificate and key.
    #[arg(long)]
    out_dir: PathBuf,
    /// A server certificate with this name, for --ip addresses (tls.crt, tls.key).
    #[arg(long, conflicts_with_all = ["user", "member"])]
    server: Option<String>,
    /// A client certificate for this user (client.crt, client.key).
    #[arg(long, conflicts_with = "member")]
    user: Option<String>,
    /// The user's group.
    #[arg(long, requires = "user")]
    group: Option<String>,
    /// A new certificate for this member id, for --ip addresses (member.crt, member.key).
    #[arg(long)]
    member: Option<u64>,
    /// The addresses a server or member certificate is valid for.
    #[arg(long)]
    ip: Vec<IpAddr>,
    /// Lifetime in days.
    #[arg(long, default_value_t = 365)]
    days: u64,
}

/// Runs `orchestrator init ...` or `orchestrator pki issue ...` (`args` without the program).
pub fn main(args: Vec<String>) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("init") => init(InitArgs::parse_from(std::iter::once("orchestrator init".to_owned()).chain(args.into_iter().skip(1)))),
        Some("pki") if args.get(1).map(String::as_str) == Some("issue") => {
            issue(IssueArgs::parse_from(std::iter::once("orchestrator pki issue".to_owned()).chain(args.into_iter().skip(2))))
        }
        _ => bail!("usage: orchestrator init --dir DIR --member ID=PEER,API ... | orchestrator pki issue --ca-dir DIR --out-dir DIR ..."),
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    if args.dir.join("ca.key").exists() {
        bail!("{} already holds a certificate authority; refusing to overwrite it", args.dir.display());
    }
    let mut members = Vec::new();
    for spec in &args.members {
        members.push(crate::config::parse_member(spec).map_err(|e| anyhow::anyhow!("member {spec:?}: {e}"))?);
    }
    let ca = CertificateAuthority::create("edgeplane cluster CA").context("cannot create the certificate authority")?;
    private_dir(&args.dir)?;
    write_public(&args.dir.join("ca.crt"), ca.cert_pem())?;
    write_secret(&args.dir.join("ca.key"), ca.key_pem())?;
    for member in &members {
        let dir = args.dir.join("members").join(member.id.to_string());
        issue_member(&ca, member, &dir)?;
    }
    let admin_dir = args.dir.join("admin");
    let subject = Subject::User { name: args.admin.clone(), group: Some(CLUSTER_ADMINS_GROUP.to_owned()) };
    let (issued, key) = ca.issue_with_key(&subject, ADMIN_CERT)?;
    private_dir(&admin_dir)?;
    write_public(&admin_dir.join("ca.crt"), ca.cert_pem())?;
    write_public(&admin_dir.join("client.crt"), &issued.pem)?;
    write_secret(&admin_dir.join("client.key"), &key)?;
    let servers: Vec<String> = members.iter().map(|m| format!("\"{}\"", m.api)).collect();
    let absolute = std::fs::canonicalize(&admin_dir).unwrap_or(admin_dir.clone());
    let config = format!(
        "# edgectl for {admin} (cluster administrator), written by orchestrator init.\nservers = [{servers}]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n",
        admin = args.admin,
        servers = servers.join(", "),
        ca = absolute.join("ca.crt").display(),
        cert = absolute.join("client.crt").display(),
        key = absolute.join("client.key").display(),
    );
    write_secret(&args.dir.join("edgectl.toml"), &config)?;
    println!("cluster CA:        {}", args.dir.join("ca.crt").display());
    for member in &members {
        println!("member {} --tls-dir {}", member.id, args.dir.join("members").join(member.id.to_string()).display());
    }
    println!("administrator:     EDGECTL_CONFIG={} edgectl cluster status", args.dir.join("edgectl.toml").display());
    Ok(())
}

fn issue_member(ca: &CertificateAuthority, member: &Member, dir: &Path) -> anyhow::Result<()> {
    let mut addresses = vec![member.peer.ip()];
    if member.api.ip() != member.peer.ip() {
        addresses.push(member.api.ip());
    }
    let (issued, key) = ca.issue_with_key(&Subject::Orchestrator { id: member.id, addresses }, MEMBER_CERT)?;
    private_dir(dir)?;
    write_public(&dir.join("ca.crt"), ca.cert_pem())?;
    // Every member signs node certificates, so that enrollment works through any of them.
    write_secret(&dir.join("ca.key"), ca.key_pem())?;
    write_public(&dir.join("member.crt"), &issued.pem)?;
    write_secret(&dir.join("member.key"), &key)?;
    Ok(())
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let cert =
        std::fs::read_to_string(args.ca_dir.join("ca.crt")).with_context(|| format!("cannot read {}/ca.crt", args.ca_dir.display()))?;
    let key =
        std::fs::read_to_string(args.ca_dir.join("ca.key")).with_context(|| format!("cannot read {}/ca.key", args.ca_dir.display()))?;
    let ca = CertificateAuthority::load(&cert, &key)?;
    let lifetime = Duration::from_secs(args.days.max(1) * 24 * 3600);
    let (subject, cert_file, key_file) = match (&args.server, &args.user, args.member) {
        (Some(name), None, None) => {
            if args.ip.is_empty() {
                bail!("a server certificate needs at least one --ip");
            }
            (Subject::Server { name: name.clone(), addresses: args.ip.clone() }, "tls.crt", "tls.key")
        }
        (None, Some(user), None) => (Subject::User { name: user.clone(), group: args.group.clone() }, "client.crt", "client.key"),
        (None, None, Some(id)) => {
            if args.ip.is_empty() {
                bail!("a member certificate needs the member's --ip addresses");
            }
            (Subject::Orchestrator { id, addresses: args.ip.clone() }, "member.crt", "member.key")
        }
        _ => bail!("name exactly one of --server, --user or --member"),
    };
    let (issued, key) = ca.issue_with_key(&subject, lifetime)?;
    private_dir(&args.out_dir)?;
    write_public(&args.out_dir.join("ca.crt"), ca.cert_pem())?;
    write_public(&args.out_dir.join(cert_file), &issued.pem)?;
    write_secret(&args.out_dir.join(key_file), &key)?;
    println!("{} (serial {}) in {}", subject.user(), issued.serial, args.out_dir.display());
    Ok(())
}

fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("cannot restrict {}", dir.display()))
}

fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Written owner-only from the start (never readable by others, not even for a moment).
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", path.display()))
}
