//! Who is who, and which pages may connect. Two modes in one binary:
//!
//! - **Open** (no secret configured): anyone may pick a free name; an
//!   identity is a random secret claim ([`claim`]) the client keeps and
//!   presents again. Private rooms are refused.
//! - **Token** (`--auth-secret-file` / `AUTH_SECRET`): every WebSocket and
//!   upload needs a signed JWT ([`jwt`]) whose `sub` is the user name;
//!   `private-` rooms need a token whose `rooms` name them.
//!
//! In both modes a browser's `Origin` must be allowed ([`origin`]). This
//! module decides and explains; it never logs a token or a claim.

pub mod claim;
pub mod jwt;
pub mod origin;

use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

pub use claim::Claim;
pub use jwt::{Grant, Secret, TokenError};
pub use origin::AllowedOrigins;

use crate::hub::{Identity, RoomName, UserName};

/// How connections prove who they are.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// Names are free to pick; identities are claims.
    #[default]
    Open,
    /// Every connection needs a token signed with this secret.
    Token(Secret),
}

/// The server's identity rules.
#[derive(Clone)]
pub struct Auth {
    /// Open or token mode.
    pub mode: Mode,
    /// Which pages may open WebSockets.
    pub origins: AllowedOrigins,
    /// `/metrics` needs `Authorization: Bearer <this>` when set.
    pub metrics_token: Option<String>,
}

/// Shows whether `/metrics` has a token, never the token.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mode", &self.mode)
            .field("origins", &self.origins)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| ".."))
            .finish()
    }
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            mode: Mode::Open,
            origins: AllowedOrigins::SameHost,
            metrics_token: None,
        }
    }
}

/// A refusal before any work: an HTTP status, a code, a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// 400, 401, 403.
    pub status: StatusCode,
    /// The JSON `error` code.
    pub code: &'static str,
    /// What was wrong and what to do.
    pub message: String,
}

impl Denied {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn token(e: TokenError) -> Self {
        match e {
            TokenError::TooLong(_) => {
                Self::new(StatusCode::BAD_REQUEST, "token_too_large", e.to_string())
            }
            TokenError::Expired => {
                Self::new(StatusCode::UNAUTHORIZED, "token_expired", e.to_string())
            }
            _ => Self::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string()),
        }
    }
}

/// Who an admitted connection is.
#[derive(Debug)]
pub struct Admitted {
    /// Its identity (what its messages record).
    pub identity: Identity,
    /// May delete any message in this room.
    pub moderator: bool,
    /// When its token expires (token mode), seconds since the epoch.
    pub expires: Option<u64>,
    /// A new claim to hand to this connection in its welcome (open mode,
    /// when it came without one).
    pub claim: Option<Claim>,
}

/// What a client presented on the WebSocket URL (besides `after`).
#[derive(Debug, Default)]
pub struct Presented<'a> {
    /// `?claim=`.
    pub claim: Option<&'a str>,
    /// `?token=`.
    pub token: Option<&'a str>,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token of an `Authorization: Bearer` header, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Proof that an upgrade's `Origin` was checked and allowed
/// ([`Auth::origin`]), which [`Auth::admit`] takes.
#[derive(Debug)]
pub struct OriginAllowed(());

impl Auth {
    /// Whether tokens are required.
    pub fn tokens_required(&self) -> bool {
        matches!(self.mode, Mode::Token(_))
    }

    /// Whether a WebSocket upgrade's `Origin` is allowed: the first check
    /// of an upgrade, before it is charged to its address, so that a page
    /// elsewhere cannot spend a visitor's join budget.
    pub fn origin(&self, headers: &HeaderMap) -> Result<OriginAllowed, Denied> {
        self.origins
            .check(headers)
            .map(|()| OriginAllowed(()))
            .map_err(|why| Denied::new(StatusCode::FORBIDDEN, "origin_not_allowed", why))
    }

    /// Decides a WebSocket upgrade to `room` as `user` whose `Origin` was
    /// allowed: who it is (a claim or a token) and whether that may join
    /// the room.
    pub fn admit(
        &self,
        _origin: OriginAllowed,
        headers: &HeaderMap,
        presented: &Presented<'_>,
        room: &RoomName,
        user: &UserName,
    ) -> Result<Admitted, Denied> {
        match &self.mode {
            Mode::Open => {
                if room.is_private() {
                    return Err(Denied::new(
                        StatusCode::FORBIDDEN,
                        "private_room",
                        format!(
                            "{:?} is a private room: rooms named private-… need a signed \
                             invitation, and this server runs without them (open mode)",
                            room.shown()
                        ),
                    ));
                }
                let (claim, new) = match presented.claim {
                    Some(raw) => (
                        Claim::parse(raw)
                            .map_err(|e| Denied::new(StatusCode::BAD_REQUEST, "bad_claim", e))?,
                        false,
                    ),
                    None => (
                        Claim::generate().map_err(|e| {
                            Denied::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e)
                        })?,
                        true,
                    ),
                };
                Ok(Admitted {
                    identity: claim.identity(),
                    moderator: false,
                    expires: None,
                    claim: new.then_some(claim),
                })
            }
            Mode::Token(secret) => {
                let token = presented.token.or_else(|| bearer(headers)).ok_or_else(|| {
                    Denied::new(
                        StatusCode::UNAUTHORIZED,
                        "token_required",
                        "this server needs a signed token: add ?token=… to the WebSocket URL \
                         (or send Authorization: Bearer …)",
                    )
                })?;
                let grant = jwt::verify(token, secret, now()).map_err(Denied::token)?;
                self.grant_for(grant, room, user)
            }
        }
    }

    /// Decides a read of `room`'s history (scrollback): whoever could join
    /// the room may read it. Open mode: any room but a `private-` one (which
    /// open mode has none of). Token mode: a valid token (`?token=` or
    /// `Authorization: Bearer`) whose rooms include it, whoever its user.
    /// No `Origin` check: a page elsewhere cannot read the answer without
    /// CORS headers, which this server never sends.
    pub fn reader(
        &self,
        headers: &HeaderMap,
        token: Option<&str>,
        room: &RoomName,
    ) -> Result<(), Denied> {
        match &self.mode {
            Mode::Open if room.is_private() => Err(Denied::new(
                StatusCode::FORBIDDEN,
                "private_room",
                format!(
                    "{:?} is a private room: rooms named private-… need a signed invitation, \
                     and this server runs without them (open mode)",
                    room.shown()
                ),
            )),
            Mode::Open => Ok(()),
            Mode::Token(secret) => {
                let token = token.or_else(|| bearer(headers)).ok_or_else(|| {
                    Denied::new(
                        StatusCode::UNAUTHORIZED,
                        "token_required",
                        "reading history needs a signed token: add ?token=… \
                         (or send Authorization: Bearer …)",
                    )
                })?;
                let grant = jwt::verify(token, secret, now()).map_err(Denied::token)?;
                if grant.allows(room) {
                    Ok(())
                } else {
                    Err(Denied::new(
                        StatusCode::FORBIDDEN,
                        "room_not_allowed",
                        format!(
                            "this token does not open the private room {:?}; ask for an \
                             invitation to it",
                            room.shown()
                        ),
                    ))
                }
            }
        }
    }

    /// What a verified token may do in `room` as `user`.
    fn grant_for(
        &self,
        grant: Grant,
        room: &RoomName,
        user: &UserName,
    ) -> Result<Admitted, Denied> {
        if grant.sub != *user {
            return Err(Denied::new(
                StatusCode::FORBIDDEN,
                "wrong_user",
                format!(
                    "this token is for {:?}, not {:?}; connect as the token's user",
                    grant.sub.as_str(),
                    user.as_str()
                ),
            ));
        }
        if !grant.allows(room) {
            return Err(Denied::new(
                StatusCode::FORBIDDEN,
                "room_not_allowed",
                format!(
                    "this token does not open the private room {:?}; ask for an invitation to it",
                    room.shown()
                ),
            ));
        }
        Ok(Admitted {
            identity: Identity::from_key(format!("t:{}", grant.sub.as_str())),
            moderator: grant.moderator,
            expires: Some(grant.exp),
            claim: None,
        })
    }

    /// A connection renews its token in place (the `auth` request): the new
    /// token must be valid, for the same user and room. Answers what it
    /// admits: its expiry, and its role, which replaces the old token's.
    pub fn renew(&self, token: &str, room: &RoomName, user: &UserName) -> Result<Admitted, Denied> {
        let Mode::Token(secret) = &self.mode else {
            return Err(Denied::new(
                StatusCode::BAD_REQUEST,
                "unsupported",
                "this server runs without tokens; there is nothing to renew",
            ));
        };
        let grant = jwt::verify(token, secret, now()).map_err(Denied::token)?;
        self.grant_for(grant, room, user)
    }

    /// In token mode, who an HTTP request (an upload) comes from: its
    /// `Authorization: Bearer` token, required. `None` in open mode.
    pub fn uploader(&self, headers: &HeaderMap) -> Result<Option<Identity>, Denied> {
        let Mode::Token(secret) = &self.mode else {
            return Ok(None);
        };
        let token = bearer(headers).ok_or_else(|| {
            Denied::new(
                StatusCode::UNAUTHORIZED,
                "token_required",
                "uploads need a signed token: send Authorization: Bearer …",
            )
        })?;
        let grant = jwt::verify(token, secret, now()).map_err(Denied::token)?;
        Ok(Some(Identity::from_key(format!(
            "t:{}",
            grant.sub.as_str()
        ))))
    }

    /// Whether a `/metrics` request may read the counters.
    pub fn metrics_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.metrics_token else {
            return true;
        };
        let given = bearer(headers).unwrap_or("");
        // Compared as digests, every byte looked at: the time taken says
        // nothing about how much of the token was right.
        let (a, b) = (
            Sha256::digest(given.as_bytes()),
            Sha256::digest(expected.as_bytes()),
        );
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}
