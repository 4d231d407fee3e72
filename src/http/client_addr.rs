//! Who a request's client is, for per-address limits: the socket peer, or
//! behind one trusted reverse proxy the address that proxy saw. One
//! implementation for uploads, WebSocket upgrades and the accept loop, so
//! every limit counts the same client the same way.
//!
//! Addresses are grouped the way one host holds them: IPv4 as is, IPv6 by
//! its /64 (a host usually gets a whole /64, so counting single IPv6
//! addresses would let one host look like billions).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::HeaderMap;

/// The client address a request counts against: with `trust_proxy`, the
/// forwarded client (falling back to the peer when the header is missing or
/// unparsable), otherwise the peer itself.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trust_proxy: bool) -> IpAddr {
    match trust_proxy {
        true => forwarded_client(headers).unwrap_or(peer.ip()),
        false => peer.ip(),
    }
}

/// The client address of a request whose connection recorded its peer
/// ([`super::PeerAddr`], which the server's accept loop always sets).
pub fn request_client(
    extensions: &http::Extensions,
    headers: &HeaderMap,
    trust_proxy: bool,
) -> Option<IpAddr> {
    extensions
        .get::<super::PeerAddr>()
        .map(|super::PeerAddr(peer)| client_ip(*peer, headers, trust_proxy))
}

/// The address the proxy in front saw: the last entry of the last
/// `X-Forwarded-For` header (each proxy appends the address it was reached
/// from, so earlier entries are the client's own claims). `None` when the
/// header is missing or that entry is not an IP address.
pub fn forwarded_client(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

/// The key an address counts under: IPv4 (and IPv4-mapped IPv6) as is,
/// other IPv6 by its /64.
pub fn key_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_client_is_the_entry_the_proxy_added() {
        let mut headers = HeaderMap::new();
        assert_eq!(forwarded_client(&headers), None);
        headers.append("x-forwarded-for", "1.1.1.1, 10.0.0.7".parse().unwrap());
        assert_eq!(
            forwarded_client(&headers),
            Some("10.0.0.7".parse().unwrap())
        );
        headers.append("x-forwarded-for", " 2001:db8::1 ".parse().unwrap());
        assert_eq!(
            forwarded_client(&headers),
            Some("2001:db8::1".parse().unwrap())
        );
        headers.append("x-forwarded-for", "1.1.1.1, not-an-ip".parse().unwrap());
        assert_eq!(forwarded_client(&headers), None);
    }

    #[test]
    fn the_peer_counts_unless_a_proxy_is_trusted() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        assert_eq!(client_ip(peer, &headers, false), peer.ip());
        assert_eq!(
            client_ip(peer, &headers, true),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, &HeaderMap::new(), true), peer.ip());
    }

    #[test]
    fn ipv6_is_keyed_by_its_slash_64() {
        let key = |s: &str| key_of(s.parse().unwrap());
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:2"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("::ffff:10.0.0.9"), key("10.0.0.9"));
    }
}
