//! Who may use the pod's identity for what: ordered rules written like RBAC
//! `PolicyRule`s, each allowing or denying, then a default.
//!
//! Rules match a [`RequestInfo`] the way RBAC does (`*` wildcards, `pods/exec`
//! subresource notation, `*/scale`, trailing-`*` non-resource URLs). podward adds
//! `namespaces`, where `$self` is the pod's own namespace and `""` is a request
//! without a namespace (cluster-scoped, or across all namespaces).

use crate::fields::{field_error, parse_json, FieldError, Object};
use crate::request_info::{RequestInfo, RESOURCE_VERBS};
use serde_json::Value;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

const EFFECTS: &[(&str, Effect)] = &[("allow", Effect::Allow), ("deny", Effect::Deny)];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub action: Effect,
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub namespaces: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

/// The policy as configured: optional own rules, then an optional preset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    pub preset: Option<String>,
    pub rules: Vec<Rule>,
    pub default_action: Option<Effect>,
}

impl PolicyConfig {
    pub fn read(mut object: Object) -> Result<PolicyConfig, FieldError> {
        let preset = object.string("preset")?;
        let default_action = object.choice("default_action", EFFECTS)?;
        let rules = object
            .list("rules")?
            .unwrap_or_default()
            .into_iter()
            .map(|(path, value)| Rule::read(&path, value))
            .collect::<Result<_, _>>()?;
        object.finish()?;
        Ok(PolicyConfig {
            preset,
            rules,
            default_action,
        })
    }
}

impl Rule {
    fn read(path: &str, value: &Value) -> Result<Rule, FieldError> {
        let mut object = Object::new(value, path)?;
        let name = object.string("name")?.unwrap_or_default();
        let action = object
            .choice("action", EFFECTS)?
            .ok_or_else(|| field_error(object.path_of("action"), "is required: allow or deny"))?;
        let mut list = |key| object.strings(key).map(Option::unwrap_or_default);
        let rule = Rule {
            name,
            action,
            verbs: list("verbs")?,
            api_groups: list("apiGroups")?,
            resources: list("resources")?,
            resource_names: list("resourceNames")?,
            namespaces: list("namespaces")?,
            non_resource_urls: list("nonResourceURLs")?,
        };
        object.finish()?;
        Ok(rule)
    }
}

/// Named policies, as the JSON a user would write. Parsed and checked when the
/// plugin is configured, by the same code as a user's rules.
pub const PRESETS: &[(&str, &str)] = &[
    // kubectl proxy's default --reject-paths: ^/api/.*/pods/.*/exec, ^/api/.*/pods/.*/attach
    (
        "kubectl-proxy",
        r#"{"default_action": "allow", "rules": [
            {"name": "no-exec-or-attach", "action": "deny", "verbs": ["*"],
             "apiGroups": [""], "resources": ["pods/exec", "pods/attach"]}]}"#,
    ),
    (
        "read-only",
        r#"{"default_action": "deny", "rules": [
            {"name": "no-interactive-or-proxy", "action": "deny", "verbs": ["*"], "apiGroups": ["*"],
             "resources": ["pods/exec", "pods/attach", "pods/portforward", "*/proxy"]},
            {"name": "read-resources", "action": "allow", "verbs": ["get", "list", "watch"],
             "apiGroups": ["*"], "resources": ["*"]},
            {"name": "read-non-resource-urls", "action": "allow", "verbs": ["get", "head"],
             "nonResourceURLs": ["*"]}]}"#,
    ),
    (
        "own-namespace",
        r#"{"default_action": "deny", "rules": [
            {"name": "no-namespace-writes", "action": "deny",
             "verbs": ["create", "update", "patch", "delete", "deletecollection"],
             "apiGroups": [""], "resources": ["namespaces", "namespaces/*"]},
            {"name": "own-namespace", "action": "allow", "verbs": ["*"],
             "apiGroups": ["*"], "resources": ["*"], "namespaces": ["$self"]},
            {"name": "read-cluster-scoped", "action": "allow", "verbs": ["get", "list", "watch"],
             "apiGroups": ["", "apiextensions.k8s.io", "storage.k8s.io", "scheduling.k8s.io",
                           "node.k8s.io", "networking.k8s.io", "rbac.authorization.k8s.io"],
             "resources": ["namespaces", "nodes", "persistentvolumes", "customresourcedefinitions",
                           "storageclasses", "csidrivers", "priorityclasses", "runtimeclasses",
                           "ingressclasses", "clusterroles", "clusterrolebindings"],
             "namespaces": [""]},
            {"name": "self-reviews", "action": "allow", "verbs": ["create"],
             "apiGroups": ["authorization.k8s.io", "authentication.k8s.io"],
             "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"]},
            {"name": "read-non-resource-urls", "action": "allow", "verbs": ["get", "head"],
             "nonResourceURLs": ["*"]}]}"#,
    ),
];

pub const DEFAULT_PRESET: &str = "kubectl-proxy";

/// Which rule decided, for the 403 message, metrics and the access log:
/// `<origin>/<name>`, origin being `rules` for the user's own rules or the
/// preset's name. Built once with the policy, so a decision copies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef(String);

impl RuleRef {
    fn new(origin: &str, name: &str) -> RuleRef {
        RuleRef(format!("{origin}/{name}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    pub effect: Effect,
    pub rule: &'p RuleRef,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<(RuleRef, Rule)>,
    default_effect: Effect,
    default_rule: RuleRef,
}

const NON_RESOURCE_VERBS: &[&str] = &["get", "head", "post", "put", "patch", "delete", "options"];

impl Policy {
    pub fn build(config: &PolicyConfig) -> Result<Policy, FieldError> {
        let mut rules = Vec::new();
        for (index, rule) in config.rules.iter().enumerate() {
            check_rule(rule).map_err(|(field, problem)| {
                field_error(format!("policy.rules[{index}].{field}"), problem)
            })?;
            rules.push((RuleRef::new("rules", &rule.name), rule.clone()));
        }
        let mut default_effect = config.default_action.unwrap_or(Effect::Deny);
        if let Some(preset_name) = &config.preset {
            let preset = preset(preset_name)?;
            for rule in preset.rules {
                rules.push((RuleRef::new(preset_name, &rule.name), rule));
            }
            default_effect = config
                .default_action
                .or(preset.default_action)
                .unwrap_or(Effect::Deny);
        }
        let mut seen = std::collections::BTreeSet::new();
        for (rule_ref, _) in &rules {
            if !seen.insert(rule_ref.as_str()) {
                return Err(field_error(
                    "policy.rules",
                    format!("two rules are named {:?}", rule_ref.as_str()),
                ));
            }
        }
        let default_rule = RuleRef::new(config.preset.as_deref().unwrap_or("rules"), "default");
        Ok(Policy {
            rules,
            default_effect,
            default_rule,
        })
    }

    /// The first rule that matches decides; `self_namespace` is what `$self` means.
    pub fn decide(&self, request: &RequestInfo, self_namespace: &str) -> Decision<'_> {
        for (rule_ref, rule) in &self.rules {
            if matches(rule, request, self_namespace) {
                return Decision {
                    effect: rule.action,
                    rule: rule_ref,
                };
            }
        }
        Decision {
            effect: self.default_effect,
            rule: &self.default_rule,
        }
    }

    /// Every rule that can decide, the default included.
    pub fn rule_refs(&self) -> impl Iterator<Item = &RuleRef> {
        self.rules
            .iter()
            .map(|(rule_ref, _)| rule_ref)
            .chain(std::iter::once(&self.default_rule))
    }
}

const SELF_NAMESPACE: &str = "$self";

fn preset(name: &str) -> Result<PolicyConfig, FieldError> {
    let Some((_, json)) = PRESETS.iter().find(|(preset, _)| *preset == name) else {
        let known: Vec<&str> = PRESETS.iter().map(|(preset, _)| *preset).collect();
        return Err(field_error(
            "policy.preset",
            format!(
                "unknown preset {name:?}; known presets: {}",
                known.join(", ")
            ),
        ));
    };
    PolicyConfig::read(Object::new(&parse_json(json.as_bytes())?, "policy")?)
}

fn check_rule(rule: &Rule) -> Result<(), (&'static str, String)> {
    if rule.name.is_empty() {
        return Err(("name", "must not be empty".into()));
    }
    if rule.verbs.is_empty() {
        return Err(("verbs", "must name at least one verb, or \"*\"".into()));
    }
    let is_resource_rule = !rule.resources.is_empty();
    let is_non_resource_rule = !rule.non_resource_urls.is_empty();
    if is_resource_rule == is_non_resource_rule {
        return Err((
            "resources",
            "a rule needs either resources (with apiGroups) or nonResourceURLs, not both".into(),
        ));
    }
    let known_verbs = if is_resource_rule {
        RESOURCE_VERBS
    } else {
        NON_RESOURCE_VERBS
    };
    if let Some(verb) = rule
        .verbs
        .iter()
        .find(|v| *v != "*" && !known_verbs.contains(&v.as_str()))
    {
        return Err((
            "verbs",
            format!(
                "unknown verb {verb:?}; expected \"*\" or one of {}",
                known_verbs.join(", ")
            ),
        ));
    }
    if is_resource_rule && rule.api_groups.is_empty() {
        return Err((
            "apiGroups",
            "is required with resources: \"\" is the core group, \"*\" any group".into(),
        ));
    }
    if is_non_resource_rule {
        let misplaced = [
            ("apiGroups", &rule.api_groups),
            ("resourceNames", &rule.resource_names),
            ("namespaces", &rule.namespaces),
        ];
        if let Some((field, _)) = misplaced.iter().find(|(_, values)| !values.is_empty()) {
            return Err((field, "does not apply to a nonResourceURLs rule".into()));
        }
        if let Some(url) = rule
            .non_resource_urls
            .iter()
            .find(|u| !u.starts_with('/') && *u != "*")
        {
            return Err((
                "nonResourceURLs",
                format!("{url:?} must start with \"/\" or be \"*\""),
            ));
        }
    }
    Ok(())
}

fn matches(rule: &Rule, request: &RequestInfo, self_namespace: &str) -> bool {
    let verb_matches = rule.verbs.iter().any(|v| v == "*" || v == request.verb);
    if !verb_matches {
        return false;
    }
    if !request.is_resource_request {
        return rule
            .non_resource_urls
            .iter()
            .any(|url| non_resource_url_matches(url, request.path));
    }
    rule.api_groups
        .iter()
        .any(|g| g == "*" || g == request.api_group)
        && rule
            .resources
            .iter()
            .any(|r| resource_matches(r, request.resource, request.subresource))
        && (rule.resource_names.is_empty()
            || rule.resource_names.iter().any(|n| *n == *request.name))
        && (rule.namespaces.is_empty()
            || rule.namespaces.iter().any(|ns| {
                ns == "*"
                    // An unknown own namespace must not match requests without one.
                    || (ns == SELF_NAMESPACE
                        && !self_namespace.is_empty()
                        && request.namespace == self_namespace)
                    || ns == request.namespace
            }))
}

/// RBAC's `ResourceMatches`, plus `pods/*` for every subresource of pods.
fn resource_matches(pattern: &str, resource: &str, subresource: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some((pattern_resource, pattern_subresource)) = pattern.split_once('/') else {
        return subresource.is_empty() && pattern == resource;
    };
    !subresource.is_empty()
        && (pattern_resource == "*" || pattern_resource == resource)
        && (pattern_subresource == "*" || pattern_subresource == subresource)
}

fn non_resource_url_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

/// kubectl proxy's `--accept-hosts`: the `Host` header, without its port, must
/// be one of `accepted` (case-insensitive), or `accepted` holds `*`. This stops
/// a web page in the pod's browser from reaching the API by DNS rebinding.
pub fn host_accepted(accepted: &[String], host: &str) -> bool {
    let without_port = match host.rsplit_once(':') {
        // `[::1]:8001` or `localhost:8001`, but not the bare IPv6 `[::1]`.
        Some((name, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    accepted
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(without_port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::classify;

    fn config(json: &str) -> PolicyConfig {
        let value: Value = serde_json::from_str(json).unwrap();
        PolicyConfig::read(Object::new(&value, "policy").unwrap()).unwrap()
    }

    fn policy(json: &str) -> Policy {
        Policy::build(&config(json)).unwrap()
    }

    fn decide(policy: &Policy, method: &str, path: &str) -> (Effect, String) {
        let request = classify(method, path).unwrap();
        let decision = policy.decide(&request, "team-a");
        (decision.effect, decision.rule.to_string())
    }

    #[test]
    fn every_preset_parses_and_builds() {
        for (name, _) in PRESETS {
            let config = PolicyConfig {
                preset: Some(name.to_string()),
                ..PolicyConfig::default()
            };
            Policy::build(&config).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
    }

    #[test]
    fn presets_decide_like_their_documentation() {
        use Effect::{Allow, Deny};
        let cases: &[(&str, &str, &str, Effect, &str)] = &[
            (
                "kubectl-proxy",
                "GET",
                "/api/v1/namespaces/default/pods",
                Allow,
                "kubectl-proxy/default",
            ),
            (
                "kubectl-proxy",
                "DELETE",
                "/api/v1/namespaces/x/pods/p",
                Allow,
                "kubectl-proxy/default",
            ),
            (
                "kubectl-proxy",
                "POST",
                "/api/v1/namespaces/x/pods/p/exec",
                Deny,
                "kubectl-proxy/no-exec-or-attach",
            ),
            (
                "kubectl-proxy",
                "GET",
                "/api/v1/namespaces/x/pods/p/exec?command=sh",
                Deny,
                "kubectl-proxy/no-exec-or-attach",
            ),
            (
                "kubectl-proxy",
                "POST",
                "/api/v1/namespaces/x/pods/p/attach",
                Deny,
                "kubectl-proxy/no-exec-or-attach",
            ),
            (
                "kubectl-proxy",
                "GET",
                "/api/v1/namespaces/x/pods/p/log",
                Allow,
                "kubectl-proxy/default",
            ),
            (
                "kubectl-proxy",
                "POST",
                "/api/v1/namespaces/x/pods/p/portforward",
                Allow,
                "kubectl-proxy/default",
            ),
            (
                "read-only",
                "GET",
                "/api/v1/pods",
                Allow,
                "read-only/read-resources",
            ),
            (
                "read-only",
                "GET",
                "/api/v1/namespaces/x/pods?watch=1",
                Allow,
                "read-only/read-resources",
            ),
            (
                "read-only",
                "GET",
                "/version",
                Allow,
                "read-only/read-non-resource-urls",
            ),
            (
                "read-only",
                "POST",
                "/api/v1/namespaces/x/pods",
                Deny,
                "read-only/default",
            ),
            (
                "read-only",
                "PATCH",
                "/apis/apps/v1/namespaces/x/deployments/d",
                Deny,
                "read-only/default",
            ),
            (
                "read-only",
                "GET",
                "/api/v1/namespaces/x/pods/p/exec",
                Deny,
                "read-only/no-interactive-or-proxy",
            ),
            (
                "read-only",
                "GET",
                "/api/v1/namespaces/x/services/s/proxy/admin",
                Deny,
                "read-only/no-interactive-or-proxy",
            ),
            (
                "read-only",
                "GET",
                "/api/v1/namespaces/x/pods/p/log",
                Allow,
                "read-only/read-resources",
            ),
            (
                "own-namespace",
                "DELETE",
                "/api/v1/namespaces/team-a/pods/p",
                Allow,
                "own-namespace/own-namespace",
            ),
            (
                "own-namespace",
                "GET",
                "/api/v1/namespaces/other/pods",
                Deny,
                "own-namespace/default",
            ),
            (
                "own-namespace",
                "GET",
                "/api/v1/pods",
                Deny,
                "own-namespace/default",
            ),
            (
                "own-namespace",
                "GET",
                "/api/v1/nodes",
                Allow,
                "own-namespace/read-cluster-scoped",
            ),
            (
                "own-namespace",
                "DELETE",
                "/api/v1/nodes/n1",
                Deny,
                "own-namespace/default",
            ),
            (
                "own-namespace",
                "GET",
                "/api/v1/namespaces/team-a",
                Allow,
                "own-namespace/own-namespace",
            ),
            (
                "own-namespace",
                "DELETE",
                "/api/v1/namespaces/team-a",
                Deny,
                "own-namespace/no-namespace-writes",
            ),
            (
                "own-namespace",
                "PUT",
                "/api/v1/namespaces/team-a/finalize",
                Deny,
                "own-namespace/no-namespace-writes",
            ),
            (
                "own-namespace",
                "GET",
                "/apis",
                Allow,
                "own-namespace/read-non-resource-urls",
            ),
            (
                "own-namespace",
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                Allow,
                "own-namespace/self-reviews",
            ),
        ];
        for (preset, method, path, effect, rule) in cases {
            let p = policy(&format!(r#"{{"preset": "{preset}"}}"#));
            assert_eq!(
                decide(&p, method, path),
                (*effect, rule.to_string()),
                "{preset}: {method} {path}"
            );
        }
    }

    #[test]
    fn own_rules_come_before_the_preset() {
        let p = policy(
            r#"{"preset": "read-only", "rules": [
                {"name": "events", "action": "allow", "verbs": ["create"],
                 "apiGroups": ["", "events.k8s.io"], "resources": ["events"], "namespaces": ["$self"]},
                {"name": "no-secrets", "action": "deny", "verbs": ["*"],
                 "apiGroups": [""], "resources": ["secrets"]}]}"#,
        );
        let cases = [
            (
                "POST",
                "/api/v1/namespaces/team-a/events",
                Effect::Allow,
                "rules/events",
            ),
            (
                "POST",
                "/api/v1/namespaces/other/events",
                Effect::Deny,
                "read-only/default",
            ),
            (
                "GET",
                "/api/v1/namespaces/team-a/secrets/s",
                Effect::Deny,
                "rules/no-secrets",
            ),
            (
                "GET",
                "/api/v1/namespaces/team-a/configmaps",
                Effect::Allow,
                "read-only/read-resources",
            ),
        ];
        for (method, path, effect, rule) in cases {
            assert_eq!(
                decide(&p, method, path),
                (effect, rule.into()),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn an_unknown_own_namespace_matches_nothing() {
        let p = policy(r#"{"preset": "own-namespace"}"#);
        for (method, path) in [
            ("DELETE", "/api/v1/nodes/n1"),
            ("GET", "/api/v1/secrets"),
            ("GET", "/api/v1/namespaces/team-a/pods"),
        ] {
            let request = classify(method, path).unwrap();
            assert_eq!(
                p.decide(&request, "").effect,
                Effect::Deny,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn rbac_matching_details() {
        let p = policy(
            r#"{"default_action": "deny", "rules": [
                {"name": "scale", "action": "allow", "verbs": ["update"], "apiGroups": ["apps"],
                 "resources": ["*/scale"]},
                {"name": "one-cm", "action": "allow", "verbs": ["get"], "apiGroups": [""],
                 "resources": ["configmaps"], "resourceNames": ["settings"]},
                {"name": "pod-subresources", "action": "allow", "verbs": ["get"], "apiGroups": [""],
                 "resources": ["pods/*"]},
                {"name": "health", "action": "allow", "verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez/*"]}]}"#,
        );
        let cases = [
            (
                "PUT",
                "/apis/apps/v1/namespaces/x/deployments/d/scale",
                Effect::Allow,
            ),
            (
                "PUT",
                "/apis/apps/v1/namespaces/x/deployments/d",
                Effect::Deny,
            ),
            (
                "PUT",
                "/apis/batch/v1/namespaces/x/jobs/j/scale",
                Effect::Deny,
            ),
            (
                "GET",
                "/api/v1/namespaces/x/configmaps/settings",
                Effect::Allow,
            ),
            ("GET", "/api/v1/namespaces/x/configmaps/other", Effect::Deny),
            (
                "GET",
                "/api/v1/namespaces/x/configmaps?fieldSelector=metadata.name%3Dsettings",
                Effect::Deny,
            ),
            ("GET", "/api/v1/namespaces/x/pods/p/log", Effect::Allow),
            ("GET", "/api/v1/namespaces/x/pods/p", Effect::Deny),
            ("GET", "/healthz", Effect::Allow),
            ("GET", "/healthz/etcd", Effect::Deny),
            ("GET", "/livez/ping", Effect::Allow),
            ("POST", "/healthz", Effect::Deny),
        ];
        for (method, path, effect) in cases {
            assert_eq!(decide(&p, method, path).0, effect, "{method} {path}");
        }
    }

    #[test]
    fn bad_policies_name_the_field() {
        let cases = [
            (r#"{"preset": "nope"}"#, "policy.preset"),
            (
                r#"{"rules": [{"name": "", "action": "allow", "verbs": ["get"], "nonResourceURLs": ["*"]}]}"#,
                "policy.rules[0].name",
            ),
            (
                r#"{"rules": [{"name": "a", "action": "allow", "verbs": [], "nonResourceURLs": ["*"]}]}"#,
                "policy.rules[0].verbs",
            ),
            (
                r#"{"rules": [{"name": "a", "action": "allow", "verbs": ["fetch"], "apiGroups": [""], "resources": ["pods"]}]}"#,
                "policy.rules[0].verbs",
            ),
            (
                r#"{"rules": [{"name": "a", "action": "allow", "verbs": ["get"], "resources": ["pods"]}]}"#,
                "policy.rules[0].apiGroups",
            ),
            (
                r#"{"rules": [{"name": "a", "action": "allow", "verbs": ["get"]}]}"#,
                "policy.rules[0].resources",
            ),
            (
                r#"{"rules": [{"name": "a", "action": "allow", "verbs": ["get"], "nonResourceURLs": ["x"]}]}"#,
                "policy.rules[0].nonResourceURLs",
            ),
            (
                r#"{"rules": [{"name": "a", "action": "allow", "verbs": ["get"], "nonResourceURLs": ["/x"], "namespaces": ["a"]}]}"#,
                "policy.rules[0].namespaces",
            ),
            (
                r#"{"rules": [
                {"name": "a", "action": "allow", "verbs": ["get"], "nonResourceURLs": ["/x"]},
                {"name": "a", "action": "deny", "verbs": ["get"], "nonResourceURLs": ["/y"]}]}"#,
                "policy.rules",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(
                Policy::build(&config(json)).unwrap_err().field,
                field,
                "{json}"
            );
        }
    }

    #[test]
    fn hosts_are_checked_like_kubectl_proxy_accept_hosts() {
        let defaults: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .map(String::from)
            .to_vec();
        let cases = [
            ("localhost", true),
            ("localhost:8001", true),
            ("LOCALHOST:8001", true),
            ("127.0.0.1:8001", true),
            ("[::1]:8001", true),
            ("[::1]", true),
            ("evil.example:8001", false),
            ("localhost.evil.example", false),
            ("127.0.0.1.nip.io:8001", false),
            ("", false),
        ];
        for (host, accepted) in cases {
            assert_eq!(host_accepted(&defaults, host), accepted, "{host}");
        }
        assert!(host_accepted(&["*".into()], "anything:1"));
    }
}
