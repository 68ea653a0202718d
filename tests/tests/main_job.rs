//! The README's run command, exercised non-interactively: `scripts/demo.sh --check` must
//! succeed and leave no process behind.

use std::path::Path;
use std::process::Command;

#[test]
fn the_main_job_runs_end_to_end_and_cleans_up() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let bin_dir = edgeplane_tests::bin_dir();
    assert!(
        bin_dir.ends_with("target/debug"),
        "the demo runs target/debug binaries; this test was built into {}",
        bin_dir.display()
    );
    let output = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .arg("--check")
        .current_dir(root)
        .env("EDGEPLANE_SKIP_BUILD", "1")
        .output()
        .expect("run scripts/demo.sh");
    let text = format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "scripts/demo.sh --check failed\n{text}");
    assert!(text.contains("check passed"), "{text}");
    assert!(text.contains("line-c-pressure created"), "the write during failover must succeed\n{text}");
    assert!(text.contains("workload.edgeplane.io/vibration-anomalies created"), "the factory manifests apply\n{text}");
    // No orchestrator started by the demo may survive it.
    let left = Command::new("pgrep").args(["-f", "orchestrator --id [0-9]+ --data-dir .edgeplane/demo"]).output().expect("pgrep");
    assert!(left.stdout.is_empty(), "processes left running: {}", String::from_utf8_lossy(&left.stdout));
}
