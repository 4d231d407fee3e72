//! Text of at most 24 bytes kept in place, longer text on the heap: a
//! message's id (16 bytes) and timestamp (24) are made for every post, and
//! as `String`s each was an allocation then, and a `free` of memory long out
//! of the cache when the message left the room's history ring, both on the
//! thread that fans out (`perf`, docs/BENCHMARKS.md, issue 15). Written here
//! because the crates that keep short strings in place hold at most 23
//! bytes, one short of a timestamp, or bring several dependencies.

use std::fmt;
use std::ops::Deref;

/// The longest text kept in place.
const INLINE: usize = 24;

/// Immutable text; see the module docs.
#[derive(Clone)]
pub struct ShortText(Repr);

#[derive(Clone)]
enum Repr {
    /// `bytes[..len]` is the text: always whole UTF-8 (see the constructors).
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(Box<str>),
}

impl ShortText {
    /// `text`, in place when it fits.
    pub fn new(text: &str) -> Self {
        match Self::inline(text.as_bytes()) {
            Some(inline) => inline,
            None => Self(Repr::Heap(text.into())),
        }
    }

    /// ASCII `bytes` as text (anything else is read as UTF-8, lossily).
    pub fn from_ascii(bytes: &[u8]) -> Self {
        if bytes.is_ascii()
            && let Some(inline) = Self::inline(bytes)
        {
            return inline;
        }
        Self::from(String::from_utf8_lossy(bytes).into_owned())
    }

    /// In place, if it fits. Callers pass whole UTF-8 only (a `&str`'s
    /// bytes, or ASCII).
    fn inline(text: &[u8]) -> Option<Self> {
        let len = u8::try_from(text.len())
            .ok()
            .filter(|&n| usize::from(n) <= INLINE)?;
        let mut bytes = [0u8; INLINE];
        bytes[..text.len()].copy_from_slice(text);
        Some(Self(Repr::Inline { len, bytes }))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let text = &bytes[..usize::from(*len)];
                // SAFETY: the only ways in (`new`, `from_ascii`) copy a whole
                // `&str` or checked ASCII, so `text` is valid UTF-8.
                unsafe { std::str::from_utf8_unchecked(text) }
            }
            Repr::Heap(text) => text,
        }
    }
}

impl Deref for ShortText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for ShortText {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for ShortText {
    fn from(text: String) -> Self {
        match Self::inline(text.as_bytes()) {
            Some(inline) => inline,
            None => Self(Repr::Heap(text.into_boxed_str())),
        }
    }
}

impl PartialEq for ShortText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ShortText {}

impl PartialEq<str> for ShortText {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for ShortText {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl fmt::Debug for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ShortText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_up_to_24_bytes_is_kept_in_place_and_longer_text_whole() {
        for text in [
            "",
            "9f3c01aa00000001",
            "2026-12-06T04:49:49.047Z",
            "2026-12-06T04:49:49.047Z+",
            "é👍 and a good deal longer than twenty-four bytes",
        ] {
            for made in [ShortText::new(text), ShortText::from(text.to_owned())] {
                assert_eq!(made.as_str(), text);
                assert_eq!(made, *text);
                assert_eq!(
                    matches!(made.0, Repr::Inline { .. }),
                    text.len() <= INLINE,
                    "{text:?}"
                );
            }
        }
        // 24 bytes of multi-byte characters: in place, whole.
        let wide = "ééééééééééåå";
        assert_eq!(wide.len(), 24);
        assert_eq!(ShortText::new(wide).as_str(), wide);
    }

    #[test]
    fn ascii_is_taken_as_it_is_and_anything_else_lossily() {
        assert_eq!(ShortText::from_ascii(b"00ff").as_str(), "00ff");
        assert_eq!(ShortText::from_ascii(b"a\xffb").as_str(), "a\u{fffd}b");
        let long = [b'x'; 40];
        assert_eq!(ShortText::from_ascii(&long).len(), 40);
    }

    #[test]
    fn serde_writes_a_plain_string() {
        let text = ShortText::new("2026-12-06T04:49:49.047Z");
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(json, "\"2026-12-06T04:49:49.047Z\"");
    }
}
