//! Where Parley will send a request a client named: only http(s) URLs whose host resolves to
//! public addresses, unless the operator allows private ones (`--push-allow-private-endpoints`,
//! for a UnifiedPush distributor on the LAN, or tests). Checked when a subscription is
//! registered and again at every connection (a resolver that filters addresses, so a name that
//! later resolves to 127.0.0.1 is refused too); redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an endpoint is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("the endpoint is not an http(s) URL with a host")]
    NotHttp,
    #[error("the endpoint's host does not resolve")]
    Unresolved,
    #[error("the endpoint is on a loopback or private address")]
    Private,
}

/// Whether `ip` is an address on the public internet (not loopback, private, link-local,
/// shared, multicast, unspecified or documentation space).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8)
}

/// Parses and checks an endpoint a client registers: http(s), a host, no credentials in it,
/// and (unless `allow_private`) every address it resolves to public.
pub async fn check_endpoint(endpoint: &str, allow_private: bool) -> Result<Url, EndpointError> {
    let url = Url::parse(endpoint).map_err(|_| EndpointError::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(str::is_empty)
        || !url.username().is_empty()
    {
        return Err(EndpointError::NotHttp);
    }
    if allow_private {
        return Ok(url);
    }
    let addrs = resolve_url(&url).await?;
    if addrs.iter().all(|a| is_public(a.ip())) { Ok(url) } else { Err(EndpointError::Private) }
}

/// An IP-literal host is not looked up by the client's resolver: checked here before a request.
pub fn check_literal(url: &Url, allow_private: bool) -> Result<(), EndpointError> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(_)) => return Ok(()),
        None => return Err(EndpointError::NotHttp),
    };
    if allow_private || is_public(ip) { Ok(()) } else { Err(EndpointError::Private) }
}

async fn resolve_url(url: &Url) -> Result<Vec<SocketAddr>, EndpointError> {
    let host = url.host_str().ok_or(EndpointError::NotHttp)?.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(std::time::Duration::from_secs(5), lookup).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<_> = addrs.collect();
            if addrs.is_empty() { Err(EndpointError::Unresolved) } else { Ok(addrs) }
        }
        _ => Err(EndpointError::Unresolved),
    }
}

/// The Web Push client's resolver: the system's, with non-public addresses removed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = addrs.into_iter().filter(|a| allow_private || is_public(a.ip())).collect();
            if kept.is_empty() {
                return Err(Box::new(EndpointError::Private) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "142.250.1.1", "2a00:1450:4001::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn endpoints_are_checked() {
        assert_eq!(check_endpoint("ftp://example.com/x", true).await, Err(EndpointError::NotHttp));
        assert_eq!(check_endpoint("not a url", true).await, Err(EndpointError::NotHttp));
        assert_eq!(check_endpoint("https://user@example.com/x", true).await, Err(EndpointError::NotHttp));
        assert_eq!(check_endpoint("http://127.0.0.1:9/x", false).await, Err(EndpointError::Private));
        assert_eq!(check_endpoint("http://localhost:9/x", false).await, Err(EndpointError::Private));
        assert_eq!(check_endpoint("http://[::1]:9/x", false).await, Err(EndpointError::Private));
        assert!(check_endpoint("http://127.0.0.1:9/x", true).await.is_ok());
    }
}
