//! The core's policy decision tables (src/policy_tables.rs), run through the
//! command a person runs: `podward-policy explain POLICY METHOD PATH -o json`.
//! Its decisions must be the sidecar's, case for case.

#[path = "../../../src/policy_tables.rs"]
mod policy_tables;

use policy_tables::TABLES;
use serde_json::Value;
use std::process::Command;

fn explain(
    policy: &std::path::Path,
    method: &str,
    path: &str,
    self_namespace: &str,
) -> (i32, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_podward-policy"))
        .args([
            "explain",
            &policy.to_string_lossy(),
            method,
            path,
            "--pod-namespace",
            self_namespace,
        ])
        .args(["-o", "json"])
        .output()
        .expect("podward-policy runs");
    let answer = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code().unwrap_or(-1), answer)
}

#[test]
fn explain_decides_every_table_case_as_the_sidecar_does() {
    let directory =
        std::env::temp_dir().join(format!("podward-policy-tables-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let mut cases = 0;
    for (index, table) in TABLES.iter().enumerate() {
        let policy = directory.join(format!("{index}.json"));
        std::fs::write(&policy, table.policy).unwrap();
        for case in table.cases {
            let at = format!("{}: {} {} {}", table.name, case.method, case.path, case.why);
            let (code, answer) = explain(&policy, case.method, case.path, table.self_namespace);
            let decision = if case.allowed { "allow" } else { "deny" };
            assert_eq!(answer["decision"], decision, "{at}: {answer:#}");
            assert_eq!(code, if case.allowed { 0 } else { 1 }, "{at}");
            if !case.rule.is_empty() {
                assert_eq!(answer["rule"], case.rule, "{at}");
                assert_eq!(answer["record"]["rule"], case.rule, "{at}");
            }
            let dry_run = answer["dry_run_rule"].as_str().unwrap_or_default();
            assert_eq!(dry_run, case.dry_run, "{at}");
            if !case.candidate.is_empty() {
                assert_eq!(answer["candidate"]["rule"], case.candidate, "{at}");
            }
            let refusal = if case.allowed {
                Value::Null
            } else {
                Value::from("policy_denied")
            };
            assert_eq!(answer["refusal"], refusal, "{at}");
            cases += 1;
        }
    }
    std::fs::remove_dir_all(&directory).unwrap();
    assert!(cases >= 90, "{cases} cases: the tables are read");
}
