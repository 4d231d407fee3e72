//! The small parsers at the edge, each with what it promises: names
//! (`src/hub/names.rs`), a `Range` header (`src/http/download.rs`), upload
//! and preview names (`src/media/names.rs`), a client's file name made safe
//! to show, the `--allowed-origins` list, open mode's claims, tokens
//! (`src/auth/jwt.rs`: whatever a client sends, and a signed token read
//! back as signed), a file's kind from its bytes and the text check in any
//! chunking (`src/media/sniff.rs`), and what an S3 server sends and is
//! sent (`src/media/s3/`: its dates, read back as written; its XML's text;
//! keys percent-encoded for signing).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use roomcast::auth::jwt::{Issue, sign, verify};
use roomcast::auth::{AllowedOrigins, Claim, Secret};
use roomcast::http::download::RangeAnswer;
use roomcast::hub::{Emoji, RoomName, UserName};
use roomcast::media::s3::client::{
    parse_http_date, parse_iso8601, xml_unescape, xml_value, xml_values,
};
use roomcast::media::s3::sigv4::{civil_from_days, days_from_civil, uri_encode};
use roomcast::media::sniff::{TextCheck, sniff};
use roomcast::media::{DisplayName, MAX_DISPLAY_CHARS, PreviewName, StoredName};

#[derive(Arbitrary, Debug)]
enum Edge<'a> {
    Names(&'a str),
    Range(Option<&'a str>, u64),
    UploadName(&'a str),
    DisplayName(Option<&'a str>),
    Origins(&'a str),
    Claim(&'a str),
    Token(&'a str, u64),
    Signed {
        sub: &'a str,
        rooms: Vec<String>,
        moderator: bool,
        iat: u64,
        exp: u64,
    },
    Sniff(&'a [u8], Vec<u8>),
    Dates(&'a str),
    Time(u64),
    Xml(&'a str, &'a str),
    Key(&'a str, bool),
}

/// The latest second S3's dates can name: the end of year 9999.
const LAST_SECOND: u64 = 253_402_300_799;

fn dates_as_written(t: u64) {
    let t = t % (LAST_SECOND + 1);
    let days = i64::try_from(t / 86_400).unwrap();
    let (y, m, d) = civil_from_days(days);
    assert_eq!(days_from_civil(y, m, d), days, "{t}");
    let (h, mi, s) = (t % 86_400 / 3600, t % 3600 / 60, t % 60);
    let iso = format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000Z");
    assert_eq!(parse_iso8601(&iso), Some(t), "{iso}");
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[m as usize - 1];
    let http = format!("Thu, {d:02} {month} {y:04} {h:02}:{mi:02}:{s:02} GMT");
    assert_eq!(parse_http_date(&http), Some(t), "{http}");
}

fn xml_text(xml: &str, tag: &str) {
    let all: Vec<&str> = xml_values(xml, tag).take(xml.len() + 1).collect();
    assert!(all.len() <= xml.len(), "{xml:?} {tag:?}");
    assert_eq!(xml_value(xml, tag), all.first().copied());
    // Text escaped as XML reads back as it was.
    let escaped = xml
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;");
    assert_eq!(xml_unescape(&escaped), xml);
}

fn key_encoded(key: &str, keep_slash: bool) {
    let encoded = uri_encode(key, keep_slash);
    let mut decoded = Vec::new();
    let mut bytes = encoded.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                assert!(hex.iter().all(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F')));
                let hex = std::str::from_utf8(&hex).unwrap();
                decoded.push(u8::from_str_radix(hex, 16).unwrap());
            }
            b'/' => {
                assert!(keep_slash, "a slash left in {encoded:?}");
                decoded.push(b);
            }
            _ => {
                assert!(
                    b.is_ascii_alphanumeric() || b"-_.~".contains(&b),
                    "{encoded:?}"
                );
                decoded.push(b);
            }
        }
    }
    assert_eq!(decoded, key.as_bytes());
}

fn secret() -> Secret {
    Secret::new(b"a secret of thirty-two bytes, at least".to_vec()).unwrap()
}

fn names(raw: &str) {
    if let Ok(room) = RoomName::parse(raw) {
        assert!(!room.shown().is_empty() && room.shown().chars().count() <= RoomName::MAX_CHARS);
        assert_eq!(room.shown(), room.shown().trim());
        assert!(!room.as_str().contains('/') && !room.as_str().chars().any(char::is_control));
        // The name it shows is the same room.
        let again = RoomName::parse(room.shown()).expect("a room's shown name is a room name");
        assert_eq!(again.as_str(), room.as_str(), "{raw:?}");
    }
    if let Ok(user) = UserName::parse(raw) {
        let n = user.as_str().chars().count();
        assert!((1..=UserName::MAX_CHARS).contains(&n));
        assert!(!user.as_str().chars().any(char::is_control));
        assert_eq!(UserName::parse(user.as_str()).as_ref(), Ok(&user));
    }
    if let Ok(emoji) = Emoji::parse(raw) {
        assert!((1..=Emoji::MAX_BYTES).contains(&emoji.as_str().len()));
        assert!(
            !emoji
                .as_str()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        );
    }
}

/// A name that is safe as one path segment of the uploads directory.
fn safe_file_name(name: &str) {
    assert!(!name.is_empty() && !name.starts_with('.') && !name.contains(".."));
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    );
}

fn tokens_as_signed(sub: &str, rooms: &[String], moderator: bool, iat: u64, exp: u64) {
    let issue = Issue {
        sub,
        rooms,
        moderator,
        iat,
        exp,
    };
    let token = sign(&issue, &secret());
    // Read back before it expires: valid exactly when what it says is.
    let Ok(grant) = verify(&token, &secret(), iat.min(exp)) else {
        assert!(
            UserName::parse(sub).is_err()
                || rooms
                    .iter()
                    .any(|r| !r.ends_with('*') && RoomName::parse(r).is_err())
                || token.len() > roomcast::auth::jwt::MAX_TOKEN_BYTES,
            "a token signed with valid claims was refused: {issue:?}"
        );
        return;
    };
    assert_eq!(grant.sub.as_str(), UserName::parse(sub).unwrap().as_str());
    assert_eq!(
        (grant.moderator, grant.exp, grant.rooms.len()),
        (moderator, exp, rooms.len())
    );
    // Any other secret, or one byte changed, and it is refused.
    let other = Secret::new(b"another secret of thirty-two bytes".to_vec()).unwrap();
    assert!(verify(&token, &other, iat.min(exp)).is_err());
}

fn text_check_in_pieces(bytes: &[u8], cuts: &[u8]) {
    let mut whole = TextCheck::default();
    let whole_ok = whole.feed(bytes) && whole.finish();
    let mut pieces = TextCheck::default();
    let (mut rest, mut ok) = (bytes, true);
    for &cut in cuts.iter().cycle().take(bytes.len() + 1) {
        let (piece, tail) = rest.split_at(usize::from(cut).min(rest.len()));
        ok &= pieces.feed(piece);
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    if !rest.is_empty() {
        ok &= pieces.feed(rest);
    }
    assert_eq!(
        whole_ok,
        ok && pieces.finish(),
        "{bytes:?} in pieces {cuts:?}"
    );
}

fuzz_target!(|edge: Edge<'_>| match edge {
    Edge::Names(raw) => names(raw),
    Edge::Range(value, len) => match RangeAnswer::parse(value, len) {
        RangeAnswer::Part { start, end } => assert!(start <= end && end < len, "{value:?} {len}"),
        RangeAnswer::Unsatisfiable | RangeAnswer::Full => {}
    },
    Edge::UploadName(raw) => {
        if let Some(name) = StoredName::parse(raw) {
            assert_eq!(name.as_str(), raw);
            safe_file_name(raw);
        }
        if let Some(preview) = PreviewName::parse(raw) {
            assert_eq!(preview.as_str(), raw);
            safe_file_name(raw);
            safe_file_name(preview.of().as_str());
        }
    }
    Edge::DisplayName(raw) => {
        let shown = DisplayName::sanitize(raw);
        let s = shown.as_str();
        assert!(
            !s.is_empty() && s.chars().count() <= MAX_DISPLAY_CHARS,
            "{raw:?} -> {s:?}"
        );
        assert!(!s.contains(['/', '\\']) && !s.chars().any(char::is_control));
        assert!(
            s.chars().any(|c| c != '.') && s == s.trim(),
            "{raw:?} -> {s:?}"
        );
    }
    Edge::Origins(raw) => {
        let _ = AllowedOrigins::parse(raw);
    }
    Edge::Claim(raw) => {
        if let Ok(claim) = Claim::parse(raw) {
            assert_eq!(claim.as_str(), raw);
            assert!(claim.identity().as_str().starts_with("c:"));
        }
    }
    Edge::Token(raw, now) => {
        if let Ok(grant) = verify(raw, &secret(), now) {
            panic!("a token nobody signed was accepted: {raw:?} {grant:?}");
        }
    }
    Edge::Signed {
        sub,
        rooms,
        moderator,
        iat,
        exp,
    } => tokens_as_signed(sub, &rooms, moderator, iat, exp),
    Edge::Sniff(bytes, cuts) => {
        let _ = sniff(bytes);
        text_check_in_pieces(bytes, &cuts);
    }
    Edge::Dates(raw) => {
        let _ = parse_iso8601(raw);
        let _ = parse_http_date(raw);
    }
    Edge::Time(t) => dates_as_written(t),
    Edge::Xml(xml, tag) => xml_text(xml, tag),
    Edge::Key(key, keep_slash) => key_encoded(key, keep_slash),
});
