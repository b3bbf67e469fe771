//! The service-account token: validation, and the JWT claims a proxy may read.
//!
//! Claims are read, never verified: the API server verifies the signature.
//! The token itself is kept out of every `Debug` and `Display` so that it cannot
//! reach a log by accident.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use std::fmt;

/// A token as read from the projected volume, ready to be sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    authorization: String,
    pub claims: Claims,
}

/// The claims podward uses. All are optional: a legacy or opaque token has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub exp: Option<u64>,
    pub iat: Option<u64>,
    pub sub: Option<String>,
    /// From the `kubernetes.io` claim.
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
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
    /// Past 80 % of its lifetime: the kubelet should have replaced it by now.
    Stale {
        expires_in_s: u64,
    },
    Expired {
        expired_for_s: u64,
    },
}

/// The kubelet renews a projected token once 80 % of its lifetime has passed.
const KUBELET_RENEWAL_PERCENT: u64 = 80;

impl Token {
    pub fn parse(file: &[u8]) -> Result<Token, TokenError> {
        let text = std::str::from_utf8(file).map_err(|_| TokenError::NotHeaderSafe)?;
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

    /// `skew_s` treats a token as expired that many seconds early, so a request
    /// does not race the expiry on its way to the API server.
    pub fn freshness(&self, now_s: u64, skew_s: u64) -> Freshness {
        let Some(exp) = self.claims.exp else {
            return Freshness::Fresh;
        };
        let deadline = exp.saturating_sub(skew_s);
        if now_s >= deadline {
            return Freshness::Expired {
                expired_for_s: now_s - deadline,
            };
        }
        let renew_at = match self.claims.iat {
            // Exactly `(exp - iat) * 80 / 100`, without overflowing for a far-off `exp`.
            Some(iat) if iat < exp => {
                iat + (exp - iat) / 100 * KUBELET_RENEWAL_PERCENT
                    + (exp - iat) % 100 * KUBELET_RENEWAL_PERCENT / 100
            }
            _ => return Freshness::Fresh,
        };
        if now_s >= renew_at {
            Freshness::Stale {
                expires_in_s: exp - now_s,
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
    let json = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&json).ok()?;
    let text = |pointer: &str| claims.pointer(pointer)?.as_str().map(str::to_owned);
    Some(Claims {
        exp: claims.get("exp").and_then(Value::as_u64),
        iat: claims.get("iat").and_then(Value::as_u64),
        sub: text("/sub"),
        namespace: text("/kubernetes.io/namespace"),
        pod_name: text("/kubernetes.io/pod/name"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        "pod":{"name":"web-0","uid":"u"},"serviceaccount":{"name":"reader","uid":"u"},"warnafter":800},
        "sub":"system:serviceaccount:team-a:reader"}"#;

    #[test]
    fn reads_projected_token_claims() {
        let token = Token::parse(format!("{}\n", jwt(PROJECTED)).as_bytes()).unwrap();
        assert_eq!(token.authorization(), format!("Bearer {}", jwt(PROJECTED)));
        assert_eq!(token.claims.exp, Some(1000));
        assert_eq!(token.namespace(), Some("team-a"));
        assert_eq!(
            token.claims.sub.as_deref(),
            Some("system:serviceaccount:team-a:reader")
        );
        assert_eq!(token.claims.pod_name.as_deref(), Some("web-0"));
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
    fn debug_output_never_contains_the_token() {
        let token = Token::parse(b"super-secret-token-value").unwrap();
        let shown = format!("{token:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
