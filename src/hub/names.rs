//! Validated names: the only way untrusted room names, user names and emoji
//! enter the hub. Each type is checked once, at the edge, so the hub never
//! re-checks and never sees a control character or an over-long name.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Why a name was refused; its `Display` is a sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError(String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameError {}

/// Whether `c` is a format character (Unicode category Cf: bidi controls
/// and isolates, zero-width characters, the BOM, invisible operators, tags).
/// They render as nothing or reorder what follows, so a name with one can
/// pass for another (`\u{202E}nnA` shows as "Ann"). Written out because the
/// set is small and stable, and the crates that carry Unicode tables are
/// large for this one question.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{600}'..='\u{605}'
            | '\u{61C}'
            | '\u{6DD}'
            | '\u{70F}'
            | '\u{890}'..='\u{891}'
            | '\u{8E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// Characters of other categories that render as nothing: the combining
/// grapheme joiner, the Hangul fillers, Khmer's invisible vowels,
/// Mongolian variation selectors and the Braille blank. `ann\u{3164}`
/// shows as "ann".
fn is_blank(c: char) -> bool {
    matches!(
        c,
        '\u{34F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180D}'
            | '\u{180F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FFA0}'
    )
}

/// Variation selectors pick a glyph for the character before them (the
/// emoji form of ❤, with U+FE0F); after a plain ASCII letter they show
/// nothing.
fn is_variation_selector(c: char) -> bool {
    matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
}

/// Whether a name holds a character that shows nothing where it is. The
/// joiners (ZWNJ, ZWJ) shape Persian, Indic and emoji text and are allowed
/// between two visible characters that are not ASCII (`a\u{200D}nn` shows
/// as "ann"); a variation selector right after such a character; anywhere
/// else, like the other format characters and the blanks, they only hide
/// something.
fn misplaced_format(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let shaped = |c: Option<&char>| {
        c.is_some_and(|&c| {
            !c.is_ascii()
                && !c.is_whitespace()
                && !is_format(c)
                && !is_blank(c)
                && !is_variation_selector(c)
        })
    };
    chars.iter().enumerate().any(|(i, &c)| {
        let before = i.checked_sub(1).and_then(|b| chars.get(b));
        if is_blank(c) {
            return true;
        }
        if is_variation_selector(c) {
            return !shaped(before);
        }
        if !is_format(c) {
            return false;
        }
        let joiner = matches!(c, '\u{200C}' | '\u{200D}');
        !(joiner && shaped(before) && shaped(chars.get(i + 1)))
    })
}

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
    if misplaced_format(s) {
        return Err(NameError(format!(
            "{what} must not contain invisible format characters (bidi controls, \
             zero-width characters, BOM, fillers and blanks)"
        )));
    }
    if !allow_slash && s.contains('/') {
        return Err(NameError(format!("{what} must not contain '/'")));
    }
    Ok(s.to_owned())
}

/// Shared text: a name is cloned into every message and reaction it makes
/// (a post's clone was an allocation, and its free a cache miss when the
/// message left the history ring), so a clone only counts a reference.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

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

/// A room name: 1–64 characters after trimming, no control or misplaced
/// format characters, no `/`. Names that differ only in case are one room:
/// equality, hashing and [`RoomName::as_str`] use the lowercase key, while
/// [`RoomName::shown`] keeps the name as the client wrote it (so a welcome
/// echoes it back unchanged).
#[derive(Debug, Clone)]
pub struct RoomName {
    /// Shared: every change a room sends its store holds it.
    key: Arc<str>,
    shown: String,
}

impl RoomName {
    /// The room's key: the name in lowercase. Everything that identifies the
    /// room (the hub's map, the backbone's keys, the store) uses it.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The key, shared rather than copied (see [`Change`](super::Change)).
    pub fn key(&self) -> Arc<str> {
        Arc::clone(&self.key)
    }

    /// The name as the client wrote it (trimmed).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether the room is private (its key starts with `private-`).
    pub fn is_private(&self) -> bool {
        self.key.starts_with("private-")
    }
}

impl PartialEq for RoomName {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for RoomName {}

impl std::hash::Hash for RoomName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl PartialOrd for RoomName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RoomName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Borrow<str> for RoomName {
    fn borrow(&self) -> &str {
        &self.key
    }
}

impl serde::Serialize for RoomName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown)
    }
}

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
        let shown = checked("room name", raw, Self::MAX_CHARS, false)?;
        Ok(Self {
            key: shown.to_lowercase().into(),
            shown,
        })
    }
}

impl UserName {
    /// A name read back from our own store: it was checked when it was
    /// stored (rules may have grown since; a stored name stays readable).
    pub(crate) fn from_store(name: &str) -> Self {
        Self(name.into())
    }

    /// The longest user name, in characters.
    pub const MAX_CHARS: usize = 32;

    /// Validates an already percent-decoded user name.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        checked("user name", raw, Self::MAX_CHARS, true).map(|name| Self(name.into()))
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
        Ok(Self(raw.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_trim_and_accept_unicode_and_spaces() {
        assert_eq!(RoomName::parse("  My Room ").unwrap().shown(), "My Room");
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
    fn rooms_differing_only_in_case_are_one_room() {
        let (a, b) = (
            RoomName::parse("Lobby").unwrap(),
            RoomName::parse("LOBBY").unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "lobby");
        assert_eq!((a.shown(), b.shown()), ("Lobby", "LOBBY"));
        assert_eq!(serde_json::to_string(&b).unwrap(), r#""LOBBY""#);
        assert!(RoomName::parse("Private-Design").unwrap().is_private());
    }

    #[test]
    fn names_that_could_pass_for_others_are_refused() {
        for name in [
            "\u{202E}nnA",
            "ann\u{200B}",
            "\u{FEFF}ann",
            "an\u{2066}n",
            "ann\u{200D}",
            "\u{200C}ann",
            "a\u{200D}\u{200D}b",
            "a \u{200D}b",
            // Not format characters, but blank all the same.
            "ann\u{3164}",
            "ann\u{2800}",
            "an\u{34F}n",
            "\u{115F}ann",
            "ann\u{FFA0}",
            // Joiners and selectors where they shape nothing.
            "a\u{200D}nn",
            "ann\u{FE0F}",
        ] {
            let e = UserName::parse(name).unwrap_err();
            assert!(e.to_string().contains("format characters"), "{name:?}: {e}");
            assert!(RoomName::parse(name).is_err(), "{name:?}");
        }
        // Joiners between visible characters shape real text and emoji.
        assert!(UserName::parse("می\u{200C}خواهم").is_ok());
        assert!(UserName::parse("👩\u{200D}💻 dev").is_ok());
        assert!(UserName::parse("ann \u{2764}\u{FE0F}").is_ok());
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
