//! The credential scan every "no secret in any output" check uses: a secret counts as
//! leaked in its plain form, base64'd as it travels in a Basic header (alone or as
//! `user:secret`), after `Bearer `, and any `Authorization:` header line counts too.
//! Its own tests prove it finds each form, so a check that passes means something.

use base64::Engine as _;

/// Every way `secrets` (with `user`, for Basic) show up in `text`, described.
pub fn leaks(text: &str, user: &str, secrets: &[&str]) -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut found = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let forms = [
            ("plain", secret.to_string()),
            ("base64", b64(secret)),
            ("basic user:secret", b64(&format!("{user}:{secret}"))),
            ("bearer", format!("Bearer {secret}")),
        ];
        for (form, needle) in forms {
            if text.contains(&needle) {
                found.push(format!("{form} form of a secret: {needle}"));
            }
        }
    }
    if text.to_ascii_lowercase().contains("authorization:") {
        found.push("an Authorization header".into());
    }
    found
}

/// Fails naming `what` and every leak found.
pub fn assert_no_leaks(what: &str, text: &str, user: &str, secrets: &[&str]) {
    let found = leaks(text, user, secrets);
    assert!(found.is_empty(), "{what} leaks {found:?}:\n{text}");
}

#[test]
fn the_scan_finds_every_form_of_a_logged_password() {
    let (user, pw) = ("alice", "S3cret-pw-1");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let logs = [
        format!("level=debug msg=\"login\" password={pw}"),
        format!("{{\"header\":\"Basic {}\"}}", b64(&format!("{user}:{pw}"))),
        format!("token={}", b64(pw)),
        format!("sending Bearer {pw}"),
        "request Authorization: Basic xxx".to_owned(),
    ];
    for log in &logs {
        assert!(!leaks(log, user, &[pw]).is_empty(), "not found in: {log}");
    }
    assert!(
        leaks("pulled image r.io/a:1 as alice", user, &[pw]).is_empty(),
        "no false alarm"
    );
}
