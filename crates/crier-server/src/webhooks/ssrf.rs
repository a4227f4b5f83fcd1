//! Which addresses a webhook may target (§8, §12.9). Loopback, private, link-local and
//! otherwise internal IPv4 addresses are refused, and so is every IPv6 form that reaches
//! one: IPv4-mapped, -translated and -compatible addresses, NAT64, 6to4 and Teredo are
//! judged by the IPv4 address they carry; site-local, unique-local, link-local, multicast,
//! documentation and the other non-global ranges are refused outright. Each refusal names
//! its rule so that an operator can tell why, without echoing what a name resolved to.
//!
//! URLs are parsed the WHATWG way (so decimal, octal and hex IPv4 forms become plain
//! addresses) and refused when they name or resolve to such an address, at creation and
//! again at connect time through the delivery client's resolver (DNS rebinding), unless
//! `webhooks.allow_private`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::service::Error;

/// Whether an address is internal (never a webhook target unless allowed).
pub fn blocked_ip(ip: IpAddr) -> bool {
    blocked_reason(ip).is_some()
}

/// Why an IPv4 address is no webhook target, as a phrase ("a loopback address"), or `None`
/// for a public address.
fn v4_reason(v4: Ipv4Addr) -> Option<String> {
    let o = v4.octets();
    let why = if v4.is_loopback() {
        "a loopback address"
    } else if v4.is_private() {
        "a private address"
    } else if v4.is_link_local() {
        "a link-local address"
    } else if o[0] == 0 {
        "an unspecified (\"this network\") address"
    } else if v4.is_broadcast() {
        "the broadcast address"
    } else if v4.is_multicast() {
        "a multicast address"
    } else if v4.is_documentation() {
        "a documentation address"
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        "a shared (carrier-grade NAT) address"
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        "a benchmarking address"
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        "an IETF protocol assignment address"
    } else if o[0] == 192 && o[1] == 88 && o[2] == 99 {
        "a 6to4 relay anycast address"
    } else if o[0] >= 240 {
        "a reserved address"
    } else {
        return None;
    };
    Some(why.to_string())
}

fn v4_of(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

/// Why an address is no webhook target (§8, §12.9), naming the rule, or `None`. IPv6 forms
/// that carry an IPv4 address are judged by the address they carry.
pub fn blocked_reason(ip: IpAddr) -> Option<String> {
    let v6 = match ip {
        IpAddr::V4(v4) => return v4_reason(v4),
        IpAddr::V6(v6) => v6,
    };
    let s = v6.segments();
    let embedding =
        |form: &str, v4: Ipv4Addr| v4_reason(v4).map(|r| format!("{form} embedding {r}"));
    if v6.is_unspecified() {
        return Some("the unspecified address".into());
    }
    if v6.is_loopback() {
        return Some("a loopback address".into());
    }
    if s[..5] == [0; 5] && s[5] == 0xffff {
        return embedding("an IPv4-mapped address", v4_of(s[6], s[7]));
    }
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return embedding("an IPv4-translated address", v4_of(s[6], s[7]))
            .or_else(|| Some("an IPv4-translated address (::ffff:0:0:0/96)".into()));
    }
    if s[..6] == [0; 6] {
        return Some("an IPv4-compatible address (::/96, deprecated)".into());
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        if s[2] == 1 {
            return Some("a local-use NAT64 address (64:ff9b:1::/48)".into());
        }
        if s[2..6] == [0; 4] {
            return embedding("a NAT64 address", v4_of(s[6], s[7]));
        }
        return Some("a NAT64 address outside 64:ff9b::/96".into());
    }
    if s[0] == 0x2002 {
        return embedding("a 6to4 address", v4_of(s[1], s[2]));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        // Teredo: the server's address in clear, the client's with every bit flipped.
        return embedding("a Teredo address", v4_of(s[2], s[3]))
            .or_else(|| embedding("a Teredo address", v4_of(!s[6], !s[7])))
            .or_else(|| Some("a Teredo address (2001::/32), a tunnel to an IPv4 host".into()));
    }
    let why = if s[0] < 0x0100 {
        "a reserved address (::/8)"
    } else if s[0] == 0x0100 && s[1..4] == [0; 3] {
        "a discard-only address (100::/64)"
    } else if (s[0] & 0xff00) == 0xff00 {
        "a multicast address"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "a link-local address"
    } else if (s[0] & 0xffc0) == 0xfec0 {
        "a site-local address (fec0::/10)"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "a unique-local address (fc00::/7)"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "a documentation address (2001:db8::/32)"
    } else if s[0] == 0x3fff && s[1] < 0x1000 {
        "a documentation address (3fff::/20)"
    } else if s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0 {
        "a benchmarking address (2001:2::/48)"
    } else if s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010 {
        "an ORCHID address (2001:10::/28)"
    } else {
        return None;
    };
    Some(why.to_string())
}

fn refused(message: impl Into<String>) -> Error {
    Error::invalid("url_not_allowed", message)
}

/// Validates a webhook URL; with `allow_private` false also resolves it and refuses internal
/// addresses.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<reqwest::Url, Error> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| Error::invalid("invalid_url", format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid(
            "invalid_url",
            "a webhook URL is http:// or https://",
        ));
    }
    let host = url
        .host()
        .ok_or_else(|| Error::invalid("invalid_url", "a webhook URL needs a host"))?;
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host {
        url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
        url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
        url::Host::Domain(d) => tokio::net::lookup_host((d, port))
            .await
            .map_err(|e| refused(format!("cannot resolve {d:?}: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(refused("the webhook host resolves to no address"));
    }
    // The refusal names the rule, never the address a name resolved to.
    let named = if matches!(host, url::Host::Domain(_)) {
        "the webhook host resolves to"
    } else {
        "the webhook URL points at"
    };
    if let Some(why) = addrs.iter().find_map(|ip| blocked_reason(*ip)) {
        return Err(refused(format!(
            "{named} {why}; set webhooks.allow_private to allow internal targets"
        )));
    }
    Ok(url)
}

/// The URL of a delivery attempt. Names are checked by the client's guarded resolver as it
/// connects; addresses written as IP literals never reach a resolver, so they are checked
/// here.
pub(crate) fn target(raw: &str, allow_private: bool) -> Result<reqwest::Url, Error> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| Error::invalid("invalid_url", format!("{raw:?} is not a URL: {e}")))?;
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(why) = literal.filter(|_| !allow_private).and_then(blocked_reason) {
        return Err(refused(format!("the webhook URL points at {why}")));
    }
    Ok(url)
}

/// The client's resolver: refuses internal addresses at connect time (DNS rebinding).
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| !blocked_ip(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves only to internal addresses").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for deliveries: no redirects, the configured timeout, guarded DNS.
pub fn client(allow_private: bool, timeout: Duration) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(concat!("crier/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        b = b.dns_resolver(Arc::new(GuardedResolver));
    }
    b.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot build the webhook client with its options; using defaults");
        reqwest::Client::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(s: &str) -> Option<String> {
        blocked_reason(s.parse().unwrap())
    }

    #[test]
    fn every_internal_form_is_named() {
        for (addr, rule) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "carrier-grade"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            (
                "::ffff:127.0.0.1",
                "IPv4-mapped address embedding a loopback",
            ),
            (
                "::ffff:0:127.0.0.1",
                "IPv4-translated address embedding a loopback",
            ),
            ("::127.0.0.1", "IPv4-compatible"),
            ("::8.8.8.8", "IPv4-compatible"),
            ("64:ff9b::10.0.0.1", "NAT64 address embedding a private"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("2002:7f00:1::", "6to4 address embedding a loopback"),
            ("2002:a00:1::", "6to4 address embedding a private"),
            ("2001::7f00:1", "Teredo"),
            ("2001:0:7f00:1::", "Teredo address embedding a loopback"),
            ("2001::", "Teredo"),
            ("fec0::1", "site-local"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("100::1", "discard-only"),
        ] {
            let got = why(addr).unwrap_or_else(|| panic!("{addr} is not refused"));
            assert!(got.contains(rule), "{addr}: {got:?} does not name {rule:?}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "2002:808:808::1",
            "64:ff9b::8.8.8.8",
            "2a00:1450::1",
        ] {
            assert_eq!(why(addr), None, "{addr}");
        }
    }
}
