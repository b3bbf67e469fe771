//! Property-based fuzzing of every parser podward feeds with outside input
//! (issue #3): the request classifier, the Downward API map parser, the token
//! claims reader and the configuration, plus the header encoding and the policy
//! decision that consume their output.
//!
//! The generators are structured, not random bytes alone: request targets are
//! built from Kubernetes path segments and list-option queries, map files from
//! maps quoted the way Go's `strconv.Quote` does, tokens from JWTs with claims
//! of every JSON type, configurations from the real field names. Each harness
//! checks properties, not only the absence of panics: the classifier against an
//! independent model of kube-apiserver's `RequestInfoFactory`, the map parser by
//! round trip, the claims against the JSON they were written from, every
//! configuration error against the fields the document has.
//!
//! The number of inputs per harness comes from `PROPTEST_CASES`; without it each
//! harness runs its quick-pass default (the whole file takes seconds). A long
//! run, optimised but with overflow checks and debug assertions on:
//!
//! ```text
//! PROPTEST_CASES=1000000 cargo test --profile fuzz --test fuzz_parsers -- --nocapture
//! ```
//!
//! (add a harness name, e.g. `classify`, to run one). Each harness prints how
//! many inputs it ran, how long it took and what the inputs reached. A failure
//! is shrunk to a minimal input and its seed saved in
//! `proptest-regressions/fuzz_parsers.txt`, which is replayed first on every
//! later run: commit that file. `PROPTEST_RNG_SEED` fixes the seed of a run.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use podward::config::{Config, FileFormat, FileRole, HeaderSource};
use podward::downward::{parse_map, PodMap};
use podward::headers::{encode_map, encode_value};
use podward::policy::{Effect, Policy, PolicyConfig, Rule, PRESETS};
use podward::request_info::{classify, RequestInfo, MAX_PATH_LEN, MAX_QUERY_LEN, RESOURCE_VERBS};
use podward::token::{Claims, Freshness, Token, TokenError};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{FileFailurePersistence, TestCaseResult, TestRunner};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

// ---------------------------------------------------------------------------
// The runner: case count from the environment, a tally of what inputs reached.

const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/proptest-regressions/fuzz_parsers.txt"
);

/// What the inputs of one harness reached, to show that the generators get
/// past the first check of each parser.
#[derive(Default)]
struct Tally(RefCell<BTreeMap<&'static str, u64>>);

impl Tally {
    fn hit(&self, what: &'static str) {
        *self.0.borrow_mut().entry(what).or_default() += 1;
    }

    fn get(&self, what: &str) -> u64 {
        self.0.borrow().get(what).copied().unwrap_or(0)
    }

    /// Asserts that at least `percent` % of the inputs reached `what`.
    fn at_least(&self, what: &str, percent: u64) {
        let (hits, inputs) = (self.get(what), self.get("inputs"));
        assert!(
            hits * 100 >= inputs * percent,
            "only {hits} of {inputs} inputs reached {what:?}; the generator has degenerated"
        );
    }
}

/// Runs one harness for `PROPTEST_CASES` inputs, or `default_cases` without it.
fn fuzz<S: Strategy>(
    name: &'static str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value, &Tally) -> TestCaseResult,
) -> Tally {
    let cases = match std::env::var("PROPTEST_CASES") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PROPTEST_CASES={text:?} is not a number")),
        Err(_) => default_cases,
    };
    let config = ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        source_file: Some(file!()),
        test_name: Some(name),
        ..ProptestConfig::default()
    };
    let tally = Tally::default();
    let mut runner = TestRunner::new(config);
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        tally.hit("inputs");
        test(value, &tally)
    });
    eprintln!(
        "fuzz {name}: {} inputs in {:.1} s: {:?}",
        tally.get("inputs"),
        started.elapsed().as_secs_f64(),
        tally.0.borrow()
    );
    if let Err(error) = result {
        panic!("fuzz {name}: {error}");
    }
    tally
}

fn strings(items: &'static [&'static str]) -> BoxedStrategy<String> {
    select(items).prop_map(String::from).boxed()
}

fn byte_strings(items: &'static [&'static str]) -> BoxedStrategy<Vec<u8>> {
    select(items).prop_map(|s| s.as_bytes().to_vec()).boxed()
}

/// A few byte edits (replace, insert, delete) at random places.
type Mutations = Vec<(Index, u8, u8)>;

fn mutations(alphabet: &'static [u8], unmutated_weight: u32) -> BoxedStrategy<Mutations> {
    prop_oneof![
        unmutated_weight => Just(Vec::new()),
        1 => vec((any::<Index>(), 0u8..3, select(alphabet)), 1..4),
    ]
    .boxed()
}

fn mutate(mut bytes: Vec<u8>, edits: &Mutations) -> Vec<u8> {
    for (at, operation, byte) in edits {
        match operation {
            0 if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
            1 => bytes.insert(at.index(bytes.len() + 1), *byte),
            _ if !bytes.is_empty() => {
                bytes.remove(at.index(bytes.len()));
            }
            _ => {}
        }
    }
    bytes
}

// ---------------------------------------------------------------------------
// request_info::classify, against a model of kube-apiserver's NewRequestInfo.

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn method() -> BoxedStrategy<String> {
    prop_oneof![
        12 => strings(METHODS),
        1 => strings(&["CONNECT", "TRACE", "get", "Delete", "", "GET "]),
        1 => "[A-Za-z]{0,8}",
    ]
    .boxed()
}

const PATH_WORDS: &[&str] = &[
    "api",
    "apis",
    "v1",
    "v2beta1",
    "apps",
    "batch",
    "namespaces",
    "watch",
    "proxy",
    "pods",
    "deployments",
    "configmaps",
    "nodes",
    "services",
    "exec",
    "attach",
    "log",
    "status",
    "finalize",
    "scale",
    "default",
    "kube-system",
    "team-a",
    "x",
    "version",
    "healthz",
];

/// A segment podward must accept: no `%`, `\`, `#`, `?`, no `.` or `..`.
fn clean_segment() -> BoxedStrategy<String> {
    prop_oneof![
        6 => strings(PATH_WORDS),
        3 => "[a-z0-9]([-a-z0-9.]{0,10}[a-z0-9])?",
        1 => "[-!$&'()*+,;:=@A-Za-z0-9_~.]{1,8}"
            .prop_map(|s| if s == "." || s == ".." { s + "x" } else { s }),
    ]
    .boxed()
}

/// A segment that podward should refuse, or that changes how the target splits.
fn dirty_segment() -> BoxedStrategy<String> {
    prop_oneof![
        3 => strings(&[
            "", ".", "..", "%2F", "%2f", "a%2Fb", "%2e%2e", "%", "%zz", "\\", "..\\", "#", "a#b",
            " ", "a b", "\t", "\u{0}", "\u{7f}", "\u{e9}", "\u{2028}", "?", "?watch=1", "/", ";",
            "..;",
        ]),
        1 => "(?s).{0,6}",
    ]
    .boxed()
}

/// `/api/v1/…` or `/apis/{group}/{version}/…` with the optional `watch` or
/// `proxy`, namespace, name, subresource and extra segments; sometimes cut short.
fn api_segments() -> BoxedStrategy<Vec<String>> {
    (
        prop::option::weighted(
            0.6,
            prop_oneof![
                strings(&["apps", "batch", "authorization.k8s.io", "x"]),
                "[a-z]{1,6}(\\.[a-z]{1,6}){0,2}",
            ],
        ),
        strings(&["v1", "v1beta1", "v2"]),
        strings(&["", "", "", "", "watch", "proxy"]),
        prop::option::weighted(0.5, clean_segment()),
        clean_segment(),
        prop::option::weighted(0.6, clean_segment()),
        prop::option::weighted(0.3, clean_segment()),
        vec(clean_segment(), 0..3),
        prop::option::weighted(0.3, 0usize..10),
    )
        .prop_map(
            |(group, version, verb, namespace, resource, name, sub, extra, cut)| {
                let mut segments = Vec::new();
                match group {
                    None => segments.push("api".to_string()),
                    Some(group) => segments.extend(["apis".to_string(), group]),
                }
                segments.push(version);
                if !verb.is_empty() {
                    segments.push(verb);
                }
                if let Some(namespace) = namespace {
                    segments.extend(["namespaces".to_string(), namespace]);
                }
                segments.push(resource);
                segments.extend(name);
                segments.extend(sub);
                segments.extend(extra);
                if let Some(cut) = cut {
                    segments.truncate(cut);
                }
                segments
            },
        )
        .boxed()
}

fn path() -> BoxedStrategy<String> {
    (
        prop_oneof![3 => api_segments(), 1 => vec(clean_segment(), 0..6)],
        prop_oneof![
            4 => Just(Vec::new()),
            1 => vec((any::<Index>(), dirty_segment()), 1..3),
        ],
        prop::bool::weighted(0.97),
        prop::bool::weighted(0.2),
        prop::option::weighted(
            0.01,
            select(&[MAX_PATH_LEN - 1, MAX_PATH_LEN, MAX_PATH_LEN + 1][..]),
        ),
    )
        .prop_map(|(mut segments, dirt, leading, trailing, length)| {
            for (at, segment) in dirt {
                segments.insert(at.index(segments.len() + 1), segment);
            }
            let mut path = String::new();
            if leading {
                path.push('/');
            }
            path.push_str(&segments.join("/"));
            if trailing {
                path.push('/');
            }
            if let Some(length) = length {
                while path.len() < length {
                    path.push('a');
                }
            }
            path
        })
        .boxed()
}

/// Percent-encodes for a query in one of several styles, some of which leave
/// a malformed escape at the end (Go then drops the pair).
fn query_encode(raw: &[u8], style: u8) -> String {
    let mut out = String::new();
    for (i, &byte) in raw.iter().enumerate() {
        let must = !(0x21..=0x7e).contains(&byte) || b"&#;%+".contains(&byte);
        let encode = match style % 4 {
            1 => true,
            2 => must || i % 2 == 0,
            _ => must,
        };
        if byte == b' ' && style.is_multiple_of(4) {
            out.push('+');
        } else if encode && style & 4 == 0 {
            write!(out, "%{byte:02X}").unwrap();
        } else if encode {
            write!(out, "%{byte:02x}").unwrap();
        } else {
            out.push(char::from(byte));
        }
    }
    match style >> 4 {
        15 => out.push('%'),
        14 => out.push_str("%z"),
        13 => out.push_str("%4"),
        _ => {}
    }
    out
}

fn selector_term() -> BoxedStrategy<Vec<u8>> {
    (
        byte_strings(&[
            "metadata.name",
            "metadata.name",
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "",
            "metadata.name ",
            "Metadata.name",
            "metadata.name!",
        ]),
        byte_strings(&["=", "=", "==", "!=", "", "=!", "==="]),
        prop_oneof![
            4 => "[a-z0-9]([-a-z0-9.]{0,8}[a-z0-9])?".prop_map(String::into_bytes),
            2 => byte_strings(&[
                "", ".", "..", "a/b", "a%b", "a\\,b", "a\\=b", "a\\\\b", "a,b", "a=b", "a\\", "\\x",
                "\u{e9}", "a b", "a+b", "a\\\u{e9}",
            ]),
            1 => vec(any::<u8>(), 0..6),
        ],
    )
        .prop_map(|(field, operator, value)| [field, operator, value].concat())
        .boxed()
}

/// Only `metadata.name=` terms, which must all parse; Go takes the smallest.
fn pinning_selector() -> BoxedStrategy<Vec<u8>> {
    vec(
        (
            byte_strings(&["=", "=="]),
            prop_oneof![
                3 => "[a-z0-9]{1,3}".prop_map(String::into_bytes),
                2 => byte_strings(&[".", "..", "a/b", "a%b", "", "a\\,b", "a b", "a+b", "\u{e9}"]),
            ],
        ),
        1..4,
    )
    .prop_map(|terms| {
        let terms: Vec<Vec<u8>> = terms
            .into_iter()
            .map(|(operator, value)| [&b"metadata.name"[..], &operator, &value].concat())
            .collect();
        terms.join(&b","[..])
    })
    .boxed()
}

fn query_pair() -> BoxedStrategy<String> {
    let key_value = prop_oneof![
        3 => (
            Just(b"watch".to_vec()),
            prop_oneof![
                3 => byte_strings(&[
                    "", "0", "1", "true", "false", "FALSE", "False", "fAlSe", "no", "00", " 0",
                    "false ", "fal\u{17f}e", "\u{e9}",
                ]),
                1 => vec(any::<u8>(), 0..4),
            ],
        ),
        4 => (
            Just(b"fieldSelector".to_vec()),
            prop_oneof![
                2 => vec(selector_term(), 0..4).prop_map(|terms| terms.join(&b","[..])),
                1 => pinning_selector(),
            ],
        ),
        1 => (Just(b"labelSelector".to_vec()), byte_strings(&["", "app=web", "x"])),
        1 => (
            byte_strings(&["limit", "timeoutSeconds"]),
            byte_strings(&[
                "", "0", "500", "-1", "+7", "abc", "9223372036854775807", "9223372036854775808",
                "-9223372036854775808", "-9223372036854775809", "1_000", " 1", "1.5", "0x10", "+",
                "-",
            ]),
        ),
        1 => (
            byte_strings(&["resourceVersion", "Watch", "fieldselector", "watch ", "continue"]),
            vec(any::<u8>(), 0..5),
        ),
    ];
    (
        key_value,
        any::<u8>(),
        any::<u8>(),
        prop::bool::weighted(0.95),
    )
        .prop_map(|((key, value), key_style, value_style, equals)| {
            // Keys are encoded more gently: a malformed key drops the whole pair.
            let key = query_encode(&key, key_style & 0x7f);
            if equals {
                format!("{key}={}", query_encode(&value, value_style))
            } else {
                key
            }
        })
        .boxed()
}

fn query() -> BoxedStrategy<Option<String>> {
    prop::option::weighted(
        0.75,
        (
            vec(query_pair(), 0..4),
            strings(&["&", "&", "&", "&&"]),
            prop_oneof![
                6 => Just(Vec::new()),
                1 => vec(
                    (
                        any::<Index>(),
                        select(&[";", "#", " ", "\u{e9}", "\u{1}", "?", "&", "=", "%", "\u{7f}"][..]),
                    ),
                    1..3,
                ),
            ],
            prop::option::weighted(
                0.01,
                select(&[MAX_QUERY_LEN - 1, MAX_QUERY_LEN, MAX_QUERY_LEN + 1][..]),
            ),
        )
            .prop_map(|(pairs, separator, dirt, length)| {
                let mut query = pairs.join(&separator);
                for (at, text) in dirt {
                    let mut at = at.index(query.len() + 1);
                    while !query.is_char_boundary(at) {
                        at += 1;
                    }
                    query.insert_str(at, text);
                }
                if let Some(length) = length {
                    while query.len() < length {
                        query.push('a');
                    }
                }
                query
            }),
    )
    .boxed()
}

fn request_target() -> BoxedStrategy<String> {
    (path(), query())
        .prop_map(|(path, query)| match query {
            Some(query) => format!("{path}?{query}"),
            None => path,
        })
        .boxed()
}

/// A method and target, a quarter of them a list or watch with list options:
/// the deepest path through the classifier.
fn request() -> BoxedStrategy<(String, String)> {
    let list = (
        strings(&["GET", "GET", "HEAD", "DELETE"]),
        prop::option::of(clean_segment()),
        clean_segment(),
        vec(query_pair(), 1..4),
    )
        .prop_map(|(method, namespace, resource, pairs)| {
            let namespace = namespace
                .map(|ns| format!("namespaces/{ns}/"))
                .unwrap_or_default();
            let target = format!("/api/v1/{namespace}{resource}?{}", pairs.join("&"));
            (method, target)
        });
    prop_oneof![3 => (method(), request_target()), 1 => list].boxed()
}

/// A classification, owned, as both the model and podward give it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Classified {
    is_resource_request: bool,
    path: String,
    verb: String,
    api_prefix: String,
    api_group: String,
    api_version: String,
    namespace: String,
    resource: String,
    subresource: String,
    name: String,
}

impl From<&RequestInfo<'_>> for Classified {
    fn from(info: &RequestInfo) -> Self {
        Classified {
            is_resource_request: info.is_resource_request,
            path: info.path.into(),
            verb: info.verb.into(),
            api_prefix: info.api_prefix.into(),
            api_group: info.api_group.into(),
            api_version: info.api_version.into(),
            namespace: info.namespace.into(),
            resource: info.resource.into(),
            subresource: info.subresource.into(),
            name: info.name.to_string(),
        }
    }
}

/// kube-apiserver's `RequestInfoFactory.NewRequestInfo` and the `ListOptions`
/// decoding it uses, written from the Go source independently of src/, plus
/// podward's documented refusals and its one documented difference (a
/// non-empty `labelSelector` pins no name). `None`: podward must refuse.
fn model_classify(method: &str, target: &str) -> Option<Classified> {
    if !METHODS.contains(&method) {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let visible = |text: &str| text.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if !path.starts_with('/')
        || path.len() > MAX_PATH_LEN
        || query.len() > MAX_QUERY_LEN
        || !visible(path)
        || path.contains(['%', '#', '\\'])
        || path.contains("//")
        || path.split('/').any(|s| s == "." || s == "..")
        || !visible(query)
        || query.contains([';', '#'])
    {
        return None;
    }
    let mut info = Classified {
        path: path.into(),
        verb: method.to_ascii_lowercase(),
        ..Classified::default()
    };
    // splitPath: strings.Split(strings.Trim(path, "/"), "/").
    let trimmed = path.trim_matches('/');
    let mut parts: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
        return Some(info);
    }
    info.api_prefix = parts.remove(0).into();
    if info.api_prefix == "apis" {
        if parts.len() < 3 {
            return Some(info);
        }
        info.api_group = parts.remove(0).into();
    }
    info.is_resource_request = true;
    info.api_version = parts.remove(0).into();
    if matches!(parts[0], "watch" | "proxy") {
        if parts.len() < 2 {
            return None; // Go: "unable to determine kind and namespace"
        }
        info.verb = parts.remove(0).into();
    } else {
        info.verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => return None, // Go's empty verb, refused by podward
        }
        .into();
    }
    if parts[0] == "namespaces" && parts.len() > 1 {
        info.namespace = parts[1].into();
        if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
            parts.drain(..2);
        }
    }
    if parts.len() >= 3 && info.verb != "proxy" {
        info.subresource = parts[2].into();
    }
    if parts.len() >= 2 {
        info.name = parts[1].into();
    }
    info.resource = parts[0].into();
    if info.name.is_empty() && info.verb == "get" {
        let values = go_parse_query(query);
        let first = |key: &str| values.get(key.as_bytes()).map(|v| v[0].as_slice());
        let watch = match first("watch") {
            None => false,
            Some(value) if !value.is_ascii() => return None,
            Some(value) => !(value == b"0" || value.eq_ignore_ascii_case(b"false")),
        };
        info.verb = if watch { "watch" } else { "list" }.into();
        let labels_empty = first("labelSelector").is_none_or(<[u8]>::is_empty);
        let integers_decode = ["limit", "timeoutSeconds"]
            .iter()
            .all(|key| first(key).is_none_or(go_parse_int_ok));
        if labels_empty && integers_decode {
            if let Ok(Some(name)) = go_required_name(first("fieldSelector").unwrap_or_default()) {
                // IsValidPathSegmentName; podward also needs the name to be UTF-8.
                if let Ok(name) = String::from_utf8(name) {
                    if name != "." && name != ".." && !name.contains(['/', '%']) {
                        info.name = name;
                    }
                }
            }
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".into();
    }
    Some(info)
}

/// Go's `url.ParseQuery`, keeping every well-formed pair.
fn go_parse_query(query: &str) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
    let mut values: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for pair in query.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if let (Some(key), Some(value)) = (go_query_unescape(key), go_query_unescape(value)) {
            values.entry(key).or_default().push(value);
        }
    }
    values
}

fn go_query_unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let hex = |i: usize| char::from(*bytes.get(i)?).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                out.push((hex(i + 1)? * 16 + hex(i + 2)?) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Whether `strconv.ParseInt(text, 10, 64)` succeeds.
fn go_parse_int_ok(text: &[u8]) -> bool {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut value: u128 = 0;
    for digit in digits {
        value = value * 10 + u128::from(digit - b'0');
        if value > 1 << 64 {
            return false;
        }
    }
    if negative {
        value <= 1 << 63
    } else {
        value < 1 << 63
    }
}

/// `fields.ParseSelector(s)` then `RequiresExactMatch("metadata.name")`;
/// `Err` when the selector does not parse.
fn go_required_name(selector: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    // splitTerms: commas not escaped by a backslash.
    let mut terms: Vec<&[u8]> = Vec::new();
    if !selector.is_empty() {
        let (mut start, mut in_slash) = (0, false);
        for (i, &c) in selector.iter().enumerate() {
            if in_slash {
                in_slash = false;
            } else if c == b'\\' {
                in_slash = true;
            } else if c == b',' {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
        }
        terms.push(&selector[start..]);
    }
    terms.sort();
    let mut items = Vec::new();
    for term in terms.into_iter().filter(|t| !t.is_empty()) {
        let (field, operator, value) = (0..term.len())
            .find_map(|i| {
                ["!=", "==", "="].into_iter().find_map(|op| {
                    term[i..]
                        .strip_prefix(op.as_bytes())
                        .map(|value| (&term[..i], op, value))
                })
            })
            .ok_or(())?;
        items.push((field, operator, go_unescape_value(value)?));
    }
    Ok(items
        .into_iter()
        .find(|(field, operator, _)| *field == b"metadata.name" && *operator != "!=")
        .map(|(_, _, value)| value))
}

/// `fields.UnescapeValue`.
fn go_unescape_value(raw: &[u8]) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    let mut in_slash = false;
    for &c in raw {
        if in_slash {
            if !b"\\,=".contains(&c) {
                return Err(());
            }
            out.push(c);
            in_slash = false;
        } else if c == b'\\' {
            in_slash = true;
        } else if c == b',' || c == b'=' {
            return Err(());
        } else {
            out.push(c);
        }
    }
    if in_slash {
        return Err(());
    }
    Ok(out)
}

#[test]
fn classify_agrees_with_the_api_server_model() {
    let tally = fuzz("classify", 10000, request(), |(method, target), tally| {
        let expected = model_classify(&method, &target);
        match classify(&method, &target) {
            Ok(info) => {
                for part in [info.namespace, info.resource, info.subresource, &info.name] {
                    prop_assert!(!part.contains('/') && part != "." && part != "..");
                }
                prop_assert_eq!(Some(Classified::from(&info)), expected);
                tally.hit(if info.is_resource_request {
                    "resource request"
                } else {
                    "non-resource request"
                });
                if matches!(info.verb, "list" | "watch") && !info.name.is_empty() {
                    tally.hit("name from fieldSelector");
                }
                if !info.subresource.is_empty() {
                    tally.hit("subresource");
                }
            }
            Err(refusal) => {
                prop_assert!(!refusal.to_string().is_empty());
                prop_assert_eq!(expected, None, "podward refused: {}", refusal);
                tally.hit("refused");
            }
        }
        Ok(())
    });
    tally.at_least("resource request", 25);
    tally.at_least("refused", 10);
    tally.at_least("name from fieldSelector", 1);
}

// ---------------------------------------------------------------------------
// downward::parse_map, by round trip through Go's strconv.Quote.

/// An approximation of Go's `strconv.IsPrint` (which follows Unicode tables):
/// a character Go's `Quote` writes as itself. The round trip holds whichever
/// way a character goes, since `Unquote` reads the raw and the escaped form.
fn go_is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    !c.is_control()
        && !c.is_whitespace()
        && !matches!(c,
            '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}'
            | '\u{feff}' | '\u{e000}'..='\u{f8ff}' | '\u{f0000}'..)
}

/// The first character of `bytes`, or `None` where Go's `DecodeRune` gives
/// `RuneError` of width 1 (an invalid or truncated sequence).
fn first_char(bytes: &[u8]) -> Option<char> {
    let head = &bytes[..bytes.len().min(4)];
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(error) => std::str::from_utf8(&head[..error.valid_up_to()]).unwrap(),
    };
    valid.chars().next()
}

/// Go's `strconv.Quote`. With a non-empty `spelling`, some characters take
/// another spelling that `strconv.Unquote` also reads: octal, `\x` for ASCII
/// or for each byte of a character, `\u` or `\U`, upper-case hex, raw bytes.
fn go_quote(value: &[u8], spelling: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    let mut choices = spelling.iter().copied().cycle();
    let mut rest = value;
    while !rest.is_empty() {
        let c = first_char(rest);
        let width = c.map_or(1, char::len_utf8);
        let choice = choices.next().unwrap_or(0);
        let raw_ok = |c: char| !matches!(c, '"' | '\\' | '\n');
        let mut text = String::new();
        match (c, choice % 8) {
            (None, 0..=5) => write!(text, "\\x{:02x}", rest[0]).unwrap(),
            (None, 6) => write!(text, "\\x{:02X}", rest[0]).unwrap(),
            (None, _) => write!(text, "\\{:03o}", rest[0]).unwrap(),
            (Some(c), 0..=2) => go_escape_rune(&mut text, c),
            (Some(c), 3) if raw_ok(c) => text.push(c),
            (Some(c), 4) => {
                for byte in c.to_string().bytes() {
                    write!(text, "\\x{byte:02X}").unwrap();
                }
            }
            (Some(c), 5) if c.is_ascii() => write!(text, "\\{:03o}", c as u32).unwrap(),
            (Some(c), 6) if (c as u32) < 0x10000 => write!(text, "\\u{:04X}", c as u32).unwrap(),
            (Some(c), _) => write!(text, "\\U{:08x}", c as u32).unwrap(),
        }
        out.extend_from_slice(text.as_bytes());
        rest = &rest[width..];
    }
    out.push(b'"');
    out
}

/// Go's `appendEscapedRune` for a double-quoted, non-ASCII-only `Quote`.
fn go_escape_rune(out: &mut String, c: char) {
    match c {
        '"' | '\\' => {
            out.push('\\');
            out.push(c);
        }
        _ if go_is_print(c) => out.push(c),
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        _ if c < ' ' || c == '\u{7f}' => write!(out, "\\x{:02x}", c as u32).unwrap(),
        _ if (c as u32) < 0x10000 => write!(out, "\\u{:04x}", c as u32).unwrap(),
        _ => write!(out, "\\U{:08x}", c as u32).unwrap(),
    }
}

/// The kubelet's `fieldpath.FormatMap`: sorted `key=%q` lines joined by `\n`.
fn format_map(map: &PodMap, spelling: &[u8]) -> Vec<u8> {
    let lines: Vec<Vec<u8>> = map
        .iter()
        .map(|(key, value)| [key.as_bytes(), b"=", &go_quote(value, spelling)].concat())
        .collect();
    lines.join(&b'\n')
}

fn map_key() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "([a-z0-9]([-a-z0-9.]{0,8}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?",
        1 => "[!-<>-~]{1,12}",
    ]
    .boxed()
}

const AWKWARD_PIECES: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"\n",
    b"\r",
    b"\t",
    b"\x07",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"=",
    b"a",
    b" ",
    "\u{80}".as_bytes(),
    "\u{a0}".as_bytes(),
    "\u{ad}".as_bytes(),
    "\u{e9}".as_bytes(),
    "\u{65e5}".as_bytes(),
    "\u{1f600}".as_bytes(),
    "\u{2028}".as_bytes(),
    "\u{fffd}".as_bytes(),
    "\u{e000}".as_bytes(),
    "\u{10ffff}".as_bytes(),
];

fn map_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => "[ -~]{0,20}".prop_map(String::into_bytes),
        2 => "(?s).{0,12}".prop_map(String::into_bytes),
        2 => vec(any::<u8>(), 0..24),
        3 => vec(select(AWKWARD_PIECES), 0..12).prop_map(|pieces| pieces.concat()),
    ]
    .boxed()
}

#[test]
fn parse_map_round_trips_the_kubelet_format() {
    let tally = fuzz(
        "parse_map",
        5000,
        (
            btree_map(map_key(), map_value(), 0..8)
                .prop_map(|map| map.into_iter().collect::<PodMap>()),
            vec(any::<u8>(), 1..16),
            mutations(b"=\"\\\nxuU0789afAF\xff \x00.", 3),
        ),
        |(map, spelling, edits), tally| {
            let exact = format_map(&map, &[]);
            prop_assert_eq!(parse_map(&exact), Ok(map.clone()));
            let mut trailing = exact.clone();
            trailing.push(b'\n');
            prop_assert_eq!(parse_map(&trailing), Ok(map.clone()));
            let respelled = format_map(&map, &spelling);
            prop_assert_eq!(parse_map(&respelled), Ok(map.clone()));
            if respelled != exact {
                tally.hit("respelled");
            }

            let mutated = mutate(exact, &edits);
            let lines = mutated.split(|&b| b == b'\n').count();
            match parse_map(&mutated) {
                Ok(parsed) => {
                    for key in parsed.keys() {
                        prop_assert!(!key.is_empty() && !key.contains('='));
                        prop_assert!(key.bytes().all(|b| b.is_ascii_graphic()));
                    }
                    tally.hit("mutated, parsed");
                }
                Err(error) => {
                    prop_assert!((1..=lines).contains(&error.line), "{:?}", error);
                    let prefix = format!("line {}", error.line);
                    prop_assert!(error.to_string().starts_with(&prefix));
                    tally.hit("mutated, refused");
                }
            }
            if map.keys().count() > 1 {
                tally.hit("several entries");
            }
            Ok(())
        },
    );
    tally.at_least("several entries", 40);
    tally.at_least("respelled", 40);
    tally.at_least("mutated, refused", 5);
}

#[test]
fn parse_map_never_panics_on_arbitrary_bytes() {
    fuzz(
        "parse_map_bytes",
        10000,
        prop_oneof![
            vec(any::<u8>(), 0..64),
            vec(select(&b"ab=\"\\\nxuU0f7\xff "[..]), 0..40),
        ],
        |bytes, _| {
            if let Ok(map) = parse_map(&bytes) {
                prop_assert!(map.keys().all(|k| !k.is_empty() && !k.contains('=')));
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// headers: encode_value and encode_map are visible ASCII and reversible.

fn percent_decode(text: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(text).collect()
}

#[test]
fn header_encoding_is_visible_ascii_and_reversible() {
    fuzz(
        "headers",
        5000,
        (
            prop_oneof![
                map_value(),
                vec(any::<u8>(), 0..64),
                "[%0-9A-Fa-z]{0,10}".prop_map(String::into_bytes),
            ],
            btree_map("(?s).{0,6}", map_value(), 0..6)
                .prop_map(|map| map.into_iter().collect::<PodMap>()),
        ),
        |(value, map), _| {
            let encoded = encode_value(&value);
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_graphic()), "{}", encoded);
            prop_assert_eq!(percent_decode(&encoded), value.clone());
            let plain = value.iter().all(|b| b.is_ascii_graphic() && *b != b'%');
            prop_assert_eq!(plain, encoded.as_bytes() == value.as_slice());

            let header = encode_map(&map);
            prop_assert!(header
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b";\"\\".contains(&b)));
            let decoded: PodMap = if header.is_empty() {
                PodMap::new()
            } else {
                header
                    .split(',')
                    .map(|entry| {
                        let (key, value) = entry.split_once('=').unwrap();
                        (
                            String::from_utf8(percent_decode(key)).unwrap(),
                            percent_decode(value),
                        )
                    })
                    .collect()
            };
            prop_assert_eq!(decoded, map);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// token::Token::parse: JWT-shaped tokens with claims of every JSON type.

/// A JSON string literal for `text`, each character escaped or not by `style`.
fn json_string(text: &str, style: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut choices = style.iter().copied().cycle();
    for c in text.chars() {
        let choice = choices.next().unwrap_or(0);
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if choice % 2 == 1 => out.push_str("\\/"),
            '\n' if choice % 2 == 1 => out.push_str("\\n"),
            _ if c < ' ' || choice % 5 == 4 => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(out, "\\u{unit:04x}").unwrap();
                }
            }
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Finite floats only (no filter: rejected inputs add up over a long run).
fn finite_f64() -> BoxedStrategy<f64> {
    use prop::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    (POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO).boxed()
}

/// A JSON value that is not a string, not an object and not a whole number.
fn json_other() -> BoxedStrategy<String> {
    prop_oneof![
        strings(&[
            "null",
            "true",
            "false",
            "[]",
            "[1]",
            "{}",
            "{\"a\":1}",
            "-0.0",
            "0.5",
            "1e3"
        ]),
        // Rust writes a float with a `.` or an exponent: a JSON float either way.
        finite_f64().prop_map(|f| format!("{f:?}")),
        (0u64..u64::MAX).prop_map(|n| format!("{n}.0")),
        (0u64..1_000_000).prop_map(|n| format!("{n}e0")),
    ]
    .boxed()
}

/// A numeric claim: JSON text and what it must read as, a JWT NumericDate in
/// whole seconds (`None`: not a number, so the claim is unreadable).
fn number_claim() -> BoxedStrategy<(String, Option<u64>)> {
    prop_oneof![
        4 => any::<u64>().prop_map(|n| (n.to_string(), Some(n))),
        4 => (1_600_000_000u64..2_000_000_000).prop_map(|n| (n.to_string(), Some(n))),
        // Before the epoch: long past.
        1 => (i64::MIN..0).prop_map(|n| (n.to_string(), Some(0))),
        // Past u64: the far future.
        1 => (u128::from(u64::MAX) + 1..u128::MAX).prop_map(|n| (n.to_string(), Some(u64::MAX))),
        // A fraction is dropped.
        1 => (0u64..2_000_000_000, 1u32..1000).prop_map(|(n, f)| (format!("{n}.{f:03}"), Some(n))),
        1 => (0u64..2_000_000_000).prop_map(|n| (format!("\"{n}\""), None)),
        1 => strings(&["null", "true", "[]", "{}", "\"soon\""]).prop_map(|text| (text, None)),
    ]
    .boxed()
}

/// A string claim: JSON text and the string it must read as, if it is one.
fn string_claim() -> BoxedStrategy<(String, Option<String>)> {
    prop_oneof![
        3 => ("[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", vec(any::<u8>(), 0..4))
            .prop_map(|(s, style)| (json_string(&s, &style), Some(s))),
        2 => ("(?s).{0,10}", vec(any::<u8>(), 0..8))
            .prop_map(|(s, style)| (json_string(&s, &style), Some(s))),
        1 => json_other().prop_map(|text| (text, None)),
        1 => any::<i64>().prop_map(|n| (n.to_string(), None)),
    ]
    .boxed()
}

fn json_object(members: Vec<(String, String)>, space: &str) -> String {
    let members: Vec<String> = members
        .into_iter()
        .map(|(key, value)| format!("{}{space}:{space}{value}", json_string(&key, &[])))
        .collect();
    format!("{{{space}{}{space}}}", members.join(&format!(",{space}")))
}

/// Members that are not claims podward reads, to be mixed in.
fn other_members() -> BoxedStrategy<Vec<(String, String)>> {
    vec(
        (
            "[a-z]{1,6}".prop_map(|k| match k.as_str() {
                "exp" | "iat" | "nbf" | "sub" | "name" | "namespace" | "pod" => k + "x",
                _ => k,
            }),
            prop_oneof![json_other(), string_claim().prop_map(|(text, _)| text)],
        ),
        0..3,
    )
    .boxed()
}

/// Members named like a claim podward reads, but in the wrong place.
fn decoys(names: &'static [&'static str]) -> BoxedStrategy<Vec<(String, String)>> {
    prop_oneof![
        2 => Just(Vec::new()),
        1 => btree_map(
            select(names).prop_map(String::from),
            prop_oneof![
                string_claim().prop_map(|(text, _)| text),
                Just(r#"{"name":"decoy","namespace":"decoy"}"#.to_string()),
            ],
            1..3,
        )
        .prop_map(|members| members.into_iter().collect()),
    ]
    .boxed()
}

/// The `kubernetes.io` claim: text, and the namespace and pod name it carries.
type KubernetesClaim = Option<(String, Option<String>, Option<String>)>;

fn kubernetes_claim() -> BoxedStrategy<KubernetesClaim> {
    let pod = prop_oneof![
        3 => (
            prop::option::of(string_claim()),
            other_members(),
            decoys(&["namespace", "pod", "Name"]),
        )
            .prop_map(|(name, mut members, decoys)| {
            members.extend(decoys);
            let mut expected = None;
            if let Some((text, value)) = name {
                members.push(("name".into(), text));
                expected = value;
            }
            (json_object(members, ""), expected)
        }),
        1 => string_claim().prop_map(|(text, _)| (text, None)),
    ];
    prop::option::weighted(
        0.8,
        prop_oneof![
            4 => (
                prop::option::of(string_claim()),
                prop::option::of(pod),
                other_members(),
                decoys(&["name", "sub", "exp", "Namespace"]),
                strings(&["", " ", "\n  "]),
            )
                .prop_map(|(namespace, pod, mut members, decoys, space)| {
                    members.extend(decoys);
                    let (mut ns, mut pod_name) = (None, None);
                    if let Some((text, value)) = namespace {
                        members.push(("namespace".into(), text));
                        ns = value;
                    }
                    if let Some((text, value)) = pod {
                        members.push(("pod".into(), text));
                        pod_name = value;
                    }
                    (json_object(members, &space), ns, pod_name)
                }),
            1 => string_claim().prop_map(|(text, _)| (text, None, None)),
        ],
    )
    .boxed()
}

#[derive(Debug, Clone)]
struct JwtCase {
    file: Vec<u8>,
    token: String,
    expected: Claims,
}

fn jwt() -> BoxedStrategy<JwtCase> {
    (
        (
            prop::option::of(number_claim()),
            prop::option::of(number_claim()),
            prop::option::of(string_claim()),
            kubernetes_claim(),
            other_members(),
            decoys(&["namespace", "name", "pod", "kubernetes", "Kubernetes.io"]),
            strings(&["", " ", "\n", "\t ", "\r\n"]),
        )
            .prop_flat_map(|(exp, iat, sub, kubernetes, others, decoys, space)| {
                let mut expected = Claims::default();
                let mut members = others;
                members.extend(decoys);
                if let Some((text, value)) = exp {
                    members.push(("exp".into(), text));
                    expected.exp = value;
                    if value.is_none() {
                        expected.unreadable.push("exp");
                    }
                }
                if let Some((text, value)) = iat {
                    members.push(("iat".into(), text));
                    expected.iat = value;
                    if value.is_none() {
                        expected.unreadable.push("iat");
                    }
                }
                if let Some((text, value)) = sub {
                    members.push(("sub".into(), text));
                    expected.sub = value;
                }
                if let Some((text, namespace, pod_name)) = kubernetes {
                    members.push(("kubernetes.io".into(), text));
                    expected.namespace = namespace;
                    expected.pod_name = pod_name;
                }
                (Just(members).prop_shuffle(), Just(space), Just(expected))
            })
            .prop_map(|(members, space, expected)| (json_object(members, &space), expected)),
        prop_oneof![
            2 => "[a-z0-9]{0,6}".prop_map(|kid| {
                URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#))
            }),
            1 => "[A-Za-z0-9_-]{0,20}",
        ],
        "[A-Za-z0-9_-]{0,40}",
        0usize..3,
        strings(&["", "", " ", "\n", "\t"]),
        strings(&["", "", "\n", "\r\n", " \n"]),
    )
        .prop_map(
            |((claims, expected), header, signature, padding, before, after)| {
                let payload = URL_SAFE_NO_PAD.encode(&claims) + &"=".repeat(padding);
                let token = format!("{header}.{payload}.{signature}");
                JwtCase {
                    file: format!("{before}{token}{after}").into_bytes(),
                    token,
                    expected,
                }
            },
        )
        .boxed()
}

#[test]
fn token_claims_are_read_as_written() {
    let tally = fuzz("token", 5000, jwt(), |case, tally| {
        let token = Token::parse(&case.file);
        prop_assert!(token.is_ok(), "{:?}", token);
        let token = token.unwrap();
        prop_assert_eq!(token.authorization(), format!("Bearer {}", case.token));
        prop_assert_eq!(&token.claims, &case.expected);
        prop_assert_eq!(token.namespace(), case.expected.namespace.as_deref());
        if case.expected.exp.is_some() {
            tally.hit("exp read");
        }
        if case.expected.namespace.is_some() {
            tally.hit("namespace read");
        }
        Ok(())
    });
    tally.at_least("exp read", 20);
    tally.at_least("namespace read", 15);
}

/// Tokens that are not well-formed JWTs: random bytes, base64-ish text with
/// dots, JWTs with edits, and payloads that are valid base64url but not a
/// JSON object.
fn odd_token() -> BoxedStrategy<(Vec<u8>, bool)> {
    prop_oneof![
        deeply_nested().prop_map(|json| {
            let token = format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(json));
            (token.into_bytes(), false)
        }),
        vec(any::<u8>(), 0..64).prop_map(|b| (b, false)),
        "[A-Za-z0-9_+/=.!~ \t\n-]{0,60}".prop_map(|s| (s.into_bytes(), false)),
        (jwt(), mutations(b".=+/!_- \nAZaz09\xff\x00", 1))
            .prop_map(|(case, edits)| (mutate(case.file, &edits), false)),
        (
            prop_oneof![
                json_other(),
                string_claim().prop_map(|(text, _)| text),
                "(?s).{0,20}",
                vec(any::<u8>(), 0..20).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ],
            "[A-Za-z0-9_-]{0,8}",
        )
            .prop_map(|(payload, header)| {
                let token = format!(
                    "{header}.{}.sig",
                    URL_SAFE_NO_PAD.encode(payload.as_bytes())
                );
                (token.into_bytes(), true)
            }),
    ]
    .boxed()
}

#[test]
fn token_parse_never_panics_and_refuses_only_unsendable_tokens() {
    let tally = fuzz(
        "token_odd",
        5000,
        odd_token(),
        |(file, not_an_object), tally| {
            let trimmed = std::str::from_utf8(&file).map(str::trim);
            match Token::parse(&file) {
                Ok(token) => {
                    let text = trimmed.unwrap();
                    prop_assert!(!text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic()));
                    prop_assert_eq!(token.authorization(), format!("Bearer {text}"));
                    let claims_object = text
                        .split('.')
                        .nth(1)
                        .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
                        .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
                        .is_some_and(|json| json.is_object());
                    if not_an_object && !claims_object {
                        prop_assert_eq!(&token.claims, &Claims::default());
                    }
                    tally.hit("accepted");
                }
                Err(TokenError::Empty) => prop_assert_eq!(trimmed, Ok("")),
                Err(TokenError::NotHeaderSafe) => {
                    prop_assert!(
                        trimmed.is_err() || !trimmed.unwrap().bytes().all(|b| b.is_ascii_graphic())
                    );
                    tally.hit("refused");
                }
            }
            Ok(())
        },
    );
    tally.at_least("accepted", 30);
    tally.at_least("refused", 5);
}

/// What `freshness` must answer, in arithmetic that cannot overflow.
fn model_freshness(claims: &Claims, now: u64, skew: u64) -> Freshness {
    if let Some(exp) = claims.exp {
        let deadline = exp.saturating_sub(skew);
        if now >= deadline {
            return Freshness::Expired {
                expired_for_s: now - deadline,
            };
        }
    }
    // A warnafter before exp marks an extended token: it ages by warnafter.
    let end = match (claims.warn_after, claims.exp) {
        (Some(warn), Some(exp)) if warn < exp => warn,
        (Some(warn), None) => warn,
        (_, Some(exp)) => exp,
        (None, None) => return Freshness::Fresh,
    };
    if now >= end {
        return Freshness::Overdue {
            overdue_for_s: now - end,
        };
    }
    match claims.iat {
        Some(iat) if iat < end => {
            let renew_at = u128::from(iat) + u128::from(end - iat) * 80 / 100;
            if u128::from(now) >= renew_at {
                Freshness::Stale {
                    expires_in_s: end - now,
                }
            } else {
                Freshness::Fresh
            }
        }
        _ => Freshness::Fresh,
    }
}

fn timestamp() -> BoxedStrategy<u64> {
    prop_oneof![
        3 => 1_700_000_000u64..1_700_100_000,
        1 => any::<u64>(),
        1 => select(&[0, 1, u64::MAX / 80, u64::MAX / 80 + 1, u64::MAX - 1, u64::MAX][..]),
    ]
    .boxed()
}

#[test]
fn token_freshness_follows_the_claims() {
    fuzz(
        "token_freshness",
        10000,
        (
            (
                prop::option::of(timestamp()),
                prop::option::of(timestamp()),
                prop::option::of(timestamp()),
            ),
            timestamp(),
            prop_oneof![0u64..120, any::<u64>()],
        ),
        |((exp, iat, warn_after), now, skew), _| {
            let mut members = Vec::new();
            members.extend(exp.map(|n| format!("\"exp\":{n}")));
            members.extend(iat.map(|n| format!("\"iat\":{n}")));
            members.extend(warn_after.map(|n| format!("\"kubernetes.io\":{{\"warnafter\":{n}}}")));
            let payload = URL_SAFE_NO_PAD.encode(format!("{{{}}}", members.join(",")));
            let token = Token::parse(format!("e30.{payload}.sig").as_bytes()).unwrap();
            prop_assert_eq!(
                (token.claims.exp, token.claims.iat, token.claims.warn_after),
                (exp, iat, warn_after)
            );
            prop_assert_eq!(
                token.freshness(now, skew),
                model_freshness(&token.claims, now, skew)
            );
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// config::Config::parse: documents from the real field names.

const TOP_FIELDS: &[&str] = &[
    "file_source",
    "refresh_interval_ms",
    "startup_wait_ms",
    "token",
    "identity_headers",
    "user_agent",
    "accept_hosts",
    "allow_impersonation",
    "namespace_env",
    "policy",
];
const FILE_SOURCE_FIELDS: &[&str] = &["cluster", "authority", "timeout_ms"];
const TOKEN_FIELDS: &[&str] = &["path", "client_authorization", "expiry_skew_seconds"];
const HEADER_FIELDS: &[&str] = &["header", "env", "file", "key", "format"];
const POLICY_FIELDS: &[&str] = &["preset", "default_action", "rules"];
const RULE_FIELDS: &[&str] = &[
    "name",
    "action",
    "verbs",
    "apiGroups",
    "resources",
    "resourceNames",
    "namespaces",
    "nonResourceURLs",
];

fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(Value::from),
        "[ -~]{0,8}".prop_map(Value::from),
        "(?s).{0,4}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
    .boxed()
}

type Member = Option<(String, Value)>;

/// A field: absent, a plausible value, null, or any JSON at all.
fn member(name: &'static str, plausible: BoxedStrategy<Value>) -> BoxedStrategy<Member> {
    prop_oneof![
        4 => Just(None),
        12 => plausible.prop_map(move |v| Some((name.to_string(), v))),
        1 => Just(Some((name.to_string(), Value::Null))),
        1 => any_json().prop_map(move |v| Some((name.to_string(), v))),
    ]
    .boxed()
}

/// An object from its members, sometimes with an unknown or misplaced field.
fn object(members: Vec<BoxedStrategy<Member>>) -> BoxedStrategy<Value> {
    let unknown = prop_oneof![
        15 => Just(Vec::new()),
        1 => vec(
            (
                prop_oneof![
                    strings(&[
                        "refresh_interval", "Token", "paht", "fiel", "apiGroup", "verb", "presets",
                        "cluster ", "", "header", "rules", "path", "name",
                    ]),
                    "[a-z_]{1,12}",
                ],
                any_json(),
            ),
            1..3,
        ),
    ];
    (members, unknown)
        .prop_map(|(members, unknown)| {
            let mut map = Map::new();
            for (key, value) in members.into_iter().flatten().chain(unknown) {
                map.insert(key, value);
            }
            Value::Object(map)
        })
        .boxed()
}

fn text_value(items: &'static [&'static str]) -> BoxedStrategy<Value> {
    select(items).prop_map(Value::from).boxed()
}

fn text_list(items: &'static [&'static str], max: usize) -> BoxedStrategy<Value> {
    vec(select(items), 0..max).prop_map(Value::from).boxed()
}

fn interval_value() -> BoxedStrategy<Value> {
    prop_oneof![
        12 => (10u64..=3_600_000).prop_map(Value::from),
        2 => select(&[0u64, 9, 10, 3_600_000, 3_600_001, u64::MAX][..]).prop_map(Value::from),
        1 => prop_oneof![text_value(&["1000", "1s"]), Just(Value::from(1.5)), Just(Value::from(-1))],
    ]
    .boxed()
}

fn file_path_value() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => "(/[A-Za-z0-9_.-]{1,8}){1,3}".prop_map(Value::from),
        1 => text_value(&["token", "/a/../b", "/..", "/a b", "/", "", "/caf\u{e9}", "//x"]),
    ]
    .boxed()
}

fn identity_header_value() -> BoxedStrategy<Value> {
    object(vec![
        member(
            "header",
            prop_oneof![
                4 => "x-[a-z0-9-]{1,6}".prop_map(Value::from),
                1 => "X-[A-Za-z]{1,3}".prop_map(Value::from),
                1 => text_value(&[
                    "authorization", "Host", ":authority", "x pod", "impersonate-user", "",
                    "x-a", "X-A",
                ]),
            ]
            .boxed(),
        ),
        member(
            "env",
            prop_oneof![
                3 => "[A-Z_]{1,8}".prop_map(Value::from),
                1 => text_value(&["", "A=B"]),
            ]
            .boxed(),
        ),
        member("file", file_path_value()),
        member("key", "[a-z]{1,5}".prop_map(Value::from).boxed()),
        member("format", text_value(&["map", "text", "yaml"])),
    ])
}

/// Every verb a rule may name, a wildcard, and one no rule may name.
static VERBS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut verbs = vec!["*"];
    verbs.extend(RESOURCE_VERBS);
    verbs.extend(["head", "post", "put", "fetch"]);
    verbs
});

fn rule_value() -> BoxedStrategy<Value> {
    object(vec![
        member("name", "[a-c]{0,2}".prop_map(Value::from).boxed()),
        member("action", text_value(&["allow", "deny", "permit"])),
        member("verbs", text_list(VERBS.as_slice(), 3)),
        member("apiGroups", text_list(&["", "*", "apps"], 3)),
        member(
            "resources",
            text_list(&["*", "pods", "pods/exec", "*/scale", "namespaces"], 3),
        ),
        member("resourceNames", text_list(&["x", "default"], 2)),
        member("namespaces", text_list(&["*", "$self", "", "default"], 2)),
        member(
            "nonResourceURLs",
            text_list(&["*", "/", "/healthz", "/api/*", "version"], 2),
        ),
    ])
}

fn config_document() -> BoxedStrategy<Value> {
    let top = object(vec![
        member(
            "file_source",
            object(vec![
                member(
                    "cluster",
                    text_value(&["podward_files", "files", "c", "d", ""]),
                ),
                member(
                    "authority",
                    text_value(&["podward-files", "x", "y", "z", ""]),
                ),
                member("timeout_ms", interval_value()),
            ]),
        ),
        member("refresh_interval_ms", interval_value()),
        member("startup_wait_ms", interval_value()),
        member(
            "token",
            object(vec![
                member("path", file_path_value()),
                member(
                    "client_authorization",
                    text_value(&[
                        "replace", "preserve", "replace", "preserve", "keep", "Replace",
                    ]),
                ),
                member("expiry_skew_seconds", interval_value()),
            ]),
        ),
        member(
            "identity_headers",
            vec(identity_header_value(), 0..4)
                .prop_map(Value::Array)
                .boxed(),
        ),
        member("user_agent", any::<bool>().prop_map(Value::from).boxed()),
        member(
            "accept_hosts",
            text_list(&["localhost", "*", "127.0.0.1", "[::1]"], 3),
        ),
        member(
            "allow_impersonation",
            any::<bool>().prop_map(Value::from).boxed(),
        ),
        member("namespace_env", text_value(&["POD_NAMESPACE", "NS", ""])),
        member(
            "policy",
            object(vec![
                member(
                    "preset",
                    text_value(&["kubectl-proxy", "read-only", "own-namespace", "strict", ""]),
                ),
                member("default_action", text_value(&["allow", "deny", "permit"])),
                member(
                    "rules",
                    vec(rule_value(), 0..3).prop_map(Value::Array).boxed(),
                ),
            ]),
        ),
    ]);
    prop_oneof![30 => top, 1 => any_json()].boxed()
}

/// The value at a configuration error's field path (`policy.rules[2].verbs`).
/// `Err(parent)` when all but the last field exists, and `parent` is the
/// object the last one is missing from.
fn lookup<'v>(document: &'v Value, path: &str) -> Result<&'v Value, Option<&'v Value>> {
    let mut current = document;
    let components: Vec<&str> = path.split('.').collect();
    for (position, component) in components.iter().enumerate() {
        let last = position + 1 == components.len();
        let (name, indices) = component.split_once('[').unwrap_or((component, ""));
        match current.get(name) {
            Some(value) => current = value,
            None if last && indices.is_empty() => return Err(Some(current)),
            None => return Err(None),
        }
        for index in indices.split('[').filter(|i| !i.is_empty()) {
            let index: usize = index.trim_end_matches(']').parse().map_err(|_| None)?;
            current = current.get(index).ok_or(None)?;
        }
    }
    Ok(current)
}

/// Whether every object the configuration reads has only known fields.
fn only_known_fields(document: &Value) -> bool {
    fn known(value: Option<&Value>, fields: &[&str]) -> bool {
        match value.and_then(Value::as_object) {
            Some(object) => object.keys().all(|key| fields.contains(&key.as_str())),
            None => true,
        }
    }
    fn items(value: Option<&Value>) -> Vec<&Value> {
        value
            .and_then(Value::as_array)
            .map(|items| items.iter().collect())
            .unwrap_or_default()
    }
    known(Some(document), TOP_FIELDS)
        && known(document.get("file_source"), FILE_SOURCE_FIELDS)
        && known(document.get("token"), TOKEN_FIELDS)
        && items(document.get("identity_headers"))
            .into_iter()
            .all(|item| known(Some(item), HEADER_FIELDS))
        && known(document.get("policy"), POLICY_FIELDS)
        && items(document.get("policy").and_then(|p| p.get("rules")))
            .into_iter()
            .all(|rule| known(Some(rule), RULE_FIELDS))
}

fn config_text() -> BoxedStrategy<Vec<u8>> {
    let generated = (
        config_document(),
        any::<bool>(),
        mutations(b"{}[]\":,0 \nax\\", 6),
    )
        .prop_map(|(document, pretty, edits)| {
            let text = if pretty {
                serde_json::to_vec_pretty(&document)
            } else {
                serde_json::to_vec(&document)
            };
            mutate(text.unwrap(), &edits)
        });
    prop_oneof![40 => generated, 1 => deeply_nested()].boxed()
}

/// JSON nested past serde_json's recursion limit, or just under it.
fn deeply_nested() -> BoxedStrategy<Vec<u8>> {
    (
        strings(&["", r#"{"policy":{"rules":"#, r#"{"identity_headers":"#]),
        prop_oneof![1usize..200, 200usize..20_000],
        any::<bool>(),
    )
        .prop_map(|(prefix, depth, objects)| {
            let (open, close) = if objects {
                (r#"{"a":"#, "}")
            } else {
                ("[", "]")
            };
            let suffix = "}".repeat(prefix.matches('{').count());
            [prefix, open.repeat(depth), close.repeat(depth), suffix]
                .concat()
                .into_bytes()
        })
        .boxed()
}

#[test]
fn config_errors_name_a_field_of_the_document() {
    let tally = fuzz("config", 6000, config_text(), |text, tally| {
        let document = if text.iter().all(u8::is_ascii_whitespace) {
            Ok(Value::Object(Map::new()))
        } else {
            serde_json::from_slice::<Value>(&text)
        };
        match Config::parse(&text) {
            Ok(config) => {
                let document = document.expect("an accepted configuration is JSON");
                prop_assert!(only_known_fields(&document), "unknown field accepted");
                for interval in [
                    config.refresh_interval_ms,
                    config.startup_wait_ms,
                    config.file_source.timeout_ms,
                ] {
                    prop_assert!((10..=3_600_000).contains(&interval));
                }
                let names: Vec<&str> = config
                    .identity_headers
                    .iter()
                    .map(|h| h.header.as_str())
                    .collect();
                for (i, name) in names.iter().enumerate() {
                    prop_assert!(!name.is_empty() && *name == name.to_ascii_lowercase());
                    prop_assert!(!names[..i].contains(name), "{} listed twice", name);
                }
                prop_assert!(!config.accept_hosts.is_empty());
                prop_assert_eq!(
                    config.files()[0],
                    (FileRole::Token, config.token.path.as_str())
                );
                tally.hit("accepted");
            }
            Err(error) => {
                prop_assert!(!error.problem.is_empty());
                let quoted = format!("`{}`", error.field);
                prop_assert!(error.to_string().contains(&quoted));
                match document {
                    Err(_) => {
                        prop_assert_eq!(error.field.as_str(), "(top level)");
                        tally.hit("refused: not JSON");
                    }
                    Ok(_) if error.field == "(top level)" => tally.hit("refused: top level"),
                    Ok(document) => {
                        let found = lookup(&document, &error.field);
                        let missing_field_of_an_object = matches!(
                            found,
                            Err(Some(parent)) if parent.is_object()
                        );
                        prop_assert!(
                            found.is_ok() || missing_field_of_an_object,
                            "{} names no field of {}",
                            error,
                            document
                        );
                        tally.hit("refused: a field");
                    }
                }
            }
        }
        Ok(())
    });
    tally.at_least("accepted", 1);
    tally.at_least("refused: a field", 30);
}

/// A configuration that is valid in every field, and must be read as written.
fn valid_config() -> BoxedStrategy<Value> {
    let header = (
        "x-[a-z0-9-]{1,6}",
        prop_oneof![
            "[A-Z_]{1,8}".prop_map(|env| serde_json::json!({ "env": env })),
            // Under a prefix file_source.directories maps by default.
            (
                "/podinfo(/[a-z0-9_-]{1,6}){1,2}",
                prop::option::of("[a-z]{1,4}")
            )
                .prop_map(|(file, key)| {
                    match key {
                        Some(key) => serde_json::json!({ "file": file, "key": key }),
                        None => serde_json::json!({ "file": file, "format": "text" }),
                    }
                }),
        ],
        any::<bool>(),
    )
        .prop_map(|(name, mut source, upper)| {
            let name = if upper {
                name.to_ascii_uppercase()
            } else {
                name
            };
            source["header"] = Value::from(name);
            source
        });
    let rule = (any::<bool>(), any::<bool>(), vec(select(VERBS.as_slice()), 1..3)).prop_map(
        |(allow, resource_rule, verbs)| {
            let action = if allow { "allow" } else { "deny" };
            if resource_rule {
                let verbs: Vec<_> = verbs.iter().filter(|v| !matches!(**v, "head" | "post" | "put" | "fetch")).collect();
                serde_json::json!({ "action": action, "verbs": if verbs.is_empty() { vec![&"*"] } else { verbs },
                    "apiGroups": [""], "resources": ["pods"], "namespaces": ["$self"] })
            } else {
                let verbs: Vec<_> = verbs.iter().filter(|v| matches!(**v, "*" | "get" | "head" | "post" | "put" | "patch" | "delete")).collect();
                serde_json::json!({ "action": action, "verbs": if verbs.is_empty() { vec![&"get"] } else { verbs },
                    "nonResourceURLs": ["/healthz", "/api/*"] })
            }
        },
    );
    (
        10u64..=3_600_000,
        10u64..=3_600_000,
        "/serviceaccount(/[a-z0-9_-]{1,6}){1,2}",
        0u64..=3600,
        vec(header, 0..5),
        vec(select(&["localhost", "*", "example.com"][..]), 1..3),
        prop::option::of(select(&["kubectl-proxy", "read-only", "own-namespace"][..])),
        vec(rule, 0..4),
    )
        .prop_map(
            |(refresh, timeout, path, skew, headers, hosts, preset, rules)| {
                // Header names must be unique without regard to case.
                let mut seen = Vec::new();
                let headers: Vec<Value> = headers
                    .into_iter()
                    .filter(|h| {
                        let name = h["header"].as_str().unwrap().to_ascii_lowercase();
                        !seen.contains(&name) && {
                            seen.push(name);
                            true
                        }
                    })
                    .collect();
                let rules: Vec<Value> = rules
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut rule)| {
                        rule["name"] = Value::from(format!("rule-{i}"));
                        rule
                    })
                    .collect();
                let mut policy = serde_json::json!({ "rules": rules });
                if let Some(preset) = preset {
                    policy["preset"] = Value::from(preset);
                }
                serde_json::json!({
                    "refresh_interval_ms": refresh,
                    "file_source": { "timeout_ms": timeout },
                    "token": { "path": path, "expiry_skew_seconds": skew,
                               "client_authorization": "preserve" },
                    "identity_headers": headers,
                    "accept_hosts": hosts,
                    "policy": policy,
                })
            },
        )
        .boxed()
}

#[test]
fn config_reads_valid_documents_as_written() {
    let all_fields = [
        TOP_FIELDS,
        FILE_SOURCE_FIELDS,
        TOKEN_FIELDS,
        HEADER_FIELDS,
        POLICY_FIELDS,
        RULE_FIELDS,
    ]
    .concat();
    let unknown_key = "[a-zA-Z_]{1,10}".prop_map(move |k| {
        if all_fields.contains(&k.as_str()) {
            k + "x"
        } else {
            k
        }
    });
    let tally = fuzz(
        "config_valid",
        2000,
        (
            valid_config(),
            prop::option::weighted(0.3, (any::<Index>(), unknown_key)),
        ),
        |(document, unknown), tally| {
            if let Some((at, key)) = unknown {
                tally.hit("unknown field");
                return unknown_field_is_refused(document, &at, &key);
            }
            config_read_as_written(document)
        },
    );
    tally.at_least("unknown field", 20);
}

/// One unknown field, in any object of a valid configuration, is refused, and
/// the error names that object and the field.
fn unknown_field_is_refused(mut document: Value, at: &Index, key: &str) -> TestCaseResult {
    let mut places = vec![
        ("(top level)".to_string(), String::new()),
        ("file_source".into(), "/file_source".into()),
        ("token".into(), "/token".into()),
        ("policy".into(), "/policy".into()),
    ];
    for i in 0..document["identity_headers"].as_array().unwrap().len() {
        places.push((
            format!("identity_headers[{i}]"),
            format!("/identity_headers/{i}"),
        ));
    }
    for i in 0..document["policy"]["rules"].as_array().unwrap().len() {
        places.push((format!("policy.rules[{i}]"), format!("/policy/rules/{i}")));
    }
    let (field, pointer) = &places[at.index(places.len())];
    let object = document.pointer_mut(pointer).unwrap();
    object
        .as_object_mut()
        .unwrap()
        .insert(key.to_string(), Value::from(1));
    let error = Config::parse(&serde_json::to_vec(&document).unwrap());
    prop_assert!(
        error.is_err(),
        "unknown field {:?} in {} accepted",
        key,
        field
    );
    let error = error.unwrap_err();
    prop_assert_eq!(&error.field, field);
    let named = format!("unknown field {key:?}");
    prop_assert!(error.problem.starts_with(&named), "{}", error);
    Ok(())
}

fn config_read_as_written(document: Value) -> TestCaseResult {
    let text = serde_json::to_vec(&document).unwrap();
    let config = Config::parse(&text);
    prop_assert!(config.is_ok(), "{:?}", config.err());
    let config = config.unwrap();
    prop_assert_eq!(
        Some(config.refresh_interval_ms),
        document["refresh_interval_ms"].as_u64()
    );
    prop_assert_eq!(
        Some(config.file_source.timeout_ms),
        document["file_source"]["timeout_ms"].as_u64()
    );
    prop_assert_eq!(
        Some(config.token.path.as_str()),
        document["token"]["path"].as_str()
    );
    prop_assert_eq!(
        Some(config.token.expiry_skew_seconds),
        document["token"]["expiry_skew_seconds"].as_u64()
    );
    let headers = document["identity_headers"].as_array().unwrap();
    prop_assert_eq!(config.identity_headers.len(), headers.len());
    for (read, written) in config.identity_headers.iter().zip(headers) {
        prop_assert_eq!(
            read.header.clone(),
            written["header"].as_str().unwrap().to_ascii_lowercase()
        );
        let source_ok = match &read.source {
            HeaderSource::Env(env) => written["env"].as_str() == Some(env.as_str()),
            HeaderSource::File { path, format } => {
                written["file"].as_str() == Some(path.as_str())
                    && match format {
                        FileFormat::MapKey(key) => written["key"].as_str() == Some(key.as_str()),
                        FileFormat::Text => written["format"] == "text",
                        FileFormat::Map => false,
                    }
            }
        };
        prop_assert!(source_ok, "{:?} from {}", read, written);
    }
    let hosts: Vec<&str> = document["accept_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    prop_assert_eq!(config.accept_hosts, hosts);
    Ok(())
}

// ---------------------------------------------------------------------------
// policy: decisions are deterministic, and the presets keep their promises.

fn policy_config() -> BoxedStrategy<PolicyConfig> {
    let rule = (
        ("[a-c]{1,2}", prop::bool::weighted(0.25)),
        any::<bool>(),
        any::<bool>(),
        vec(select(VERBS.as_slice()), 1..3),
        vec(select(&["", "*", "apps", "x"][..]), 1..3),
        vec(
            select(
                &[
                    "*",
                    "pods",
                    "pods/exec",
                    "pods/*",
                    "*/scale",
                    "namespaces",
                    "x",
                    "x/status",
                ][..],
            ),
            1..3,
        ),
        vec(select(&["x", "default", "team-a"][..]), 0..2),
        vec(select(&["*", "$self", "", "default", "team-a"][..]), 0..2),
        vec(
            select(&["*", "/", "/api", "/api/*", "/version", "/healthz*"][..]),
            1..3,
        ),
    )
        .prop_map(
            |(
                (name, dry_run),
                allow,
                resource_rule,
                verbs,
                groups,
                resources,
                names,
                namespaces,
                urls,
            )| {
                let list = |items: Vec<&str>| items.into_iter().map(String::from).collect();
                Rule {
                    name,
                    action: if allow { Effect::Allow } else { Effect::Deny },
                    // An allow rule in dry-run is refused at build.
                    dry_run,
                    verbs: list(verbs),
                    api_groups: if resource_rule {
                        list(groups)
                    } else {
                        Vec::new()
                    },
                    resources: if resource_rule {
                        list(resources)
                    } else {
                        Vec::new()
                    },
                    resource_names: if resource_rule {
                        list(names)
                    } else {
                        Vec::new()
                    },
                    namespaces: if resource_rule {
                        list(namespaces)
                    } else {
                        Vec::new()
                    },
                    non_resource_urls: if resource_rule {
                        Vec::new()
                    } else {
                        list(urls)
                    },
                }
            },
        );
    (
        prop::option::of(select(PRESETS).prop_map(|(name, _)| name.to_string())),
        vec(rule, 0..4),
        prop::option::of(prop_oneof![Just(Effect::Allow), Just(Effect::Deny)]),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(preset, rules, default_action, dry_run)| PolicyConfig {
            preset,
            rules,
            default_action,
            dry_run,
        })
        .boxed()
}

const SELF_REVIEWS: &[&str] = &[
    "selfsubjectaccessreviews",
    "selfsubjectrulesreviews",
    "selfsubjectreviews",
];

#[test]
fn policy_decisions_are_deterministic_and_presets_hold() {
    let presets: Vec<(&str, Policy)> = PRESETS
        .iter()
        .map(|(name, _)| {
            let config = PolicyConfig {
                preset: Some(name.to_string()),
                ..PolicyConfig::default()
            };
            (*name, Policy::build(&config).unwrap())
        })
        .collect();
    let tally = fuzz(
        "policy",
        5000,
        (
            policy_config(),
            method(),
            request_target(),
            strings(&["team-a", "default", "x", ""]),
        ),
        |(config, method, target, own), tally| {
            let Ok(info) = classify(&method, &target) else {
                return Ok(());
            };
            tally.hit("classified");
            if let Ok(policy) = Policy::build(&config) {
                tally.hit("built");
                let first = policy.decide(&info, &own);
                let copy = info.clone();
                prop_assert_eq!(&first, &policy.decide(&copy, &own));
                let rebuilt = Policy::build(&config).unwrap();
                let again = rebuilt.decide(&info, &own);
                prop_assert_eq!((first.effect, first.rule), (again.effect, again.rule));
                prop_assert!(
                    policy.rule_refs().any(|r| r == first.rule)
                        || first.rule.as_str().ends_with("/default")
                );
                // Dry-run: named only where the enforced decision allows and the
                // candidate denies, by the candidate's rule; nothing else changes.
                let candidate = policy.candidate(&info, &own);
                match first.dry_run {
                    Some(rule) => {
                        tally.hit("dry-run denial");
                        prop_assert_eq!(first.effect, Effect::Allow);
                        prop_assert_eq!((candidate.effect, candidate.rule), (Effect::Deny, rule));
                        prop_assert!(policy.dry_run_refs().any(|r| r == rule));
                    }
                    None if !config.dry_run => prop_assert!(
                        candidate.effect == first.effect || first.effect == Effect::Deny
                    ),
                    None => {}
                }
                if !policy.has_dry_run() {
                    prop_assert_eq!(
                        (candidate.effect, candidate.rule),
                        (first.effect, first.rule)
                    );
                }
                if config.dry_run {
                    let baseline = &presets[0].1;
                    prop_assert_eq!(presets[0].0, "kubectl-proxy");
                    let enforced = baseline.decide(&info, &own);
                    prop_assert_eq!((first.effect, first.rule), (enforced.effect, enforced.rule));
                }
            } else if config
                .rules
                .iter()
                .any(|r| r.dry_run && r.action == Effect::Allow)
            {
                tally.hit("allow in dry-run refused");
            }
            let write = matches!(
                info.verb,
                "create" | "update" | "patch" | "delete" | "deletecollection"
            );
            for (name, preset) in &presets {
                let effect = preset.decide(&info, &own).effect;
                match *name {
                    "kubectl-proxy" => prop_assert!(
                        effect == Effect::Deny
                            || !(info.is_resource_request
                                && info.api_group.is_empty()
                                && info.resource == "pods"
                                && matches!(info.subresource, "exec" | "attach"))
                    ),
                    "read-only" => prop_assert!(
                        effect == Effect::Deny
                            || matches!(info.verb, "get" | "list" | "watch" | "head")
                    ),
                    "own-namespace" if effect == Effect::Allow && info.is_resource_request => {
                        prop_assert!(
                            info.namespace == own
                                || info.namespace.is_empty()
                                || SELF_REVIEWS.contains(&info.resource),
                            "{:?}",
                            info
                        );
                        prop_assert!(
                            !(write && info.api_group.is_empty() && info.resource == "namespaces"),
                            "{:?}",
                            info
                        );
                        // Anything in the pod's own namespace, cluster-wide only reads.
                        let read = matches!(info.verb, "get" | "list" | "watch");
                        prop_assert!(
                            (!own.is_empty() && info.namespace == own)
                                || (info.namespace.is_empty() && read)
                                || SELF_REVIEWS.contains(&info.resource),
                            "own namespace {:?} may {} {:?}",
                            own,
                            info.verb,
                            info
                        );
                    }
                    _ => {}
                }
                if effect == Effect::Allow {
                    tally.hit("allowed by a preset");
                }
            }
            Ok(())
        },
    );
    tally.at_least("built", 10);
    tally.at_least("allowed by a preset", 10);
    tally.at_least("dry-run denial", 1);
    tally.at_least("allow in dry-run refused", 2);
}

// ---------------------------------------------------------------------------
// Regressions: the minimal failing inputs the harnesses above found.

/// FOUND AND FIXED (src/token.rs, `Token::freshness`): `(exp - iat) * 80`
/// overflowed for an `exp` past `u64::MAX / 80` (about year 7.3e9): a panic in
/// debug builds, a wrapped, too-early renewal point in release. Minimal input
/// from `token_freshness_follows_the_claims`.
#[test]
fn regression_freshness_with_a_far_off_exp_does_not_overflow() {
    let exp = u64::MAX - 1;
    let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp},"iat":1700000000}}"#));
    let token = Token::parse(format!("e30.{payload}.sig").as_bytes()).unwrap();
    assert_eq!(token.freshness(1_700_000_000, 0), Freshness::Fresh);
    assert_eq!(
        token.freshness(exp - 10, 0),
        Freshness::Stale { expires_in_s: 10 }
    );
}

/// Found by fuzzing, fixed in `policy::matches`: when the pod's namespace is unknown
/// (no `kubernetes.io` claim in the token and no `namespace_env` variable),
/// `identity.namespace` is `""`, and `$self` then matches every request without
/// a namespace: cluster-scoped ones and lists across all namespaces. The
/// `own-namespace` preset's `"verbs": ["*"]` rule then allows deleting nodes,
/// creating cluster role bindings and listing every secret. Cause:
/// `policy::matches` compares `request.namespace == self_namespace` without
/// refusing an empty `self_namespace`. Found by
/// `policy_decisions_are_deterministic_and_presets_hold` (minimal input:
/// `POST /api/v1/api` with own namespace `""`).
#[test]
fn regression_empty_self_namespace_matches_cluster_scoped_requests() {
    let config = PolicyConfig {
        preset: Some("own-namespace".into()),
        ..PolicyConfig::default()
    };
    let policy = Policy::build(&config).unwrap();
    for (method, path) in [
        ("DELETE", "/api/v1/nodes/n1"),
        (
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        ),
        ("GET", "/api/v1/secrets"),
    ] {
        let request = classify(method, path).unwrap();
        let decision = policy.decide(&request, "");
        assert_eq!(
            decision.effect,
            Effect::Deny,
            "{method} {path} allowed by {}",
            decision.rule
        );
    }
}
