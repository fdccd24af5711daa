//! Signature policy (containers-policy.json + registries.d), with real signatures made the
//! way operators make them: GPG keys in a throwaway `GNUPGHOME` (Debian `gnupg`) and
//! `skopeo copy --sign-by` into a file:// lookaside; cosign-format sigstore signatures
//! written by the test (a P-256 key, the simple-signing payload, the `sha256-<hex>.sig`
//! manifest pushed to the test registry). Every refused pull is PermissionDenied naming
//! the image, the policy file, the scope and why, and stores nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;

use crate::support::{
    DaemonBuilder, ImageBuilder, Registry, TestImage, eventually, list, pull, tempdir, try_pull,
};
use cri_imaged::proto;

/// Runs `program args` with `env`, bounded; panics with its output unless it succeeds.
async fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut c = tokio::process::Command::new(program);
    c.args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in 120 s"))
        .unwrap_or_else(|e| panic!("cannot run {program} (apt-get install gnupg skopeo): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new GPG signing key in `home`; returns its fingerprint.
async fn gpg_key(home: &Path, email: &str) -> String {
    std::fs::create_dir_all(home).unwrap();
    std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let params = home.join(format!("{email}.params"));
    std::fs::write(
        &params,
        format!(
            "%no-protection\nKey-Type: EDDSA\nKey-Curve: ed25519\nKey-Usage: sign\nName-Real: Test\nName-Email: {email}\nExpire-Date: 0\n%commit\n"
        ),
    )
    .unwrap();
    let env = [("GNUPGHOME", home)];
    run(
        "gpg",
        &["--batch", "--gen-key", params.to_str().unwrap()],
        &env,
    )
    .await;
    let listing = run("gpg", &["--list-keys", "--with-colons", email], &env).await;
    listing
        .lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|r| r.trim_matches(':').to_owned())
        })
        .expect("a fingerprint")
}

/// Exports `fpr`'s public key to `to` (binary, as `gpg --export`).
async fn gpg_export(home: &Path, fpr: &str, to: &Path) {
    run(
        "gpg",
        &[
            "--batch",
            "--yes",
            "--output",
            to.to_str().unwrap(),
            "--export",
            fpr,
        ],
        &[("GNUPGHOME", home)],
    )
    .await;
}

/// `skopeo copy --sign-by fpr docker://from docker://to`, its signature written to the
/// lookaside `registries_d` names.
async fn skopeo_sign(home: &Path, registries_d: &Path, fpr: &str, from: &str, to: &str) {
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "-q",
            "--registries.d",
            registries_d.to_str().unwrap(),
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--sign-by",
            fpr,
            &format!("docker://{from}"),
            &format!("docker://{to}"),
        ],
        &[("GNUPGHOME", home)],
    )
    .await;
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The lookaside directory of `repo` (path without the registry) at `digest`.
fn lookaside_dir(base: &Path, repo: &str, digest: &str) -> PathBuf {
    base.join(format!("{repo}@{}", digest.replacen(':', "=", 1)))
}

/// The blobs under the daemon's root.
fn blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn assert_refused(r: Result<String, tonic::Status>, image: &str, wants: &[&str]) {
    let e = r.expect_err(&format!("{image} must be refused"));
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{image}: {e:?}");
    for w in wants.iter().chain(&[image]) {
        assert!(
            e.message().contains(w),
            "{image}: {:?} should name {w:?}",
            e.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpg_signed_images_pass_and_unsigned_or_foreign_ones_are_refused() {
    let dir = tempdir();
    let registry = Registry::start().await;
    let reg = registry.host();
    let home = dir.path().join("gnupg");
    let ours = gpg_key(&home, "ours@example.com").await;
    let theirs = gpg_key(&home, "theirs@example.com").await;
    let key = dir.path().join("ours.gpg");
    gpg_export(&home, &ours, &key).await;
    let sigs = dir.path().join("sigs");
    // One registries.d for skopeo (where it writes) and the daemon (where it reads).
    let builder = DaemonBuilder::new(dir.path()).registry(&reg);
    let rd = builder.registries_d();
    write(
        &rd.join("default.yaml"),
        &format!("default-docker:\n  lookaside: file://{}\n", sigs.display()),
    );
    let images: Vec<TestImage> = (0..6).map(|_| ImageBuilder::new().build()).collect();
    for (i, img) in images.iter().enumerate() {
        img.push(&registry, &format!("staging/img{i}"), "1").await;
    }
    skopeo_sign(
        &home,
        &rd,
        &ours,
        &format!("{reg}/staging/img0:1"),
        &format!("{reg}/trusted/good:1"),
    )
    .await;
    skopeo_sign(
        &home,
        &rd,
        &theirs,
        &format!("{reg}/staging/img1:1"),
        &format!("{reg}/trusted/theirs:1"),
    )
    .await;
    images[2].push(&registry, "trusted/unsigned", "1").await;
    // The good signature, placed beside the same manifest in another repository…
    images[0].push(&registry, "trusted/copy", "1").await;
    let good =
        lookaside_dir(&sigs, "trusted/good", &images[0].manifest_digest()).join("signature-1");
    assert!(
        good.exists(),
        "skopeo wrote the signature: {}",
        good.display()
    );
    let good_bytes = std::fs::read(&good).unwrap();
    // Each planted file is `repo`'s only signature of `image`'s manifest.
    let plant = |repo: &str, image: &TestImage, bytes: &[u8]| {
        let at = lookaside_dir(&sigs, repo, &image.manifest_digest());
        std::fs::create_dir_all(&at).unwrap();
        std::fs::write(at.join("signature-1"), bytes).unwrap();
    };
    plant("trusted/copy", &images[0], &good_bytes);
    // …and beside another image's manifest.
    images[3].push(&registry, "trusted/other", "1").await;
    plant("trusted/other", &images[3], &good_bytes);
    // Hostile lookaside files: garbage, and a file past the 4 MiB cap.
    images[4].push(&registry, "trusted/garbage", "1").await;
    plant(
        "trusted/garbage",
        &images[4],
        b"\x90\x01not an OpenPGP message",
    );
    images[5].push(&registry, "trusted/huge", "1").await;
    plant("trusted/huge", &images[5], &vec![0u8; 5 << 20]);

    write(
        &builder.signature_policy(),
        &format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{reg}/trusted":[{{"type":"signedBy","keyType":"GPGKeys","keyPath":"{}"}}]}}}}}}"#,
            key.display()
        ),
    );
    let root = builder.root_path().to_owned();
    let d = builder.start().await;
    let mut c = d.client();
    assert_eq!(
        pull(&mut c, &format!("{reg}/trusted/good:1")).await,
        images[0].id()
    );
    let stored = blob_count(&root);
    let scope = format!("docker:{reg}/trusted");
    for (image, wants) in [
        (
            format!("{reg}/trusted/theirs:1"),
            vec!["signed by another key", scope.as_str()],
        ),
        (
            format!("{reg}/trusted/unsigned:1"),
            vec!["no GPG signature", scope.as_str()],
        ),
        (
            format!("{reg}/trusted/copy:1"),
            vec!["trusted/good:1", "does not match"],
        ),
        (
            format!("{reg}/trusted/other:1"),
            vec!["signs manifest", "another image"],
        ),
        (format!("{reg}/staging/img2:1"), vec!["rejects", "default"]),
        (
            format!("{reg}/trusted/garbage:1"),
            vec!["malformed signature"],
        ),
        (format!("{reg}/trusted/huge:1"), vec!["larger than"]),
    ] {
        assert_refused(try_pull(&mut c, &image).await, &image, &wants);
    }
    assert_eq!(
        blob_count(&root),
        stored,
        "nothing of a refused image is stored"
    );
    let listed = list(&mut c, None).await;
    assert_eq!(
        listed.len(),
        1,
        "only the signed image is listed: {listed:?}"
    );
    let log = d.output();
    assert!(
        log.contains("signature policy refused the image") && log.contains("policy.json"),
        "the log says which policy file decided:\n{log}"
    );
}

/// A cosign-format signature of `digest` for `identity`, by `key`, pushed as the
/// `sha256-<hex>.sig` manifest of `repo`.
async fn push_cosign(
    registry: &Registry,
    repo: &str,
    digest_tag: &str,
    identity: &str,
    signed_digest: &str,
    key: &p256::ecdsa::SigningKey,
) {
    let payload = serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": signed_digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap();
    let sig: p256::ecdsa::Signature = key.sign(&payload);
    let sig = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
    let digest_of = |b: &[u8]| {
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b))
        )
    };
    let config =
        br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    registry
        .put_blob(repo, &digest_of(&payload), &payload)
        .await;
    registry.put_blob(repo, &digest_of(config), config).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config), "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": digest_of(&payload),
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": sig},
        }],
    }))
    .unwrap();
    let tag = format!("sha256-{}.sig", digest_tag.trim_start_matches("sha256:"));
    registry
        .put_manifest(
            repo,
            &tag,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await;
}

fn p256_key(seed: u8) -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstore_attachments_by_the_trusted_key_pass_and_tampered_or_missing_ones_do_not() {
    use p256::pkcs8::EncodePublicKey as _;
    let dir = tempdir();
    let registry = Registry::start().await;
    let reg = registry.host();
    let (ours, theirs) = (p256_key(11), p256_key(12));
    let pub_pem = ours
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    let images: Vec<TestImage> = (0..4).map(|_| ImageBuilder::new().build()).collect();
    let names = ["good", "wrong-key", "tampered", "missing"];
    for (img, n) in images.iter().zip(names) {
        img.push(&registry, &format!("cosigned/{n}"), "1").await;
    }
    let d = |i: usize| images[i].manifest_digest();
    push_cosign(
        &registry,
        "cosigned/good",
        &d(0),
        &format!("{reg}/cosigned/good:1"),
        &d(0),
        &ours,
    )
    .await;
    push_cosign(
        &registry,
        "cosigned/wrong-key",
        &d(1),
        &format!("{reg}/cosigned/wrong-key:1"),
        &d(1),
        &theirs,
    )
    .await;
    // A signature stored for this image that signs another manifest.
    push_cosign(
        &registry,
        "cosigned/tampered",
        &d(2),
        &format!("{reg}/cosigned/tampered:1"),
        &d(0),
        &ours,
    )
    .await;

    let builder = DaemonBuilder::new(dir.path()).registry(&reg);
    write(&dir.path().join("cosign.pub"), &pub_pem);
    write(
        &builder.signature_policy(),
        &format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{reg}/cosigned":[{{"type":"sigstoreSigned","keyPath":"{}","signedIdentity":{{"type":"matchRepository"}}}}]}}}}}}"#,
            dir.path().join("cosign.pub").display()
        ),
    );
    write(
        &builder.registries_d().join("sigstore.yaml"),
        &format!("docker:\n  {reg}/cosigned:\n    use-sigstore-attachments: true\n"),
    );
    let root = builder.root_path().to_owned();
    let daemon = builder.start().await;
    let mut c = daemon.client();
    assert_eq!(
        pull(&mut c, &format!("{reg}/cosigned/good:1")).await,
        images[0].id()
    );
    let stored = blob_count(&root);
    for (image, wants) in [
        (
            format!("{reg}/cosigned/wrong-key:1"),
            vec!["signed by another key"],
        ),
        (format!("{reg}/cosigned/tampered:1"), vec!["signs manifest"]),
        (
            format!("{reg}/cosigned/missing:1"),
            vec!["no sigstore signature"],
        ),
    ] {
        assert_refused(try_pull(&mut c, &image).await, &image, &wants);
    }
    assert_eq!(
        blob_count(&root),
        stored,
        "nothing of a refused image is stored"
    );
}

/// PullImage for a pod of `namespace`.
async fn pull_for(
    c: &mut crate::support::Client,
    image: &str,
    namespace: &str,
) -> Result<String, tonic::Status> {
    let req = proto::PullImageRequest {
        image: Some(proto::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        auth: None,
        sandbox_config: Some(proto::PodSandboxConfig {
            metadata: Some(proto::PodSandboxMetadata {
                name: "pod".into(),
                uid: "uid".into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            ..Default::default()
        }),
    };
    tokio::time::timeout(Duration::from_secs(60), c.pull_image(req))
        .await
        .expect("PullImage in 60 s")
        .map(|r| r.into_inner().image_ref)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_namespaces_and_sighup_pick_the_policy() {
    let dir = tempdir();
    let registry = Registry::start().await;
    let reg = registry.host();
    for repo in [
        "open/app",
        "open/closed",
        "closed/a",
        "closed/b",
        "closed/c",
    ] {
        ImageBuilder::new().build().push(&registry, repo, "1").await;
    }
    let builder = DaemonBuilder::new(dir.path()).registry(&reg);
    let policy = builder.signature_policy();
    // The tag scope beats the repository's, which beats the namespace's; the rest is the
    // default's.
    write(
        &policy,
        &format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{reg}/open":[{{"type":"insecureAcceptAnything"}}],"{reg}/open/closed:1":[{{"type":"reject"}}]}}}}}}"#
        ),
    );
    let per_ns = dir.path().join("policies");
    write(
        &per_ns.join("trusted-team.json"),
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    );
    let d = builder
        .arg("--signature-policy-dir")
        .arg(per_ns.to_str().unwrap())
        .start()
        .await;
    let mut c = d.client();
    pull(&mut c, &format!("{reg}/open/app:1")).await;
    let closed = format!("{reg}/open/closed:1");
    assert_refused(
        try_pull(&mut c, &closed).await,
        &closed,
        &[&format!("docker:{reg}/open/closed:1"), "rejects"],
    );
    let a = format!("{reg}/closed/a:1");
    assert_refused(pull_for(&mut c, &a, "other-team").await, &a, &["default"]);
    pull_for(&mut c, &a, "trusted-team")
        .await
        .expect("the namespace's own policy admits it");
    // Already stored: a pull under the global policy is still refused.
    assert_refused(try_pull(&mut c, &a).await, &a, &["rejects"]);

    // SIGHUP: the new global policy applies; a broken one keeps it.
    write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    );
    d.signal(rustix::process::Signal::HUP);
    let b = format!("{reg}/closed/b:1");
    let reloaded = eventually(Duration::from_secs(20), || {
        let mut c = c.clone();
        let b = b.clone();
        async move { try_pull(&mut c, &b).await.is_ok() }
    })
    .await;
    assert!(reloaded, "the reloaded policy admits {b}:\n{}", d.output());
    write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}"#);
    d.signal(rustix::process::Signal::HUP);
    assert!(
        eventually(Duration::from_secs(20), || async {
            d.output().contains("keeping the previous signature policy")
        })
        .await,
        "a broken policy is refused on reload:\n{}",
        d.output()
    );
    pull(&mut c, &format!("{reg}/closed/c:1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_trust_files_stop_the_start_naming_the_file_and_the_entry() {
    let dir = tempdir();
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("missing", String::new(), vec!["policy.json"]),
        ("syntax", "{\"default\": [\n  {\"type\": }]}".into(), vec!["policy.json", "line 2"]),
        (
            "fulcio",
            r#"{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"/x"},"rekorPublicKeyPath":"/y"}]}"#.into(),
            vec!["policy.json", "not supported"],
        ),
        (
            "bad-key",
            r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/nonexistent/key.gpg"}]}"#.into(),
            vec!["policy.json", "/nonexistent/key.gpg"],
        ),
        (
            "registries-d",
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#.into(),
            vec!["bad.yaml", "line"],
        ),
    ];
    for (name, text, wants) in cases {
        let base = dir.path().join(name);
        let builder = DaemonBuilder::new(&base);
        if name == "missing" {
            std::fs::remove_file(builder.signature_policy()).unwrap();
        } else {
            write(&builder.signature_policy(), &text);
        }
        if name == "registries-d" {
            write(
                &builder.registries_d().join("bad.yaml"),
                "docker:\n  x.io:\n    lookaside: [\n",
            );
        }
        let mut d = builder.spawn();
        let status = d
            .wait_exit(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{name}: the daemon must not start"));
        assert!(!status.success(), "{name}: exits with an error");
        let out = d.output();
        for w in wants {
            assert!(out.contains(w), "{name}: the error names {w:?}:\n{out}");
        }
    }
}
