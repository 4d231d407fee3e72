//! Who a connection is, whatever name it shows. A name is display text
//! that several people may use over time; an [`Identity`] is what edits,
//! deletes and reactions are checked against, and what every stored message
//! records about its author. It is an opaque key: the server derives it
//! (from a signed token's subject, or from a connection's secret claim) and
//! never sends it to clients.

use std::fmt;
use std::sync::Arc;

/// An opaque identity key. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(Arc<str>);

impl Identity {
    /// The identity of a name nobody authenticated: whoever uses the name
    /// is its author (the behaviour of a server without identities).
    pub fn named(name: &str) -> Self {
        Self(format!("n:{name}").into())
    }

    /// An identity from a key the server derived itself (a token subject,
    /// a hashed claim). Never from client text as it is.
    pub fn from_key(key: impl Into<Arc<str>>) -> Self {
        Self(key.into())
    }

    /// The key, for storage.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are not secrets (hashes and subjects), but keep logs short.
        let shown: String = self.0.chars().take(12).collect();
        write!(f, "Identity({shown}…)")
    }
}

/// Someone else holds a name in a room: a connection of another identity
/// has it, or had it within the grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTaken {
    /// The name.
    pub user: String,
}

impl fmt::Display for NameTaken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the name {:?} is in use in this room by someone else; pick another name",
            self.user
        )
    }
}

impl std::error::Error for NameTaken {}

/// How long a name stays held by its identity after that identity's last
/// connection with it closes, so a reconnect finds it free.
pub const NAME_HOLD_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

impl super::CloseReason {
    /// 4001: the connection's token expired; it needs a new one.
    pub const TOKEN_EXPIRED: Self = Self {
        code: 4001,
        reason: "your token expired; get a new invitation link",
    };
    /// 4009: the name was taken by another identity while this connection
    /// was being set up, or (with a backbone) while this instance was taken
    /// for dead.
    pub const NAME_TAKEN: Self = Self {
        code: 4009,
        reason: "this name is in use in this room by someone else; pick another name",
    };
}
