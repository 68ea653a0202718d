//! Who the node is: `identity.json` in the data directory holds its name, its uid (chosen on
//! the first start; a new data directory is a new incarnation of the node) and the credential
//! registration returned. It is readable by the runtime's user only. A credential the
//! orchestrators no longer accept (401) makes the agent register again with the bootstrap
//! token.

use std::path::PathBuf;

use edgeplane_api::node::{self, RegisterRequest, RegisterResponse};
use edgeplane_client::{Method, Request};
use serde::{Deserialize, Serialize};

use super::files::{self, Access, FileError};
use super::{lock, Agent, AgentError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Identity {
    name: String,
    uid: String,
    #[serde(default)]
    token: Option<String>,
}

const FILE: &str = "identity.json";

/// The identity in `dir`, created with a fresh uid on the first start.
pub(super) async fn load_or_create(dir: PathBuf, name: String) -> Result<Identity, AgentError> {
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|source| FileError::Io { path: dir.clone(), source })?;
        let path = dir.join(FILE);
        match files::read_json::<Identity>(&path)? {
            Some(identity) if identity.name == name => {
                // Files written before credentials were owner-only are made so.
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|source| FileError::Io { path: path.clone(), source })?;
                Ok(identity)
            }
            Some(identity) => Err(AgentError::WrongIdentity { path: path.display().to_string(), owner: identity.name, name }),
            None => {
                let identity = Identity {
                    name,
                    uid: random_hex(16).map_err(|source| FileError::Io { path: PathBuf::from("/dev/urandom"), source })?,
                    token: None,
                };
                files::write_json(&path, &identity, Access::Owner)?;
                Ok(identity)
            }
        }
    })
    .await
    .unwrap_or_else(|e| Err(AgentError::File(FileError::Io { path: PathBuf::from(FILE), source: std::io::Error::other(e) })))
}

impl Agent {
    pub(super) fn token(&self) -> Option<String> {
        lock(&self.identity).token.clone()
    }

    /// Registers with the bootstrap token and keeps the credential it returns.
    pub(super) async fn register(&self) -> Result<(), AgentError> {
        let bootstrap = self.config.bootstrap_token.as_deref().ok_or(AgentError::NoBootstrapToken)?;
        let uid = lock(&self.identity).uid.clone();
        let request = RegisterRequest {
            name: self.config.name.clone(),
            uid,
            labels: self.config.labels.clone(),
            tier: self.config.tier,
            capabilities: self.config.capabilities.clone(),
            capacity: self.config.capacity.clone(),
        };
        let answer = self.client.send(Request::new(Method::POST, node::REGISTER).json(&request).bearer(Some(bootstrap))).await?;
        if !answer.is_success() {
            return Err(AgentError::Refused { what: "registration", status: Box::new(answer.status_error()) });
        }
        let response: RegisterResponse = answer.json()?;
        let identity = {
            let mut identity = lock(&self.identity);
            identity.token = Some(response.token);
            identity.clone()
        };
        files::save_json(self.config.data_dir.join(FILE), identity, Access::Owner).await?;
        tracing::info!(node = %self.config.name, "registered");
        Ok(())
    }
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
