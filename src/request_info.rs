//! What the Kubernetes API server would make of a request: the verb, API group,
//! namespace, resource, subresource and name that RBAC rules are matched against.
//!
//! This mirrors kube-apiserver's `RequestInfoFactory.NewRequestInfo`
//! (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go), including the parts
//! of `ListOptions` decoding it relies on: the `watch` parameter, and the name a
//! `fieldSelector=metadata.name=…` pins on a list or watch. A policy decision is
//! only as good as this agreement, so where podward cannot be sure to read a
//! request exactly as the API server will, it refuses it instead of guessing:
//!
//! - The API server percent-decodes the path before splitting it, so `%2F` would
//!   become a separator there and not here; a path with any `%` is refused.
//! - `//`, `.` and `..` segments are read differently by proxies and servers
//!   that normalise paths; they are refused, as are a backslash (a separator to
//!   some normalisers), `#`, spaces, control characters and non-ASCII bytes.
//! - Go's `net/url` drops query pairs that contain `;` (older Go split on it),
//!   and stops reading queries past a parameter count; queries with `;` or over
//!   [`MAX_QUERY_LEN`] bytes are refused.
//! - HTTP methods other than GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS,
//!   and OPTIONS on a resource (Go's empty verb), are refused.
//! - A `watch` value with non-ASCII bytes is refused: apimachinery reads it with
//!   `strings.EqualFold` in one place and `strings.ToLower` in another (and
//!   differently across versions), which disagree on whether `falſe` is false.
//!
//! kube-apiserver authorizes a GET of `pods/exec`, `pods/attach` or
//! `pods/portforward` (how a WebSocket upgrade starts) as `create` as well as
//! `get`, as it authorizes their SPDY POST ([`RequestInfo::also_create`]).
//!
//! One deliberate difference keeps the classification on the broad side: Go
//! takes the name from a field selector only if every list option decodes,
//! including the label selector. podward does not parse label selectors, so a
//! list or watch with a non-empty `labelSelector` gets no name from its field
//! selector, and is judged as the unnamed list or watch it narrows.

use crate::prelude::*;
use alloc::borrow::Cow;
use core::fmt;

/// Longest path (without the query) podward classifies.
pub const MAX_PATH_LEN: usize = 8192;
/// Longest query podward classifies; it keeps the pair count well below the
/// 10,000 past which Go's `url.ParseQuery` (GODEBUG `urlmaxqueryparams`) gives up.
pub const MAX_QUERY_LEN: usize = 8192;

/// Every verb a resource request can have.
pub const RESOURCE_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
];

/// What the API server would make of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo<'a> {
    pub is_resource_request: bool,
    /// The path without the query, as sent (a trailing `/` included).
    pub path: &'a str,
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`, `proxy`); for a non-resource request, the
    /// lowercased HTTP method.
    pub verb: &'static str,
    /// `api` or `apis` for a resource request. Like Go, also `apis` for the
    /// non-resource `/apis/{group}/{version}`.
    pub api_prefix: &'a str,
    /// Empty for the core group.
    pub api_group: &'a str,
    pub api_version: &'a str,
    pub namespace: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    /// From the path, or percent-decoded from a list's `fieldSelector`.
    pub name: Cow<'a, str>,
}

/// Pod subresources that open a session into a container.
const SESSION_SUBRESOURCES: &[&str] = &["exec", "attach", "portforward"];

impl RequestInfo<'_> {
    /// Whether the API server authorizes this request as `create` as well as
    /// `get`: a GET of pods/exec, attach or portforward opens the same session
    /// as their POST (kube-apiserver 1.35+, `AuthorizePodWebsocketUpgradeCreatePermission`,
    /// on by default). Seen on 1.36: a GET needs both verbs with or without an
    /// `Upgrade` header, so podward reads no header for it.
    pub fn also_create(&self) -> bool {
        self.verb == "get"
            && self.is_resource_request
            && self.api_group.is_empty()
            && self.resource == "pods"
            && SESSION_SUBRESOURCES.contains(&self.subresource)
    }

    /// The verb podward reports in metrics, the access record and a refusal:
    /// `create` for a session's GET, as for its POST, so that both look alike.
    pub fn reported_verb(&self) -> &'static str {
        if self.also_create() {
            "create"
        } else {
            self.verb
        }
    }

    /// The resource as RBAC rules name it: `pods`, or `pods/exec` with a subresource.
    pub fn resource_with_subresource(&self) -> ResourceWithSubresource<'_> {
        ResourceWithSubresource {
            resource: self.resource,
            subresource: self.subresource,
        }
    }
}

/// `resource` or `resource/subresource`, compared and displayed without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceWithSubresource<'a> {
    pub resource: &'a str,
    pub subresource: &'a str,
}

impl fmt::Display for ResourceWithSubresource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subresource.is_empty() {
            f.write_str(self.resource)
        } else {
            write!(f, "{}/{}", self.resource, self.subresource)
        }
    }
}

impl PartialEq<str> for ResourceWithSubresource<'_> {
    fn eq(&self, combined: &str) -> bool {
        match combined.strip_prefix(self.resource) {
            Some("") => self.subresource.is_empty(),
            Some(rest) => {
                !self.subresource.is_empty() && rest.strip_prefix('/') == Some(self.subresource)
            }
            None => false,
        }
    }
}

impl PartialEq<&str> for ResourceWithSubresource<'_> {
    fn eq(&self, combined: &&str) -> bool {
        self == *combined
    }
}

/// Why podward refuses to classify a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unclassifiable {
    /// Not one of the methods the API server gives a verb for this request.
    UnsupportedMethod,
    PathNotAbsolute,
    PathTooLong,
    QueryTooLong,
    /// A control character, space, non-ASCII byte or `#`; in the path also `\`.
    ForbiddenCharacter,
    PercentEncodedPath,
    EmptySegment,
    DotSegment,
    SemicolonInQuery,
    /// `/api/v1/watch` or `/api/v1/proxy` with nothing after it; the API server fails these too.
    VerbWithoutResource,
    NonAsciiWatchValue,
}

impl fmt::Display for Unclassifiable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnsupportedMethod => "unsupported HTTP method for this request",
            Self::PathNotAbsolute => "the path must start with '/'",
            Self::PathTooLong => "the path is too long",
            Self::QueryTooLong => "the query string is too long",
            Self::ForbiddenCharacter => {
                "the URL contains a control character, space, non-ASCII byte or '#', \
                 or the path a '\\'"
            }
            Self::PercentEncodedPath => "the path contains percent-encoding",
            Self::EmptySegment => "the path contains an empty segment ('//')",
            Self::DotSegment => "the path contains a '.' or '..' segment",
            Self::SemicolonInQuery => "the query string contains ';'",
            Self::VerbWithoutResource => "the path names no resource after 'watch' or 'proxy'",
            Self::NonAsciiWatchValue => "the 'watch' parameter has a non-ASCII value",
        })
    }
}

impl core::error::Error for Unclassifiable {}

/// Classifies a request from its method and `:path` (path and query).
pub fn classify<'a>(
    method: &str,
    path_and_query: &'a str,
) -> Result<RequestInfo<'a>, Unclassifiable> {
    let method = lowercase_method(method)?;
    let (path, query) = split_checked_target(path_and_query)?;

    let non_resource = |api_prefix| RequestInfo {
        is_resource_request: false,
        path,
        verb: method,
        api_prefix,
        api_group: "",
        api_version: "",
        namespace: "",
        resource: "",
        subresource: "",
        name: Cow::Borrowed(""),
    };

    let mut segment_buffer = [""; SEGMENTS_INSPECTED];
    let segments = leading_segments(path, &mut segment_buffer);
    let (api_prefix, api_group, api_version, after_version) = match segments {
        ["api", version, after_version @ ..] if !after_version.is_empty() => {
            ("api", "", *version, after_version)
        }
        ["apis", group, version, after_version @ ..] if !after_version.is_empty() => {
            ("apis", *group, *version, after_version)
        }
        // Go has taken `apis` as the prefix before it finds no resource after the version.
        ["apis", _, _] => return Ok(non_resource("apis")),
        _ => return Ok(non_resource("")),
    };

    // The deprecated `/watch/…` and `/proxy/…` forms name the verb in the path.
    let (verb, parts) = match after_version {
        ["watch", rest @ ..] => ("watch", rest),
        ["proxy", rest @ ..] => ("proxy", rest),
        _ => (resource_verb(method)?, after_version),
    };
    if parts.is_empty() {
        return Err(Unclassifiable::VerbWithoutResource);
    }

    // `namespaces/{ns}/{resource}/…`, except that `namespaces/{ns}` and its own
    // subresources (`namespaces/{ns}/status`) are the namespace object itself.
    let (namespace, parts) = match parts {
        ["namespaces", namespace, rest @ ..] => match rest {
            [next, ..] if !NAMESPACE_SUBRESOURCES.contains(next) => (*namespace, rest),
            _ => (*namespace, parts),
        },
        _ => ("", parts),
    };

    let resource = parts.first().copied().unwrap_or_default();
    let mut name = Cow::Borrowed(parts.get(1).copied().unwrap_or_default());
    // A proxy path goes on with the proxied path, not a subresource.
    let subresource = match verb {
        "proxy" => "",
        _ => parts.get(2).copied().unwrap_or_default(),
    };

    let verb = match verb {
        "get" if name.is_empty() => {
            let watch = wants_watch(query)?;
            if let Some(pinned) = name_pinned_by_field_selector(query) {
                name = pinned;
            }
            if watch {
                "watch"
            } else {
                "list"
            }
        }
        "delete" if name.is_empty() => "deletecollection",
        verb => verb,
    };

    Ok(RequestInfo {
        is_resource_request: true,
        path,
        verb,
        api_prefix,
        api_group,
        api_version,
        namespace,
        resource,
        subresource,
        name,
    })
}

const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The most path segments the classification looks at:
/// `apis/{group}/{version}/watch/namespaces/{ns}/{resource}/{name}/{subresource}`.
const SEGMENTS_INSPECTED: usize = 9;

/// The first segments of `path`, split like Go's `strings.Split(strings.Trim(path, "/"), "/")`.
fn leading_segments<'a, 'b>(
    path: &'a str,
    buffer: &'b mut [&'a str; SEGMENTS_INSPECTED],
) -> &'b [&'a str] {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return &[];
    }
    let mut count = 0;
    for (slot, segment) in buffer.iter_mut().zip(trimmed.split('/')) {
        *slot = segment;
        count += 1;
    }
    buffer.get(..count).unwrap_or_default()
}

fn lowercase_method(method: &str) -> Result<&'static str, Unclassifiable> {
    Ok(match method {
        "GET" => "get",
        "HEAD" => "head",
        "POST" => "post",
        "PUT" => "put",
        "PATCH" => "patch",
        "DELETE" => "delete",
        "OPTIONS" => "options",
        _ => return Err(Unclassifiable::UnsupportedMethod),
    })
}

/// The verb of a resource request from its method; `get` and `delete` may still
/// turn into `list`, `watch` or `deletecollection` when there is no name.
fn resource_verb(lowercase_method: &str) -> Result<&'static str, Unclassifiable> {
    Ok(match lowercase_method {
        "post" => "create",
        "get" | "head" => "get",
        "put" => "update",
        "patch" => "patch",
        "delete" => "delete",
        _ => return Err(Unclassifiable::UnsupportedMethod),
    })
}

/// Splits the request target at the first `?`, refusing what podward cannot
/// read exactly as the API server would (see the module documentation).
fn split_checked_target(path_and_query: &str) -> Result<(&str, &str), Unclassifiable> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    if !path.starts_with('/') {
        return Err(Unclassifiable::PathNotAbsolute);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(Unclassifiable::PathTooLong);
    }
    if query.len() > MAX_QUERY_LEN {
        return Err(Unclassifiable::QueryTooLong);
    }
    // One pass over the path, for its characters and for its segments: `//`
    // and `.` or `..` segments are refused after any character is.
    let is_dots = |segment: &[u8]| segment == b"." || segment == b"..";
    let (mut empty_segment, mut dot_segment) = (false, false);
    let mut segment_start = 0;
    for (at, byte) in path.bytes().enumerate() {
        match byte {
            b'/' => {
                let segment = path.as_bytes().get(segment_start..at).unwrap_or_default();
                empty_segment |= at > 0 && segment.is_empty();
                dot_segment |= is_dots(segment);
                segment_start = at + 1;
            }
            b'%' => return Err(Unclassifiable::PercentEncodedPath),
            b'#' | b'\\' => return Err(Unclassifiable::ForbiddenCharacter),
            _ if !byte.is_ascii_graphic() => return Err(Unclassifiable::ForbiddenCharacter),
            _ => {}
        }
    }
    dot_segment |= is_dots(path.as_bytes().get(segment_start..).unwrap_or_default());
    for byte in query.bytes() {
        match byte {
            b';' => return Err(Unclassifiable::SemicolonInQuery),
            b'#' => return Err(Unclassifiable::ForbiddenCharacter),
            _ if !byte.is_ascii_graphic() => return Err(Unclassifiable::ForbiddenCharacter),
            _ => {}
        }
    }
    if empty_segment {
        return Err(Unclassifiable::EmptySegment);
    }
    if dot_segment {
        return Err(Unclassifiable::DotSegment);
    }
    Ok((path, query))
}

/// Whether a GET without a name is a watch: the first `watch` value, unless it
/// is `0` or `false` in any case (present but empty counts as a watch).
fn wants_watch(query: &str) -> Result<bool, Unclassifiable> {
    let Some(value) = query::first_value(query, "watch") else {
        return Ok(false);
    };
    if !value.is_ascii() {
        return Err(Unclassifiable::NonAsciiWatchValue);
    }
    Ok(!(*value == *b"0" || value.eq_ignore_ascii_case(b"false")))
}

/// The name a list or watch narrows itself to with `fieldSelector=metadata.name=…`,
/// when the API server would take it: every list option must decode, and the
/// name must be usable as a path segment.
fn name_pinned_by_field_selector(query: &str) -> Option<Cow<'_, str>> {
    // podward does not parse label selectors; see the module documentation.
    if query::first_value(query, "labelSelector").is_some_and(|selector| !selector.is_empty()) {
        return None;
    }
    let integers_decode = ["limit", "timeoutSeconds"].into_iter().all(|key| {
        query::first_value(query, key).is_none_or(|value| {
            // Rust's i64 parsing accepts what Go's strconv.ParseInt(_, 10, 64) does.
            core::str::from_utf8(&value).is_ok_and(|text| text.parse::<i64>().is_ok())
        })
    });
    if !integers_decode {
        return None;
    }
    let name = match query::first_value(query, "fieldSelector")? {
        Cow::Borrowed(selector) => field_selector::required_name(selector)?,
        Cow::Owned(selector) => Cow::Owned(field_selector::required_name(&selector)?.into_owned()),
    };
    let name = match name {
        Cow::Borrowed(bytes) => Cow::Borrowed(core::str::from_utf8(bytes).ok()?),
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8(bytes).ok()?),
    };
    // apimachinery's IsValidPathSegmentName.
    let usable = name != "." && name != ".." && !name.contains(['/', '%']);
    usable.then_some(name)
}

/// Query parameters as Go's `url.ParseQuery` reads them (podward has refused `;`).
mod query {
    use crate::prelude::*;
    use alloc::borrow::Cow;

    /// The first value of `key` Go keeps, decoded: Go drops a pair whose key or
    /// value has a malformed escape, so a later pair may supply the value.
    pub(super) fn first_value<'a>(query: &'a str, key: &str) -> Option<Cow<'a, [u8]>> {
        if query.is_empty() {
            return None;
        }
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .find_map(|pair| {
                let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
                if decodes_to(raw_key, key) {
                    decode(raw_value)
                } else {
                    None
                }
            })
    }

    fn decodes_to(raw: &str, expected: &str) -> bool {
        let mut decoded = Unescape(raw.as_bytes());
        expected
            .bytes()
            .all(|byte| decoded.next() == Some(Ok(byte)))
            && decoded.next().is_none()
    }

    fn decode(raw: &str) -> Option<Cow<'_, [u8]>> {
        if !raw.contains(['%', '+']) {
            return Some(Cow::Borrowed(raw.as_bytes()));
        }
        Unescape(raw.as_bytes())
            .collect::<Result<Vec<u8>, MalformedEscape>>()
            .ok()
            .map(Cow::Owned)
    }

    #[derive(Debug, PartialEq, Eq)]
    struct MalformedEscape;

    /// Go's `url.QueryUnescape`, byte by byte: `+` is a space, `%` takes two hex digits.
    struct Unescape<'a>(&'a [u8]);

    impl Iterator for Unescape<'_> {
        type Item = Result<u8, MalformedEscape>;

        fn next(&mut self) -> Option<Self::Item> {
            let (&first, rest) = self.0.split_first()?;
            self.0 = rest;
            Some(match first {
                b'+' => Ok(b' '),
                b'%' => match rest {
                    [high, low, tail @ ..] => {
                        self.0 = tail;
                        match (hex_value(*high), hex_value(*low)) {
                            (Some(high), Some(low)) => Ok(high << 4 | low),
                            _ => Err(MalformedEscape),
                        }
                    }
                    _ => {
                        self.0 = &[];
                        Err(MalformedEscape)
                    }
                },
                byte => Ok(byte),
            })
        }
    }

    fn hex_value(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
}

/// Field selectors as apimachinery's `fields.ParseSelector` reads them.
mod field_selector {
    use crate::prelude::*;
    use alloc::borrow::Cow;

    const NAME_FIELD: &[u8] = b"metadata.name";

    /// What `ParseSelector(selector).RequiresExactMatch("metadata.name")` gives:
    /// `None` if the selector does not parse or does not pin the name. Go sorts
    /// the terms first, so with several `metadata.name=` terms the smallest wins.
    pub(super) fn required_name(selector: &[u8]) -> Option<Cow<'_, [u8]>> {
        let mut pinning: Option<(&[u8], Cow<'_, [u8]>)> = None;
        for term in Terms(Some(selector)).filter(|term| !term.is_empty()) {
            let (field, operator, raw_value) = split_term(term)?;
            // Every term must parse, even those that do not mention the name.
            let value = unescape_value(raw_value)?;
            let pins_name = field == NAME_FIELD && operator == Operator::Equals;
            if pins_name
                && pinning
                    .as_ref()
                    .is_none_or(|(smallest, _)| term < *smallest)
            {
                pinning = Some((term, value));
            }
        }
        pinning.map(|(_, value)| value)
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Operator {
        /// `=` or `==`.
        Equals,
        NotEquals,
    }

    /// Terms separated by commas that are not escaped with a backslash; the
    /// escapes stay in the terms.
    struct Terms<'a>(Option<&'a [u8]>);

    impl<'a> Iterator for Terms<'a> {
        type Item = &'a [u8];

        fn next(&mut self) -> Option<&'a [u8]> {
            let rest = self.0?;
            let mut escaped = false;
            let comma = rest.iter().position(|&byte| {
                let separates = !escaped && byte == b',';
                escaped = !escaped && byte == b'\\';
                separates
            });
            match comma {
                Some(at) => {
                    self.0 = rest.get(at + 1..);
                    rest.get(..at)
                }
                None => {
                    self.0 = None;
                    Some(rest)
                }
            }
        }
    }

    /// Splits at the first operator (`!=`, `==`, `=`); the field has no escaping.
    fn split_term(term: &[u8]) -> Option<(&[u8], Operator, &[u8])> {
        (0..term.len()).find_map(|at| {
            let (field, rest) = term.split_at_checked(at)?;
            let (operator, value) = match rest {
                [b'!', b'=', value @ ..] => (Operator::NotEquals, value),
                [b'=', b'=', value @ ..] | [b'=', value @ ..] => (Operator::Equals, value),
                _ => return None,
            };
            Some((field, operator, value))
        })
    }

    /// `fields.UnescapeValue`: `\\`, `\,` and `\=` are the only escapes, and a
    /// bare `,` or `=` is an error.
    fn unescape_value(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
        if !raw.iter().any(|byte| matches!(byte, b'\\' | b',' | b'=')) {
            return Some(Cow::Borrowed(raw));
        }
        let mut value = Vec::with_capacity(raw.len());
        let mut bytes = raw.iter();
        while let Some(&byte) = bytes.next() {
            match byte {
                b'\\' => match bytes.next() {
                    Some(&escaped @ (b'\\' | b',' | b'=')) => value.push(escaped),
                    _ => return None,
                },
                b',' | b'=' => return None,
                _ => value.push(byte),
            }
        }
        Some(Cow::Owned(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// method, target, expected: resource request?, verb, api prefix, group,
    /// version, namespace, resource, subresource, name.
    type Case = (
        &'static str,
        &'static str,
        bool,
        &'static str,
        [&'static str; 7],
    );

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        // Non-resource requests: the verb is the lowercased method.
        ("GET", "/", false, "get", ["", "", "", "", "", "", ""]),
        ("GET", "/version", false, "get", ["", "", "", "", "", "", ""]),
        ("GET", "/healthz", false, "get", ["", "", "", "", "", "", ""]),
        ("GET", "/openapi/v2", false, "get", ["", "", "", "", "", "", ""]),
        ("HEAD", "/healthz", false, "head", ["", "", "", "", "", "", ""]),
        ("OPTIONS", "/version", false, "options", ["", "", "", "", "", "", ""]),
        ("POST", "/version", false, "post", ["", "", "", "", "", "", ""]),
        ("GET", "/api", false, "get", ["", "", "", "", "", "", ""]),
        ("GET", "/api/", false, "get", ["", "", "", "", "", "", ""]),
        ("GET", "/apis", false, "get", ["", "", "", "", "", "", ""]),
        ("GET", "/apis/batch", false, "get", ["", "", "", "", "", "", ""]),
        ("GET", "/apis/batch/", false, "get", ["", "", "", "", "", "", ""]),
        ("GET", "/api/v1", false, "get", ["", "", "", "", "", "", ""]),
        ("GET", "/api/v1/", false, "get", ["", "", "", "", "", "", ""]),
        // Go sets the prefix before it finds nothing after the version.
        ("GET", "/apis/batch/v1", false, "get", ["apis", "", "", "", "", "", ""]),
        ("GET", "/foo/bar/baz/qux", false, "get", ["", "", "", "", "", "", ""]),
        ("GET", "/api/v1/pods?watch=1", true, "watch", ["api", "", "v1", "", "pods", "", ""]),
        ("GET", "/version?watch=1", false, "get", ["", "", "", "", "", "", ""]),
        // Namespaces: the object itself, its subresources, and what is in it.
        ("GET", "/api/v1/namespaces", true, "list", ["api", "", "v1", "", "namespaces", "", ""]),
        ("GET", "/api/v1/namespaces/foo", true, "get", ["api", "", "v1", "foo", "namespaces", "", "foo"]),
        ("PUT", "/api/v1/namespaces/foo/status", true, "update", ["api", "", "v1", "foo", "namespaces", "status", "foo"]),
        ("PUT", "/api/v1/namespaces/foo/finalize", true, "update", ["api", "", "v1", "foo", "namespaces", "finalize", "foo"]),
        ("DELETE", "/api/v1/namespaces/foo", true, "delete", ["api", "", "v1", "foo", "namespaces", "", "foo"]),
        ("GET", "/api/v1/namespaces/default/pods", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods/", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods/x", true, "get", ["api", "", "v1", "default", "pods", "", "x"]),
        ("GET", "/api/v1/namespaces/default/pods/x/", true, "get", ["api", "", "v1", "default", "pods", "", "x"]),
        ("HEAD", "/api/v1/namespaces/default/pods/x", true, "get", ["api", "", "v1", "default", "pods", "", "x"]),
        ("POST", "/api/v1/namespaces/default/pods/x/exec?command=sh&stdin=true", true, "create", ["api", "", "v1", "default", "pods", "exec", "x"]),
        ("GET", "/api/v1/namespaces/default/pods/x/exec?command=sh", true, "get", ["api", "", "v1", "default", "pods", "exec", "x"]),
        ("GET", "/api/v1/namespaces/default/pods/x/log?follow=true", true, "get", ["api", "", "v1", "default", "pods", "log", "x"]),
        ("POST", "/api/v1/namespaces/default/pods/x/portforward", true, "create", ["api", "", "v1", "default", "pods", "portforward", "x"]),
        ("POST", "/api/v1/namespaces/default/pods/x/attach", true, "create", ["api", "", "v1", "default", "pods", "attach", "x"]),
        // Parts after the subresource are not interpreted.
        ("GET", "/api/v1/namespaces/default/services/s/proxy/admin/x", true, "get", ["api", "", "v1", "default", "services", "proxy", "s"]),
        ("GET", "/api/v1/namespaces/default/status/x", true, "get", ["api", "", "v1", "default", "namespaces", "status", "default"]),
        // Methods.
        ("POST", "/api/v1/namespaces/default/pods", true, "create", ["api", "", "v1", "default", "pods", "", ""]),
        ("PUT", "/api/v1/namespaces/default/pods/x", true, "update", ["api", "", "v1", "default", "pods", "", "x"]),
        ("PATCH", "/api/v1/namespaces/default/pods/x", true, "patch", ["api", "", "v1", "default", "pods", "", "x"]),
        ("DELETE", "/api/v1/namespaces/default/pods/x", true, "delete", ["api", "", "v1", "default", "pods", "", "x"]),
        ("DELETE", "/api/v1/namespaces/default/pods", true, "deletecollection", ["api", "", "v1", "default", "pods", "", ""]),
        ("DELETE", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dx", true, "deletecollection", ["api", "", "v1", "default", "pods", "", ""]),
        ("HEAD", "/api/v1/namespaces/default/pods", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        // Cluster-scoped resources and API groups.
        ("GET", "/api/v1/nodes", true, "list", ["api", "", "v1", "", "nodes", "", ""]),
        ("GET", "/api/v1/nodes/n1", true, "get", ["api", "", "v1", "", "nodes", "", "n1"]),
        ("PATCH", "/api/v1/nodes/n1/status", true, "patch", ["api", "", "v1", "", "nodes", "status", "n1"]),
        ("GET", "/api/v1/pods", true, "list", ["api", "", "v1", "", "pods", "", ""]),
        ("GET", "/apis/apps/v1/namespaces/default/deployments/d/scale", true, "get", ["apis", "apps", "v1", "default", "deployments", "scale", "d"]),
        ("PUT", "/apis/apps/v1/namespaces/default/deployments/d/scale", true, "update", ["apis", "apps", "v1", "default", "deployments", "scale", "d"]),
        ("GET", "/apis/batch/v1/jobs", true, "list", ["apis", "batch", "v1", "", "jobs", "", ""]),
        ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", true, "create", ["apis", "authorization.k8s.io", "v1", "", "selfsubjectaccessreviews", "", ""]),
        // The watch parameter: the first value Go keeps, anything but 0/false is a watch.
        ("GET", "/api/v1/namespaces/default/pods?watch=1", true, "watch", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?watch=true", true, "watch", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?watch=yes", true, "watch", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?watch=", true, "watch", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?watch", true, "watch", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?watch=false", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?watch=0", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?watch=FALSE", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?watch=fAlSe", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?watch=0&watch=1", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?watch=%zz&watch=0", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?w%61tch=1", true, "watch", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?Watch=1", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?watch=%66alse", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?watch=+0", true, "watch", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods/x?watch=1", true, "get", ["api", "", "v1", "default", "pods", "", "x"]),
        // A field selector pinning metadata.name names the list or watch.
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dfoo", true, "list", ["api", "", "v1", "default", "pods", "", "foo"]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name=foo", true, "list", ["api", "", "v1", "default", "pods", "", "foo"]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name==foo", true, "list", ["api", "", "v1", "default", "pods", "", "foo"]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3D%3Dfoo&watch=1", true, "watch", ["api", "", "v1", "default", "pods", "", "foo"]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.namespace%3Ddefault%2Cmetadata.name%3Dfoo", true, "list", ["api", "", "v1", "default", "pods", "", "foo"]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName=n,metadata.name=foo", true, "list", ["api", "", "v1", "default", "pods", "", "foo"]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name=b,metadata.name=a", true, "list", ["api", "", "v1", "default", "pods", "", "a"]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name=a,metadata.name==b", true, "list", ["api", "", "v1", "default", "pods", "", "b"]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dmy+pod", true, "list", ["api", "", "v1", "default", "pods", "", "my pod"]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Da%5C%2Cb", true, "list", ["api", "", "v1", "default", "pods", "", "a,b"]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=%zz&fieldSelector=metadata.name%3Dfoo", true, "list", ["api", "", "v1", "default", "pods", "", "foo"]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name=foo&labelSelector=&limit=500&timeoutSeconds=%2B30", true, "list", ["api", "", "v1", "default", "pods", "", "foo"]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name=foo&limit=-1", true, "list", ["api", "", "v1", "default", "pods", "", "foo"]),
        // ... but not when Go would not take it.
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name!=foo", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dfoo%2Cbogus", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Da%3Db", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dfoo%5C", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3D..", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Da%2Fb", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Da%25b", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name+%3D+foo", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name=foo&limit=", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name=foo&timeoutSeconds=1s", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name=foo&labelSelector=app%3Dweb", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/default/pods?fieldselector=metadata.name=foo", true, "list", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/watch/namespaces/default/pods?fieldSelector=metadata.name=foo", true, "watch", ["api", "", "v1", "default", "pods", "", ""]),
        // The deprecated verb-in-path forms.
        ("GET", "/api/v1/watch/pods", true, "watch", ["api", "", "v1", "", "pods", "", ""]),
        ("GET", "/api/v1/watch/namespaces/default/pods", true, "watch", ["api", "", "v1", "default", "pods", "", ""]),
        ("GET", "/api/v1/watch/namespaces/default/pods/x", true, "watch", ["api", "", "v1", "default", "pods", "", "x"]),
        ("GET", "/api/v1/watch/namespaces/default/pods/x/status", true, "watch", ["api", "", "v1", "default", "pods", "status", "x"]),
        ("GET", "/api/v1/watch/namespaces/foo", true, "watch", ["api", "", "v1", "foo", "namespaces", "", "foo"]),
        ("GET", "/apis/apps/v1/watch/deployments", true, "watch", ["apis", "apps", "v1", "", "deployments", "", ""]),
        ("OPTIONS", "/api/v1/watch/pods", true, "watch", ["api", "", "v1", "", "pods", "", ""]),
        ("GET", "/api/v1/proxy/namespaces/default/pods/x", true, "proxy", ["api", "", "v1", "default", "pods", "", "x"]),
        ("POST", "/api/v1/proxy/namespaces/default/pods/x/some/path", true, "proxy", ["api", "", "v1", "default", "pods", "", "x"]),
        ("GET", "/api/v1/proxy/nodes/n1", true, "proxy", ["api", "", "v1", "", "nodes", "", "n1"]),
        // A name that merely looks like a verb is a name.
        ("GET", "/api/v1/namespaces/watch/pods", true, "list", ["api", "", "v1", "watch", "pods", "", ""]),
    ];

    #[test]
    fn classifies_like_the_api_server() {
        for &(method, target, is_resource_request, verb, fields) in CASES {
            let [api_prefix, api_group, api_version, namespace, resource, subresource, name] =
                fields;
            let expected = RequestInfo {
                is_resource_request,
                path: target.split('?').next().unwrap(),
                verb,
                api_prefix,
                api_group,
                api_version,
                namespace,
                resource,
                subresource,
                name: Cow::Borrowed(name),
            };
            assert_eq!(classify(method, target), Ok(expected), "{method} {target}");
        }
    }

    #[rustfmt::skip]
    const REFUSED: &[(&str, &str, Unclassifiable)] = &[
        ("GET", "/api/v1/namespaces/default/pods/..", Unclassifiable::DotSegment),
        ("GET", "/api/v1/namespaces/default/pods/../../kube-system/secrets", Unclassifiable::DotSegment),
        ("GET", "/api/v1/namespaces/default/./pods", Unclassifiable::DotSegment),
        ("GET", "/..", Unclassifiable::DotSegment),
        ("GET", "/.", Unclassifiable::DotSegment),
        ("GET", "/api/v1/namespaces/default/pods/%2e%2e", Unclassifiable::PercentEncodedPath),
        ("GET", "/api/v1/namespaces/default/pods/a%2Fb", Unclassifiable::PercentEncodedPath),
        ("GET", "/api/v1/namespaces/default/pods/%78", Unclassifiable::PercentEncodedPath),
        ("GET", "//api/v1/pods", Unclassifiable::EmptySegment),
        ("GET", "/api//v1/pods", Unclassifiable::EmptySegment),
        ("GET", "/api/v1/pods//", Unclassifiable::EmptySegment),
        ("GET", "/api/v1/pods/\u{0}", Unclassifiable::ForbiddenCharacter),
        ("GET", "/api/v1/pods/x\ty", Unclassifiable::ForbiddenCharacter),
        ("GET", "/api/v1/pods/x\u{7f}", Unclassifiable::ForbiddenCharacter),
        ("GET", "/api/v1/pods/a b", Unclassifiable::ForbiddenCharacter),
        ("GET", "/api/v1/pods/é", Unclassifiable::ForbiddenCharacter),
        ("GET", "/api/v1/pods?fieldSelector=metadata.name=é", Unclassifiable::ForbiddenCharacter),
        ("GET", "/api/v1/pods?watch=1\n", Unclassifiable::ForbiddenCharacter),
        ("GET", "/api/v1/pods/x#y", Unclassifiable::ForbiddenCharacter),
        ("GET", "/api/v1/pods?watch=1#x", Unclassifiable::ForbiddenCharacter),
        ("GET", "/api/v1/pods\\x", Unclassifiable::ForbiddenCharacter),
        ("GET", "/api/v1/pods?watch=1;x", Unclassifiable::SemicolonInQuery),
        ("GET", "api/v1/pods", Unclassifiable::PathNotAbsolute),
        ("GET", "", Unclassifiable::PathNotAbsolute),
        ("OPTIONS", "*", Unclassifiable::PathNotAbsolute),
        ("GET", "?watch=1", Unclassifiable::PathNotAbsolute),
        ("CONNECT", "/api/v1/namespaces/default/pods/x/portforward", Unclassifiable::UnsupportedMethod),
        ("TRACE", "/", Unclassifiable::UnsupportedMethod),
        ("get", "/api/v1/pods", Unclassifiable::UnsupportedMethod),
        ("", "/", Unclassifiable::UnsupportedMethod),
        ("OPTIONS", "/api/v1/pods", Unclassifiable::UnsupportedMethod),
        ("GET", "/api/v1/watch", Unclassifiable::VerbWithoutResource),
        ("GET", "/api/v1/watch/", Unclassifiable::VerbWithoutResource),
        ("GET", "/apis/apps/v1/proxy", Unclassifiable::VerbWithoutResource),
        ("GET", "/api/v1/pods?watch=fal%C5%BFe", Unclassifiable::NonAsciiWatchValue),
        ("GET", "/api/v1/pods?watch=%FF", Unclassifiable::NonAsciiWatchValue),
    ];

    #[test]
    fn refuses_what_it_cannot_read_safely() {
        for &(method, target, refusal) in REFUSED {
            assert_eq!(
                classify(method, target),
                Err(refusal),
                "{method} {target:?}"
            );
        }
        let long_path = format!(
            "/api/v1/namespaces/default/pods/{}",
            "x".repeat(MAX_PATH_LEN)
        );
        assert_eq!(
            classify("GET", &long_path),
            Err(Unclassifiable::PathTooLong)
        );
        let long_query = format!("/api/v1/pods?labelSelector={}", "a".repeat(MAX_QUERY_LEN));
        assert_eq!(
            classify("GET", &long_query),
            Err(Unclassifiable::QueryTooLong)
        );
    }

    #[test]
    fn accepts_the_longest_path_and_query() {
        let path = "/api/v1/namespaces/default/configmaps/".to_string();
        let path = path.clone() + &"x".repeat(MAX_PATH_LEN - path.len());
        let target = format!("{path}?{}", "a".repeat(MAX_QUERY_LEN));
        let info = classify("GET", &target).unwrap();
        assert_eq!(
            info.name.len(),
            MAX_PATH_LEN - "/api/v1/namespaces/default/configmaps/".len()
        );
    }

    #[test]
    fn names_borrow_from_the_request_unless_decoded() {
        let from_path = classify("GET", "/api/v1/namespaces/d/pods/x").unwrap();
        assert!(matches!(from_path.name, Cow::Borrowed("x")));
        let plain = classify("GET", "/api/v1/pods?fieldSelector=metadata.name=x").unwrap();
        assert!(matches!(plain.name, Cow::Borrowed("x")));
        let decoded = classify("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dx").unwrap();
        assert!(matches!(decoded.name, Cow::Owned(ref name) if name == "x"));
    }

    #[test]
    fn a_sessions_get_is_also_a_create() {
        #[rustfmt::skip]
        let cases = [
            ("GET", "/api/v1/namespaces/d/pods/x/exec?command=sh&stdin=true", true),
            ("GET", "/api/v1/namespaces/d/pods/x/attach?stdout=true", true),
            ("GET", "/api/v1/namespaces/d/pods/x/portforward?ports=80", true),
            ("HEAD", "/api/v1/namespaces/d/pods/x/exec", true),
            ("GET", "/api/v1/namespaces/d/pods/x/exec/", true),
            // Their POST is a create already; other subresources and groups are not sessions.
            ("POST", "/api/v1/namespaces/d/pods/x/exec", false),
            ("GET", "/api/v1/namespaces/d/pods/x/log?follow=true", false),
            ("GET", "/api/v1/namespaces/d/pods/x/proxy/", false),
            ("GET", "/api/v1/namespaces/d/pods/x", false),
            ("GET", "/api/v1/namespaces/d/services/x/exec", false),
            ("GET", "/apis/example.com/v1/namespaces/d/pods/x/exec", false),
            ("GET", "/api/v1/watch/namespaces/d/pods/x/exec", false),
            ("GET", "/api/v1/nodes/n1/proxy/exec/d/x/main", false),
        ];
        for (method, target, also_create) in cases {
            let info = classify(method, target).unwrap();
            assert_eq!(info.also_create(), also_create, "{method} {target}");
            let reported = if also_create { "create" } else { info.verb };
            assert_eq!(info.reported_verb(), reported, "{method} {target}");
        }
    }

    #[test]
    fn resource_with_subresource_reads_like_rbac() {
        let exec = classify("POST", "/api/v1/namespaces/d/pods/x/exec").unwrap();
        assert_eq!(exec.resource_with_subresource().to_string(), "pods/exec");
        assert_eq!(exec.resource_with_subresource(), "pods/exec");
        assert_ne!(exec.resource_with_subresource(), "pods");
        assert_ne!(exec.resource_with_subresource(), "pods/exe");
        assert_ne!(exec.resource_with_subresource(), "pods/exec/x");
        assert_ne!(exec.resource_with_subresource(), "podsexec");

        let pods = classify("GET", "/api/v1/namespaces/d/pods").unwrap();
        assert_eq!(pods.resource_with_subresource().to_string(), "pods");
        assert_eq!(pods.resource_with_subresource(), "pods");
        assert_ne!(pods.resource_with_subresource(), "pods/");
        assert_ne!(pods.resource_with_subresource(), "pod");
    }

    #[test]
    fn every_refusal_explains_itself() {
        let refusal = classify("GET", "/api/v1/pods/..").unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "the path contains a '.' or '..' segment"
        );
    }

    /// Deterministic xorshift64*, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn pick<'t>(&mut self, items: &[&'t str]) -> &'t str {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    const METHODS: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "get", "",
    ];
    const PATH_TOKENS: &[&str] = &[
        "/",
        "/",
        "/",
        "/",
        ".",
        "..",
        "%",
        "%2F",
        "%2e",
        "api",
        "apis",
        "v1",
        "apps",
        "watch",
        "proxy",
        "namespaces",
        "default",
        "pods",
        "x",
        "status",
        "finalize",
        "exec",
        "a",
        "0",
        "z9",
        "\\",
        "#",
        " ",
        "\u{0}",
        "é",
        "?",
    ];
    const QUERY_TOKENS: &[&str] = &[
        "&",
        "&",
        "=",
        "=",
        "watch",
        "fieldSelector",
        "labelSelector",
        "limit",
        "timeoutSeconds",
        "metadata.name",
        "%3D",
        "%3d",
        "%2C",
        ",",
        "==",
        "!=",
        "%5C",
        "\\",
        "%",
        "%z",
        "%C5%BF",
        "+",
        "0",
        "1",
        "false",
        "FALSE",
        "foo",
        "..",
        "%2F",
        ";",
        "#",
        "é",
        "?",
    ];

    fn generated_target(rng: &mut Rng) -> String {
        let mut target = String::new();
        for _ in 0..rng.next() % 14 {
            target.push_str(rng.pick(PATH_TOKENS));
        }
        if !rng.next().is_multiple_of(4) {
            target.insert(0, '/');
        }
        if rng.next().is_multiple_of(2) {
            target.push('?');
            for _ in 0..rng.next() % 12 {
                target.push_str(rng.pick(QUERY_TOKENS));
            }
        }
        target
    }

    /// Well-formed targets with one byte changed, to reach the deeper branches.
    fn mutated_target(rng: &mut Rng) -> String {
        let seeds = [
            "/api/v1/namespaces/default/pods/x/exec",
            "/apis/apps/v1/watch/namespaces/ns/deployments/d",
            "/api/v1/pods?watch=1&fieldSelector=metadata.name%3Dfoo%2Cspec.nodeName%3Dn",
            "/api/v1/namespaces/foo/status",
            "/api/v1/proxy/nodes/n1/metrics",
        ];
        let mut bytes = rng.pick(&seeds).as_bytes().to_vec();
        let at = (rng.next() % bytes.len() as u64) as usize;
        let alphabet = b"/.%?&=,!\\#;+ aZ09\x00\x7f";
        let replacement = alphabet[(rng.next() % alphabet.len() as u64) as usize];
        match rng.next() % 3 {
            0 => bytes[at] = replacement,
            1 => bytes.insert(at, replacement),
            _ => {
                bytes.remove(at);
            }
        }
        String::from_utf8(bytes).unwrap()
    }

    fn assert_invariants(method: &str, target: &str, info: &RequestInfo) {
        let context = format!("{method} {target:?} -> {info:?}");
        assert!(target.starts_with(info.path), "{context}");
        for field in [
            info.api_group,
            info.api_version,
            info.namespace,
            info.resource,
            info.subresource,
        ] {
            assert!(
                !field.contains('/') && field != "." && field != "..",
                "{context}"
            );
        }
        assert!(
            !info.name.contains('/') && info.name != "." && info.name != "..",
            "{context}"
        );
        if info.is_resource_request {
            assert!(matches!(info.api_prefix, "api" | "apis"), "{context}");
            assert!(
                !info.api_version.is_empty() && !info.resource.is_empty(),
                "{context}"
            );
            assert_eq!(
                info.api_group.is_empty(),
                info.api_prefix == "api",
                "{context}"
            );
            assert!(RESOURCE_VERBS.contains(&info.verb), "{context}");
            assert!(
                !matches!(info.verb, "get" | "delete") || !info.name.is_empty(),
                "{context}"
            );
            assert!(
                info.verb != "proxy" || info.subresource.is_empty(),
                "{context}"
            );
        } else {
            assert_eq!(info.verb, method.to_lowercase(), "{context}");
            assert!(
                info.resource.is_empty() && info.name.is_empty() && info.api_version.is_empty(),
                "{context}"
            );
        }
    }

    #[test]
    fn never_panics_and_keeps_its_invariants() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut classified, mut refused) = (0, 0);
        for round in 0..200_000 {
            let method = rng.pick(METHODS);
            let target = if round % 2 == 0 {
                generated_target(&mut rng)
            } else {
                mutated_target(&mut rng)
            };
            match classify(method, &target) {
                Ok(info) => {
                    assert_invariants(method, &target, &info);
                    classified += 1;
                }
                Err(refusal) => {
                    assert!(!refusal.to_string().is_empty());
                    refused += 1;
                }
            }
        }
        // Both outcomes must be exercised for the test to mean anything.
        assert!(
            classified > 10_000 && refused > 10_000,
            "{classified} classified, {refused} refused"
        );
    }
}
