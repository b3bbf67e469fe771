//! The policy's decision tables: for a policy and the pod's namespace, what
//! each request gets and which rule decides. Data only, with no imports, so
//! that the core's tests (`policy::tests::the_decision_tables`) and
//! podward-policy's (which runs them through its own code path, the
//! sidecar's request path) read the same file.

pub struct Table {
    /// The test it spells out.
    pub name: &'static str,
    pub policy: &'static str,
    /// What `$self` means ("": the pod's namespace is unknown).
    pub self_namespace: &'static str,
    pub cases: &'static [Case],
}

pub struct Case {
    pub method: &'static str,
    pub path: &'static str,
    /// Forwarded, or denied by the policy.
    pub allowed: bool,
    /// The rule that decides, where the table names it ("" where it does not).
    pub rule: &'static str,
    /// The dry-run rule the decision names ("" for none).
    pub dry_run: &'static str,
    /// The rule that would decide were nothing dry-run ("" where the table does not say).
    pub candidate: &'static str,
    pub why: &'static str,
}

pub const ALLOW: bool = true;
pub const DENY: bool = false;

pub const fn case(
    method: &'static str,
    path: &'static str,
    allowed: bool,
    rule: &'static str,
) -> Case {
    Case {
        method,
        path,
        allowed,
        rule,
        dry_run: "",
        candidate: "",
        why: "",
    }
}

impl Case {
    pub const fn because(self, why: &'static str) -> Case {
        Case { why, ..self }
    }

    pub const fn dry_run(self, rule: &'static str) -> Case {
        Case {
            dry_run: rule,
            ..self
        }
    }

    pub const fn candidate(self, rule: &'static str) -> Case {
        Case {
            candidate: rule,
            ..self
        }
    }
}

pub const TABLES: &[Table] = &[
    Table {
        name: "presets_decide_like_their_documentation (kubectl-proxy)",
        policy: r#"{"preset": "kubectl-proxy"}"#,
        self_namespace: "team-a",
        cases: &[
            case("GET", "/api/v1/namespaces/default/pods", ALLOW, "kubectl-proxy/default"),
            case("DELETE", "/api/v1/namespaces/x/pods/p", ALLOW, "kubectl-proxy/default"),
            case("POST", "/api/v1/namespaces/x/pods/p/exec", DENY, "kubectl-proxy/no-exec-or-attach"),
            case("GET", "/api/v1/namespaces/x/pods/p/exec?command=sh", DENY, "kubectl-proxy/no-exec-or-attach"),
            case("POST", "/api/v1/namespaces/x/pods/p/attach", DENY, "kubectl-proxy/no-exec-or-attach"),
            case("GET", "/api/v1/namespaces/x/pods/p/log", ALLOW, "kubectl-proxy/default"),
            case("POST", "/api/v1/namespaces/x/pods/p/portforward", ALLOW, "kubectl-proxy/default"),
        ],
    },
    Table {
        name: "presets_decide_like_their_documentation (read-only)",
        policy: r#"{"preset": "read-only"}"#,
        self_namespace: "team-a",
        cases: &[
            case("GET", "/api/v1/pods", ALLOW, "read-only/read-resources"),
            case("GET", "/api/v1/namespaces/x/pods?watch=1", ALLOW, "read-only/read-resources"),
            case("GET", "/version", ALLOW, "read-only/read-non-resource-urls"),
            case("POST", "/api/v1/namespaces/x/pods", DENY, "read-only/default"),
            case("PATCH", "/apis/apps/v1/namespaces/x/deployments/d", DENY, "read-only/default"),
            case("GET", "/api/v1/namespaces/x/pods/p/exec", DENY, "read-only/no-interactive-or-proxy"),
            case("GET", "/api/v1/namespaces/x/services/s/proxy/admin", DENY, "read-only/no-interactive-or-proxy"),
            case("GET", "/api/v1/namespaces/x/pods/p/log", ALLOW, "read-only/read-resources"),
        ],
    },
    Table {
        name: "presets_decide_like_their_documentation (own-namespace)",
        policy: r#"{"preset": "own-namespace"}"#,
        self_namespace: "team-a",
        cases: &[
            case("DELETE", "/api/v1/namespaces/team-a/pods/p", ALLOW, "own-namespace/own-namespace"),
            case("GET", "/api/v1/namespaces/other/pods", DENY, "own-namespace/default"),
            case("GET", "/api/v1/pods", DENY, "own-namespace/default"),
            case("GET", "/api/v1/nodes", ALLOW, "own-namespace/read-cluster-scoped"),
            case("DELETE", "/api/v1/nodes/n1", DENY, "own-namespace/default"),
            case("GET", "/api/v1/namespaces/team-a", ALLOW, "own-namespace/own-namespace"),
            case("DELETE", "/api/v1/namespaces/team-a", DENY, "own-namespace/no-namespace-writes"),
            case("PUT", "/api/v1/namespaces/team-a/finalize", DENY, "own-namespace/no-namespace-writes"),
            case("GET", "/apis", ALLOW, "own-namespace/read-non-resource-urls"),
            case("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", ALLOW, "own-namespace/self-reviews"),
        ],
    },
    Table {
        name: "own_rules_come_before_the_preset",
        policy: r#"{"preset": "read-only", "rules": [
                {"name": "events", "action": "allow", "verbs": ["create"],
                 "apiGroups": ["", "events.k8s.io"], "resources": ["events"], "namespaces": ["$self"]},
                {"name": "no-secrets", "action": "deny", "verbs": ["*"],
                 "apiGroups": [""], "resources": ["secrets"]}]}"#,
        self_namespace: "team-a",
        cases: &[
            case("POST", "/api/v1/namespaces/team-a/events", ALLOW, "rules/events"),
            case("POST", "/api/v1/namespaces/other/events", DENY, "read-only/default"),
            case("GET", "/api/v1/namespaces/team-a/secrets/s", DENY, "rules/no-secrets"),
            case("GET", "/api/v1/namespaces/team-a/configmaps", ALLOW, "read-only/read-resources"),
        ],
    },
    Table {
        name: "an_unknown_own_namespace_matches_nothing",
        policy: r#"{"preset": "own-namespace"}"#,
        self_namespace: "",
        cases: &[
            case("DELETE", "/api/v1/nodes/n1", DENY, ""),
            case("GET", "/api/v1/secrets", DENY, ""),
            case("GET", "/api/v1/namespaces/team-a/pods", DENY, ""),
        ],
    },
    Table {
        name: "rbac_matching_details",
        policy: r#"{"default_action": "deny", "rules": [
                {"name": "scale", "action": "allow", "verbs": ["update"], "apiGroups": ["apps"],
                 "resources": ["*/scale"]},
                {"name": "one-cm", "action": "allow", "verbs": ["get"], "apiGroups": [""],
                 "resources": ["configmaps"], "resourceNames": ["settings"]},
                {"name": "pod-subresources", "action": "allow", "verbs": ["get"], "apiGroups": [""],
                 "resources": ["pods/*"]},
                {"name": "health", "action": "allow", "verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez/*"]}]}"#,
        self_namespace: "team-a",
        cases: &[
            case("PUT", "/apis/apps/v1/namespaces/x/deployments/d/scale", ALLOW, ""),
            case("PUT", "/apis/apps/v1/namespaces/x/deployments/d", DENY, ""),
            case("PUT", "/apis/batch/v1/namespaces/x/jobs/j/scale", DENY, ""),
            case("GET", "/api/v1/namespaces/x/configmaps/settings", ALLOW, ""),
            case("GET", "/api/v1/namespaces/x/configmaps/other", DENY, ""),
            case("GET", "/api/v1/namespaces/x/configmaps?fieldSelector=metadata.name%3Dsettings", DENY, ""),
            case("GET", "/api/v1/namespaces/x/pods/p/log", ALLOW, ""),
            case("GET", "/api/v1/namespaces/x/pods/p", DENY, ""),
            case("GET", "/healthz", ALLOW, ""),
            case("GET", "/healthz/etcd", DENY, ""),
            case("GET", "/livez/ping", ALLOW, ""),
            case("POST", "/healthz", DENY, ""),
        ],
    },
    Table {
        name: "deny_rules_cannot_be_read_around",
        policy: r#"{"default_action": "allow", "rules": [
                {"name": "secret-cm", "action": "deny", "verbs": ["get"], "apiGroups": [""],
                 "resources": ["configmaps"], "resourceNames": ["top-secret"], "namespaces": ["team-a"]},
                {"name": "kube-system", "action": "deny", "verbs": ["*"], "apiGroups": ["*"],
                 "resources": ["*"], "namespaces": ["kube-system"]},
                {"name": "no-deleting-leases", "action": "deny", "verbs": ["delete"],
                 "apiGroups": ["coordination.k8s.io"], "resources": ["leases"]},
                {"name": "no-editing-quotas", "action": "deny", "verbs": ["update"],
                 "apiGroups": [""], "resources": ["resourcequotas"], "namespaces": ["$self"]}]}"#,
        self_namespace: "team-a",
        cases: &[
            case("GET", "/api/v1/namespaces/team-a/configmaps/top-secret", DENY, "").because("the named object"),
            case("HEAD", "/api/v1/namespaces/team-a/configmaps/top-secret", DENY, "").because("HEAD is get"),
            case("GET", "/api/v1/namespaces/team-a/configmaps", DENY, "").because("a list returns it"),
            case("GET", "/api/v1/namespaces/team-a/configmaps?watch=1", DENY, "").because("a watch returns it"),
            case("GET", "/api/v1/watch/namespaces/team-a/configmaps", DENY, "").because("the old watch form"),
            case("GET", "/api/v1/configmaps", DENY, "").because("a list across all namespaces"),
            case("GET", "/api/v1/watch/configmaps", DENY, "").because("a watch across all namespaces"),
            case("GET", "/api/v1/namespaces/team-a/configmaps?fieldSelector=metadata.name%3Dtop-secret", DENY, "").because("pinned to it"),
            case("GET", "/api/v1/configmaps?watch=1&fieldSelector=metadata.name%3Dtop-secret", DENY, "").because("pinned, all namespaces"),
            case("GET", "/api/v1/namespaces/team-a/configmaps?fieldSelector=metadata.name%3Dother&labelSelector=a%3Db", DENY, "").because("not pinned once a label selector is set"),
            case("GET", "/api/v1/namespaces/team-a/configmaps/other", ALLOW, "").because("another name"),
            case("GET", "/api/v1/namespaces/team-a/configmaps?fieldSelector=metadata.name%3Dother", ALLOW, "").because("pinned to another name"),
            case("GET", "/api/v1/namespaces/team-b/configmaps", ALLOW, "").because("another namespace"),
            case("PATCH", "/api/v1/namespaces/team-a/configmaps/top-secret", ALLOW, "").because("the rule denies reads only"),
            case("DELETE", "/api/v1/namespaces/team-a/configmaps", ALLOW, "").because("the rule denies reads only"),
            case("POST", "/api/v1/namespaces/team-a/configmaps", ALLOW, "").because("a create reads nothing"),
            case("GET", "/api/v1/namespaces/kube-system/secrets", DENY, "").because("the namespace"),
            case("GET", "/api/v1/secrets", DENY, "").because("all namespaces"),
            case("GET", "/apis/apps/v1/deployments?watch=true", DENY, "").because("all namespaces, watched"),
            case("DELETE", "/api/v1/namespaces/kube-system/pods", DENY, "").because("deletecollection in it"),
            case("GET", "/api/v1/nodes", DENY, "").because("podward cannot tell a cluster-scoped list from an all-namespaces one"),
            case("GET", "/api/v1/nodes/n1", ALLOW, "").because("a named object without a namespace is cluster-scoped"),
            case("GET", "/api/v1/namespaces/default/secrets", ALLOW, "").because("another namespace"),
            case("DELETE", "/apis/coordination.k8s.io/v1/namespaces/x/leases/l", DENY, "").because("delete"),
            case("DELETE", "/apis/coordination.k8s.io/v1/namespaces/x/leases", DENY, "").because("deletecollection"),
            case("DELETE", "/apis/coordination.k8s.io/v1/leases", DENY, "").because("deletecollection, all namespaces"),
            case("PUT", "/apis/coordination.k8s.io/v1/namespaces/x/leases/l", ALLOW, "").because("update is another family"),
            case("PATCH", "/api/v1/namespaces/team-a/resourcequotas/q", DENY, "").because("patch is update's family"),
            case("PUT", "/api/v1/namespaces/team-a/resourcequotas/q", DENY, "").because("update"),
            case("GET", "/api/v1/namespaces/team-a/resourcequotas", ALLOW, "").because("reads are another family"),
        ],
    },
    Table {
        name: "allow_rules_keep_rbac_meaning",
        policy: r#"{"default_action": "deny", "rules": [
                {"name": "one-cm", "action": "allow", "verbs": ["get"], "apiGroups": [""],
                 "resources": ["configmaps"], "resourceNames": ["settings"], "namespaces": ["team-a"]}]}"#,
        self_namespace: "team-a",
        cases: &[
            case("GET", "/api/v1/namespaces/team-a/configmaps/settings", ALLOW, ""),
            case("GET", "/api/v1/namespaces/team-a/configmaps", DENY, ""),
            case("GET", "/api/v1/configmaps/settings", DENY, ""),
            case("GET", "/api/v1/namespaces/team-a/configmaps?watch=1", DENY, ""),
        ],
    },
    Table {
        name: "kubectl_proxy_preset_stops_the_exec_equivalents",
        policy: r#"{"preset": "kubectl-proxy"}"#,
        self_namespace: "team-a",
        cases: &[
            case("PATCH", "/api/v1/namespaces/x/pods/p/ephemeralcontainers", DENY, "kubectl-proxy/no-exec-equivalents"),
            case("PUT", "/api/v1/namespaces/x/pods/p/ephemeralcontainers", DENY, "kubectl-proxy/no-exec-equivalents"),
            case("POST", "/api/v1/nodes/n1/proxy/exec/ns/pod/c", DENY, "kubectl-proxy/no-exec-equivalents"),
            case("GET", "/api/v1/nodes/n1/proxy/runningpods/", DENY, "kubectl-proxy/no-exec-equivalents"),
            case("POST", "/api/v1/proxy/nodes/n1/exec/ns/pod/c", DENY, "kubectl-proxy/no-node-proxy"),
            case("GET", "/api/v1/namespaces/x/pods/p/proxy/metrics", ALLOW, "kubectl-proxy/default"),
        ],
    },
    Table {
        name: "dry_run_rules_are_named_when_the_enforced_decision_allows",
        policy: r#"{"default_action": "allow", "rules": [
            {"name": "try-no-secrets", "action": "deny", "dryRun": true, "verbs": ["*"],
             "apiGroups": [""], "resources": ["secrets"]},
            {"name": "try-no-secret-reads", "action": "deny", "dryRun": true, "verbs": ["get"],
             "apiGroups": [""], "resources": ["secrets", "configmaps"]},
            {"name": "no-kube-system", "action": "deny", "verbs": ["*"], "apiGroups": ["*"],
             "resources": ["*"], "namespaces": ["kube-system"]},
            {"name": "own-configmaps", "action": "allow", "verbs": ["*"], "apiGroups": [""],
             "resources": ["configmaps"], "namespaces": ["$self"]},
            {"name": "try-no-configmap-writes", "action": "deny", "dryRun": true,
             "verbs": ["update"], "apiGroups": [""], "resources": ["configmaps"]}]}"#,
        self_namespace: "team-a",
        cases: &[
            case("GET", "/api/v1/namespaces/a/secrets/s", ALLOW, "rules/default")
                .dry_run("rules/try-no-secrets")
                .candidate("rules/try-no-secrets")
                .because("the first matching dry-run rule is named; the enforced rule decides"),
            case("GET", "/api/v1/namespaces/a/configmaps", ALLOW, "rules/default")
                .dry_run("rules/try-no-secret-reads")
                .candidate("rules/try-no-secret-reads"),
            case("GET", "/api/v1/namespaces/team-a/configmaps", ALLOW, "rules/own-configmaps")
                .dry_run("rules/try-no-secret-reads")
                .candidate("rules/try-no-secret-reads"),
            case("GET", "/api/v1/namespaces/kube-system/secrets", DENY, "rules/no-kube-system")
                .candidate("rules/try-no-secrets")
                .because("denied anyway: nothing would change, nothing is named"),
            case("PUT", "/api/v1/namespaces/team-a/configmaps/c", ALLOW, "rules/own-configmaps")
                .candidate("rules/own-configmaps")
                .because("a dry-run rule after the enforced decision is never reached"),
            case("PUT", "/api/v1/namespaces/b/configmaps/c", ALLOW, "rules/default")
                .dry_run("rules/try-no-configmap-writes")
                .candidate("rules/try-no-configmap-writes"),
            case("GET", "/api/v1/namespaces/a/pods", ALLOW, "rules/default")
                .candidate("rules/default")
                .because("nothing dry-run matches"),
        ],
    },
    Table {
        name: "a_whole_policy_in_dry_run_enforces_the_default_preset",
        policy: r#"{"dryRun": true, "preset": "read-only", "rules": [
            {"name": "own-configmaps", "action": "allow", "verbs": ["create"], "apiGroups": [""],
             "resources": ["configmaps"], "namespaces": ["$self"]},
            {"name": "exec", "action": "allow", "verbs": ["create"], "apiGroups": [""],
             "resources": ["pods/exec"]}]}"#,
        self_namespace: "team-a",
        cases: &[
            case("GET", "/api/v1/namespaces/a/pods", ALLOW, "kubectl-proxy/default")
                .candidate("read-only/read-resources")
                .because("allowed by both"),
            case("POST", "/api/v1/namespaces/team-a/configmaps", ALLOW, "kubectl-proxy/default")
                .candidate("rules/own-configmaps"),
            case("DELETE", "/api/v1/namespaces/a/pods/p", ALLOW, "kubectl-proxy/default")
                .dry_run("read-only/default")
                .candidate("read-only/default")
                .because("what the candidate would deny is forwarded, and named"),
            case("GET", "/api/v1/namespaces/a/pods/p/portforward", ALLOW, "kubectl-proxy/default")
                .dry_run("read-only/no-interactive-or-proxy")
                .candidate("read-only/no-interactive-or-proxy"),
            case("POST", "/api/v1/namespaces/a/pods/p/exec", DENY, "kubectl-proxy/no-exec-or-attach")
                .candidate("rules/exec")
                .because("what the candidate would allow beyond the default stays denied"),
        ],
    },
];
