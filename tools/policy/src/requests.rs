//! Requests as a person states them (`create pods/exec "web" in team-a`, as
//! `kubectl auth can-i` takes them) and as HTTP (`POST /api/v1/...`): the one
//! is turned into the other, and the sidecar's own classification checks that
//! the API server reads the HTTP request back as stated.

use podward::request_info::{classify, RequestInfo, RESOURCE_VERBS};

/// A request by its meaning, as RBAC rules and podward's policy name it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stated {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// A non-resource request's path (`/healthz`); the other fields empty but the verb.
    pub url: String,
}

impl Stated {
    pub fn of(info: &RequestInfo) -> Stated {
        if !info.is_resource_request {
            return Stated {
                verb: info.verb.to_string(),
                url: info.path.to_string(),
                ..Stated::default()
            };
        }
        Stated {
            verb: info.verb.to_string(),
            group: info.api_group.to_string(),
            resource: info.resource.to_string(),
            subresource: info.subresource.to_string(),
            namespace: info.namespace.to_string(),
            name: info.name.to_string(),
            url: String::new(),
        }
    }

    /// `pods/exec`, `deployments.apps`, `deployments.apps/scale` read as
    /// `deployments/scale` in group `apps`: the core group has no suffix.
    pub fn resource_name(&self) -> String {
        let mut name = self.resource.clone();
        if !self.subresource.is_empty() {
            name.push('/');
            name.push_str(&self.subresource);
        }
        if !self.group.is_empty() {
            name = format!("{}.{}", self.resource, self.group);
            if !self.subresource.is_empty() {
                name.push('/');
                name.push_str(&self.subresource);
            }
        }
        name
    }

    /// `create pods/exec "web" in namespace team-a`, `get /healthz`.
    pub fn describe(&self) -> String {
        if !self.url.is_empty() || self.resource.is_empty() {
            return format!("{} {}", self.verb, self.url);
        }
        let mut text = format!("{} {}", self.verb, self.resource_name());
        if !self.name.is_empty() {
            text.push_str(&format!(" {:?}", self.name));
        }
        if self.namespace.is_empty() {
            if !is_cluster_scoped(&self.group, &self.resource) {
                let across = matches!(self.verb.as_str(), "list" | "watch" | "deletecollection");
                text.push_str(if across {
                    " across all namespaces"
                } else {
                    " (no namespace)"
                });
            }
        } else if !(self.resource == "namespaces" && self.group.is_empty()) {
            // A namespace's own requests are named by it already.
            text.push_str(&format!(" in namespace {}", self.namespace));
        }
        text
    }

    /// The HTTP request the API server reads as this one: (method, path and
    /// query), checked by classifying it back.
    pub fn to_http(&self) -> Result<(String, String), String> {
        let (method, target) = self.build_http()?;
        let info = classify(&method, &target)
            .map_err(|why| format!("{method} {target} cannot be classified: {why}"))?;
        let read = Stated::of(&info);
        if read != *self {
            return Err(format!(
                "no HTTP request is read as {}: {method} {target} is read as {}",
                self.describe(),
                read.describe()
            ));
        }
        Ok((method, target))
    }

    fn build_http(&self) -> Result<(String, String), String> {
        if !self.url.is_empty() {
            if !podward::policy::NON_RESOURCE_VERBS.contains(&self.verb.as_str()) {
                return Err(format!(
                    "unknown verb {:?} for a non-resource URL; expected one of {}",
                    self.verb,
                    podward::policy::NON_RESOURCE_VERBS.join(", ")
                ));
            }
            return Ok((self.verb.to_uppercase(), self.url.clone()));
        }
        if !RESOURCE_VERBS.contains(&self.verb.as_str()) {
            return Err(format!(
                "unknown verb {:?}; expected one of {}",
                self.verb,
                RESOURCE_VERBS.join(", ")
            ));
        }
        if self.resource.is_empty() {
            return Err("a resource is needed (--resource), or a non-resource URL".into());
        }
        let prefix = if self.group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{}/v1", self.group)
        };
        let names_itself = self.resource == "namespaces" && self.group.is_empty();
        let mut path = prefix;
        if self.verb == "proxy" {
            path.push_str("/proxy");
        }
        if !self.namespace.is_empty() && !names_itself {
            path.push_str(&format!("/namespaces/{}", self.namespace));
        }
        path.push('/');
        path.push_str(&self.resource);
        let pins_a_name = matches!(self.verb.as_str(), "list" | "watch");
        // A namespace is itself named by its namespace (`/api/v1/namespaces/team-a`).
        let name = match (names_itself, self.name.is_empty()) {
            (true, true) if !pins_a_name => self.namespace.as_str(),
            _ => self.name.as_str(),
        };
        if !name.is_empty() && !pins_a_name {
            path.push('/');
            path.push_str(name);
        }
        if !self.subresource.is_empty() {
            path.push('/');
            path.push_str(&self.subresource);
        }
        let mut query = Vec::new();
        if self.verb == "watch" {
            query.push("watch=1".to_string());
        }
        if pins_a_name && !self.name.is_empty() {
            query.push(format!(
                "fieldSelector=metadata.name%3D{}",
                percent_encode(&self.name)
            ));
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        let method = match self.verb.as_str() {
            "get" | "list" | "watch" | "proxy" => "GET",
            "create" => "POST",
            "update" => "PUT",
            "patch" => "PATCH",
            _ => "DELETE",
        };
        Ok((method.to_string(), path))
    }
}

/// Every byte but RFC 3986's unreserved ones as `%XX`, for a query value.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// The built-in resources that live outside any namespace (kube-apiserver
/// 1.36), by (group, resource). Everything else is taken as namespaced, or
/// unknown (a custom resource may be either).
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "namespaces"),
    ("", "nodes"),
    ("", "persistentvolumes"),
    ("", "componentstatuses"),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
    ),
    ("admissionregistration.k8s.io", "mutatingadmissionpolicies"),
    (
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicybindings",
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("apiregistration.k8s.io", "apiservices"),
    ("authentication.k8s.io", "tokenreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("certificates.k8s.io", "certificatesigningrequests"),
    ("certificates.k8s.io", "clustertrustbundles"),
    ("flowcontrol.apiserver.k8s.io", "flowschemas"),
    (
        "flowcontrol.apiserver.k8s.io",
        "prioritylevelconfigurations",
    ),
    ("networking.k8s.io", "ingressclasses"),
    ("networking.k8s.io", "ipaddresses"),
    ("networking.k8s.io", "servicecidrs"),
    ("node.k8s.io", "runtimeclasses"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("resource.k8s.io", "deviceclasses"),
    ("resource.k8s.io", "resourceslices"),
    ("scheduling.k8s.io", "priorityclasses"),
    ("storage.k8s.io", "csidrivers"),
    ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "storageclasses"),
    ("storage.k8s.io", "volumeattachments"),
    ("storage.k8s.io", "volumeattributesclasses"),
    ("storagemigration.k8s.io", "storageversionmigrations"),
];

pub fn is_cluster_scoped(group: &str, resource: &str) -> bool {
    CLUSTER_SCOPED.contains(&(group, resource))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stated(verb: &str, resource: &str, namespace: &str, name: &str) -> Stated {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
        Stated {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            url: String::new(),
        }
    }

    #[test]
    fn stated_requests_become_the_http_the_api_server_reads_as_them() {
        let cases = [
            (stated("get", "pods", "team-a", "web"), "GET /api/v1/namespaces/team-a/pods/web"),
            (stated("list", "pods", "team-a", ""), "GET /api/v1/namespaces/team-a/pods"),
            (stated("list", "pods", "", ""), "GET /api/v1/pods"),
            (
                stated("watch", "configmaps", "team-a", "settings"),
                "GET /api/v1/namespaces/team-a/configmaps?watch=1&fieldSelector=metadata.name%3Dsettings",
            ),
            (
                stated("create", "pods/exec", "team-a", "web"),
                "POST /api/v1/namespaces/team-a/pods/web/exec",
            ),
            (
                stated("patch", "deployments.apps/scale", "team-a", "web"),
                "PATCH /apis/apps/v1/namespaces/team-a/deployments/web/scale",
            ),
            (
                stated("deletecollection", "leases.coordination.k8s.io", "x", ""),
                "DELETE /apis/coordination.k8s.io/v1/namespaces/x/leases",
            ),
            (stated("get", "nodes", "", "n1"), "GET /api/v1/nodes/n1"),
            (stated("proxy", "nodes", "", "n1"), "GET /api/v1/proxy/nodes/n1"),
            (stated("get", "namespaces", "team-a", "team-a"), "GET /api/v1/namespaces/team-a"),
            (stated("update", "namespaces/finalize", "team-a", "team-a"), "PUT /api/v1/namespaces/team-a/finalize"),
            (stated("list", "namespaces", "", ""), "GET /api/v1/namespaces"),
            (
                stated("create", "selfsubjectreviews.authentication.k8s.io", "", ""),
                "POST /apis/authentication.k8s.io/v1/selfsubjectreviews",
            ),
        ];
        for (stated, http) in cases {
            let (method, target) = stated
                .to_http()
                .unwrap_or_else(|e| panic!("{stated:?}: {e}"));
            assert_eq!(format!("{method} {target}"), http);
        }
        let url = Stated {
            verb: "head".into(),
            url: "/healthz".into(),
            ..Stated::default()
        };
        assert_eq!(url.to_http().unwrap(), ("HEAD".into(), "/healthz".into()));
    }

    #[test]
    fn a_request_no_http_reads_as_is_refused() {
        for (stated, error) in [
            (stated("get", "pods", "team-a", ""), "is read as list pods"),
            (
                stated("delete", "pods", "team-a", ""),
                "is read as deletecollection",
            ),
            (
                stated("fetch", "pods", "team-a", "x"),
                "unknown verb \"fetch\"",
            ),
            (
                stated("get", "pods", "team-a", "a/b"),
                "is read as get pods/b \"a\"",
            ),
        ] {
            let message = stated.to_http().unwrap_err();
            assert!(message.contains(error), "{stated:?}: {message}");
        }
    }

    #[test]
    fn descriptions_read_like_the_request() {
        assert_eq!(
            stated("create", "pods/exec", "team-a", "web").describe(),
            "create pods/exec \"web\" in namespace team-a"
        );
        assert_eq!(
            stated("list", "pods", "", "").describe(),
            "list pods across all namespaces"
        );
        assert_eq!(
            stated("get", "nodes", "", "n1").describe(),
            "get nodes \"n1\""
        );
        assert_eq!(
            stated("get", "pods", "", "p").describe(),
            "get pods \"p\" (no namespace)"
        );
        assert_eq!(
            stated("get", "deployments.apps/scale", "x", "web").describe(),
            "get deployments.apps/scale \"web\" in namespace x"
        );
        assert_eq!(
            stated("list", "deployments.apps", "x", "").describe(),
            "list deployments.apps in namespace x"
        );
    }
}
