//! `edgectl`: the command-line client of edgeplane orchestrators.
//!
//! It knows several orchestrator addresses (--server, repeated or comma-separated, or
//! EDGEPLANE_SERVERS, or `servers` in its config file) and talks to them over HTTPS through
//! `edgeplane-client`, which fails over between them by the rules every edgeplane client
//! shares. It trusts the cluster CA only and authenticates with a client certificate or a
//! ServiceAccount token (see [`config`]). Exit codes: 0 success, 1 the orchestrator refused the request, 2 bad usage,
//! 3 no orchestrator could be reached. Output to a closed pipe (`edgectl get ... | head -1`)
//! ends the program quietly.

use std::io::Read as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use edgeplane_api::{paths, ClusterStatus, Deleted, ObjectList, ObjectView, Status};
use edgeplane_client::{ClientError, ClientOptions, Method, Request, StatusCode};

/// `println!` that ends the program quietly when stdout is closed (`edgectl get | head -1`)
/// instead of panicking.
macro_rules! outln {
    () => { $crate::output::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!`, likewise.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*)) };
}

mod backup;
mod config;
mod data;
mod kubeconfig;
mod nodes;
mod output;
mod resources;
mod rollout;
mod signing;
mod top;
mod trust;

#[derive(Debug, Parser)]
#[command(name = "edgectl", version, about = "Control an edgeplane cluster")]
struct Cli {
    /// Orchestrator API addresses (host:port or https://host:port); repeat or separate with
    /// commas. Default: `servers` from the config file, else the demo cluster (127.0.0.1-3:8101).
    #[arg(long = "server", short = 's', env = "EDGEPLANE_SERVERS", value_delimiter = ',')]
    servers: Vec<String>,
    /// Config file (TOML: servers, ca, cert, key, token; see `orchestrator init`).
    /// Default: $XDG_CONFIG_HOME/edgeplane/edgectl.toml or ~/.config/edgeplane/edgectl.toml.
    #[arg(long, env = "EDGECTL_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// The cluster CA's certificate (overrides `ca` in the config file).
    #[arg(long, env = "EDGECTL_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// A client certificate to authenticate with, and its key.
    #[arg(long, env = "EDGECTL_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    #[arg(long, env = "EDGECTL_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
    /// A ServiceAccount's bearer token to authenticate with.
    #[arg(long, env = "EDGECTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
    /// List resources, or show one: nodes, workloads, models, modules, assignments (in the
    /// namespace "default" unless -n or -A says otherwise).
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
    /// The model registry: push ONNX files.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Signing keys for modules and models (ed25519).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
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
    /// Take a node out of scheduling (cordon), back in (uncordon), or empty it (drain); end
    /// its certificates (revoke).
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Bootstrap tokens that let edge nodes enroll.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Client certificates for people and programs.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Revoke a person's or program's certificate.
    Certificate {
        #[command(subcommand)]
        command: CertificateCommand,
    },
    /// ServiceAccount tokens (create the ServiceAccount with apply first).
    Serviceaccount {
        #[command(subcommand)]
        command: ServiceAccountCommand,
    },
    /// Who the cluster takes you for.
    Whoami,
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Configuration for other tools: `config kubeconfig > edgeplane.kubeconfig` for kubectl.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Backups of the control plane: sealed copies of the whole replicated state.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a kubeconfig for this cluster and credential (one context per orchestrator;
    /// it holds the credential: keep it owner-only).
    Kubeconfig {
        /// The name of the cluster, user and first context.
        #[arg(long, default_value = "edgeplane")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Make a key that seals backups (256 bits, 64 hex digits, owner-only). Never overwrites.
    Key { file: std::path::PathBuf },
    /// Take a consistent backup from any orchestrator (cluster-admin) and write it, sealed
    /// with the key, to FILE (a new file).
    Create {
        file: std::path::PathBuf,
        #[arg(long, value_name = "KEY_FILE")]
        key: std::path::PathBuf,
    },
    /// Show what a backup holds (index, time, objects, checksum); with --key, open it and
    /// check every byte.
    Inspect {
        file: std::path::PathBuf,
        #[arg(long, value_name = "KEY_FILE")]
        key: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// A new bootstrap token; printed once.
    Create {
        /// How long it is valid: 90s, 30m, 1h, 2d (at most a week).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Only a node of this name may enroll with it.
        #[arg(long)]
        node: Option<String>,
        /// Labels the enrolled node gets (and cannot choose otherwise), KEY=VALUE, comma-separated.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// How many enrollments it allows.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Tokens not yet used up or expired (never their secrets).
    List,
    /// Delete a token before it is used.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// A key (made here) and a certificate for NAME, written with an edgectl.toml to --out-dir.
    Create {
        name: String,
        /// The user's group, which bindings can name (e.g. ops, or edgeplane:devices for a sensor).
        #[arg(long)]
        group: Option<String>,
        #[arg(long, default_value_t = 30)]
        days: u64,
        #[arg(long)]
        out_dir: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CertificateCommand {
    /// Revoke a certificate by its serial (hex).
    Revoke { serial: String },
}

#[derive(Debug, Subcommand)]
enum ServiceAccountCommand {
    /// A new token for the ServiceAccount (its earlier tokens stop working); printed once.
    Token {
        name: String,
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Records, oldest first, after --after.
    Log {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Check the whole chain; names the first broken record and exits 1 if any was edited,
    /// removed or reordered.
    Verify,
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
    /// End every certificate of the node at once; it must enroll again with a bootstrap token.
    Revoke { name: String },
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
enum KeyCommand {
    /// Make a signing key: writes NAME.key (private, owner-only) and NAME.pub into --dir, and
    /// prints the public key for TrustPolicies and edges' --trusted-signers.
    Create {
        name: String,
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Upload an .onnx model: the registry reads its inputs and outputs, loads it with every
    /// inference backend it has, stores it by digest and points the Model NAME at this
    /// version (created if absent). Versions are immutable; pushing an earlier version again
    /// makes it current (a rollback).
    Push {
        file: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
        /// Sign it with this private key (from `edgectl key create`): an ed25519 signature
        /// over its kind, name, version and digest, which TrustPolicies and edges check.
        #[arg(long, value_name = "KEY_FILE")]
        sign: Option<String>,
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
        /// Sign it with this private key (from `edgectl key create`): an ed25519 signature
        /// over its kind, name, version and digest, which TrustPolicies and edges check.
        #[arg(long, value_name = "KEY_FILE")]
        sign: Option<String>,
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
    /// Boxed: a `Status` is large, and a `Failure` travels in every `Result`.
    Refused(Box<Status>),
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
    // Local: no orchestrator involved.
    if let Command::Key { command: KeyCommand::Create { name, dir } } = &cli.command {
        return signing::create(name, dir);
    }
    match &cli.command {
        Command::Backup { command: BackupCommand::Key { file } } => return backup::key(file),
        Command::Backup { command: BackupCommand::Inspect { file, key } } => {
            return backup::inspect(file, key.as_deref(), cli.output == "json");
        }
        _ => {}
    }
    let settings = config::load(config::Given {
        config: cli.config.clone(),
        servers: cli.servers.clone(),
        ca: cli.ca_cert.clone(),
        cert: cli.client_cert.clone(),
        key: cli.client_key.clone(),
        token: cli.token.clone(),
    })?;
    if let Command::Config { command: ConfigCommand::Kubeconfig { name } } = &cli.command {
        out!("{}", kubeconfig::render(&settings, name)?);
        return Ok(());
    }
    let servers = settings.servers.clone();
    let client = Client::new(settings, Duration::from_secs_f64(cli.timeout.max(0.1)))?;
    let json = cli.output == "json";
    match cli.command {
        Command::Completions { .. }
        | Command::Key { .. }
        | Command::Config { .. }
        | Command::Backup { command: BackupCommand::Key { .. } | BackupCommand::Inspect { .. } } => unreachable!("handled above"),
        Command::Backup { command: BackupCommand::Create { file, key } } => backup::create(&client, &file, &key).await,
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
        Command::Module { command: ModuleCommand::Push { file, name, version, namespace, sign } } => {
            let bytes = std::fs::read(&file).map_err(|e| Failure::Usage(format!("cannot read {file}: {e}")))?;
            let path = format!("/v1/modules/{namespace}/{name}/{version}");
            let signed = sign.map(|key| signing::sign(&key, "module", &name, &version, &bytes)).transpose()?.unwrap_or_default();
            let (code, module): (_, serde_json::Value) =
                client.call_with(reqwest::Method::POST, &path, &signed, Some((bytes, "application/wasm"))).await?;
            let verb = if code == StatusCode::CREATED { "pushed" } else { "unchanged" };
            outln!(
                "module.edgeplane.io/{name}.{version} {verb} ({}, {} bytes)",
                module["spec"]["digest"].as_str().unwrap_or("?"),
                module["spec"]["sizeBytes"]
            );
            Ok(())
        }
        Command::Model { command: ModelCommand::Push { file, name, version, namespace, sign } } => {
            let bytes = std::fs::read(&file).map_err(|e| Failure::Usage(format!("cannot read {file}: {e}")))?;
            let path = format!("/v1/models/{namespace}/{name}/{version}");
            let signed = sign.map(|key| signing::sign(&key, "model", &name, &version, &bytes)).transpose()?.unwrap_or_default();
            let (code, model): (_, serde_json::Value) =
                client.call_with(reqwest::Method::POST, &path, &signed, Some((bytes, "application/octet-stream"))).await?;
            let verb = if code == StatusCode::CREATED { "created" } else { "now at this version" };
            let artifact = &model["spec"]["artifact"];
            let backends: Vec<&str> =
                artifact["backends"].as_array().map(|b| b.iter().filter_map(|b| b.as_str()).collect()).unwrap_or_default();
            outln!(
                "model.edgeplane.io/{name} {verb}: {version} ({}, {} bytes, runs on {})",
                artifact["digest"].as_str().unwrap_or("?"),
                artifact["sizeBytes"],
                backends.join(", ")
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
        Command::Data { command: DataCommand::Query { filters, limit } } => data::query(&client, &filters, limit, &cli.output).await,
        Command::Data { command: DataCommand::Tail { filters, last, follow, interval_ms } } => {
            data::tail(&client, &filters, last, follow, Duration::from_millis(interval_ms), &cli.output).await
        }
        Command::Rollout { command: RolloutCommand::Status { workload, namespace, wait } } => {
            rollout::status(&client, &namespace, &workload, wait.map(Duration::from_secs)).await
        }
        Command::Rollout { command: RolloutCommand::History { workload, namespace } } => {
            rollout::history(&client, &namespace, &workload).await
        }
        Command::Rollout { command: RolloutCommand::Undo { workload, namespace } } => rollout::undo(&client, &namespace, &workload).await,
        Command::Top { command: TopCommand::Nodes } => top::nodes(&client, cli.output == "json").await,
        Command::Node { command: NodeCommand::Cordon { name } } => nodes::set_cordoned(&client, &name, true).await,
        Command::Node { command: NodeCommand::Uncordon { name } } => nodes::set_cordoned(&client, &name, false).await,
        Command::Node { command: NodeCommand::Drain { name } } => nodes::drain(&client, &name).await,
        Command::Node { command: NodeCommand::Revoke { name } } => trust::node_revoke(&client, &name).await,
        Command::Token { command: TokenCommand::Create { ttl, node, labels, uses, description } } => {
            let new = trust::NewToken { ttl: &ttl, node: node.as_deref(), labels: &labels, uses, description: &description };
            trust::token_create(&client, new).await
        }
        Command::Token { command: TokenCommand::List } => trust::token_list(&client, json).await,
        Command::Token { command: TokenCommand::Delete { id } } => trust::token_delete(&client, &id).await,
        Command::User { command: UserCommand::Create { name, group, days, out_dir } } => {
            trust::user_create(&client, &name, group.as_deref(), days, &out_dir, &servers).await
        }
        Command::Certificate { command: CertificateCommand::Revoke { serial } } => trust::certificate_revoke(&client, &serial).await,
        Command::Serviceaccount { command: ServiceAccountCommand::Token { name, namespace } } => {
            trust::service_account_token(&client, &namespace, &name).await
        }
        Command::Whoami => trust::whoami(&client, json).await,
        Command::Audit { command: AuditCommand::Log { after, limit } } => trust::audit_log(&client, after, limit, json).await,
        Command::Audit { command: AuditCommand::Verify } => trust::audit_verify(&client).await,
    }
}

async fn cluster_status(client: &Client, json: bool) -> Result<(), Failure> {
    let mut rows = Vec::new();
    for server in client.servers() {
        let status = client.get_from::<ClusterStatus>(server, paths::CLUSTER).await;
        rows.push((server.clone(), status));
    }
    if json {
        let list: Vec<_> = rows.iter().filter_map(|(_, s)| s.as_ref().ok()).collect();
        outln!("{}", serde_json::to_string_pretty(&list).expect("serializable"));
    } else {
        outln!(
            "{:<28} {:>4} {:<13} {:>6} {:>7} {:>10} {:>10} {:>10}",
            "SERVER",
            "ID",
            "ROLE",
            "TERM",
            "LEADER",
            "COMMIT",
            "APPLIED",
            "SNAPSHOT"
        );
        for (server, status) in &rows {
            match status {
                Ok(s) => outln!(
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
                Err(e) => outln!("{server:<28} unreachable: {e}"),
            }
        }
    }
    if rows.iter().all(|(_, s)| s.is_err()) {
        return Err(Failure::Unreachable("no orchestrator answered".to_owned()));
    }
    if !json {
        // Every member reports every member's last scheduled backup (it is replicated): show
        // the most complete answer.
        let backups = rows.iter().filter_map(|(_, s)| s.as_ref().ok()).map(|s| &s.backups).max_by_key(|b| b.len());
        match backups {
            Some(backups) if !backups.is_empty() => {
                outln!();
                outln!("{:<8} {:<22} {:>10} {:>8} {:>12} {:>8}  FILE", "BACKUPS", "LAST GOOD", "INDEX", "OBJECTS", "BYTES", "MS");
                for b in backups {
                    outln!(
                        "{:<8} {:<22} {:>10} {:>8} {:>12} {:>8}  {}",
                        format!("member {}", b.member),
                        backup::utc(b.created_at_ms),
                        b.index,
                        b.objects,
                        b.file_bytes,
                        b.duration_ms,
                        b.path
                    );
                }
            }
            _ => outln!("\nno scheduled backups (orchestrator --backup-dir; or edgectl backup create)"),
        }
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
            serde_json::from_str::<serde_json::Value>(&body).map_err(|e| Failure::Usage(format!("the value is not valid JSON: {e}")))?;
            let mut query = scope.query();
            if let Some(v) = if_version {
                query.push(("ifVersion", v.to_string()));
            }
            if if_absent {
                query.push(("ifAbsent", "true".to_owned()));
            }
            let (code, object): (_, ObjectView) = client.call(Method::PUT, &paths::object(&kind, &name), &query, Some(body)).await?;
            if json {
                print_json(&object);
            } else {
                let verb = if code == StatusCode::CREATED { "created" } else { "replaced" };
                outln!("{kind}/{name} {verb} (resourceVersion {})", object.resource_version);
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
                outln!("{kind}/{name} deleted (at index {})", deleted.deleted_at);
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
    outln!("{}", serde_json::to_string_pretty(value).expect("serializable"));
}

fn print_table(objects: &[ObjectView]) {
    outln!("{:<16} {:<32} {:>8}  VALUE", "NAMESPACE", "NAME", "VERSION");
    for o in objects {
        let ns = if o.namespace.is_empty() { "-" } else { &o.namespace };
        let mut value = o.value.to_string();
        if value.len() > 60 {
            value.truncate(57);
            value.push_str("...");
        }
        outln!("{:<16} {:<32} {:>8}  {}", ns, o.name, o.resource_version, value);
    }
}

/// The orchestrators, through the shared client, with answers mapped to [`Failure`]s.
struct Client {
    inner: edgeplane_client::Client,
}

impl Client {
    fn new(settings: config::Settings, timeout: Duration) -> Result<Client, Failure> {
        let options = ClientOptions {
            deadline: timeout,
            attempt_timeout: Duration::from_secs(15),
            bearer: settings.token,
            ..ClientOptions::default()
        };
        let inner = edgeplane_client::Client::new(&settings.servers, options, settings.tls).map_err(|e| Failure::Usage(e.to_string()))?;
        Ok(Client { inner })
    }

    /// A request whose success has no body (204), to whichever orchestrator can answer it.
    async fn call_empty(&self, method: Method, path: &str) -> Result<(), Failure> {
        let answer = self.inner.send(Request::new(method, path)).await.map_err(unreachable)?;
        if !answer.is_success() {
            return Err(Failure::Refused(Box::new(answer.status_error())));
        }
        Ok(())
    }

    fn servers(&self) -> &[String] {
        self.inner.servers()
    }

    /// One server's answer, without failing over (`cluster status` asks each).
    async fn get_from<T: serde::de::DeserializeOwned>(&self, server: &str, path: &str) -> Result<T, String> {
        let answer = self.inner.send_to(server, Request::get(path)).await.map_err(|e| e.to_string())?;
        if !answer.is_success() {
            return Err(answer.status_error().to_string());
        }
        answer.json().map_err(|e| e.to_string())
    }

    /// Sends a request with a JSON body (or none) to whichever orchestrator can answer it.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> Result<(StatusCode, T), Failure> {
        self.call_with(method, path, query, body.map(|b| (b.into_bytes(), "application/json"))).await
    }

    /// [`Client::call`] with a body of any content type. Warnings the server sends are
    /// printed to stderr, as kubectl does.
    async fn call_with<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<(Vec<u8>, &'static str)>,
    ) -> Result<(StatusCode, T), Failure> {
        let mut request = Request::new(method, with_query(path, query));
        if let Some((bytes, content_type)) = body {
            request = request.body(bytes, content_type);
        }
        let answer = self.inner.send(request).await.map_err(unreachable)?;
        for warning in answer.warnings() {
            eprintln!("Warning: {warning}");
        }
        if !answer.is_success() {
            return Err(Failure::Refused(Box::new(answer.status_error())));
        }
        let value = answer.json().map_err(|e| Failure::Unreachable(e.to_string()))?;
        Ok((answer.status, value))
    }
}

/// `path?k=v&...`, the values percent-encoded.
fn with_query(path: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let url = reqwest::Url::parse_with_params("http://edgectl.invalid/", query).expect("a fixed base URL parses");
    format!("{path}?{}", url.query().unwrap_or_default())
}

fn unreachable(e: ClientError) -> Failure {
    match e {
        ClientError::BadServer { .. } => Failure::Usage(e.to_string()),
        other => Failure::Unreachable(other.to_string()),
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
