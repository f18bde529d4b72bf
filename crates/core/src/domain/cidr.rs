use std::{fmt, net::IpAddr, str::FromStr};

use crate::Error;

/// An IPv4 or IPv6 network in CIDR notation. A bare address means a single host
/// (`/32`, `/128`). Host bits beyond the prefix must be zero, so that what a merchant
/// typed is exactly what is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(input: &str) -> Result<Cidr, Error> {
        let bad = |why: String| Err(Error::validation("cidr", why));
        let s = input.trim();
        let (addr_part, prefix_part) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = match IpAddr::from_str(addr_part) {
            Ok(a) => a,
            Err(_) => return bad(format!("{s:?} is not an IPv4 or IPv6 address or network")),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_part {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return bad(format!("prefix length must be 0 to {max}")),
            },
            Some(_) => return bad(format!("prefix length must be a number from 0 to {max}")),
        };
        let network = mask(addr, prefix);
        if network != addr {
            return bad(format!("host bits are set; did you mean {network}/{prefix}?"));
        }
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix as u32) };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An app's IP allowlist. Empty means every address may call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist(Vec<Cidr>);

impl IpAllowlist {
    pub const MAX_ENTRIES: usize = 100;

    /// Parses the list, naming the entry that fails as `{field}[i]`; duplicates collapse.
    pub fn parse(field: &str, entries: &[String]) -> Result<IpAllowlist, Error> {
        if entries.len() > Self::MAX_ENTRIES {
            return Err(Error::validation(field, format!("at most {} entries", Self::MAX_ENTRIES)));
        }
        let mut out: Vec<Cidr> = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let cidr = Cidr::parse(e).map_err(|err| err.at(&format!("{field}[{i}]")))?;
            if !out.contains(&cidr) {
                out.push(cidr);
            }
        }
        Ok(IpAllowlist(out))
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.is_empty() || self.0.iter().any(|c| c.contains(ip))
    }

    pub fn entries(&self) -> &[Cidr] {
        &self.0
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|c| c.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn parses_and_matches() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()), "IPv4-mapped IPv6 matches");
        assert_eq!(Cidr::parse("192.168.1.7").unwrap().to_string(), "192.168.1.7/32");
        assert_eq!(Cidr::parse("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(!Cidr::parse("2001:db8::/32").unwrap().contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn rejects_with_reasons() {
        let e = Cidr::parse("10.1.2.3/16").unwrap_err().to_string();
        assert!(e.contains("10.1.0.0/16"), "{e}");
        for bad in ["", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "300.1.1.1", "::/129", "abc", "10.0.0.0/8/8", "10.0.0.0/ 8"] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn allowlist_names_the_entry() {
        let e = IpAllowlist::parse("ip_allowlist", &["10.0.0.0/8".into(), "nope".into()]).unwrap_err();
        assert!(matches!(e, Error::Validation { ref field, .. } if field == "ip_allowlist[1]"), "{e:?}");
        assert!(IpAllowlist::default().allows("1.2.3.4".parse().unwrap()));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,60}") {
            let _ = Cidr::parse(&s);
        }

        #[test]
        fn v4_display_round_trips_and_contains_its_network(a in any::<u32>(), p in 0u8..=32) {
            let net = mask(IpAddr::V4(Ipv4Addr::from(a)), p);
            let c = Cidr::parse(&format!("{net}/{p}")).unwrap();
            prop_assert_eq!(Cidr::parse(&c.to_string()).unwrap(), c);
            prop_assert!(c.contains(IpAddr::V4(Ipv4Addr::from(a))));
        }

        #[test]
        fn v6_contains_matches_prefix_arithmetic(a in any::<u128>(), b in any::<u128>(), p in 0u8..=128) {
            let net = mask(IpAddr::V6(Ipv6Addr::from(a)), p);
            let c = Cidr::parse(&format!("{net}/{p}")).unwrap();
            let shift = 128 - p as u32;
            let same = if p == 0 { true } else { (a >> shift) == (b >> shift) };
            let ip = IpAddr::V6(Ipv6Addr::from(b));
            // IPv4-mapped addresses are compared as IPv4 and never match an IPv6 network.
            if Ipv6Addr::from(b).to_ipv4_mapped().is_none() {
                prop_assert_eq!(c.contains(ip), same);
            }
        }
    }
}
