//! Who may use the pod's identity for what: ordered rules written like RBAC
//! `PolicyRule`s, each allowing or denying, then a default.
//!
//! Rules match a [`RequestInfo`] the way RBAC does (`*` wildcards, `pods/exec`
//! subresource notation, `*/scale`, trailing-`*` non-resource URLs). podward adds
//! `namespaces`, where `$self` is the pod's own namespace and `""` is a request
//! without a namespace (cluster-scoped, or across all namespaces).
//!
//! Allow rules mean exactly what RBAC means. Deny rules are conservative: they
//! also stop every request that could read or change what they name, so that a
//! deny cannot be listed around (see [`deny_matches`]).
//!
//! Dry-run: a deny rule marked `dryRun` decides nothing; when it is the first
//! rule to match a request the enforced decision allows, the decision names it
//! ([`Decision::dry_run`]), so that podward can record that the request would
//! have been denied. A whole policy marked `dryRun` is the candidate, while the
//! [`DEFAULT_PRESET`] is enforced in its place: trying out a policy never loosens
//! the shipped default, and enforcing it is one edit (deleting `dryRun`).

use crate::fields::{field_error, parse_json, FieldError, Object};
use crate::prelude::*;
use crate::request_info::{RequestInfo, RESOURCE_VERBS};
use crate::status::Quoted;
use alloc::boxed::Box;
use core::fmt;
use serde_json::Value;

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
    /// A deny rule that is only recorded, never enforced.
    pub dry_run: bool,
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
    /// The whole policy is tried out, with [`DEFAULT_PRESET`] enforced meanwhile.
    pub dry_run: bool,
}

impl PolicyConfig {
    pub fn read(mut object: Object) -> Result<PolicyConfig, FieldError> {
        let preset = object.string("preset")?;
        let default_action = object.choice("default_action", EFFECTS)?;
        let dry_run = object.boolean("dryRun")?.unwrap_or(false);
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
            dry_run,
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
        let dry_run = object.boolean("dryRun")?.unwrap_or(false);
        let mut list = |key| object.strings(key).map(Option::unwrap_or_default);
        let rule = Rule {
            name,
            action,
            dry_run,
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
    // kubectl proxy's default --reject-paths (^/api/.*/pods/.*/exec,
    // ^/api/.*/pods/.*/attach), and the other ways to run a command in a pod
    // that kubectl proxy lets through: a debug container, and the kubelet's
    // own exec reached through the node proxy.
    (
        "kubectl-proxy",
        r#"{"default_action": "allow", "rules": [
            {"name": "no-exec-or-attach", "action": "deny", "verbs": ["*"],
             "apiGroups": [""], "resources": ["pods/exec", "pods/attach"]},
            {"name": "no-exec-equivalents", "action": "deny", "verbs": ["*"],
             "apiGroups": [""], "resources": ["pods/ephemeralcontainers", "nodes/proxy"]},
            {"name": "no-node-proxy", "action": "deny", "verbs": ["proxy"],
             "apiGroups": [""], "resources": ["nodes"]}]}"#,
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
    /// What is enforced, and the rule (or default) that decided it.
    pub effect: Effect,
    pub rule: &'p RuleRef,
    /// When the request is allowed but a dry-run deny would have stopped it:
    /// that rule.
    pub dry_run: Option<&'p RuleRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<(RuleRef, Rule)>,
    default_effect: Effect,
    default_rule: RuleRef,
    /// A policy in dry-run as a whole: what is enforced in its place.
    baseline: Option<Box<Policy>>,
}

const NON_RESOURCE_VERBS: &[&str] = &["get", "head", "post", "put", "patch", "delete", "options"];

impl Policy {
    /// A policy file: the same JSON as the configuration's `policy` field.
    pub fn parse(json: &[u8]) -> Result<Policy, FieldError> {
        let value = parse_json(json)?;
        Policy::build(&PolicyConfig::read(Object::new(&value, "policy")?)?)
    }

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
        for (index, (rule_ref, _)) in rules.iter().enumerate() {
            if rules
                .get(..index)
                .into_iter()
                .flatten()
                .any(|(seen, _)| seen == rule_ref)
            {
                return Err(field_error(
                    "policy.rules",
                    format!("two rules are named {}", Quoted(rule_ref.as_str())),
                ));
            }
        }
        let default_rule = RuleRef::new(config.preset.as_deref().unwrap_or("rules"), "default");
        let baseline = match config.dry_run {
            false => None,
            true => Some(Box::new(Policy::build(&PolicyConfig {
                preset: Some(DEFAULT_PRESET.into()),
                ..PolicyConfig::default()
            })?)),
        };
        Ok(Policy {
            rules,
            default_effect,
            default_rule,
            baseline,
        })
    }

    /// The first rule that matches and is not dry-run decides; `self_namespace`
    /// is what `$self` means. A dry-run deny met on the way is named when the
    /// request is allowed.
    pub fn decide(&self, request: &RequestInfo, self_namespace: &str) -> Decision<'_> {
        if let Some(baseline) = &self.baseline {
            let enforced = baseline.decide(request, self_namespace);
            let candidate = self.candidate(request, self_namespace);
            let would_deny = enforced.effect == Effect::Allow && candidate.effect == Effect::Deny;
            return Decision {
                dry_run: would_deny.then_some(candidate.rule),
                ..enforced
            };
        }
        let mut dry_run = None;
        for (rule_ref, rule) in &self.rules {
            if matches(rule, request, self_namespace) {
                if rule.dry_run {
                    dry_run = dry_run.or(Some(rule_ref));
                    continue;
                }
                return Decision {
                    effect: rule.action,
                    rule: rule_ref,
                    dry_run: dry_run.filter(|_| rule.action == Effect::Allow),
                };
            }
        }
        Decision {
            effect: self.default_effect,
            rule: &self.default_rule,
            dry_run: dry_run.filter(|_| self.default_effect == Effect::Allow),
        }
    }

    /// What the policy would decide were nothing in it dry-run: the first
    /// matching rule, dry-run or not, decides (the policy's own rules when the
    /// whole policy is dry-run). `dry_run` is always `None`.
    pub fn candidate(&self, request: &RequestInfo, self_namespace: &str) -> Decision<'_> {
        let (effect, rule) = self
            .rules
            .iter()
            .find(|(_, rule)| matches(rule, request, self_namespace))
            .map_or(
                (self.default_effect, &self.default_rule),
                |(rule_ref, rule)| (rule.action, rule_ref),
            );
        Decision {
            effect,
            rule,
            dry_run: None,
        }
    }

    /// Whether anything in the policy is dry-run.
    pub fn has_dry_run(&self) -> bool {
        self.baseline.is_some() || self.rules.iter().any(|(_, rule)| rule.dry_run)
    }

    /// Every rule that can decide what is enforced, the default included.
    pub fn rule_refs(&self) -> impl Iterator<Item = &RuleRef> {
        let enforced = self.baseline.as_deref().unwrap_or(self);
        enforced
            .rules
            .iter()
            .filter(|(_, rule)| !rule.dry_run)
            .map(|(rule_ref, _)| rule_ref)
            .chain(core::iter::once(&enforced.default_rule))
    }

    /// Every rule a [`Decision::dry_run`] can name.
    pub fn dry_run_refs(&self) -> impl Iterator<Item = &RuleRef> {
        let whole = self.baseline.is_some();
        let default = (whole && self.default_effect == Effect::Deny).then_some(&self.default_rule);
        self.rules
            .iter()
            .filter(move |(_, rule)| rule.action == Effect::Deny && (whole || rule.dry_run))
            .map(|(rule_ref, _)| rule_ref)
            .chain(default)
    }

    /// The rules in order, each with the name decisions give it, then the
    /// default: for tools that read a policy (`podward-policy lint`).
    pub fn rules(&self) -> &[(RuleRef, Rule)] {
        &self.rules
    }

    pub fn default_decision(&self) -> (Effect, &RuleRef) {
        (self.default_effect, &self.default_rule)
    }

    /// What a whole policy in dry-run enforces meanwhile.
    pub fn baseline(&self) -> Option<&Policy> {
        self.baseline.as_deref()
    }
}

const SELF_NAMESPACE: &str = "$self";

fn preset(name: &str) -> Result<PolicyConfig, FieldError> {
    let Some((_, json)) = PRESETS.iter().find(|(preset, _)| *preset == name) else {
        let known: Vec<&str> = PRESETS.iter().map(|(preset, _)| *preset).collect();
        return Err(field_error(
            "policy.preset",
            format!(
                "unknown preset {}; known presets: {}",
                Quoted(name),
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
    if rule.dry_run && rule.action == Effect::Allow {
        return Err((
            "dryRun",
            "only a deny rule can be dry-run (an allow rule decides as soon as it matches); \
             to try out a policy that allows more, mark the whole policy \"dryRun\""
                .into(),
        ));
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
                "unknown verb {}; expected \"*\" or one of {}",
                Quoted(verb),
                known_verbs.join(", ")
            ),
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
        return check_each("nonResourceURLs", &rule.non_resource_urls, url_problem);
    }
    if rule.api_groups.is_empty() {
        return Err((
            "apiGroups",
            "is required with resources: \"\" is the core group, \"*\" any group".into(),
        ));
    }
    check_each("apiGroups", &rule.api_groups, api_group_problem)?;
    check_each("resources", &rule.resources, resource_problem)?;
    check_each("resourceNames", &rule.resource_names, |name| {
        name.is_empty().then_some("an empty name matches nothing")
    })?;
    check_each("namespaces", &rule.namespaces, namespace_problem)?;
    let only_creates = rule.verbs.iter().all(|verb| verb == "create");
    if rule.action == Effect::Deny && only_creates && !rule.resource_names.is_empty() {
        return Err((
            "resourceNames",
            "cannot narrow a deny of create: a new object's name is in the request body, \
             which podward does not read; deny create on the whole resource instead"
                .into(),
        ));
    }
    Ok(())
}

/// The first entry of a list that `problem` finds fault with, as an error.
fn check_each(
    field: &'static str,
    values: &[String],
    problem: impl Fn(&str) -> Option<&'static str>,
) -> Result<(), (&'static str, String)> {
    for value in values {
        if let Some(problem) = problem(value) {
            return Err((field, format!("{}: {problem}", Quoted(value))));
        }
    }
    Ok(())
}

fn url_problem(url: &str) -> Option<&'static str> {
    if url != "*" && !url.starts_with('/') {
        Some("must start with \"/\" or be \"*\"")
    } else if url.trim_end_matches('*').contains('*') {
        Some("may hold \"*\" only at its end")
    } else {
        None
    }
}

/// Lower-case letters, digits, `-` and `.`: the API server's names for
/// groups, resources and namespaces have no others, so anything else would
/// silently never match.
fn is_api_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn api_group_problem(group: &str) -> Option<&'static str> {
    (!group.is_empty() && group != "*" && !is_api_name(group))
        .then_some("is not an API group: lower-case letters, digits, '-' and '.', or \"\" or \"*\"")
}

fn resource_problem(resource: &str) -> Option<&'static str> {
    let mut parts = resource.split('/');
    let (Some(name), subresource) = (parts.next(), parts.next()) else {
        return Some("is empty");
    };
    if parts.next().is_some() {
        return Some("has more than one '/': write resource or resource/subresource");
    }
    let usable = |part: &str| part == "*" || is_api_name(part);
    if !usable(name) || !subresource.is_none_or(usable) {
        return Some("is not a resource: lower-case letters, digits, '-' and '.', or \"*\"");
    }
    None
}

fn namespace_problem(namespace: &str) -> Option<&'static str> {
    match namespace {
        "" | "*" | SELF_NAMESPACE => None,
        _ if namespace.starts_with('$') => Some("unknown variable; the only one is \"$self\""),
        _ if !is_api_name(namespace) || namespace.contains('.') || namespace.len() > 63 => {
            Some("is not a namespace name: lower-case letters, digits and '-', at most 63")
        }
        _ => None,
    }
}

/// Whether `rule` matches, by its action's meaning (see [`allow_matches`] and
/// [`deny_matches`]).
pub fn matches(rule: &Rule, request: &RequestInfo, self_namespace: &str) -> bool {
    match rule.action {
        Effect::Allow => allow_matches(rule, request, self_namespace),
        Effect::Deny => deny_matches(rule, request, self_namespace),
    }
}

/// RBAC's own matching.
pub fn allow_matches(rule: &Rule, request: &RequestInfo, self_namespace: &str) -> bool {
    rule.verbs.iter().any(|v| v == "*" || v == request.verb)
        && scope_matches(rule, request)
        && (rule.resource_names.is_empty()
            || rule.resource_names.iter().any(|n| *n == *request.name))
        && namespace_listed(rule, request.namespace, self_namespace)
}

/// A deny rule stops what it names and every request that could read or
/// change it another way:
/// - a denied verb denies its whole family: `get`, `list` and `watch` all read
///   the same objects, `update` and `patch` both change them, `delete` and
///   `deletecollection` both remove them;
/// - a list, watch or deletecollection without a name (or pinned by a field
///   selector to a denied name) reaches the named objects, and one without a
///   namespace (across all namespaces) reaches every namespace.
///
/// Creating an object is not reached by `resourceNames` (the new object's name
/// is in the body, and a create cannot read or change an existing object);
/// such a rule is refused at load when create is all it denies.
pub fn deny_matches(rule: &Rule, request: &RequestInfo, self_namespace: &str) -> bool {
    let family = verb_family(request.verb);
    let verb_denied = rule
        .verbs
        .iter()
        .any(|v| v == "*" || verb_family(v) == family);
    if !verb_denied || !scope_matches(rule, request) {
        return false;
    }
    let reaches_every_object = matches!(request.verb, "list" | "watch" | "deletecollection");
    let name_denied = rule.resource_names.is_empty()
        || rule.resource_names.iter().any(|n| *n == *request.name)
        || (reaches_every_object && request.name.is_empty());
    let namespace_denied = namespace_listed(rule, request.namespace, self_namespace)
        || (reaches_every_object && request.namespace.is_empty());
    name_denied && namespace_denied
}

/// Verbs that read or change the same objects the same way.
pub fn verb_family(verb: &str) -> &str {
    match verb {
        "list" | "watch" => "get",
        "patch" => "update",
        "deletecollection" => "delete",
        verb => verb,
    }
}

/// The verb-independent part of a match: the URL of a non-resource request,
/// or the group and resource of a resource request.
fn scope_matches(rule: &Rule, request: &RequestInfo) -> bool {
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
}

fn namespace_listed(rule: &Rule, namespace: &str, self_namespace: &str) -> bool {
    rule.namespaces.is_empty()
        || rule.namespaces.iter().any(|ns| {
            ns == "*"
                // An unknown own namespace must not match requests without one.
                || (ns == SELF_NAMESPACE && !self_namespace.is_empty() && namespace == self_namespace)
                || ns == namespace
        })
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
pub fn host_accepted(accepted: &[String], host: &[u8]) -> bool {
    let without_port = match host.iter().rposition(|&b| b == b':') {
        // `[::1]:8001` or `localhost:8001`, but not the bare IPv6 `[::1]`.
        Some(colon) => {
            let (name, port) = host.split_at(colon);
            let port = port.get(1..).unwrap_or_default();
            if port.iter().all(u8::is_ascii_digit) && !port.contains(&b']') {
                name
            } else {
                host
            }
        }
        None => host,
    };
    accepted
        .iter()
        .any(|a| a == "*" || a.as_bytes().eq_ignore_ascii_case(without_port))
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
    fn deny_rules_cannot_be_read_around() {
        use Effect::{Allow, Deny};
        let p = policy(
            r#"{"default_action": "allow", "rules": [
                {"name": "secret-cm", "action": "deny", "verbs": ["get"], "apiGroups": [""],
                 "resources": ["configmaps"], "resourceNames": ["top-secret"], "namespaces": ["team-a"]},
                {"name": "kube-system", "action": "deny", "verbs": ["*"], "apiGroups": ["*"],
                 "resources": ["*"], "namespaces": ["kube-system"]},
                {"name": "no-deleting-leases", "action": "deny", "verbs": ["delete"],
                 "apiGroups": ["coordination.k8s.io"], "resources": ["leases"]},
                {"name": "no-editing-quotas", "action": "deny", "verbs": ["update"],
                 "apiGroups": [""], "resources": ["resourcequotas"], "namespaces": ["$self"]}]}"#,
        );
        let cm = "/api/v1/namespaces/team-a/configmaps";
        let cases: &[(&str, &str, Effect, &str)] = &[
            // What the rule names, and the other ways to read it.
            ("GET", "/api/v1/namespaces/team-a/configmaps/top-secret", Deny, "the named object"),
            ("HEAD", "/api/v1/namespaces/team-a/configmaps/top-secret", Deny, "HEAD is get"),
            ("GET", cm, Deny, "a list returns it"),
            ("GET", "/api/v1/namespaces/team-a/configmaps?watch=1", Deny, "a watch returns it"),
            ("GET", "/api/v1/watch/namespaces/team-a/configmaps", Deny, "the old watch form"),
            ("GET", "/api/v1/configmaps", Deny, "a list across all namespaces"),
            ("GET", "/api/v1/watch/configmaps", Deny, "a watch across all namespaces"),
            ("GET", "/api/v1/namespaces/team-a/configmaps?fieldSelector=metadata.name%3Dtop-secret", Deny, "pinned to it"),
            ("GET", "/api/v1/configmaps?watch=1&fieldSelector=metadata.name%3Dtop-secret", Deny, "pinned, all namespaces"),
            ("GET", "/api/v1/namespaces/team-a/configmaps?fieldSelector=metadata.name%3Dother&labelSelector=a%3Db", Deny, "not pinned once a label selector is set"),
            // Requests that cannot reach it.
            ("GET", "/api/v1/namespaces/team-a/configmaps/other", Allow, "another name"),
            ("GET", "/api/v1/namespaces/team-a/configmaps?fieldSelector=metadata.name%3Dother", Allow, "pinned to another name"),
            ("GET", "/api/v1/namespaces/team-b/configmaps", Allow, "another namespace"),
            ("PATCH", "/api/v1/namespaces/team-a/configmaps/top-secret", Allow, "the rule denies reads only"),
            ("DELETE", cm, Allow, "the rule denies reads only"),
            ("POST", cm, Allow, "a create reads nothing"),
            // A namespace deny reaches every request across all namespaces.
            ("GET", "/api/v1/namespaces/kube-system/secrets", Deny, "the namespace"),
            ("GET", "/api/v1/secrets", Deny, "all namespaces"),
            ("GET", "/apis/apps/v1/deployments?watch=true", Deny, "all namespaces, watched"),
            ("DELETE", "/api/v1/namespaces/kube-system/pods", Deny, "deletecollection in it"),
            ("GET", "/api/v1/nodes", Deny, "podward cannot tell a cluster-scoped list from an all-namespaces one"),
            ("GET", "/api/v1/nodes/n1", Allow, "a named object without a namespace is cluster-scoped"),
            ("GET", "/api/v1/namespaces/default/secrets", Allow, "another namespace"),
            // A denied verb denies its family.
            ("DELETE", "/apis/coordination.k8s.io/v1/namespaces/x/leases/l", Deny, "delete"),
            ("DELETE", "/apis/coordination.k8s.io/v1/namespaces/x/leases", Deny, "deletecollection"),
            ("DELETE", "/apis/coordination.k8s.io/v1/leases", Deny, "deletecollection, all namespaces"),
            ("PUT", "/apis/coordination.k8s.io/v1/namespaces/x/leases/l", Allow, "update is another family"),
            ("PATCH", "/api/v1/namespaces/team-a/resourcequotas/q", Deny, "patch is update's family"),
            ("PUT", "/api/v1/namespaces/team-a/resourcequotas/q", Deny, "update"),
            ("GET", "/api/v1/namespaces/team-a/resourcequotas", Allow, "reads are another family"),
        ];
        for (method, path, effect, why) in cases {
            assert_eq!(
                decide(&p, method, path).0,
                *effect,
                "{method} {path}: {why}"
            );
        }
    }

    #[test]
    fn allow_rules_keep_rbac_meaning() {
        let p = policy(
            r#"{"default_action": "deny", "rules": [
                {"name": "one-cm", "action": "allow", "verbs": ["get"], "apiGroups": [""],
                 "resources": ["configmaps"], "resourceNames": ["settings"], "namespaces": ["team-a"]}]}"#,
        );
        for (method, path, effect) in [
            (
                "GET",
                "/api/v1/namespaces/team-a/configmaps/settings",
                Effect::Allow,
            ),
            ("GET", "/api/v1/namespaces/team-a/configmaps", Effect::Deny),
            ("GET", "/api/v1/configmaps/settings", Effect::Deny),
            (
                "GET",
                "/api/v1/namespaces/team-a/configmaps?watch=1",
                Effect::Deny,
            ),
        ] {
            assert_eq!(decide(&p, method, path).0, effect, "{method} {path}");
        }
    }

    #[test]
    fn kubectl_proxy_preset_stops_the_exec_equivalents() {
        let p = policy(r#"{"preset": "kubectl-proxy"}"#);
        for (method, path, rule) in [
            (
                "PATCH",
                "/api/v1/namespaces/x/pods/p/ephemeralcontainers",
                "no-exec-equivalents",
            ),
            (
                "PUT",
                "/api/v1/namespaces/x/pods/p/ephemeralcontainers",
                "no-exec-equivalents",
            ),
            (
                "POST",
                "/api/v1/nodes/n1/proxy/exec/ns/pod/c",
                "no-exec-equivalents",
            ),
            (
                "GET",
                "/api/v1/nodes/n1/proxy/runningpods/",
                "no-exec-equivalents",
            ),
            (
                "POST",
                "/api/v1/proxy/nodes/n1/exec/ns/pod/c",
                "no-node-proxy",
            ),
        ] {
            assert_eq!(
                decide(&p, method, path),
                (Effect::Deny, format!("kubectl-proxy/{rule}")),
                "{method} {path}"
            );
        }
        assert_eq!(
            decide(&p, "GET", "/api/v1/namespaces/x/pods/p/proxy/metrics").0,
            Effect::Allow
        );
    }

    /// (enforced effect, enforced rule, dry-run rule, candidate rule)
    fn dry_run_decision(
        policy: &Policy,
        method: &str,
        path: &str,
    ) -> (Effect, String, Option<String>, String) {
        let request = classify(method, path).unwrap();
        let decision = policy.decide(&request, "team-a");
        let candidate = policy.candidate(&request, "team-a");
        assert_eq!(candidate.dry_run, None);
        (
            decision.effect,
            decision.rule.to_string(),
            decision.dry_run.map(ToString::to_string),
            candidate.rule.to_string(),
        )
    }

    #[test]
    fn dry_run_rules_are_named_when_the_enforced_decision_allows() {
        use Effect::{Allow, Deny};
        let p = policy(
            r#"{"default_action": "allow", "rules": [
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
        );
        let ns = "/api/v1/namespaces";
        let some = |rule: &str| Some(format!("rules/{rule}"));
        type Case<'a> = (&'a str, &'a str, Effect, &'a str, Option<String>, &'a str);
        let cases: &[Case] = &[
            // The first matching dry-run rule is named; the enforced rule decides.
            (
                "GET",
                &format!("{ns}/a/secrets/s"),
                Allow,
                "rules/default",
                some("try-no-secrets"),
                "rules/try-no-secrets",
            ),
            (
                "GET",
                &format!("{ns}/a/configmaps"),
                Allow,
                "rules/default",
                some("try-no-secret-reads"),
                "rules/try-no-secret-reads",
            ),
            (
                "GET",
                &format!("{ns}/team-a/configmaps"),
                Allow,
                "rules/own-configmaps",
                some("try-no-secret-reads"),
                "rules/try-no-secret-reads",
            ),
            // Denied anyway: nothing would change, nothing is named.
            (
                "GET",
                &format!("{ns}/kube-system/secrets"),
                Deny,
                "rules/no-kube-system",
                None,
                "rules/try-no-secrets",
            ),
            // A dry-run rule after the enforced decision is never reached.
            (
                "PUT",
                &format!("{ns}/team-a/configmaps/c"),
                Allow,
                "rules/own-configmaps",
                None,
                "rules/own-configmaps",
            ),
            (
                "PUT",
                &format!("{ns}/b/configmaps/c"),
                Allow,
                "rules/default",
                some("try-no-configmap-writes"),
                "rules/try-no-configmap-writes",
            ),
            // Nothing dry-run matches.
            (
                "GET",
                &format!("{ns}/a/pods"),
                Allow,
                "rules/default",
                None,
                "rules/default",
            ),
        ];
        for (method, path, effect, rule, dry_run, candidate) in cases {
            assert_eq!(
                dry_run_decision(&p, method, path),
                (
                    *effect,
                    rule.to_string(),
                    dry_run.clone(),
                    candidate.to_string()
                ),
                "{method} {path}"
            );
        }
        assert!(p.has_dry_run());
        let refs = |refs: &mut dyn Iterator<Item = &RuleRef>| -> Vec<String> {
            refs.map(ToString::to_string).collect()
        };
        assert_eq!(
            refs(&mut p.rule_refs()),
            [
                "rules/no-kube-system",
                "rules/own-configmaps",
                "rules/default"
            ]
        );
        assert_eq!(
            refs(&mut p.dry_run_refs()),
            [
                "rules/try-no-secrets",
                "rules/try-no-secret-reads",
                "rules/try-no-configmap-writes"
            ]
        );
        assert!(!policy(r#"{"preset": "read-only"}"#).has_dry_run());
    }

    #[test]
    fn a_whole_policy_in_dry_run_enforces_the_default_preset() {
        use Effect::{Allow, Deny};
        let p = policy(
            r#"{"dryRun": true, "preset": "read-only", "rules": [
                {"name": "own-configmaps", "action": "allow", "verbs": ["create"], "apiGroups": [""],
                 "resources": ["configmaps"], "namespaces": ["$self"]},
                {"name": "exec", "action": "allow", "verbs": ["create"], "apiGroups": [""],
                 "resources": ["pods/exec"]}]}"#,
        );
        let some = |rule: &str| Some(rule.to_string());
        let cases = [
            // Allowed by both.
            (
                "GET",
                "/api/v1/namespaces/a/pods",
                Allow,
                "kubectl-proxy/default",
                None,
                "read-only/read-resources",
            ),
            (
                "POST",
                "/api/v1/namespaces/team-a/configmaps",
                Allow,
                "kubectl-proxy/default",
                None,
                "rules/own-configmaps",
            ),
            // What the candidate would deny is forwarded, and named.
            (
                "DELETE",
                "/api/v1/namespaces/a/pods/p",
                Allow,
                "kubectl-proxy/default",
                some("read-only/default"),
                "read-only/default",
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods/p/portforward",
                Allow,
                "kubectl-proxy/default",
                some("read-only/no-interactive-or-proxy"),
                "read-only/no-interactive-or-proxy",
            ),
            // What the candidate would allow beyond the default stays denied.
            (
                "POST",
                "/api/v1/namespaces/a/pods/p/exec",
                Deny,
                "kubectl-proxy/no-exec-or-attach",
                None,
                "rules/exec",
            ),
        ];
        for (method, path, effect, rule, dry_run, candidate) in cases {
            assert_eq!(
                dry_run_decision(&p, method, path),
                (effect, rule.to_string(), dry_run, candidate.to_string()),
                "{method} {path}"
            );
        }
        let refs: Vec<String> = p.rule_refs().map(ToString::to_string).collect();
        assert_eq!(
            refs[0], "kubectl-proxy/no-exec-or-attach",
            "the enforced rules"
        );
        let dry: Vec<String> = p.dry_run_refs().map(ToString::to_string).collect();
        assert_eq!(
            dry,
            ["read-only/no-interactive-or-proxy", "read-only/default"]
        );
        assert_eq!(
            p.baseline().map(|b| b.default_decision().0),
            Some(Effect::Allow)
        );
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
            (
                r#"{"rules": [{"name": "a", "action": "deny", "verbs": ["create"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["x"]}]}"#,
                "policy.rules[0].resourceNames",
            ),
            (
                r#"{"rules": [{"name": "a", "action": "deny", "verbs": ["get"], "apiGroups": [""], "resources": ["Pods"]}]}"#,
                "policy.rules[0].resources",
            ),
            (
                r#"{"rules": [{"name": "a", "action": "deny", "verbs": ["get"], "apiGroups": ["Apps"], "resources": ["pods"]}]}"#,
                "policy.rules[0].apiGroups",
            ),
            (
                r#"{"rules": [{"name": "a", "action": "deny", "verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "namespaces": ["Kube_System"]}]}"#,
                "policy.rules[0].namespaces",
            ),
            (
                r#"{"rules": [{"name": "a", "action": "deny", "verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": [""]}]}"#,
                "policy.rules[0].resourceNames",
            ),
            (
                r#"{"rules": [{"name": "a", "action": "allow", "verbs": ["get"], "nonResourceURLs": ["/a*b"]}]}"#,
                "policy.rules[0].nonResourceURLs",
            ),
            (
                r#"{"rules": [
                {"name": "a", "action": "deny", "dryRun": true, "verbs": ["get"], "nonResourceURLs": ["/x"]},
                {"name": "b", "action": "allow", "dryRun": true, "verbs": ["get"], "nonResourceURLs": ["/y"]}]}"#,
                "policy.rules[1].dryRun",
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
    fn dry_run_must_be_true_or_false() {
        for (json, field) in [
            (r#"{"dryRun": "yes"}"#, "policy.dryRun"),
            (
                r#"{"rules": [{"name": "a", "action": "deny", "dryRun": 1, "verbs": ["get"], "nonResourceURLs": ["/x"]}]}"#,
                "policy.rules[0].dryRun",
            ),
        ] {
            let value: Value = serde_json::from_str(json).unwrap();
            let error = PolicyConfig::read(Object::new(&value, "policy").unwrap()).unwrap_err();
            assert_eq!(error.field, field, "{json}");
        }
        assert!(Policy::parse(br#"{"dryRun": false}"#).is_ok());
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
            assert_eq!(
                host_accepted(&defaults, host.as_bytes()),
                accepted,
                "{host}"
            );
        }
        assert!(host_accepted(&["*".into()], b"anything:1"));
        assert!(!host_accepted(&defaults, b"local\xffhost"));
    }
}
