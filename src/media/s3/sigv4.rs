//! AWS Signature Version 4 over `hmac` + `sha2`: the canonical request, the
//! string to sign, the signing key, and the two ways a request carries the
//! signature (an `Authorization` header for the server's own requests, a
//! presigned query for the URLs handed to browsers).
//!
//! Only what S3 needs: paths are encoded once (S3 does not double-encode),
//! query pairs and header values are the caller's, lowercase names and
//! trimmed values. The secret never leaves this module except as a derived
//! key, and [`Credentials`]' `Debug` shows none of it.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The payload hash of a presigned request (the body is not known when the
/// URL is made; its length can still be bound by signing `content-length`).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// An access key and its secret.
#[derive(Clone)]
pub struct Credentials {
    access_key: String,
    secret: String,
}

impl Credentials {
    /// The pair `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` name.
    pub fn new(access_key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            access_key: access_key.into(),
            secret: secret.into(),
        }
    }

    /// The public half.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// When a request is signed: `20150830T123600Z` and its date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp(String);

impl Timestamp {
    /// `t` in UTC.
    pub fn at(t: SystemTime) -> Self {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        Self(format!(
            "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        ))
    }

    /// Parses `20150830T123600Z` (the tests' fixed instants).
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == 16
            && s.as_bytes()[8] == b'T'
            && s.as_bytes()[15] == b'Z'
            && s.bytes()
                .enumerate()
                .all(|(i, b)| i == 8 || i == 15 || b.is_ascii_digit());
        ok.then(|| Self(s.to_owned()))
    }

    /// `20150830T123600Z`.
    pub fn amz_date(&self) -> &str {
        &self.0
    }

    /// `20150830`.
    pub fn date(&self) -> &str {
        &self.0[..8]
    }
}

/// Year, month, day of the `days`th day after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days from 1970-01-01 to a civil date (the inverse of [`civil_from_days`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Where a signature is valid: a region and a service (`s3`).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// `us-east-1`.
    pub region: &'a str,
    /// `s3`.
    pub service: &'a str,
}

/// A request as SigV4 sees it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The path, already percent-encoded as it goes on the wire.
    pub path: &'a str,
    /// Query pairs, not encoded.
    pub query: Vec<(String, String)>,
    /// Headers to sign: lowercase names, values as sent.
    pub headers: Vec<(String, String)>,
}

/// RFC 3986 unreserved characters stay, everything else is `%XX`
/// (uppercase); `/` stays only when `keep_slash` (paths).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b'/' if keep_slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The key that signs for one day, region and service.
pub fn signing_key(secret: &str, date: &str, scope: Scope<'_>) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, scope.region.as_bytes());
    let k_service = hmac(&k_region, scope.service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// Header names joined by `;`, sorted (the `SignedHeaders` value).
fn signed_headers(headers: &[(String, String)]) -> String {
    let mut names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.join(";")
}

/// The canonical request: method, path, sorted encoded query, sorted
/// headers with trimmed values, the signed header names, the payload hash.
pub fn canonical_request(req: &Request<'_>, payload_hash: &str) -> String {
    let mut query: Vec<(String, String)> = req
        .query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers: Vec<(&str, String)> = req
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    headers.sort();
    let mut canonical_headers = String::new();
    for (n, v) in &headers {
        let _ = writeln!(canonical_headers, "{n}:{v}");
    }
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.path,
        query.join("&"),
        canonical_headers,
        signed_headers(&req.headers),
        payload_hash
    )
}

/// The string to sign for a canonical request made at `time` in `scope`.
pub fn string_to_sign(time: &Timestamp, scope: Scope<'_>, canonical: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{}\n{}/{}/{}/aws4_request\n{}",
        time.amz_date(),
        time.date(),
        scope.region,
        scope.service,
        sha256_hex(canonical.as_bytes())
    )
}

fn signature(creds: &Credentials, time: &Timestamp, scope: Scope<'_>, canonical: &str) -> String {
    let key = signing_key(&creds.secret, time.date(), scope);
    hex(&hmac(
        &key,
        string_to_sign(time, scope, canonical).as_bytes(),
    ))
}

/// The `Authorization` header for `req`, whose headers must already
/// include `host`, `x-amz-date` (= `time`) and `x-amz-content-sha256`
/// (= `payload_hash`).
pub fn authorization(
    creds: &Credentials,
    time: &Timestamp,
    scope: Scope<'_>,
    req: &Request<'_>,
    payload_hash: &str,
) -> String {
    let canonical = canonical_request(req, payload_hash);
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{}/{}/{}/aws4_request, SignedHeaders={}, Signature={}",
        creds.access_key,
        time.date(),
        scope.region,
        scope.service,
        signed_headers(&req.headers),
        signature(creds, time, scope, &canonical)
    )
}

/// The encoded query string of a presigned URL for `req` (its own query
/// pairs, the `X-Amz-*` ones and `X-Amz-Signature`), valid for
/// `expires_secs` from `time`. Every header in `req.headers` (at least
/// `host`) must be sent exactly so by whoever uses the URL.
pub fn presign(
    creds: &Credentials,
    time: &Timestamp,
    scope: Scope<'_>,
    mut req: Request<'_>,
    expires_secs: u64,
) -> String {
    let credential = format!(
        "{}/{}/{}/{}/aws4_request",
        creds.access_key,
        time.date(),
        scope.region,
        scope.service
    );
    req.query.extend([
        ("X-Amz-Algorithm".to_owned(), "AWS4-HMAC-SHA256".to_owned()),
        ("X-Amz-Credential".to_owned(), credential),
        ("X-Amz-Date".to_owned(), time.amz_date().to_owned()),
        ("X-Amz-Expires".to_owned(), expires_secs.to_string()),
        (
            "X-Amz-SignedHeaders".to_owned(),
            signed_headers(&req.headers),
        ),
    ]);
    let canonical = canonical_request(&req, UNSIGNED_PAYLOAD);
    let sig = signature(creds, time, scope, &canonical);
    let mut pairs: Vec<String> = req
        .query
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.push(format!("X-Amz-Signature={sig}"));
    pairs.join("&")
}

#[cfg(test)]
mod tests {
    //! AWS's published examples: the IAM walk-through ("Examples of the
    //! complete Signature Version 4 signing process"), `get-vanilla` from
    //! the SigV4 test suite, and the S3 documentation's header-signed GET
    //! Object and presigned GET examples.
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn the_iam_example_signs_as_published() {
        let creds = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let time = Timestamp::parse("20150830T123600Z").unwrap();
        let scope = Scope {
            region: "us-east-1",
            service: "iam",
        };
        let req = Request {
            method: "GET",
            path: "/",
            query: h(&[("Action", "ListUsers"), ("Version", "2010-05-08")]),
            headers: h(&[
                (
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                ),
                ("host", "iam.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ]),
        };
        assert_eq!(sha256_hex(b""), EMPTY_HASH);
        let canonical = canonical_request(&req, EMPTY_HASH);
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        assert_eq!(
            hex(&signing_key(&creds.secret, "20150830", scope)),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
        let auth = authorization(&creds, &time, scope, &req, EMPTY_HASH);
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn get_vanilla_signs_as_published() {
        let creds = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let time = Timestamp::parse("20150830T123600Z").unwrap();
        let scope = Scope {
            region: "us-east-1",
            service: "service",
        };
        let req = Request {
            method: "GET",
            path: "/",
            query: Vec::new(),
            headers: h(&[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ]),
        };
        assert_eq!(
            canonical_request(&req, EMPTY_HASH),
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             host;x-amz-date\n"
                .to_owned()
                + EMPTY_HASH
        );
        assert!(
            authorization(&creds, &time, scope, &req, EMPTY_HASH).ends_with(
                "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
    }

    fn s3_example() -> (Credentials, Timestamp, Scope<'static>) {
        (
            Credentials::new(
                "AKIAIOSFODNN7EXAMPLE",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ),
            Timestamp::parse("20130524T000000Z").unwrap(),
            Scope {
                region: "us-east-1",
                service: "s3",
            },
        )
    }

    #[test]
    fn the_s3_get_object_example_signs_as_published() {
        let (creds, time, scope) = s3_example();
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: Vec::new(),
            headers: h(&[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_HASH),
                ("x-amz-date", "20130524T000000Z"),
            ]),
        };
        assert!(
            authorization(&creds, &time, scope, &req, EMPTY_HASH).ends_with(
                "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
                 Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            )
        );
    }

    #[test]
    fn the_s3_presigned_get_example_signs_as_published() {
        let (creds, time, scope) = s3_example();
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: Vec::new(),
            headers: h(&[("host", "examplebucket.s3.amazonaws.com")]),
        };
        let query = presign(&creds, &time, scope, req, 86_400);
        assert_eq!(
            query,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn timestamps_and_dates_round_trip() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        assert_eq!(Timestamp::at(t).amz_date(), "20150830T123600Z");
        for days in [-1, 0, 59, 60, 365, 11_016, 16_677, 20_789, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(Timestamp::parse("2015-08-30"), None);
    }

    #[test]
    fn paths_and_queries_encode_as_s3_expects() {
        assert_eq!(uri_encode("a b/c~d*é", true), "a%20b/c~d%2A%C3%A9");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        let debug = format!("{:?}", Credentials::new("AK", "very secret"));
        assert!(!debug.contains("very secret"), "{debug}");
    }
}
