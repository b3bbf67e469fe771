//! The Kubernetes `Status` object podward answers with when it does not forward
//! a request. kubectl and client-go print its `message`, so every reply podward
//! makes itself reads like one from the API server.

use crate::prelude::*;
use core::fmt;
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u32,
    /// Empty for a success.
    pub reason: &'static str,
    pub message: String,
    pub details: Details,
}

/// `StatusDetails`: only the fields podward can fill in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    pub name: String,
    pub group: String,
    pub kind: String,
    pub retry_after_seconds: Option<u32>,
}

impl Status {
    /// A `Status` with `status: Success`, as the API server answers a delete.
    pub fn success(message: String) -> Status {
        Status {
            code: 200,
            reason: "",
            message,
            details: Details::default(),
        }
    }

    pub fn forbidden(message: String, details: Details) -> Status {
        Status {
            code: 403,
            reason: "Forbidden",
            message,
            details,
        }
    }

    pub fn bad_request(message: String) -> Status {
        Status {
            code: 400,
            reason: "BadRequest",
            message,
            details: Details::default(),
        }
    }

    /// 503 with a retry hint: the cause (no token yet, token expired) is
    /// expected to clear once the kubelet writes a fresh token.
    pub fn unavailable(message: String, retry_after_seconds: u32) -> Status {
        Status {
            code: 503,
            reason: "ServiceUnavailable",
            message,
            details: Details {
                retry_after_seconds: Some(retry_after_seconds),
                ..Details::default()
            },
        }
    }

    /// The reply as a host sends it: code, headers and body.
    pub fn local_reply(&self) -> LocalReply {
        let mut headers = vec![(&b"content-type"[..], b"application/json".to_vec())];
        if let Some(seconds) = self.details.retry_after_seconds {
            headers.push((b"retry-after", seconds.to_string().into_bytes()));
        }
        LocalReply {
            code: self.code,
            headers,
            body: self.to_json(),
        }
    }

    /// Field order and omissions as the API server writes them.
    pub fn to_json(&self) -> String {
        let mut details = String::new();
        let fields = [
            ("name", &self.details.name),
            ("group", &self.details.group),
            ("kind", &self.details.kind),
        ];
        for (key, value) in fields.iter().filter(|(_, value)| !value.is_empty()) {
            details.push_str(&format!(",\"{key}\":{}", json_string(value)));
        }
        if let Some(seconds) = self.details.retry_after_seconds {
            details.push_str(&format!(",\"retryAfterSeconds\":{seconds}"));
        }
        let details = match details.strip_prefix(',') {
            Some(fields) => format!(",\"details\":{{{fields}}}"),
            None => String::new(),
        };
        let (status, reason) = if self.reason.is_empty() {
            ("Success", String::new())
        } else {
            ("Failure", format!(",\"reason\":\"{}\"", self.reason))
        };
        format!(
            "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"{status}\",\
             \"message\":{}{reason}{details},\"code\":{}}}",
            json_string(&self.message),
            self.code
        )
    }
}

/// A reply podward sends itself, ready for the host: a Status as JSON, with
/// the `retry-after` header a 503 carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub code: u32,
    pub headers: Vec<(&'static [u8], Vec<u8>)>,
    pub body: String,
}

/// `text` as a JSON string literal, quotes and escapes included.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_json_string(&mut out, text);
    out
}

/// Appends `text` as a JSON string literal (RFC 8259 escapes). On the
/// per-request path, so it writes in place rather than through serde.
pub fn push_json_string(out: &mut String, text: &str) {
    // Writing to a String cannot fail.
    let _ = write_json_string(out, text);
}

/// `text` quoted for a message, as Go's `%q` would for the names the API
/// server shows: `"web-0"`, with quotes, backslashes and controls escaped.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_json_string(f, self.0)
    }
}

fn write_json_string(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.write_char('"')?;
    // Runs of characters that need no escape are written whole.
    let mut plain_from = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.write_str(text.get(plain_from..at).unwrap_or_default())?;
        plain_from = at + 1;
        if escape.is_empty() {
            out.write_str("\\u00")?;
            out.write_char(char::from(HEX[usize::from(byte >> 4)]))?;
            out.write_char(char::from(HEX[usize::from(byte & 0xf)]))?;
        } else {
            out.write_str(escape)?;
        }
    }
    out.write_str(text.get(plain_from..).unwrap_or_default())?;
    out.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn forbidden_matches_the_api_server_shape() {
        let status = Status::forbidden(
            "pods \"web\" is forbidden: \"quoted\"".into(),
            Details {
                name: "web".into(),
                kind: "pods".into(),
                ..Details::default()
            },
        );
        let body: Value = serde_json::from_str(&status.to_json()).unwrap();
        assert_eq!(
            body,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "pods \"web\" is forbidden: \"quoted\"", "reason": "Forbidden",
                "details": {"name": "web", "kind": "pods"}, "code": 403
            })
        );
    }

    #[test]
    fn strings_are_escaped_as_json_requires() {
        for text in [
            "plain",
            "quote \" and \\ back",
            "line\nbreak\ttab\r",
            "\u{1}\u{1f}",
            "caf\u{e9} \u{1F600}",
            "",
        ] {
            let encoded = json_string(text);
            assert_eq!(
                serde_json::from_str::<String>(&encoded).unwrap(),
                text,
                "{encoded}"
            );
            assert_eq!(encoded, serde_json::to_string(text).unwrap());
        }
    }

    #[test]
    fn unavailable_carries_a_retry_hint_and_no_empty_details() {
        let body: Value =
            serde_json::from_str(&Status::unavailable("no token".into(), 1).to_json()).unwrap();
        assert_eq!(body["code"], 503);
        assert_eq!(body["reason"], "ServiceUnavailable");
        assert_eq!(body["details"], json!({"retryAfterSeconds": 1}));
        let body: Value =
            serde_json::from_str(&Status::bad_request("bad path".into()).to_json()).unwrap();
        assert_eq!(body.get("details"), None);
        assert_eq!(body["code"], 400);
    }

    #[test]
    fn a_local_reply_is_json_with_the_retry_hint_as_a_header() {
        let reply = Status::unavailable("no token".into(), 1).local_reply();
        assert_eq!(reply.code, 503);
        assert_eq!(
            reply.headers,
            [
                (&b"content-type"[..], b"application/json".to_vec()),
                (&b"retry-after"[..], b"1".to_vec())
            ]
        );
        let reply = Status::bad_request("bad path".into()).local_reply();
        assert_eq!(reply.headers.len(), 1);
        assert!(reply.body.contains("bad path"));
    }
}
