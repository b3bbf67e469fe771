//! The request path, top to bottom: host check → classify → policy → token
//! freshness → credentials and identity headers → forward, or reply with a
//! Kubernetes Status. It reads a [`HeaderList`] the adapter took from the host
//! and returns the [`Rewrite`] to hand back, so it never calls the host itself.

use crate::config::{ClientAuthorization, Config};
use crate::headers::HeaderList;
use crate::identity::Identity;
use crate::policy::{host_accepted, Effect, RuleRef};
use crate::request_info::{classify, RequestInfo};
use crate::status::{push_json_string, Details, Status};
use crate::token::Freshness;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'r> {
    Forward(Rewrite<'r>),
    Reply(Status),
}

/// How a forwarded request's headers differ from the app's. The values are
/// borrowed from the prepared identity: forwarding copies no header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite<'r> {
    /// Set by podward, replacing whatever the app sent under these names.
    set: Vec<(&'r str, &'r str)>,
    user_agent: Option<String>,
    strip_impersonation: bool,
}

impl Rewrite<'_> {
    /// The whole header list to hand back to the host.
    pub fn apply<'a>(&'a self, original: &'a HeaderList) -> Vec<(&'a str, &'a str)> {
        let replaced = |name: &str| {
            self.set.iter().any(|(set, _)| *set == name)
                || (name == "user-agent" && self.user_agent.is_some())
                || (self.strip_impersonation && name.starts_with(IMPERSONATE_PREFIX))
        };
        let kept = original.0.iter().filter(|(name, _)| !replaced(name));
        kept.map(|(name, value)| (name.as_str(), value.as_str()))
            .chain(self.set.iter().copied())
            .chain(
                self.user_agent
                    .as_deref()
                    .map(|agent| ("user-agent", agent)),
            )
            .collect()
    }
}

/// Why podward answered a request itself: a bounded set, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    HostNotAccepted,
    Unclassifiable,
    PolicyDenied,
    TokenExpired,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HostNotAccepted => "host_not_accepted",
            Refusal::Unclassifiable => "unclassifiable",
            Refusal::PolicyDenied => "policy_denied",
            Refusal::TokenExpired => "token_expired",
        }
    }
}

/// What podward made of a request, for metrics and the access log.
#[derive(Debug)]
pub struct Handled<'r> {
    pub outcome: Outcome<'r>,
    pub refusal: Option<Refusal>,
    pub request: Option<RequestInfo<'r>>,
    pub rule: Option<&'r RuleRef>,
}

impl<'r> Handled<'r> {
    /// One JSON object for the access log: what the API server will see the
    /// request as, and podward's decision. Never any header value.
    pub fn access_record(&self) -> String {
        let decision = match (&self.outcome, self.refusal) {
            (Outcome::Forward(_), _) => "forward",
            (Outcome::Reply(_), Some(refusal)) => refusal.as_str(),
            (Outcome::Reply(_), None) => "reply",
        };
        let rule = self.rule.map(RuleRef::as_str).unwrap_or_default();
        let mut fields = vec![("decision", decision), ("rule", rule)];
        if let Some(request) = &self.request {
            fields.extend([
                ("verb", request.verb),
                ("group", request.api_group),
                ("resource", request.resource),
                ("subresource", request.subresource),
                ("namespace", request.namespace),
                ("name", &request.name),
            ]);
        }
        let mut record = String::with_capacity(256);
        for (key, value) in fields {
            record.push(if record.is_empty() { '{' } else { ',' });
            push_json_string(&mut record, key);
            record.push(':');
            push_json_string(&mut record, value);
        }
        record.push('}');
        record
    }

    fn refused(
        refusal: Refusal,
        status: Status,
        request: Option<RequestInfo<'r>>,
        rule: Option<&'r RuleRef>,
    ) -> Self {
        Handled {
            outcome: Outcome::Reply(status),
            refusal: Some(refusal),
            request,
            rule,
        }
    }
}

const IMPERSONATE_PREFIX: &str = "impersonate-";

pub fn handle<'r>(
    config: &'r Config,
    identity: &'r Identity,
    now_s: u64,
    method: &str,
    path: &'r str,
    headers: &HeaderList,
) -> Handled<'r> {
    let host = headers.get(":authority").unwrap_or_default();
    if !host_accepted(&config.accept_hosts, host) {
        let message = format!(
            "host {:?} is not accepted by podward (accept_hosts: {})",
            host,
            config.accept_hosts.join(", ")
        );
        let status = Status::forbidden(message, Details::default());
        return Handled::refused(Refusal::HostNotAccepted, status, None, None);
    }

    let request = match classify(method, path) {
        Ok(request) => request,
        Err(why) => {
            let status = Status::bad_request(format!("podward refused the request path: {why}"));
            return Handled::refused(Refusal::Unclassifiable, status, None, None);
        }
    };

    let decision = config.policy.decide(&request, &identity.namespace);
    if decision.effect == Effect::Deny {
        let status = forbidden(&request, decision.rule, &identity.namespace);
        return Handled::refused(
            Refusal::PolicyDenied,
            status,
            Some(request),
            Some(decision.rule),
        );
    }

    if let Freshness::Expired { expired_for_s } = identity
        .token
        .freshness(now_s, config.token.expiry_skew_seconds)
    {
        let message = format!(
            "podward: the service-account token expired {expired_for_s}s ago (allowing {}s skew) \
             and the kubelet has not written a new one",
            config.token.expiry_skew_seconds
        );
        let status = Status::unavailable(message, 1);
        return Handled::refused(
            Refusal::TokenExpired,
            status,
            Some(request),
            Some(decision.rule),
        );
    }

    let keep_client_credentials = config.token.client_authorization
        == ClientAuthorization::Preserve
        && headers.get("authorization").is_some();
    let mut set = Vec::with_capacity(identity.headers.len() + 1);
    if !keep_client_credentials {
        set.push(("authorization", identity.token.authorization()));
    }
    set.extend(
        identity
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    let user_agent =
        identity
            .user_agent_suffix
            .as_ref()
            .map(|suffix| match headers.get("user-agent") {
                Some(client) if !client.is_empty() => format!("{client} {suffix}"),
                _ => suffix.clone(),
            });
    let rewrite = Rewrite {
        set,
        user_agent,
        strip_impersonation: !config.allow_impersonation,
    };
    Handled {
        outcome: Outcome::Forward(rewrite),
        refusal: None,
        request: Some(request),
        rule: Some(decision.rule),
    }
}

/// Worded like the API server's own 403 (`pods "web" is forbidden: …`), so
/// that kubectl users recognise it, but naming podward's rule, not RBAC.
fn forbidden(request: &RequestInfo, rule: &RuleRef, self_namespace: &str) -> Status {
    let who =
        format!("podward policy rule \"{rule}\" forbids this pod (namespace {self_namespace:?})");
    if !request.is_resource_request {
        let message = format!(
            "forbidden: {who} to {} path {:?}",
            request.verb, request.path
        );
        return Status::forbidden(message, Details::default());
    }
    let qualified = if request.api_group.is_empty() {
        request.resource.to_string()
    } else {
        format!("{}.{}", request.resource, request.api_group)
    };
    let subject = if request.name.is_empty() {
        format!("{qualified} is forbidden")
    } else {
        format!("{qualified} {:?} is forbidden", request.name)
    };
    let scope = if request.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", request.namespace)
    };
    let message = format!(
        "{subject}: {who} to {} resource {:?} in API group {:?} {scope}",
        request.verb,
        request.resource_with_subresource().to_string(),
        request.api_group,
    );
    let details = Details {
        name: request.name.to_string(),
        group: request.api_group.to_string(),
        kind: request.resource.to_string(),
        retry_after_seconds: None,
    };
    Status::forbidden(message, details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{build, tests::standard_pod};
    use crate::token::Token;

    fn headers(pairs: &[(&str, &str)]) -> HeaderList {
        HeaderList(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn value<'h>(headers: &'h HeaderList, name: &str) -> &'h str {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("no header {name}"))
    }

    fn identity(config: &Config, token: &str) -> Identity {
        build(
            config,
            Token::parse(token.as_bytes()).unwrap(),
            &standard_pod(),
        )
        .0
    }

    /// Runs the request path; a forwarded request's headers are rewritten in
    /// place, as the host would hold them afterwards.
    fn run(
        config_json: &str,
        method: &str,
        path: &str,
        request: &mut HeaderList,
    ) -> Option<Status> {
        let config = Config::parse(config_json.as_bytes()).unwrap();
        let identity = identity(&config, "pod-token");
        forward(
            handle(&config, &identity, 0, method, path, request).outcome,
            request,
        )
    }

    fn forward(outcome: Outcome, request: &mut HeaderList) -> Option<Status> {
        match outcome {
            Outcome::Reply(status) => Some(status),
            Outcome::Forward(rewrite) => {
                let pairs = rewrite.apply(request);
                *request = headers(&pairs);
                None
            }
        }
    }

    fn status_of(reply: Option<Status>) -> Status {
        reply.expect("expected a reply, the request was forwarded")
    }

    #[test]
    fn forwards_with_token_and_identity() {
        let mut request = headers(&[(":authority", "localhost:8001"), ("user-agent", "curl/8.0")]);
        let outcome = run("", "GET", "/api/v1/namespaces/default/pods", &mut request);
        assert_eq!(outcome, None);
        assert_eq!(value(&request, "authorization"), "Bearer pod-token");
        assert_eq!(value(&request, "x-pod-name"), "web-0");
        assert_eq!(value(&request, "x-pod-labels"), "app=web,tier=front%20end");
        assert!(value(&request, "user-agent").starts_with("curl/8.0 podward/"));
    }

    #[test]
    fn the_app_cannot_spoof_identity_or_impersonate() {
        let mut request = headers(&[
            (":authority", "127.0.0.1:8001"),
            ("authorization", "Bearer stolen"),
            ("x-pod-name", "someone-else"),
            ("impersonate-user", "admin"),
            ("impersonate-group", "system:masters"),
            ("impersonate-group", "admins"),
            ("impersonate-extra-scopes", "all"),
            ("x-pod-name", "twice"),
        ]);
        run("", "GET", "/api", &mut request);
        assert_eq!(value(&request, "authorization"), "Bearer pod-token");
        let names: Vec<&str> = request.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.iter().filter(|n| **n == "authorization").count(), 1);
        assert_eq!(names.iter().filter(|n| **n == "x-pod-name").count(), 1);
        assert_eq!(value(&request, "x-pod-name"), "web-0");
        assert!(
            !names.iter().any(|n| n.starts_with("impersonate")),
            "{names:?}"
        );
    }

    #[test]
    fn configured_to_preserve_client_credentials_and_impersonation() {
        let config =
            r#"{"token": {"client_authorization": "preserve"}, "allow_impersonation": true}"#;
        let mut request = headers(&[
            (":authority", "localhost"),
            ("authorization", "Bearer app-own"),
            ("impersonate-user", "jane"),
        ]);
        run(config, "GET", "/api", &mut request);
        assert_eq!(value(&request, "authorization"), "Bearer app-own");
        assert_eq!(value(&request, "impersonate-user"), "jane");
        let mut request = headers(&[(":authority", "localhost")]);
        run(config, "GET", "/api", &mut request);
        assert_eq!(value(&request, "authorization"), "Bearer pod-token");
    }

    #[test]
    fn refusals_add_no_credentials() {
        let cases = [
            (
                "evil.example:8001",
                "GET",
                "/api",
                403,
                "host \"evil.example:8001\" is not accepted",
            ),
            (
                "localhost",
                "GET",
                "/api/v1/namespaces/x/pods/%2e%2e/exec",
                400,
                "podward refused the request path",
            ),
            (
                "localhost",
                "POST",
                "/api/v1/namespaces/default/pods/web/exec",
                403,
                "pods \"web\" is forbidden",
            ),
        ];
        for (host, method, path, code, message) in cases {
            let mut request = headers(&[(":authority", host)]);
            let status = status_of(run("", method, path, &mut request));
            assert_eq!(status.code, code, "{path}");
            assert!(status.message.contains(message), "{}", status.message);
            assert!(request.get("authorization").is_none(), "{path}");
            assert!(request.get("x-pod-name").is_none(), "{path}");
        }
    }

    #[test]
    fn forbidden_reads_like_the_api_server() {
        {
            let mut request = headers(&[(":authority", "localhost")]);
            let path = "/api/v1/namespaces/default/pods/web/exec";
            let status = status_of(run("", "POST", path, &mut request));
            assert_eq!(
                status.message,
                "pods \"web\" is forbidden: podward policy rule \"kubectl-proxy/no-exec-or-attach\" \
                 forbids this pod (namespace \"team-a\") to create resource \"pods/exec\" \
                 in API group \"\" in the namespace \"default\""
            );
            assert_eq!(
                (status.details.name.as_str(), status.details.kind.as_str()),
                ("web", "pods")
            );
        }
        let read_only = r#"{"policy": {"preset": "read-only"}}"#;
        let mut request = headers(&[(":authority", "localhost")]);
        let status = status_of(run(
            read_only,
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            &mut request,
        ));
        assert_eq!(
            status.message,
            "deployments.apps is forbidden: podward policy rule \"read-only/default\" forbids this pod \
             (namespace \"team-a\") to create resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        );
        let status = status_of(run(read_only, "DELETE", "/api/v1/nodes/n1", &mut request));
        assert!(
            status.message.ends_with("at the cluster scope"),
            "{}",
            status.message
        );
        let status = status_of(run(read_only, "POST", "/logs", &mut request));
        assert!(status
            .message
            .starts_with("forbidden: podward policy rule \"read-only/default\""));
        assert!(
            status.message.ends_with("to post path \"/logs\""),
            "{}",
            status.message
        );
    }

    #[test]
    fn the_access_record_describes_the_request_and_decision() {
        let config = Config::parse(b"").unwrap();
        let identity = identity(&config, "secret-token");
        let cases = [
            (
                "GET",
                "/api/v1/namespaces/default/pods/web",
                r#"{"decision":"forward","rule":"kubectl-proxy/default","verb":"get","group":"","resource":"pods","subresource":"","namespace":"default","name":"web"}"#,
            ),
            (
                "POST",
                "/api/v1/namespaces/x/pods/p/exec",
                r#"{"decision":"policy_denied","rule":"kubectl-proxy/no-exec-or-attach","verb":"create","group":"","resource":"pods","subresource":"exec","namespace":"x","name":"p"}"#,
            ),
            (
                "GET",
                "/a/%2e%2e/b",
                r#"{"decision":"unclassifiable","rule":""}"#,
            ),
        ];
        for (method, path, expected) in cases {
            let request = headers(&[(":authority", "localhost")]);
            let handled = handle(&config, &identity, 0, method, path, &request);
            let record = handled.access_record();
            assert_eq!(record, expected);
            assert!(!record.contains("secret-token"));
        }
    }

    #[test]
    fn an_expired_token_is_not_sent() {
        use base64::Engine;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":1000,"iat":0}"#);
        let config = Config::parse(b"").unwrap();
        let identity = identity(&config, &format!("h.{payload}.s"));
        for (now, forwarded) in [(989, true), (990, false), (5000, false)] {
            let mut request = headers(&[(":authority", "localhost")]);
            let handled = handle(&config, &identity, now, "GET", "/api", &request);
            let refusal = handled.refusal;
            let reply = forward(handled.outcome, &mut request);
            assert_eq!(reply.is_none(), forwarded, "now {now}");
            assert_eq!(
                request.get("authorization").is_some(),
                forwarded,
                "now {now}"
            );
            if !forwarded {
                assert_eq!(refusal, Some(Refusal::TokenExpired));
                let status = status_of(reply);
                assert_eq!(status.code, 503);
                assert!(
                    status.message.contains("token expired"),
                    "{}",
                    status.message
                );
            }
        }
    }
}
