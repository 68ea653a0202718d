//! `edgectl apply | get | delete`: the resource commands.

use std::path::{Path, PathBuf};

use edgeplane_api::manifest::{self, Resource};
use edgeplane_client::{Method, Request, StatusCode};
use serde_json::Value;

use crate::{Client, Failure};

use edgeplane_api::paths::RESOURCES as BASE;
use edgeplane_api::resources::ResourceKind;
use edgeplane_api::table;
pub use edgeplane_api::table::node_status;

pub fn kind_named(name: &str) -> Result<ResourceKind, Failure> {
    ResourceKind::by_any_name(name).ok_or_else(|| {
        let known: Vec<&str> = edgeplane_api::resources::KINDS
            .iter()
            .map(|k| k.aliases.iter().find(|a| a.ends_with('s')).copied().unwrap_or(k.plural))
            .collect();
        Failure::Usage(format!("unknown resource type {name:?}; use one of: {}", known.join(", ")))
    })
}

fn kind_of(resource: &Resource) -> ResourceKind {
    ResourceKind::by_kind(resource.kind()).expect("every resource kind is listed")
}

fn collection(kind: ResourceKind, namespace: Option<&str>) -> String {
    match (kind.namespaced, namespace) {
        (true, Some(ns)) => format!("{BASE}/namespaces/{ns}/{}", kind.plural),
        _ => format!("{BASE}/{}", kind.plural),
    }
}

/// Every manifest file named: files as given, directories recursively (*.yaml, *.yml,
/// *.json), `-` for stdin.
fn manifest_texts(paths: &[String]) -> Result<Vec<(String, String)>, Failure> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut texts = Vec::new();
    for path in paths {
        if path == "-" {
            texts.push(("<stdin>".to_owned(), crate::read_input("-")?));
            continue;
        }
        let p = Path::new(path);
        let mut files = Vec::new();
        if p.is_dir() {
            walk(p, &mut files).map_err(|e| Failure::Usage(format!("cannot read {path}: {e}")))?;
        } else {
            files.push(p.to_owned());
        }
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", f.display())))?;
            texts.push((f.display().to_string(), text));
        }
    }
    Ok(texts)
}

/// Validates every document of every file first (nothing is applied if any is invalid),
/// then creates what is missing and replaces what differs, printing one line per object.
pub async fn apply(client: &Client, files: &[String], namespace: Option<&str>) -> Result<(), Failure> {
    let mut resources = Vec::new();
    let mut problems = Vec::new();
    for (name, text) in manifest_texts(files)? {
        match manifest::parse(&text) {
            Ok(rs) => resources.extend(rs.into_iter().map(|r| (name.clone(), r))),
            Err(errors) => problems.extend(errors.iter().map(|e| format!("{name}: {e}"))),
        }
    }
    if !problems.is_empty() {
        return Err(Failure::Invalid(problems));
    }
    if resources.is_empty() {
        return Err(Failure::Usage("no resources found in the given files".to_owned()));
    }
    for (_, resource) in resources {
        let kind = kind_of(&resource);
        let mut value = resource_json(&resource);
        let ns = value["metadata"]["namespace"]
            .as_str()
            .map(str::to_owned)
            .or(namespace.map(str::to_owned))
            .unwrap_or_else(|| "default".to_owned());
        if kind.namespaced {
            value["metadata"]["namespace"] = Value::String(ns.clone());
        }
        let name = resource.name().to_owned();
        let coll = collection(kind, Some(&ns));
        let one = format!("{coll}/{name}");
        let label = format!("{}.edgeplane.io/{name}", kind.kind.to_lowercase());
        // The replace is conditional on the version read; the scheduler writes Workload and
        // EdgeNode status at any time, which moves that version on. A conflict means: read
        // again and decide again.
        let mut attempts = 0;
        let verb = loop {
            attempts += 1;
            match client.call::<Value>(Method::GET, &one, &[], None).await {
                Err(Failure::Refused(s)) if s.code == 404 => {
                    client.call::<Value>(Method::POST, &coll, &[], Some(value.to_string())).await?;
                    break "created";
                }
                Err(e) => return Err(e),
                Ok((_, current)) if same_desired_state(&current, &value) => break "unchanged",
                Ok((_, current)) => {
                    value["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
                    match client.call::<Value>(Method::PUT, &one, &[], Some(value.to_string())).await {
                        Ok(_) => break "configured",
                        Err(Failure::Refused(s)) if s.code == 409 && attempts < 5 => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        outln!("{label} {verb}");
    }
    Ok(())
}

fn resource_json(resource: &Resource) -> Value {
    match resource {
        Resource::EdgeNode(r) => serde_json::to_value(r),
        Resource::Module(r) => serde_json::to_value(r),
        Resource::Workload(r) => serde_json::to_value(r),
        Resource::Model(r) => serde_json::to_value(r),
        Resource::Role(r) => serde_json::to_value(r),
        Resource::ClusterRole(r) => serde_json::to_value(r),
        Resource::RoleBinding(r) => serde_json::to_value(r),
        Resource::ClusterRoleBinding(r) => serde_json::to_value(r),
        Resource::ServiceAccount(r) => serde_json::to_value(r),
        Resource::SinkPolicy(r) => serde_json::to_value(r),
        Resource::ClusterSinkPolicy(r) => serde_json::to_value(r),
        Resource::TrustPolicy(r) => serde_json::to_value(r),
    }
    .expect("resources serialize")
}

/// Whether applying `desired` would change `current`: the spec, labels and annotations.
fn same_desired_state(current: &Value, desired: &Value) -> bool {
    let part = |v: &Value, p: &str| v.pointer(p).cloned().filter(|x| !x.is_null() && x != &Value::Object(Default::default()));
    ["/spec", "/metadata/labels", "/metadata/annotations"].iter().all(|p| part(current, p) == part(desired, p))
}

pub struct GetArgs<'a> {
    pub kind: &'a str,
    pub name: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub all_namespaces: bool,
    pub selector: Option<&'a str>,
    pub output: &'a str,
}

pub async fn get(client: &Client, args: GetArgs<'_>) -> Result<(), Failure> {
    let kind = kind_named(args.kind)?;
    let ns = if args.all_namespaces { None } else { Some(args.namespace.unwrap_or("default")) };
    let (items, single) = match args.name {
        Some(name) => {
            let path = format!("{}/{name}", collection(kind, ns.or(Some("default"))));
            let (_, v) = client.call::<Value>(Method::GET, &path, &[], None).await?;
            (vec![v], true)
        }
        None => {
            let query: Vec<(&str, String)> = args.selector.map(|s| ("labelSelector", s.to_owned())).into_iter().collect();
            let (_, list) = client.call::<Value>(Method::GET, &collection(kind, ns), &query, None).await?;
            (list["items"].as_array().cloned().unwrap_or_default(), false)
        }
    };
    match args.output {
        "json" if single => outln!("{}", serde_json::to_string_pretty(&items[0]).expect("json")),
        "json" => outln!("{}", serde_json::to_string_pretty(&items).expect("json")),
        "yaml" => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    outln!("---");
                }
                out!("{}", serde_yaml::to_string(item).expect("yaml"));
            }
        }
        other => print_table(kind, &items, other == "wide", ns),
    }
    Ok(())
}

/// `namespace`: the one listed (`None`: every namespace, shown in a column). The columns are
/// `edgeplane_api::table`'s, the ones kubectl shows too.
fn print_table(kind: ResourceKind, items: &[Value], wide: bool, namespace: Option<&str>) {
    let with_namespace = namespace.is_none() && kind.namespaced;
    let shown: Vec<bool> = table::columns(kind).iter().map(|c| wide || c.priority == 0).collect();
    let mut header: Vec<&str> = if with_namespace { vec!["NAMESPACE"] } else { Vec::new() };
    header.extend(table::columns(kind).iter().zip(&shown).filter(|(_, shown)| **shown).map(|(c, _)| c.name));
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|v| {
            let namespace = with_namespace.then(|| v.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_owned());
            namespace
                .into_iter()
                .chain(table::cells(kind, v).into_iter().zip(&shown).filter(|(_, shown)| **shown).map(|(c, _)| c))
                .collect()
        })
        .collect();
    if rows.is_empty() {
        match namespace.filter(|_| kind.namespaced) {
            Some(ns) => eprintln!("No {} found in namespace {ns}.", kind.plural),
            None => eprintln!("No {} found.", kind.plural),
        }
        return;
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0)).collect();
    let line = |cells: Vec<String>| cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("   ");
    outln!("{}", line(header.iter().map(|h| (*h).to_owned()).collect()).trim_end());
    for r in rows {
        outln!("{}", line(r).trim_end());
    }
}

pub async fn delete(client: &Client, kind: &str, name: &str, namespace: Option<&str>) -> Result<(), Failure> {
    let kind = kind_named(kind)?;
    let path = format!("{}/{name}", collection(kind, Some(namespace.unwrap_or("default"))));
    let (code, _) = client.call::<Value>(Method::DELETE, &path, &[], None).await?;
    debug_assert_eq!(code, StatusCode::OK);
    outln!("{}.edgeplane.io/{name} deleted", kind.kind.to_lowercase());
    Ok(())
}

/// Follows changes until interrupted. When a server goes away, resumes (through the client's
/// failover, on whichever orchestrator answers) from the last resourceVersion seen, so no
/// event is missed or repeated; when the history no longer reaches that far back (410), lists
/// again. A whole kind is watched: `args.name` is not used (the command line does not allow
/// one with a watch).
pub async fn watch(client: &Client, args: GetArgs<'_>) -> Result<(), Failure> {
    use edgeplane_api::watch::{WatchEvent, WatchEventType};
    use futures::StreamExt as _;
    let kind = kind_named(args.kind)?;
    let ns = if args.all_namespaces { None } else { Some(args.namespace.unwrap_or("default")) };
    let path = collection(kind, ns);
    let mut cursor = Cursor::default();
    loop {
        let mut query: Vec<(&str, String)> = vec![("watch", "true".to_owned())];
        if let Some(v) = cursor.from {
            query.push(("resourceVersion", v.to_string()));
        }
        if let Some(s) = args.selector {
            query.push(("labelSelector", s.to_owned()));
        }
        let request = Request::get(crate::with_query(&path, &query)).attempt_timeout(std::time::Duration::from_secs(365 * 24 * 3600));
        let (server, response) = match client.inner.open(request).await.map_err(crate::unreachable)? {
            Ok(live) => live,
            Err(answer) if answer.status == StatusCode::GONE => {
                eprintln!("# {}: history does not reach resourceVersion {:?}; listing again", answer.server, cursor.from);
                cursor = Cursor::default();
                continue;
            }
            Err(answer) => return Err(Failure::Refused(Box::new(answer.status_error()))),
        };
        let mut stream = response.bytes_stream();
        let mut buffer = Vec::new();
        let mut relist = false;
        'stream: while let Some(Ok(chunk)) = stream.next().await {
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<WatchEvent>(&line) else { continue };
                match event.type_ {
                    WatchEventType::Error => {
                        eprintln!("# {server}: {}; listing again", event.object["message"].as_str().unwrap_or("watch ended"));
                        relist = true;
                        break 'stream;
                    }
                    WatchEventType::Bookmark => cursor.bookmark(event.resource_version()),
                    _ => {
                        if cursor.first_time(&event) {
                            print_event(&event, args.output);
                        }
                    }
                }
            }
        }
        if relist {
            cursor = Cursor::default();
        } else {
            eprintln!("# lost {server}; resuming from resourceVersion {:?}", cursor.from);
        }
    }
}

/// Where a watch resumes, so that no change is missed or shown twice. The events of one write
/// share its resourceVersion and a stream may break between them: after an event at version
/// V the watch resumes from V - 1 and skips the events at V it has shown already.
#[derive(Debug, Default)]
struct Cursor {
    /// `None`: list first.
    from: Option<u64>,
    /// The version of the last event shown, and the objects shown at it.
    shown_at: Option<(u64, std::collections::BTreeSet<String>)>,
}

impl Cursor {
    /// The listing is complete up to the bookmark's version: resume right after it.
    fn bookmark(&mut self, version: Option<u64>) {
        if let Some(v) = version {
            self.from = Some(v);
            self.shown_at = None;
        }
    }

    /// Whether the event is new to this watch; records it. Events of the initial listing carry
    /// their objects' own versions and do not move the cursor (the bookmark does).
    fn first_time(&mut self, event: &edgeplane_api::watch::WatchEvent) -> bool {
        let Some(version) = event.resource_version() else { return true };
        if self.from.is_none() {
            return true;
        }
        let o = &event.object;
        let key = format!(
            "{}/{}/{}",
            event.type_.as_str(),
            o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(""),
            o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
        );
        match &mut self.shown_at {
            Some((at, keys)) if *at == version => {
                if !keys.insert(key) {
                    return false;
                }
            }
            Some((at, _)) if version < *at => return false,
            _ => self.shown_at = Some((version, [key].into())),
        }
        self.from = Some(version.saturating_sub(1));
        true
    }
}

fn print_event(event: &edgeplane_api::watch::WatchEvent, output: &str) {
    if output == "json" {
        outln!("{}", serde_json::to_string(event).expect("json"));
        return;
    }
    let o = &event.object;
    let ns = o.pointer("/metadata/namespace").and_then(Value::as_str).map(|n| format!("{n}/")).unwrap_or_default();
    outln!(
        "{:<9} {}/{}{}  rv={}",
        event.type_.as_str(),
        o["kind"].as_str().unwrap_or("").to_lowercase(),
        ns,
        o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""),
        o.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("")
    );
}

/// Spec, status, conditions and recent changes of one object, for people.
pub async fn describe(client: &Client, kind: &str, name: &str, namespace: Option<&str>) -> Result<(), Failure> {
    let kind = kind_named(kind)?;
    let path = format!("{}/{name}", collection(kind, Some(namespace.unwrap_or("default"))));
    let (_, object) = client.call::<Value>(Method::GET, &path, &[], None).await?;
    let (_, events) = client.call::<Value>(Method::GET, &format!("{path}/events"), &[], None).await?;
    let meta = &object["metadata"];
    let field = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    outln!("Name:              {}", field(&meta["name"]));
    if kind.namespaced {
        outln!("Namespace:         {}", field(&meta["namespace"]));
    }
    outln!("Kind:              {}", kind.kind);
    let labels = meta["labels"].as_object().map_or_else(Vec::new, |m| m.iter().map(|(k, v)| format!("{k}={}", field(v))).collect());
    outln!("Labels:            {}", if labels.is_empty() { "<none>".to_owned() } else { labels.join(", ") });
    outln!("Created:           {}", field(&meta["creationTimestamp"]));
    outln!("Generation:        {}", field(&meta["generation"]));
    outln!("ResourceVersion:   {}", field(&meta["resourceVersion"]));
    outln!("Spec:");
    for line in serde_yaml::to_string(&object["spec"]).expect("yaml").lines() {
        outln!("  {line}");
    }
    let conditions = object.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    match object.get("status") {
        Some(status) if !status.is_null() => {
            outln!("Status:");
            let mut rest = status.clone();
            if let Some(m) = rest.as_object_mut() {
                m.remove("conditions");
            }
            if rest.as_object().is_some_and(|m| !m.is_empty()) {
                for line in serde_yaml::to_string(&rest).expect("yaml").lines() {
                    outln!("  {line}");
                }
            }
        }
        _ => outln!("Status:            <not reported yet>"),
    }
    if !conditions.is_empty() {
        outln!("Conditions:");
        outln!("  {:<14} {:<8} {:<20} MESSAGE", "TYPE", "STATUS", "REASON");
        for c in conditions {
            outln!(
                "  {:<14} {:<8} {:<20} {}",
                field(&c["type"]),
                field(&c["status"]),
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            );
        }
    }
    let items = events["items"].as_array().cloned().unwrap_or_default();
    outln!("History (recent changes recorded by the answering orchestrator):");
    if items.is_empty() {
        outln!("  <none in this orchestrator's history>");
    }
    for e in items {
        outln!("  {:<9} rv={:<8} {}", field(&e["type"]), field(&e["resourceVersion"]), field(&e["message"]));
    }
    // What the scheduler and health checks decided about it (Events, kept an hour).
    let events_namespace = if kind.namespaced { namespace.unwrap_or("default") } else { "default" };
    let selector = format!("involvedObject.kind={},involvedObject.name={name}", kind.kind);
    let (_, decided) = client
        .call::<Value>(Method::GET, &format!("/api/v1/namespaces/{events_namespace}/events"), &[("fieldSelector", selector)], None)
        .await?;
    let mut decided = decided["items"].as_array().cloned().unwrap_or_default();
    decided.sort_by(|a, b| field(&a["lastTimestamp"]).cmp(&field(&b["lastTimestamp"])));
    outln!("Events:");
    if decided.is_empty() {
        outln!("  <none>");
    } else {
        outln!("  {:<8} {:<18} {:<6} {:<21} MESSAGE", "TYPE", "REASON", "COUNT", "LAST SEEN");
    }
    for e in decided {
        outln!(
            "  {:<8} {:<18} {:<6} {:<21} {}",
            field(&e["type"]),
            field(&e["reason"]),
            field(&e["count"]),
            field(&e["lastTimestamp"]),
            field(&e["message"])
        );
    }
    Ok(())
}
