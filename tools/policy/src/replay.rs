//! `replay`: which of the requests a log shows a policy would deny, grouped by
//! the rule that would deny them and by what they ask. Each request is
//! classified again by the sidecar's own `classify`, from its method and
//! path, and checked against how the log read it.

use crate::logs::Observed;
use crate::requests::Stated;
use podward::policy::{Effect, Policy};
use podward::request_info::{classify, RequestInfo};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A request of the log, as the sidecar classifies it.
pub struct Reclassified<'o> {
    pub observed: &'o Observed,
    pub info: RequestInfo<'o>,
}

/// Where the log's reading of a request and the sidecar's differ.
#[derive(Debug, Clone)]
pub struct Disagreement {
    pub line: usize,
    pub request: String,
    pub logged: Stated,
    pub classified: Stated,
}

/// A request of the log the sidecar cannot classify (it would refuse it, 400).
#[derive(Debug, Clone)]
pub struct Unclassifiable {
    pub line: usize,
    pub request: String,
    pub why: String,
}

/// The requests podward forwarded, classified; those that cannot be, with why;
/// and where the log read them otherwise.
pub struct Reclassification<'o> {
    pub classified: Vec<Reclassified<'o>>,
    pub unclassifiable: Vec<Unclassifiable>,
    pub disagreements: Vec<Disagreement>,
}

pub fn reclassify<'o>(observed: &[&'o Observed]) -> Reclassification<'o> {
    let mut classified = Vec::new();
    let mut unclassifiable = Vec::new();
    let mut disagreements = Vec::new();
    for observed in observed.iter().copied().filter(|o| o.forwarded) {
        let request = format!("{} {}", observed.method, observed.target);
        match classify(&observed.method, &observed.target) {
            Ok(info) => {
                let ours = Stated::of(&info);
                if let Some(logged) = &observed.reading {
                    // An audit event names a created object, from the request's
                    // body, which is not in the path podward classifies.
                    let mut logged = logged.clone();
                    if logged.verb == "create" && ours.name.is_empty() {
                        logged.name.clear();
                    }
                    if logged != ours {
                        disagreements.push(Disagreement {
                            line: observed.line,
                            request,
                            logged,
                            classified: ours,
                        });
                    }
                }
                classified.push(Reclassified { observed, info });
            }
            Err(why) => unclassifiable.push(Unclassifiable {
                line: observed.line,
                request,
                why: why.to_string(),
            }),
        }
    }
    Reclassification {
        classified,
        unclassifiable,
        disagreements,
    }
}

/// Requests the policy would deny that ask the same: what, how many, one example.
#[derive(Debug)]
pub struct DeniedGroup {
    pub request: Stated,
    pub count: usize,
    pub example: String,
    pub line: usize,
}

#[derive(Debug, Default)]
pub struct Replay {
    /// The client's requests in the log.
    pub requests: usize,
    /// Refused by podward when they were made: not replayed.
    pub refused_when_recorded: usize,
    pub replayed: usize,
    pub allowed: usize,
    /// The rule, then what it would deny.
    pub denied: BTreeMap<String, Vec<DeniedGroup>>,
    pub unclassifiable: Vec<Unclassifiable>,
    pub disagreements: Vec<Disagreement>,
}

impl Replay {
    pub fn denied_count(&self) -> usize {
        self.denied
            .values()
            .flatten()
            .map(|group| group.count)
            .sum()
    }

    pub fn to_json(&self) -> Value {
        let mut rules: Vec<(&String, &Vec<DeniedGroup>)> = self.denied.iter().collect();
        rules.sort_by_key(|(rule, groups)| {
            (
                std::cmp::Reverse(groups.iter().map(|g| g.count).sum::<usize>()),
                *rule,
            )
        });
        json!({
            "requests": self.requests,
            "refused_when_recorded": self.refused_when_recorded,
            "replayed": self.replayed,
            "allowed": self.allowed,
            "denied": self.denied_count(),
            "by_rule": rules.iter().map(|(rule, groups)| json!({
                "rule": rule,
                "count": groups.iter().map(|g| g.count).sum::<usize>(),
                "requests": groups.iter().map(|group| json!({
                    "verb": group.request.verb, "group": group.request.group,
                    "resource": group.request.resource, "subresource": group.request.subresource,
                    "namespace": group.request.namespace, "url": group.request.url,
                    "count": group.count, "example": group.example, "line": group.line,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "unclassifiable": self.unclassifiable.iter().map(|u| json!({
                "line": u.line, "request": u.request, "why": u.why})).collect::<Vec<_>>(),
            "disagreements": disagreements_json(&self.disagreements),
        })
    }

    pub fn to_text(&self, who: &str) -> String {
        let mut lines = vec![format!(
            "{} of {} requests of {who} replayed ({} refused by podward when recorded, not replayed): \
             {} allowed, {} would be denied",
            self.replayed,
            self.requests,
            self.refused_when_recorded,
            self.allowed,
            self.denied_count()
        )];
        let mut rules: Vec<(&String, &Vec<DeniedGroup>)> = self.denied.iter().collect();
        rules.sort_by_key(|(rule, groups)| {
            (
                std::cmp::Reverse(groups.iter().map(|g| g.count).sum::<usize>()),
                *rule,
            )
        });
        for (rule, groups) in rules {
            let count: usize = groups.iter().map(|g| g.count).sum();
            lines.push(format!("  {rule} would deny {count}:"));
            for group in groups {
                lines.push(format!(
                    "    {:>5}  {}   e.g. {} (line {})",
                    group.count,
                    group.request.describe(),
                    group.example,
                    group.line
                ));
            }
        }
        push_problems(&mut lines, &self.unclassifiable, &self.disagreements);
        lines.join("\n")
    }
}

pub fn push_problems(
    lines: &mut Vec<String>,
    unclassifiable: &[Unclassifiable],
    disagreements: &[Disagreement],
) {
    if !unclassifiable.is_empty() {
        lines.push(format!(
            "{} requests cannot be classified (podward would refuse them, 400):",
            unclassifiable.len()
        ));
        for u in unclassifiable.iter().take(10) {
            lines.push(format!("  line {}: {}: {}", u.line, u.request, u.why));
        }
    }
    if !disagreements.is_empty() {
        lines.push(format!(
            "{} requests are read otherwise by podward than the log says:",
            disagreements.len()
        ));
        for d in disagreements.iter().take(10) {
            lines.push(format!(
                "  line {}: {}: the log reads {}, podward {}",
                d.line,
                d.request,
                d.logged.describe(),
                d.classified.describe()
            ));
        }
    }
}

pub fn disagreements_json(disagreements: &[Disagreement]) -> Value {
    Value::from(
        disagreements
            .iter()
            .map(|d| {
                json!({"line": d.line, "request": d.request, "logged": d.logged.describe(),
                       "classified": d.classified.describe()})
            })
            .collect::<Vec<_>>(),
    )
}

/// What `policy` would make of every request `observed` holds that podward
/// forwarded, were nothing in it dry-run.
pub fn replay(policy: &Policy, self_namespace: &str, observed: &[&Observed]) -> Replay {
    let Reclassification {
        classified,
        unclassifiable,
        disagreements,
    } = reclassify(observed);
    let mut replay = Replay {
        requests: observed.len(),
        refused_when_recorded: observed.iter().filter(|o| !o.forwarded).count(),
        unclassifiable,
        disagreements,
        ..Replay::default()
    };
    for Reclassified { observed, info } in &classified {
        replay.replayed += 1;
        let decision = policy.candidate(info, self_namespace);
        if decision.effect == Effect::Allow {
            replay.allowed += 1;
            continue;
        }
        let mut request = Stated::of(info);
        request.name.clear();
        let groups = replay.denied.entry(decision.rule.to_string()).or_default();
        match groups.iter_mut().find(|group| group.request == request) {
            Some(group) => group.count += 1,
            None => groups.push(DeniedGroup {
                request,
                count: 1,
                example: format!("{} {}", observed.method, observed.target),
                line: observed.line,
            }),
        }
    }
    replay.replayed += replay.unclassifiable.len();
    for groups in replay.denied.values_mut() {
        groups.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.request.cmp(&b.request))
        });
    }
    replay
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs;

    #[test]
    fn denials_grouped_by_rule_and_request() {
        let log = logs::read(
            r#"{"method":"GET","path":"/api/v1/namespaces/team-a/secrets/a","code":200,"details":"via_upstream","pod":"team-a/web"}
{"method":"GET","path":"/api/v1/namespaces/team-a/secrets/b","code":200,"details":"via_upstream","pod":"team-a/web"}
{"method":"GET","path":"/api/v1/namespaces/team-a/pods","code":200,"details":"via_upstream","pod":"team-a/web"}
{"method":"DELETE","path":"/api/v1/namespaces/team-a/pods/p","code":200,"details":"via_upstream","pod":"team-a/web"}
{"method":"POST","path":"/api/v1/namespaces/team-a/pods/p/exec","code":403,"details":"podward","pod":"team-a/web","podward":"{\"decision\":\"policy_denied\"}"}"#,
        );
        let policy = Policy::parse(
            br#"{"default_action": "deny", "rules": [
                {"name": "no-secrets", "action": "deny", "verbs": ["*"], "apiGroups": [""], "resources": ["secrets"]},
                {"name": "pods", "action": "allow", "verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]}"#,
        )
        .unwrap();
        let observed: Vec<&Observed> = log.observed.iter().collect();
        let replay = replay(&policy, "team-a", &observed);
        assert_eq!(
            (
                replay.requests,
                replay.refused_when_recorded,
                replay.replayed,
                replay.allowed
            ),
            (5, 1, 4, 1)
        );
        assert_eq!(replay.denied_count(), 3);
        let secrets = &replay.denied["rules/no-secrets"];
        assert_eq!(
            (secrets.len(), secrets[0].count, secrets[0].line),
            (1, 2, 1)
        );
        assert_eq!(
            secrets[0].request.describe(),
            "get secrets in namespace team-a"
        );
        assert_eq!(
            replay.denied["rules/default"][0].example,
            "DELETE /api/v1/namespaces/team-a/pods/p"
        );
        let text = replay.to_text("pod team-a/web");
        assert!(text.contains("rules/no-secrets would deny 2:"), "{text}");
    }

    #[test]
    fn disagreements_with_the_log_are_reported() {
        let log = logs::read(
            r#"{"kind":"Event","auditID":"1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/x/pods?watch=1","verb":"list","user":{"username":"system:serviceaccount:x:a"},"objectRef":{"resource":"pods","namespace":"x"}}"#,
        );
        let observed: Vec<&Observed> = log.observed.iter().collect();
        let found = reclassify(&observed);
        assert_eq!((found.classified.len(), found.unclassifiable.len()), (1, 0));
        assert_eq!(found.disagreements[0].classified.verb, "watch");
    }
}
