//! What a pod did, read from a log: the API server's audit log (JSON lines,
//! `audit.k8s.io/v1` events) or podward's own access log (the JSON lines Envoy
//! writes, as `kubectl logs -c podward` prints them among Envoy's own lines).
//! Both kinds may be mixed; a line that is neither is skipped and counted.

use crate::requests::Stated;
use podward::filter::READINESS_PATH;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Audit,
    Access,
}

/// One request the log shows.
#[derive(Debug, Clone)]
pub struct Observed {
    pub source: Source,
    /// Its line in the log (1-based).
    pub line: usize,
    /// The HTTP method: the access log's own, or the one the audit event's verb implies.
    pub method: String,
    /// Path and query, as the API server (audit `requestURI`) or podward (the access log's `path`) saw them.
    pub target: String,
    /// `namespace/name` of the pod it came from, where the log says.
    pub pod: Option<String>,
    /// `namespace:name` of the service account it authenticated as (audit log only).
    pub service_account: Option<String>,
    /// How the API server (audit) or podward (its access record) read it.
    pub reading: Option<Stated>,
    /// Whether podward forwarded it: every audited request reached the API
    /// server; an access log line says whether podward refused it.
    pub forwarded: bool,
    /// The status code the app got.
    pub code: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Log {
    pub observed: Vec<Observed>,
    /// Lines that are no request: Envoy's own log lines, other JSON, podward's readiness probes.
    pub skipped: usize,
}

pub fn read(text: &str) -> Log {
    let mut log = Log::default();
    // An audited request is written once per stage: keep ResponseComplete, or the first stage seen.
    let mut audit_ids: BTreeMap<String, usize> = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line.trim()) else {
            log.skipped += 1;
            continue;
        };
        let fields = Value::Object(fields);
        if let Some(id) = fields.get("auditID").and_then(Value::as_str) {
            let Some(observed) = audit_event(&fields, line_number) else {
                log.skipped += 1;
                continue;
            };
            let complete = fields.get("stage").and_then(Value::as_str) == Some("ResponseComplete");
            match audit_ids.get(id) {
                Some(&at) if complete => log.observed[at] = observed,
                Some(_) => {}
                None => {
                    audit_ids.insert(id.to_string(), log.observed.len());
                    log.observed.push(observed);
                }
            }
        } else if let Some(observed) = access_line(&fields, line_number) {
            log.observed.push(observed);
        } else {
            log.skipped += 1;
        }
    }
    log
}

fn text<'v>(value: &'v Value, pointer: &str) -> &'v str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn code(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

/// The HTTP method an API server verb implies: resource verbs by the method
/// that makes them; non-resource verbs are the method itself.
pub fn method_of(verb: &str, is_resource: bool) -> String {
    if !is_resource {
        return verb.to_uppercase();
    }
    match verb {
        "create" => "POST",
        "update" => "PUT",
        "patch" => "PATCH",
        "delete" | "deletecollection" => "DELETE",
        // get, list, watch; proxy is named by the path.
        _ => "GET",
    }
    .to_string()
}

fn audit_event(event: &Value, line: usize) -> Option<Observed> {
    if event.get("kind").and_then(Value::as_str) != Some("Event") {
        return None;
    }
    let verb = event.get("verb")?.as_str()?;
    let target = event.get("requestURI")?.as_str()?.to_string();
    let resource = text(event, "/objectRef/resource");
    let is_resource = !resource.is_empty();
    let reading = if is_resource {
        Stated {
            verb: verb.to_string(),
            group: text(event, "/objectRef/apiGroup").to_string(),
            resource: resource.to_string(),
            subresource: text(event, "/objectRef/subresource").to_string(),
            namespace: text(event, "/objectRef/namespace").to_string(),
            name: text(event, "/objectRef/name").to_string(),
            url: String::new(),
        }
    } else {
        Stated {
            verb: verb.to_string(),
            url: target.split('?').next().unwrap_or_default().to_string(),
            ..Stated::default()
        }
    };
    let username = text(event, "/user/username");
    let service_account = username
        .strip_prefix("system:serviceaccount:")
        .filter(|rest| rest.contains(':'))
        .map(str::to_string);
    let pod_name = event
        .pointer("/user/extra/authentication.kubernetes.io~1pod-name/0")
        .and_then(Value::as_str);
    let pod = match (&service_account, pod_name) {
        (Some(account), Some(pod)) => account.split(':').next().map(|ns| format!("{ns}/{pod}")),
        _ => None,
    };
    Some(Observed {
        source: Source::Audit,
        line,
        method: method_of(verb, is_resource),
        target,
        pod,
        service_account,
        reading: Some(reading),
        forwarded: true,
        code: code(event.pointer("/responseStatus/code")),
    })
}

fn access_line(line_fields: &Value, line: usize) -> Option<Observed> {
    let method = line_fields.get("method")?.as_str()?;
    let target = line_fields.get("path")?.as_str()?;
    line_fields.get("code")?;
    let path = target.split('?').next().unwrap_or_default();
    if path == READINESS_PATH || method == "-" || target == "-" {
        return None;
    }
    // podward's record, where it wrote one: JSON text in the `podward` field.
    let record: Option<Value> = line_fields
        .get("podward")
        .and_then(Value::as_str)
        .and_then(|record| serde_json::from_str(record).ok());
    let details = line_fields
        .get("details")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let forwarded = match &record {
        Some(record) => text(record, "/decision") == "forward",
        // No record: podward forwarded it (it records every refusal), unless
        // Envoy answered it itself before or instead of the API server.
        None => details == "via_upstream" || details.starts_with("upstream_reset"),
    };
    let reading = record
        .as_ref()
        .filter(|r| r.get("verb").is_some())
        .map(|record| {
            let resource = text(record, "/resource");
            if resource.is_empty() {
                Stated {
                    verb: text(record, "/verb").to_string(),
                    url: path.to_string(),
                    ..Stated::default()
                }
            } else {
                Stated {
                    verb: text(record, "/verb").to_string(),
                    group: text(record, "/group").to_string(),
                    resource: resource.to_string(),
                    subresource: text(record, "/subresource").to_string(),
                    namespace: text(record, "/namespace").to_string(),
                    name: text(record, "/name").to_string(),
                    url: String::new(),
                }
            }
        });
    let pod = line_fields
        .get("pod")
        .and_then(Value::as_str)
        .filter(|pod| pod.contains('/') && !pod.starts_with('/') && !pod.ends_with('/'))
        .map(str::to_string);
    Some(Observed {
        source: Source::Access,
        line,
        method: method.to_string(),
        target: target.to_string(),
        pod,
        service_account: None,
        reading,
        forwarded,
        code: code(line_fields.get("code")),
    })
}

/// Whose requests to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// `namespace/name`; a name ending in `*` matches every pod it starts (a workload's).
    Pod(String),
    /// `namespace:name`.
    ServiceAccount(String),
}

impl Who {
    pub fn parse_pod(value: &str) -> Result<Who, String> {
        match value.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok(Who::Pod(value.into())),
            _ => Err(format!(
                "--pod {value:?}: expected namespace/name (name may end in *)"
            )),
        }
    }

    pub fn parse_service_account(value: &str) -> Result<Who, String> {
        match value.split_once(':') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains(':') => {
                Ok(Who::ServiceAccount(value.into()))
            }
            _ => Err(format!(
                "--service-account {value:?}: expected namespace:name"
            )),
        }
    }

    fn matches(&self, observed: &Observed) -> bool {
        match self {
            Who::Pod(wanted) => {
                observed
                    .pod
                    .as_deref()
                    .is_some_and(|pod| match wanted.strip_suffix('*') {
                        Some(prefix) => pod.starts_with(prefix),
                        None => pod == wanted,
                    })
            }
            Who::ServiceAccount(wanted) => observed.service_account.as_deref() == Some(wanted),
        }
    }

    /// The namespace `$self` means for these requests.
    pub fn namespace(&self) -> &str {
        match self {
            Who::Pod(pod) => pod.split('/').next().unwrap_or_default(),
            Who::ServiceAccount(account) => account.split(':').next().unwrap_or_default(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Who::Pod(pod) => format!("pod {pod}"),
            Who::ServiceAccount(account) => format!("service account {account}"),
        }
    }
}

/// The requests of one pod or service account: the one asked for, or the
/// only one the log holds.
pub fn select(log: &Log, who: Option<Who>) -> Result<(Who, Vec<&Observed>), String> {
    if let Some(Who::ServiceAccount(_)) = &who {
        if log.observed.iter().any(|o| o.source == Source::Access) {
            return Err("an access log names the pod, not its service account: use --pod".into());
        }
    }
    let who = match who {
        Some(who) => who,
        None => {
            let mut seen: BTreeMap<String, (Who, usize)> = BTreeMap::new();
            for observed in &log.observed {
                let who = match (&observed.pod, &observed.service_account) {
                    (_, Some(account)) => Who::ServiceAccount(account.clone()),
                    (Some(pod), None) => Who::Pod(pod.clone()),
                    (None, None) => continue,
                };
                seen.entry(who.describe()).or_insert((who, 0)).1 += 1;
            }
            let anonymous = log
                .observed
                .iter()
                .any(|o| o.pod.is_none() && o.service_account.is_none());
            match seen.len() {
                1 if !anonymous => seen
                    .into_values()
                    .next()
                    .map(|(who, _)| who)
                    .unwrap_or(Who::Pod(String::new())),
                0 => return Err("the log names no pod or service account; nothing to take".into()),
                _ => {
                    let mut counts: Vec<(usize, String)> = seen
                        .into_iter()
                        .map(|(name, (_, count))| (count, name))
                        .collect();
                    counts.sort_by(|a, b| b.cmp(a));
                    let listed: Vec<String> = counts
                        .iter()
                        .take(10)
                        .map(|(count, name)| format!("  {name} ({count} requests)"))
                        .collect();
                    return Err(format!(
                        "the log holds the requests of more than one client; choose one with \
                         --pod namespace/name or --service-account namespace:name:\n{}",
                        listed.join("\n")
                    ));
                }
            }
        }
    };
    let chosen: Vec<&Observed> = log.observed.iter().filter(|o| who.matches(o)).collect();
    if chosen.is_empty() {
        return Err(format!("the log holds no request of {}", who.describe()));
    }
    Ok((who, chosen))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/team-a/pods?watch=1","verb":"watch","user":{"username":"system:serviceaccount:team-a:app","extra":{"authentication.kubernetes.io/pod-name":["web-0"]}},"objectRef":{"resource":"pods","namespace":"team-a","apiVersion":"v1"},"responseStatus":{"code":200}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a2","stage":"ResponseComplete","requestURI":"/apis/authentication.k8s.io/v1/selfsubjectreviews","verb":"create","user":{"username":"system:serviceaccount:team-a:app"},"objectRef":{"resource":"selfsubjectreviews","apiGroup":"authentication.k8s.io","apiVersion":"v1"},"responseStatus":{"code":201}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/team-a/pods?watch=1","verb":"watch","user":{"username":"system:serviceaccount:team-a:app","extra":{"authentication.kubernetes.io/pod-name":["web-0"]}},"objectRef":{"resource":"pods","namespace":"team-a","apiVersion":"v1"},"responseStatus":{"code":200}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a3","stage":"ResponseComplete","requestURI":"/version","verb":"get","user":{"username":"admin"},"responseStatus":{"code":200}}"#;

    #[test]
    fn audit_events_are_one_request_per_audit_id() {
        let log = read(AUDIT);
        assert_eq!(log.observed.len(), 3);
        let watch = &log.observed[0];
        assert_eq!((watch.line, watch.method.as_str()), (3, "GET"));
        assert_eq!(watch.pod.as_deref(), Some("team-a/web-0"));
        assert_eq!(watch.service_account.as_deref(), Some("team-a:app"));
        assert_eq!(watch.reading.as_ref().unwrap().verb, "watch");
        let review = &log.observed[1];
        assert_eq!(
            (review.method.as_str(), review.pod.as_deref()),
            ("POST", None)
        );
        assert_eq!(log.observed[2].reading.as_ref().unwrap().url, "/version");
        assert!(log.observed.iter().all(|o| o.forwarded));
    }

    #[test]
    fn a_client_is_chosen_or_must_be() {
        let log = read(AUDIT);
        let error = select(&log, None).unwrap_err();
        assert!(
            error.contains("service account team-a:app (2 requests)"),
            "{error}"
        );
        let (who, chosen) = select(
            &log,
            Some(Who::parse_service_account("team-a:app").unwrap()),
        )
        .unwrap();
        assert_eq!((who.namespace(), chosen.len()), ("team-a", 2));
        let (_, chosen) = select(&log, Some(Who::parse_pod("team-a/web-*").unwrap())).unwrap();
        assert_eq!(chosen.len(), 1);
        assert!(select(&log, Some(Who::parse_pod("team-b/x").unwrap())).is_err());
        assert!(Who::parse_pod("team-a").is_err() && Who::parse_service_account("a/b").is_err());
    }

    #[test]
    fn access_log_lines_among_envoys_own() {
        let text = r#"[2025-01-01 00:00:00.000][1][info][main] starting
{"time":"t","method":"GET","path":"/api/v1/namespaces/team-a/pods","code":200,"details":"via_upstream","pod":"team-a/web-0","podward":null}
{"time":"t","method":"POST","path":"/api/v1/namespaces/team-a/pods/web-0/exec","code":403,"details":"podward","pod":"team-a/web-0","podward":"{\"decision\":\"policy_denied\",\"rule\":\"kubectl-proxy/no-exec-or-attach\",\"verb\":\"create\",\"group\":\"\",\"resource\":\"pods\",\"subresource\":\"exec\",\"namespace\":\"team-a\",\"name\":\"web-0\"}"}
{"time":"t","method":"GET","path":"/podward/ready","code":200,"details":"podward","pod":"team-a/web-0","podward":null}
{"time":"t","method":"GET","path":"/version","code":503,"details":"overload","pod":"team-a/web-0","podward":null}
{"time":"t","method":"GET","path":"/version","code":200,"details":"via_upstream","pod":"team-a/web-0","podward":"{\"decision\":\"forward\",\"rule\":\"kubectl-proxy/default\",\"verb\":\"get\",\"group\":\"\",\"resource\":\"\",\"subresource\":\"\",\"namespace\":\"\",\"name\":\"\"}"}"#;
        let log = read(text);
        assert_eq!(log.skipped, 2, "Envoy's line and the probe");
        let forwarded: Vec<bool> = log.observed.iter().map(|o| o.forwarded).collect();
        assert_eq!(forwarded, [true, false, false, true]);
        assert_eq!(
            log.observed[1].reading.as_ref().unwrap().subresource,
            "exec"
        );
        assert_eq!(log.observed[3].reading.as_ref().unwrap().url, "/version");
        let (who, chosen) = select(&log, None).unwrap();
        assert_eq!((who, chosen.len()), (Who::Pod("team-a/web-0".into()), 4));
        assert!(select(&log, Some(Who::ServiceAccount("team-a:app".into()))).is_err());
    }
}
