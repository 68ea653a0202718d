//! The README's run command, exercised non-interactively: `scripts/demo.sh --check` starts the
//! whole factory (3 orchestrators, 3 edge runtimes, mosquitto, the sensor simulator), checks
//! that data reaches the cloud sink and anomalies are found, runs the guided failures (an edge
//! node killed, the cloud cut off and back, a new model version), and must leave no process
//! behind.

use std::path::Path;
use std::process::Command;

/// What the demo starts, as `pgrep -f` patterns that match only its own processes.
const DEMO_PROCESSES: [&str; 4] = [
    "orchestrator --id [0-9]+ --data-dir .edgeplane/demo",
    "edge-runtime --name [a-z0-9-]+ --data-dir .edgeplane/demo",
    "sensor-sim --broker 127.0.0.1:18830",
    "mosquitto -c .edgeplane/demo/mosquitto.conf",
];

#[test]
fn the_main_job_runs_end_to_end_and_cleans_up() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let bin_dir = edgeplane_tests::bin_dir();
    assert!(bin_dir.ends_with("target/debug"), "the demo runs target/debug binaries; this test was built into {}", bin_dir.display());
    let output = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .arg("--check")
        .current_dir(root)
        .env("EDGEPLANE_SKIP_BUILD", "1")
        .output()
        .expect("run scripts/demo.sh");
    let text = format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    // Whether it passed or not, nothing it started may outlive it.
    for pattern in DEMO_PROCESSES {
        let left = Command::new("pgrep").args(["-a", "-f", pattern]).output().expect("pgrep");
        assert!(left.stdout.is_empty(), "the demo left processes running: {}\n{text}", String::from_utf8_lossy(&left.stdout));
    }
    assert!(output.status.success(), "scripts/demo.sh --check failed\n{text}");
    for expected in [
        "workload.edgeplane.io/vibration-anomalies created",
        // Failure 1: the detector moved and its alerts come from the new node.
        "vibration-anomalies runs on",
        "anomalies arrive from",
        // What the edges take in and send up.
        "SAVED",
        // Failure 2: buffered at the edge, drained, complete in the cloud.
        "nothing lost: each edge's streams are complete in the cloud",
        // The new models' alerts carry their version: the parameters and the retrained ONNX.
        "first alerts from both 1.1.0 models in the cloud",
        "model.edgeplane.io/vibration-classifier now at this version: 1.1.0",
        "check passed",
    ] {
        assert!(text.contains(expected), "the demo's output lacks {expected:?}\n{text}");
    }
}
