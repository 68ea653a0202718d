//! Who may do what: Kubernetes-style RBAC over the replicated roles and bindings, the
//! built-in roles, and the node authorizer that confines an edge node to its own work.
//!
//! Default deny: a request is allowed only when a rule says so. Pure: a decision is a function
//! of the state, the caller and the action.
//!
//! - Built-in ClusterRoles (always there, not stored): `cluster-admin` (everything),
//!   `operator` (Workloads, Modules and Models; reads of nodes, Assignments and data),
//!   `viewer` (reads of everything but credentials and the audit log), and `node` (the node
//!   authorizer below; binding it grants nothing else).
//! - Built-in binding: the group `edgeplane:cluster-admins` has `cluster-admin`.
//! - A RoleBinding grants its role's rules in its namespace (a ClusterRole's too); a
//!   ClusterRoleBinding grants a ClusterRole's rules everywhere and on cluster-wide resources.
//! - Nodes (`system:node:<name>`) are decided by [`node_may`] alone: their own Assignments,
//!   the module and model blobs those reference, their own EdgeNode, heartbeats, certificate and
//!   uploads. RBAC grants nodes nothing, so a binding cannot widen what a node may do.

use edgeplane_api::node::NODE_LABEL;
use edgeplane_api::resources::{PolicyRule, RbacSubject, RoleKind, RoleRef, SubjectKind};
use edgeplane_api::selector::LabelSelector;
use serde::Deserialize;

use crate::{ClusterState, ObjectKey};

pub use edgeplane_api::auth::CLUSTER_ADMINS_GROUP;
/// Every authenticated caller is in this group.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The built-in ClusterRoles.
pub const BUILTIN_ROLES: &[&str] = &["cluster-admin", "operator", "viewer", "node"];

/// Who is asking, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user name (`system:anonymous` for nobody).
    pub user: String,
    pub groups: Vec<String>,
    pub identity: Identity,
}

/// What kind of party a caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    /// A client certificate of a person or program.
    User,
    ServiceAccount {
        namespace: String,
        name: String,
    },
    /// An enrolled edge node, by its certificate.
    Node {
        name: String,
    },
    /// Another orchestrator, by its member certificate.
    Orchestrator {
        id: u64,
    },
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller { user: "system:anonymous".to_owned(), groups: vec!["system:unauthenticated".to_owned()], identity: Identity::Anonymous }
    }

    pub fn is_authenticated(&self) -> bool {
        self.identity != Identity::Anonymous
    }

    /// The node's name, when the caller is an edge node.
    pub fn node(&self) -> Option<&str> {
        match &self.identity {
            Identity::Node { name } => Some(name),
            _ => None,
        }
    }
}

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch` or `delete`.
    pub verb: &'a str,
    /// A plural (`workloads`), or `plural/subresource` (`edgenodes/status`).
    pub resource: &'a str,
    /// `None` for cluster-wide resources, and for requests across every namespace.
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    /// The label selector of a list or watch.
    pub label_selector: Option<&'a str>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

/// Decides whether `caller` may do `action`.
pub fn authorize(state: &ClusterState, caller: &Caller, action: &Action<'_>) -> Result<(), Denied> {
    match &caller.identity {
        Identity::Anonymous => Err(Denied("anonymous requests may not do this; authenticate with a certificate or a token".to_owned())),
        Identity::Node { name } => node_may(state, name, action),
        // Orchestrators read each other's audit log (to fill gaps in their archives) and the
        // leader's heartbeat figures (a follower answering `GET /v1/heartbeats`).
        Identity::Orchestrator { .. }
            if matches!((action.verb, action.resource), ("get", "auditlog") | ("list", "edgenodes/heartbeat")) =>
        {
            Ok(())
        }
        Identity::Orchestrator { .. } => {
            Err(Denied("orchestrators may only read each other's audit log and the leader's heartbeat figures".to_owned()))
        }
        Identity::User | Identity::ServiceAccount { .. } => {
            if rbac_allows(state, caller, action) {
                Ok(())
            } else {
                Err(Denied(format!("{} may not {} {}{}", caller.user, action.verb, describe(action), where_(action))))
            }
        }
    }
}

fn describe(action: &Action<'_>) -> String {
    match action.name {
        Some(name) => format!("{} {name:?}", action.resource),
        None => action.resource.to_owned(),
    }
}

fn where_(action: &Action<'_>) -> String {
    action.namespace.map(|ns| format!(" in namespace {ns}")).unwrap_or_default()
}

/// What an edge node may do: only what concerns itself.
pub fn node_may(state: &ClusterState, node: &str, action: &Action<'_>) -> Result<(), Denied> {
    let deny = |why: &str| Err(Denied(format!("node {node} may not {} {}: {why}", action.verb, describe(action))));
    let own_name = action.name == Some(node);
    match (action.resource, action.verb) {
        ("assignments", "get") => {
            let (Some(ns), Some(name)) = (action.namespace, action.name) else { return deny("name one Assignment") };
            match state.get(&ObjectKey::new("assignments", ns, name)) {
                Some(o) if o.value.pointer("/spec/nodeName").and_then(|v| v.as_str()) == Some(node) => Ok(()),
                _ => deny("it is not assigned to this node"),
            }
        }
        ("assignments", "list" | "watch") => {
            let pinned = action.label_selector.and_then(|s| LabelSelector::parse(s).ok()).is_some_and(|s| s.pins(NODE_LABEL, node));
            if pinned {
                Ok(())
            } else {
                deny(&format!("a node lists only its own Assignments (labelSelector {NODE_LABEL}={node})"))
            }
        }
        ("blobs", "get") => {
            let Some(digest) = action.name else { return deny("name one blob") };
            let wanted = digest.trim_start_matches("sha256:");
            let is_wanted =
                |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).is_some_and(|d| d.trim_start_matches("sha256:") == wanted);
            // Its modules, and the model files its instances run.
            let referenced = state.list("assignments", None).any(|(_, o)| {
                o.value.pointer("/spec/nodeName").and_then(|v| v.as_str()) == Some(node)
                    && (is_wanted(o.value.pointer("/spec/moduleDigest")) || is_wanted(o.value.pointer("/spec/model/artifact/digest")))
            });
            if referenced {
                Ok(())
            } else {
                deny("none of its Assignments uses it")
            }
        }
        ("edgenodes", "get") if own_name => Ok(()),
        ("edgenodes/status", "get" | "update" | "patch") if own_name => Ok(()),
        ("edgenodes/heartbeat" | "edgenodes/data" | "edgenodes/certificate", "create") if own_name => Ok(()),
        _ => deny("nodes may act only on their own Assignments, EdgeNode, heartbeats, certificate and uploads"),
    }
}

fn rbac_allows(state: &ClusterState, caller: &Caller, action: &Action<'_>) -> bool {
    if caller.groups.iter().any(|g| g == CLUSTER_ADMINS_GROUP) {
        return true;
    }
    let grants = |role_ref: &RoleRef, binding_namespace: Option<&str>| -> bool {
        let rules = match (role_ref.kind, binding_namespace) {
            (RoleKind::ClusterRole, _) => cluster_role_rules(state, &role_ref.name),
            (RoleKind::Role, Some(ns)) => stored_rules(state, "roles", ns, &role_ref.name),
            (RoleKind::Role, None) => Vec::new(),
        };
        rules.iter().any(|rule| rule_matches(rule, action))
    };
    for (_, object) in state.list("clusterrolebindings", None) {
        if let Some(binding) = spec::<BindingSpec>(&object.value) {
            if binding.subjects.iter().any(|s| subject_matches(s, caller, None)) && grants(&binding.role_ref, None) {
                return true;
            }
        }
    }
    let Some(namespace) = action.namespace else { return false };
    for (_, object) in state.list("rolebindings", Some(namespace)) {
        if let Some(binding) = spec::<BindingSpec>(&object.value) {
            if binding.subjects.iter().any(|s| subject_matches(s, caller, Some(namespace))) && grants(&binding.role_ref, Some(namespace)) {
                return true;
            }
        }
    }
    false
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BindingSpec {
    role_ref: RoleRef,
    subjects: Vec<RbacSubject>,
}

#[derive(Deserialize)]
struct RulesSpec {
    rules: Vec<PolicyRule>,
}

fn spec<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Option<T> {
    value.get("spec").and_then(|s| T::deserialize(s).ok())
}

fn stored_rules(state: &ClusterState, kind: &str, namespace: &str, name: &str) -> Vec<PolicyRule> {
    state.get(&ObjectKey::new(kind, namespace, name)).and_then(|o| spec::<RulesSpec>(&o.value)).map(|s| s.rules).unwrap_or_default()
}

/// A ClusterRole's rules: built-in, or stored.
pub fn cluster_role_rules(state: &ClusterState, name: &str) -> Vec<PolicyRule> {
    builtin_rules(name).unwrap_or_else(|| stored_rules(state, "clusterroles", "", name))
}

fn subject_matches(subject: &RbacSubject, caller: &Caller, binding_namespace: Option<&str>) -> bool {
    match subject.kind {
        SubjectKind::User => subject.name == caller.user,
        SubjectKind::Group => caller.groups.contains(&subject.name),
        SubjectKind::ServiceAccount => match &caller.identity {
            Identity::ServiceAccount { namespace, name } => {
                *name == subject.name && subject.namespace.as_deref().or(binding_namespace) == Some(namespace.as_str())
            }
            _ => false,
        },
    }
}

fn rule_matches(rule: &PolicyRule, action: &Action<'_>) -> bool {
    let any_or = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
    any_or(&rule.verbs, action.verb)
        && any_or(&rule.resources, action.resource)
        && (rule.resource_names.is_empty() || action.name.is_some_and(|n| rule.resource_names.iter().any(|r| r == n)))
}

/// Reads of what operators and viewers see: the resources, their change history and status.
const OBSERVABLE: &[&str] = &["edgenodes", "modules", "workloads", "models", "assignments"];

fn builtin_rules(name: &str) -> Option<Vec<PolicyRule>> {
    let rule = |verbs: &[&str], resources: Vec<String>| PolicyRule {
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        resources,
        resource_names: Vec::new(),
    };
    let with_subresources = |plurals: &[&str]| -> Vec<String> {
        plurals.iter().flat_map(|p| [(*p).to_owned(), format!("{p}/status"), format!("{p}/events")]).collect()
    };
    let read = ["get", "list", "watch"];
    let extra_reads = ["data", "edgenodes/heartbeat", "cluster", "metrics", "events"].map(str::to_owned);
    match name {
        "cluster-admin" => Some(vec![rule(&["*"], vec!["*".to_owned()])]),
        "operator" => Some(vec![
            rule(&["*"], with_subresources(&["workloads", "modules", "models"])),
            rule(&read, with_subresources(OBSERVABLE).into_iter().chain(extra_reads).collect()),
        ]),
        "viewer" => Some(vec![rule(
            &read,
            with_subresources(OBSERVABLE)
                .into_iter()
                .chain(extra_reads)
                .chain(
                    [
                        "roles",
                        "clusterroles",
                        "rolebindings",
                        "clusterrolebindings",
                        "serviceaccounts",
                        "sinkpolicies",
                        "clustersinkpolicies",
                        "trustpolicies",
                    ]
                    .map(str::to_owned),
                )
                .collect(),
        )]),
        "node" => Some(Vec::new()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, Precondition};
    use serde_json::json;

    fn put(state: &mut ClusterState, kind: &str, namespace: &str, name: &str, value: serde_json::Value) {
        let index = state.applied_index() + 1;
        let command = Command::Put { key: ObjectKey::new(kind, namespace, name), value, precondition: Precondition::None };
        state.apply_entry(index, &command.encode(), None).expect("entry").expect("applied");
    }

    fn user(name: &str, groups: &[&str]) -> Caller {
        Caller { user: name.to_owned(), groups: groups.iter().map(|g| (*g).to_owned()).collect(), identity: Identity::User }
    }

    fn act<'a>(verb: &'a str, resource: &'a str, namespace: Option<&'a str>) -> Action<'a> {
        Action { verb, resource, namespace, name: None, label_selector: None }
    }

    #[test]
    fn nothing_is_allowed_without_a_rule_and_bindings_grant_where_they_apply() {
        let mut state = ClusterState::default();
        let alice = user("alice", &["ops"]);
        assert!(authorize(&state, &alice, &act("create", "workloads", Some("line-a"))).is_err(), "default deny");
        assert!(authorize(&state, &user("root", &[CLUSTER_ADMINS_GROUP]), &act("delete", "edgenodes", None)).is_ok());

        // The ops group operates namespace line-a.
        put(
            &mut state,
            "rolebindings",
            "line-a",
            "ops",
            json!({"spec": {"roleRef": {"kind": "ClusterRole", "name": "operator"}, "subjects": [{"kind": "Group", "name": "ops"}]}}),
        );
        assert!(authorize(&state, &alice, &act("create", "workloads", Some("line-a"))).is_ok());
        assert!(authorize(&state, &alice, &act("create", "workloads", Some("line-b"))).is_err(), "only in the binding's namespace");
        assert!(authorize(&state, &alice, &act("list", "workloads", None)).is_err(), "not across every namespace");
        assert!(authorize(&state, &alice, &act("delete", "edgenodes", None)).is_err(), "not cluster-wide resources");
        assert!(authorize(&state, &alice, &act("create", "rolebindings", Some("line-a"))).is_err(), "operators cannot grant");

        // A namespaced Role with resource names.
        put(
            &mut state,
            "roles",
            "line-b",
            "one",
            json!({"spec": {"rules": [{"verbs": ["get"], "resources": ["models"], "resourceNames": ["temp"]}]}}),
        );
        put(
            &mut state,
            "rolebindings",
            "line-b",
            "alice-one",
            json!({"spec": {"roleRef": {"kind": "Role", "name": "one"}, "subjects": [{"kind": "User", "name": "alice"}]}}),
        );
        let get_model =
            |name| Action { verb: "get", resource: "models", namespace: Some("line-b"), name: Some(name), label_selector: None };
        assert!(authorize(&state, &alice, &get_model("temp")).is_ok());
        assert!(authorize(&state, &alice, &get_model("other")).is_err());

        // A ServiceAccount bound cluster-wide as viewer reads everywhere, writes nowhere.
        put(
            &mut state,
            "clusterrolebindings",
            "",
            "ci",
            json!({"spec": {"roleRef": {"kind": "ClusterRole", "name": "viewer"}, "subjects": [{"kind": "ServiceAccount", "name": "ci", "namespace": "tools"}]}}),
        );
        let ci = Caller {
            user: "system:serviceaccount:tools:ci".into(),
            groups: vec![],
            identity: Identity::ServiceAccount { namespace: "tools".into(), name: "ci".into() },
        };
        assert!(authorize(&state, &ci, &act("list", "workloads", None)).is_ok());
        assert!(authorize(&state, &ci, &act("get", "auditlog", None)).is_err(), "viewers do not read the audit log");
        assert!(authorize(&state, &ci, &act("create", "workloads", Some("tools"))).is_err());
        let other = Caller { identity: Identity::ServiceAccount { namespace: "other".into(), name: "ci".into() }, ..ci.clone() };
        assert!(authorize(&state, &other, &act("list", "workloads", None)).is_err(), "the same name in another namespace");
    }

    #[test]
    fn another_orchestrator_reads_the_audit_log_and_the_heartbeat_figures_only() {
        let state = ClusterState::default();
        let member = Caller {
            user: "system:orchestrator:2".into(),
            groups: vec!["system:orchestrators".into()],
            identity: Identity::Orchestrator { id: 2 },
        };
        let act = |verb, resource| Action { verb, resource, namespace: None, name: None, label_selector: None };
        assert!(authorize(&state, &member, &act("get", "auditlog")).is_ok());
        assert!(authorize(&state, &member, &act("list", "edgenodes/heartbeat")).is_ok());
        assert!(authorize(&state, &member, &act("create", "edgenodes/heartbeat")).is_err(), "heartbeats come from nodes");
        assert!(authorize(&state, &member, &act("list", "workloads")).is_err());
    }

    #[test]
    fn a_node_acts_only_on_what_is_its_own() {
        let mut state = ClusterState::default();
        let assignment = |node: &str| json!({"spec": {"nodeName": node, "moduleDigest": "sha256:aa"}});
        put(&mut state, "assignments", "f", "mine", assignment("a"));
        put(&mut state, "assignments", "f", "theirs", json!({"spec": {"nodeName": "b", "moduleDigest": "sha256:bb"}}));
        let a = Caller { user: "system:node:a".into(), groups: vec!["system:nodes".into()], identity: Identity::Node { name: "a".into() } };
        let with = |verb, resource, namespace, name, label_selector| Action { verb, resource, namespace, name, label_selector };
        assert!(authorize(&state, &a, &with("get", "assignments", Some("f"), Some("mine"), None)).is_ok());
        assert!(authorize(&state, &a, &with("get", "assignments", Some("f"), Some("theirs"), None)).is_err());
        assert!(authorize(&state, &a, &with("watch", "assignments", None, None, Some("edgeplane.io/node=a"))).is_ok());
        assert!(authorize(&state, &a, &with("watch", "assignments", None, None, Some("edgeplane.io/node=b"))).is_err());
        assert!(authorize(&state, &a, &with("list", "assignments", None, None, None)).is_err());
        assert!(authorize(&state, &a, &with("get", "blobs", None, Some("aa"), None)).is_ok());
        assert!(authorize(&state, &a, &with("get", "blobs", None, Some("bb"), None)).is_err(), "another node's module");
        assert!(authorize(&state, &a, &with("create", "edgenodes/heartbeat", None, Some("a"), None)).is_ok());
        assert!(authorize(&state, &a, &with("create", "edgenodes/heartbeat", None, Some("b"), None)).is_err());
        assert!(authorize(&state, &a, &with("update", "edgenodes/status", None, Some("b"), None)).is_err());
        assert!(authorize(&state, &a, &with("list", "workloads", None, None, None)).is_err());
        // Bindings do not widen a node.
        put(
            &mut state,
            "clusterrolebindings",
            "",
            "oops",
            json!({"spec": {"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [{"kind": "Group", "name": "system:nodes"}]}}),
        );
        assert!(authorize(&state, &a, &with("list", "workloads", None, None, None)).is_err());
    }
}
