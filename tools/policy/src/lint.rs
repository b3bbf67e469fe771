//! `lint`: what a policy does that its author may not mean.
//!
//! - a rule shadowed by earlier ones, which never decides;
//! - an allow rule broader than the preset it sits on (it allows what the
//!   preset denies, and own rules come first);
//! - a deny rule that conservative semantics widen, and how;
//! - a name in `namespaces` or `resourceNames` that no request can carry.
//!
//! Every finding is decided by the sidecar's own matching
//! ([`podward::policy::matches`]) over representative requests: for each
//! group, resource and subresource a rule can name, every verb, and every
//! namespace and name the rules there mention, plus one that none mentions.
//! Two requests that agree on which of those values they carry are matched
//! alike by every rule, so what holds for the representatives holds for all
//! requests. Requests the API server does not serve (a `get` without a name,
//! a namespace on a cluster-scoped resource) are left out.

use crate::explain::rule_json;
use crate::requests::{is_cluster_scoped, Stated};
use podward::policy::{
    allow_matches, matches, scope_matches, Effect, Policy, PolicyConfig, Rule, RuleRef,
    NON_RESOURCE_VERBS,
};
use podward::request_info::{RequestInfo, RESOURCE_VERBS};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Note,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    /// `shadowed`, `overrides-preset`, `deny-widened`, `cannot-match`.
    pub kind: &'static str,
    pub rule: String,
    /// Where in the policy file: `policy.rules[2]`, or `policy.preset`.
    pub field: String,
    pub message: String,
    /// A request that shows it: described, and as HTTP.
    pub example: Option<String>,
}

impl Finding {
    pub fn to_json(&self) -> Value {
        json!({
            "severity": match self.severity { Severity::Warning => "warning", Severity::Note => "note" },
            "kind": self.kind, "rule": self.rule, "field": self.field,
            "message": self.message, "example": self.example,
        })
    }

    pub fn to_text(&self) -> String {
        let severity = match self.severity {
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        let mut text = format!(
            "{severity}: {} ({}): {}",
            self.rule, self.field, self.message
        );
        if let Some(example) = &self.example {
            text.push_str(&format!("\n    e.g. {example}"));
        }
        text
    }
}

/// A request, owned: one of the representatives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rep {
    resource_request: bool,
    verb: &'static str,
    group: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    url: String,
}

impl Rep {
    fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            is_resource_request: self.resource_request,
            path: &self.url,
            verb: self.verb,
            api_prefix: if self.group.is_empty() { "api" } else { "apis" },
            api_group: &self.group,
            api_version: "v1",
            namespace: &self.namespace,
            resource: &self.resource,
            subresource: &self.subresource,
            name: Cow::Borrowed(&self.name),
        }
    }

    /// Whether this makes a plainer example than `other`: a namespaced
    /// resource in a namespace, a name, and the simplest verb.
    fn plainer_than(&self, other: &Rep) -> bool {
        let rank = |rep: &Rep| {
            let cluster_scoped = is_cluster_scoped(&rep.group, &rep.resource);
            let odd_namespace = rep.namespace.is_empty() != cluster_scoped
                && !matches!(rep.verb, "list" | "watch" | "deletecollection");
            let across = rep.namespace.is_empty() && !cluster_scoped;
            let verb = RESOURCE_VERBS
                .iter()
                .position(|v| *v == rep.verb)
                .unwrap_or(0);
            (odd_namespace, across, verb)
        };
        rank(self) < rank(other)
    }

    fn example(&self) -> String {
        let stated = Stated::of(&self.info());
        match stated.to_http() {
            Ok((method, target)) => format!("{} ({method} {target})", stated.describe()),
            Err(_) => stated.describe(),
        }
    }

    /// Whether the API server serves such a request at all.
    fn is_real(&self) -> bool {
        if !self.resource_request {
            return true;
        }
        let named = !self.name.is_empty();
        if self.name.contains('/') || self.name == "." || self.name == ".." {
            return false;
        }
        let sub = !self.subresource.is_empty();
        let verb_fits = match self.verb {
            "list" | "watch" => !sub,
            "deletecollection" => !sub && !named,
            "create" => named == sub,
            _ => named, // get, update, patch, delete, proxy
        };
        if !verb_fits {
            return false;
        }
        if self.group.is_empty() && self.resource == "namespaces" {
            // A namespace's own requests carry it as their namespace and name.
            return self.namespace == self.name;
        }
        if is_cluster_scoped(&self.group, &self.resource) {
            return self.namespace.is_empty();
        }
        true
    }
}

/// Values no rule mentions: a representative of everything else.
fn fresh(base: &str, taken: &BTreeSet<String>) -> String {
    let mut value = base.to_string();
    let mut number = 2;
    while taken.contains(&value) {
        value = format!("{base}-{number}");
        number += 1;
    }
    value
}

/// Every value the rules mention, per dimension, and one fresh value each.
struct Vocabulary {
    groups: Vec<String>,
    resources: Vec<String>,
    subresources: Vec<String>,
    urls: Vec<String>,
    other_namespace: String,
    other_name: String,
    self_namespace: String,
}

impl Vocabulary {
    fn of(rules: &[&Rule], self_namespace: Option<&str>) -> Vocabulary {
        let mut groups = BTreeSet::from([String::new()]);
        let mut resources = BTreeSet::new();
        let mut subresources = BTreeSet::from([String::new()]);
        let mut namespaces = BTreeSet::new();
        let mut names = BTreeSet::new();
        let mut urls = BTreeSet::new();
        for rule in rules {
            groups.extend(rule.api_groups.iter().filter(|g| *g != "*").cloned());
            for pattern in &rule.resources {
                let (resource, subresource) = pattern.split_once('/').unwrap_or((pattern, ""));
                if resource != "*" {
                    resources.insert(resource.to_string());
                }
                if subresource != "*" {
                    subresources.insert(subresource.to_string());
                }
            }
            namespaces.extend(rule.namespaces.iter().cloned());
            names.extend(rule.resource_names.iter().cloned());
            urls.extend(rule.non_resource_urls.iter().cloned());
        }
        let fresh_group = fresh("example.com", &groups);
        let fresh_resource = fresh("others", &resources);
        let fresh_subresource = fresh("other", &subresources);
        let self_namespace = match self_namespace {
            Some(ns) => ns.to_string(),
            None => fresh("pod-namespace", &namespaces),
        };
        let mut taken = namespaces.clone();
        taken.insert(self_namespace.clone());
        let other_namespace = fresh("other-namespace", &taken);
        let other_name = fresh("other-name", &names);
        groups.insert(fresh_group);
        resources.insert(fresh_resource);
        subresources.insert(fresh_subresource);
        // Paths: each exact one, each prefix with something after it, and one no rule names.
        let mut paths = BTreeSet::new();
        for url in &urls {
            match url.strip_suffix('*') {
                Some(prefix) => {
                    let prefix = if prefix.is_empty() { "/" } else { prefix };
                    paths.insert(prefix.to_string());
                    paths.insert(format!("{prefix}other"));
                }
                None => {
                    paths.insert(url.clone());
                }
            }
        }
        paths.insert(fresh("/other", &paths));
        Vocabulary {
            groups: groups.into_iter().collect(),
            resources: resources.into_iter().collect(),
            subresources: subresources.into_iter().collect(),
            urls: paths.into_iter().collect(),
            other_namespace,
            other_name,
            self_namespace,
        }
    }

    /// The representatives of what `rule` can match (a superset: callers
    /// match each against the rule).
    fn reps(&self, rule: &Rule, rules: &[&Rule]) -> Vec<Rep> {
        let mut reps = Vec::new();
        if !rule.non_resource_urls.is_empty() {
            for url in &self.urls {
                for verb in NON_RESOURCE_VERBS {
                    reps.push(Rep {
                        resource_request: false,
                        verb,
                        group: String::new(),
                        resource: String::new(),
                        subresource: String::new(),
                        namespace: String::new(),
                        name: String::new(),
                        url: url.clone(),
                    });
                }
            }
            return reps;
        }
        let groups: Vec<&String> = if rule.api_groups.iter().any(|g| g == "*") {
            self.groups.iter().collect()
        } else {
            rule.api_groups.iter().collect()
        };
        let mut cells = BTreeSet::new();
        for pattern in &rule.resources {
            let (resource, subresource) = pattern.split_once('/').unwrap_or((pattern, ""));
            let resources: Vec<&str> = match resource {
                "*" => self.resources.iter().map(String::as_str).collect(),
                resource => vec![resource],
            };
            let subresources: Vec<&str> = match (pattern.contains('/'), subresource) {
                (false, _) if resource == "*" => {
                    self.subresources.iter().map(String::as_str).collect()
                }
                (false, _) => vec![""],
                (true, "*") => self
                    .subresources
                    .iter()
                    .map(String::as_str)
                    .filter(|s| !s.is_empty())
                    .collect(),
                (true, subresource) => vec![subresource],
            };
            for resource in &resources {
                for subresource in &subresources {
                    cells.insert((*resource, *subresource));
                }
            }
        }
        for group in groups {
            for (resource, subresource) in &cells {
                let probe = Rep {
                    resource_request: true,
                    verb: "get",
                    group: group.clone(),
                    resource: resource.to_string(),
                    subresource: subresource.to_string(),
                    namespace: String::new(),
                    name: String::new(),
                    url: String::new(),
                };
                // The names and namespaces that the rules about this resource mention.
                let here: Vec<&&Rule> = rules
                    .iter()
                    .filter(|r| scope_matches(r, &probe.info()))
                    .collect();
                let mut namespaces = BTreeSet::from([
                    String::new(),
                    self.other_namespace.clone(),
                    self.self_namespace.clone(),
                ]);
                let mut names = BTreeSet::from([String::new(), self.other_name.clone()]);
                for rule in &here {
                    namespaces.extend(
                        rule.namespaces
                            .iter()
                            .filter(|ns| *ns != "*" && *ns != "$self")
                            .cloned(),
                    );
                    names.extend(rule.resource_names.iter().cloned());
                }
                if group.is_empty() && *resource == "namespaces" {
                    // A namespace is named by its namespace.
                    names.extend(namespaces.iter().cloned());
                    namespaces.extend(names.iter().cloned());
                }
                for verb in RESOURCE_VERBS {
                    for namespace in &namespaces {
                        for name in &names {
                            let rep = Rep {
                                namespace: namespace.clone(),
                                name: name.clone(),
                                verb,
                                ..probe.clone()
                            };
                            if rep.is_real() {
                                reps.push(rep);
                            }
                        }
                    }
                }
            }
        }
        reps
    }
}

/// Lints `policy`; `self_namespace` is the pod's namespace, if known.
pub fn lint(policy: &Policy, self_namespace: Option<&str>) -> Vec<Finding> {
    let all: &[(RuleRef, Rule)] = policy.rules();
    let rules: Vec<&Rule> = all.iter().map(|(_, rule)| rule).collect();
    let vocabulary = Vocabulary::of(&rules, self_namespace);
    let own = &vocabulary.self_namespace;
    let field = |index: usize| match all[index].0.as_str().strip_prefix("rules/") {
        Some(_) => format!("policy.rules[{index}]"),
        None => "policy.preset".to_string(),
    };
    let mut findings = Vec::new();
    let (_, default_rule) = policy.default_decision();
    let preset_name = all
        .iter()
        .map(|(rule_ref, _)| rule_ref.as_str())
        .chain([default_rule.as_str()])
        .filter_map(|name| name.split_once('/').map(|(origin, _)| origin))
        .find(|origin| *origin != "rules");
    let preset = preset_name.and_then(|name| {
        Policy::build(&PolicyConfig {
            preset: Some(name.to_string()),
            ..PolicyConfig::default()
        })
        .ok()
    });

    for (index, (rule_ref, rule)) in all.iter().enumerate() {
        let name = rule_ref.to_string();
        let reps: Vec<Rep> = vocabulary
            .reps(rule, &rules)
            .into_iter()
            .filter(|rep| matches(rule, &rep.info(), own))
            .collect();
        if reps.is_empty() {
            let why = unmatched_names(&name, field(index), rule, &reps, own);
            if why.is_empty() {
                findings.push(Finding {
                    severity: Severity::Warning,
                    kind: "cannot-match",
                    rule: name,
                    field: field(index),
                    message: format!(
                        "matches no request the API server serves: {}",
                        rule_json(rule)
                    ),
                    example: None,
                });
            }
            findings.extend(why);
            continue;
        }
        // Who decides each of its requests before it (dry-run rules only for a dry-run rule).
        let decides_first = |rep: &Rep| {
            all[..index]
                .iter()
                .find(|(_, earlier)| {
                    (rule.dry_run || !earlier.dry_run) && matches(earlier, &rep.info(), own)
                })
                .map(|(earlier_ref, _)| earlier_ref.as_str())
        };
        let earlier: Vec<Option<&str>> = reps.iter().map(decides_first).collect();
        if earlier.iter().all(Option::is_some) {
            let by: BTreeSet<&str> = earlier.iter().flatten().copied().collect();
            findings.push(Finding {
                severity: Severity::Warning,
                kind: "shadowed",
                rule: name.clone(),
                field: field(index),
                message: format!(
                    "never decides: every request it matches is decided first by {}",
                    by.into_iter().collect::<Vec<_>>().join(", ")
                ),
                example: None,
            });
            continue;
        }
        let decided: Vec<&Rep> = reps
            .iter()
            .zip(&earlier)
            .filter(|(_, earlier)| earlier.is_none())
            .map(|(rep, _)| rep)
            .collect();
        if rule.action == Effect::Allow && rule_ref.as_str().starts_with("rules/") {
            if let Some(preset) = &preset {
                findings.extend(overrides(&name, field(index), preset, &decided, own));
            }
        }
        if rule.action == Effect::Deny {
            findings.extend(widenings(&name, field(index), rule, &reps, own));
        }
        findings.extend(unmatched_names(&name, field(index), rule, &reps, own));
    }
    findings.sort_by_key(|finding| finding.severity);
    findings
}

/// An own allow rule that allows what the preset alone would deny.
fn overrides(
    name: &str,
    field: String,
    preset: &Policy,
    decided: &[&Rep],
    own: &str,
) -> Vec<Finding> {
    let mut by_rule: BTreeMap<String, &Rep> = BTreeMap::new();
    for rep in decided {
        let decision = preset.decide(&rep.info(), own);
        if decision.effect == Effect::Deny {
            let example = by_rule.entry(decision.rule.to_string()).or_insert(rep);
            if rep.plainer_than(example) {
                *example = rep;
            }
        }
    }
    let (_, preset_default) = preset.default_decision();
    by_rule
        .into_iter()
        .map(|(preset_rule, rep)| {
            let by_default = preset_rule == preset_default.as_str();
            Finding {
                // Allowing past a preset's default is what own rules are for; past its deny rules, rarely.
                severity: if by_default { Severity::Note } else { Severity::Warning },
                kind: "overrides-preset",
                rule: name.to_string(),
                field: field.clone(),
                message: if by_default {
                    format!("allows what the preset denies by default ({preset_rule}); own rules come before the preset")
                } else {
                    format!("allows what {preset_rule} denies: own rules come before the preset's, so this rule overrides it")
                },
                example: Some(rep.example()),
            }
        })
        .collect()
}

/// How conservative semantics widen a deny rule beyond what it names.
fn widenings<'r>(
    name: &str,
    field: String,
    rule: &Rule,
    reps: &'r [Rep],
    own: &str,
) -> Vec<Finding> {
    let mut added_verbs = BTreeSet::new();
    let (mut verb_example, mut name_example, mut namespace_example) = (None, None, None);
    for rep in reps {
        let info = rep.info();
        if allow_matches(rule, &info, own) {
            continue;
        }
        // Each way the request escapes what the rule names, as RBAC would read it.
        let plainest = |example: &mut Option<&'r Rep>| match example {
            Some(known) if !rep.plainer_than(known) => {}
            _ => *example = Some(rep),
        };
        if !rule
            .verbs
            .iter()
            .any(|verb| verb == "*" || verb == rep.verb)
        {
            added_verbs.insert(rep.verb);
            plainest(&mut verb_example);
        }
        if !(rule.resource_names.is_empty() || rule.resource_names.contains(&rep.name)) {
            plainest(&mut name_example);
        }
        let listed_namespace = rule.namespaces.is_empty()
            || rule.namespaces.iter().any(|ns| {
                ns == "*" || *ns == rep.namespace || (ns == "$self" && rep.namespace == own)
            });
        if !listed_namespace {
            plainest(&mut namespace_example);
        }
    }
    let note = |message: String, example: &Rep| Finding {
        severity: Severity::Note,
        kind: "deny-widened",
        rule: name.to_string(),
        field: field.clone(),
        message,
        example: Some(example.example()),
    };
    let mut findings = Vec::new();
    if let Some(example) = verb_example {
        let added: Vec<&str> = added_verbs.into_iter().collect();
        findings.push(note(
            format!(
                "a deny of {} also denies {}: the verbs of a family (get, list, watch; update, patch; \
                 delete, deletecollection) read or change the same objects",
                rule.verbs.join(", "),
                added.join(", ")
            ),
            example,
        ));
    }
    if let Some(example) = name_example {
        findings.push(note(
            format!(
                "resourceNames {:?} also denies every list, watch and deletecollection that could return \
                 or remove them: all but those pinned to another name by fieldSelector=metadata.name",
                rule.resource_names
            ),
            example,
        ));
    }
    if let Some(example) = namespace_example {
        findings.push(note(
            format!(
                "namespaces {:?} also denies every list, watch and deletecollection without a namespace \
                 (across all namespaces, or of a cluster-scoped resource: podward cannot tell them apart)",
                rule.namespaces
            ),
            example,
        ));
    }
    findings
}

/// Names in `resourceNames` and `namespaces` that no request the rule matches carries.
fn unmatched_names(
    name: &str,
    field: String,
    rule: &Rule,
    reps: &[Rep],
    own: &str,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for object in &rule.resource_names {
        if !reps.iter().any(|rep| rep.name == *object) {
            let why = if object.contains('/') || object == "." || object == ".." {
                "an object's name is one path segment".to_string()
            } else {
                format!(
                    "no request to {} {} names an object (a create's name is in its body; a \
                     deletecollection names none)",
                    rule.verbs.join(", "),
                    rule.resources.join(", ")
                )
            };
            findings.push(Finding {
                severity: Severity::Warning,
                kind: "cannot-match",
                rule: name.to_string(),
                field: format!("{field}.resourceNames"),
                message: format!("{object:?} cannot match: {why}"),
                example: None,
            });
        }
    }
    for namespace in &rule.namespaces {
        let wanted = match namespace.as_str() {
            "*" => continue,
            "$self" => own,
            other => other,
        };
        if !reps.iter().any(|rep| rep.namespace == wanted) {
            let cluster_scoped = rule.resources.iter().all(|resource| {
                let resource = resource.split('/').next().unwrap_or_default();
                rule.api_groups
                    .iter()
                    .all(|group| is_cluster_scoped(group, resource))
            });
            let why = if wanted.is_empty() {
                "only lists and watches across all namespaces, and cluster-scoped resources, carry no namespace".to_string()
            } else if cluster_scoped {
                format!(
                    "{} are cluster-scoped: their requests carry no namespace",
                    rule.resources.join(", ")
                )
            } else {
                "no request the rule matches is in it".to_string()
            };
            findings.push(Finding {
                severity: Severity::Warning,
                kind: "cannot-match",
                rule: name.to_string(),
                field: format!("{field}.namespaces"),
                message: format!("{namespace:?} cannot match: {why}"),
                example: None,
            });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(policy: &str) -> Vec<(Severity, &'static str, String, String)> {
        let policy = Policy::parse(policy.as_bytes()).unwrap();
        lint(&policy, Some("team-a"))
            .into_iter()
            .map(|f| (f.severity, f.kind, f.rule, f.message))
            .collect()
    }

    fn has(
        found: &[(Severity, &'static str, String, String)],
        kind: &str,
        rule: &str,
        text: &str,
    ) -> bool {
        found
            .iter()
            .any(|(_, k, r, m)| *k == kind && r == rule && m.contains(text))
    }

    #[test]
    fn the_presets_are_clean() {
        for (preset, _) in podward::policy::PRESETS {
            let found = findings(&format!(r#"{{"preset": "{preset}"}}"#));
            assert!(
                found
                    .iter()
                    .all(|(severity, ..)| *severity == Severity::Note),
                "{preset}: {found:#?}"
            );
        }
    }

    #[test]
    fn shadowed_rules() {
        let found = findings(
            r#"{"default_action": "deny", "rules": [
                {"name": "read", "action": "allow", "verbs": ["get", "list"], "apiGroups": ["*"], "resources": ["*"]},
                {"name": "read-pods", "action": "allow", "verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "namespaces": ["$self"]},
                {"name": "no-secrets", "action": "deny", "verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]},
                {"name": "watch-pods", "action": "allow", "verbs": ["watch", "get"], "apiGroups": [""], "resources": ["pods"]}]}"#,
        );
        assert!(
            has(
                &found,
                "shadowed",
                "rules/read-pods",
                "decided first by rules/read"
            ),
            "{found:#?}"
        );
        // A deny of get widens to list and watch, which `read` does not cover entirely: it still decides some.
        assert!(
            !has(&found, "shadowed", "rules/no-secrets", ""),
            "{found:#?}"
        );
        assert!(
            !has(&found, "shadowed", "rules/watch-pods", ""),
            "{found:#?}"
        );
    }

    #[test]
    fn allow_rules_broader_than_their_preset() {
        let found = findings(
            r#"{"preset": "kubectl-proxy", "rules": [
                {"name": "debug", "action": "allow", "verbs": ["*"], "apiGroups": [""], "resources": ["pods/*"]}]}"#,
        );
        assert!(
            has(
                &found,
                "overrides-preset",
                "rules/debug",
                "allows what kubectl-proxy/no-exec-or-attach denies"
            ),
            "{found:#?}"
        );
        assert!(
            has(
                &found,
                "overrides-preset",
                "rules/debug",
                "kubectl-proxy/no-exec-equivalents"
            ),
            "{found:#?}"
        );
        let found = findings(
            r#"{"preset": "read-only", "rules": [
                {"name": "own-configmaps", "action": "allow", "verbs": ["create"], "apiGroups": [""], "resources": ["configmaps"], "namespaces": ["$self"]}]}"#,
        );
        // The preset's own notes (its deny of the sidecar's ConfigMaps) aside.
        let own: Vec<_> = found
            .iter()
            .filter(|(_, _, rule, _)| rule.starts_with("rules/"))
            .collect();
        let [(severity, kind, _, message)] = &own[..] else {
            panic!("{found:#?}")
        };
        assert_eq!((*severity, *kind), (Severity::Note, "overrides-preset"));
        assert!(message.contains("read-only/default"), "{message}");
    }

    #[test]
    fn deny_rules_widened_say_how() {
        let found = findings(
            r#"{"default_action": "allow", "rules": [
                {"name": "secret-cm", "action": "deny", "verbs": ["get"], "apiGroups": [""],
                 "resources": ["configmaps"], "resourceNames": ["top-secret"], "namespaces": ["kube-system"]}]}"#,
        );
        assert!(
            has(
                &found,
                "deny-widened",
                "rules/secret-cm",
                "a deny of get also denies list, watch"
            ),
            "{found:#?}"
        );
        assert!(
            has(
                &found,
                "deny-widened",
                "rules/secret-cm",
                "resourceNames [\"top-secret\"] also denies"
            ),
            "{found:#?}"
        );
        assert!(
            has(
                &found,
                "deny-widened",
                "rules/secret-cm",
                "namespaces [\"kube-system\"] also denies"
            ),
            "{found:#?}"
        );
        let policy = Policy::parse(br#"{"default_action": "allow", "rules": [{"name": "n", "action": "deny", "verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"], "namespaces": ["kube-system"]}]}"#).unwrap();
        let example = lint(&policy, None)
            .into_iter()
            .find(|f| f.kind == "deny-widened")
            .unwrap()
            .example
            .unwrap();
        assert!(
            example.contains("GET /api/v1/configmaps") || example.contains("DELETE"),
            "{example}"
        );
    }

    #[test]
    fn names_that_cannot_match() {
        let found = findings(
            r#"{"default_action": "deny", "rules": [
                {"name": "make-cm", "action": "allow", "verbs": ["create"], "apiGroups": [""],
                 "resources": ["configmaps"], "resourceNames": ["settings"]},
                {"name": "nodes", "action": "allow", "verbs": ["get"], "apiGroups": [""],
                 "resources": ["nodes"], "namespaces": ["team-a", ""]},
                {"name": "slash", "action": "allow", "verbs": ["get"], "apiGroups": [""],
                 "resources": ["pods"], "resourceNames": ["a/b", "web"]},
                {"name": "pod-create", "action": "allow", "verbs": ["create"], "apiGroups": [""],
                 "resources": ["pods/eviction"], "resourceNames": ["web"]}]}"#,
        );
        assert!(
            has(
                &found,
                "cannot-match",
                "rules/make-cm",
                "\"settings\" cannot match: no request to create"
            ),
            "{found:#?}"
        );
        assert!(
            has(
                &found,
                "cannot-match",
                "rules/nodes",
                "\"team-a\" cannot match: nodes are cluster-scoped"
            ),
            "{found:#?}"
        );
        assert!(
            !has(&found, "cannot-match", "rules/nodes", "\"\" cannot"),
            "{found:#?}"
        );
        assert!(
            has(
                &found,
                "cannot-match",
                "rules/slash",
                "\"a/b\" cannot match"
            ),
            "{found:#?}"
        );
        assert!(
            !has(&found, "cannot-match", "rules/slash", "\"web\""),
            "{found:#?}"
        );
        assert!(
            !has(&found, "cannot-match", "rules/pod-create", ""),
            "{found:#?}"
        );
    }
}
