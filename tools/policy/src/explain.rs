//! `explain`: what the sidecar does with one request under a policy, and the
//! rule that decided, by the sidecar's own request path ([`filter::judge`]):
//! the `Host` check, the classification, the policy.

use crate::requests::Stated;
use podward::config::Config;
use podward::filter;
use podward::headers::HeaderList;
use podward::identity::{self, Sources};
use podward::policy::{Effect, Policy, Rule};
use podward::token::Token;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct Explained {
    /// Forwarded (true), or answered by the sidecar itself.
    pub allowed: bool,
    /// Why it was refused: `policy_denied`, `unclassifiable`, `host_not_accepted`.
    pub refusal: Option<&'static str>,
    pub rule: Option<String>,
    pub dry_run_rule: Option<String>,
    /// What the policy would decide were nothing in it dry-run.
    pub candidate: Option<(Effect, String)>,
    pub method: String,
    pub target: String,
    pub request: Option<Stated>,
    /// The access record the sidecar writes for it, exactly.
    pub record: String,
    /// The Status message the app gets, for a refusal.
    pub message: Option<String>,
}

/// The pod `explain` stands in for: its namespace is what `$self` means.
struct Pod<'a> {
    namespace: &'a str,
    namespace_env: &'a str,
}

impl Sources for Pod<'_> {
    fn env(&self, name: &str) -> Option<String> {
        (name == self.namespace_env).then(|| self.namespace.to_string())
    }

    fn file(&self, _path: &str) -> Option<&[u8]> {
        None
    }
}

/// What the sidecar's request path ([`filter::handle`]) does with the
/// request, for a pod in `self_namespace` holding a token that never
/// expires: the `Host` check, the classification, the policy.
pub fn explain(
    config: &Config,
    policy: &Policy,
    self_namespace: &str,
    headers: &HeaderList,
) -> Result<Explained, String> {
    let token = Token::parse(b"podward-policy-explain").map_err(|e| e.to_string())?;
    let pod = Pod {
        namespace: self_namespace,
        namespace_env: &config.namespace_env,
    };
    let (identity, _) = identity::build(config, token, &pod);
    let handled = filter::handle(config, policy, &identity, 0, headers);
    let candidate = handled.request.as_ref().map(|info| {
        let decision = policy.candidate(info, self_namespace);
        (decision.effect, decision.rule.to_string())
    });
    let (allowed, message) = match &handled.decision {
        filter::Decision::Forward(_) => (true, None),
        filter::Decision::Reply(status) => (false, Some(status.message.clone())),
    };
    Ok(Explained {
        allowed,
        refusal: handled.refusal.map(|refusal| refusal.as_str()),
        rule: handled.rule.map(ToString::to_string),
        dry_run_rule: handled.dry_run.map(ToString::to_string),
        candidate,
        method: headers.get_str(":method").unwrap_or_default().to_string(),
        target: headers.get_str(":path").unwrap_or_default().to_string(),
        request: handled.request.as_ref().map(Stated::of),
        record: handled.access_record(),
        message,
    })
}

impl Explained {
    pub fn to_json(&self) -> Value {
        let record: Value = serde_json::from_str(&self.record).unwrap_or(Value::Null);
        json!({
            "decision": if self.allowed { "allow" } else { "deny" },
            "refusal": self.refusal,
            "rule": self.rule,
            "dry_run_rule": self.dry_run_rule,
            "candidate": self.candidate.as_ref().map(|(effect, rule)| json!({
                "decision": effect_name(*effect), "rule": rule})),
            "request": {
                "method": self.method,
                "path": self.target,
                "reading": self.request.as_ref().map(|stated| json!({
                    "verb": stated.verb, "group": stated.group, "resource": stated.resource,
                    "subresource": stated.subresource, "namespace": stated.namespace,
                    "name": stated.name, "url": stated.url})),
            },
            "record": record,
            "message": self.message,
        })
    }

    pub fn to_text(&self, policy: &Policy) -> String {
        let verdict = if self.allowed { "ALLOW" } else { "DENY" };
        let what = match &self.request {
            Some(stated) => stated.describe(),
            None => "the request".to_string(),
        };
        let mut lines = vec![
            format!("{verdict}  {what}"),
            format!("       {} {}", self.method, self.target),
        ];
        match (self.refusal, &self.rule) {
            (Some("unclassifiable"), _) => lines.push(format!(
                "       podward refuses it (400) before any rule: {}",
                self.message.as_deref().unwrap_or_default()
            )),
            (Some("host_not_accepted"), _) => lines.push(format!(
                "       podward refuses it (403) before any rule: {}",
                self.message.as_deref().unwrap_or_default()
            )),
            (_, Some(rule)) => {
                lines.push(format!("       decided by {}", describe_rule(policy, rule)))
            }
            (_, None) => {}
        }
        if policy.baseline().is_some() {
            lines.push(
                "       the policy is in dry-run (\"dryRun\": true): the kubectl-proxy preset is enforced meanwhile"
                    .into(),
            );
        }
        if let Some(rule) = &self.dry_run_rule {
            lines.push(format!(
                "       dry-run: {} would deny it; the sidecar forwards it and records that",
                describe_rule(policy, rule)
            ));
        }
        if let Some((effect, rule)) = &self.candidate {
            let differs =
                Some(rule) != self.rule.as_ref() && Some(rule) != self.dry_run_rule.as_ref();
            if policy.has_dry_run() && differs {
                lines.push(format!(
                    "       without dry-run: {} by {}",
                    effect_name(*effect).to_uppercase(),
                    describe_rule(policy, rule)
                ));
            }
        }
        lines.join("\n")
    }
}

pub fn effect_name(effect: Effect) -> &'static str {
    match effect {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
    }
}

/// `rules/no-secrets: {"name": ...}`, or the default's action: as written, or
/// as enforced meanwhile (the default preset of a policy in dry-run).
pub fn describe_rule(policy: &Policy, rule: &str) -> String {
    let (enforced_rules, enforced_effect, enforced_default) = policy.enforced_rules();
    let (written_effect, written_default) = policy.default_decision();
    let rules = policy.rules().iter().chain(enforced_rules);
    if let Some((_, found)) = rules.into_iter().find(|(r, _)| r.as_str() == rule) {
        return format!("{rule}: {}", rule_json(found));
    }
    for (effect, default) in [
        (written_effect, written_default),
        (enforced_effect, enforced_default),
    ] {
        if default.as_str() == rule {
            return format!("{rule} (the default: {})", effect_name(effect));
        }
    }
    rule.to_string()
}

/// A rule as podward's policy file writes it, on one line.
pub fn rule_json(rule: &Rule) -> String {
    let mut fields = vec![
        format!("\"name\": {}", Value::from(rule.name.as_str())),
        format!("\"action\": \"{}\"", effect_name(rule.action)),
    ];
    if rule.dry_run {
        fields.push("\"dryRun\": true".into());
    }
    for (key, values) in [
        ("verbs", &rule.verbs),
        ("apiGroups", &rule.api_groups),
        ("resources", &rule.resources),
        ("resourceNames", &rule.resource_names),
        ("namespaces", &rule.namespaces),
        ("nonResourceURLs", &rule.non_resource_urls),
    ] {
        if !values.is_empty() {
            let items: Vec<String> = values
                .iter()
                .map(|v| Value::from(v.as_str()).to_string())
                .collect();
            fields.push(format!("\"{key}\": [{}]", items.join(", ")));
        }
    }
    format!("{{{}}}", fields.join(", "))
}

/// The request's headers as Envoy hands them to podward: all it judges a
/// request by.
pub fn request_headers(method: &str, target: &str, host: &str) -> HeaderList {
    HeaderList::from_pairs([
        (&b":method"[..], method.as_bytes()),
        (b":path", target.as_bytes()),
        (b":authority", host.as_bytes()),
    ])
}

/// Whether the policy means anything by `$self` (its own rules, its preset's,
/// or those enforced meanwhile).
pub fn uses_self_namespace(policy: &Policy) -> bool {
    let (enforced, _, _) = policy.enforced_rules();
    policy
        .rules()
        .iter()
        .chain(enforced)
        .any(|(_, rule)| rule.namespaces.iter().any(|ns| ns == "$self"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explained(policy: &str, method: &str, target: &str) -> Explained {
        let config = Config::parse(b"").unwrap();
        let policy = Policy::parse(policy.as_bytes()).unwrap();
        explain(
            &config,
            &policy,
            "team-a",
            &request_headers(method, target, "localhost"),
        )
        .unwrap()
    }

    #[test]
    fn the_decision_the_rule_and_the_sidecars_record() {
        let e = explained(
            r#"{"preset": "kubectl-proxy"}"#,
            "POST",
            "/api/v1/namespaces/team-a/pods/x/exec",
        );
        assert!(!e.allowed);
        assert_eq!(e.refusal, Some("policy_denied"));
        assert_eq!(e.rule.as_deref(), Some("kubectl-proxy/no-exec-or-attach"));
        assert_eq!(
            e.record,
            r#"{"decision":"policy_denied","rule":"kubectl-proxy/no-exec-or-attach","verb":"create","group":"","resource":"pods","subresource":"exec","namespace":"team-a","name":"x"}"#
        );
        let e = explained(
            r#"{"default_action": "allow"}"#,
            "GET",
            "/api/v1/namespaces/team-a/pods",
        );
        assert!(e.allowed && e.refusal.is_none());
        assert_eq!(e.rule.as_deref(), Some("rules/default"));
        assert_eq!(e.candidate, Some((Effect::Allow, "rules/default".into())));
        let e = explained("{}", "GET", "/api/v1/namespaces/team-a/pods");
        assert_eq!(
            (e.allowed, e.rule.as_deref()),
            (false, Some("rules/default"))
        );
    }

    #[test]
    fn dry_run_and_candidate() {
        let policy = r#"{"default_action": "allow", "rules": [{"name": "no-secrets", "action": "deny",
            "dryRun": true, "verbs": ["*"], "apiGroups": [""], "resources": ["secrets"]}]}"#;
        let e = explained(policy, "GET", "/api/v1/namespaces/team-a/secrets");
        assert!(e.allowed);
        assert_eq!(e.dry_run_rule.as_deref(), Some("rules/no-secrets"));
        assert_eq!(e.candidate, Some((Effect::Deny, "rules/no-secrets".into())));
        assert!(e
            .record
            .ends_with(r#""dry_run":"deny","dry_run_rule":"rules/no-secrets"}"#));
    }

    #[test]
    fn refusals_before_the_policy() {
        let e = explained("{}", "GET", "/api/v1/namespaces/x/pods/%2e%2e");
        assert_eq!((e.allowed, e.refusal), (false, Some("unclassifiable")));
        assert!(e.request.is_none() && e.rule.is_none());
        let config = Config::parse(b"").unwrap();
        let policy = Policy::parse(b"{}").unwrap();
        let e = explain(
            &config,
            &policy,
            "",
            &request_headers("GET", "/api", "evil.example"),
        )
        .unwrap();
        assert_eq!(e.refusal, Some("host_not_accepted"));
    }
}
