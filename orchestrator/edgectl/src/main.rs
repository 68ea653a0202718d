//! `edgectl`: the command-line client of edgeplane orchestrators.
//!
//! It knows several orchestrator addresses (--server, repeated or comma-separated, or
//! EDGEPLANE_SERVERS, or `servers` in its config file) and fails over between them: a server that cannot be reached, or that
//! answers 503 (no leader, overloaded), is skipped in favour of the next, or of the leader it
//! names. Exit codes: 0 success, 1 the orchestrator refused the request, 2 bad usage,
//! 3 no orchestrator could be reached.

use std::io::Read as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory, Parser, Subcommand};
use edgeplane_api::{paths, ClusterStatus, Deleted, ObjectList, ObjectView, Status};

mod data;
mod nodes;
mod resources;
mod rollout;
mod top;
use reqwest::{Method, StatusCode};

#[derive(Debug, Parser)]
#[command(name = "edgectl", version, about = "Control an edgeplane cluster")]
struct Cli {
    /// Orchestrator API addresses (host:port or URL); repeat or separate with commas.
    /// Default: `servers` from the config file, else the demo cluster (127.0.0.1-3:8101).
    #[arg(long = "server", short = 's', env = "EDGEPLANE_SERVERS", value_delimiter = ',')]
    servers: Vec<String>,
    /// Config file (TOML: servers = ["host:port", ...]).
    /// Default: $XDG_CONFIG_HOME/edgeplane/edgectl.toml or ~/.config/edgeplane/edgectl.toml.
    #[arg(long, env = "EDGECTL_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Give up after this many seconds of failing over between servers.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_parser = ["table", "wide", "json", "yaml"], default_value = "table")]
    output: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update resources from manifests (files, directories, or - for stdin).
    /// Every document is validated first; nothing is applied if any is invalid.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Namespace for documents that name none (default: "default").
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
    /// List resources, or show one: nodes, workloads, models, modules.
    Get {
        kind: String,
        name: Option<String>,
        #[command(flatten)]
        listing: Listing,
        /// After listing, follow changes (across orchestrator failover) until interrupted.
        #[arg(long, short = 'w', conflicts_with = "name")]
        watch: bool,
    },
    /// Follow changes to a kind of resource (same as `get KIND -w`), across orchestrator
    /// failover, until interrupted.
    Watch {
        kind: String,
        #[command(flatten)]
        listing: Listing,
    },
    /// Show one resource in detail: spec, status, conditions, recent changes.
    Describe {
        kind: String,
        name: String,
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
    /// Delete a resource.
    Delete {
        kind: String,
        name: String,
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
    /// The module registry: push .wasm files, list modules.
    Module {
        #[command(subcommand)]
        command: ModuleCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions { shell: clap_complete::Shell },
    /// The cluster as each orchestrator sees it.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// The generic replicated object store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Records edge nodes uploaded to the cloud sink.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// A Workload's rollouts: where the last one stands, past revisions, going back.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// What the edge nodes are doing now: instances, CPU, readings in, bytes up, outbox.
    Top {
        #[command(subcommand)]
        command: TopCommand,
    },
    /// Take a node out of scheduling (cordon), back in (uncordon), or empty it (drain).
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Revision, phase, updated replicas and why; exits 1 if it was rolled back.
    Status {
        workload: String,
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
        /// Follow it until it is no longer progressing, for at most this many seconds.
        #[arg(long, short = 'w', num_args = 0..=1, default_missing_value = "300")]
        wait: Option<u64>,
    },
    /// The Workload's recent revisions and their modules.
    History {
        workload: String,
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
    },
    /// Go back to the module and configuration from before the last rollout.
    Undo {
        workload: String,
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Subcommand)]
enum TopCommand {
    /// One line per edge node, from the heartbeats the leader holds.
    Nodes,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Place nothing new on the node; what runs there stays.
    Cordon { name: String },
    /// Let the scheduler use the node again.
    Uncordon { name: String },
    /// Cordon the node and evict its replicas (not daemon ones): the scheduler places them on
    /// other nodes.
    Drain { name: String },
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// One page of records, oldest first (-o json prints the page with its next cursor).
    Query {
        #[command(flatten)]
        filters: data::Filters,
        /// At most this many records (1 to 10000; the server's default is 100).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// The last records; with -f, then new ones as they arrive, across orchestrator
    /// failover, until interrupted (-o json prints one record per line, -o yaml one
    /// document per record).
    Tail {
        #[command(flatten)]
        filters: data::Filters,
        /// How many records to show first.
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// Keep polling for new records.
        #[arg(long, short = 'f')]
        follow: bool,
        /// How often to ask for new records while following.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
        interval_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ModuleCommand {
    /// Upload a .wasm module; it is checked against the guest ABI (docs/abi.md) and stored
    /// by digest. Versions are immutable.
    Push {
        file: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
    },
    /// List modules (like `get modules`).
    List {
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[arg(long, short = 'A')]
        all_namespaces: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Members, roles, terms, leader and log positions.
    Status,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Create or replace an object.
    Put {
        kind: String,
        name: String,
        /// The value as JSON.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        value: Option<String>,
        /// Read the value (JSON) from a file, or - for stdin.
        #[arg(long, short = 'f')]
        file: Option<String>,
        #[command(flatten)]
        scope: Scope,
        /// Only replace the object if its resourceVersion is this (compare-and-swap).
        #[arg(long, conflicts_with = "if_absent")]
        if_version: Option<u64>,
        /// Only create; fail if the object exists.
        #[arg(long)]
        if_absent: bool,
    },
    /// Show one object.
    Get {
        kind: String,
        name: String,
        #[command(flatten)]
        scope: Scope,
        /// Read this server's possibly stale copy instead of a linearizable read.
        #[arg(long)]
        stale: bool,
    },
    /// List the objects of a kind.
    List {
        kind: String,
        #[command(flatten)]
        scope: Scope,
        #[arg(long)]
        stale: bool,
    },
    /// Delete an object.
    Delete {
        kind: String,
        name: String,
        #[command(flatten)]
        scope: Scope,
        #[arg(long)]
        if_version: Option<u64>,
    },
}

/// Which objects of a kind to list or watch.
#[derive(Debug, Args)]
struct Listing {
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Across every namespace.
    #[arg(long, short = 'A')]
    all_namespaces: bool,
    /// Label selector, e.g. line=a,zone in (hall-1,hall-2).
    #[arg(long, short = 'l')]
    selector: Option<String>,
}

#[derive(Debug, Args)]
struct Scope {
    #[arg(long, short = 'n')]
    namespace: Option<String>,
}

/// Why a command failed, mapped to the exit code a script can rely on.
#[derive(Debug)]
enum Failure {
    Refused(Status),
    /// Manifests that failed validation: nothing was sent.
    Invalid(Vec<String>),
    Unreachable(String),
    Usage(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgectl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(status)) => {
            eprintln!("edgectl: {status}");
            if let Some(v) = status.details.current_resource_version {
                eprintln!("  current resourceVersion: {v}");
            }
            ExitCode::from(1)
        }
        Err(Failure::Invalid(problems)) => {
            eprintln!("edgectl: nothing was applied; the manifests have problems:");
            for p in problems {
                eprintln!("{p}");
            }
            ExitCode::from(1)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("edgectl: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Unreachable(msg)) => {
            eprintln!("edgectl: {msg}");
            ExitCode::from(3)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "edgectl", &mut std::io::stdout());
        return Ok(());
    }
    let servers = if cli.servers.is_empty() { configured_servers(cli.config.as_deref())? } else { cli.servers.clone() };
    let client = Client::new(&servers, Duration::from_secs_f64(cli.timeout.max(0.1)))?;
    let json = cli.output == "json";
    match cli.command {
        Command::Completions { .. } => unreachable!("handled above"),
        Command::Apply { files, namespace } => resources::apply(&client, &files, namespace.as_deref()).await,
        Command::Get { kind, listing, watch: true, .. } | Command::Watch { kind, listing } => {
            let args = resources::GetArgs {
                kind: &kind,
                name: None,
                namespace: listing.namespace.as_deref(),
                all_namespaces: listing.all_namespaces,
                selector: listing.selector.as_deref(),
                output: &cli.output,
            };
            resources::watch(&client, args).await
        }
        Command::Get { kind, name, listing, watch: false } => {
            let args = resources::GetArgs {
                kind: &kind,
                name: name.as_deref(),
                namespace: listing.namespace.as_deref(),
                all_namespaces: listing.all_namespaces,
                selector: listing.selector.as_deref(),
                output: &cli.output,
            };
            resources::get(&client, args).await
        }
        Command::Delete { kind, name, namespace } => resources::delete(&client, &kind, &name, namespace.as_deref()).await,
        Command::Describe { kind, name, namespace } => resources::describe(&client, &kind, &name, namespace.as_deref()).await,
        Command::Module { command: ModuleCommand::Push { file, name, version, namespace } } => {
            let bytes = std::fs::read(&file).map_err(|e| Failure::Usage(format!("cannot read {file}: {e}")))?;
            let path = format!("/v1/modules/{namespace}/{name}/{version}");
            let (code, module): (_, serde_json::Value) =
                client.call_with(reqwest::Method::POST, &path, &[], Some((bytes, "application/wasm"))).await?;
            let verb = if code == StatusCode::CREATED { "pushed" } else { "unchanged" };
            println!(
                "module.edgeplane.io/{name}.{version} {verb} ({}, {} bytes)",
                module["spec"]["digest"].as_str().unwrap_or("?"),
                module["spec"]["sizeBytes"]
            );
            Ok(())
        }
        Command::Module { command: ModuleCommand::List { namespace, all_namespaces } } => {
            let args = resources::GetArgs {
                kind: "modules",
                name: None,
                namespace: namespace.as_deref(),
                all_namespaces,
                selector: None,
                output: &cli.output,
            };
            resources::get(&client, args).await
        }
        Command::Cluster { command: ClusterCommand::Status } => cluster_status(&client, json).await,
        Command::Store { command } => store(&client, command, json).await,
        Command::Data { command: DataCommand::Query { filters, limit } } => {
            data::query(&client, &filters, limit, &cli.output).await
        }
        Command::Data { command: DataCommand::Tail { filters, last, follow, interval_ms } } => {
            data::tail(&client, &filters, last, follow, Duration::from_millis(interval_ms), &cli.output).await
        }
        Command::Rollout { command: RolloutCommand::Status { workload, namespace, wait } } => {
            rollout::status(&client, &namespace, &workload, wait.map(Duration::from_secs)).await
        }
        Command::Rollout { command: RolloutCommand::History { workload, namespace } } => rollout::history(&client, &namespace, &workload).await,
        Command::Rollout { command: RolloutCommand::Undo { workload, namespace } } => rollout::undo(&client, &namespace, &workload).await,
        Command::Top { command: TopCommand::Nodes } => top::nodes(&client, cli.output == "json").await,
        Command::Node { command: NodeCommand::Cordon { name } } => nodes::set_cordoned(&client, &name, true).await,
        Command::Node { command: NodeCommand::Uncordon { name } } => nodes::set_cordoned(&client, &name, false).await,
        Command::Node { command: NodeCommand::Drain { name } } => nodes::drain(&client, &name).await,
    }
}

async fn cluster_status(client: &Client, json: bool) -> Result<(), Failure> {
    let mut rows = Vec::new();
    for server in &client.servers {
        let status = client.get_from::<ClusterStatus>(server, paths::CLUSTER).await;
        rows.push((server.clone(), status));
    }
    if json {
        let list: Vec<_> = rows.iter().filter_map(|(_, s)| s.as_ref().ok()).collect();
        println!("{}", serde_json::to_string_pretty(&list).expect("serializable"));
    } else {
        println!("{:<28} {:>4} {:<13} {:>6} {:>7} {:>10} {:>10} {:>10}", "SERVER", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "SNAPSHOT");
        for (server, status) in &rows {
            match status {
                Ok(s) => println!(
                    "{:<28} {:>4} {:<13} {:>6} {:>7} {:>10} {:>10} {:>10}",
                    server,
                    s.node_id,
                    format!("{:?}", s.role).to_lowercase(),
                    s.term,
                    s.leader_id.map_or("-".to_owned(), |l| l.to_string()),
                    s.commit_index,
                    s.applied_index,
                    s.snapshot_index
                ),
                Err(e) => println!("{server:<28} unreachable: {e}"),
            }
        }
    }
    if rows.iter().all(|(_, s)| s.is_err()) {
        return Err(Failure::Unreachable("no orchestrator answered".to_owned()));
    }
    Ok(())
}

async fn store(client: &Client, command: StoreCommand, json: bool) -> Result<(), Failure> {
    match command {
        StoreCommand::Put { kind, name, value, file, scope, if_version, if_absent } => {
            let body = match (value, file) {
                (Some(v), _) => v,
                (None, Some(f)) => read_input(&f)?,
                (None, None) => unreachable!("clap requires one"),
            };
            serde_json::from_str::<serde_json::Value>(&body)
                .map_err(|e| Failure::Usage(format!("the value is not valid JSON: {e}")))?;
            let mut query = scope.query();
            if let Some(v) = if_version {
                query.push(("ifVersion", v.to_string()));
            }
            if if_absent {
                query.push(("ifAbsent", "true".to_owned()));
            }
            let (code, object): (_, ObjectView) =
                client.call(Method::PUT, &paths::object(&kind, &name), &query, Some(body)).await?;
            if json {
                print_json(&object);
            } else {
                let verb = if code == StatusCode::CREATED { "created" } else { "replaced" };
                println!("{kind}/{name} {verb} (resourceVersion {})", object.resource_version);
            }
        }
        StoreCommand::Get { kind, name, scope, stale } => {
            let query = scope.read_query(stale);
            let (_, object): (_, ObjectView) = client.call(Method::GET, &paths::object(&kind, &name), &query, None).await?;
            if json {
                print_json(&object);
            } else {
                print_table(&[object]);
            }
        }
        StoreCommand::List { kind, scope, stale } => {
            let query = scope.read_query(stale);
            let (_, list): (_, ObjectList) = client.call(Method::GET, &paths::kind(&kind), &query, None).await?;
            if json {
                print_json(&list);
            } else {
                print_table(&list.items);
            }
        }
        StoreCommand::Delete { kind, name, scope, if_version } => {
            let mut query = scope.query();
            if let Some(v) = if_version {
                query.push(("ifVersion", v.to_string()));
            }
            let (_, deleted): (_, Deleted) = client.call(Method::DELETE, &paths::object(&kind, &name), &query, None).await?;
            if json {
                print_json(&deleted);
            } else {
                println!("{kind}/{name} deleted (at index {})", deleted.deleted_at);
            }
        }
    }
    Ok(())
}

impl Scope {
    fn query(&self) -> Vec<(&'static str, String)> {
        self.namespace.iter().map(|ns| ("namespace", ns.clone())).collect()
    }

    fn read_query(&self, stale: bool) -> Vec<(&'static str, String)> {
        let mut q = self.query();
        if stale {
            q.push(("consistency", "stale".to_owned()));
        }
        q
    }
}

/// The demo cluster's API addresses (scripts/demo.sh).
const DEFAULT_SERVERS: [&str; 3] = ["127.0.0.1:8101", "127.0.0.2:8101", "127.0.0.3:8101"];

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    servers: Vec<String>,
}

/// Servers from the config file: the one named, else the default location if it exists,
/// else the demo cluster.
fn configured_servers(explicit: Option<&std::path::Path>) -> Result<Vec<String>, Failure> {
    let default_path = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config")))
        .map(|d| d.join("edgeplane/edgectl.toml"));
    let path = match (explicit, default_path) {
        (Some(p), _) => p.to_owned(),
        (None, Some(p)) if p.exists() => p,
        _ => return Ok(DEFAULT_SERVERS.iter().map(|s| (*s).to_owned()).collect()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
    let config: ConfigFile = toml::from_str(&text).map_err(|e| Failure::Usage(format!("{} is not valid: {e}", path.display())))?;
    if config.servers.is_empty() {
        return Err(Failure::Usage(format!("{}: servers must list at least one address", path.display())));
    }
    Ok(config.servers)
}

fn read_input(file: &str) -> Result<String, Failure> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|e| Failure::Usage(format!("cannot read {file}: {e}")))
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("serializable"));
}

fn print_table(objects: &[ObjectView]) {
    println!("{:<16} {:<32} {:>8}  VALUE", "NAMESPACE", "NAME", "VERSION");
    for o in objects {
        let ns = if o.namespace.is_empty() { "-" } else { &o.namespace };
        let mut value = o.value.to_string();
        if value.len() > 60 {
            value.truncate(57);
            value.push_str("...");
        }
        println!("{:<16} {:<32} {:>8}  {}", ns, o.name, o.resource_version, value);
    }
}

/// An HTTP client that fails over between orchestrators.
struct Client {
    servers: Vec<String>,
    http: reqwest::Client,
    timeout: Duration,
}

impl Client {
    fn new(servers: &[String], timeout: Duration) -> Result<Client, Failure> {
        let servers: Vec<String> = servers
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| if s.contains("://") { s.trim_end_matches('/').to_owned() } else { format!("http://{s}") })
            .collect();
        if servers.is_empty() {
            return Err(Failure::Usage("no --server given".to_owned()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| Failure::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client { servers, http, timeout })
    }

    async fn get_from<T: serde::de::DeserializeOwned>(&self, server: &str, path: &str) -> Result<T, String> {
        let resp = self.http.get(format!("{server}{path}")).send().await.map_err(|e| short_error(&e))?;
        resp.json().await.map_err(|e| e.to_string())
    }

    /// Sends a request to the first server that can answer it. Unreachable servers and 503s
    /// (nothing was proposed) move on to the next server, preferring a leader hint; other
    /// answers, including 504 (outcome unknown), are final.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> Result<(StatusCode, T), Failure> {
        self.call_with(method, path, query, body.map(|b| (b.into_bytes(), "application/json"))).await
    }

    /// [`Client::call`] with a body of any content type.
    async fn call_with<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<(StatusCode, T), Failure> {
        let deadline = Instant::now() + self.timeout;
        let mut order: Vec<String> = self.servers.clone();
        let mut last_problem = String::new();
        loop {
            let mut hint = None;
            for server in &order {
                let mut req = self.http.request(method.clone(), format!("{server}{path}")).query(query);
                if let Some(b) = &body {
                    req = req.header("content-type", b.1).body(b.0.clone());
                }
                let resp = match req.send().await {
                    Ok(resp) => resp,
                    Err(e) => {
                        last_problem = format!("{server}: {}", short_error(&e));
                        continue;
                    }
                };
                let code = resp.status();
                let bytes = resp.bytes().await.map_err(|e| Failure::Unreachable(format!("{server}: {e}")))?;
                if code.is_success() {
                    let value = serde_json::from_slice(&bytes)
                        .map_err(|e| Failure::Unreachable(format!("{server} sent an unexpected answer: {e}")))?;
                    return Ok((code, value));
                }
                let status: Status = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    Status::new(code.as_u16(), edgeplane_api::StatusReason::InternalError, String::from_utf8_lossy(&bytes))
                });
                if code != StatusCode::SERVICE_UNAVAILABLE {
                    return Err(Failure::Refused(status));
                }
                last_problem = format!("{server}: {}", status.message);
                hint = hint.or(status.details.leader_api_addr.clone());
            }
            if Instant::now() >= deadline {
                return Err(Failure::Unreachable(format!(
                    "no orchestrator could serve the request within {:?}; last problem: {last_problem}",
                    self.timeout
                )));
            }
            if let Some(h) = hint.map(|h| format!("http://{h}")) {
                order.retain(|s| s != &h);
                order.insert(0, h);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn short_error(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused or unreachable".to_owned()
    } else if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        // Catches clashing flags (e.g. a subcommand's --output against the global one).
        super::Cli::command().debug_assert();
    }
}
