//! Which addresses a webhook may target (§8, §12.9). Loopback, private, link-local and
//! otherwise internal IPv4 addresses are refused, and so is every IPv6 form that reaches
//! one: IPv4-mapped, -translated and -compatible addresses, NAT64, 6to4 and Teredo are
//! judged by the IPv4 address they carry; site-local, unique-local, link-local, multicast,
//! documentation and the other non-global ranges are refused outright. Each refusal names
//! its rule so that an operator can tell why, without echoing what a name resolved to.

use std::net::{IpAddr, Ipv4Addr};

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
