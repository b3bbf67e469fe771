//! The commands as a person runs them: what they print and their exit codes
//! (explain: 0 forwarded, 1 refused; lint: 1 on a warning; replay: 1 if a
//! request would be denied; every error: 2, naming what is wrong).

use std::path::PathBuf;
use std::process::{Command, Output};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path =
            std::env::temp_dir().join(format!("podward-policy-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_podward-policy"))
        .args(args)
        .output()
        .expect("podward-policy runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (status.code().unwrap_or(-1), text(stdout), text(stderr))
}

const OWN: &str = r#"{"preset": "own-namespace"}"#;

#[test]
fn explain_takes_a_request_as_kubectl_states_it() {
    let dir = Dir::new("kubectl");
    let policy = dir.write("policy.json", OWN);
    let (code, out, _) = run(&[
        "explain",
        &policy,
        "--verb",
        "create",
        "--resource",
        "pods/exec",
        "-n",
        "team-a",
        "--name",
        "web",
        "--pod-namespace",
        "team-b",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("DENY  create pods/exec \"web\" in namespace team-a\n       POST /api/v1/namespaces/team-a/pods/web/exec"), "{out}");
    assert!(out.contains("decided by own-namespace/default"), "{out}");
    let (code, out, _) = run(&[
        "explain",
        &policy,
        "--verb",
        "watch",
        "--resource",
        "deployments",
        "--group",
        "apps",
        "-n",
        "team-b",
        "--pod-namespace",
        "team-b",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("GET /apis/apps/v1/namespaces/team-b/deployments?watch=1"),
        "{out}"
    );
    let (code, out, _) = run(&[
        "explain",
        &policy,
        "--verb",
        "get",
        "--non-resource-url",
        "/healthz",
        "--pod-namespace",
        "x",
    ]);
    assert_eq!(
        (code, out.starts_with("ALLOW  get /healthz")),
        (0, true),
        "{out}"
    );
}

#[test]
fn errors_exit_2_and_say_what_is_wrong() {
    let dir = Dir::new("errors");
    let own = dir.write("own.json", OWN);
    let bad = dir.write(
        "bad.json",
        r#"{"rules": [{"name": "a", "action": "allow", "dryRun": true, "verbs": ["get"], "nonResourceURLs": ["/x"]}]}"#,
    );
    for (args, says) in [
        (
            vec!["explain", &own, "GET", "/api"],
            "the policy uses $self: say which namespace",
        ),
        (
            vec!["explain", &bad, "GET", "/api"],
            "field `policy.rules[0].dryRun`: only a deny rule can be dry-run",
        ),
        (
            vec!["explain", &own, "GET", "/api", "--verbs", "get"],
            "unknown option --verbs",
        ),
        (
            vec![
                "explain",
                &own,
                "--verb",
                "get",
                "--resource",
                "pods",
                "--pod-namespace",
                "a",
            ],
            "is read as list pods",
        ),
        (
            vec!["lint", "/nonexistent/policy.json"],
            "/nonexistent/policy.json",
        ),
        (
            vec!["replay", &own, "/nonexistent/access.log"],
            "/nonexistent/access.log",
        ),
        (
            vec!["learn", &own, "--pod", "team-a"],
            "expected namespace/name",
        ),
        (vec!["fetch"], "unknown command \"fetch\""),
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn lint_exits_1_on_a_warning_only() {
    let dir = Dir::new("lint");
    let clean = dir.write("clean.json", r#"{"preset": "kubectl-proxy"}"#);
    let (code, out, _) = run(&["lint", &clean]);
    assert_eq!((code, out.contains(": 0 warnings")), (0, true), "{out}");
    let shadowed = dir.write(
        "shadowed.json",
        r#"{"default_action": "deny", "rules": [
            {"name": "all", "action": "allow", "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
            {"name": "pods", "action": "allow", "verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}"#,
    );
    let (code, out, _) = run(&["lint", &shadowed, "-o", "json"]);
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["findings"][0]["kind"], "shadowed");
    assert_eq!(report["findings"][0]["field"], "policy.rules[1]");
}

#[test]
fn learn_then_replay_denies_nothing_of_the_traffic_and_replay_names_what_another_policy_would() {
    let dir = Dir::new("learn");
    let lines = [
        ("GET", "/api/v1/namespaces/team-a/pods"),
        ("GET", "/api/v1/namespaces/team-a/configmaps/settings"),
        ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews"),
        ("GET", "/version"),
    ];
    let log: Vec<String> = lines
        .iter()
        .map(|(method, path)| {
            serde_json::json!({"method": method, "path": path, "authority": "localhost", "code": 200,
                               "details": "via_upstream", "pod": "team-a/web-0", "podward": null})
            .to_string()
        })
        .collect();
    let log = dir.write("access.log", &(log.join("\n") + "\n"));
    let (code, policy, summary) = run(&["learn", &log]);
    assert_eq!(code, 0, "{summary}");
    assert!(
        summary.contains("4 rules learnt from 4 requests of pod team-a/web-0"),
        "{summary}"
    );
    let learnt = dir.write("policy.json", &policy);
    let (code, out, _) = run(&["replay", &learnt, &log]);
    assert_eq!(
        (code, out.contains("4 allowed, 0 would be denied")),
        (0, true),
        "{out}"
    );
    let read_only = dir.write("read-only.json", r#"{"preset": "read-only"}"#);
    let (code, out, _) = run(&["replay", &read_only, &log, "-o", "json"]);
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["denied"], 1);
    assert_eq!(report["by_rule"][0]["rule"], "read-only/default");
    assert_eq!(
        report["by_rule"][0]["requests"][0]["example"],
        "POST /apis/authentication.k8s.io/v1/selfsubjectreviews"
    );
}
