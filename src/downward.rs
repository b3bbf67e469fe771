//! The Downward API volume's map format (`metadata.labels`, `metadata.annotations`).
//!
//! The kubelet writes one `key="value"` line per entry, keys sorted, each value
//! quoted by Go's `strconv.Quote`, lines joined by `\n` with no trailing newline
//! (`pkg/fieldpath/fieldpath.go`, `FormatMap`). Values are kept as bytes because
//! a `\xNN` escape may stand for a byte that is not UTF-8 on its own.

use crate::prelude::*;
use core::fmt;

/// Labels or annotations: keys unique and sorted, as the kubelet writes
/// them. A sorted list rather than a BTreeMap, which costs the wasm module
/// several KB per key and value type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMap(Vec<(String, Vec<u8>)>);

impl PodMap {
    pub fn new() -> PodMap {
        PodMap::default()
    }

    /// Adds an entry; a key already there takes the new value.
    pub fn insert(&mut self, key: String, value: Vec<u8>) {
        match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => {
                if let Some(entry) = self.0.get_mut(at) {
                    entry.1 = value;
                }
            }
            Err(at) => self.0.insert(at, (key, value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        let at = self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
        self.0.get(at).map(|(_, value)| value.as_slice())
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        self.0.iter().map(|(key, value)| (key, value))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(key, _)| key)
    }
}

impl FromIterator<(String, Vec<u8>)> for PodMap {
    fn from_iter<I: IntoIterator<Item = (String, Vec<u8>)>>(entries: I) -> PodMap {
        let mut map = PodMap::new();
        for (key, value) in entries {
            map.insert(key, value);
        }
        map
    }
}

impl<'a> IntoIterator for &'a PodMap {
    type Item = (&'a String, &'a Vec<u8>);
    type IntoIter = core::iter::Map<
        core::slice::Iter<'a, (String, Vec<u8>)>,
        fn(&'a (String, Vec<u8>)) -> (&'a String, &'a Vec<u8>),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(key, value)| (key, value))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFormatError {
    pub line: usize,
    pub problem: &'static str,
}

impl fmt::Display for MapFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

/// Parses a whole Downward API map file. An empty file is an empty map.
pub fn parse_map(text: &[u8]) -> Result<PodMap, MapFormatError> {
    let mut map = PodMap::new();
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        // A trailing newline (written by hand, not by the kubelet) is harmless.
        if line.is_empty() {
            continue;
        }
        let error = |problem| MapFormatError {
            line: index + 1,
            problem,
        };
        let equals = line
            .iter()
            .position(|&b| b == b'=')
            .ok_or(error("missing `=`"))?;
        let (key, quoted) = line.split_at(equals);
        let key = core::str::from_utf8(key)
            .ok()
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or(error("key is empty or not printable ASCII"))?;
        let value = unquote(&quoted[1..]).map_err(error)?;
        map.insert(key.to_owned(), value);
    }
    Ok(map)
}

/// Reverses Go's `strconv.Quote` (and accepts every escape `strconv.Unquote` does).
fn unquote(quoted: &[u8]) -> Result<Vec<u8>, &'static str> {
    let inner = quoted
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
        .ok_or("value is not enclosed in double quotes")?;
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter().copied();
    while let Some(byte) = bytes.next() {
        match byte {
            b'\\' => {}
            b'"' => return Err("unescaped `\"` inside the value"),
            _ => {
                out.push(byte);
                continue;
            }
        }
        let escape = bytes.next().ok_or("value ends inside an escape")?;
        match escape {
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'\\' | b'"' | b'\'' => out.push(escape),
            b'x' => out.push(hex_digits(&mut bytes, 2)? as u8),
            b'u' => push_char(&mut out, hex_digits(&mut bytes, 4)?)?,
            b'U' => push_char(&mut out, hex_digits(&mut bytes, 8)?)?,
            b'0'..=b'7' => {
                let mut value = u32::from(escape - b'0');
                for _ in 0..2 {
                    let digit = bytes.next().filter(|d| (b'0'..=b'7').contains(d));
                    value = value * 8 + u32::from(digit.ok_or("bad octal escape")? - b'0');
                }
                out.push(u8::try_from(value).map_err(|_| "octal escape above \\377")?);
            }
            _ => return Err("unknown escape"),
        }
    }
    Ok(out)
}

fn hex_digits(bytes: &mut impl Iterator<Item = u8>, count: usize) -> Result<u32, &'static str> {
    let mut value = 0u32;
    for _ in 0..count {
        let digit = bytes
            .next()
            .and_then(|d| char::from(d).to_digit(16))
            .ok_or("bad hexadecimal escape")?;
        value = value * 16 + digit;
    }
    Ok(value)
}

fn push_char(out: &mut Vec<u8>, code_point: u32) -> Result<(), &'static str> {
    let c = char::from_u32(code_point).ok_or("escape is not a Unicode scalar value")?;
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(String, Vec<u8>)> {
        let map = parse_map(text.as_bytes()).unwrap();
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    type Entries<'a> = &'a [(&'a str, &'a [u8])];

    #[test]
    fn a_repeated_key_keeps_the_last_value_and_keys_stay_sorted() {
        let map = parse_map(b"b=\"1\"\na=\"2\"\nb=\"3\"").unwrap();
        let keys: Vec<&String> = map.keys().collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(map.get("b"), Some(&b"3"[..]));
        assert_eq!(map.get("c"), None);
    }

    #[test]
    fn parses_kubelet_output() {
        let cases: &[(&str, Entries<'_>)] = &[
            ("", &[]),
            ("app=\"web\"", &[("app", b"web")]),
            (
                "app=\"web\"\ntier=\"front end\"",
                &[("app", b"web"), ("tier", b"front end")],
            ),
            ("empty=\"\"", &[("empty", b"")]),
            ("q=\"say \\\"hi\\\"\"", &[("q", b"say \"hi\"")]),
            ("b=\"back\\\\slash\"", &[("b", b"back\\slash")]),
            ("m=\"line1\\nline2\"", &[("m", b"line1\nline2")]),
            ("t=\"a\\tb\\rc\"", &[("t", b"a\tb\rc")]),
            (
                "c=\"\\x00\\x7f\\a\\b\\f\\v\"",
                &[("c", b"\x00\x7f\x07\x08\x0c\x0b")],
            ),
            (
                "u=\"caf\u{e9} \u{65e5}\"",
                &[("u", "caf\u{e9} \u{65e5}".as_bytes())],
            ),
            (
                "u=\"\\u00e9\\U0001F600\"",
                &[("u", "\u{e9}\u{1F600}".as_bytes())],
            ),
            ("raw=\"\\xff\"", &[("raw", b"\xff")]),
            ("o=\"\\101\"", &[("o", b"A")]),
            ("eq=\"a=b\"", &[("eq", b"a=b")]),
            (
                "example.com/owner=\"team-a\"",
                &[("example.com/owner", b"team-a")],
            ),
            ("trailing=\"newline\"\n", &[("trailing", b"newline")]),
        ];
        for (input, expected) in cases {
            let expected: Vec<_> = expected
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect();
            assert_eq!(parsed(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn a_multi_line_annotation_is_one_line_with_escapes() {
        let json = "{\n  \"a\": 1\n}";
        let line = "kubectl.kubernetes.io/last-applied-configuration=\"{\\n  \\\"a\\\": 1\\n}\"";
        let map = parse_map(line.as_bytes()).unwrap();
        assert_eq!(
            map.get("kubectl.kubernetes.io/last-applied-configuration"),
            Some(json.as_bytes())
        );
    }

    #[test]
    fn refuses_malformed_lines_and_says_where() {
        let cases: &[(&str, usize, &str)] = &[
            ("novalue", 1, "missing `=`"),
            (
                "a=\"ok\"\nb=unquoted",
                2,
                "value is not enclosed in double quotes",
            ),
            ("=\"x\"", 1, "key is empty or not printable ASCII"),
            ("a b=\"x\"", 1, "key is empty or not printable ASCII"),
            ("a=\"x", 1, "value is not enclosed in double quotes"),
            ("a=\"x\\\"", 1, "value ends inside an escape"),
            ("a=\"x\"y\"", 1, "unescaped `\"` inside the value"),
            ("a=\"\\q\"", 1, "unknown escape"),
            ("a=\"\\x4\"", 1, "bad hexadecimal escape"),
            ("a=\"\\ud800\"", 1, "escape is not a Unicode scalar value"),
            ("a=\"\\400\"", 1, "octal escape above \\377"),
            ("a=\"\\\"", 1, "value ends inside an escape"),
        ];
        for (input, line, problem) in cases {
            let error = parse_map(input.as_bytes()).unwrap_err();
            assert_eq!(
                (error.line, error.problem),
                (*line, *problem),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let alphabet: &[u8] = b"ab=\"\\\nxuU0f7\xff ";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..100_000 {
            let mut input = Vec::new();
            for _ in 0..(state % 24) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                input.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            if let Ok(map) = parse_map(&input) {
                assert!(map.keys().all(|k| !k.is_empty() && !k.contains('=')));
            }
            state = state.wrapping_add(1);
        }
    }
}
