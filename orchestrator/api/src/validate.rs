//! What types cannot say about a resource: name and label syntax, positive counts, references
//! that must parse, fields that exclude each other. Each function returns every problem.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::manifest::FieldError;
use crate::resources::{
    EdgeNode, Model, Module, PolicyRule, RbacSubject, RoleKind, RoleRef, SinkType, SubjectKind, Workload, WorkloadMode, VERBS,
};

/// The guest ABI versions the edge runtime implements.
pub const SUPPORTED_ABIS: &[&str] = &["edgeplane/v1"];

type Problems = Vec<FieldError>;

fn push(p: &mut Problems, field: impl Into<String>, message: impl Into<String>) {
    p.push(FieldError::new(field, message));
}

/// Kubernetes DNS subdomain (object names): lowercase alphanumerics, '-' and '.', at most 253.
pub fn dns_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 253 {
        return Err(format!("must be 1 to 253 characters, got {}", value.len()));
    }
    if !value.split('.').all(|part| dns_label(part).is_ok()) {
        return Err(format!(
            "{value:?} must be lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Kubernetes DNS label (namespaces): lowercase alphanumerics and '-', at most 63.
pub fn dns_label(value: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if value.is_empty() || value.len() > 63 {
        return Err(format!("must be 1 to 63 characters, got {}", value.len()));
    }
    if !value.chars().all(|c| alnum(c) || c == '-') || !value.starts_with(alnum) || !value.ends_with(alnum) {
        return Err(format!("{value:?} must be lowercase letters, digits and '-', starting and ending with a letter or digit"));
    }
    Ok(())
}

/// Label key: `[prefix/]name`, prefix a DNS subdomain, name at most 63 of [A-Za-z0-9-_.].
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        dns_subdomain(p).map_err(|e| format!("prefix {e}"))?;
    }
    label_value(name).and_then(|()| if name.is_empty() { Err("the name part must not be empty".to_owned()) } else { Ok(()) })
}

/// Label value: empty, or at most 63 of [A-Za-z0-9-_.] starting and ending alphanumeric.
pub fn label_value(value: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63
        || !value.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        || !value.starts_with(alnum)
        || !value.ends_with(alnum)
    {
        return Err(format!("{value:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"));
    }
    Ok(())
}

/// Longest version accepted (edge runtimes store the Model's version with every record).
pub const MAX_VERSION_LEN: usize = 128;

/// `MAJOR.MINOR.PATCH`, optionally followed by `-prerelease`; at most [`MAX_VERSION_LEN`] bytes.
pub fn semver(value: &str) -> Result<(), String> {
    if value.len() > MAX_VERSION_LEN {
        return Err(format!("must be a version of at most {MAX_VERSION_LEN} bytes, got {}", value.len()));
    }
    let core = value.split_once('-').map_or(value, |(c, _)| c);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
        Ok(())
    } else {
        Err(format!("{value:?} must be a version like 1.2.0"))
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn digest(value: &str) -> Result<(), String> {
    match value.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) => Ok(()),
        _ => Err(format!("{value:?} must be sha256: followed by 64 lowercase hex digits")),
    }
}

/// Capabilities and topics: dotted, slashed lowercase names like `sensor.temperature` or
/// `line-a/temperature`.
fn dotted_name(value: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if value.is_empty()
        || value.len() > 253
        || !value.chars().all(|c| alnum(c) || matches!(c, '.' | '-' | '_' | '/'))
        || !value.starts_with(alnum)
        || !value.ends_with(alnum)
    {
        return Err(format!(
            "{value:?} must be lowercase letters, digits, '.', '-', '_' or '/', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn metadata(meta: &ObjectMeta, namespaced: bool, p: &mut Problems) {
    match meta.name.as_deref() {
        None => push(p, "metadata.name", "required"),
        Some(name) => {
            if let Err(e) = dns_subdomain(name) {
                push(p, "metadata.name", e);
            }
        }
    }
    match (&meta.namespace, namespaced) {
        (Some(ns), true) => {
            if let Err(e) = dns_label(ns) {
                push(p, "metadata.namespace", e);
            }
        }
        (Some(_), false) => push(p, "metadata.namespace", "must not be set: this kind is cluster-scoped"),
        (None, _) => {}
    }
    for (key, value) in meta.labels.iter().flatten() {
        if let Err(e) = label_key(key) {
            push(p, format!("metadata.labels.{key}"), format!("invalid key: {e}"));
        }
        if let Err(e) = label_value(value) {
            push(p, format!("metadata.labels.{key}"), e);
        }
    }
}

fn unique_names<'a>(values: impl IntoIterator<Item = &'a String>, path: &str, check: fn(&str) -> Result<(), String>, p: &mut Problems) {
    let mut seen = BTreeSet::new();
    for (i, v) in values.into_iter().enumerate() {
        if let Err(e) = check(v) {
            push(p, format!("{path}[{i}]"), e);
        }
        if !seen.insert(v) {
            push(p, format!("{path}[{i}]"), format!("{v:?} is listed twice"));
        }
    }
}

pub fn edge_node(node: &EdgeNode) -> Problems {
    let mut p = Vec::new();
    metadata(&node.metadata, false, &mut p);
    let s = &node.spec;
    unique_names(&s.capabilities, "spec.capabilities", dotted_name, &mut p);
    if s.capacity.memory_mib == 0 {
        push(&mut p, "spec.capacity.memoryMib", "must be >= 1");
    }
    if s.capacity.instance_slots == 0 {
        push(&mut p, "spec.capacity.instanceSlots", "must be >= 1");
    }
    if s.capacity.cpu_millis == 0 {
        push(&mut p, "spec.capacity.cpuMillis", "must be >= 1");
    }
    for (i, t) in s.taints.iter().enumerate() {
        if let Err(e) = label_key(&t.key) {
            push(&mut p, format!("spec.taints[{i}].key"), e);
        }
        if let Err(e) = label_value(&t.value) {
            push(&mut p, format!("spec.taints[{i}].value"), e);
        }
    }
    p
}

pub fn module(module: &Module) -> Problems {
    let mut p = Vec::new();
    metadata(&module.metadata, true, &mut p);
    let s = &module.spec;
    if let Err(e) = semver(&s.version) {
        push(&mut p, "spec.version", e);
    }
    if let Err(e) = digest(&s.digest) {
        push(&mut p, "spec.digest", e);
    }
    if s.size_bytes == 0 {
        push(&mut p, "spec.sizeBytes", "must be >= 1");
    }
    if !SUPPORTED_ABIS.contains(&s.abi.as_str()) {
        push(&mut p, "spec.abi", format!("must be one of {}, got {:?}", SUPPORTED_ABIS.join(", "), s.abi));
    }
    p
}

/// A module reference: `name@version` or a digest.
pub fn module_ref(value: &str) -> Result<(), String> {
    if value.starts_with("sha256:") {
        return digest(value);
    }
    let Some((name, version)) = value.split_once('@') else {
        return Err(format!("{value:?} must be name@version (e.g. temp-filter@1.0.0) or sha256:<digest>"));
    };
    dns_subdomain(name).map_err(|e| format!("module name {e}"))?;
    semver(version)
}

pub fn workload(w: &Workload) -> Problems {
    let mut p = Vec::new();
    metadata(&w.metadata, true, &mut p);
    let s = &w.spec;
    if let Err(e) = module_ref(&s.module) {
        push(&mut p, "spec.module", e);
    }
    match (s.replicas, s.mode) {
        (Some(n), _) if n < 0 => push(&mut p, "spec.replicas", format!("must be >= 0, got {n}")),
        (Some(n), _) if n > 10_000 => push(&mut p, "spec.replicas", format!("must be <= 10000, got {n}")),
        (Some(_), WorkloadMode::Daemon) => {
            push(&mut p, "spec.replicas", "must not be set with mode: daemon (one replica per matching node)")
        }
        _ => {}
    }
    let pl = &s.placement;
    for (key, value) in &pl.node_selector {
        if let Err(e) = label_key(key) {
            push(&mut p, format!("spec.placement.nodeSelector.{key}"), format!("invalid key: {e}"));
        }
        if let Err(e) = label_value(value) {
            push(&mut p, format!("spec.placement.nodeSelector.{key}"), e);
        }
    }
    unique_names(&pl.required_capabilities, "spec.placement.requiredCapabilities", dotted_name, &mut p);
    for (i, t) in pl.tolerations.iter().enumerate() {
        if let Err(e) = label_key(&t.key) {
            push(&mut p, format!("spec.placement.tolerations[{i}].key"), e);
        }
    }
    if let Some(key) = &pl.spread_by {
        if let Err(e) = label_key(key) {
            push(&mut p, "spec.placement.spreadBy", e);
        }
    }
    if s.resources.memory_mib == 0 {
        push(&mut p, "spec.resources.memoryMib", "must be >= 1");
    }
    if !(1..=60_000).contains(&s.resources.batch_time_ms) {
        push(&mut p, "spec.resources.batchTimeMs", format!("must be between 1 and 60000, got {}", s.resources.batch_time_ms));
    }
    unique_names(&s.inputs, "spec.inputs", dotted_name, &mut p);
    let mut names = BTreeSet::new();
    for (i, o) in s.outputs.iter().enumerate() {
        let path = format!("spec.outputs[{i}]");
        if let Err(e) = dotted_name(&o.name) {
            push(&mut p, format!("{path}.name"), e);
        }
        if !names.insert(&o.name) {
            push(&mut p, format!("{path}.name"), format!("{:?} is used by two outputs", o.name));
        }
        match (&o.topic, &o.sink) {
            (Some(_), Some(_)) | (None, None) => push(&mut p, path.clone(), "needs exactly one of topic or sink"),
            (Some(topic), None) => {
                if let Err(e) = dotted_name(topic) {
                    push(&mut p, format!("{path}.topic"), e);
                }
            }
            (None, Some(sink)) => {
                let sp = format!("{path}.sink");
                match (sink.type_, &sink.topic, &sink.url) {
                    (SinkType::Mqtt, None, _) => push(&mut p, format!("{sp}.topic"), "required for an mqtt sink"),
                    (SinkType::Http, _, None) => push(&mut p, format!("{sp}.url"), "required for an http sink"),
                    (SinkType::Http, _, Some(url)) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                        push(&mut p, format!("{sp}.url"), format!("must start with http:// or https://, got {url:?}"))
                    }
                    _ => {}
                }
                if sink.type_ != SinkType::Mqtt && sink.topic.is_some() {
                    push(&mut p, format!("{sp}.topic"), "only an mqtt sink has a topic");
                }
                if sink.type_ != SinkType::Http && sink.url.is_some() {
                    push(&mut p, format!("{sp}.url"), "only an http sink has a url");
                }
            }
        }
    }
    if let Some(model) = &s.model_ref {
        if let Err(e) = dns_subdomain(model) {
            push(&mut p, "spec.modelRef", e);
        }
    }
    if s.failure_policy.restart_backoff_ms == 0 {
        push(&mut p, "spec.failurePolicy.restartBackoffMs", "must be >= 1");
    }
    if s.rollout.max_unavailable == 0 {
        push(&mut p, "spec.rollout.maxUnavailable", "must be >= 1, or a rollout could never start");
    }
    p
}

pub fn model(m: &Model) -> Problems {
    let mut p = Vec::new();
    metadata(&m.metadata, true, &mut p);
    let s = &m.spec;
    if let Err(e) = semver(&s.version) {
        push(&mut p, "spec.version", e);
    }
    if s.format.is_empty() {
        push(&mut p, "spec.format", "required, e.g. zscore-logistic/v1");
    }
    if s.format == crate::resources::MODEL_FORMAT_ONNX {
        if !s.parameters.is_empty() {
            push(&mut p, "spec.parameters", "an onnx model has its parameters in its file; leave this out");
        }
        match &s.artifact {
            None => push(&mut p, "spec.artifact", "required for format onnx: push the file with `edgectl model push`"),
            Some(a) => {
                if let Err(e) = digest(&a.digest) {
                    push(&mut p, "spec.artifact.digest", e);
                }
                if a.backends.is_empty() {
                    push(&mut p, "spec.artifact.backends", "no inference backend can run this model");
                }
                if let Some(b) = a.backends.iter().find(|b| !["tract", "onnxruntime"].contains(&b.as_str())) {
                    push(&mut p, "spec.artifact.backends", format!("unknown backend {b:?} (tract or onnxruntime)"));
                }
            }
        }
    } else {
        if s.parameters.is_empty() {
            push(&mut p, "spec.parameters", "must name at least one parameter vector");
        }
        if s.artifact.is_some() {
            push(&mut p, "spec.artifact", format!("only onnx models have a file; format {} has parameters", s.format));
        }
    }
    for (name, values) in &s.parameters {
        if let Err(e) = dotted_name(name) {
            push(&mut p, format!("spec.parameters.{name}"), format!("invalid name: {e}"));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            push(&mut p, format!("spec.parameters.{name}[{i}]"), format!("must be a finite number, got {}", values[i]));
        }
    }
    p
}

/// A resource with nothing to check but its metadata (a ServiceAccount).
pub fn named(meta: &ObjectMeta, namespaced: bool) -> Problems {
    let mut p = Vec::new();
    metadata(meta, namespaced, &mut p);
    p
}

/// A Role's or ClusterRole's rules: known verbs, resources named as plurals.
pub fn role(meta: &ObjectMeta, rules: &[PolicyRule], namespaced: bool) -> Problems {
    let mut p = Vec::new();
    metadata(meta, namespaced, &mut p);
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if rule.verbs.is_empty() {
            push(&mut p, format!("{at}.verbs"), "must name at least one verb (or *)");
        }
        for (j, verb) in rule.verbs.iter().enumerate() {
            if verb != "*" && !VERBS.contains(&verb.as_str()) {
                push(&mut p, format!("{at}.verbs[{j}]"), format!("must be one of {}, or *; got {verb:?}", VERBS.join(", ")));
            }
        }
        if rule.resources.is_empty() {
            push(&mut p, format!("{at}.resources"), "must name at least one resource (or *)");
        }
        for (j, resource) in rule.resources.iter().enumerate() {
            let valid = resource == "*"
                || resource.split('/').count() <= 2
                    && resource.split('/').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
            if !valid {
                push(
                    &mut p,
                    format!("{at}.resources[{j}]"),
                    format!("must be a plural such as workloads, resource/subresource, or *; got {resource:?}"),
                );
            }
        }
    }
    p
}

/// A RoleBinding's or ClusterRoleBinding's role and subjects.
pub fn binding(meta: &ObjectMeta, role_ref: &RoleRef, subjects: &[RbacSubject], namespaced: bool) -> Problems {
    let mut p = Vec::new();
    metadata(meta, namespaced, &mut p);
    if !namespaced && role_ref.kind == RoleKind::Role {
        push(&mut p, "spec.roleRef.kind", "a ClusterRoleBinding can only bind a ClusterRole");
    }
    if let Err(e) = dns_subdomain(&role_ref.name) {
        push(&mut p, "spec.roleRef.name", e);
    }
    if subjects.is_empty() {
        push(&mut p, "spec.subjects", "must name at least one subject");
    }
    for (i, subject) in subjects.iter().enumerate() {
        let at = format!("spec.subjects[{i}]");
        if subject.name.is_empty() {
            push(&mut p, format!("{at}.name"), "required");
        }
        match (subject.kind, &subject.namespace) {
            (SubjectKind::ServiceAccount, None) if !namespaced => {
                push(&mut p, format!("{at}.namespace"), "required for a ServiceAccount in a ClusterRoleBinding")
            }
            (SubjectKind::ServiceAccount, Some(ns)) => {
                if let Err(e) = dns_label(ns) {
                    push(&mut p, format!("{at}.namespace"), e);
                }
            }
            (SubjectKind::User | SubjectKind::Group, Some(_)) => {
                push(&mut p, format!("{at}.namespace"), "only a ServiceAccount subject has a namespace")
            }
            _ => {}
        }
    }
    p
}

/// A sink policy's URL prefixes: absolute http(s) URLs with a host.
pub fn sink_policy(meta: &ObjectMeta, allow: &[String], namespaced: bool) -> Problems {
    let mut p = Vec::new();
    metadata(meta, namespaced, &mut p);
    for (i, prefix) in allow.iter().enumerate() {
        if let Err(e) = HttpUrl::parse(prefix) {
            push(&mut p, format!("spec.httpAllow[{i}]"), e);
        }
    }
    p
}

/// The parts of an http(s) URL a sink policy compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub scheme: String,
    /// Lowercase host (with brackets for IPv6) and explicit port.
    pub authority: String,
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("must be an absolute http:// or https:// URL, got {url:?}"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("must start with http:// or https://, got {url:?}")),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("must name a host (and no user info), got {url:?}"));
        }
        let authority = authority.to_ascii_lowercase();
        let has_port = authority.rsplit_once(':').is_some_and(|(_, port)| !port.contains(']'));
        let authority = if has_port { authority } else { format!("{authority}:{default_port}") };
        let path = path.split(['?', '#']).next().unwrap_or("/");
        Ok(HttpUrl { scheme, authority, path: if path.is_empty() { "/".to_owned() } else { path.to_owned() } })
    }

    /// Whether `self` (a sink URL) falls under `prefix` (a policy's entry): same scheme, host
    /// and port, and a path that starts with the prefix's.
    pub fn is_under(&self, prefix: &HttpUrl) -> bool {
        self.scheme == prefix.scheme
            && self.authority == prefix.authority
            && self.path.starts_with(&prefix.path)
            && !self.path.contains("/../")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_urls_match_policy_prefixes_by_scheme_host_port_and_path() {
        let prefix = HttpUrl::parse("http://10.0.0.5:8080/ingest/").expect("prefix");
        let allowed = |url: &str| HttpUrl::parse(url).is_ok_and(|u| u.is_under(&prefix));
        assert!(allowed("http://10.0.0.5:8080/ingest/a"));
        assert!(allowed("HTTP://10.0.0.5:8080/ingest/a?x=1"));
        for refused in [
            "https://10.0.0.5:8080/ingest/a",
            "http://10.0.0.5:8081/ingest/a",
            "http://10.0.0.5:8080/other",
            "http://10.0.0.5.evil.example:8080/ingest/a",
            "http://user@10.0.0.5:8080/ingest/a",
            "http://10.0.0.5:8080/ingest/../admin",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            assert!(!allowed(refused), "{refused}");
        }
        assert_eq!(HttpUrl::parse("http://example.com").map(|u| (u.authority, u.path)), Ok(("example.com:80".to_owned(), "/".to_owned())));
    }

    #[test]
    fn versions_are_semver_and_bounded() {
        for good in ["1.2.0", "0.0.1", "10.20.30-rc.1"] {
            assert_eq!(semver(good), Ok(()), "{good}");
        }
        for bad in ["1.2", "1.2.x", "v1.2.0", ""] {
            assert!(semver(bad).is_err(), "{bad:?} must be refused");
        }
        let long = format!("1.0.0-{}", "a".repeat(MAX_VERSION_LEN));
        assert_eq!(semver(&long), Err(format!("must be a version of at most 128 bytes, got {}", long.len())));
    }
}
