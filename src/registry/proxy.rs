//! Corporate HTTP proxies: `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (or their lower-case
//! forms) read once from the daemon's environment, as containerd and CRI-O take them from
//! their systemd units. `NO_PROXY` entries are host names (matching the host and its
//! subdomains; a leading `.` is the same), IP addresses, CIDRs (`10.0.0.0/8`), any of them
//! with a `:port`, and `*` (no proxy at all). Loopback (`localhost`, 127.0.0.0/8, ::1) is
//! never proxied, whatever `NO_PROXY` says: a node-local mirror or cache stays local.
//!
//! A proxy URL can carry `user:password@`; only its host and port are ever shown.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bypass {
    All,
    /// A domain and its subdomains, lower case, without a leading dot.
    Domain(String, Option<u16>),
    Net(IpNet, Option<u16>),
}

/// The proxies of the environment.
#[derive(Debug, Clone, Default)]
pub struct ProxyConf {
    https: Option<reqwest::Url>,
    http: Option<reqwest::Url>,
    bypass: Vec<Bypass>,
}

/// A proxy variable that is not a URL.
#[derive(Debug, thiserror::Error)]
#[error("{var} is not a proxy URL (scheme://host:port): {reason}")]
pub struct ProxyError {
    var: &'static str,
    reason: String,
}

fn var(
    names: [&'static str; 2],
    get: &impl Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    names
        .into_iter()
        .find_map(|n| get(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
}

fn proxy_url(var: &'static str, value: &str) -> Result<reqwest::Url, ProxyError> {
    let value = value.trim();
    // As curl and Go do: a bare host:port means http://host:port.
    let text = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let url = reqwest::Url::parse(&text).map_err(|e| ProxyError {
        var,
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ProxyError {
            var,
            reason: format!("scheme {} with host {:?}", url.scheme(), url.host_str()),
        });
    }
    Ok(url)
}

fn split_port(entry: &str) -> (&str, Option<u16>) {
    // [v6]:port, host:port, v4:port; a bare IPv6 address has several colons.
    if let Some(rest) = entry.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        return (host, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

fn parse_bypass(list: &str) -> Vec<Bypass> {
    let mut out = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "*" {
            out.push(Bypass::All);
            continue;
        }
        // A CIDR first (its '/' would confuse the port split).
        if let Ok(net) = entry.parse::<IpNet>() {
            out.push(Bypass::Net(net, None));
            continue;
        }
        let (host, port) = split_port(entry);
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(Bypass::Net(IpNet::from(ip), port));
        } else if let Ok(net) = host.parse::<IpNet>() {
            out.push(Bypass::Net(net, port));
        } else {
            let domain = host.trim_start_matches("*.").trim_start_matches('.');
            if !domain.is_empty() {
                out.push(Bypass::Domain(domain.to_ascii_lowercase(), port));
            }
        }
    }
    out
}

impl ProxyConf {
    /// The proxies the daemon's environment names.
    pub fn from_env() -> Result<ProxyConf, ProxyError> {
        ProxyConf::from_vars(|k| std::env::var(k).ok())
    }

    /// The proxies `get` gives for the variables (for tests and `from_env`).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<ProxyConf, ProxyError> {
        let https = var(["HTTPS_PROXY", "https_proxy"], &get)
            .map(|(n, v)| proxy_url(n, &v))
            .transpose()?;
        // Lower case only for HTTP_PROXY's sake is what curl does (CGI sets HTTP_PROXY from
        // a request header); a daemon has no such risk, so both forms count.
        let http = var(["HTTP_PROXY", "http_proxy"], &get)
            .map(|(n, v)| proxy_url(n, &v))
            .transpose()?;
        let bypass = var(["NO_PROXY", "no_proxy"], &get)
            .map(|(_, v)| parse_bypass(&v))
            .unwrap_or_default();
        Ok(ProxyConf {
            https,
            http,
            bypass,
        })
    }

    /// Whether any proxy is set.
    pub fn is_set(&self) -> bool {
        self.https.is_some() || self.http.is_some()
    }

    /// For the log: where each scheme goes, without credentials.
    pub fn describe(&self) -> String {
        let show = |u: &Option<reqwest::Url>| {
            u.as_ref().map_or("direct".to_owned(), |u| {
                format!(
                    "{}://{}{}",
                    u.scheme(),
                    u.host_str().unwrap_or_default(),
                    u.port().map_or(String::new(), |p| format!(":{p}"))
                )
            })
        };
        format!(
            "https via {}, http via {}, {} NO_PROXY entries (loopback always direct)",
            show(&self.https),
            show(&self.http),
            self.bypass.len()
        )
    }

    /// Whether `host` (a name or an IP, without brackets) at `port` is reached directly.
    pub fn bypasses(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        if host == "localhost"
            || host.ends_with(".localhost")
            || ip.is_some_and(|i| i.is_loopback())
        {
            return true;
        }
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        self.bypass.iter().any(|b| match b {
            Bypass::All => true,
            Bypass::Net(net, p) => port_ok(p) && ip.is_some_and(|i| net.contains(&i)),
            Bypass::Domain(d, p) => {
                port_ok(p)
                    && (host == *d
                        || host
                            .strip_suffix(d.as_str())
                            .is_some_and(|rest| rest.ends_with('.')))
            }
        })
    }

    /// The proxy for `url`; `None`: direct.
    fn for_url(&self, url: &reqwest::Url) -> Option<reqwest::Url> {
        let proxy = match url.scheme() {
            "https" => self.https.as_ref(),
            "http" => self.http.as_ref(),
            _ => None,
        }?;
        let host = url.host_str()?;
        if self.bypasses(host, url.port_or_known_default().unwrap_or(0)) {
            return None;
        }
        Some(proxy.clone())
    }

    /// `builder` with these proxies, and only these (reqwest's own reading of the
    /// environment is turned off, so there is one set of rules).
    pub(super) fn apply(
        self: &Arc<Self>,
        builder: reqwest::ClientBuilder,
    ) -> reqwest::ClientBuilder {
        let builder = builder.no_proxy();
        if !self.is_set() {
            return builder;
        }
        let conf = Arc::clone(self);
        builder.proxy(reqwest::Proxy::custom(move |url| conf.for_url(url)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(vars: &[(&str, &str)]) -> ProxyConf {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyConf::from_vars(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap()
    }

    #[test]
    fn no_proxy_takes_domains_ips_cidrs_and_ports() {
        let c = conf(&[
            ("HTTPS_PROXY", "http://user:secret@proxy.corp:3128"),
            (
                "NO_PROXY",
                "internal.corp, .svc ,10.0.0.0/8, 192.168.1.7, registry.local:5000, [fd00::1]:443, *.k8s",
            ),
        ]);
        for (host, port) in [
            ("internal.corp", 443),
            ("a.b.internal.corp", 443),
            ("x.svc", 443),
            ("10.1.2.3", 443),
            ("192.168.1.7", 80),
            ("registry.local", 5000),
            ("fd00::1", 443),
            ("[fd00::1]", 443),
            ("pods.k8s", 443),
            ("127.0.0.1", 443),
            ("127.9.9.9", 1),
            ("::1", 5000),
            ("localhost", 5000),
            ("LOCALHOST.", 5000),
        ] {
            assert!(c.bypasses(host, port), "{host}:{port} should be direct");
        }
        for (host, port) in [
            ("notinternal.corp", 443),
            ("corp", 443),
            ("11.0.0.1", 443),
            ("192.168.1.8", 80),
            ("registry.local", 443),
            ("fd00::1", 8443),
            ("quay.io", 443),
        ] {
            assert!(!c.bypasses(host, port), "{host}:{port} should be proxied");
        }
        assert!(conf(&[("NO_PROXY", "*")]).bypasses("quay.io", 443));
    }

    #[test]
    fn picks_the_proxy_by_scheme_and_hides_credentials() {
        let c = conf(&[
            ("https_proxy", "user:secret@proxy.corp:3128"),
            ("NO_PROXY", "direct.corp"),
        ]);
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let got = c.for_url(&url("https://quay.io/v2/")).unwrap();
        assert_eq!(got.host_str(), Some("proxy.corp"));
        assert_eq!(got.password(), Some("secret"));
        assert_eq!(c.for_url(&url("http://quay.io/v2/")), None);
        assert_eq!(c.for_url(&url("https://direct.corp/v2/")), None);
        assert_eq!(c.for_url(&url("https://127.0.0.1:5000/v2/")), None);
        let shown = c.describe();
        assert!(shown.contains("http://proxy.corp:3128"), "{shown}");
        assert!(
            !shown.contains("secret") && !shown.contains("user"),
            "{shown}"
        );
    }

    #[test]
    fn a_bad_proxy_variable_is_named() {
        let e = ProxyConf::from_vars(|k| (k == "HTTP_PROXY").then(|| "ftp://x:1".to_owned()))
            .unwrap_err();
        assert!(e.to_string().contains("HTTP_PROXY"), "{e}");
        assert!(!ProxyConf::from_vars(|_| None).unwrap().is_set());
    }
}
