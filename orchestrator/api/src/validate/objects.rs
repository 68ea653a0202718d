//! The checks of whole resources: metadata, specs, and the references between their fields.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{digest, dns_label, dns_subdomain, label_key, label_value, module_ref, semver, HttpUrl, SUPPORTED_ABIS};
use crate::manifest::FieldError;
use crate::resources::{
    EdgeNode, Model, Module, PolicyRule, RbacSubject, RoleKind, RoleRef, SinkType, SubjectKind, TrustPolicySpec, Workload, WorkloadMode,
    VERBS,
};

type Problems = Vec<FieldError>;

fn push(p: &mut Problems, field: impl Into<String>, message: impl Into<String>) {
    p.push(FieldError::new(field, message));
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

/// A TrustPolicy: its keys named once each and written as `ed25519:` and the base64 of 32
/// bytes, each kind listed once, and at least one key where it requires signatures.
pub fn trust_policy(meta: &ObjectMeta, spec: &TrustPolicySpec) -> Problems {
    let mut p = Vec::new();
    metadata(meta, true, &mut p);
    if spec.require_signatures && spec.keys.is_empty() {
        push(&mut p, "spec.keys", "name at least one key: a policy that requires signatures and trusts no key refuses everything");
    }
    let mut names = BTreeSet::new();
    for (i, key) in spec.keys.iter().enumerate() {
        if let Err(e) = dns_subdomain(&key.name) {
            push(&mut p, format!("spec.keys[{i}].name"), e);
        }
        if !names.insert(&key.name) {
            push(&mut p, format!("spec.keys[{i}].name"), format!("{:?} is listed twice", key.name));
        }
        if let Err(e) = ed25519_public_key(&key.public_key) {
            push(&mut p, format!("spec.keys[{i}].publicKey"), e);
        }
        let kinds: BTreeSet<_> = key.artifacts.iter().collect();
        if kinds.len() != key.artifacts.len() {
            push(&mut p, format!("spec.keys[{i}].artifacts"), "lists a kind twice");
        }
    }
    p
}

/// `ed25519:` and the standard base64 of 32 bytes (44 characters, one `=` of padding).
fn ed25519_public_key(value: &str) -> Result<(), String> {
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
    let encoded = value.strip_prefix("ed25519:").ok_or_else(|| format!("{value:?} must start with \"ed25519:\""))?;
    let well_formed = encoded.len() == 44 && encoded[..43].chars().all(b64) && encoded.ends_with('=');
    if !well_formed {
        return Err(format!("{value:?} must be ed25519: and the base64 of a 32-byte key, as `edgectl key create` prints it"));
    }
    Ok(())
}
