//! Who may use the pod's identity for what: ordered rules written like RBAC
//! `PolicyRule`s, each allowing or denying, then a default.
//!
//! Rules match a [`RequestInfo`] the way RBAC does (`*` wildcards, `pods/exec`
//! subresource notation, `*/scale`, trailing-`*` non-resource URLs). podward adds
//! `namespaces`, where `$self` is the pod's own namespace and `""` is a request
//! without a namespace (cluster-scoped, or across all namespaces), and `$sidecar`
//! in `resourceNames`: the ConfigMaps the sidecar mounts (its envoy.yaml and
//! module, its policy), which every preset protects from the app.
//!
//! Allow rules mean exactly what RBAC means. Deny rules are conservative: they
//! also stop every request that could read or change what they name, so that a
//! deny cannot be listed around (see [`deny_matches`]).
//!
//! A request the API server authorizes as two verbs (a GET of pods/exec,
//! attach or portforward: `get` and `create`, see
//! [`RequestInfo::also_create`]) is decided once per verb, each time by the
//! first rule that matches: it is allowed only if both decisions allow, and
//! otherwise denied by the first that denies, `get`'s then `create`'s.
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

/// The rules every preset starts with, before the team's own rules too, so
/// that the app can neither rewrite the sidecar (its envoy.yaml and module, its
/// policy: `$sidecar`, in the pod's own namespace) nor mint a token
/// (TokenRequest, in any namespace). A policy without a preset may allow either.
pub const PRESET_SELF_PROTECTION: &str = r#"{"rules": [
    {"name": "no-sidecar-configmap-writes", "action": "deny",
     "verbs": ["create", "update", "patch", "delete", "deletecollection"], "apiGroups": [""],
     "resources": ["configmaps"], "resourceNames": ["$sidecar"], "namespaces": ["$self"]},
    {"name": "no-token-requests", "action": "deny", "verbs": ["*"],
     "apiGroups": [""], "resources": ["serviceaccounts/token"]}]}"#;

/// Named policies, as the JSON a user would write, each after
/// [`PRESET_SELF_PROTECTION`]. Parsed and checked when the plugin is
/// configured, by the same code as a user's rules.
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

/// A policy, ready to decide. Its rules and default are what is enforced;
/// a policy with anything in dry-run also holds the policy as written, the
/// candidate: the default preset is enforced in place of a policy in dry-run
/// as a whole, and the rules less the dry-run ones in place of one with
/// dry-run rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<(RuleRef, Rule)>,
    default_effect: Effect,
    default_rule: RuleRef,
    dry_run: Option<Box<DryRun>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DryRun {
    /// The policy as written, dry-run rules deciding as any other.
    candidate: Policy,
    /// The whole policy is dry-run (else some of its rules are).
    whole: bool,
}

/// Every verb a non-resource rule can name.
pub const NON_RESOURCE_VERBS: &[&str] =
    &["get", "head", "post", "put", "patch", "delete", "options"];

impl Policy {
    /// A policy file: the same JSON as the configuration's `policy` field.
    /// `$sidecar` names the shipped manifests' ConfigMaps.
    pub fn parse(json: &[u8]) -> Result<Policy, FieldError> {
        Policy::parse_for(json, &default_sidecar_configmaps())
    }

    /// A policy file, `$sidecar` naming `sidecar_configmaps`.
    pub fn parse_for(json: &[u8], sidecar_configmaps: &[String]) -> Result<Policy, FieldError> {
        let value = parse_json(json)?;
        let config = PolicyConfig::read(Object::new(&value, "policy")?)?;
        Policy::build_for(&config, sidecar_configmaps)
    }

    /// `$sidecar` names the shipped manifests' ConfigMaps.
    pub fn build(config: &PolicyConfig) -> Result<Policy, FieldError> {
        Policy::build_for(config, &default_sidecar_configmaps())
    }

    /// `$sidecar` names `sidecar_configmaps`: fixed for the pod's life, so
    /// resolved once, here.
    pub fn build_for(
        config: &PolicyConfig,
        sidecar_configmaps: &[String],
    ) -> Result<Policy, FieldError> {
        let mut rules = Vec::new();
        let preset = match &config.preset {
            Some(name) => Some((name, preset(name)?)),
            None => None,
        };
        if let Some((name, _)) = &preset {
            // Before the team's own rules: a broad allow of theirs must not
            // open the sidecar to the app.
            for rule in read(PRESET_SELF_PROTECTION)?.rules {
                rules.push((RuleRef::new(name, &rule.name), rule));
            }
        }
        for (index, rule) in config.rules.iter().enumerate() {
            check_rule(rule).map_err(|(field, problem)| {
                field_error(format!("policy.rules[{index}].{field}"), problem)
            })?;
            rules.push((RuleRef::new("rules", &rule.name), rule.clone()));
        }
        let mut default_effect = config.default_action.unwrap_or(Effect::Deny);
        if let Some((preset_name, preset)) = preset {
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
        for (_, rule) in &mut rules {
            let names = &mut rule.resource_names;
            if let Some(at) = names.iter().position(|name| name == SIDECAR) {
                names.swap_remove(at);
                names.extend_from_slice(sidecar_configmaps);
            }
        }
        let default_rule = RuleRef::new(config.preset.as_deref().unwrap_or("rules"), "default");
        let written = Policy {
            rules,
            default_effect,
            default_rule,
            dry_run: None,
        };
        let whole = config.dry_run;
        if !whole && !written.rules.iter().any(|(_, rule)| rule.dry_run) {
            return Ok(written);
        }
        let mut enforced = if whole {
            Policy::build_for(
                &PolicyConfig {
                    preset: Some(DEFAULT_PRESET.into()),
                    ..PolicyConfig::default()
                },
                sidecar_configmaps,
            )?
        } else {
            Policy {
                rules: written
                    .rules
                    .iter()
                    .filter(|(_, r)| !r.dry_run)
                    .cloned()
                    .collect(),
                ..written.clone()
            }
        };
        enforced.dry_run = Some(Box::new(DryRun {
            candidate: written,
            whole,
        }));
        Ok(enforced)
    }

    /// The first rule that matches and is not dry-run decides; `self_namespace`
    /// is what `$self` means. When that allows the request and a dry-run
    /// rule (or a policy in dry-run) would deny it, the decision names it.
    pub fn decide(&self, request: &RequestInfo, self_namespace: &str) -> Decision<'_> {
        // One loop for both policies a dry-run needs, so that matching has one
        // place in the code and a policy without dry-run costs no more than
        // its own rules did before dry-run: one check of `dry_run` below.
        let mut policy = self;
        let mut enforced: Option<Decision<'_>> = None;
        loop {
            let decided = policy.decide_each_verb(request, self_namespace);
            match (enforced, &self.dry_run) {
                (None, Some(dry_run)) if decided.effect == Effect::Allow => {
                    enforced = Some(decided);
                    policy = &dry_run.candidate;
                }
                (None, _) => return decided,
                (Some(enforced), _) => {
                    let would_deny = decided.effect == Effect::Deny;
                    return Decision {
                        dry_run: would_deny.then_some(decided.rule),
                        ..enforced
                    };
                }
            }
        }
    }

    /// What the policy would decide were nothing in it dry-run: the first
    /// matching rule of the policy as written decides. `dry_run` is always
    /// `None`.
    pub fn candidate(&self, request: &RequestInfo, self_namespace: &str) -> Decision<'_> {
        self.written().decide(request, self_namespace)
    }

    /// The first rule that matches decides; a session's GET is decided as
    /// `get`, then as `create` (see the module).
    fn decide_each_verb(&self, request: &RequestInfo, self_namespace: &str) -> Decision<'_> {
        let decision = self.first_match(request, self_namespace);
        if decision.effect == Effect::Deny || !request.also_create() {
            return decision;
        }
        let as_create = RequestInfo {
            verb: "create",
            ..request.clone()
        };
        self.first_match(&as_create, self_namespace)
    }

    /// The first rule that matches decides, else the default.
    fn first_match(&self, request: &RequestInfo, self_namespace: &str) -> Decision<'_> {
        for (rule_ref, rule) in &self.rules {
            if matches(rule, request, self_namespace) {
                return Decision {
                    effect: rule.action,
                    rule: rule_ref,
                    dry_run: None,
                };
            }
        }
        Decision {
            effect: self.default_effect,
            rule: &self.default_rule,
            dry_run: None,
        }
    }

    /// The policy as written: the candidate of a policy with dry-run.
    fn written(&self) -> &Policy {
        self.dry_run
            .as_ref()
            .map_or(self, |dry_run| &dry_run.candidate)
    }

    /// Whether anything in the policy is dry-run.
    pub fn has_dry_run(&self) -> bool {
        self.dry_run.is_some()
    }

    /// Every rule that can decide what is enforced, the default included.
    pub fn rule_refs(&self) -> impl Iterator<Item = &RuleRef> {
        self.rules
            .iter()
            .map(|(rule_ref, _)| rule_ref)
            .chain(core::iter::once(&self.default_rule))
    }

    /// Every rule a [`Decision::dry_run`] can name.
    pub fn dry_run_refs(&self) -> impl Iterator<Item = &RuleRef> {
        let whole = self.baseline().is_some();
        let written = self.written();
        let default = (self.has_dry_run() && whole && written.default_effect == Effect::Deny)
            .then_some(&written.default_rule);
        written
            .rules
            .iter()
            .filter(move |(_, rule)| rule.action == Effect::Deny && (whole || rule.dry_run))
            .map(|(rule_ref, _)| rule_ref)
            .chain(default)
    }

    /// The rules as written, in order, each with the name decisions give it:
    /// for tools that read a policy (`podward-policy lint`).
    pub fn rules(&self) -> &[(RuleRef, Rule)] {
        &self.written().rules
    }

    /// The default as written.
    pub fn default_decision(&self) -> (Effect, &RuleRef) {
        let written = self.written();
        (written.default_effect, &written.default_rule)
    }

    /// What a whole policy in dry-run enforces meanwhile: the default preset.
    pub fn baseline(&self) -> Option<&Policy> {
        let dry_run = self.dry_run.as_ref()?;
        dry_run.whole.then_some(self)
    }

    /// The rules that are enforced, with the default: those written less the
    /// dry-run ones, or the default preset's.
    pub fn enforced_rules(&self) -> (&[(RuleRef, Rule)], Effect, &RuleRef) {
        (&self.rules, self.default_effect, &self.default_rule)
    }
}

/// The environment variables naming the ConfigMaps the sidecar mounts (its
/// envoy.yaml and module; its policy), and the shipped manifests' names for
/// them where a variable is unset (constants.json). Every manifest sets them
/// from the values its volumes mount, so a policy's `$sidecar` names what the
/// pod really mounts; a container's environment never changes, and the app
/// cannot reach it.
pub const SIDECAR_CONFIGMAP_ENV: [(&str, &str); 2] = [
    ("PODWARD_CONFIGMAP", "podward"),
    ("PODWARD_POLICY_CONFIGMAP", "podward-policy"),
];

const SELF_NAMESPACE: &str = "$self";
/// In `resourceNames`: the sidecar's own ConfigMaps.
const SIDECAR: &str = "$sidecar";

fn default_sidecar_configmaps() -> Vec<String> {
    SIDECAR_CONFIGMAP_ENV
        .iter()
        .map(|(_, name)| name.to_string())
        .collect()
}

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
    read(json)
}

/// A policy's JSON, shipped with podward.
fn read(json: &str) -> Result<PolicyConfig, FieldError> {
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
        if name.is_empty() {
            Some("an empty name matches nothing")
        } else if name.starts_with('$') && name != SIDECAR {
            Some("unknown variable; the only one is \"$sidecar\"")
        } else {
            None
        }
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
pub fn scope_matches(rule: &Rule, request: &RequestInfo) -> bool {
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
    use crate::policy_tables::TABLES;
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
    fn a_sessions_get_is_decided_as_get_and_as_create() {
        use Effect::{Allow, Deny};
        const WEBSOCKET: (&str, &str) = ("GET", "/api/v1/namespaces/team-a/pods/p/exec?command=sh");
        const SPDY: (&str, &str) = ("POST", "/api/v1/namespaces/team-a/pods/p/exec?command=sh");
        const PORT_FORWARD: (&str, &str) = ("GET", "/api/v1/namespaces/team-a/pods/p/portforward");
        // `default_action`, then rules of (name, action, verbs, resource).
        let policy_of = |default: &str, rules: &[(&str, &str, &str, &str)]| {
            let rules: Vec<String> = rules
                .iter()
                .map(|(name, action, verbs, resource)| {
                    format!(
                        r#"{{"name": "{name}", "action": "{action}", "verbs": [{verbs}],
                             "apiGroups": [""], "resources": ["{resource}"]}}"#
                    )
                })
                .collect();
            let json = format!(
                r#"{{"default_action": "{default}", "rules": [{}]}}"#,
                rules.join(",")
            );
            policy(&json)
        };
        #[rustfmt::skip]
        let cases = [
            // A deny of either verb stops the WebSocket GET; the SPDY POST is a create alone.
            (policy_of("allow", &[("c", "deny", r#""create""#, "pods/exec")]), WEBSOCKET, Deny, "rules/c"),
            (policy_of("allow", &[("c", "deny", r#""create""#, "pods/exec")]), SPDY, Deny, "rules/c"),
            (policy_of("allow", &[("c", "deny", r#""create""#, "pods/exec")]), PORT_FORWARD, Allow, "rules/default"),
            (policy_of("allow", &[("g", "deny", r#""get""#, "pods/exec")]), WEBSOCKET, Deny, "rules/g"),
            (policy_of("allow", &[("g", "deny", r#""get""#, "pods/exec")]), SPDY, Allow, "rules/default"),
            (policy_of("allow", &[("a", "deny", r#""*""#, "pods/exec")]), WEBSOCKET, Deny, "rules/a"),
            (policy_of("allow", &[("a", "deny", r#""*""#, "pods/*")]), PORT_FORWARD, Deny, "rules/a"),
            // An allow must allow both verbs.
            (policy_of("deny", &[("g", "allow", r#""get""#, "pods/exec")]), WEBSOCKET, Deny, "rules/default"),
            (policy_of("deny", &[("c", "allow", r#""create""#, "pods/exec")]), WEBSOCKET, Deny, "rules/default"),
            (policy_of("deny", &[("c", "allow", r#""create""#, "pods/exec")]), SPDY, Allow, "rules/c"),
            (policy_of("deny", &[("gc", "allow", r#""get", "create""#, "pods/exec")]), WEBSOCKET, Allow, "rules/gc"),
            (policy_of("deny", &[("a", "allow", r#""*""#, "pods/*")]), PORT_FORWARD, Allow, "rules/a"),
            // Each verb is decided by its own first match: get's is the allow, create's the deny after it.
            (policy_of("allow", &[("g", "allow", r#""get""#, "pods/exec"), ("a", "deny", r#""*""#, "pods/exec")]), WEBSOCKET, Deny, "rules/a"),
            (policy_of("deny", &[("c", "allow", r#""create""#, "pods/exec"), ("g", "allow", r#""get""#, "pods/*")]), WEBSOCKET, Allow, "rules/c"),
        ];
        for (policy, (method, path), effect, rule) in cases {
            assert_eq!(
                decide(&policy, method, path),
                (effect, rule.to_string()),
                "{method} {path} under {policy:?}"
            );
        }
        // The presets' denies name every verb; own-namespace allows both in its namespace.
        for (preset, effect) in [
            ("kubectl-proxy", Deny),
            ("read-only", Deny),
            ("own-namespace", Allow),
        ] {
            let p = policy(&format!(r#"{{"preset": "{preset}"}}"#));
            assert_eq!(decide(&p, WEBSOCKET.0, WEBSOCKET.1).0, effect, "{preset}");
        }
    }

    #[test]
    fn the_decision_tables() {
        for table in TABLES {
            let p = Policy::parse(table.policy.as_bytes())
                .unwrap_or_else(|e| panic!("{}: {e}", table.name));
            for case in table.cases {
                let at = format!("{}: {} {} {}", table.name, case.method, case.path, case.why);
                let request = classify(case.method, case.path).unwrap();
                let decision = p.decide(&request, table.self_namespace);
                let candidate = p.candidate(&request, table.self_namespace);
                assert_eq!(decision.effect == Effect::Allow, case.allowed, "{at}");
                if !case.rule.is_empty() {
                    assert_eq!(decision.rule.as_str(), case.rule, "{at}");
                }
                let dry_run = decision.dry_run.map(RuleRef::as_str).unwrap_or_default();
                assert_eq!(dry_run, case.dry_run, "{at}");
                if !case.candidate.is_empty() {
                    assert_eq!(candidate.rule.as_str(), case.candidate, "{at}");
                }
                assert_eq!(candidate.dry_run, None, "{at}");
            }
        }
    }

    #[test]
    fn the_rules_a_dry_run_can_name() {
        let refs = |refs: &mut dyn Iterator<Item = &RuleRef>| -> Vec<String> {
            refs.map(ToString::to_string).collect()
        };
        let table = |name: &str| {
            let table = TABLES.iter().find(|t| t.name == name).unwrap();
            policy(table.policy)
        };
        let p = table("dry_run_rules_are_named_when_the_enforced_decision_allows");
        assert!(p.has_dry_run());
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
        let p = table("a_whole_policy_in_dry_run_enforces_the_default_preset");
        let enforced = refs(&mut p.rule_refs());
        assert_eq!(
            enforced[0], "kubectl-proxy/no-sidecar-configmap-writes",
            "the enforced rules"
        );
        assert_eq!(
            refs(&mut p.dry_run_refs()),
            [
                "read-only/no-sidecar-configmap-writes",
                "read-only/no-token-requests",
                "read-only/no-interactive-or-proxy",
                "read-only/default"
            ]
        );
        assert_eq!(
            p.baseline().map(|b| b.enforced_rules().1),
            Some(Effect::Allow)
        );
        assert_eq!(p.default_decision().0, Effect::Deny, "as written");
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
                r#"{"rules": [{"name": "a", "action": "deny", "verbs": ["update"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["$self"]}]}"#,
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
    fn every_preset_protects_the_sidecar_and_mints_no_token() {
        use Effect::{Allow, Deny};
        let own = "/api/v1/namespaces/team-a/configmaps";
        let writes = [
            ("PUT", format!("{own}/podward-policy")),
            (
                "PATCH",
                format!("{own}/podward-policy?fieldManager=kubectl"),
            ),
            ("DELETE", format!("{own}/podward-policy")),
            ("PATCH", format!("{own}/podward")),
            ("DELETE", format!("{own}/podward")),
            ("DELETE", own.to_string()),
            ("DELETE", format!("{own}?labelSelector=app%3Dweb")),
            // A field selector does not name a deletecollection (requestinfo.go): it reaches them all.
            (
                "DELETE",
                format!("{own}?fieldSelector=metadata.name%3Dapp-settings"),
            ),
            ("DELETE", "/api/v1/configmaps".to_string()),
        ];
        let token_requests = [
            "/api/v1/namespaces/team-a/serviceaccounts/default/token",
            "/api/v1/namespaces/kube-system/serviceaccounts/admin/token",
        ];
        for (preset, _) in PRESETS {
            let p = policy(&format!(r#"{{"preset": "{preset}"}}"#));
            let sidecar_rule = format!("{preset}/no-sidecar-configmap-writes");
            for (method, path) in &writes {
                assert_eq!(
                    decide(&p, method, path),
                    (Deny, sidecar_rule.clone()),
                    "{preset}: {method} {path}"
                );
            }
            for path in token_requests {
                let decided = decide(&p, "POST", path);
                let expected = (Deny, format!("{preset}/no-token-requests"));
                assert_eq!(decided, expected, "{preset}: {path}");
            }
            // What does not touch the sidecar's ConfigMaps is decided as before.
            let untouched = [
                ("GET", format!("{own}/podward-policy")),
                ("GET", own.to_string()),
                ("PATCH", format!("{own}/app-settings")),
                (
                    "PATCH",
                    "/api/v1/namespaces/team-b/configmaps/podward-policy".into(),
                ),
            ];
            for (method, path) in &untouched {
                let (_, rule) = decide(&p, method, path);
                assert_ne!(rule, sidecar_rule, "{preset}: {method} {path}");
            }
            assert_eq!(decide(&p, "GET", &format!("{own}/podward")).0, Allow);
        }
    }

    #[test]
    fn sidecar_names_the_configmaps_the_pod_mounts() {
        use Effect::{Allow, Deny};
        let config = config(r#"{"preset": "kubectl-proxy"}"#);
        let names = ["team-podward".to_string(), "team-policy".to_string()];
        let p = Policy::build_for(&config, &names).unwrap();
        let own = "/api/v1/namespaces/team-a/configmaps";
        for (name, effect) in [
            ("team-policy", Deny),
            ("team-podward", Deny),
            ("podward-policy", Allow),
        ] {
            assert_eq!(
                decide(&p, "PATCH", &format!("{own}/{name}")).0,
                effect,
                "{name}"
            );
        }
        // The preset's protection comes before a team's own rules, so that a
        // broad allow of theirs does not open the sidecar; without a preset, a
        // team may let the app manage them.
        let manage = r#"{"name": "manage-policy", "action": "allow", "verbs": ["update", "patch"],
                         "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["$sidecar"]}"#;
        let with_preset = format!(r#"{{"preset": "own-namespace", "rules": [{manage}]}}"#);
        let p = Policy::build_for(&self::config(&with_preset), &names).unwrap();
        assert_eq!(
            decide(&p, "PATCH", &format!("{own}/team-policy")),
            (Deny, "own-namespace/no-sidecar-configmap-writes".into())
        );
        let without = format!(r#"{{"default_action": "deny", "rules": [{manage}]}}"#);
        let p = Policy::build_for(&self::config(&without), &names).unwrap();
        assert_eq!(
            decide(&p, "PATCH", &format!("{own}/team-policy")),
            (Allow, "rules/manage-policy".into())
        );
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
