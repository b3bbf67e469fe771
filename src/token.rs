//! The service-account token: validation, and the JWT claims a proxy may read.
//!
//! Claims are read, never verified: the API server verifies the signature.
//! The token itself is kept out of every `Debug` and `Display` so that it cannot
//! reach a log by accident.
//!
//! Times are JWT `NumericDate`s: seconds since the epoch, which RFC 7519 allows
//! to be fractional. A fraction is dropped, a negative time reads as the epoch
//! (long past), and one beyond `u64` as the far future. A time claim that is
//! not a number at all is left unread and named in [`Claims::unreadable`], so
//! that the operator can be told that podward cannot judge the token's age.

use crate::prelude::*;
use core::fmt;
use serde_json::Value;

/// A token as read from the projected volume, ready to be sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    authorization: String,
    pub claims: Claims,
}

/// The claims podward uses. All are optional: a legacy or opaque token has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// When the API server stops accepting the token.
    pub exp: Option<u64>,
    pub iat: Option<u64>,
    /// Before this the API server does not accept the token either.
    pub nbf: Option<u64>,
    /// `kubernetes.io.warnafter`: set when the API server extended `exp` (to a
    /// year, for `expirationSeconds: 3607`); the hour the token was asked for.
    /// The API server warns about every use after it.
    pub warn_after: Option<u64>,
    pub sub: Option<String>,
    /// From the `kubernetes.io` claim.
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    /// Time claims present but not numbers, by name.
    pub unreadable: Vec<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Empty,
    NotHeaderSafe,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Empty => "the token file is empty",
            TokenError::NotHeaderSafe => "the token holds characters a header cannot carry",
        })
    }
}

/// Where a token stands against the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Past 80 % of its intended lifetime: the kubelet should have replaced it.
    Stale {
        expires_in_s: u64,
    },
    /// Past `warnafter`: still accepted, because the API server extended its
    /// expiry, but flagged as stale on every use.
    Overdue {
        overdue_for_s: u64,
    },
    /// Past `exp`, less the configured skew: the API server would refuse it.
    Expired {
        expired_for_s: u64,
    },
}

/// The kubelet renews a projected token once 80 % of its lifetime has passed.
const KUBELET_RENEWAL_PERCENT: u64 = 80;

impl Token {
    pub fn parse(file: &[u8]) -> Result<Token, TokenError> {
        let text = core::str::from_utf8(file).map_err(|_| TokenError::NotHeaderSafe)?;
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotHeaderSafe);
        }
        Ok(Token {
            authorization: format!("Bearer {text}"),
            claims: read_claims(text).unwrap_or_default(),
        })
    }

    /// The value of the `Authorization` header.
    pub fn authorization(&self) -> &str {
        &self.authorization
    }

    /// When the token should no longer be in use: `warnafter` for a token whose
    /// expiry the API server extended, otherwise `exp`.
    pub fn intended_end(&self) -> Option<u64> {
        let exp = self.claims.exp;
        match self.claims.warn_after {
            Some(warn) if exp.is_none_or(|exp| warn < exp) => Some(warn),
            _ => exp,
        }
    }

    /// `skew_s` treats a token as expired that many seconds before its `exp`,
    /// so a request does not race the expiry on its way to the API server.
    pub fn freshness(&self, now_s: u64, skew_s: u64) -> Freshness {
        if let Some(exp) = self.claims.exp {
            let deadline = exp.saturating_sub(skew_s);
            if now_s >= deadline {
                return Freshness::Expired {
                    expired_for_s: now_s - deadline,
                };
            }
        }
        let Some(end) = self.intended_end() else {
            return Freshness::Fresh;
        };
        if now_s >= end {
            return Freshness::Overdue {
                overdue_for_s: now_s - end,
            };
        }
        let renew_at = match self.claims.iat {
            // Exactly `(end - iat) * 80 / 100`, without overflowing for a far-off end.
            Some(iat) if iat < end => {
                iat + (end - iat) / 100 * KUBELET_RENEWAL_PERCENT
                    + (end - iat) % 100 * KUBELET_RENEWAL_PERCENT / 100
            }
            _ => return Freshness::Fresh,
        };
        if now_s >= renew_at {
            Freshness::Stale {
                expires_in_s: end - now_s,
            }
        } else {
            Freshness::Fresh
        }
    }

    /// The namespace the token was issued in: the pod's own namespace.
    pub fn namespace(&self) -> Option<&str> {
        self.claims.namespace.as_deref()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("authorization", &"<redacted>")
            .field("claims", &self.claims)
            .finish()
    }
}

fn read_claims(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    // Some issuers pad base64url despite RFC 7515; accept both.
    let json = decode_base64url(payload.trim_end_matches('='))?;
    let claims: Value = serde_json::from_slice(&json).ok()?;
    let claims = claims.as_object()?;
    let text = |value: Option<&Value>| value?.as_str().map(str::to_owned);
    let kubernetes = claims.get("kubernetes.io");
    let mut unreadable = Vec::new();
    let mut time = |name: &'static str, value: Option<&Value>| {
        let value = value?;
        let time = numeric_date(value);
        if time.is_none() {
            unreadable.push(name);
        }
        time
    };
    Some(Claims {
        exp: time("exp", claims.get("exp")),
        iat: time("iat", claims.get("iat")),
        nbf: time("nbf", claims.get("nbf")),
        warn_after: time(
            "kubernetes.io.warnafter",
            kubernetes.and_then(|k| k.get("warnafter")),
        ),
        sub: text(claims.get("sub")),
        namespace: text(kubernetes.and_then(|k| k.get("namespace"))),
        pod_name: text(kubernetes.and_then(|k| k.pointer("/pod/name"))),
        unreadable,
    })
}

/// A JWT `NumericDate` as whole seconds (see the module documentation).
fn numeric_date(value: &Value) -> Option<u64> {
    let number = value.as_number()?;
    if let Some(seconds) = number.as_u64() {
        return Some(seconds);
    }
    if number.is_i64() {
        return Some(0);
    }
    // Fractional, or an integer beyond u64: `as` drops the fraction and
    // saturates (a negative time to 0), and a number JSON carries is never NaN.
    number.as_f64().map(|seconds| seconds as u64)
}

/// RFC 4648 base64url without padding, refusing what a strict decoder
/// refuses: other characters, a lone final character, and non-zero bits
/// left over at the end.
fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6 | u32::from(value)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    let leftover = buffer & ((1 << bits) - 1);
    (bits < 6 && leftover == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    const PROJECTED: &str = r#"{"aud":["https://kubernetes.default.svc"],"exp":1000,"iat":0,"nbf":0,
        "iss":"https://kubernetes.default.svc.cluster.local",
        "kubernetes.io":{"namespace":"team-a","node":{"name":"n1","uid":"u"},
        "pod":{"name":"web-0","uid":"u"},"serviceaccount":{"name":"reader","uid":"u"}},
        "sub":"system:serviceaccount:team-a:reader"}"#;

    /// What kube-apiserver issues for `expirationSeconds: 3607` while
    /// `--service-account-extend-token-expiration` is on (the default).
    const EXTENDED: &str = r#"{"exp":31536000,"iat":0,"nbf":0,
        "kubernetes.io":{"namespace":"team-a","warnafter":3607}}"#;

    #[test]
    fn reads_projected_token_claims() {
        let token = Token::parse(format!("{}\n", jwt(PROJECTED)).as_bytes()).unwrap();
        assert_eq!(token.authorization(), format!("Bearer {}", jwt(PROJECTED)));
        assert_eq!(token.claims.exp, Some(1000));
        assert_eq!(token.claims.nbf, Some(0));
        assert_eq!(token.claims.warn_after, None);
        assert_eq!(token.namespace(), Some("team-a"));
        assert_eq!(
            token.claims.sub.as_deref(),
            Some("system:serviceaccount:team-a:reader")
        );
        assert_eq!(token.claims.pod_name.as_deref(), Some("web-0"));
        assert!(token.claims.unreadable.is_empty());
    }

    #[test]
    fn an_opaque_token_is_usable_without_claims() {
        for opaque in ["abcdef0123456789", "a.b", "a.!!!.c", "a.b.c.d", "x.e30.y"] {
            let token = Token::parse(opaque.as_bytes()).unwrap();
            assert_eq!(token.authorization(), format!("Bearer {opaque}"));
            assert_eq!(token.claims.exp, None, "{opaque}");
            assert_eq!(token.freshness(u64::MAX, 0), Freshness::Fresh);
        }
    }

    #[test]
    fn refuses_empty_and_unsendable_tokens() {
        let cases: &[(&[u8], TokenError)] = &[
            (b"", TokenError::Empty),
            (b" \n\t", TokenError::Empty),
            (b"abc def", TokenError::NotHeaderSafe),
            (b"abc\r\nX-Evil: 1", TokenError::NotHeaderSafe),
            (b"\xff\xfe", TokenError::NotHeaderSafe),
            ("caf\u{e9}".as_bytes(), TokenError::NotHeaderSafe),
        ];
        for (file, error) in cases {
            assert_eq!(Token::parse(file), Err(*error), "{file:?}");
        }
    }

    #[test]
    fn freshness_follows_the_kubelet_renewal_point_and_skew() {
        let token = Token::parse(jwt(PROJECTED).as_bytes()).unwrap();
        let cases = [
            (0, 0, Freshness::Fresh),
            (799, 0, Freshness::Fresh),
            (800, 0, Freshness::Stale { expires_in_s: 200 }),
            (999, 0, Freshness::Stale { expires_in_s: 1 }),
            (1000, 0, Freshness::Expired { expired_for_s: 0 }),
            (1060, 0, Freshness::Expired { expired_for_s: 60 }),
            (989, 10, Freshness::Stale { expires_in_s: 11 }),
            (990, 10, Freshness::Expired { expired_for_s: 0 }),
        ];
        for (now, skew, expected) in cases {
            assert_eq!(
                token.freshness(now, skew),
                expected,
                "now {now} skew {skew}"
            );
        }
    }

    #[test]
    fn an_extended_token_ages_by_warnafter_and_expires_by_exp() {
        let token = Token::parse(jwt(EXTENDED).as_bytes()).unwrap();
        assert_eq!(token.claims.warn_after, Some(3607));
        assert_eq!(token.intended_end(), Some(3607));
        let cases = [
            (0, Freshness::Fresh),
            (2884, Freshness::Fresh),
            (2885, Freshness::Stale { expires_in_s: 722 }),
            (3607, Freshness::Overdue { overdue_for_s: 0 }),
            (
                86_400,
                Freshness::Overdue {
                    overdue_for_s: 82_793,
                },
            ),
            (31_535_990, Freshness::Expired { expired_for_s: 0 }),
        ];
        for (now, expected) in cases {
            assert_eq!(token.freshness(now, 10), expected, "now {now}");
        }
    }

    #[test]
    fn a_warnafter_at_or_past_exp_changes_nothing() {
        let token = Token::parse(
            jwt(r#"{"exp":1000,"iat":0,"kubernetes.io":{"warnafter":5000}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(token.intended_end(), Some(1000));
        assert_eq!(
            token.freshness(800, 0),
            Freshness::Stale { expires_in_s: 200 }
        );
    }

    #[test]
    fn time_claims_are_read_as_numeric_dates() {
        let cases: &[(&str, Option<u64>, &[&str])] = &[
            (r#"{"exp":1700000000}"#, Some(1_700_000_000), &[]),
            (r#"{"exp":1700000000.9}"#, Some(1_700_000_000), &[]),
            (r#"{"exp":1.7e9}"#, Some(1_700_000_000), &[]),
            (r#"{"exp":-5}"#, Some(0), &[]),
            (r#"{"exp":-0.5}"#, Some(0), &[]),
            (r#"{"exp":1e300}"#, Some(u64::MAX), &[]),
            (r#"{"exp":"1700000000"}"#, None, &["exp"]),
            (r#"{"exp":null}"#, None, &["exp"]),
            (r#"{"exp":{"$date":1}}"#, None, &["exp"]),
            (r#"{"exp":1,"iat":true}"#, Some(1), &["iat"]),
        ];
        for (claims, exp, unreadable) in cases {
            let token = Token::parse(jwt(claims).as_bytes()).unwrap();
            assert_eq!(token.claims.exp, *exp, "{claims}");
            assert_eq!(token.claims.unreadable, *unreadable, "{claims}");
        }
        let token = Token::parse(jwt(r#"{"exp":-5}"#).as_bytes()).unwrap();
        assert_eq!(
            token.freshness(100, 0),
            Freshness::Expired { expired_for_s: 100 }
        );
    }

    #[test]
    fn base64url_decodes_as_a_strict_decoder_does() {
        let samples: &[&[u8]] = &[
            b"",
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"\xff\xfe\xfd",
            b"{\"exp\":1}",
        ];
        for sample in samples {
            let encoded = URL_SAFE_NO_PAD.encode(sample);
            assert_eq!(
                decode_base64url(&encoded).as_deref(),
                Some(*sample),
                "{encoded}"
            );
        }
        for bad in ["Z", "Zm9vY", "Zh", "Zm9=", "Zm+v", "Zm/v", "Zm9v!"] {
            assert_eq!(decode_base64url(bad), None, "{bad}");
            assert!(
                URL_SAFE_NO_PAD.decode(bad).is_err(),
                "the reference agrees on {bad}"
            );
        }
    }

    #[test]
    fn debug_output_never_contains_the_token() {
        let token = Token::parse(b"super-secret-token-value").unwrap();
        let shown = format!("{token:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
