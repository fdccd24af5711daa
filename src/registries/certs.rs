//! The certs.d directory (containers-certs.d(5)): `<dir>/<host[:port]>/` holds `*.crt` CA
//! bundles trusted for that registry (on top of the system roots) and `*.cert`/`*.key`
//! client certificate pairs. Read whole at load time, so a pull never touches the disk for
//! it and a reload swaps it atomically.
//!
//! Client certificates are not supported yet (oci-client cannot present one): a pair is
//! reported as a warning, and a registry that requires one refuses the handshake.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::LoadError;

/// TLS material for one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCerts {
    /// PEM certificates, one per entry, from every `*.crt` file in lexical order.
    pub roots: Vec<Vec<u8>>,
}

/// Every host directory of certs.d.
#[derive(Debug, Clone, Default)]
pub struct CertsDir {
    hosts: BTreeMap<String, HostCerts>,
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Splits a PEM bundle into its certificates.
fn split_pem(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let stop = start + end + END.len();
        out.push(format!("{}\n", &rest[start..stop]).into_bytes());
        rest = &rest[stop..];
    }
    out
}

impl CertsDir {
    /// Reads `dir`; a missing directory has no entries.
    pub fn load(dir: &Path, warnings: &mut Vec<String>) -> Result<CertsDir, LoadError> {
        let fail = |file: PathBuf, reason: String| LoadError {
            file,
            key: String::new(),
            reason,
        };
        let mut hosts = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CertsDir::default()),
            Err(e) => return Err(fail(dir.to_owned(), format!("cannot read: {e}"))),
        };
        for entry in entries {
            let entry = entry.map_err(|e| fail(dir.to_owned(), format!("cannot read: {e}")))?;
            let host_dir = entry.path();
            if !host_dir.is_dir() {
                continue;
            }
            let host = entry.file_name().to_string_lossy().into_owned();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&host_dir)
                .map_err(|e| fail(host_dir.clone(), format!("cannot read: {e}")))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect();
            files.sort();
            let mut certs = HostCerts::default();
            for f in files {
                match f.extension().and_then(|x| x.to_str()) {
                    Some("crt") => {
                        let text = std::fs::read_to_string(&f)
                            .map_err(|e| fail(f.clone(), format!("cannot read: {e}")))?;
                        let pems = split_pem(&text);
                        if pems.is_empty() {
                            return Err(fail(f, "holds no PEM certificate".into()));
                        }
                        for pem in pems {
                            crate::registry::check_certificate(&pem).map_err(|e| {
                                fail(f.clone(), format!("invalid certificate: {e}"))
                            })?;
                            certs.roots.push(pem);
                        }
                    }
                    Some("cert") => warnings.push(format!(
                        "{}: client certificates are not supported yet; ignored",
                        f.display()
                    )),
                    _ => {}
                }
            }
            hosts.insert(host, certs);
        }
        Ok(CertsDir { hosts })
    }

    /// The material for `registry` (`host` or `host:port`, as in image names).
    pub fn for_registry(&self, registry: &str) -> Option<&HostCerts> {
        self.hosts.get(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_split_into_certificates() {
        let text = format!("junk\n{BEGIN}\nAAA\n{END}\n{BEGIN}\nBBB\n{END}\n");
        let pems = split_pem(&text);
        assert_eq!(pems.len(), 2);
        assert!(String::from_utf8_lossy(&pems[1]).contains("BBB"));
    }

    #[test]
    fn a_missing_dir_is_empty_and_a_bad_crt_is_refused() {
        let mut w = Vec::new();
        assert!(
            CertsDir::load(Path::new("/nonexistent/certs.d"), &mut w)
                .unwrap()
                .for_registry("x.io")
                .is_none()
        );
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("x.io:5000");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("ca.crt"), "not a certificate").unwrap();
        let e = CertsDir::load(dir.path(), &mut w).unwrap_err();
        assert!(e.to_string().contains("ca.crt"), "{e}");
        std::fs::write(host.join("ca.crt"), "").unwrap();
        std::fs::remove_file(host.join("ca.crt")).unwrap();
        std::fs::write(host.join("client.cert"), "x").unwrap();
        let c = CertsDir::load(dir.path(), &mut w).unwrap();
        assert_eq!(c.for_registry("x.io:5000"), Some(&HostCerts::default()));
        assert_eq!(w.len(), 1);
    }
}
