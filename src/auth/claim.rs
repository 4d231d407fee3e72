//! Open-mode identities: a random secret a client keeps (the *claim*) and
//! presents on every connection; what the server records is a hash of it.
//! Whoever holds the claim is that identity; nobody else can act as it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::hub::Identity;

/// Random bytes in a claim.
const BYTES: usize = 32;
/// Their base64url length.
pub const CHARS: usize = 43;

/// A client's secret claim. Never logged, never stored: only its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Claim(String);

impl Claim {
    /// A new random claim (for a connection that came without one).
    pub fn generate() -> Result<Self, String> {
        let mut bytes = [0u8; BYTES];
        getrandom::fill(&mut bytes).map_err(|e| format!("no OS randomness for a claim: {e}"))?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A claim as a client sent it: exactly 43 characters of base64url
    /// (what [`Claim::generate`] makes).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = raw.len() == CHARS
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && URL_SAFE_NO_PAD.decode(raw).is_ok_and(|b| b.len() == BYTES);
        match ok {
            true => Ok(Self(raw.to_owned())),
            false => Err(format!(
                "`claim` must be the {CHARS}-character value a welcome gave this browser; \
                 connect without it to get a new one"
            )),
        }
    }

    /// The identity this claim proves: `c:` and half of its SHA-256, in hex.
    pub fn identity(&self) -> Identity {
        let digest = Sha256::digest(self.0.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Identity::from_key(format!("c:{hex}"))
    }

    /// The claim itself, to hand to its owner once.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Claim(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_round_trips_and_names_one_identity() {
        let c = Claim::generate().unwrap();
        assert_eq!(c.as_str().len(), CHARS);
        let again = Claim::parse(c.as_str()).unwrap();
        assert_eq!(again.identity(), c.identity());
        assert_ne!(Claim::generate().unwrap().identity(), c.identity());
        assert!(c.identity().as_str().starts_with("c:"));
        assert!(
            !c.identity().as_str().contains(c.as_str()),
            "only a hash is kept"
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}=", "a".repeat(42)),
            &"+".repeat(43),
        ] {
            assert!(Claim::parse(bad).is_err(), "{bad}");
        }
    }
}
