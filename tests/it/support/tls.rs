//! Test certificates made with the `openssl` CLI: a CA, and server (127.0.0.1) and client
//! certificates signed by it. Nothing is stored in the repository; every run makes new ones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::registry::TlsFiles;
use super::run_tool;

const OPENSSL: &str = "/usr/bin/openssl";

fn openssl(dir: &Path, args: &[&str]) {
    assert!(
        Path::new(OPENSSL).is_file(),
        "openssl not found at {OPENSSL}: apt-get install openssl"
    );
    let out = run_tool(dir, OPENSSL, args, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        out.stdout,
        out.stderr
    );
}

/// A new CA in `dir/<name>-ca.{crt,key}`; returns the certificate's path.
pub fn make_ca(dir: &Path, name: &str) -> std::path::PathBuf {
    let crt = dir.join(format!("{name}-ca.crt"));
    let key = dir.join(format!("{name}-ca.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=cri-imaged test CA {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
        ],
    );
    crt
}

/// A server certificate for IP 127.0.0.1 signed by the CA `ca` (made by [`make_ca`]).
pub fn make_server(dir: &Path, ca: &Path) -> TlsFiles {
    make_server_named(dir, ca, &[])
}

/// A server certificate for IP 127.0.0.1 and the DNS names `names`, signed by `ca`.
pub fn make_server_named(dir: &Path, ca: &Path, names: &[&str]) -> TlsFiles {
    let dns: String = names.iter().map(|n| format!(",DNS:{n}")).collect();
    let (cert, key) = make_leaf(
        dir,
        ca,
        "server",
        "/CN=127.0.0.1",
        &format!(
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1{dns}\n"
        ),
    );
    TlsFiles {
        cert,
        key,
        ca_pem: std::fs::read(ca).expect("read CA"),
    }
}

/// A client certificate signed by the CA `ca`: `dir/<name>.{cert,key}` (certs.d names).
pub fn make_client(dir: &Path, ca: &Path, name: &str) -> (PathBuf, PathBuf) {
    make_leaf(
        dir,
        ca,
        name,
        "/CN=cri-imaged test client",
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
}

/// A key and a certificate for `subject` with extensions `ext`, signed by `ca`.
fn make_leaf(dir: &Path, ca: &Path, name: &str, subject: &str, ext: &str) -> (PathBuf, PathBuf) {
    let ca_key = ca.with_extension("key");
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let cert = dir.join(format!("{name}.cert"));
    let ext_file = dir.join(format!("{name}.ext"));
    std::fs::write(&ext_file, format!("basicConstraints=CA:FALSE\n{ext}"))
        .expect("write extensions");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            ca.to_str().unwrap(),
            "-CAkey",
            ca_key.to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext_file.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    (cert, key)
}
