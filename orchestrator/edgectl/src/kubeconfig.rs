//! `edgectl config kubeconfig`: the same cluster and credentials for kubectl.

use base64::Engine as _;
use serde_json::json;

use crate::config::Settings;
use crate::Failure;

/// A kubeconfig with one cluster and context per orchestrator (kubectl talks to one server;
/// switch context when it is down), the cluster CA, and this edgectl's credential: its client
/// certificate and key, or its ServiceAccount token.
pub fn render(settings: &Settings, name: &str) -> Result<String, Failure> {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let user = match (&settings.client_pem, &settings.token) {
        (_, Some(token)) => json!({ "token": token }),
        (Some((cert, key)), None) => json!({ "client-certificate-data": b64(cert), "client-key-data": b64(key) }),
        (None, None) => {
            return Err(Failure::Usage("no credential to put in a kubeconfig: configure a client certificate or a token".to_owned()))
        }
    };
    let context_name = |i: usize| if i == 0 { name.to_owned() } else { format!("{name}-{}", i + 1) };
    let clusters: Vec<_> = settings
        .servers
        .iter()
        .enumerate()
        .map(|(i, server)| {
            let server = if server.contains("://") { server.clone() } else { format!("https://{server}") };
            json!({ "name": context_name(i), "cluster": { "server": server, "certificate-authority-data": b64(&settings.ca_pem) } })
        })
        .collect();
    let contexts: Vec<_> = (0..settings.servers.len())
        .map(|i| json!({ "name": context_name(i), "context": { "cluster": context_name(i), "user": name } }))
        .collect();
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "contexts": contexts,
        "current-context": name,
        "users": [{ "name": name, "user": user }],
        "preferences": {},
    });
    serde_yaml::to_string(&config).map_err(|e| Failure::Usage(format!("the kubeconfig: {e}")))
}
