//! Which web pages may open a WebSocket here. A browser always sends the
//! page's `Origin` with an upgrade; without a check, any site a visitor
//! opens could chat through that visitor's browser (cross-site WebSocket
//! hijacking). Clients that are not browsers send no `Origin` and are let
//! through: they could forge one anyway.

use http::HeaderMap;
use http::header::{HOST, ORIGIN};

/// The origins allowed to open WebSockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Same origin only: the `Origin`'s host must be the request's `Host`
    /// (so the embedded page works behind any domain).
    SameHost,
    /// Any origin (`--allowed-origins '*'`).
    Any,
    /// These origins (`scheme://host[:port]`, compared without case), plus
    /// the same host.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Parses `--allowed-origins`: `*`, or a comma-separated list of
    /// `scheme://host[:port]`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw == "*" {
            return Ok(Self::Any);
        }
        let list: Vec<String> = raw
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        for o in &list {
            let host = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .ok_or_else(|| format!("origin {o:?} must start with http:// or https://"))?;
            if host.is_empty() || host.contains('/') {
                return Err(format!(
                    "origin {o:?} must be scheme://host[:port], no path"
                ));
            }
        }
        match list.is_empty() {
            true => Ok(Self::SameHost),
            false => Ok(Self::List(list)),
        }
    }

    /// `Ok` if the request's `Origin` may open a WebSocket; otherwise a
    /// sentence saying why not.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(()); // not a browser
        };
        if *self == Self::Any {
            return Ok(());
        }
        let origin = origin
            .to_str()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_ascii_lowercase();
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let same = origin_host.is_some() && origin_host == host.as_deref();
        let listed = matches!(self, Self::List(l) if l.contains(&origin));
        match same || listed {
            true => Ok(()),
            false => Err(format!(
                "pages from {origin:?} may not open a WebSocket here; \
                 the server allows its own origin{} (--allowed-origins)",
                match self {
                    Self::List(l) => format!(" and {}", l.join(", ")),
                    _ => String::new(),
                }
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn same_host_by_default_and_non_browsers_pass() {
        let same = AllowedOrigins::SameHost;
        assert!(
            same.check(&headers(Some("https://chat.example"), "chat.example"))
                .is_ok()
        );
        assert!(
            same.check(&headers(Some("http://127.0.0.1:8000"), "127.0.0.1:8000"))
                .is_ok()
        );
        assert!(same.check(&headers(None, "chat.example")).is_ok());
        assert!(
            same.check(&headers(Some("https://evil.example"), "chat.example"))
                .is_err()
        );
        assert!(same.check(&headers(Some("null"), "chat.example")).is_err());
        assert!(
            same.check(&headers(Some("https://chat.example:444"), "chat.example"))
                .is_err()
        );
    }

    #[test]
    fn a_list_and_any() {
        let list = AllowedOrigins::parse("https://app.example, http://localhost:3000/").unwrap();
        assert!(
            list.check(&headers(Some("https://APP.example"), "api.example"))
                .is_ok()
        );
        assert!(
            list.check(&headers(Some("http://localhost:3000"), "api.example"))
                .is_ok()
        );
        assert!(
            list.check(&headers(Some("https://api.example"), "api.example"))
                .is_ok()
        );
        assert!(
            list.check(&headers(Some("https://other.example"), "api.example"))
                .is_err()
        );
        let any = AllowedOrigins::parse("*").unwrap();
        assert!(
            any.check(&headers(Some("https://other.example"), "api.example"))
                .is_ok()
        );
        assert!(AllowedOrigins::parse("app.example").is_err());
        assert!(AllowedOrigins::parse("https://app.example/path").is_err());
    }
}
