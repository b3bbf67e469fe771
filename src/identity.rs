//! The credentials and identity headers every forwarded request carries, built
//! once whenever a source changes so that a request only copies them.

use crate::config::{Config, FileFormat, HeaderSource};
use crate::downward::parse_map;
use crate::headers::{encode_map, encode_value};
use crate::prelude::*;
use crate::status::Quoted;
use crate::token::Token;

/// Everything a request needs from the pod's sources, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub token: Token,
    /// (lower-case name, encoded value), in configuration order: those
    /// podward adds itself.
    pub headers: Vec<(String, String)>,
    /// Appended to `User-Agent` so audit logs name the pod.
    pub user_agent_suffix: Option<String>,
    /// What `$self` means in the policy: the token's namespace, else the env var.
    pub namespace: String,
}

/// A source that could not be turned into a header; the header is left out
/// and the operator is told why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Omission {
    pub header: String,
    pub reason: String,
}

/// Inputs to [`build`]: the environment is fixed at VM start, files are the
/// last good content fetched.
pub trait Sources {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &str) -> Option<&[u8]>;
}

pub fn build(config: &Config, token: Token, sources: &impl Sources) -> (Identity, Vec<Omission>) {
    let mut headers = Vec::with_capacity(config.identity_headers.len());
    let mut omissions = Vec::new();
    for spec in &config.identity_headers {
        match header_value(&spec.source, sources) {
            Ok(value) if added_by_route(config, &spec.source, &value, sources) => {}
            Ok(value) => headers.push((spec.header.clone(), value)),
            Err(reason) => omissions.push(Omission {
                header: spec.header.clone(),
                reason,
            }),
        }
    }
    let namespace = token
        .namespace()
        .map(str::to_owned)
        .or_else(|| sources.env(&config.namespace_env))
        .unwrap_or_default();
    let user_agent_suffix = config
        .user_agent
        .then(|| user_agent_suffix(&token, &namespace, sources));
    let identity = Identity {
        token,
        headers,
        user_agent_suffix,
        namespace,
    };
    (identity, omissions)
}

/// Whether Envoy's route sends this header with the very bytes podward would:
/// an `env` header whose value needs no encoding. podward adds the others
/// itself, and the route (`ADD_IF_ABSENT`) leaves them alone.
fn added_by_route(
    config: &Config,
    source: &HeaderSource,
    value: &str,
    sources: &impl Sources,
) -> bool {
    let HeaderSource::Env(variable) = source else {
        return false;
    };
    config.route_adds_env_headers && sources.env(variable).as_deref() == Some(value)
}

fn header_value(source: &HeaderSource, sources: &impl Sources) -> Result<String, String> {
    let (path, format) = match source {
        HeaderSource::Env(env) => {
            return sources
                .env(env)
                .map(|value| encode_value(value.as_bytes()).into_owned())
                .ok_or_else(|| format!("environment variable {env} is not set"));
        }
        HeaderSource::File { path, format } => (path, format),
    };
    let content = sources
        .file(path)
        .ok_or_else(|| format!("file {path} could not be read"))?;
    if *format == FileFormat::Text {
        return Ok(encode_value(content.trim_ascii()).into_owned());
    }
    let map = parse_map(content).map_err(|e| format!("file {path}: {e}"))?;
    match format {
        FileFormat::MapKey(key) => map
            .get(key)
            .map(|value| encode_value(value).into_owned())
            .ok_or_else(|| format!("file {path} has no key {}", Quoted(key))),
        _ => Ok(encode_map(&map)),
    }
}

const POD_NAME_ENV: &str = "POD_NAME";

fn user_agent_suffix(token: &Token, namespace: &str, sources: &impl Sources) -> String {
    let pod = token
        .claims
        .pod_name
        .clone()
        .or_else(|| sources.env(POD_NAME_ENV))
        .unwrap_or_else(|| "unknown".into());
    let pod = format!("{namespace}/{pod}");
    format!(
        "podward/{} (pod {})",
        env!("CARGO_PKG_VERSION"),
        encode_value(pod.as_bytes())
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    #[derive(Default)]
    pub struct FakeSources {
        pub env: BTreeMap<String, String>,
        pub files: BTreeMap<String, Vec<u8>>,
    }

    impl Sources for FakeSources {
        fn env(&self, name: &str) -> Option<String> {
            self.env.get(name).cloned()
        }
        fn file(&self, path: &str) -> Option<&[u8]> {
            self.files.get(path).map(Vec::as_slice)
        }
    }

    pub fn standard_pod() -> FakeSources {
        let env = [
            ("POD_NAME", "web-0"),
            ("POD_NAMESPACE", "team-a"),
            ("POD_UID", "3b0c6a9e-1f0e-4c4e-9d8b-0f1e2d3c4b5a"),
            ("POD_IP", "10.244.0.7"),
            ("HOST_IP", "192.168.1.10"),
            ("NODE_NAME", "node-1"),
            ("SERVICE_ACCOUNT", "reader"),
            ("CPU_REQUEST", "250"),
            ("CPU_LIMIT", "1"),
            ("MEMORY_REQUEST", "67108864"),
            ("MEMORY_LIMIT", "134217728"),
        ];
        let files = [
            ("/podinfo/labels", "app=\"web\"\ntier=\"front end\""),
            ("/podinfo/annotations", "note=\"line1\\nline2\""),
        ];
        FakeSources {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            files: files
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn header<'a>(identity: &'a Identity, name: &str) -> Option<&'a str> {
        identity
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn default_headers_from_a_standard_pod() {
        let config = Config::parse(b"").unwrap();
        let token = Token::parse(b"opaque").unwrap();
        let (identity, omissions) = build(&config, token, &standard_pod());
        assert_eq!(omissions, []);
        let expected = [
            ("x-pod-name", "web-0"),
            ("x-pod-namespace", "team-a"),
            ("x-pod-uid", "3b0c6a9e-1f0e-4c4e-9d8b-0f1e2d3c4b5a"),
            ("x-pod-ip", "10.244.0.7"),
            ("x-pod-host-ip", "192.168.1.10"),
            ("x-pod-node-name", "node-1"),
            ("x-pod-service-account", "reader"),
            ("x-pod-cpu-request", "250"),
            ("x-pod-cpu-limit", "1"),
            ("x-pod-memory-request", "67108864"),
            ("x-pod-memory-limit", "134217728"),
            ("x-pod-labels", "app=web,tier=front%20end"),
            ("x-pod-annotations", "note=line1%0Aline2"),
        ];
        let actual: Vec<(&str, &str)> = identity
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(actual, expected);
        assert_eq!(identity.namespace, "team-a");
        assert_eq!(
            identity.user_agent_suffix.as_deref(),
            Some(concat!(
                "podward/",
                env!("CARGO_PKG_VERSION"),
                " (pod team-a/web-0)"
            ))
        );
    }

    #[test]
    fn selected_keys_text_files_and_omissions() {
        let config = Config::parse(
            br#"{"user_agent": false, "identity_headers": [
                {"header": "x-app", "file": "/podinfo/labels", "key": "app"},
                {"header": "x-missing-key", "file": "/podinfo/labels", "key": "nope"},
                {"header": "x-cpu", "file": "/podinfo/cpu", "format": "text"},
                {"header": "x-unread", "file": "/podinfo/unread"},
                {"header": "x-broken", "file": "/podinfo/broken"},
                {"header": "x-unset", "env": "UNSET"}]}"#,
        )
        .unwrap();
        let mut sources = standard_pod();
        sources.files.insert("/podinfo/cpu".into(), b"2\n".to_vec());
        sources
            .files
            .insert("/podinfo/broken".into(), b"a=unquoted".to_vec());
        let (identity, omissions) = build(&config, Token::parse(b"t").unwrap(), &sources);
        assert_eq!(header(&identity, "x-app"), Some("web"));
        assert_eq!(header(&identity, "x-cpu"), Some("2"));
        assert_eq!(identity.headers.len(), 2);
        assert_eq!(identity.user_agent_suffix, None);
        let reasons: Vec<(&str, &str)> = omissions
            .iter()
            .map(|o| (o.header.as_str(), o.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("x-missing-key", "file /podinfo/labels has no key \"nope\""),
                ("x-unread", "file /podinfo/unread could not be read"),
                (
                    "x-broken",
                    "file /podinfo/broken: line 1: value is not enclosed in double quotes"
                ),
                ("x-unset", "environment variable UNSET is not set"),
            ]
        );
    }

    #[test]
    fn the_route_adds_the_env_headers_it_sends_as_podward_would() {
        let mut sources = standard_pod();
        sources.env.insert("TEAM".into(), "front end".into());
        sources.env.insert("EMPTY".into(), String::new());
        let env: Vec<(String, String)> = sources.env.clone().into_iter().collect();
        let config = Config::parse_in(
            br#"{"route_adds_env_headers": true, "user_agent": false, "identity_headers": [
                {"header": "x-pod-name", "env": "POD_NAME"},
                {"header": "x-team", "env": "TEAM"},
                {"header": "x-empty", "env": "EMPTY"},
                {"header": "x-pod-labels", "file": "/podinfo/labels"}]}"#,
            &env,
        )
        .unwrap();
        let (identity, omissions) = build(&config, Token::parse(b"t").unwrap(), &sources);
        assert_eq!(omissions, []);
        // Envoy would send the space raw, and an empty value not at all.
        let sent: Vec<(&str, &str)> = identity
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            sent,
            [
                ("x-team", "front%20end"),
                ("x-pod-labels", "app=web,tier=front%20end")
            ]
        );
    }

    #[test]
    fn self_namespace_prefers_the_token_claims() {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"kubernetes.io":{"namespace":"from-token","pod":{"name":"p-1"}}}"#);
        let token = Token::parse(format!("h.{payload}.s").as_bytes()).unwrap();
        let config = Config::parse(b"").unwrap();
        let (identity, _) = build(&config, token, &standard_pod());
        assert_eq!(identity.namespace, "from-token");
        assert!(identity
            .user_agent_suffix
            .unwrap()
            .ends_with("(pod from-token/p-1)"));
        let (identity, _) = build(
            &config,
            Token::parse(b"t").unwrap(),
            &FakeSources::default(),
        );
        assert_eq!(identity.namespace, "");
    }
}
