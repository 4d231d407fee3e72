//! Signed connection tokens: JSON Web Tokens with HS256 only.
//!
//! Written over the audited `hmac` and `sha2` crates rather than a JWT crate:
//! the general ones bring RSA and elliptic-curve stacks (dozens of crates)
//! for algorithms this server refuses anyway. What is checked, in order:
//! the size (before any work), the shape (three base64url parts), the
//! header (`alg` must be exactly `HS256`: `none` and every other algorithm
//! are refused), the signature (compared in constant time by
//! `Mac::verify_slice`), then the claims: `exp` required, `nbf` honoured,
//! both with a small leeway, `sub` a valid user name, `rooms` a list of
//! room names or `prefix*` patterns, `role` optionally `moderator`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::hub::{RoomName, UserName};

type HmacSha256 = Hmac<Sha256>;

/// The longest token read, in bytes; a longer one is refused unread.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Clock difference tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// The secret tokens are signed with: at least 32 bytes.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The shortest secret accepted, in bytes.
    pub const MIN_BYTES: usize = 32;

    /// A secret, if it is long enough.
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < Self::MIN_BYTES {
            return Err(format!(
                "the auth secret is {} bytes; it must be at least {} (e.g. `head -c 48 /dev/urandom | base64`)",
                bytes.len(),
                Self::MIN_BYTES
            ));
        }
        Ok(Self(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Which rooms a token opens: a name, or every name starting with a prefix
/// (`team-*`; `*` alone is every room). Compared on room keys (lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomPattern {
    /// Exactly this room.
    Exact(String),
    /// Every room whose key starts with this.
    Prefix(String),
}

impl RoomPattern {
    fn parse(raw: &str) -> Result<Self, String> {
        match raw.strip_suffix('*') {
            Some(prefix) => Ok(Self::Prefix(prefix.to_lowercase())),
            None => RoomName::parse(raw)
                .map(|r| Self::Exact(r.as_str().to_owned()))
                .map_err(|e| format!("`rooms` holds {raw:?}: {e}")),
        }
    }

    fn matches(&self, room: &RoomName) -> bool {
        match self {
            Self::Exact(name) => room.as_str() == name,
            Self::Prefix(prefix) => room.as_str().starts_with(prefix.as_str()),
        }
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The user it was issued to.
    pub sub: UserName,
    /// Rooms it names (private rooms need one of these).
    pub rooms: Vec<RoomPattern>,
    /// May delete any message in the rooms it may join.
    pub moderator: bool,
    /// When it expires, seconds since the Unix epoch.
    pub exp: u64,
}

impl Grant {
    /// Whether this token may join `room`: private rooms only if `rooms`
    /// names them; other rooms always.
    pub fn allows(&self, room: &RoomName) -> bool {
        !room.is_private() || self.rooms.iter().any(|p| p.matches(room))
    }
}

/// Why a token was refused; its `Display` is a sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLong(usize),
    /// Not three base64url parts of JSON.
    Malformed(&'static str),
    /// `alg` is not `HS256`.
    Algorithm(String),
    /// The signature does not match.
    Signature,
    /// Past `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
    /// A claim is missing or wrong.
    Claims(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLong(n) => write!(f, "the token is {n} bytes; the limit is {MAX_TOKEN_BYTES}"),
            Self::Malformed(what) => write!(f, "the token is not a JWT: {what}"),
            Self::Algorithm(alg) => write!(
                f,
                "the token is signed with {alg:?}; this server accepts HS256 only"
            ),
            Self::Signature => f.write_str("the token's signature is not valid"),
            Self::Expired => f.write_str("the token has expired; ask for a new one"),
            Self::NotYetValid => f.write_str("the token is not valid yet (`nbf`)"),
            Self::Claims(why) => write!(f, "the token's claims are not usable: {why}"),
        }
    }
}

impl std::error::Error for TokenError {}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<u64>,
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    nbf: Option<u64>,
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rooms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// A time claim: RFC 7519's NumericDate, seconds since the epoch, which
/// may have a fraction (dropped: a second's difference is within the
/// leeway). Negative or not a number: the claims are refused.
fn numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(whole) = n.as_u64() {
        return Ok(Some(whole));
    }
    match n.as_f64() {
        // `as` saturates: a date past u64's seconds is as good as never.
        Some(x) if x >= 0.0 => Ok(Some(x as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "a time claim must be seconds since 1970, not {n}"
        ))),
    }
}

fn part(raw: &str, what: &'static str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| TokenError::Malformed(what))
}

/// Checks `token` against `secret` at `now` (seconds since the epoch).
pub fn verify(token: &str, secret: &Secret, now: u64) -> Result<Grant, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong(token.len()));
    }
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "it must be three parts separated by dots",
        ));
    };
    let header: Header = serde_json::from_slice(&part(head, "its header is not base64url")?)
        .map_err(|_| TokenError::Malformed("its header is not JSON with `alg`"))?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm(header.alg.chars().take(16).collect()));
    }
    let tag = part(sig, "its signature is not base64url")?;
    let mut mac = secret.mac();
    mac.update(head.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.verify_slice(&tag).map_err(|_| TokenError::Signature)?;
    let claims: Claims = serde_json::from_slice(&part(body, "its payload is not base64url")?)
        .map_err(|e| TokenError::Claims(format!("the payload is not the expected JSON ({e})")))?;
    let exp = claims
        .exp
        .ok_or_else(|| TokenError::Claims("`exp` is required".into()))?;
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| now.saturating_add(LEEWAY_SECS) < nbf)
    {
        return Err(TokenError::NotYetValid);
    }
    let sub = claims
        .sub
        .ok_or_else(|| TokenError::Claims("`sub` (the user name) is required".into()))?;
    let sub = UserName::parse(&sub).map_err(|e| TokenError::Claims(format!("`sub`: {e}")))?;
    let rooms = claims
        .rooms
        .iter()
        .map(|r| RoomPattern::parse(r))
        .collect::<Result<_, _>>()
        .map_err(TokenError::Claims)?;
    let moderator = match claims.role.as_deref() {
        None => false,
        Some("moderator") => true,
        Some(other) => {
            return Err(TokenError::Claims(format!(
                "`role` {other:?} is unknown; the one role is \"moderator\""
            )));
        }
    };
    Ok(Grant {
        sub,
        rooms,
        moderator,
        exp,
    })
}

/// What a token to be issued says.
#[derive(Debug, Clone)]
pub struct Issue<'a> {
    /// The user.
    pub sub: &'a str,
    /// Room names or `prefix*` patterns.
    pub rooms: &'a [String],
    /// A moderator token.
    pub moderator: bool,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// Signs a token (`roomcast token`, tests). The same format any JWT library
/// produces for HS256.
pub fn sign(issue: &Issue<'_>, secret: &Secret) -> String {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = Claims {
        sub: Some(issue.sub.to_owned()),
        exp: Some(issue.exp),
        nbf: None,
        iat: Some(issue.iat),
        rooms: issue.rooms.to_vec(),
        role: issue.moderator.then(|| "moderator".to_owned()),
    };
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
    let mut mac = secret.mac();
    mac.update(head.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{head}.{body}.{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new(b"an example secret of at least 32 bytes, for tests".to_vec()).unwrap()
    }

    fn token(sub: &str, rooms: &[&str], exp: u64) -> String {
        let rooms: Vec<String> = rooms.iter().map(|r| (*r).to_owned()).collect();
        sign(
            &Issue {
                sub,
                rooms: &rooms,
                moderator: false,
                iat: 1000,
                exp,
            },
            &secret(),
        )
    }

    /// A token with these raw parts, signed (or not) as given.
    fn raw(header: &str, payload: &str, key: &[u8]) -> String {
        let h = URL_SAFE_NO_PAD.encode(header);
        let p = URL_SAFE_NO_PAD.encode(payload);
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{h}.{p}.{s}")
    }

    #[test]
    fn a_signed_token_grants_its_user_and_rooms() {
        let g = verify(
            &token("ann", &["private-design", "team-*"], 5000),
            &secret(),
            2000,
        )
        .unwrap();
        assert_eq!(g.sub.as_str(), "ann");
        assert_eq!(g.exp, 5000);
        assert!(g.allows(&RoomName::parse("Private-Design").unwrap()));
        assert!(!g.allows(&RoomName::parse("private-x").unwrap()));
        assert!(
            g.allows(&RoomName::parse("lobby").unwrap()),
            "public rooms need no grant"
        );
        let all = verify(&token("ann", &["*"], 5000), &secret(), 2000).unwrap();
        assert!(all.allows(&RoomName::parse("private-anything").unwrap()));
    }

    #[test]
    fn the_same_format_as_any_jwt_library() {
        // Made with PyJWT: jwt.encode({"sub": "ann", "exp": 4102444800,
        // "rooms": ["private-design"]}, "an example secret of at least 32
        // bytes, for tests", algorithm="HS256")
        let pyjwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbm4iLCJleHAiOjQxMDI0NDQ4MDAsInJvb21zIjpbInByaXZhdGUtZGVzaWduIl19.5SY-JglQWLLCeccDMXfBNvaSU_grHJncPM995XKovos";
        let g = verify(pyjwt, &secret(), 2000).unwrap();
        assert_eq!(g.sub.as_str(), "ann");
        assert_eq!(g.rooms, vec![RoomPattern::Exact("private-design".into())]);
    }

    #[test]
    fn time_claims_may_have_a_fraction() {
        let s = secret();
        // RFC 7519's NumericDate; some libraries write `iat` with one.
        let fractions = raw(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"ann","exp":2500.75,"nbf":1999.5,"iat":1999.25}"#,
            &s.0,
        );
        assert_eq!(verify(&fractions, &s, 2000).unwrap().exp, 2500);
        for bad in [r#"-5"#, r#""2500""#, "1e400"] {
            let payload = format!(r#"{{"sub":"ann","exp":{bad}}}"#);
            let token = raw(r#"{"alg":"HS256"}"#, &payload, &s.0);
            assert!(
                matches!(verify(&token, &s, 2000), Err(TokenError::Claims(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let s = secret();
        let now = 2000;
        assert_eq!(
            verify(&token("ann", &[], now - 31), &s, now),
            Err(TokenError::Expired)
        );
        assert!(
            verify(&token("ann", &[], now - 29), &s, now).is_ok(),
            "within the leeway"
        );
        let nbf = raw(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"ann","exp":9999,"nbf":2100}"#,
            &s.0,
        );
        assert_eq!(verify(&nbf, &s, now), Err(TokenError::NotYetValid));
        let other = Secret::new(vec![7; 32]).unwrap();
        assert_eq!(
            verify(&token("ann", &[], 9999), &other, now),
            Err(TokenError::Signature)
        );
        let none = raw(r#"{"alg":"none"}"#, r#"{"sub":"ann","exp":9999}"#, &s.0);
        assert_eq!(
            verify(&none, &s, now),
            Err(TokenError::Algorithm("none".into()))
        );
        let unsigned = format!("{}.", none.rsplit_once('.').unwrap().0);
        assert!(matches!(
            verify(&unsigned, &s, now),
            Err(TokenError::Algorithm(_))
        ));
        let hs512 = raw(r#"{"alg":"HS512"}"#, r#"{"sub":"ann","exp":9999}"#, &s.0);
        assert_eq!(
            verify(&hs512, &s, now),
            Err(TokenError::Algorithm("HS512".into()))
        );
        // A payload changed after signing.
        let good = token("ann", &[], 9999);
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"admin","exp":9999}"#);
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), &s, now),
            Err(TokenError::Signature)
        );
        let no_exp = raw(r#"{"alg":"HS256"}"#, r#"{"sub":"ann"}"#, &s.0);
        assert!(matches!(
            verify(&no_exp, &s, now),
            Err(TokenError::Claims(_))
        ));
        let bad_role = raw(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"ann","exp":9999,"role":"root"}"#,
            &s.0,
        );
        assert!(matches!(
            verify(&bad_role, &s, now),
            Err(TokenError::Claims(_))
        ));
        assert_eq!(
            verify(&"a".repeat(MAX_TOKEN_BYTES + 1), &s, now),
            Err(TokenError::TooLong(MAX_TOKEN_BYTES + 1))
        );
        for junk in ["", "a.b", "a.b.c.d", "!!.??.**"] {
            assert!(
                matches!(verify(junk, &s, now), Err(TokenError::Malformed(_))),
                "{junk}"
            );
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Secret::new(vec![1; 31]).is_err());
        assert!(Secret::new(vec![1; 32]).is_ok());
    }
}
