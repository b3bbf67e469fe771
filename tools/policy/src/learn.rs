//! `learn`: the least policy that allows every request a client made through
//! podward, in podward's format, ready to review: one allow rule per resource
//! and namespace (the pod's own is `$self`), the names it used where it named
//! objects, and a default of deny, so that exec and everything else the
//! traffic did not use stay denied.
//!
//! Requests the `kubectl-proxy` preset refuses by one of its rules (exec,
//! attach and their equivalents) are never learnt, even where a log shows
//! them (an audit log can hold requests made without podward): they are
//! reported, for a person to allow by hand if they must.

use crate::explain::rule_json;
use crate::logs::Observed;
use crate::replay::{reclassify, Disagreement, Reclassification, Reclassified, Unclassifiable};
use crate::requests::{is_cluster_scoped, Stated};
use podward::policy::{Effect, Policy, PolicyConfig, Rule, DEFAULT_PRESET, NON_RESOURCE_VERBS};
use podward::request_info::RESOURCE_VERBS;
use std::collections::{BTreeMap, BTreeSet};

pub struct Options {
    /// Narrow rules to the object names used (`resourceNames`).
    pub names: bool,
    /// Past this many names on one rule, the rule allows any name.
    pub max_names: usize,
    /// Write `"dryRun": true`, so that the policy is tried out before it is enforced.
    pub dry_run: bool,
}

pub struct Learnt {
    /// The policy file.
    pub text: String,
    pub rules: usize,
    /// The requests learnt from.
    pub learnt_from: usize,
    /// Requests left denied: what, how many, the preset rule that refuses them.
    pub left_denied: Vec<(Stated, usize, String)>,
    /// Rules that allow any name because more than `max_names` were used.
    pub names_dropped: Vec<String>,
    pub unclassifiable: Vec<Unclassifiable>,
    pub disagreements: Vec<Disagreement>,
    /// Requests learnt that the API server itself refused (401, 403).
    pub refused_upstream: usize,
    /// Requests podward refused when they were made, not learnt: how many, and one.
    pub refused_when_recorded: (usize, Option<String>),
}

/// Where a rule applies: the pod's own namespace, another one, or none.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Own,
    Namespace(String),
    Cluster,
}

/// A resource rule's key: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    scope: Scope,
    group: String,
    resource: String,
    subresource: String,
}

pub fn learn(
    observed: &[&Observed],
    self_namespace: &str,
    options: &Options,
) -> Result<Learnt, String> {
    let Reclassification {
        classified,
        unclassifiable,
        disagreements,
    } = reclassify(observed);
    let preset = Policy::build(&PolicyConfig {
        preset: Some(DEFAULT_PRESET.into()),
        ..PolicyConfig::default()
    })
    .map_err(|e| e.to_string())?;
    // Per target, each verb with the names it was used with ("" for none).
    let mut resources: BTreeMap<Target, BTreeMap<&'static str, BTreeSet<String>>> = BTreeMap::new();
    // Per non-resource path, its verbs.
    let mut urls: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    let mut left_denied: BTreeMap<(Stated, String), usize> = BTreeMap::new();
    for Reclassified { info, .. } in &classified {
        let decision = preset.decide(info, self_namespace);
        if decision.effect == Effect::Deny {
            let mut stated = Stated::of(info);
            stated.name.clear();
            *left_denied
                .entry((stated, decision.rule.to_string()))
                .or_default() += 1;
            continue;
        }
        if !info.is_resource_request {
            urls.entry(info.path.to_string())
                .or_default()
                .insert(info.verb);
            continue;
        }
        let scope = match info.namespace {
            "" => Scope::Cluster,
            ns if ns == self_namespace => Scope::Own,
            ns => Scope::Namespace(ns.to_string()),
        };
        let target = Target {
            scope,
            group: info.api_group.to_string(),
            resource: info.resource.to_string(),
            subresource: info.subresource.to_string(),
        };
        let name = if options.names {
            info.name.to_string()
        } else {
            String::new()
        };
        resources
            .entry(target)
            .or_default()
            .entry(info.verb)
            .or_default()
            .insert(name);
    }

    let mut rules = Vec::new();
    let mut names_dropped = Vec::new();
    for (target, verbs) in &resources {
        // Verbs used without a name need a rule without names, which covers their named uses too.
        let unnamed: Vec<&str> = ordered(
            RESOURCE_VERBS,
            verbs
                .iter()
                .filter(|(_, names)| names.contains(""))
                .map(|(v, _)| *v),
        );
        if !unnamed.is_empty() {
            rules.push(resource_rule(target, &unnamed, &[]));
        }
        // The others, grouped by the names they used.
        let mut by_names: BTreeMap<&BTreeSet<String>, Vec<&str>> = BTreeMap::new();
        for (verb, names) in verbs.iter().filter(|(_, names)| !names.contains("")) {
            by_names.entry(names).or_default().push(verb);
        }
        for (names, group_verbs) in by_names {
            let verbs = ordered(RESOURCE_VERBS, group_verbs.into_iter());
            let names: Vec<String> = names.iter().cloned().collect();
            let mut rule = resource_rule(target, &verbs, &names);
            if names.len() > options.max_names {
                rule = resource_rule(target, &verbs, &[]);
                names_dropped.push(format!("rules/{} ({} names)", rule.name, names.len()));
            }
            rules.push(rule);
        }
    }
    let mut by_verbs: BTreeMap<Vec<&str>, Vec<String>> = BTreeMap::new();
    for (path, verbs) in &urls {
        by_verbs
            .entry(ordered(NON_RESOURCE_VERBS, verbs.iter().copied()))
            .or_default()
            .push(path.clone());
    }
    for (verbs, paths) in by_verbs {
        rules.push(Rule {
            name: format!("{}-non-resource-urls", verbs.join("-")),
            action: Effect::Allow,
            dry_run: false,
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            api_groups: Vec::new(),
            resources: Vec::new(),
            resource_names: Vec::new(),
            namespaces: Vec::new(),
            non_resource_urls: paths,
        });
    }
    unique_names(&mut rules);

    let text = policy_text(&rules, options.dry_run);
    // The promise, checked on what was just written: every request learnt from is allowed.
    let learnt =
        Policy::parse(text.as_bytes()).map_err(|e| format!("the learnt policy is refused: {e}"))?;
    let learnt_from = classified.len() - left_denied.values().sum::<usize>();
    let refused_upstream = classified
        .iter()
        .filter(|c| matches!(c.observed.code, Some(401 | 403)))
        .filter(|c| preset.decide(&c.info, self_namespace).effect == Effect::Allow)
        .count();
    for Reclassified { observed, info } in &classified {
        let allowed = learnt.candidate(info, self_namespace).effect == Effect::Allow;
        let left = preset.decide(info, self_namespace).effect == Effect::Deny;
        if !allowed && !left {
            return Err(format!(
                "the learnt policy does not allow line {}: {} {}",
                observed.line, observed.method, observed.target
            ));
        }
    }
    Ok(Learnt {
        text,
        rules: rules.len(),
        learnt_from,
        left_denied: left_denied
            .into_iter()
            .map(|((stated, rule), count)| (stated, count, rule))
            .collect(),
        names_dropped,
        unclassifiable,
        disagreements,
        refused_upstream,
        refused_when_recorded: (
            observed.iter().filter(|o| !o.forwarded).count(),
            observed
                .iter()
                .find(|o| !o.forwarded)
                .map(|o| format!("{} {}", o.method, o.target)),
        ),
    })
}

/// `verbs` in the order of `all`.
fn ordered<'a>(all: &[&'a str], verbs: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let verbs: BTreeSet<&str> = verbs.collect();
    all.iter()
        .copied()
        .filter(|verb| verbs.contains(verb))
        .collect()
}

fn resource_rule(target: &Target, verbs: &[&str], names: &[String]) -> Rule {
    let mut resource = target.resource.clone();
    let mut name_part = target.resource.clone();
    if !target.subresource.is_empty() {
        resource = format!("{resource}/{}", target.subresource);
        name_part = format!("{name_part}-{}", target.subresource);
    }
    if !target.group.is_empty() {
        name_part = format!("{name_part}.{}", target.group);
    }
    let mut name = format!("{}-{name_part}", verbs.join("-"));
    if !names.is_empty() {
        name.push_str("-named");
    }
    let namespaces = match &target.scope {
        Scope::Own => {
            name.push_str("-in-own-namespace");
            vec!["$self".to_string()]
        }
        Scope::Namespace(ns) => {
            name.push_str(&format!("-in-{ns}"));
            vec![ns.clone()]
        }
        Scope::Cluster => {
            if !is_cluster_scoped(&target.group, &target.resource) {
                name.push_str("-all-namespaces");
            }
            vec![String::new()]
        }
    };
    Rule {
        name,
        action: Effect::Allow,
        dry_run: false,
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        api_groups: vec![target.group.clone()],
        resources: vec![resource],
        resource_names: names.to_vec(),
        namespaces,
        non_resource_urls: Vec::new(),
    }
}

/// Rule names must differ; a repeat (which the grouping should never make) gets a number.
fn unique_names(rules: &mut [Rule]) {
    let mut seen = BTreeSet::new();
    for rule in rules {
        let base = rule.name.clone();
        let mut number = 2;
        while !seen.insert(rule.name.clone()) {
            rule.name = format!("{base}-{number}");
            number += 1;
        }
    }
}

/// The policy file: one rule a line, `"dryRun": true` on a line of its own,
/// so that enforcing it is deleting that line.
fn policy_text(rules: &[Rule], dry_run: bool) -> String {
    let mut text = String::from("{\n");
    if dry_run {
        text.push_str("  \"dryRun\": true,\n");
    }
    text.push_str("  \"default_action\": \"deny\",\n");
    if rules.is_empty() {
        text.push_str("  \"rules\": []\n}\n");
        return text;
    }
    text.push_str("  \"rules\": [\n");
    let lines: Vec<String> = rules
        .iter()
        .map(|rule| format!("    {}", rule_json(rule)))
        .collect();
    text.push_str(&lines.join(",\n"));
    text.push_str("\n  ]\n}\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs;
    use podward::request_info::classify;

    fn access(lines: &[(&str, &str)]) -> logs::Log {
        let text: Vec<String> = lines
            .iter()
            .map(|(method, path)| {
                serde_json::json!({"method": method, "path": path, "code": 200, "details": "via_upstream",
                                   "pod": "team-a/web-0"})
                .to_string()
            })
            .collect();
        logs::read(&text.join("\n"))
    }

    const TRAFFIC: &[(&str, &str)] = &[
        ("GET", "/api/v1/namespaces/team-a/pods"),
        (
            "GET",
            "/api/v1/namespaces/team-a/pods?watch=1&fieldSelector=metadata.name%3Dweb-0",
        ),
        ("GET", "/api/v1/namespaces/team-a/configmaps/settings"),
        ("PATCH", "/api/v1/namespaces/team-a/configmaps/settings"),
        ("GET", "/api/v1/namespaces/team-a/pods/web-0/log"),
        ("GET", "/api/v1/namespaces/team-b/services"),
        ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews"),
        ("GET", "/api/v1/nodes/n1"),
        ("GET", "/apis"),
        ("GET", "/version"),
        ("POST", "/api/v1/namespaces/team-a/pods/web-0/exec"),
    ];

    fn learnt(options: &Options) -> (Learnt, Policy) {
        let log = access(TRAFFIC);
        let observed: Vec<&Observed> = log.observed.iter().collect();
        let learnt = learn(&observed, "team-a", options).unwrap();
        let policy = Policy::parse(learnt.text.as_bytes()).unwrap();
        (learnt, policy)
    }

    const NAMES: Options = Options {
        names: true,
        max_names: 10,
        dry_run: true,
    };

    #[test]
    fn the_least_policy_ready_to_review() {
        let (learnt, _) = learnt(&NAMES);
        assert_eq!(
            learnt.text,
            r#"{
  "dryRun": true,
  "default_action": "deny",
  "rules": [
    {"name": "get-patch-configmaps-named-in-own-namespace", "action": "allow", "verbs": ["get", "patch"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "namespaces": ["$self"]},
    {"name": "list-pods-in-own-namespace", "action": "allow", "verbs": ["list"], "apiGroups": [""], "resources": ["pods"], "namespaces": ["$self"]},
    {"name": "watch-pods-named-in-own-namespace", "action": "allow", "verbs": ["watch"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["web-0"], "namespaces": ["$self"]},
    {"name": "get-pods-log-named-in-own-namespace", "action": "allow", "verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"], "resourceNames": ["web-0"], "namespaces": ["$self"]},
    {"name": "list-services-in-team-b", "action": "allow", "verbs": ["list"], "apiGroups": [""], "resources": ["services"], "namespaces": ["team-b"]},
    {"name": "get-nodes-named", "action": "allow", "verbs": ["get"], "apiGroups": [""], "resources": ["nodes"], "resourceNames": ["n1"], "namespaces": [""]},
    {"name": "create-selfsubjectreviews.authentication.k8s.io", "action": "allow", "verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "namespaces": [""]},
    {"name": "get-non-resource-urls", "action": "allow", "verbs": ["get"], "nonResourceURLs": ["/apis", "/version"]}
  ]
}
"#
        );
        assert_eq!(learnt.learnt_from, 10);
        assert_eq!(learnt.left_denied.len(), 1);
        assert_eq!(learnt.left_denied[0].2, "kubectl-proxy/no-exec-or-attach");
        // Enforced by deleting the line that says dryRun.
        let enforced: String = learnt
            .text
            .lines()
            .filter(|l| !l.contains("\"dryRun\""))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!Policy::parse(enforced.as_bytes()).unwrap().has_dry_run());
    }

    #[test]
    fn what_the_traffic_did_not_use_is_denied() {
        for options in [
            NAMES,
            Options {
                names: false,
                max_names: 10,
                dry_run: false,
            },
        ] {
            let (_, policy) = learnt(&options);
            let allowed = |method: &str, path: &str| {
                policy
                    .candidate(&classify(method, path).unwrap(), "team-a")
                    .effect
                    == Effect::Allow
            };
            for (method, path) in &TRAFFIC[..10] {
                assert!(allowed(method, path), "{method} {path}");
            }
            for (method, path) in [
                ("POST", "/api/v1/namespaces/team-a/pods/web-0/exec"),
                (
                    "GET",
                    "/api/v1/namespaces/team-a/pods/web-0/exec?command=sh",
                ),
                ("POST", "/api/v1/namespaces/team-a/pods/web-0/attach"),
                ("DELETE", "/api/v1/namespaces/team-a/pods/web-0"),
                ("GET", "/api/v1/namespaces/team-b/pods"),
                ("GET", "/api/v1/pods"),
                ("GET", "/api/v1/namespaces/team-a/secrets"),
                ("PUT", "/api/v1/namespaces/team-a/configmaps/settings"),
                ("GET", "/api/v1/namespaces/team-a/configmaps"),
                ("POST", "/api/v1/namespaces/team-b/services"),
                ("DELETE", "/api/v1/nodes/n1"),
                ("GET", "/healthz"),
            ] {
                assert!(!allowed(method, path), "{method} {path}");
            }
            assert_eq!(
                allowed("GET", "/api/v1/namespaces/team-a/configmaps/other"),
                !options.names,
                "another name"
            );
        }
    }

    #[test]
    fn too_many_names_allow_any_name() {
        let lines: Vec<(String, String)> = (0..12)
            .map(|i| {
                (
                    "GET".to_string(),
                    format!("/api/v1/namespaces/team-a/pods/p{i}"),
                )
            })
            .collect();
        let lines: Vec<(&str, &str)> = lines
            .iter()
            .map(|(m, p)| (m.as_str(), p.as_str()))
            .collect();
        let log = access(&lines);
        let observed: Vec<&Observed> = log.observed.iter().collect();
        let learnt = learn(&observed, "team-a", &NAMES).unwrap();
        assert_eq!(
            learnt.names_dropped,
            ["rules/get-pods-in-own-namespace (12 names)"]
        );
        assert!(!learnt.text.contains("resourceNames"));
    }

    /// Learn's promise over random traffic: the policy allows a request
    /// exactly when the traffic used its verb on the same resource in the same
    /// namespace (the same name too, where the traffic named one), and the
    /// kubectl-proxy preset allows it.
    mod promise {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::select;

        const NAMESPACES: &[&str] = &["team-a", "team-b", ""];
        const RESOURCES: &[(&str, &str)] = &[
            ("api/v1", "pods"),
            ("api/v1", "configmaps"),
            ("api/v1", "pods/log"),
            ("api/v1", "pods/exec"),
            ("api/v1", "nodes"),
            ("apis/apps/v1", "deployments"),
            ("apis/apps/v1", "deployments/scale"),
        ];
        const NAMES: &[&str] = &["a", "b", ""];
        const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
        const URLS: &[&str] = &["/api", "/apis", "/version", "/healthz"];

        /// A request as (method, path), built from the small vocabulary above.
        fn request() -> impl Strategy<Value = (String, String)> {
            let resource = (
                select(METHODS),
                select(NAMESPACES),
                select(RESOURCES),
                select(NAMES),
                any::<bool>(),
            )
                .prop_map(|(method, namespace, (prefix, resource), name, watch)| {
                    let (resource, subresource) =
                        resource.split_once('/').unwrap_or((resource, ""));
                    let mut path = format!("/{prefix}");
                    if !namespace.is_empty() {
                        path.push_str(&format!("/namespaces/{namespace}"));
                    }
                    path.push_str(&format!("/{resource}"));
                    if !name.is_empty() {
                        path.push_str(&format!("/{name}"));
                    }
                    if !subresource.is_empty() {
                        path.push_str(&format!("/{subresource}"));
                    }
                    if watch && method == "GET" && name.is_empty() {
                        path.push_str("?watch=1");
                    }
                    (method.to_string(), path)
                });
            let url = (select(&["GET", "HEAD", "POST"][..]), select(URLS))
                .prop_map(|(method, url)| (method.to_string(), url.to_string()));
            prop_oneof![4 => resource, 1 => url]
        }

        /// What learn's rules are keyed by, and the name (empty: none).
        fn key(info: &podward::request_info::RequestInfo) -> (Stated, String) {
            let mut stated = Stated::of(info);
            let name = std::mem::take(&mut stated.name);
            (stated, name)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
            #[test]
            fn the_policy_allows_what_was_used_and_nothing_else(
                traffic in proptest::collection::vec(request(), 1..25),
                asked in proptest::collection::vec(request(), 1..25),
            ) {
                let lines: Vec<(&str, &str)> =
                    traffic.iter().map(|(m, p)| (m.as_str(), p.as_str())).collect();
                let log = access(&lines);
                let observed: Vec<&Observed> = log.observed.iter().collect();
                let options = Options { names: true, max_names: 1000, dry_run: false };
                let learnt = learn(&observed, "team-a", &options).unwrap();
                let policy = Policy::parse(learnt.text.as_bytes()).unwrap();
                let preset = Policy::parse(br#"{"preset": "kubectl-proxy"}"#).unwrap();
                let used: Vec<(Stated, String)> = traffic
                    .iter()
                    .filter_map(|(m, p)| classify(m, p).ok().map(|info| key(&info)))
                    .collect();
                for (method, path) in traffic.iter().chain(&asked) {
                    let Ok(info) = classify(method, path) else { continue };
                    let (what, name) = key(&info);
                    let covered = used.iter().any(|(u, n)| *u == what && (n.is_empty() || *n == name));
                    let preset_allows = preset.decide(&info, "team-a").effect == Effect::Allow;
                    let allowed = policy.candidate(&info, "team-a").effect == Effect::Allow;
                    prop_assert_eq!(allowed, covered && preset_allows, "{} {}\n{}", method, path, learnt.text);
                }
            }
        }
    }
}
