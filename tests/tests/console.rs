//! The web console in a real browser (headless Chromium through chromedriver) against a
//! 3-orchestrator cluster with edges running a workload:
//! - every page loads with no console errors and shows the cluster's real state;
//! - an edge SIGKILLed by the test turns Down on the nodes page, and its replica shows on
//!   another node on the workloads page, without a reload;
//! - a viewer's Drain button is disabled, and the API refuses the viewer anyway (403);
//! - a user whose role may drain does so from the page, and the move shows;
//! - the data page's chart gains points as readings reach the cloud, and after a Model's
//!   rollout the new points carry the new version;
//! - the heartbeats' figures (held by the leader only) show on a follower's console, per node
//!   and for the fleet;
//! - a workload's page says why each replica is where it is, and a user whose role may
//!   scales it and undoes its rollout from there.
//!
//! Screenshots of each page are saved under `target/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeplane_tests::webdriver::Browser;
use edgeplane_tests::{
    create_resource, eventually, ingest, push_module, workload_wasm, Api, Cluster, ClusterSpec, EdgeRuntime, Method, Request,
};
use serde_json::{json, Value};

const SUBNET: u8 = 88;
const NS: &str = "plant";

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// A ServiceAccount bound cluster-wide to `role`; its bearer token.
async fn account(admin: &Api, name: &str, role: &str) -> String {
    let object = json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "ServiceAccount", "metadata": {"name": name}, "spec": {}});
    create_resource(admin, "ops", "serviceaccounts", &object).await;
    let binding = json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
        "spec": {"roleRef": {"kind": "ClusterRole", "name": role}, "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "ops"}]}});
    let reply = admin
        .request(Method::POST, "/apis/edgeplane.io/v1alpha1/clusterrolebindings", Some(binding.to_string().into_bytes()))
        .await
        .expect("bind");
    assert_eq!(reply.code, 201, "{}", reply.body);
    let reply = admin.request(Method::POST, &format!("/v1/serviceaccounts/ops/{name}/token"), None).await.expect("token");
    assert_eq!(reply.code, 201, "{}", reply.body);
    reply.body["token"].as_str().expect("token").to_owned()
}

/// Signs in on the page with `token` and waits until the console greets `user`.
async fn sign_in(browser: &Browser, token: &str, user: &str) {
    browser.wait_for("the sign-in form", Duration::from_secs(10), "return !document.getElementById('sign-in').hidden", json!([])).await;
    let field = browser.find("#token").await;
    browser.type_into(&field, token).await;
    browser.click(&browser.find("#sign-in-form button[type=submit]").await).await;
    browser
        .wait_for(
            &format!("the greeting of {user}"),
            Duration::from_secs(10),
            "return document.getElementById('who').textContent.includes(arguments[0])",
            json!([user]),
        )
        .await;
}

/// Fails on anything the page logged as an error since the last look.
async fn no_console_errors(browser: &Browser, when: &str) {
    let errors: Vec<_> = browser.console_log().await.into_iter().filter(|(level, _)| level == "SEVERE").collect();
    assert!(errors.is_empty(), "the console logged errors {when}: {errors:#?}");
}

/// The text of the nodes page's state cell for `node`, once it says `state`.
const NODE_STATE: &str = "const row = document.querySelector(`tr[data-node='${arguments[0]}'] [data-field=state]`); \
                          return row && row.textContent.startsWith(arguments[1]) ? row.textContent : null;";
/// The nodes the workloads page lists for `workload`, once it names `node`.
const WORKLOAD_NODES: &str = "const cell = document.querySelector(`tr[data-workload='${arguments[0]}'] [data-field=nodes]`); \
                              return cell && cell.textContent.includes(arguments[1]) ? cell.textContent : null;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_cluster_live_and_acts_within_the_users_rights() {
    let cluster = Cluster::start(ClusterSpec { subnet: SUBNET, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let admin = cluster.api(leader);
    let servers: Vec<_> = (1..=3).map(|id| cluster.api_addr(id)).collect();

    // A role that may cordon and drain nodes (the built-in operator runs workloads only).
    let role = json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "ClusterRole", "metadata": {"name": "fleet-operator"},
        "spec": {"rules": [
            {"verbs": ["get", "list", "watch"], "resources": ["*"]},
            {"verbs": ["patch", "update"], "resources": ["edgenodes", "workloads"]},
            {"verbs": ["delete"], "resources": ["assignments"]}]}});
    let reply =
        admin.request(Method::POST, "/apis/edgeplane.io/v1alpha1/clusterroles", Some(role.to_string().into_bytes())).await.expect("role");
    assert_eq!(reply.code, 201, "{}", reply.body);
    let viewer_token = account(&admin, "vera", "viewer").await;
    let operator_token = account(&admin, "otto", "fleet-operator").await;

    push_module(&admin, NS, "threshold-filter", workload_wasm("threshold-filter")).await;
    let workload = json!({
        "apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": "filter", "namespace": NS},
        "spec": {
            "module": "threshold-filter@1.0.0",
            "placement": {"nodeSelector": {"line": "a"}},
            "resources": {"memoryMib": 16, "batchTimeMs": 1000},
            "inputs": ["line-a/temperature"],
            "outputs": [{"name": "in-range", "sink": {"type": "cloud"}}, {"name": "out-of-range", "sink": {"type": "cloud"}}],
            "config": {"min": 0.0, "max": 100.0, "forwardInRange": true},
            "failurePolicy": {"lostAfterSeconds": 0, "restartBackoffMs": 100, "maxRestarts": 5}
        }
    });
    create_resource(&admin, NS, "workloads", &workload).await;
    // A detector whose answers carry the version of its Model, for the data page.
    push_module(&admin, NS, "anomaly-detector", workload_wasm("anomaly-detector")).await;
    let model = json!({
        "apiVersion": "edgeplane.io/v1alpha1", "kind": "Model",
        "metadata": {"name": "temperature", "namespace": NS},
        "spec": {"version": "1.0.0", "format": "zscore-logistic/v1",
                 "parameters": {"mean": [20.0, 0.0], "stddev": [2.0, 1.0], "weights": [1.5, 0.0], "bias": [-6.0]}}
    });
    create_resource(&admin, NS, "models", &model).await;
    let mut detector = workload.clone();
    detector["metadata"]["name"] = json!("detector");
    detector["spec"]["module"] = json!("anomaly-detector@1.0.0");
    detector["spec"]["outputs"] = json!([{"name": "alerts", "sink": {"type": "cloud"}}]);
    detector["spec"]["config"] = json!({"threshold": 0.5});
    detector["spec"]["modelRef"] = json!("temperature");
    create_resource(&admin, NS, "workloads", &detector).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut edges = Vec::new();
    for name in ["edge-a", "edge-b", "edge-c"] {
        edges.push(EdgeRuntime::start(name, &servers, dir.path().join(name), &["--label", "line=a", "--heartbeat-ms", "200"]).await);
    }
    let running = eventually(
        "the filter's and the detector's instances running",
        Duration::from_secs(40),
        async || {
            let (mut filter_on, mut detector_on) = (None, None);
            for (i, edge) in edges.iter().enumerate() {
                for instance in edge.instances().await.iter().filter(|i| i["phase"] == "Running") {
                    let assignment = instance["assignment"].as_str().unwrap_or_default();
                    if assignment.contains("filter-") {
                        filter_on = Some(i);
                    } else if assignment.contains("detector-") {
                        detector_on = Some(i);
                    }
                }
            }
            filter_on.zip(detector_on)
        },
        || edges.iter().map(EdgeRuntime::log_tail).collect::<Vec<_>>().join("\n---\n"),
    )
    .await;
    let (running, detector_on) = running;
    let first_node = edges[running].name.clone();

    // A viewer, on a follower's console: every page shows the real state, and nothing can be
    // changed.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let browser = Browser::start(1400, 900).await;
    let console = format!("https://{}/ui/", cluster.api_addr(follower));
    let started = std::time::Instant::now();
    browser.goto(&console).await;
    sign_in(&browser, &viewer_token, "system:serviceaccount:ops:vera").await;
    browser
        .wait_for("the Raft figures", Duration::from_secs(10), "return document.querySelector('#raft dl') ? true : null", json!([]))
        .await;
    let overview_ms = started.elapsed().as_millis();
    let raft = browser.run("return document.getElementById('raft').innerText", json!([])).await;
    let status = admin.get("/v1/cluster").await.expect("cluster status").body;
    let leader_text = format!("member {}", status["leaderId"]);
    assert!(raft.as_str().is_some_and(|t| t.contains(&leader_text)), "the overview should name the leader ({leader_text}): {raft}");
    browser
        .wait_for(
            "three nodes on the overview",
            Duration::from_secs(10),
            "return document.querySelector('#nodes-by-state .figure').textContent === '3' || null",
            json!([]),
        )
        .await;
    // The heartbeats live in the leader's memory; the follower asks the leader for them.
    let fleet = eventually(
        "three nodes' heartbeats, asked of a follower",
        Duration::from_secs(10),
        async || {
            let reply = Api::with_token(cluster.api_addr(follower), &viewer_token).get("/v1/heartbeats").await.ok()?;
            (reply.code == 200 && reply.body["nodes"].as_array().is_some_and(|n| n.len() == 3)).then_some(reply.body)
        },
        String::new,
    )
    .await;
    assert_eq!(fleet["leaderId"], json!(leader), "the figures should be the leader's: {fleet}");
    let names: Vec<&str> = fleet["nodes"].as_array().into_iter().flatten().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["edge-a", "edge-b", "edge-c"], "{fleet}");
    browser
        .wait_for(
            "the fleet's heartbeat figures on the overview",
            Duration::from_secs(10),
            "const c = document.getElementById('fleet-rates'); return c && c.innerText.includes('3 nodes, as member ' + arguments[0]) ? c.innerText : null",
            json!([leader]),
        )
        .await;
    let shots = screenshots();
    browser.screenshot(&shots.join("overview.png")).await;

    browser.goto(&format!("{console}#/nodes")).await;
    for edge in &edges {
        browser.wait_for(&format!("{} Ready", edge.name), Duration::from_secs(20), NODE_STATE, json!([edge.name, "Ready"])).await;
        browser
            .wait_for(
                &format!("{}'s heartbeat age", edge.name),
                Duration::from_secs(10),
                "const c = document.querySelector(`tr[data-node='${arguments[0]}'] [data-field=heartbeat] [data-since]`);                  return c && /^[0-9]+s$/.test(c.textContent) ? c.textContent : null",
                json!([edge.name]),
            )
            .await;
    }
    let disabled = browser.run("return [...document.querySelectorAll('button[data-action=drain]')].map(b => b.disabled)", json!([])).await;
    assert_eq!(disabled, json!([true, true, true]), "a viewer's Drain buttons should be disabled");
    let as_viewer = Api::with_token(cluster.api_addr(1), &viewer_token);
    let cordon = Request::new(Method::PATCH, format!("/apis/edgeplane.io/v1alpha1/edgenodes/{first_node}"))
        .body(r#"{"spec":{"cordoned":true}}"#, "application/merge-patch+json");
    let refused = as_viewer.send(cordon).await.expect("answered");
    assert_eq!(refused.code, 403, "the API should refuse a viewer's cordon: {}", refused.body);
    // What disabled the button: the access review the page asked, which answers as the API does.
    let review = |verb: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "spec": {"resourceAttributes": {"verb": verb, "resource": "edgenodes", "group": "edgeplane.io"}}})
        .to_string()
        .into_bytes()
    };
    let reviews = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    for (who, api, verb, allowed) in
        [("viewer", &as_viewer, "patch", false), ("viewer", &as_viewer, "list", true), ("admin", &admin, "patch", true)]
    {
        let answer = api.request(Method::POST, reviews, Some(review(verb))).await.expect("review");
        assert_eq!(
            (answer.code, answer.body["status"]["allowed"].clone()),
            (200, json!(allowed)),
            "may the {who} {verb} edgenodes? {}",
            answer.body
        );
    }
    let garbage = as_viewer.request(Method::POST, reviews, Some(b"{\"spec\": 1}".to_vec())).await.expect("review");
    assert_eq!(garbage.code, 400, "a malformed review: {}", garbage.body);
    browser.screenshot(&shots.join("nodes.png")).await;
    browser.goto(&format!("{console}#/workloads")).await;
    browser.wait_for("the replica's node", Duration::from_secs(10), WORKLOAD_NODES, json!([format!("{NS}/filter"), first_node])).await;
    browser.screenshot(&shots.join("workloads.png")).await;
    // The workload's page: why the replica is where it is; a viewer can neither scale nor undo.
    browser.goto(&format!("{console}#/workload/{NS}/filter")).await;
    let because = browser
        .wait_for(
            "the scheduler's reason for replica 0",
            Duration::from_secs(10),
            "const c = document.querySelector(`tr[data-replica='0'] [data-field=because]`);              return c && c.textContent !== '—' ? c.textContent : null",
            json!([]),
        )
        .await;
    let assignment = admin.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/assignments/filter-0")).await.expect("assignment");
    assert_eq!(
        because, assignment.body["metadata"]["annotations"]["edgeplane.io/placed-because"],
        "the page should show the Assignment's reason"
    );
    let controls =
        browser.run("return ['scale', 'scale-replicas', 'rollout-undo'].map(id => document.getElementById(id).disabled)", json!([])).await;
    assert_eq!(controls, json!([true, true, true]), "a viewer's scale and undo controls should be disabled");
    browser.screenshot(&shots.join("workload.png")).await;
    browser.goto(&format!("{console}#/events")).await;
    browser
        .wait_for(
            "the Scheduled event",
            Duration::from_secs(10),
            "return document.querySelector('main tbody').innerText.includes('Scheduled') || null",
            json!([]),
        )
        .await;
    browser.screenshot(&shots.join("events.png")).await;

    // The data page: the detector's scores reach the chart as they reach the cloud, and after
    // the Model's rollout the new points carry the new version.
    browser.goto(&format!("{console}#/data")).await;
    browser
        .wait_for(
            "the detector chosen on the data page",
            Duration::from_secs(10),
            "const s = document.getElementById('data-workload'); if (!s) return null; \
             s.value = arguments[0]; s.dispatchEvent(new Event('change')); return true;",
            json!([format!("{NS}/detector")]),
        )
        .await;
    let series = "press-1 temperature.anomaly";
    let points = |models: &str, at_least: u64| {
        format!(
            "const f = document.querySelector(`figure[data-series='{series}']`); \
             return f && f.getAttribute('data-models') === '{models}' && Number(f.getAttribute('data-points')) >= {at_least} \
               ? Number(f.getAttribute('data-points')) : null;"
        )
    };
    let mut ts = 1_000_000u64;
    let mut anomalies = |count: u64| {
        let readings: Vec<edgeplane_api::data::Reading> = (0..count)
            .map(|_| {
                ts += 1;
                edgeplane_api::data::Reading { ts, device: "press-1".into(), metric: "temperature".into(), value: 35.0 }
            })
            .collect();
        readings
    };
    let first = anomalies(5);
    let (code, body) = ingest(&edges[detector_on].http().await, "line-a/temperature", &first).await;
    assert_eq!(code, 200, "{body}");
    let before = browser.wait_for("5 scores from model 1.0.0", Duration::from_secs(30), &points("1.0.0", 5), json!([])).await;
    let rollout = Request::new(Method::PATCH, format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/models/temperature"))
        .body(r#"{"spec":{"version":"1.1.0"}}"#, "application/merge-patch+json");
    let reply = admin.send(rollout).await.expect("model rollout");
    assert_eq!(reply.code, 200, "{}", reply.body);
    let detector_on = eventually(
        "the detector running model 1.1.0",
        Duration::from_secs(30),
        async || {
            for (i, edge) in edges.iter().enumerate() {
                if edge.instances().await.iter().any(|i| i["modelVersion"] == "1.1.0" && i["phase"] == "Running") {
                    return Some(i);
                }
            }
            None
        },
        || edges.iter().map(EdgeRuntime::log_tail).collect::<Vec<_>>().join("\n---\n"),
    )
    .await;
    let second = anomalies(5);
    let (code, body) = ingest(&edges[detector_on].http().await, "line-a/temperature", &second).await;
    assert_eq!(code, 200, "{body}");
    let after = browser.wait_for("5 more scores, from model 1.1.0", Duration::from_secs(30), &points("1.0.0,1.1.0", 10), json!([])).await;
    assert!(after.as_u64() > before.as_u64(), "the chart should gain points: {before} then {after}");
    let legend =
        browser.run("return document.querySelector(`figure[data-series='press-1 temperature.anomaly']`).innerText", json!([])).await;
    assert!(legend.as_str().is_some_and(|l| l.contains("model 1.1.0")), "the legend should name the new model: {legend}");
    browser.screenshot(&shots.join("data.png")).await;
    // The node's page counts what it took in, from its heartbeats.
    let detector_node = edges[detector_on].name.clone();
    browser.goto(&format!("{console}#/node/{detector_node}")).await;
    browser
        .wait_for(
            &format!("{detector_node}'s readings in"),
            Duration::from_secs(15),
            "const c = document.querySelector('[data-field=readingsIn]');              return c && Number(c.getAttribute('data-total')) >= 5 ? c.textContent : null",
            json!([]),
        )
        .await;
    browser.screenshot(&shots.join("node.png")).await;
    no_console_errors(&browser, "on the viewer's pages").await;

    // The edge that runs the replica dies: the nodes page says so, and the workloads page shows
    // the replica's new node, without a reload.
    browser.goto(&format!("{console}#/nodes")).await;
    edges[running].kill();
    let down = browser.wait_for(&format!("{first_node} Down"), Duration::from_secs(30), NODE_STATE, json!([first_node, "Down"])).await;
    assert!(down.as_str().is_some_and(|s| s.starts_with("Down")), "{down}");
    browser.screenshot(&shots.join("nodes-after-a-failure.png")).await;
    let reloaded = browser.run("return performance.getEntriesByType('navigation').length", json!([])).await;
    browser.run("document.querySelector('header nav a[href=\"#/workloads\"]').click()", json!([])).await;
    let moved = browser
        .wait_for(
            "the replica on another node",
            Duration::from_secs(30),
            &format!(
                "const cell = document.querySelector(`tr[data-workload='{NS}/filter'] [data-field=nodes]`); \
             return cell && cell.textContent && !cell.textContent.includes(arguments[0]) ? cell.textContent : null;"
            ),
            json!([first_node]),
        )
        .await;
    assert_eq!(browser.run("return performance.getEntriesByType('navigation').length", json!([])).await, reloaded, "the page reloaded");
    let second_node = ["edge-a", "edge-b", "edge-c"]
        .into_iter()
        .find(|n| moved.as_str().is_some_and(|m| m.contains(n)))
        .unwrap_or_else(|| panic!("the workloads page names no node: {moved}"))
        .to_owned();

    // A user whose role may drain: the button works, and the replica moves again.
    browser.run("document.getElementById('sign-out').click()", json!([])).await;
    sign_in(&browser, &operator_token, "system:serviceaccount:ops:otto").await;
    browser.goto(&format!("{console}#/nodes")).await;
    browser.wait_for(&format!("{second_node} Ready"), Duration::from_secs(10), NODE_STATE, json!([second_node, "Ready"])).await;
    // Clicked in the page in one step: the table is rendered again whenever a watch reports
    // a change, which would leave a WebDriver element reference stale.
    browser
        .wait_for(
            "an enabled Drain button",
            Duration::from_secs(10),
            "const b = document.getElementById('drain-' + arguments[0]); if (!b || b.disabled) return null; b.click(); return true;",
            json!([second_node]),
        )
        .await;
    browser
        .wait_for(&format!("{second_node} cordoned"), Duration::from_secs(10), NODE_STATE, json!([second_node, "Ready, cordoned"]))
        .await;
    browser
        .wait_for(
            "the drain's notice",
            Duration::from_secs(10),
            "return document.getElementById('notice').textContent.includes('done') || null",
            json!([]),
        )
        .await;
    browser.run("document.querySelector('header nav a[href=\"#/workloads\"]').click()", json!([])).await;
    let third = browser
        .wait_for("the replica moved off the drained node", Duration::from_secs(30), &format!(
            "const cell = document.querySelector(`tr[data-workload='{NS}/filter'] [data-field=nodes]`); \
             return cell && cell.textContent && !cell.textContent.includes(arguments[0]) && !cell.textContent.includes(arguments[1]) ? cell.textContent : null;"
        ), json!([first_node, second_node]))
        .await;
    let node: Value = admin.get(&format!("/apis/edgeplane.io/v1alpha1/edgenodes/{second_node}")).await.expect("node").body;
    assert_eq!(node["spec"]["cordoned"], true, "the drained node should be cordoned");

    // Uncordoned from its own page, the node takes the second replica of a scale to two.
    browser.goto(&format!("{console}#/node/{second_node}")).await;
    browser
        .wait_for(
            "an enabled Uncordon button",
            Duration::from_secs(10),
            "const b = document.getElementById('uncordon-' + arguments[0]); if (!b || b.disabled) return null; b.click(); return true;",
            json!([second_node]),
        )
        .await;
    eventually(
        &format!("{second_node} uncordoned"),
        Duration::from_secs(10),
        async || {
            let node = admin.get(&format!("/apis/edgeplane.io/v1alpha1/edgenodes/{second_node}")).await.ok()?;
            (node.body["spec"]["cordoned"] != json!(true)).then_some(())
        },
        String::new,
    )
    .await;
    browser.goto(&format!("{console}#/workload/{NS}/filter")).await;
    browser
        .wait_for(
            "the scale to two submitted",
            Duration::from_secs(10),
            "const i = document.getElementById('scale-replicas'); if (!i || i.disabled) return null;              i.value = '2'; i.dispatchEvent(new Event('input')); document.getElementById('scale').click(); return true;",
            json!([]),
        )
        .await;
    let second_replica = browser
        .wait_for(
            "replica 1 placed",
            Duration::from_secs(30),
            "const c = document.querySelector(`tr[data-replica='1'] [data-field=node]`); return c ? c.textContent : null",
            json!([]),
        )
        .await;
    // A change of configuration rolls out; the page's Undo brings the revision before back.
    let change = Request::new(Method::PATCH, format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/workloads/filter"))
        .body(r#"{"spec":{"config":{"min":0.0,"max":90.0,"forwardInRange":true}}}"#, "application/merge-patch+json");
    let reply = admin.send(change).await.expect("configuration change");
    assert_eq!(reply.code, 200, "{}", reply.body);
    browser
        .wait_for(
            "the rollout of max 90, with max 100 before it, and Undo enabled",
            Duration::from_secs(30),
            "const p = document.querySelector('[data-field=previous]'), c = document.querySelector('[data-field=config]'); \
             const b = document.getElementById('rollout-undo'); \
             if (!p || !c || !b || b.disabled || !p.textContent.includes('\"max\":100') || !c.textContent.includes('\"max\":90')) return null; \
             b.click(); return true;",
            json!([]),
        )
        .await;
    let max = eventually(
        "the configuration back at max 100",
        Duration::from_secs(15),
        async || {
            let w = admin.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/workloads/filter")).await.ok()?;
            w.body["spec"]["config"]["max"].as_f64().filter(|m| *m == 100.0)
        },
        String::new,
    )
    .await;
    assert_eq!(max, 100.0);
    browser.screenshot(&shots.join("workload-after-undo.png")).await;
    no_console_errors(&browser, "on the operator's pages").await;
    eprintln!(
        "console: overview rendered {overview_ms} ms after navigation; replica moved {first_node} -> {second_node} -> {}; \
         replica 1 on {second_replica}; screenshots in {}",
        third.as_str().unwrap_or_default(),
        shots.display()
    );
}

/// CPU time (user + system, in clock ticks) and resident memory (KiB) of process `pid`.
fn usage(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS");
    (ticks, rss)
}

/// A measurement, not run by the suite: what ten open consoles cost the orchestrator they talk
/// to, from its own CPU time and resident memory over a minute with them against a minute
/// without, on a cluster with three edges heartbeating every 200 ms. Prints `BENCH` lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test -p edgeplane-tests --test console -- --ignored --nocapture"]
async fn what_ten_open_consoles_cost_the_orchestrator() {
    let cluster = Cluster::start(ClusterSpec { subnet: SUBNET + 1, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let admin = cluster.api(leader);
    let servers: Vec<_> = (1..=3).map(|id| cluster.api_addr(id)).collect();
    let token = account(&admin, "vera", "viewer").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut edges = Vec::new();
    for name in ["edge-a", "edge-b", "edge-c"] {
        edges.push(EdgeRuntime::start(name, &servers, dir.path().join(name), &["--label", "line=a", "--heartbeat-ms", "200"]).await);
    }
    let pid = cluster.pid(leader).expect("the leader runs");
    let window = Duration::from_secs(60);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (idle_ticks, idle_rss) = usage(pid);
    tokio::time::sleep(window).await;
    let (idle_end, _) = usage(pid);
    let console = format!("https://{}/ui/", cluster.api_addr(leader));
    let mut browsers = Vec::new();
    for _ in 0..10 {
        let browser = Browser::start(1200, 800).await;
        browser.goto(&console).await;
        sign_in(&browser, &token, "system:serviceaccount:ops:vera").await;
        browsers.push(browser);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (busy_ticks, _) = usage(pid);
    tokio::time::sleep(window).await;
    let (busy_end, busy_rss) = usage(pid);
    let hz = 100.0; // USER_HZ on Linux
    let core = |ticks: u64| ticks as f64 / hz / window.as_secs_f64() * 100.0;
    println!("BENCH orchestrator_cpu_percent_no_console {:.2} %", core(idle_end - idle_ticks));
    println!("BENCH orchestrator_cpu_percent_10_consoles {:.2} %", core(busy_end - busy_ticks));
    println!("BENCH orchestrator_rss_no_console_mib {:.1} MiB", idle_rss as f64 / 1024.0);
    println!("BENCH orchestrator_rss_10_consoles_mib {:.1} MiB", busy_rss as f64 / 1024.0);
    drop(browsers);
}

/// A measurement, not run by the suite: the time from navigation to the overview's Raft
/// figures, on a cluster already running elsewhere (the demo's: `bash scripts/demo.sh` prints
/// the console's address and a viewer's token). Five cold loads, each in a fresh browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: EDGEPLANE_CONSOLE_URL=https://... EDGEPLANE_CONSOLE_TOKEN=... cargo test -p edgeplane-tests --test console -- --ignored --nocapture first_render"]
async fn first_render_of_a_running_clusters_overview() {
    let url = std::env::var("EDGEPLANE_CONSOLE_URL").expect("EDGEPLANE_CONSOLE_URL: the console's address, as scripts/demo.sh prints it");
    let token =
        std::env::var("EDGEPLANE_CONSOLE_TOKEN").expect("EDGEPLANE_CONSOLE_TOKEN: a ServiceAccount token, as scripts/demo.sh prints it");
    let mut times = Vec::new();
    for _ in 0..5 {
        let browser = Browser::start(1400, 900).await;
        // Signed in already (the token in the tab's storage), as a returning user is.
        browser.goto(&url).await;
        browser.run("sessionStorage.setItem('edgeplane.token', arguments[0])", json!([token])).await;
        let started = std::time::Instant::now();
        browser.goto(&url).await;
        browser
            .wait_for(
                "the Raft figures and the nodes",
                Duration::from_secs(20),
                "return document.querySelector('#raft dl') && document.querySelector('#nodes-by-state .figure').textContent !== '0' ? true : null",
                json!([]),
            )
            .await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!("first renders: {times:?} ms");
    println!("BENCH console_first_render_ms_p50 {:.0} ms", times[times.len() / 2]);
}
