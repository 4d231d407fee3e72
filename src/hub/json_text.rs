//! JSON strings and numbers written straight into a `String`, byte for
//! byte as serde_json writes them, for the two places every post passes:
//! its broadcast frame (`message_frame.rs`) and its history chunk (the
//! SQLite store's `json.rs`).
//!
//! Why not serde_json there: it checks a string for bytes to escape one
//! byte at a time through a table, and writes each field in several small
//! writes. Chat text rarely has anything to escape; here a string is
//! checked eight bytes at a time and, with nothing to escape, copied in
//! one piece. A string that has something to escape goes through
//! serde_json itself, so the output never differs from its.

/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// `0x80` in every byte of a word.
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether some byte of `word` is zero. Exact: a borrow can make the
/// expression mark a wrong byte, never a word with no zero byte.
fn has_zero(word: u64) -> bool {
    word.wrapping_sub(ONES) & !word & HIGHS != 0
}

/// Whether some byte of `word` is below `0x20`. Exact, like [`has_zero`],
/// for bounds up to `0x80`.
fn has_control(word: u64) -> bool {
    word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0
}

/// Whether JSON needs some byte of `bytes` escaped: a control character
/// (below `0x20`), `"` or `\`. Bytes of multi-byte UTF-8 characters are
/// all `0x80` or above and never need it.
fn needs_escape(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(eight);
        if has_control(word)
            | has_zero(word ^ (ONES * u64::from(b'"')))
            | has_zero(word ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Appends `value` as a JSON string, quotes included.
pub(crate) fn push_str(out: &mut String, value: &str) {
    if needs_escape(value.as_bytes()) {
        // A string cannot fail to serialize.
        out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into()));
    } else {
        out.reserve(value.len() + 2);
        out.push('"');
        out.push_str(value);
        out.push('"');
    }
}

/// Appends `,"key":` (keys are the caller's own: nothing to escape).
pub(crate) fn push_key(out: &mut String, key: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
}

/// Appends `n` in decimal. Why not `write!`: its formatting machinery was
/// 4-5 % of the store writer's CPU samples under load (`perf`, 0.6 and
/// 1.2 M deliveries/s in small rooms; docs/BENCHMARKS.md, issue 15).
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: always UTF-8.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or("0"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(value: &str) -> String {
        let mut out = String::new();
        push_str(&mut out, value);
        out
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        // Every ASCII byte at every place of a word and of the tail.
        for len in 1..=19 {
            for at in 0..len {
                for b in 0u8..0x80 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    let s = String::from_utf8(s).unwrap();
                    assert_eq!(written(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
        for s in [
            "",
            "héllo wörld, 你好 🎉🎉🎉🎉",
            "ends with a quote\"",
            "\u{7f}\u{80}\u{2028}\u{2029}",
            "tab\there, \\ and / too",
        ] {
            assert_eq!(written(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn the_word_checks_are_exact() {
        // Bytes just above each bound, with borrows from neighbours.
        for word in [
            [0x20u8; 8],
            [0x21, 0x20, 0x80, 0xff, 0x23, 0x5d, 0x5b, 0x20],
            [0xff; 8],
            [0x80; 8],
        ] {
            assert!(!needs_escape(&word), "{word:?}");
        }
        assert!(needs_escape(&[
            0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff
        ]));
        assert!(needs_escape(&[
            0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x1f
        ]));
    }

    #[test]
    fn numbers_are_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut out = String::from("x");
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }
}
