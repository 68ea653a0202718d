//! Where edgectl finds the orchestrators and its credentials.
//!
//! The configuration file (`--config`, `EDGECTL_CONFIG`, or
//! `$XDG_CONFIG_HOME/edgeplane/edgectl.toml`) holds:
//!
//! ```toml
//! servers = ["127.0.0.1:8101", "127.0.0.2:8101"]
//! ca = "ca.crt"          # the cluster CA, the only authority trusted
//! cert = "client.crt"    # a client certificate (user and groups), with its key
//! key = "client.key"
//! token = "eps...."      # or a ServiceAccount's bearer token
//! ```
//!
//! Relative paths are relative to the file. Flags and environment variables override it
//! (`--server`, `--ca-cert`, `--client-cert`, `--client-key`, `--token`). `orchestrator init`
//! writes one for the cluster's first administrator; `edgectl user create` one per user.

use std::path::{Path, PathBuf};

use crate::Failure;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    servers: Vec<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    token: Option<String>,
}

/// What the command line says, before the file fills in the rest.
#[derive(Debug, Default)]
pub struct Given {
    pub config: Option<PathBuf>,
    pub servers: Vec<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub token: Option<String>,
}

/// Everything edgectl needs to talk to a cluster.
#[derive(Debug)]
pub struct Settings {
    pub servers: Vec<String>,
    pub tls: rustls::ClientConfig,
    pub token: Option<String>,
    /// The same credentials as text, for a kubeconfig: the CA, and the client certificate
    /// and key in PEM.
    pub ca_pem: String,
    pub client_pem: Option<(String, String)>,
}

/// The demo cluster's API addresses (scripts/demo.sh).
const DEFAULT_SERVERS: [&str; 3] = ["127.0.0.1:8101", "127.0.0.2:8101", "127.0.0.3:8101"];

fn default_path() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("edgeplane/edgectl.toml"))
}

pub fn load(given: Given) -> Result<Settings, Failure> {
    let path = match given.config.clone() {
        Some(p) => Some(p),
        None => default_path().filter(|p| p.exists()),
    };
    let (file, base) = match &path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
            let file: File = toml::from_str(&text).map_err(|e| Failure::Usage(format!("{} is not valid: {e}", path.display())))?;
            (file, path.parent().map(Path::to_owned).unwrap_or_default())
        }
        None => (File::default(), PathBuf::new()),
    };
    let relative = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let servers = if !given.servers.is_empty() {
        given.servers
    } else if !file.servers.is_empty() {
        file.servers
    } else {
        DEFAULT_SERVERS.iter().map(|s| (*s).to_owned()).collect()
    };
    let ca = given.ca.or(file.ca.map(relative)).ok_or_else(|| {
        Failure::Usage(format!(
            "no cluster CA: set ca in {} or pass --ca-cert (orchestrator init writes an edgectl.toml; EDGECTL_CONFIG=path/edgectl.toml)",
            path.as_deref().or(default_path().as_deref()).map_or("the config file".to_owned(), |p| p.display().to_string())
        ))
    })?;
    let ca_pem = edgeplane_tls::config::read(&ca).map_err(|e| Failure::Usage(e.to_string()))?;
    let cert = given.cert.or(file.cert.map(relative));
    let key = given.key.or(file.key.map(relative));
    let (identity, client_pem) = match (cert, key) {
        (Some(cert), Some(key)) => {
            let read = |p: &Path| edgeplane_tls::config::read(p).map_err(|e| Failure::Usage(e.to_string()));
            let (cert_pem, key_pem) = (read(&cert)?, read(&key)?);
            let identity = edgeplane_tls::TlsIdentity::from_pem(&cert_pem, &key_pem)
                .map_err(|e| Failure::Usage(format!("{} and {}: {e}", cert.display(), key.display())))?;
            (Some(identity), Some((cert_pem, key_pem)))
        }
        (None, None) => (None, None),
        _ => return Err(Failure::Usage("a client certificate needs both cert and key".to_owned())),
    };
    let tls = edgeplane_tls::config::client_config(&ca_pem, identity.as_ref()).map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(Settings { servers, tls, token: given.token.or(file.token), ca_pem, client_pem })
}

/// Writes `ca.crt`, `client.crt`, `client.key` (owner-only) and an `edgectl.toml` using them
/// into `dir`; returns the configuration's path.
pub fn write_credentials(dir: &Path, ca: &str, cert: &str, key: &str, servers: &[String]) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.crt"), ca)?;
    std::fs::write(dir.join("client.crt"), cert)?;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(dir.join("client.key"))?;
    file.write_all(key.as_bytes())?;
    let servers: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    let config = dir.join("edgectl.toml");
    std::fs::write(&config, format!("servers = [{}]\nca = \"ca.crt\"\ncert = \"client.crt\"\nkey = \"client.key\"\n", servers.join(", ")))?;
    Ok(config)
}
