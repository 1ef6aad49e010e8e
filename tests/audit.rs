//! `shroud audit --short` as CI runs it: a real process, the key-value pairs in both ORAM
//! modes and the collusion view on embedded stacks, every test passing, and the JSON and
//! SVG reports written.

use std::process::Command;

#[test]
fn the_short_audit_detects_no_difference_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shroud"))
        .args(["audit", "--short", "--json", "--report"])
        .arg(dir.path())
        .env("RUST_LOG", "error")
        .output()
        .expect("shroud audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON report");
    let pairs = report["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 10);
    let ring = pairs.iter().filter(|p| p["oram"] == "ring").count();
    assert_eq!(ring, 3, "the key-value pairs run in both modes");
    // Every failed verdict, with its detail (the sizes verdict names the first epoch that
    // differs and its frames).
    let failed: Vec<String> = pairs
        .iter()
        .flat_map(|p| {
            p["verdicts"]
                .as_array()
                .expect("verdicts")
                .iter()
                .filter(|v| v["pass"].as_bool() != Some(true))
                .map(move |v| format!("{} vs {}: {}: {}", p["a"], p["b"], v["test"], v["detail"]))
        })
        .collect();
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
    assert!(out.status.success(), "exit status {:?}", out.status);
    let svg = std::fs::read_to_string(dir.path().join("audit.svg")).expect("svg");
    assert!(svg.starts_with("<svg") && svg.contains("no difference detected"));
    assert!(dir.path().join("audit.json").exists());
}
