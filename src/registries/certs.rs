//! The certs.d directory (containers-certs.d(5)): `<dir>/<host[:port]>/` holds `*.crt` CA
//! bundles trusted for that registry (on top of the system roots) and `*.cert`/`*.key`
//! client certificate pairs. Read whole at load time, so a pull never touches the disk for
//! it and a reload swaps it atomically.
//!
//! A client certificate `NAME.cert` (PEM chain) needs its key `NAME.key` beside it, and
//! the other way round, as containers/image requires. A key readable by group or others, or
//! owned by another user than root or the daemon's, is refused (a key anyone can read is
//! not a secret). The first pair in lexical order is presented; more are reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::os::unix::fs::MetadataExt as _;

use super::LoadError;
use crate::registry::ClientIdentity;

/// TLS material for one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCerts {
    /// PEM certificates, one per entry, from every `*.crt` file in lexical order.
    pub roots: Vec<Vec<u8>>,
    /// The client certificate and key presented to it.
    pub identity: Option<ClientIdentity>,
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

/// Reads the pair `cert` and its `.key`, checking the key's owner and mode.
fn read_pair(cert: &Path) -> Result<ClientIdentity, String> {
    let key = cert.with_extension("key");
    let meta = std::fs::metadata(&key)
        .map_err(|e| format!("a client certificate needs its key {}: {e}", key.display()))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "its key {} is readable by others than its owner (mode {mode:04o}): chmod 600 it",
            key.display()
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "its key {} is owned by uid {}, not root or the daemon's user",
            key.display(),
            meta.uid()
        ));
    }
    let mut pem = std::fs::read(cert).map_err(|e| format!("cannot read: {e}"))?;
    if !pem.ends_with(b"\n") {
        pem.push(b'\n');
    }
    pem.extend(std::fs::read(&key).map_err(|e| format!("cannot read {}: {e}", key.display()))?);
    crate::registry::check_identity(&pem)
        .map_err(|e| format!("not a usable certificate and key pair: {e}"))?;
    Ok(ClientIdentity {
        file: cert.display().to_string(),
        pem,
    })
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
                    Some("cert") => {
                        let identity = read_pair(&f).map_err(|reason| fail(f.clone(), reason))?;
                        match &certs.identity {
                            None => certs.identity = Some(identity),
                            Some(first) => warnings.push(format!(
                                "{}: only one client certificate is presented per registry ({} is); ignored",
                                f.display(),
                                first.file
                            )),
                        }
                    }
                    Some("key") if !f.with_extension("cert").exists() => {
                        return Err(fail(
                            f.clone(),
                            format!(
                                "a client key without its certificate {}",
                                f.with_extension("cert").display()
                            ),
                        ));
                    }
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
        let e = CertsDir::load(dir.path(), &mut w).unwrap_err();
        assert!(e.to_string().contains("client.key"), "{e}");
        std::fs::remove_file(host.join("client.cert")).unwrap();
        std::fs::write(host.join("lonely.key"), "x").unwrap();
        let e = CertsDir::load(dir.path(), &mut w).unwrap_err();
        assert!(e.to_string().contains("without its certificate"), "{e}");
        std::fs::remove_file(host.join("lonely.key")).unwrap();
        let c = CertsDir::load(dir.path(), &mut w).unwrap();
        assert_eq!(c.for_registry("x.io:5000"), Some(&HostCerts::default()));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn a_key_others_can_read_is_refused_before_it_is_parsed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("x.io");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("c.cert"), "x").unwrap();
        std::fs::write(host.join("c.key"), "x").unwrap();
        std::fs::set_permissions(host.join("c.key"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let e = CertsDir::load(dir.path(), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("mode 0644"), "{e}");
        std::fs::set_permissions(host.join("c.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let e = CertsDir::load(dir.path(), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("not a usable certificate"), "{e}");
    }
}
