//! [`InsecureRegistries`]: which registries are contacted without TLS verification (and
//! may speak plain HTTP). design.md "Insecure registries", CRI-O's `isSecureIndex`.
//!
//! The configured list mixes CIDRs and `host[:port]` entries; `127.0.0.0/8` and `::1/128`
//! are always in it. Unlike the original, no DNS lookup is ever made: a DNS answer must not
//! be able to switch TLS verification off. A hostname is insecure only when it is listed or
//! is `localhost`; CIDRs apply to literal IP addresses only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::NameError;
use super::grammar::parse_domain;

/// The insecure-registries setting, validated.
#[derive(Clone, Debug)]
pub struct InsecureRegistries {
    cidrs: Vec<IpNet>,
    hosts: Vec<HostEntry>,
}

/// A `host[:port]` entry; without a port it covers every port of the host.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostEntry {
    host: Host,
    port: Option<u16>,
}

/// A host as compared: names in lower case, addresses in canonical form.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Name(String),
    Ip(IpAddr),
}

impl InsecureRegistries {
    /// Validates `entries`: each a CIDR (`10.0.0.0/8`, `fd00::/8`), an IP address, or a
    /// `host[:port]` as it appears in an image name (`myreg:5000`, `[fd00::1]:5000`).
    pub fn new(entries: &[String]) -> Result<Self, NameError> {
        let mut registries = InsecureRegistries::default();
        for entry in entries {
            match parse_entry(entry) {
                Ok(Entry::Cidr(net)) => registries.cidrs.push(net),
                Ok(Entry::Host(host)) => registries.hosts.push(host),
                Err(reason) => {
                    return Err(NameError::InvalidInsecureEntry {
                        entry: entry.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(registries)
    }

    /// Whether `registry` (an `ImageName::registry()` string: `host`, `host:port`,
    /// `[::1]:5000`) is insecure: listed literally (an entry without a port covers every
    /// port), a literal IP inside an insecure CIDR, or `localhost`. A string that is not a
    /// valid registry is secure.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let Ok((host, port)) = split_host(registry) else {
            return false;
        };
        if self
            .hosts
            .iter()
            .any(|e| e.host == host && (e.port.is_none() || e.port == port))
        {
            return true;
        }
        match host {
            Host::Ip(ip) => self.is_insecure_ip(ip),
            Host::Name(name) => name == "localhost",
        }
    }

    /// Whether `ip` lies in an insecure CIDR (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn is_insecure_ip(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.cidrs
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }
}

impl Default for InsecureRegistries {
    /// Loopback only: `127.0.0.0/8` and `::1/128`.
    fn default() -> Self {
        InsecureRegistries {
            cidrs: vec![
                IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
                IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
            ],
            hosts: Vec::new(),
        }
    }
}

enum Entry {
    Cidr(IpNet),
    Host(HostEntry),
}

fn parse_entry(entry: &str) -> Result<Entry, String> {
    if entry.is_empty() {
        return Err("empty".to_owned());
    }
    if entry.contains("://") {
        return Err("a URL scheme is not allowed: give host[:port] or a CIDR".to_owned());
    }
    if entry.contains('/') {
        return entry
            .parse::<IpNet>()
            .map(|net| Entry::Cidr(net.trunc()))
            .map_err(|_| {
                "not a valid CIDR (expected an address and a prefix length, e.g. 10.0.0.0/8)"
                    .to_owned()
            });
    }
    // A bare address, including an unbracketed IPv6 one, covers every port.
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Ok(Entry::Cidr(IpNet::from(ip.to_canonical())));
    }
    match split_host(entry)? {
        (Host::Ip(ip), None) => Ok(Entry::Cidr(IpNet::from(ip))),
        (host, port) => Ok(Entry::Host(HostEntry { host, port })),
    }
}

/// Splits a registry domain into a comparable host and its port.
fn split_host(domain: &str) -> Result<(Host, Option<u16>), String> {
    let parsed = parse_domain(domain)?;
    let host = if parsed.ipv6 {
        parsed
            .host
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip).to_canonical()))
            .map_err(|_| format!("invalid IPv6 address {:?}", parsed.host))?
    } else if let Ok(ip) = parsed.host.parse::<Ipv4Addr>() {
        Host::Ip(IpAddr::V4(ip))
    } else {
        Host::Name(parsed.host.to_ascii_lowercase())
    };
    Ok((host, parsed.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insecure(entries: &[&str]) -> InsecureRegistries {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        InsecureRegistries::new(&entries).unwrap()
    }

    fn check(registries: &InsecureRegistries, cases: &[(&str, bool)]) {
        for (registry, want) in cases {
            assert_eq!(registries.is_insecure(registry), *want, "{registry:?}");
        }
    }

    #[test]
    fn loopback_is_always_insecure() {
        for r in [
            InsecureRegistries::default(),
            insecure(&[]),
            insecure(&["10.0.0.0/8"]),
        ] {
            check(
                &r,
                &[
                    ("127.0.0.1", true),
                    ("127.0.0.1:5000", true),
                    ("127.0.0.2:5000", true),
                    ("127.255.255.254", true),
                    ("[::1]", true),
                    ("[::1]:5000", true),
                    ("[0:0:0:0:0:0:0:1]:5000", true),
                    ("[::ffff:7f00:1]:5000", true),
                    ("localhost", true),
                    ("localhost:5000", true),
                    ("LocalHost:5000", true),
                    ("128.0.0.1", false),
                    ("[::2]:5000", false),
                    ("docker.io", false),
                    ("quay.io", false),
                ],
            );
        }
    }

    #[test]
    fn cidrs_cover_literal_ips_only() {
        let r = insecure(&["10.0.0.0/8", "192.168.1.7/16", "fd00::/8"]);
        check(
            &r,
            &[
                ("10.1.2.3", true),
                ("10.1.2.3:5000", true),
                ("11.0.0.1:5000", false),
                ("192.168.200.1:443", true), // host bits in the entry are ignored
                ("192.169.0.1", false),
                ("[fd12::1]:5000", true),
                ("[fe80::1]:5000", false),
                ("[::ffff:a00:1]", true),
                // A name that might resolve into 10/8 is not looked up.
                ("ten.example.com", false),
                ("10.example.com:5000", false),
            ],
        );
    }

    #[test]
    fn literal_hosts_match_with_and_without_port() {
        let r = insecure(&[
            "myreg:5000",
            "anyport.example.com",
            "[fd00::1]:5000",
            "10.9.9.9:80",
        ]);
        check(
            &r,
            &[
                ("myreg:5000", true),
                ("MyReg:5000", true),
                ("myreg", false),
                ("myreg:5001", false),
                ("anyport.example.com", true),
                ("anyport.example.com:5000", true),
                ("sub.anyport.example.com", false),
                ("[fd00::1]:5000", true),
                ("[fd00:0::1]:5000", true),
                ("[fd00::1]:5001", false),
                ("10.9.9.9:80", true),
                ("10.9.9.9:81", false),
            ],
        );
    }

    #[test]
    fn bare_addresses_cover_every_port() {
        let r = insecure(&["10.9.9.9", "fd00::7", "[fd00::8]"]);
        check(
            &r,
            &[
                ("10.9.9.9", true),
                ("10.9.9.9:5000", true),
                ("10.9.9.8", false),
                ("[fd00::7]:5000", true),
                ("[fd00::8]", true),
                ("[fd00::9]", false),
            ],
        );
    }

    #[test]
    fn hostnames_are_never_resolved() {
        // Names that would resolve to loopback through DNS or /etc/hosts stay secure.
        let r = insecure(&["0.0.0.0/0", "::/0"]);
        check(
            &r,
            &[
                ("1.2.3.4", true),
                ("[2001:db8::1]", true),
                ("ip6-localhost", false),
                ("localhost.localdomain", false),
                ("registry.example.com", false),
            ],
        );
    }

    #[test]
    fn invalid_registry_strings_are_secure() {
        let r = insecure(&["0.0.0.0/0"]);
        check(
            &r,
            &[
                ("", false),
                ("bad host", false),
                ("[::1", false),
                ("a:b", false),
            ],
        );
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("http://myreg", "scheme"),
            ("10.0.0.0/33", "not a valid CIDR"),
            ("10.0.0/8", "not a valid CIDR"),
            ("myreg/8", "not a valid CIDR"),
            ("myreg:port", "invalid registry port"),
            ("myreg:70000", "out of range"),
            ("my reg", "invalid registry host"),
            (" myreg", "invalid registry host"),
            ("[fd00::1", "unterminated"),
        ];
        for (entry, want) in cases {
            match InsecureRegistries::new(&[entry.to_owned()]) {
                Err(NameError::InvalidInsecureEntry { entry: e, reason }) => {
                    assert_eq!(e, entry);
                    assert!(
                        reason.contains(want),
                        "{entry:?}: {reason:?} lacks {want:?}"
                    );
                }
                other => panic!("{entry:?}: got {other:?}"),
            }
        }
    }
}
