//! Header names and values: what may be sent, and the one reversible encoding
//! podward uses for anything else.
//!
//! Encoding: every byte outside visible ASCII (`!`..`~`), and `%` itself, is
//! percent-encoded (RFC 3986 `%XX`, of the UTF-8 bytes). Plain values such as
//! `web` or `10.0.0.7` are sent unchanged; `hello world` becomes `hello%20world`;
//! any standard percent-decoder restores the original bytes.
//!
//! A whole map (all labels, all annotations) is one header in the W3C
//! `baggage` style: `key=value` entries joined by `,`, keys sorted, with `,`,
//! `;`, `=`, `"` and `\` in keys and values percent-encoded as well.

use crate::downward::PodMap;
use percent_encoding::{percent_encode, AsciiSet, CONTROLS};
use std::borrow::Cow;

const NOT_VISIBLE_ASCII: &AsciiSet = &CONTROLS.add(b' ').add(b'%');
const MAP_DELIMITERS: &AsciiSet = &NOT_VISIBLE_ASCII
    .add(b',')
    .add(b';')
    .add(b'=')
    .add(b'"')
    .add(b'\\');

/// A header value that is safe to send, encoded only if it has to be.
pub fn encode_value(value: &[u8]) -> Cow<'_, str> {
    percent_encode(value, NOT_VISIBLE_ASCII).into()
}

/// All entries of a map as one header value.
pub fn encode_map(map: &PodMap) -> String {
    let mut out = String::new();
    for (key, value) in map {
        if !out.is_empty() {
            out.push(',');
        }
        out.extend(percent_encode(key.as_bytes(), MAP_DELIMITERS));
        out.push('=');
        out.extend(percent_encode(value, MAP_DELIMITERS));
    }
    out
}

/// A request's headers as the host hands them over: lower-case names, in
/// order, repeated names kept. podward reads them once and writes them back
/// once (see `filter::Rewrite`), so a request costs two host calls however
/// many headers change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList(pub Vec<(String, String)>);

impl HeaderList {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Header names podward must never set from configuration: they would break
/// the request or let the identity headers overwrite routing or credentials.
const RESERVED_NAMES: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "keep-alive",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
];

/// Why a configured header name cannot be used, if it cannot.
pub fn header_name_problem(name: &str) -> Option<&'static str> {
    // RFC 9110 token characters, lower case as HTTP/2 requires (config lowercases names first).
    let is_token_char =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$&'*+-.^_`|~".contains(&b);
    if name.is_empty() {
        Some("is empty")
    } else if name.starts_with(':') {
        Some("is a pseudo-header")
    } else if !name.bytes().all(is_token_char) {
        Some("has characters a header name cannot have")
    } else if RESERVED_NAMES.contains(&name) || name.starts_with("impersonate-") {
        Some("is reserved: podward or the API server gives it a meaning")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn percent_decode(text: &str) -> Vec<u8> {
        percent_encoding::percent_decode_str(text).collect()
    }

    #[test]
    fn values_are_encoded_only_when_they_must_be() {
        let cases: &[(&[u8], &str)] = &[
            (b"web", "web"),
            (b"10.244.0.7", "10.244.0.7"),
            (b"250m", "250m"),
            (b"a/b:c=d,e", "a/b:c=d,e"),
            (b"", ""),
            (b"hello world", "hello%20world"),
            (b"100%", "100%25"),
            (b"line1\nline2", "line1%0Aline2"),
            (b"tab\there", "tab%09here"),
            (b"\r\nX-Injected: 1", "%0D%0AX-Injected:%201"),
            ("caf\u{e9}".as_bytes(), "caf%C3%A9"),
            (b"\x00\x7f\xff", "%00%7F%FF"),
            (b" padded ", "%20padded%20"),
        ];
        for (raw, encoded) in cases {
            assert_eq!(encode_value(raw), *encoded, "{raw:?}");
            assert_eq!(percent_decode(encoded), *raw, "round trip of {raw:?}");
        }
    }

    #[test]
    fn maps_become_one_reversible_header() {
        let map: PodMap = [
            ("app", &b"web"[..]),
            ("example.com/note", b"a=b, c;d \"q\" \\"),
            ("tier", b"front\nend"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_vec()))
        .collect();
        let header = encode_map(&map);
        assert_eq!(
            header,
            "app=web,example.com/note=a%3Db%2C%20c%3Bd%20%22q%22%20%5C,tier=front%0Aend"
        );
        let decoded: PodMap = header
            .split(',')
            .map(|entry| {
                let (k, v) = entry.split_once('=').unwrap();
                (
                    String::from_utf8(percent_decode(k)).unwrap(),
                    percent_decode(v),
                )
            })
            .collect();
        assert_eq!(decoded, map);
        assert_eq!(encode_map(&PodMap::new()), "");
    }

    #[test]
    fn a_header_list_answers_with_the_first_value() {
        let list = HeaderList(
            [("a", "1"), ("b", "2"), ("a", "3")]
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .to_vec(),
        );
        assert_eq!(list.get("a"), Some("1"));
        assert_eq!(list.get("missing"), None);
    }

    #[test]
    fn header_names_are_checked() {
        for good in ["x-pod-name", "x-k8s-pod_ip", "podward-labels"] {
            assert_eq!(header_name_problem(good), None, "{good}");
        }
        let bad = [
            ("", "is empty"),
            (":authority", "is a pseudo-header"),
            ("X-Pod-Name", "has characters a header name cannot have"),
            ("x pod", "has characters a header name cannot have"),
            ("x-pod\n", "has characters a header name cannot have"),
            ("x-pod:", "has characters a header name cannot have"),
            (
                "authorization",
                "is reserved: podward or the API server gives it a meaning",
            ),
            (
                "host",
                "is reserved: podward or the API server gives it a meaning",
            ),
            (
                "impersonate-user",
                "is reserved: podward or the API server gives it a meaning",
            ),
        ];
        for (name, problem) in bad {
            assert_eq!(header_name_problem(name), Some(problem), "{name:?}");
        }
    }
}
