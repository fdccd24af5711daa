//! The metrics listener's address: a loopback TCP `ip:port` or a Unix socket path.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where `/metrics` is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAddress {
    /// A loopback `ip:port` (scrape it through a local agent or an authenticating proxy).
    Tcp(SocketAddr),
    /// A Unix socket (`unix:/path` or `/path`), created with mode 0660.
    Unix(PathBuf),
}

impl std::fmt::Display for MetricsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddress::Tcp(a) => write!(f, "{a}"),
            MetricsAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl MetricsAddress {
    /// Parses `127.0.0.1:9090`, `[::1]:9090`, `unix:/run/x.sock` or `/run/x.sock`.
    pub fn parse(s: &str) -> Result<MetricsAddress, String> {
        let path = s.strip_prefix("unix:").unwrap_or(s);
        if path.starts_with('/') {
            return Ok(MetricsAddress::Unix(PathBuf::from(path)));
        }
        if s.starts_with("unix:") {
            return Err("a unix socket path must be absolute".into());
        }
        let addr: SocketAddr = s.parse().map_err(|_| {
            "expected a loopback ip:port (127.0.0.1:9090, [::1]:9090) or a unix socket path"
                .to_owned()
        })?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{} is not a loopback address (metrics are served on loopback or a unix socket only)",
                addr.ip()
            ));
        }
        Ok(MetricsAddress::Tcp(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_unix_addresses_parse_and_others_are_refused() {
        assert_eq!(
            MetricsAddress::parse("127.0.0.1:9090"),
            Ok(MetricsAddress::Tcp("127.0.0.1:9090".parse().unwrap()))
        );
        assert!(MetricsAddress::parse("[::1]:1").is_ok());
        assert_eq!(
            MetricsAddress::parse("unix:/run/m.sock"),
            Ok(MetricsAddress::Unix("/run/m.sock".into()))
        );
        assert_eq!(
            MetricsAddress::parse("/run/m.sock"),
            Ok(MetricsAddress::Unix("/run/m.sock".into()))
        );
        for bad in [
            "0.0.0.0:9090",
            "10.1.2.3:80",
            "localhost:9090",
            "unix:rel",
            "9090",
            "",
        ] {
            assert!(MetricsAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
