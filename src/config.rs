//! The plugin configuration: JSON, unknown fields refused, every field with a
//! default that fits a standard pod. `Config::parse` is the only way in, and its
//! error names the field at fault.

use crate::fields::{field_error, parse_json, FieldError, Object};
use crate::headers::{header_name_problem, HeaderNames};
use crate::policy::{Policy, PolicyConfig, DEFAULT_PRESET, SIDECAR_CONFIGMAP_ENV};
use crate::prelude::*;
use crate::status::Quoted;
use serde_json::Value;

/// How long a request that arrived before the first token is held, unless
/// configured (envoy/render.py sizes Envoy's timeouts by it; constants.json).
pub const DEFAULT_STARTUP_WAIT_MS: u64 = 5000;

/// The validated configuration the filter runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub file_source: FileSource,
    pub refresh_interval_ms: u64,
    pub startup_wait_ms: u64,
    pub token: TokenSettings,
    pub identity_headers: Vec<IdentityHeader>,
    /// Envoy's route adds each `env` identity header itself
    /// ([`ROUTE_ADDS_ENV_HEADERS`]).
    pub route_adds_env_headers: bool,
    pub user_agent: bool,
    /// Which requests get podward's record in the access log.
    pub access_record: AccessRecord,
    pub accept_hosts: Vec<String>,
    pub allow_impersonation: bool,
    pub namespace_env: String,
    pub policy: PolicySource,
    /// What `$sidecar` means in the policy (see [`SIDECAR_CONFIGMAP_ENV`]).
    pub sidecar_configmaps: Vec<String>,
    /// Derived from the fields above: the names of the app's headers that
    /// never go upstream ([`dropped_headers`]).
    pub dropped_headers: HeaderNames,
}

/// Where the policy comes from.
#[derive(Debug, Clone)]
pub enum PolicySource {
    /// Written in the plugin configuration: fixed until Envoy reloads it.
    Inline(Policy),
    /// A file on the file source (a ConfigMap key mounted into the sidecar),
    /// re-read on every refresh; a bad update leaves the last good policy in force.
    File(String),
}

/// Where the filter fetches the token and the Downward API files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// The Envoy cluster that reaches the internal listener serving the files.
    pub cluster: String,
    pub authority: String,
    pub timeout_ms: u64,
    /// (path prefix, directory): where the files under a prefix are on
    /// disk. The internal listener's file server maps the same prefixes; a
    /// host that reads files itself (the native module) uses these.
    pub directories: Vec<(String, String)>,
}

impl FileSource {
    /// A file as the file listener answered a fetch of it: the body of a 200,
    /// else why there is none (`status`: the answer's `:status`, `None` when
    /// the fetch timed out or was reset).
    pub fn fetched(status: Option<&[u8]>, body: Vec<u8>) -> Result<Vec<u8>, String> {
        match status {
            Some(b"200") => Ok(body),
            Some(status) => Err(format!(
                "file source answered HTTP {}",
                String::from_utf8_lossy(status)
            )),
            None => Err("file source did not answer (timeout or reset)".into()),
        }
    }

    /// Where the file at `path` on the file source is on disk.
    pub fn local_path(&self, path: &str) -> Option<String> {
        self.directories.iter().find_map(|(prefix, directory)| {
            let rest = path.strip_prefix(prefix.as_str())?;
            rest.starts_with('/').then(|| format!("{directory}{rest}"))
        })
    }
}

/// The sidecar's volumes, as envoy/render.py mounts them (both read them
/// from constants.json; a test holds this copy to it).
pub const DEFAULT_DIRECTORIES: &[(&str, &str)] = &[
    (
        "/serviceaccount",
        "/var/run/secrets/kubernetes.io/serviceaccount",
    ),
    ("/podinfo", "/etc/podinfo"),
    ("/policy", "/etc/podward-policy"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// The token's path on the file source.
    pub path: String,
    pub client_authorization: ClientAuthorization,
    pub expiry_skew_seconds: u64,
}

/// Which requests podward describes for the access log (filter state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessRecord {
    /// Those podward answered itself: what never reached the API server's
    /// own audit log. The default: a record costs a host call per request.
    Refusals,
    /// Every request, forwarded ones included.
    All,
}

/// What to do with an `Authorization` header the app sent itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthorization {
    Replace,
    Preserve,
}

/// One header podward adds, and where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader {
    pub header: String,
    pub source: HeaderSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    /// An environment variable of the VM (`host_env_keys`), set by the Downward API.
    Env(String),
    /// A file on the file source, re-read on every refresh.
    File { path: String, format: FileFormat },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFormat {
    /// `key="value"` lines (labels, annotations), all sent as one header.
    Map,
    /// One key of a `key="value"` file.
    MapKey(String),
    /// The file's whole content, trimmed (e.g. a `resourceFieldRef` item).
    Text,
}

/// The field that says Envoy's route adds every `env` identity header as
/// `%ENVIRONMENT(VAR)%`, so that a request does not pay a host call for each
/// value that never changes in a pod's life (podward's bootstrap sets it for
/// the wasm build, whose host calls cost more than Envoy's own adds). Envoy
/// sends an unset variable as `-`, so every such variable must be set.
pub const ROUTE_ADDS_ENV_HEADERS: &str = "route_adds_env_headers";

/// (header, environment variable) pairs sent by default, named after the
/// Downward API fields the sidecar manifest maps them from (constants.json).
pub const DEFAULT_ENV_HEADERS: &[(&str, &str)] = &[
    ("x-pod-name", "POD_NAME"),
    ("x-pod-namespace", "POD_NAMESPACE"),
    ("x-pod-uid", "POD_UID"),
    ("x-pod-ip", "POD_IP"),
    ("x-pod-host-ip", "HOST_IP"),
    ("x-pod-node-name", "NODE_NAME"),
    ("x-pod-service-account", "SERVICE_ACCOUNT"),
    ("x-pod-cpu-request", "CPU_REQUEST"),
    ("x-pod-cpu-limit", "CPU_LIMIT"),
    ("x-pod-memory-request", "MEMORY_REQUEST"),
    ("x-pod-memory-limit", "MEMORY_LIMIT"),
];

const DEFAULT_FILE_HEADERS: &[(&str, &str)] = &[
    ("x-pod-labels", "/podinfo/labels"),
    ("x-pod-annotations", "/podinfo/annotations"),
];

const DEFAULT_ACCEPT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// The Downward API variables' headers, and the volume files' where
/// `file_source` maps their directory: a sidecar run without that volume
/// (`render.py run` with no `--podinfo-dir`) leaves those headers out.
fn default_identity_headers(file_source: &FileSource) -> Vec<IdentityHeader> {
    let env = DEFAULT_ENV_HEADERS
        .iter()
        .map(|(header, env)| IdentityHeader {
            header: header.to_string(),
            source: HeaderSource::Env(env.to_string()),
        });
    let files = DEFAULT_FILE_HEADERS
        .iter()
        .filter(|(_, path)| file_source.local_path(path).is_some())
        .map(|(header, path)| IdentityHeader {
            header: header.to_string(),
            source: HeaderSource::File {
                path: path.to_string(),
                format: FileFormat::Map,
            },
        });
    env.chain(files).collect()
}

/// Envoy's smallest useful tick is a few milliseconds; an hour is long past any
/// token's renewal point.
const INTERVAL_RANGE_MS: core::ops::RangeInclusive<u64> = 10..=3_600_000;

impl Config {
    /// An empty configuration means every default; `$sidecar` names the
    /// shipped manifests' ConfigMaps.
    pub fn parse(json: &[u8]) -> Result<Config, FieldError> {
        Config::parse_in(json, &[])
    }

    /// The configuration of a sidecar whose environment is `env` (the Downward
    /// API variables, and those of [`SIDECAR_CONFIGMAP_ENV`]).
    pub fn parse_in(json: &[u8], env: &[(String, String)]) -> Result<Config, FieldError> {
        let sidecar_configmaps = SIDECAR_CONFIGMAP_ENV
            .iter()
            .map(|(variable, default)| {
                let set = env.iter().find(|(name, _)| name == variable);
                match set {
                    Some((_, name)) if !name.is_empty() => name.clone(),
                    _ => default.to_string(),
                }
            })
            .collect();
        let config = if json.iter().all(u8::is_ascii_whitespace) {
            Config::read(&Value::Object(serde_json::Map::new()), sidecar_configmaps)?
        } else {
            Config::read(&parse_json(json)?, sidecar_configmaps)?
        };
        config.check_route_variables(env)?;
        Ok(config)
    }

    /// Where Envoy's route adds the `env` headers, a variable it cannot read
    /// would go upstream as `-` where podward leaves the header out.
    fn check_route_variables(&self, env: &[(String, String)]) -> Result<(), FieldError> {
        if !self.route_adds_env_headers {
            return Ok(());
        }
        for header in &self.identity_headers {
            let HeaderSource::Env(variable) = &header.source else {
                continue;
            };
            if !env.iter().any(|(name, _)| name == variable) {
                return Err(field_error(
                    ROUTE_ADDS_ENV_HEADERS,
                    format!(
                        "environment variable {variable} is not set, so Envoy's route would send \
                         `-` as {}; set it, or leave the field out to have podward add the header",
                        header.header
                    ),
                ));
            }
        }
        Ok(())
    }

    fn read(json: &Value, sidecar_configmaps: Vec<String>) -> Result<Config, FieldError> {
        let mut top = Object::new(json, "")?;
        let file_source = read_file_source(top.object("file_source")?)?;
        let refresh_interval_ms = interval(&mut top, "refresh_interval_ms", 1000)?;
        let startup_wait_ms = interval(&mut top, "startup_wait_ms", DEFAULT_STARTUP_WAIT_MS)?;
        let token = read_token(top.object("token")?)?;
        let identity_headers = match top.list("identity_headers")? {
            Some(items) => read_identity_headers(items)?,
            None => default_identity_headers(&file_source),
        };
        let route_adds_env_headers = top.boolean(ROUTE_ADDS_ENV_HEADERS)?.unwrap_or(false);
        let user_agent = top.boolean("user_agent")?.unwrap_or(true);
        let access_record = top
            .choice(
                "access_record",
                &[
                    ("refusals", AccessRecord::Refusals),
                    ("all", AccessRecord::All),
                ],
            )?
            .unwrap_or(AccessRecord::Refusals);
        let accept_hosts = top
            .strings("accept_hosts")?
            .unwrap_or_else(|| DEFAULT_ACCEPT_HOSTS.map(String::from).to_vec());
        check_accept_hosts(&accept_hosts)?;
        let allow_impersonation = top.boolean("allow_impersonation")?.unwrap_or(false);
        let namespace_env = top
            .string("namespace_env")?
            .unwrap_or_else(|| "POD_NAMESPACE".into());
        let policy = match (top.object("policy")?, top.string("policy_file")?) {
            (Some(_), Some(_)) => {
                return Err(field_error(
                    "policy_file",
                    "set either `policy` or `policy_file`, not both",
                ))
            }
            (None, Some(path)) => {
                check_file_path("policy_file", &path)?;
                PolicySource::File(path)
            }
            (Some(policy), None) => PolicySource::Inline(Policy::build_for(
                &PolicyConfig::read(policy)?,
                &sidecar_configmaps,
            )?),
            (None, None) => PolicySource::Inline(Policy::build_for(
                &PolicyConfig {
                    preset: Some(DEFAULT_PRESET.into()),
                    ..PolicyConfig::default()
                },
                &sidecar_configmaps,
            )?),
        };
        top.finish()?;
        let mut config = Config {
            file_source,
            refresh_interval_ms,
            startup_wait_ms,
            token,
            identity_headers,
            route_adds_env_headers,
            user_agent,
            access_record,
            accept_hosts,
            allow_impersonation,
            namespace_env,
            policy,
            sidecar_configmaps,
            dropped_headers: HeaderNames::default(),
        };
        config.dropped_headers = dropped_headers(&config);
        config.check_files_are_mapped(json)?;
        Ok(config)
    }

    /// Every file must be under a directory of `file_source.directories`.
    /// The error names the file's own field when the document sets it, else
    /// the directories.
    fn check_files_are_mapped(&self, json: &Value) -> Result<(), FieldError> {
        let mut files = vec![(
            "/token/path",
            "token.path".to_string(),
            self.token.path.as_str(),
        )];
        if let PolicySource::File(path) = &self.policy {
            files.push(("/policy_file", "policy_file".into(), path));
        }
        for (index, header) in self.identity_headers.iter().enumerate() {
            if let HeaderSource::File { path, .. } = &header.source {
                files.push(("", format!("identity_headers[{index}].file"), path));
            }
        }
        for (pointer, field, path) in files {
            if self.file_source.local_path(path).is_some() {
                continue;
            }
            let written = if pointer.is_empty() {
                json.get("identity_headers").is_some()
            } else {
                json.pointer(pointer).is_some()
            };
            let field = if written {
                field
            } else {
                "file_source.directories".into()
            };
            return Err(field_error(
                field,
                format!(
                    "{} is under no directory of file_source.directories; every file podward \
                     reads must be",
                    Quoted(path)
                ),
            ));
        }
        Ok(())
    }

    /// Every file the filter reads, with what it holds: the token first, then
    /// the policy file if there is one, then each distinct identity file in
    /// configuration order.
    pub fn files(&self) -> Vec<(FileRole, &str)> {
        let mut files = vec![(FileRole::Token, self.token.path.as_str())];
        if let PolicySource::File(path) = &self.policy {
            files.push((FileRole::Policy, path));
        }
        for header in &self.identity_headers {
            if let HeaderSource::File { path, .. } = &header.source {
                if !files.iter().any(|(_, known)| known == path) {
                    files.push((FileRole::Identity, path));
                }
            }
        }
        files
    }
}

/// What a file the filter reads holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// The service-account token: required.
    Token,
    /// The policy file: required when the policy comes from a file.
    Policy,
    /// A Downward API file read by identity headers: optional.
    Identity,
}

fn interval(object: &mut Object, key: &'static str, default: u64) -> Result<u64, FieldError> {
    let value = object.unsigned(key)?.unwrap_or(default);
    if INTERVAL_RANGE_MS.contains(&value) {
        Ok(value)
    } else {
        Err(field_error(
            object.path_of(key),
            format!(
                "{value} is out of range {}..={}",
                INTERVAL_RANGE_MS.start(),
                INTERVAL_RANGE_MS.end()
            ),
        ))
    }
}

fn read_file_source(object: Option<Object>) -> Result<FileSource, FieldError> {
    let mut source = FileSource {
        cluster: "podward_files".into(),
        authority: "podward-files".into(),
        timeout_ms: 1000,
        directories: DEFAULT_DIRECTORIES
            .iter()
            .map(|(prefix, directory)| (prefix.to_string(), directory.to_string()))
            .collect(),
    };
    let Some(mut object) = object else {
        return Ok(source);
    };
    if let Some(cluster) = object.string("cluster")? {
        source.cluster = cluster;
    }
    if let Some(authority) = object.string("authority")? {
        source.authority = authority;
    }
    source.timeout_ms = interval(&mut object, "timeout_ms", source.timeout_ms)?;
    if let Some(directories) = object.string_map("directories")? {
        for (prefix, directory) in &directories {
            let field = format!("{}.{prefix}", object.path_of("directories"));
            check_file_path(&field, prefix)?;
            check_file_path(&field, directory)?;
        }
        source.directories = directories;
    }
    if source.cluster.is_empty() {
        return Err(field_error(
            object.path_of("cluster"),
            "must name an Envoy cluster",
        ));
    }
    if source.authority.is_empty() {
        return Err(field_error(
            object.path_of("authority"),
            "must not be empty",
        ));
    }
    object.finish()?;
    Ok(source)
}

fn read_token(object: Option<Object>) -> Result<TokenSettings, FieldError> {
    let mut token = TokenSettings {
        path: "/serviceaccount/token".into(),
        client_authorization: ClientAuthorization::Replace,
        expiry_skew_seconds: 10,
    };
    let Some(mut object) = object else {
        return Ok(token);
    };
    if let Some(path) = object.string("path")? {
        check_file_path(&object.path_of("path"), &path)?;
        token.path = path;
    }
    let choices = [
        ("replace", ClientAuthorization::Replace),
        ("preserve", ClientAuthorization::Preserve),
    ];
    if let Some(choice) = object.choice("client_authorization", &choices)? {
        token.client_authorization = choice;
    }
    if let Some(skew) = object.unsigned("expiry_skew_seconds")? {
        if skew > MAX_EXPIRY_SKEW_S {
            return Err(field_error(
                object.path_of("expiry_skew_seconds"),
                format!("{skew} is out of range 0..={MAX_EXPIRY_SKEW_S}"),
            ));
        }
        token.expiry_skew_seconds = skew;
    }
    object.finish()?;
    Ok(token)
}

fn read_identity_headers(items: Vec<(String, &Value)>) -> Result<Vec<IdentityHeader>, FieldError> {
    let mut headers: Vec<IdentityHeader> = Vec::with_capacity(items.len());
    for (path, item) in items {
        let mut object = Object::new(item, &path)?;
        let header = object
            .string("header")?
            .ok_or_else(|| field_error(object.path_of("header"), "is required"))?
            .to_ascii_lowercase();
        if let Some(problem) = header_name_problem(&header) {
            return Err(field_error(
                object.path_of("header"),
                format!("{} {problem}", Quoted(&header)),
            ));
        }
        if headers.iter().any(|h| h.header == header) {
            return Err(field_error(
                object.path_of("header"),
                format!("{} is listed twice", Quoted(&header)),
            ));
        }
        let env = object.string("env")?;
        let file = object.string("file")?;
        let key = object.string("key")?;
        let format = object.choice("format", &[("map", false), ("text", true)])?;
        object.finish()?;
        let field = |name: &str| format!("{path}.{name}");
        let source = match (env, file) {
            (Some(env), None) => {
                if env.is_empty() || env.contains('=') {
                    return Err(field_error(
                        field("env"),
                        "must be an environment variable name",
                    ));
                }
                if key.is_some() || format.is_some() {
                    return Err(field_error(
                        field("env"),
                        "`key` and `format` apply only to a `file` source",
                    ));
                }
                HeaderSource::Env(env)
            }
            (None, Some(path)) => {
                check_file_path(&field("file"), &path)?;
                let format = match (format == Some(true), key) {
                    (false, None) => FileFormat::Map,
                    (false, Some(key)) => FileFormat::MapKey(key),
                    (true, None) => FileFormat::Text,
                    (true, Some(_)) => {
                        return Err(field_error(field("key"), "applies only to format `map`"));
                    }
                };
                HeaderSource::File { path, format }
            }
            _ => {
                return Err(field_error(
                    field("env"),
                    "set exactly one of `env` and `file`",
                ));
            }
        };
        headers.push(IdentityHeader { header, source });
    }
    Ok(headers)
}

/// More skew than an hour would refuse a default token (one hour) at once.
const MAX_EXPIRY_SKEW_S: u64 = 3600;

/// Hosts are compared without their port, so an entry with a port would
/// never match and lock every request out.
fn check_accept_hosts(hosts: &[String]) -> Result<(), FieldError> {
    if hosts.is_empty() {
        return Err(field_error(
            "accept_hosts",
            "must list at least one host; use [\"*\"] to accept any",
        ));
    }
    for (index, host) in hosts.iter().enumerate() {
        let bracketed_ipv6 = host.starts_with('[') && host.ends_with(']');
        let problem = if host.is_empty() {
            Some("is empty")
        } else if host.contains(':') && !bracketed_ipv6 {
            Some("has a port or is an unbracketed IPv6 address; ports are not compared, write the host alone (\"[::1]\" for IPv6)")
        } else if !host.bytes().all(|b| b.is_ascii_graphic()) {
            Some("has spaces, control or non-ASCII characters")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(field_error(
                format!("accept_hosts[{index}]"),
                format!("{} {problem}", Quoted(host)),
            ));
        }
    }
    Ok(())
}

fn check_file_path(field: &str, path: &str) -> Result<(), FieldError> {
    let plain = path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
        && !path.split('/').any(|segment| segment == "..");
    if plain {
        Ok(())
    } else {
        Err(field_error(
            field,
            format!(
                "{} must be an absolute path of letters, digits, `/-_.`, without `..`",
                Quoted(path)
            ),
        ))
    }
}

/// The forwarding headers the API server records as the request's source in
/// the audit log: never the app's to set.
const FORWARDING_HEADERS: &[&[u8]] = &[b"x-forwarded-for", b"x-real-ip", b"forwarded"];

/// The names of the app's headers that never go upstream under `config`:
/// podward sets them, or the app may not send them (besides
/// `x-envoy-*` and, unless allowed, impersonation).
fn dropped_headers(config: &Config) -> HeaderNames {
    let replaced = (config.token.client_authorization == ClientAuthorization::Replace)
        .then_some(&b"authorization"[..]);
    let user_agent = config.user_agent.then_some(&b"user-agent"[..]);
    // Every configured identity header, whether or not podward has a value
    // for it: the app cannot fill one in.
    let identity = config.identity_headers.iter().map(|h| h.header.as_bytes());
    let mut dropped = HeaderNames::default();
    let names = FORWARDING_HEADERS
        .iter()
        .copied()
        .chain(replaced)
        .chain(user_agent);
    for name in names.chain(identity) {
        dropped.insert(name);
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_means_defaults() {
        for empty in ["", "  \n", "{}"] {
            let config = Config::parse(empty.as_bytes()).unwrap();
            assert_eq!(config.refresh_interval_ms, 1000);
            assert_eq!(config.token.path, "/serviceaccount/token");
            assert_eq!(
                config.token.client_authorization,
                ClientAuthorization::Replace
            );
            assert_eq!(config.identity_headers.len(), 13);
            assert_eq!(
                config.files(),
                [
                    (FileRole::Token, "/serviceaccount/token"),
                    (FileRole::Identity, "/podinfo/labels"),
                    (FileRole::Identity, "/podinfo/annotations")
                ]
            );
            assert!(!config.allow_impersonation);
            assert_eq!(config.accept_hosts, ["localhost", "127.0.0.1", "[::1]"]);
            assert_eq!(config.access_record, AccessRecord::Refusals);
            assert_eq!(config.sidecar_configmaps, ["podward", "podward-policy"]);
        }
    }

    #[test]
    fn the_sidecar_configmaps_are_those_the_environment_names() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let config = Config::parse_in(
            b"",
            &env(&[
                ("PODWARD_POLICY_CONFIGMAP", "team-a-podward-policy"),
                ("PODWARD_CONFIGMAP", ""),
            ]),
        )
        .unwrap();
        // An empty variable is as good as unset: the shipped name.
        assert_eq!(
            config.sidecar_configmaps,
            ["podward", "team-a-podward-policy"]
        );
    }

    #[test]
    fn file_source_paths_map_to_directories() {
        let config = Config::parse(
            br#"{"file_source": {"directories": {"/sa": "/run/sa", "/sa-old": "/old"}},
                 "token": {"path": "/sa/token"}, "identity_headers": []}"#,
        )
        .unwrap();
        let source = &config.file_source;
        assert_eq!(
            source.local_path("/sa/token").as_deref(),
            Some("/run/sa/token")
        );
        assert_eq!(
            source.local_path("/sa-old/token").as_deref(),
            Some("/old/token")
        );
        assert_eq!(source.local_path("/satoken"), None);
        let defaults = Config::parse(b"").unwrap();
        assert_eq!(
            defaults
                .file_source
                .local_path("/podinfo/labels")
                .as_deref(),
            Some("/etc/podinfo/labels")
        );
    }

    #[test]
    fn default_file_headers_need_their_directory() {
        let config =
            Config::parse(br#"{"file_source": {"directories": {"/serviceaccount": "/run/sa"}}}"#)
                .unwrap();
        assert_eq!(config.files(), [(FileRole::Token, "/serviceaccount/token")]);
        assert_eq!(config.identity_headers.len(), DEFAULT_ENV_HEADERS.len());
        // Named in the configuration, a file must still be mapped.
        let error = Config::parse(
            br#"{"file_source": {"directories": {"/serviceaccount": "/run/sa"}},
                 "identity_headers": [{"header": "x-labels", "file": "/podinfo/labels"}]}"#,
        )
        .unwrap_err();
        assert_eq!(error.field, "identity_headers[0].file");
    }

    #[test]
    fn the_route_adds_env_headers_only_when_every_variable_is_set() {
        let env = |names: &[&str]| -> Vec<(String, String)> {
            names
                .iter()
                .map(|name| (name.to_string(), String::new()))
                .collect()
        };
        let all: Vec<&str> = DEFAULT_ENV_HEADERS.iter().map(|(_, v)| *v).collect();
        let json = br#"{"route_adds_env_headers": true}"#;
        let config = Config::parse_in(json, &env(&all)).unwrap();
        assert!(config.route_adds_env_headers);
        assert!(!Config::parse(b"").unwrap().route_adds_env_headers);
        let error = Config::parse_in(json, &env(&all[1..])).unwrap_err();
        assert_eq!(error.field, ROUTE_ADDS_ENV_HEADERS);
        assert!(error.problem.contains("POD_NAME is not set"), "{error}");
        assert!(error.problem.contains("x-pod-name"), "{error}");
    }

    #[test]
    fn header_names_are_lowercased_and_files_deduplicated() {
        let config = Config::parse(
            br#"{"identity_headers": [
                {"header": "X-App", "file": "/podinfo/labels", "key": "app"},
                {"header": "x-labels", "file": "/podinfo/labels"},
                {"header": "x-cpu", "file": "/podinfo/cpu", "format": "text"}]}"#,
        )
        .unwrap();
        assert_eq!(config.identity_headers[0].header, "x-app");
        let paths: Vec<&str> = config.files().into_iter().map(|(_, path)| path).collect();
        assert_eq!(
            paths,
            ["/serviceaccount/token", "/podinfo/labels", "/podinfo/cpu"]
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"refresh_interval": 5}"#,
                "(top level)",
                "unknown field \"refresh_interval\"",
            ),
            (
                r#"{"token": {"paht": "/t"}}"#,
                "token",
                "unknown field \"paht\"",
            ),
            (
                r#"{"token": {"client_authorization": "keep"}}"#,
                "token.client_authorization",
                "unknown value \"keep\"",
            ),
            (r#"{"token": "/t"}"#, "token", "must be a JSON object"),
            (
                r#"{"refresh_interval_ms": "1s"}"#,
                "refresh_interval_ms",
                "whole number",
            ),
            (
                r#"{"refresh_interval_ms": 0}"#,
                "refresh_interval_ms",
                "out of range",
            ),
            (
                r#"{"startup_wait_ms": 99999999}"#,
                "startup_wait_ms",
                "out of range",
            ),
            (
                r#"{"file_source": {"cluster": ""}}"#,
                "file_source.cluster",
                "Envoy cluster",
            ),
            (
                r#"{"file_source": {"timeout_ms": 1.5}}"#,
                "file_source.timeout_ms",
                "whole number",
            ),
            (
                r#"{"token": {"path": "token"}}"#,
                "token.path",
                "absolute path",
            ),
            (
                r#"{"token": {"path": "/a/../b"}}"#,
                "token.path",
                "without `..`",
            ),
            (
                r#"{"identity_headers": {}}"#,
                "identity_headers",
                "must be a list",
            ),
            (
                r#"{"identity_headers": [{"header": "x-a", "env": "A"}, {"header": "x a", "env": "B"}]}"#,
                "identity_headers[1].header",
                "cannot have",
            ),
            (
                r#"{"identity_headers": [{"header": "authorization", "env": "A"}]}"#,
                "identity_headers[0].header",
                "reserved",
            ),
            (
                r#"{"identity_headers": [{"header": "x-a", "env": "A"}, {"header": "X-A", "env": "B"}]}"#,
                "identity_headers[1].header",
                "listed twice",
            ),
            (
                r#"{"identity_headers": [{"env": "A"}]}"#,
                "identity_headers[0].header",
                "is required",
            ),
            (
                r#"{"identity_headers": [{"header": "x-a"}]}"#,
                "identity_headers[0].env",
                "exactly one",
            ),
            (
                r#"{"identity_headers": [{"header": "x-a", "env": "A", "file": "/f"}]}"#,
                "identity_headers[0].env",
                "exactly one",
            ),
            (
                r#"{"identity_headers": [{"header": "x-a", "env": "A", "key": "k"}]}"#,
                "identity_headers[0].env",
                "only to a `file`",
            ),
            (
                r#"{"identity_headers": [{"header": "x-a", "file": "/f", "format": "text", "key": "k"}]}"#,
                "identity_headers[0].key",
                "only to format `map`",
            ),
            (
                r#"{"identity_headers": [{"header": "x-a", "file": "/f", "format": "yaml"}]}"#,
                "identity_headers[0].format",
                "unknown value",
            ),
            (
                r#"{"identity_headers": [{"header": "x-a", "fiel": "/f"}]}"#,
                "identity_headers[0]",
                "unknown field \"fiel\"",
            ),
            (r#"{"accept_hosts": []}"#, "accept_hosts", "at least one"),
            (
                r#"{"access_record": "forwarded"}"#,
                "access_record",
                "unknown value \"forwarded\"",
            ),
            (
                r#"{"accept_hosts": ["localhost:8001"]}"#,
                "accept_hosts[0]",
                "ports are not compared",
            ),
            (
                r#"{"accept_hosts": ["a", ""]}"#,
                "accept_hosts[1]",
                "is empty",
            ),
            (
                r#"{"policy_file": "/elsewhere/policy.json"}"#,
                "policy_file",
                "\"/elsewhere/policy.json\" is under no directory",
            ),
            (
                r#"{"file_source": {"directories": {"/sa": "/run/sa"}}}"#,
                "file_source.directories",
                "\"/serviceaccount/token\" is under no directory",
            ),
            (
                r#"{"file_source": {"directories": {"/podinfo": "relative"}}}"#,
                "file_source.directories./podinfo",
                "absolute path",
            ),
            (
                r#"{"accept_hosts": ["::1"]}"#,
                "accept_hosts[0]",
                "unbracketed IPv6",
            ),
            (
                r#"{"token": {"expiry_skew_seconds": 18446744073709551615}}"#,
                "token.expiry_skew_seconds",
                "out of range",
            ),
            (
                r#"{"policy": {"preset": "read-only"}, "policy_file": "/p/policy.json"}"#,
                "policy_file",
                "not both",
            ),
            (
                r#"{"policy_file": "policy.json"}"#,
                "policy_file",
                "absolute path",
            ),
            (
                r#"{"policy": {"rules": [{"name": "r", "action": "deny", "verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "namespaces": ["$Self"]}]}}"#,
                "policy.rules[0].namespaces",
                "the only one is \"$self\"",
            ),
            (
                r#"{"policy": {"rules": [{"name": "r", "action": "deny", "verbs": ["*"], "apiGroups": [""], "resources": ["pods/exec/x"]}]}}"#,
                "policy.rules[0].resources",
                "more than one '/'",
            ),
            (
                r#"{"accept_hosts": "localhost"}"#,
                "accept_hosts",
                "list of strings",
            ),
            (
                r#"{"policy": {"preset": "strict"}}"#,
                "policy.preset",
                "unknown preset",
            ),
            (
                r#"{"policy": {"rules": [{"name": "r", "action": "permit", "verbs": ["get"], "nonResourceURLs": ["*"]}]}}"#,
                "policy.rules[0].action",
                "unknown value \"permit\"",
            ),
            (
                r#"{"policy": {"rules": [{"name": "r", "action": "allow", "verbs": ["get"], "apiGroup": [""]}]}}"#,
                "policy.rules[0]",
                "unknown field \"apiGroup\"",
            ),
            (
                r#"{"policy": {"rules": [{"name": "r", "action": "allow", "verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, {"name": "s", "action": "allow", "verbs": ["fetch"], "nonResourceURLs": ["*"]}]}}"#,
                "policy.rules[1].verbs",
                "unknown verb",
            ),
            ("[1, 2]", "(top level)", "must be a JSON object"),
            ("{", "(top level)", "not valid JSON"),
        ];
        for (json, field, problem) in cases {
            let error = Config::parse(json.as_bytes()).unwrap_err();
            assert_eq!(error.field, *field, "{json}: {error}");
            assert!(error.problem.contains(problem), "{json}: {error}");
            assert!(error.to_string().contains(field), "{error}");
        }
    }
}
