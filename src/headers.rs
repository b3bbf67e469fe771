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
use crate::prelude::*;
use alloc::borrow::Cow;
use core::ops::Range;

/// Encoded in map keys and values besides what [`encode_value`] encodes.
const MAP_DELIMITERS: &[u8] = b",;=\"\\";

/// A header value that is safe to send, encoded only if it has to be.
pub fn encode_value(value: &[u8]) -> Cow<'_, str> {
    match core::str::from_utf8(value) {
        Ok(plain) if !value.iter().any(|&b| must_encode(b, b"")) => Cow::Borrowed(plain),
        _ => {
            let mut out = String::with_capacity(value.len() * 3);
            push_encoded(&mut out, value, b"");
            Cow::Owned(out)
        }
    }
}

/// All entries of a map as one header value.
pub fn encode_map(map: &PodMap) -> String {
    let mut out = String::new();
    for (key, value) in map {
        if !out.is_empty() {
            out.push(',');
        }
        push_encoded(&mut out, key.as_bytes(), MAP_DELIMITERS);
        out.push('=');
        push_encoded(&mut out, value, MAP_DELIMITERS);
    }
    out
}

fn must_encode(byte: u8, also: &[u8]) -> bool {
    !byte.is_ascii_graphic() || byte == b'%' || also.contains(&byte)
}

/// Appends `bytes` with every byte [`must_encode`] says as `%XX`.
fn push_encoded(out: &mut String, bytes: &[u8], also: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in bytes {
        if must_encode(byte, also) {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push(char::from(byte));
        }
    }
}

/// A request's headers as the host hands them over: lower-case names, in
/// order, repeated names kept, values as raw bytes (Envoy passes on bytes a
/// client sent that are not UTF-8). One buffer holds every name and value, so
/// reading a request's headers costs two allocations however many there are.
#[derive(Debug, Clone, Default)]
pub struct HeaderList {
    bytes: Vec<u8>,
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl HeaderList {
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> HeaderList {
        let mut list = HeaderList::default();
        for (name, value) in pairs {
            list.push(name, value);
        }
        list
    }

    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let name_at = self.bytes.len();
        self.bytes.extend_from_slice(name);
        let value_at = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.entries
            .push((name_at..value_at, value_at..self.bytes.len()));
    }

    /// Reads proxy-wasm's serialisation of a header map (see
    /// [`encode_proxy_wasm_map`]) in place. `None` if it is malformed.
    pub fn from_proxy_wasm_map(bytes: Vec<u8>) -> Option<HeaderList> {
        let mut list = HeaderList::default();
        list.read_proxy_wasm_map(|buffer| {
            *buffer = bytes;
            true
        })
        .then_some(list)
    }

    /// Empties the list; its storage stays for the next request.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    /// Replaces the list with the map that `write` puts into the list's own
    /// buffer (emptied first) in proxy-wasm's serialisation: a host writes
    /// straight into it, so that reading a request's headers allocates nothing
    /// once the buffer has grown to fit. False, and the list empty, if `write`
    /// fails or the bytes are malformed.
    pub fn read_proxy_wasm_map(&mut self, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        self.clear();
        if write(&mut self.bytes) && self.index_proxy_wasm_map().is_some() {
            return true;
        }
        self.clear();
        false
    }

    fn index_proxy_wasm_map(&mut self) -> Option<()> {
        let bytes = &self.bytes;
        if bytes.is_empty() {
            return Some(());
        }
        let word = |at: usize| -> Option<usize> {
            let word = bytes.get(at..at.checked_add(4)?)?;
            Some(u32::from_le_bytes(word.try_into().ok()?) as usize)
        };
        let count = word(0)?;
        let mut data_at = count.checked_mul(8)?.checked_add(4)?;
        self.entries.reserve(count.min(bytes.len() / 10));
        for index in 0..count {
            let sizes_at = 4 + index * 8;
            let name = data_at..data_at.checked_add(word(sizes_at)?)?;
            let value_at = name.end.checked_add(1)?;
            let value = value_at..value_at.checked_add(word(sizes_at + 4)?)?;
            data_at = value.end.checked_add(1)?;
            if data_at > bytes.len() {
                return None;
            }
            self.entries.push((name, value));
        }
        Some(())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().map(|(name, value)| {
            (
                self.bytes.get(name.clone()).unwrap_or_default(),
                self.bytes.get(value.clone()).unwrap_or_default(),
            )
        })
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, value)| value)
    }

    /// The first value of `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        core::str::from_utf8(self.get(name)?).ok()
    }
}

/// Equal when they hold the same headers in the same order, however stored.
impl PartialEq for HeaderList {
    fn eq(&self, other: &HeaderList) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for HeaderList {}

/// A set of header names, asked about for every header of every request:
/// most names differ in length from all of the set's, and are passed over
/// without a byte compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderNames {
    /// Bit `n` set: some name is `n` bytes long (a longer one sets bit 63).
    lengths: u64,
    names: Vec<Vec<u8>>,
}

impl HeaderNames {
    pub fn insert(&mut self, name: &[u8]) {
        if !self.contains(name) {
            self.lengths |= length_bit(name);
            self.names.push(name.to_vec());
        }
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.lengths & length_bit(name) != 0
            && self
                .names
                .iter()
                .any(|known| known.len() == name.len() && known.as_slice() == name)
    }
}

fn length_bit(name: &[u8]) -> u64 {
    1 << name.len().min(63)
}

/// proxy-wasm's serialisation of a header map: the number of pairs, each
/// pair's name and value lengths (all u32, little-endian), then each name and
/// value followed by a NUL byte.
pub fn encode_proxy_wasm_map<'a>(pairs: &[(&'a [u8], &'a [u8])]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(name, value)| 10 + name.len() + value.len())
        .sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    let length = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    bytes.extend_from_slice(&length(pairs.len()));
    for (name, value) in pairs {
        bytes.extend_from_slice(&length(name.len()));
        bytes.extend_from_slice(&length(value.len()));
    }
    for (name, value) in pairs {
        bytes.extend_from_slice(name);
        bytes.push(0);
        bytes.extend_from_slice(value);
        bytes.push(0);
    }
    bytes
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
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
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
    } else if RESERVED_NAMES.contains(&name)
        || ["impersonate-", "x-envoy-"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
    {
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
        let list =
            HeaderList::from_pairs([(&b"a"[..], &b"1"[..]), (b"b", b"caf\xe9"), (b"a", b"3")]);
        assert_eq!(list.get("a"), Some(&b"1"[..]));
        assert_eq!(list.get("b"), Some(&b"caf\xe9"[..]));
        assert_eq!(list.get_str("b"), None, "Latin-1 is not UTF-8");
        assert_eq!(list.get_str("a"), Some("1"));
        assert_eq!(list.get("missing"), None);
        assert_eq!(list.iter().count(), 3);
    }

    #[test]
    fn a_set_of_header_names_finds_each_name_and_only_those() {
        let mut names = HeaderNames::default();
        let long = [b'x'; 70];
        for name in [&b"x-pod-name"[..], b"te", b"x-pod-name", &long] {
            names.insert(name);
        }
        assert_eq!(names.names.len(), 3, "each name once");
        for (name, known) in [
            (&b"x-pod-name"[..], true),
            (b"te", true),
            (&long, true),
            (&long[1..], false),
            (b"x-pod-nam", false),
            (b"x-pod-namf", false),
            (b"", false),
            (b"X-Pod-Name", false),
        ] {
            assert_eq!(names.contains(name), known, "{name:?}");
        }
    }

    #[test]
    fn a_list_read_again_keeps_its_storage_and_forgets_the_old_headers() {
        let first = encode_proxy_wasm_map(&[(b":path", b"/api/v1/pods"), (b"accept", b"*/*")]);
        let second = encode_proxy_wasm_map(&[(b":path", b"/api")]);
        let mut list = HeaderList::default();
        assert!(list.read_proxy_wasm_map(|buffer| {
            buffer.extend_from_slice(&first);
            true
        }));
        assert_eq!(list.get("accept"), Some(&b"*/*"[..]));
        let capacity = list.bytes.capacity();
        assert!(list.read_proxy_wasm_map(|buffer| {
            assert!(buffer.is_empty(), "handed over empty");
            buffer.extend_from_slice(&second);
            true
        }));
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            [(&b":path"[..], &b"/api"[..])]
        );
        assert_eq!(list.bytes.capacity(), capacity);
        // A failed or malformed read leaves the list empty.
        assert!(!list.read_proxy_wasm_map(|_| false));
        assert_eq!(list.iter().count(), 0);
        assert!(!list.read_proxy_wasm_map(|buffer| {
            buffer.extend_from_slice(&first[..first.len() - 1]);
            true
        }));
        assert_eq!(list.iter().count(), 0);
    }

    #[test]
    fn the_proxy_wasm_map_format_round_trips_any_bytes() {
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b":path", b"/api"),
            (b"x-j", b"\xff\x00\x80"),
            (b"", b""),
            (b"x-j", b"again"),
        ];
        let encoded = encode_proxy_wasm_map(&pairs);
        let decoded = HeaderList::from_proxy_wasm_map(encoded.clone()).unwrap();
        assert_eq!(decoded.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(decoded, HeaderList::from_pairs(pairs.iter().copied()));
        assert_eq!(
            HeaderList::from_proxy_wasm_map(Vec::new()),
            Some(HeaderList::default())
        );
        for cut in 0..encoded.len() {
            let truncated = encoded.get(..cut).unwrap().to_vec();
            if cut > 0 {
                assert_eq!(HeaderList::from_proxy_wasm_map(truncated), None, "{cut}");
            }
        }
        let mut huge_count = encoded.clone();
        huge_count.splice(0..4, u32::MAX.to_le_bytes());
        assert_eq!(HeaderList::from_proxy_wasm_map(huge_count), None);
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
