//! Validated names: the only way untrusted room names, user names and emoji
//! enter the hub. Each type is checked once, at the edge, so the hub never
//! re-checks and never sees a control character or an over-long name.

use std::borrow::Borrow;
use std::fmt;

/// Why a name was refused; its `Display` is a sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError(String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameError {}

/// Trims `raw` and checks its length (in characters) and characters.
fn checked(
    what: &str,
    raw: &str,
    max_chars: usize,
    allow_slash: bool,
) -> Result<String, NameError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(NameError(format!("{what} must not be empty")));
    }
    let chars = s.chars().count();
    if chars > max_chars {
        return Err(NameError(format!(
            "{what} is {chars} characters; the limit is {max_chars}"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(NameError(format!(
            "{what} must not contain control characters"
        )));
    }
    if !allow_slash && s.contains('/') {
        return Err(NameError(format!("{what} must not contain '/'")));
    }
    Ok(s.to_owned())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A room name: 1–64 characters after trimming, no control characters, no `/`.
    RoomName
);
name_type!(
    /// A user name: 1–32 characters after trimming, no control characters.
    /// Names are compared as exact strings.
    UserName
);
name_type!(
    /// A reaction emoji: 1–32 bytes, no whitespace or control characters.
    Emoji
);

impl RoomName {
    /// The longest room name, in characters.
    pub const MAX_CHARS: usize = 64;

    /// Validates an already percent-decoded room name.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        checked("room name", raw, Self::MAX_CHARS, false).map(Self)
    }
}

impl UserName {
    /// The longest user name, in characters.
    pub const MAX_CHARS: usize = 32;

    /// Validates an already percent-decoded user name.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        checked("user name", raw, Self::MAX_CHARS, true).map(Self)
    }
}

impl Emoji {
    /// The longest emoji, in bytes (a family emoji with modifiers is ~25).
    pub const MAX_BYTES: usize = 32;

    /// Validates an emoji exactly as sent (no trimming: whitespace is refused).
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        if raw.is_empty() || raw.len() > Self::MAX_BYTES {
            return Err(NameError(format!(
                "emoji must be 1–{} bytes; this one is {}",
                Self::MAX_BYTES,
                raw.len()
            )));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(NameError(
                "emoji must not contain whitespace or control characters".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_trim_and_accept_unicode_and_spaces() {
        assert_eq!(RoomName::parse("  My Room ").unwrap().as_str(), "My Room");
        assert_eq!(RoomName::parse("général").unwrap().as_str(), "général");
        assert!(RoomName::parse(&"é".repeat(64)).is_ok());
    }

    #[test]
    fn room_names_refuse_empty_long_slash_and_control() {
        assert!(RoomName::parse("   ").is_err());
        assert!(RoomName::parse(&"a".repeat(65)).is_err());
        assert!(RoomName::parse("a/b").is_err());
        assert!(RoomName::parse("a\u{0}b").is_err());
        assert!(RoomName::parse("a\nb").is_err());
        let e = RoomName::parse(&"a".repeat(70)).unwrap_err();
        assert_eq!(e.to_string(), "room name is 70 characters; the limit is 64");
    }

    #[test]
    fn user_names_are_limited_to_32_chars() {
        assert!(UserName::parse(&"ü".repeat(32)).is_ok());
        assert!(UserName::parse(&"ü".repeat(33)).is_err());
        assert!(UserName::parse("bob\u{7f}").is_err());
        assert_eq!(UserName::parse(" Bob ").unwrap().as_str(), "Bob");
    }

    #[test]
    fn emoji_rules() {
        assert!(Emoji::parse("👍").is_ok());
        assert!(Emoji::parse("👨‍👩‍👧‍👦").is_ok());
        assert!(Emoji::parse("").is_err());
        assert!(Emoji::parse("👍 ").is_err());
        assert!(Emoji::parse("a\tb").is_err());
        assert!(Emoji::parse(&"x".repeat(33)).is_err());
    }
}
