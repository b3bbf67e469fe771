//! The request path, top to bottom: host check → classify → policy → token
//! freshness → credentials and identity headers → forward, or reply with a
//! Kubernetes Status. [`serve`] runs it against a [`RequestHost`], the few
//! calls each host (proxy-wasm, a native module, a test's mock) provides.

use crate::config::{AccessRecord, ClientAuthorization, Config};
use crate::headers::HeaderList;
use crate::host::RequestHost;
use crate::identity::Identity;
use crate::metrics::{Counter, Counts, Refusal, RequestSeries};
use crate::policy::{host_accepted, Effect, Policy, RuleRef};
use crate::prelude::*;
use crate::request_info::{classify, RequestInfo};
use crate::status::{push_json_string, Details, Quoted, Status};
use crate::token::Freshness;
use alloc::sync::Arc;

/// Everything a request needs, built when a source changes and shared by
/// every request until the next change.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub identity: Arc<Identity>,
    pub policy: Arc<Policy>,
}

/// What the request path decided.
#[derive(Debug, Clone)]
pub enum Decision<'r> {
    Forward(Rewrite<'r>),
    Reply(Status),
}

/// How a forwarded request's headers differ from the app's. Every value
/// comes from the prepared identity (the User-Agent also from the app's):
/// forwarding copies no header value and allocates nothing.
#[derive(Debug, Clone)]
pub struct Rewrite<'r> {
    config: &'r Config,
    identity: &'r Identity,
    /// podward sends the pod's token (else the app's own goes upstream).
    authorization: bool,
    /// The app's User-Agent, empty if it sent none; read only when podward
    /// appends the pod to it.
    client_agent: &'r [u8],
}

/// Headers the app may not send upstream under any configuration: Envoy's
/// own controls (`x-envoy-*` steer retries, timeouts and logging), and (in
/// [`Config::dropped_headers`]) the forwarding headers.
const UNTRUSTED_PREFIXES: &[&[u8]] = &[b"x-envoy-"];
const IMPERSONATE_PREFIX: &[u8] = b"impersonate-";

/// One change a host makes to the app's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Remove every value of this name.
    Remove(&'a [u8]),
    /// Add one value.
    Add(&'a [u8], &'a [u8]),
}

impl Rewrite<'_> {
    /// Whether the app's header `name` is left out of the forwarded request:
    /// podward sets it, or the app may not send it.
    pub fn drops(&self, name: &[u8]) -> bool {
        self.config.dropped_headers.contains(name)
            || (!self.config.allow_impersonation && name.starts_with(IMPERSONATE_PREFIX))
            || UNTRUSTED_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
    }

    /// Hands `apply` the edits that turn the app's headers into the
    /// forwarded ones: every name to remove (once each), then every header to
    /// add; a host makes them one call each, which costs Envoy less than
    /// replacing the map. Stops at the first edit `apply` refuses (false).
    /// `user_agent` is where the User-Agent value is put together.
    pub fn edit(
        &self,
        original: &HeaderList,
        user_agent: &mut Vec<u8>,
        mut apply: impl FnMut(Edit<'_>) -> bool,
    ) -> bool {
        for (at, (name, _)) in original.iter().enumerate() {
            let removed_before = || original.iter().take(at).any(|(earlier, _)| earlier == name);
            if self.drops(name) && !removed_before() && !apply(Edit::Remove(name)) {
                return false;
            }
        }
        let identity = self.identity;
        if self.authorization
            && !apply(Edit::Add(
                b"authorization",
                identity.token.authorization().as_bytes(),
            ))
        {
            return false;
        }
        // An empty value (a pod without annotations) is left out: Envoy's
        // dynamic-module API cannot send an empty header, and both builds
        // must send the same.
        for (name, value) in &identity.headers {
            if !value.is_empty() && !apply(Edit::Add(name.as_bytes(), value.as_bytes())) {
                return false;
            }
        }
        let Some(suffix) = &identity.user_agent_suffix else {
            return true;
        };
        let client = self.client_agent;
        user_agent.clear();
        user_agent.extend_from_slice(client);
        if !client.is_empty() {
            user_agent.push(b' ');
        }
        user_agent.extend_from_slice(suffix.as_bytes());
        apply(Edit::Add(b"user-agent", user_agent))
    }
}

/// What podward made of a request, for metrics and the access log.
#[derive(Debug)]
pub struct Handled<'r> {
    pub decision: Decision<'r>,
    pub refusal: Option<Refusal>,
    pub request: Option<RequestInfo<'r>>,
    pub rule: Option<&'r RuleRef>,
    /// The dry-run deny rule that would have refused the request.
    pub dry_run: Option<&'r RuleRef>,
}

impl<'r> Handled<'r> {
    /// One JSON object for the access log: what the API server will see the
    /// request as, and podward's decision. Never any header value.
    pub fn access_record(&self) -> String {
        let decision = match (&self.decision, self.refusal) {
            (Decision::Forward(_), _) => "forward",
            (Decision::Reply(_), Some(refusal)) => refusal.as_str(),
            (Decision::Reply(_), None) => "reply",
        };
        let rule = self.rule.map(RuleRef::as_str).unwrap_or_default();
        let mut fields = vec![("decision", decision), ("rule", rule)];
        if let Some(request) = &self.request {
            fields.push(("verb", request.reported_verb()));
            if request.also_create() {
                // As the API server authorizes it; its audit log says `get`.
                fields.push(("verbs", "get,create"));
            }
            fields.extend([
                ("group", request.api_group),
                ("resource", request.resource),
                ("subresource", request.subresource),
                ("namespace", request.namespace),
                ("name", &request.name),
            ]);
        }
        if let Some(dry_run) = self.dry_run {
            fields.extend([("dry_run", "deny"), ("dry_run_rule", dry_run.as_str())]);
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

    pub fn refused(
        refusal: Refusal,
        status: Status,
        request: Option<RequestInfo<'r>>,
        rule: Option<&'r RuleRef>,
    ) -> Self {
        Handled {
            decision: Decision::Reply(status),
            refusal: Some(refusal),
            request,
            rule,
            dry_run: None,
        }
    }
}

/// How a request left the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The answer podward gives itself; `None`: the request goes upstream
    /// with its headers edited.
    pub reply: Option<Status>,
    /// The request's metric series, if it was classified.
    pub series: Option<usize>,
}

/// One request, start to finish, given the app's headers: decide, then
/// edit the headers for forwarding, or say what to reply.
/// `user_agent`: a buffer the User-Agent is put together in.
#[allow(clippy::too_many_arguments)]
pub fn serve(
    host: &mut impl RequestHost,
    headers: &HeaderList,
    config: &Config,
    prepared: &Prepared,
    now_s: u64,
    series: &mut RequestSeries,
    counts: &mut Counts,
    user_agent: &mut Vec<u8>,
) -> Served {
    let handled = handle(config, &prepared.policy, &prepared.identity, now_s, headers);
    let series = handled
        .request
        .as_ref()
        .map(|request| series.series_for(request));
    if handled.refusal.is_some()
        || config.access_record == AccessRecord::All
        || handled.dry_run.is_some()
    {
        host.set_access_record(&handled.access_record());
    }
    if let Some(rule) = handled.dry_run {
        counts.count(Counter::PolicyDryRunDenied { rule });
    }
    let (refusal, status) = match handled.decision {
        Decision::Forward(rewrite) => {
            if edit(host, &rewrite, headers, user_agent) {
                return Served {
                    reply: None,
                    series,
                };
            }
            // Never forward without the credentials just decided on.
            let message = "podward could not set the request headers: the host refused a change";
            (Refusal::HostError, Status::unavailable(message.into(), 1))
        }
        Decision::Reply(status) => {
            if let (Some(Refusal::PolicyDenied), Some(rule)) = (handled.refusal, handled.rule) {
                counts.count(Counter::PolicyDenied { rule });
            }
            (handled.refusal.unwrap_or(Refusal::HostError), status)
        }
    };
    counts.count(Counter::LocalReplies { reason: refusal });
    Served {
        reply: Some(status),
        series,
    }
}

/// Makes the rewrite's edits through the host, one call each; false if the
/// host refused one.
fn edit(
    host: &mut impl RequestHost,
    rewrite: &Rewrite,
    original: &HeaderList,
    user_agent: &mut Vec<u8>,
) -> bool {
    rewrite.edit(original, user_agent, |edit| match edit {
        Edit::Remove(name) => host.remove_header(name),
        Edit::Add(name, value) => host.add_header(name, value),
    })
}

/// The path podward answers itself with its readiness, for a probe: the
/// API server has no such path, so nothing of the API is hidden by it.
pub const READINESS_PATH: &str = "/podward/ready";

/// A readiness probe: `GET` or `HEAD` of [`READINESS_PATH`].
pub fn is_readiness_probe(headers: &HeaderList) -> bool {
    let method = headers.get(":method");
    matches!(method, Some(b"GET" | b"HEAD"))
        && headers.get(":path") == Some(READINESS_PATH.as_bytes())
}

/// The answer to a readiness probe: 200 once requests are served at once,
/// else 503 saying what is missing.
pub fn readiness_reply(readiness: Result<(), String>) -> Status {
    match readiness {
        Ok(()) => {
            Status::success("podward holds a token, its policy and the pod's identity".into())
        }
        Err(why) => Status::unavailable(why, 1),
    }
}

/// The request path for one request, given the app's headers: the host
/// check, the classification, the policy, then credentials and identity.
/// `podward-policy explain` runs it too.
pub fn handle<'r>(
    config: &'r Config,
    policy: &'r Policy,
    identity: &'r Identity,
    now_s: u64,
    headers: &'r HeaderList,
) -> Handled<'r> {
    let host = headers.get(":authority").unwrap_or_default();
    if !host_accepted(&config.accept_hosts, host) {
        let message = format!(
            "host {} is not accepted by podward (accept_hosts: {})",
            Quoted(&String::from_utf8_lossy(host)),
            config.accept_hosts.join(", ")
        );
        let status = Status::forbidden(message, Details::default());
        return Handled::refused(Refusal::HostNotAccepted, status, None, None);
    }

    let method = headers.get_str(":method").unwrap_or_default();
    // A path that is not UTF-8 has bytes `classify` refuses anyway.
    let path = headers.get_str(":path").unwrap_or("\u{0}");
    let request = match classify(method, path) {
        Ok(request) => request,
        Err(why) => {
            let status = Status::bad_request(format!("podward refused the request path: {why}"));
            return Handled::refused(Refusal::Unclassifiable, status, None, None);
        }
    };

    let decision = policy.decide(&request, &identity.namespace);
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
        return Handled {
            dry_run: decision.dry_run,
            ..Handled::refused(
                Refusal::TokenExpired,
                status,
                Some(request),
                Some(decision.rule),
            )
        };
    }

    let keep_client_credentials = config.token.client_authorization
        == ClientAuthorization::Preserve
        && headers.get("authorization").is_some();
    let client_agent = match identity.user_agent_suffix {
        Some(_) => headers.get("user-agent").unwrap_or_default(),
        None => &[],
    };
    let rewrite = Rewrite {
        config,
        identity,
        authorization: !keep_client_credentials,
        client_agent,
    };
    Handled {
        decision: Decision::Forward(rewrite),
        refusal: None,
        request: Some(request),
        rule: Some(decision.rule),
        dry_run: decision.dry_run,
    }
}

/// Worded like the API server's own 403 (`pods "web" is forbidden: …`), so
/// that kubectl users recognise it, but naming podward's rule, not RBAC.
fn forbidden(request: &RequestInfo, rule: &RuleRef, self_namespace: &str) -> Status {
    let who = format!(
        "podward policy rule \"{rule}\" forbids this pod (namespace {})",
        Quoted(self_namespace)
    );
    if !request.is_resource_request {
        let message = format!(
            "forbidden: {who} to {} path {}",
            request.verb,
            Quoted(request.path)
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
        format!("{qualified} {} is forbidden", Quoted(&request.name))
    };
    let scope = if request.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {}", Quoted(request.namespace))
    };
    let verb = if request.also_create() {
        "get and create"
    } else {
        request.verb
    };
    let message = format!(
        "{subject}: {who} to {verb} resource {} in API group {} {scope}",
        Quoted(&request.resource_with_subresource().to_string()),
        Quoted(request.api_group),
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
    use crate::config::PolicySource;
    use crate::identity::{build, tests::standard_pod};
    use crate::token::Token;

    fn headers(pairs: &[(&str, &str)]) -> HeaderList {
        HeaderList::from_pairs(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    fn value<'h>(headers: &'h HeaderList, name: &str) -> &'h str {
        headers
            .get_str(name)
            .unwrap_or_else(|| panic!("no UTF-8 header {name}"))
    }

    fn identity(config: &Config, token: &str) -> Identity {
        build(
            config,
            Token::parse(token.as_bytes()).unwrap(),
            &standard_pod(),
        )
        .0
    }

    fn inline_policy(config: &Config) -> &Policy {
        match &config.policy {
            PolicySource::Inline(policy) => policy,
            PolicySource::File(_) => panic!("these tests use inline policies"),
        }
    }

    /// The app's request: pseudo-headers first, as Envoy hands them over.
    fn request(method: &str, path: &str, extra: &[(&str, &str)]) -> HeaderList {
        let mut list = headers(&[(":method", method), (":path", path)]);
        for (name, value) in extra {
            list.push(name.as_bytes(), value.as_bytes());
        }
        list
    }

    /// Runs the request path; a forwarded request's headers are rewritten in
    /// place, as the host would hold them afterwards.
    fn run(config_json: &str, request: &mut HeaderList) -> Option<Status> {
        let config = Config::parse(config_json.as_bytes()).unwrap();
        let identity = identity(&config, "pod-token");
        let original = request.clone();
        let handled = handle(&config, inline_policy(&config), &identity, 0, &original);
        forward(handled.decision, request)
    }

    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

    /// The rewrite's edits in order: the names removed, the headers added.
    fn edits(rewrite: &Rewrite, original: &HeaderList) -> (Vec<Vec<u8>>, Pairs) {
        let (mut removals, mut additions) = (Vec::new(), Vec::new());
        let done = rewrite.edit(original, &mut Vec::new(), |edit| {
            match edit {
                Edit::Remove(name) => {
                    assert!(additions.is_empty(), "every removal comes first");
                    removals.push(name.to_vec());
                }
                Edit::Add(name, value) => additions.push((name.to_vec(), value.to_vec())),
            }
            true
        });
        assert!(done);
        (removals, additions)
    }

    /// The request as a host holds it after making the rewrite's edits.
    fn applied(rewrite: &Rewrite, original: &HeaderList) -> HeaderList {
        let (removals, additions) = edits(rewrite, original);
        let kept = original
            .iter()
            .filter(|(name, _)| !removals.iter().any(|removed| removed == name));
        let added = additions.iter().map(|(n, v)| (n.as_slice(), v.as_slice()));
        HeaderList::from_pairs(kept.chain(added))
    }

    fn forward(decision: Decision, request: &mut HeaderList) -> Option<Status> {
        match decision {
            Decision::Reply(status) => Some(status),
            Decision::Forward(rewrite) => {
                let original = request.clone();
                *request = applied(&rewrite, &original);
                None
            }
        }
    }

    fn status_of(reply: Option<Status>) -> Status {
        reply.expect("expected a reply, the request was forwarded")
    }

    fn names(request: &HeaderList) -> Vec<String> {
        request
            .iter()
            .map(|(name, _)| String::from_utf8_lossy(name).into_owned())
            .collect()
    }

    #[test]
    fn forwards_with_token_and_identity() {
        let mut request = request(
            "GET",
            "/api/v1/namespaces/default/pods",
            &[(":authority", "localhost:8001"), ("user-agent", "curl/8.0")],
        );
        assert_eq!(run("", &mut request), None);
        assert_eq!(value(&request, "authorization"), "Bearer pod-token");
        assert_eq!(value(&request, "x-pod-name"), "web-0");
        assert_eq!(value(&request, "x-pod-labels"), "app=web,tier=front%20end");
        assert!(value(&request, "user-agent").starts_with("curl/8.0 podward/"));
    }

    #[test]
    fn the_app_cannot_spoof_identity_or_impersonate() {
        let mut request = request(
            "GET",
            "/api",
            &[
                (":authority", "127.0.0.1:8001"),
                ("authorization", "Bearer stolen"),
                ("x-pod-name", "someone-else"),
                ("impersonate-user", "admin"),
                ("impersonate-group", "system:masters"),
                ("impersonate-group", "admins"),
                ("impersonate-extra-scopes", "all"),
                ("x-pod-name", "twice"),
            ],
        );
        run("", &mut request);
        assert_eq!(value(&request, "authorization"), "Bearer pod-token");
        let names = names(&request);
        assert_eq!(names.iter().filter(|n| *n == "authorization").count(), 1);
        assert_eq!(names.iter().filter(|n| *n == "x-pod-name").count(), 1);
        assert_eq!(value(&request, "x-pod-name"), "web-0");
        assert!(
            !names.iter().any(|n| n.starts_with("impersonate")),
            "{names:?}"
        );
    }

    #[test]
    fn identity_headers_without_a_value_are_still_taken_from_the_app() {
        let config = r#"{"identity_headers": [
            {"header": "x-pod-name", "env": "POD_NAME"},
            {"header": "x-pod-secret-level", "env": "UNSET_VARIABLE"},
            {"header": "x-pod-team", "file": "/podinfo/labels", "key": "team"}]}"#;
        let mut request = request(
            "GET",
            "/api",
            &[
                (":authority", "localhost"),
                ("x-pod-secret-level", "top"),
                ("x-pod-team", "admins"),
                ("x-app-own", "kept"),
            ],
        );
        assert_eq!(run(config, &mut request), None);
        assert_eq!(request.get("x-pod-secret-level"), None);
        assert_eq!(request.get("x-pod-team"), None);
        assert_eq!(value(&request, "x-pod-name"), "web-0");
        assert_eq!(value(&request, "x-app-own"), "kept");
    }

    #[test]
    fn an_empty_identity_value_is_not_sent_and_the_apps_is_still_dropped() {
        let config = r#"{"identity_headers": [{"header": "x-pod-team", "env": "EMPTY"}]}"#;
        let config = Config::parse(config.as_bytes()).unwrap();
        let mut sources = standard_pod();
        sources.env.insert("EMPTY".into(), String::new());
        let identity = build(&config, Token::parse(b"t").unwrap(), &sources).0;
        assert_eq!(
            identity.headers,
            [("x-pod-team".to_string(), String::new())]
        );
        let request = request(
            "GET",
            "/api",
            &[(":authority", "localhost"), ("x-pod-team", "forged")],
        );
        let handled = handle(&config, inline_policy(&config), &identity, 0, &request);
        let Decision::Forward(rewrite) = handled.decision else {
            panic!("forwarded")
        };
        let forwarded = applied(&rewrite, &request);
        assert_eq!(forwarded.get("x-pod-team"), None);
        assert!(!edits(&rewrite, &request)
            .1
            .iter()
            .any(|(_, v)| v.is_empty()));
    }

    #[test]
    fn envoy_controls_and_forwarding_headers_from_the_app_are_dropped() {
        let mut request = request(
            "GET",
            "/api",
            &[
                (":authority", "localhost"),
                ("x-envoy-original-path", "/healthz"),
                ("x-envoy-upstream-rq-timeout-ms", "1"),
                ("x-envoy-retry-on", "5xx"),
                ("x-forwarded-for", "10.0.0.1"),
                ("x-real-ip", "10.0.0.1"),
                ("forwarded", "for=10.0.0.1"),
                ("x-envoyish", "kept"),
            ],
        );
        assert_eq!(run("", &mut request), None);
        let names = names(&request);
        assert!(
            !names.iter().any(|n| n.starts_with("x-envoy-")
                || ["x-forwarded-for", "x-real-ip", "forwarded"].contains(&n.as_str())),
            "{names:?}"
        );
        assert_eq!(value(&request, "x-envoyish"), "kept");
    }

    #[test]
    fn any_header_bytes_pass_through_untouched() {
        let mut request = request("GET", "/api", &[(":authority", "localhost")]);
        request.push(b"x-latin1", b"caf\xe9");
        request.push(b"user-agent", b"\xff\xfe agent");
        assert_eq!(run("", &mut request), None);
        assert_eq!(request.get("x-latin1"), Some(&b"caf\xe9"[..]));
        let agent = request.get("user-agent").unwrap();
        assert!(agent.starts_with(b"\xff\xfe agent podward/"), "{agent:?}");

        for (name, value) in [
            (&b":authority"[..], &b"local\xffhost"[..]),
            (b":path", b"/api/\xff"),
            (b":method", b"G\xe9T"),
        ] {
            let mut pairs: Vec<(&[u8], &[u8])> = vec![
                (b":method", b"GET"),
                (b":path", b"/api"),
                (b":authority", b"localhost"),
            ];
            pairs.retain(|(n, _)| *n != name);
            pairs.push((name, value));
            let mut request = HeaderList::from_pairs(pairs);
            let status = status_of(run("", &mut request));
            assert!([400, 403].contains(&status.code), "{name:?}: {status:?}");
        }
    }

    #[test]
    fn the_dropped_names_follow_the_configuration() {
        let dropped = |json: &str, name: &[u8]| {
            let config = Config::parse(json.as_bytes()).unwrap();
            config.dropped_headers.contains(name)
        };
        let always = [&b"x-forwarded-for"[..], b"x-real-ip", b"forwarded"];
        for name in
            always
                .iter()
                .chain(&[&b"authorization"[..], b"user-agent", b"x-pod-annotations"])
        {
            assert!(dropped("", name), "{name:?}");
        }
        let preserve = r#"{"token": {"client_authorization": "preserve"}, "user_agent": false,
            "identity_headers": [{"header": "x-team", "env": "TEAM"}]}"#;
        for name in always.iter().chain(&[&b"x-team"[..]]) {
            assert!(dropped(preserve, name), "{name:?}");
        }
        for name in [
            &b"authorization"[..],
            b"user-agent",
            b"x-pod-name",
            b"accept",
        ] {
            assert!(!dropped(preserve, name), "{name:?}");
        }
    }

    #[test]
    fn edits_remove_each_dropped_name_once_then_set() {
        let config = Config::parse(b"").unwrap();
        let identity = identity(&config, "pod-token");
        let request = request(
            "GET",
            "/api",
            &[
                (":authority", "localhost"),
                ("impersonate-group", "a"),
                ("impersonate-group", "b"),
                ("authorization", "Bearer app"),
                ("x-kept", "1"),
            ],
        );
        let handled = handle(&config, inline_policy(&config), &identity, 0, &request);
        let Decision::Forward(rewrite) = handled.decision else {
            panic!("forwarded")
        };
        let (removals, additions) = edits(&rewrite, &request);
        assert_eq!(removals, [&b"impersonate-group"[..], b"authorization"]);
        assert_eq!(
            additions.first(),
            Some(&(b"authorization".to_vec(), b"Bearer pod-token".to_vec()))
        );
        let (name, agent) = additions.last().unwrap();
        assert_eq!(name, b"user-agent");
        assert!(agent.starts_with(b"podward/"));
        assert_eq!(additions.len(), 1 + identity.headers.len() + 1);
    }

    #[test]
    fn configured_to_preserve_client_credentials_and_impersonation() {
        let config =
            r#"{"token": {"client_authorization": "preserve"}, "allow_impersonation": true}"#;
        let mut request_with = request(
            "GET",
            "/api",
            &[
                (":authority", "localhost"),
                ("authorization", "Bearer app-own"),
                ("impersonate-user", "jane"),
            ],
        );
        run(config, &mut request_with);
        assert_eq!(value(&request_with, "authorization"), "Bearer app-own");
        assert_eq!(value(&request_with, "impersonate-user"), "jane");
        let mut request_without = request("GET", "/api", &[(":authority", "localhost")]);
        run(config, &mut request_without);
        assert_eq!(value(&request_without, "authorization"), "Bearer pod-token");
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
            let mut request = request(method, path, &[(":authority", host)]);
            let status = status_of(run("", &mut request));
            assert_eq!(status.code, code, "{path}");
            assert!(status.message.contains(message), "{}", status.message);
            assert!(request.get("authorization").is_none(), "{path}");
            assert!(request.get("x-pod-name").is_none(), "{path}");
        }
    }

    #[test]
    fn forbidden_reads_like_the_api_server() {
        let local = [(":authority", "localhost")];
        let path = "/api/v1/namespaces/default/pods/web/exec";
        let status = status_of(run("", &mut request("POST", path, &local)));
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
        let status = status_of(run("", &mut request("GET", path, &local)));
        assert!(
            status
                .message
                .contains("to get and create resource \"pods/exec\""),
            "a WebSocket exec is both: {}",
            status.message
        );
        let read_only = r#"{"policy": {"preset": "read-only"}}"#;
        let path = "/apis/apps/v1/namespaces/default/deployments";
        let status = status_of(run(read_only, &mut request("POST", path, &local)));
        assert_eq!(
            status.message,
            "deployments.apps is forbidden: podward policy rule \"read-only/default\" forbids this pod \
             (namespace \"team-a\") to create resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        );
        let status = status_of(run(
            read_only,
            &mut request("DELETE", "/api/v1/nodes/n1", &local),
        ));
        assert!(
            status.message.ends_with("at the cluster scope"),
            "{}",
            status.message
        );
        let status = status_of(run(read_only, &mut request("POST", "/logs", &local)));
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
                "/api/v1/namespaces/x/pods/p/portforward?ports=80",
                r#"{"decision":"forward","rule":"kubectl-proxy/default","verb":"create","verbs":"get,create","group":"","resource":"pods","subresource":"portforward","namespace":"x","name":"p"}"#,
            ),
            (
                "GET",
                "/a/%2e%2e/b",
                r#"{"decision":"unclassifiable","rule":""}"#,
            ),
        ];
        for (method, path, expected) in cases {
            let request = request(method, path, &[(":authority", "localhost")]);
            let handled = handle(&config, inline_policy(&config), &identity, 0, &request);
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
            let mut request = request("GET", "/api", &[(":authority", "localhost")]);
            let original = request.clone();
            let handled = handle(&config, inline_policy(&config), &identity, now, &original);
            let refusal = handled.refusal;
            let reply = forward(handled.decision, &mut request);
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

    /// A host that records every call the request path makes.
    #[derive(Default)]
    struct MockHost {
        /// The request as the host holds it, once the path has edited it.
        headers: HeaderList,
        edited: bool,
        records: Vec<String>,
        refuse_edits: bool,
    }

    impl RequestHost for MockHost {
        type Waker = ();
        fn request_headers(&mut self, into: &mut HeaderList) -> bool {
            for (name, value) in self.headers.iter() {
                into.push(name, value);
            }
            true
        }
        fn remove_header(&mut self, name: &[u8]) -> bool {
            self.edited = true;
            let kept = self.headers.iter().filter(|(n, _)| *n != name);
            self.headers = HeaderList::from_pairs(kept);
            !self.refuse_edits
        }
        fn add_header(&mut self, name: &[u8], value: &[u8]) -> bool {
            self.edited = true;
            self.headers.push(name, value);
            !self.refuse_edits
        }
        fn set_access_record(&mut self, record: &str) {
            self.records.push(record.to_string());
        }
        fn waker(&mut self) {}
    }

    fn serve_one(host: &mut MockHost, method: &str, path: &str) -> (Served, Vec<String>) {
        serve_with(host, "", method, path)
    }

    fn serve_with(
        host: &mut MockHost,
        config: &str,
        method: &str,
        path: &str,
    ) -> (Served, Vec<String>) {
        let config = Config::parse(config.as_bytes()).unwrap();
        let prepared = Prepared {
            identity: Arc::new(identity(&config, "pod-token")),
            policy: Arc::new(inline_policy(&config).clone()),
        };
        let headers = request(method, path, &[(":authority", "localhost")]);
        host.headers = headers.clone();
        host.edited = false;
        let mut counts = Counts::default();
        let mut series = RequestSeries::default();
        let served = serve(
            host,
            &headers,
            &config,
            &prepared,
            0,
            &mut series,
            &mut counts,
            &mut Vec::new(),
        );
        let mut counted = Vec::new();
        counts.drain(&mut |sample| counted.push(sample.tagged_name()));
        (served, counted)
    }

    #[test]
    fn serve_forwards_or_replies_and_counts_what_it_did() {
        let mut host = MockHost::default();
        let (served, counted) = serve_one(&mut host, "GET", "/api/v1/namespaces/a/pods");
        assert!(served.reply.is_none() && served.series.is_some());
        assert!(counted.is_empty());
        assert_eq!(
            host.headers.get_str("authorization"),
            Some("Bearer pod-token")
        );
        assert!(
            host.records.is_empty(),
            "forwarded requests are recorded on request only"
        );

        let (served, counted) = serve_one(&mut host, "POST", "/api/v1/namespaces/a/pods/p/exec");
        assert!(served.series.is_some());
        assert!(!host.edited, "a refused request is not edited");
        assert!(host.records[0].starts_with(r#"{"decision":"policy_denied""#));
        assert_eq!(served.reply.unwrap().code, 403);
        assert_eq!(
            counted,
            [
                "rule=.=kubectl-proxy/no-exec-or-attach;.;podward_policy_denied_total",
                "reason=.=policy_denied;.;podward_local_replies_total",
            ]
        );
    }

    #[test]
    fn every_request_is_recorded_when_configured() {
        let mut host = MockHost::default();
        serve_with(&mut host, r#"{"access_record": "all"}"#, "GET", "/api");
        assert_eq!(host.records.len(), 1);
        assert!(host.records[0].starts_with(r#"{"decision":"forward""#));
    }

    #[test]
    fn a_dry_run_denial_is_forwarded_recorded_and_counted() {
        let config = r#"{"policy": {"preset": "kubectl-proxy", "rules": [
            {"name": "no-secrets", "action": "deny", "dryRun": true, "verbs": ["*"],
             "apiGroups": [""], "resources": ["secrets"]}]}}"#;
        let mut host = MockHost::default();
        let (served, counted) =
            serve_with(&mut host, config, "GET", "/api/v1/namespaces/a/secrets");
        assert!(served.reply.is_none(), "a dry-run deny forwards");
        assert_eq!(
            host.headers.get_str("authorization"),
            Some("Bearer pod-token")
        );
        assert_eq!(
            host.records,
            [
                r#"{"decision":"forward","rule":"kubectl-proxy/default","verb":"list","group":"","resource":"secrets","subresource":"","namespace":"a","name":"","dry_run":"deny","dry_run_rule":"rules/no-secrets"}"#
            ],
            "recorded although access_record is \"refusals\""
        );
        assert_eq!(
            counted,
            ["rule=.=rules/no-secrets;.;podward_policy_dry_run_denied_total"]
        );

        // Denied anyway: the enforced rule decides, and no dry-run is recorded or counted.
        host.records.clear();
        let (served, counted) = serve_with(
            &mut host,
            config,
            "POST",
            "/api/v1/namespaces/a/pods/p/exec",
        );
        assert_eq!(served.reply.unwrap().code, 403);
        assert!(!host.records[0].contains("dry_run"), "{:?}", host.records);
        assert!(
            !counted.iter().any(|c| c.contains("dry_run")),
            "{counted:?}"
        );

        // Not matched: nothing recorded.
        host.records.clear();
        let (_, counted) = serve_with(&mut host, config, "GET", "/api/v1/namespaces/a/pods");
        assert!(host.records.is_empty() && counted.is_empty());
    }

    #[test]
    fn a_whole_policy_in_dry_run_is_recorded_while_the_default_preset_is_enforced() {
        let config = r#"{"policy": {"dryRun": true, "default_action": "deny", "rules": [
            {"name": "read-pods", "action": "allow", "verbs": ["get", "list"],
             "apiGroups": [""], "resources": ["pods"], "namespaces": ["$self"]},
            {"name": "exec", "action": "allow", "verbs": ["create"],
             "apiGroups": [""], "resources": ["pods/exec"]}]}}"#;
        let mut host = MockHost::default();
        let (served, _) = serve_with(&mut host, config, "GET", "/api/v1/namespaces/team-a/pods");
        assert!(served.reply.is_none() && host.records.is_empty());
        let (served, counted) = serve_with(
            &mut host,
            config,
            "DELETE",
            "/api/v1/namespaces/team-a/pods/p",
        );
        assert!(served.reply.is_none());
        assert!(
            host.records[0].ends_with(r#""dry_run":"deny","dry_run_rule":"rules/default"}"#),
            "{:?}",
            host.records
        );
        assert_eq!(
            counted,
            ["rule=.=rules/default;.;podward_policy_dry_run_denied_total"]
        );
        // What the candidate allows beyond the default preset stays denied: a
        // dry-run never loosens it.
        let (served, _) = serve_with(
            &mut host,
            config,
            "POST",
            "/api/v1/namespaces/team-a/pods/p/exec",
        );
        let status = served.reply.unwrap();
        assert_eq!(status.code, 403);
        assert!(status.message.contains("kubectl-proxy/no-exec-or-attach"));
    }

    #[test]
    fn a_host_that_will_not_take_the_headers_gets_a_503_not_a_bare_request() {
        let mut host = MockHost {
            refuse_edits: true,
            ..MockHost::default()
        };
        let (served, counted) = serve_one(&mut host, "GET", "/api");
        let status = served.reply.unwrap();
        assert_eq!(status.code, 503);
        assert!(status.message.contains("could not set the request headers"));
        assert_eq!(
            counted,
            ["reason=.=host_error;.;podward_local_replies_total"]
        );
    }

    #[test]
    fn readiness_probes_are_recognised_and_answered_with_a_status() {
        for (method, path, probe) in [
            ("GET", READINESS_PATH, true),
            ("HEAD", READINESS_PATH, true),
            ("POST", READINESS_PATH, false),
            ("GET", "/podward/ready/", false),
            ("GET", "/readyz", false),
        ] {
            assert_eq!(
                is_readiness_probe(&request(method, path, &[])),
                probe,
                "{method} {path}"
            );
        }
        let ready: serde_json::Value =
            serde_json::from_str(&readiness_reply(Ok(())).to_json()).unwrap();
        assert_eq!(
            (ready["status"].as_str(), ready["code"].as_u64()),
            (Some("Success"), Some(200))
        );
        assert_eq!(ready.get("reason"), None);
        let waiting = readiness_reply(Err("podward has no service-account token to send".into()));
        assert_eq!((waiting.code, waiting.reason), (503, "ServiceUnavailable"));
    }
}
