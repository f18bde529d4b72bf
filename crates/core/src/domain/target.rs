//! Where Portico may send webhooks (server-side request forgery rules): addresses that
//! are loopback, private, shared (CGNAT), link-local (which holds the cloud metadata
//! endpoints), unspecified, multicast or reserved are refused unless an operator
//! allowlists them. Checked on the literal address when a subscription is saved, and on
//! every resolved address when a delivery connects, so DNS cannot smuggle one in.

use std::net::IpAddr;

use super::{Cidr, IpAllowlist};
use crate::Error;

#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allowed: IpAllowlist,
}

const BLOCKED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

impl TargetPolicy {
    /// `allowed`: networks an operator lets webhooks reach although they are private
    /// (e.g. `127.0.0.1/32` for a receiver on the same machine in development).
    pub fn new(allowed: IpAllowlist) -> TargetPolicy {
        TargetPolicy { allowed }
    }

    pub fn allowed(&self) -> &IpAllowlist {
        &self.allowed
    }

    /// Whether a webhook may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let blocked = BLOCKED.iter().any(|b| Cidr::parse(b).expect("valid constant").contains(ip));
        !blocked || self.allowed.entries().iter().any(|c| c.contains(ip))
    }

    /// Checks a callback URL's host when it is an address literal (names are checked
    /// when they resolve, at delivery).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Error> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
            Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
            Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            _ => return Ok(()),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Error::validation(
                "callback_url",
                format!("{ip} is a private, loopback, link-local or reserved address; an operator must allowlist it (messaging.allowed_private_targets)"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn private_targets_are_refused_unless_allowlisted() {
        let p = TargetPolicy::default();
        for ip in ["127.0.0.1", "10.1.2.3", "172.20.0.1", "192.168.1.1", "169.254.169.254", "100.100.100.200", "0.0.0.0", "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "224.0.0.1"] {
            assert!(!p.permits(ip.parse().unwrap()), "{ip} refused");
        }
        for ip in ["8.8.8.8", "203.0.113.9", "2001:4860::8888", "172.32.0.1"] {
            assert!(p.permits(ip.parse().unwrap()), "{ip} allowed");
        }
        let dev = TargetPolicy::new(IpAllowlist::parse("x", &["127.0.0.1/32".into()]).unwrap());
        assert!(dev.permits("127.0.0.1".parse().unwrap()));
        assert!(!dev.permits("127.0.0.2".parse().unwrap()));
        let e = p.check_url(&url::Url::parse("http://localhost:9/x").unwrap()).unwrap_err();
        assert!(matches!(e, Error::Validation { ref field, .. } if field == "callback_url"));
        assert!(p.check_url(&url::Url::parse("https://hooks.example.com/x").unwrap()).is_ok());
    }

    proptest! {
        #[test]
        fn mapped_v6_is_judged_as_v4(a in any::<u32>()) {
            let p = TargetPolicy::default();
            let v4 = std::net::Ipv4Addr::from(a);
            prop_assert_eq!(p.permits(IpAddr::V4(v4)), p.permits(IpAddr::V6(v4.to_ipv6_mapped())));
        }
    }
}
