//! API discovery as Kubernetes clients expect it (`/version`, `/api`, `/apis`, the group and
//! its version's resource list), so that kubectl and client-go find the resources. Built from
//! the CRDs, so the short names, scope and subresources are the ones `manifests/crds/` declare.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
};
use k8s_openapi::apimachinery::pkg::version::Info;

use crate::resources::{crds, API_VERSION, GROUP};

/// The one version of the group.
pub const VERSION: &str = "v1alpha1";

/// Every kind belongs to this category: `kubectl get edgeplane` lists them all.
pub const CATEGORY: &str = "edgeplane";

fn group() -> APIGroup {
    let version = GroupVersionForDiscovery { group_version: API_VERSION.to_owned(), version: VERSION.to_owned() };
    APIGroup {
        name: GROUP.to_owned(),
        preferred_version: Some(version.clone()),
        versions: vec![version],
        server_address_by_client_cidrs: None,
    }
}

/// `/api`: of the core group, edgeplane serves only Events (`v1`).
pub fn core_versions() -> APIVersions {
    APIVersions { versions: vec!["v1".to_owned()], server_address_by_client_cidrs: Vec::new() }
}

/// The group of Kubernetes' newer Events API.
pub const EVENTS_GROUP: &str = "events.k8s.io";

fn events_group() -> APIGroup {
    let version = GroupVersionForDiscovery { group_version: format!("{EVENTS_GROUP}/v1"), version: "v1".to_owned() };
    APIGroup {
        name: EVENTS_GROUP.to_owned(),
        preferred_version: Some(version.clone()),
        versions: vec![version],
        server_address_by_client_cidrs: None,
    }
}

/// `/apis`.
pub fn group_list() -> APIGroupList {
    APIGroupList { groups: vec![group(), events_group()] }
}

/// `/apis/events.k8s.io`.
pub fn events_api_group() -> APIGroup {
    events_group()
}

/// The Events resource, read-only (the scheduler writes them), in `group_version`.
fn events_resource(group_version: &str) -> APIResourceList {
    let resource = APIResource {
        name: "events".to_owned(),
        singular_name: "event".to_owned(),
        namespaced: true,
        kind: "Event".to_owned(),
        verbs: ["get", "list", "watch"].map(str::to_owned).to_vec(),
        short_names: Some(vec!["ev".to_owned()]),
        categories: None,
        group: None,
        version: None,
        storage_version_hash: None,
    };
    APIResourceList { group_version: group_version.to_owned(), resources: vec![resource] }
}

/// `/api/v1`: Events, as `kubectl get events` and `kubectl describe` read them.
pub fn core_resource_list() -> APIResourceList {
    events_resource("v1")
}

/// `/apis/events.k8s.io/v1`.
pub fn events_resource_list() -> APIResourceList {
    events_resource(&format!("{EVENTS_GROUP}/v1"))
}

/// `/apis/edgeplane.io`.
pub fn api_group() -> APIGroup {
    group()
}

/// `/apis/edgeplane.io/v1alpha1`: every resource, its subresources, verbs and short names.
pub fn resource_list() -> APIResourceList {
    let mut resources = Vec::new();
    for crd in crds() {
        let names = &crd.spec.names;
        let namespaced = crd.spec.scope == "Namespaced";
        // Users do not write Assignments (the placement controller does); deleting one makes
        // the controller place the replica again.
        let verbs: &[&str] = if names.plural == "assignments" {
            &["delete", "get", "list", "watch"]
        } else {
            &["create", "delete", "get", "list", "patch", "update", "watch"]
        };
        let mut categories = names.categories.clone().unwrap_or_default();
        if !categories.iter().any(|c| c == CATEGORY) {
            categories.push(CATEGORY.to_owned());
        }
        resources.push(APIResource {
            name: names.plural.clone(),
            singular_name: names.singular.clone().unwrap_or_else(|| names.kind.to_lowercase()),
            namespaced,
            kind: names.kind.clone(),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            short_names: names.short_names.clone().filter(|s| !s.is_empty()),
            categories: Some(categories),
            group: None,
            version: None,
            storage_version_hash: None,
        });
        let has_status = crd.spec.versions.iter().any(|v| v.subresources.as_ref().is_some_and(|s| s.status.is_some()));
        if has_status {
            resources.push(APIResource {
                name: format!("{}/status", names.plural),
                singular_name: String::new(),
                namespaced,
                kind: names.kind.clone(),
                verbs: ["get", "update"].map(str::to_owned).to_vec(),
                short_names: None,
                categories: None,
                group: None,
                version: None,
                storage_version_hash: None,
            });
        }
    }
    APIResourceList { group_version: API_VERSION.to_owned(), resources }
}

/// `/version`: this build, in the shape of the Kubernetes version info.
pub fn version_info() -> Info {
    let version = env!("CARGO_PKG_VERSION");
    let mut parts = version.split('.');
    Info {
        major: parts.next().unwrap_or("0").to_owned(),
        minor: parts.next().unwrap_or("0").to_owned(),
        git_version: format!("v{version}"),
        git_commit: String::new(),
        git_tree_state: String::new(),
        build_date: String::new(),
        go_version: String::new(),
        compiler: "rustc".to_owned(),
        platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        emulation_major: None,
        emulation_minor: None,
        min_compatibility_major: None,
        min_compatibility_minor: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_discoverable_with_its_short_names_and_scope() {
        let list = resource_list();
        let find = |name: &str| list.resources.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("{name} missing"));
        let workloads = find("workloads");
        assert!(workloads.namespaced && workloads.kind == "Workload" && workloads.singular_name == "workload");
        assert_eq!(workloads.short_names.as_deref(), Some(&["wl".to_owned()][..]));
        assert!(
            workloads.verbs.contains(&"patch".to_owned())
                && workloads.categories.as_ref().is_some_and(|c| c.contains(&CATEGORY.to_owned()))
        );
        assert!(!find("edgenodes").namespaced);
        assert!(!find("assignments").verbs.contains(&"create".to_owned()), "users do not create Assignments");
        assert_eq!(find("workloads/status").verbs, ["get", "update"]);
        assert_eq!(list.resources.iter().filter(|r| !r.name.contains('/')).count(), crate::resources::KINDS.len());
        let json = serde_json::to_value(&list).expect("json");
        assert_eq!((json["kind"].as_str(), json["apiVersion"].as_str()), (Some("APIResourceList"), Some("v1")), "{json}");
    }
}
