//! containers-policy.json(5): the types and the parser. Strict like containers/image:
//! keys given twice, unknown fields, unknown requirement types and transports, and a missing `default` are
//! errors; so is every field cri-imaged does not implement (keyless sigstore: `fulcio`,
//! `rekorPublicKey*`, `pki`; `keyType`s but `GPGKeys`) — refused by name, never ignored.
//! Every error names the file and the place (`transports.docker."host/repo"[0]`), and a
//! syntax error its line and column.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Map, Value};

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("signature policy {file}: {place}{what}")]
pub struct PolicyError {
    pub file: String,
    /// Where in the document (empty for the whole file), followed by ": ".
    pub place: String,
    pub what: String,
}

/// The transports a policy may name.
pub const TRANSPORTS: &[&str] = &[
    "docker",
    "atomic",
    "oci",
    "oci-archive",
    "docker-archive",
    "dir",
    "docker-daemon",
    "containers-storage",
    "tarball",
    "ostree",
    "sif",
];

/// A parsed policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub default: Vec<Requirement>,
    /// transport → scope → requirements.
    pub transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// Where a requirement's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Path(PathBuf),
    Data(Vec<u8>),
}

/// One requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    InsecureAcceptAnything,
    Reject,
    SignedBy {
        keys: Vec<KeySource>,
        signed_identity: SignedIdentity,
    },
    SigstoreSigned {
        keys: Vec<KeySource>,
        signed_identity: SignedIdentity,
    },
}

/// Which identity in a signature is accepted for the image pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    ExactReference {
        docker_reference: String,
    },
    ExactRepository {
        docker_repository: String,
    },
    RemapIdentity {
        prefix: String,
        signed_prefix: String,
    },
}

impl std::fmt::Display for SignedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignedIdentity::MatchExact => f.write_str("matchExact"),
            SignedIdentity::MatchRepoDigestOrExact => f.write_str("matchRepoDigestOrExact"),
            SignedIdentity::MatchRepository => f.write_str("matchRepository"),
            SignedIdentity::ExactReference { docker_reference } => {
                write!(f, "exactReference {docker_reference}")
            }
            SignedIdentity::ExactRepository { docker_repository } => {
                write!(f, "exactRepository {docker_repository}")
            }
            SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            } => write!(f, "remapIdentity {prefix} → {signed_prefix}"),
        }
    }
}

impl Policy {
    /// What a missing default policy file means.
    pub fn accept_anything() -> Policy {
        Policy {
            default: vec![Requirement::InsecureAcceptAnything],
            transports: BTreeMap::new(),
        }
    }

    /// Parses a policy file's bytes; `file` names it in errors.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Policy, PolicyError> {
        let err = |place: &str, what: String| PolicyError {
            file: file.to_owned(),
            place: if place.is_empty() {
                String::new()
            } else {
                format!("{place}: ")
            },
            what,
        };
        let v: Value = super::strict_json::parse(bytes)
            .map_err(|e| err("", format!("line {} column {}: {e}", e.line(), e.column())))?;
        let top = v
            .as_object()
            .ok_or_else(|| err("", "must be a JSON object".into()))?;
        only(top, &["default", "transports"]).map_err(|w| err("", w))?;
        let default = match top.get("default") {
            Some(d) => requirements(d, "default").map_err(|(p, w)| err(&p, w))?,
            None => return Err(err("", "has no \"default\" requirements".into())),
        };
        let mut transports = BTreeMap::new();
        if let Some(t) = top.get("transports") {
            let t = t
                .as_object()
                .ok_or_else(|| err("transports", "must be an object".into()))?;
            for (name, scopes) in t {
                let place = format!("transports.{name}");
                if !TRANSPORTS.contains(&name.as_str()) {
                    return Err(err(&place, format!("unknown transport {name:?}")));
                }
                let scopes = scopes
                    .as_object()
                    .ok_or_else(|| err(&place, "must be an object of scopes".into()))?;
                let mut out = BTreeMap::new();
                for (scope, reqs) in scopes {
                    let place = format!("transports.{name}.{scope:?}");
                    super::scope::check_scope(name, scope).map_err(|w| err(&place, w))?;
                    out.insert(
                        scope.clone(),
                        requirements(reqs, &place).map_err(|(p, w)| err(&p, w))?,
                    );
                }
                transports.insert(name.clone(), out);
            }
        }
        Ok(Policy {
            default,
            transports,
        })
    }
}

type Failed = (String, String);

/// Fails on a member not in `known`.
fn only(o: &Map<String, Value>, known: &[&str]) -> Result<(), String> {
    match o.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown field {k:?}")),
        None => Ok(()),
    }
}

fn requirements(v: &Value, place: &str) -> Result<Vec<Requirement>, Failed> {
    let list = v
        .as_array()
        .ok_or_else(|| (place.to_owned(), "must be an array of requirements".into()))?;
    if list.is_empty() {
        return Err((
            place.to_owned(),
            "an empty list of requirements (say insecureAcceptAnything or reject)".into(),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let place = format!("{place}[{i}]");
            requirement(r).map_err(|w| (place, w))
        })
        .collect()
}

/// Fields containers/image has and cri-imaged refuses to ignore.
const UNSUPPORTED_SIGSTORE: &[&str] = &[
    "fulcio",
    "rekorPublicKeyPath",
    "rekorPublicKeyPaths",
    "rekorPublicKeyData",
    "pki",
];

fn requirement(v: &Value) -> Result<Requirement, String> {
    let o = v.as_object().ok_or("must be an object")?;
    let ty = o
        .get("type")
        .and_then(Value::as_str)
        .ok_or("has no \"type\" string")?;
    match ty {
        "insecureAcceptAnything" => {
            only(o, &["type"])?;
            Ok(Requirement::InsecureAcceptAnything)
        }
        "reject" => {
            only(o, &["type"])?;
            Ok(Requirement::Reject)
        }
        "signedBy" => {
            only(
                o,
                &[
                    "type",
                    "keyType",
                    "keyPath",
                    "keyPaths",
                    "keyData",
                    "signedIdentity",
                ],
            )?;
            match o.get("keyType").and_then(Value::as_str) {
                Some("GPGKeys") => {}
                Some(k @ ("signedByGPGKeys" | "X509Certificates" | "signedByX509CAs")) => {
                    return Err(format!("keyType {k:?} is not supported (only GPGKeys)"));
                }
                Some(k) => return Err(format!("unknown keyType {k:?}")),
                None => return Err("signedBy needs \"keyType\": \"GPGKeys\"".into()),
            }
            Ok(Requirement::SignedBy {
                keys: keys(o)?,
                signed_identity: identity(o.get("signedIdentity"))?,
            })
        }
        "sigstoreSigned" => {
            if let Some(f) = UNSUPPORTED_SIGSTORE.iter().find(|f| o.contains_key(**f)) {
                return Err(format!(
                    "{f} is not supported: keyless (Fulcio/Rekor) sigstore signatures are not verified by cri-imaged; use keyPath, keyPaths or keyData"
                ));
            }
            only(
                o,
                &["type", "keyPath", "keyPaths", "keyData", "signedIdentity"],
            )?;
            Ok(Requirement::SigstoreSigned {
                keys: keys(o)?,
                signed_identity: identity(o.get("signedIdentity"))?,
            })
        }
        other => Err(format!("unknown requirement type {other:?}")),
    }
}

fn keys(o: &Map<String, Value>) -> Result<Vec<KeySource>, String> {
    let given: Vec<&str> = ["keyPath", "keyPaths", "keyData"]
        .into_iter()
        .filter(|k| o.contains_key(*k))
        .collect();
    if given.len() != 1 {
        return Err(format!(
            "exactly one of keyPath, keyPaths, keyData is needed (given: {})",
            if given.is_empty() {
                "none".to_owned()
            } else {
                given.join(", ")
            }
        ));
    }
    let path = |v: &Value, field: &str| -> Result<KeySource, String> {
        let p = v
            .as_str()
            .ok_or_else(|| format!("{field} must be a string"))?;
        if !p.starts_with('/') {
            return Err(format!("{field} {p:?} must be an absolute path"));
        }
        Ok(KeySource::Path(p.into()))
    };
    match given[0] {
        "keyPath" => Ok(vec![path(&o["keyPath"], "keyPath")?]),
        "keyPaths" => {
            let list = o["keyPaths"]
                .as_array()
                .filter(|l| !l.is_empty())
                .ok_or("keyPaths must be a non-empty array of paths")?;
            list.iter().map(|v| path(v, "keyPaths[]")).collect()
        }
        _ => {
            let data = o["keyData"].as_str().ok_or("keyData must be a string")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| format!("keyData is not base64: {e}"))?;
            Ok(vec![KeySource::Data(bytes)])
        }
    }
}

fn identity(v: Option<&Value>) -> Result<SignedIdentity, String> {
    let Some(v) = v else {
        return Ok(SignedIdentity::MatchRepoDigestOrExact);
    };
    let o = v.as_object().ok_or("signedIdentity must be an object")?;
    let ty = o
        .get("type")
        .and_then(Value::as_str)
        .ok_or("signedIdentity has no \"type\" string")?;
    let field = |name: &str| -> Result<String, String> {
        o.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("signedIdentity {ty} needs the string {name:?}"))
    };
    let fields = |known: &[&str]| only(o, known).map_err(|e| format!("signedIdentity {ty}: {e}"));
    let parse_name = |name: &str, s: &str| {
        crate::names::ImageName::parse_qualified(s)
            .map_err(|e| format!("signedIdentity {ty}: {name} {s:?}: {e}"))
    };
    match ty {
        "matchExact" => fields(&["type"]).map(|()| SignedIdentity::MatchExact),
        "matchRepoDigestOrExact" => {
            fields(&["type"]).map(|()| SignedIdentity::MatchRepoDigestOrExact)
        }
        "matchRepository" => fields(&["type"]).map(|()| SignedIdentity::MatchRepository),
        "exactReference" => {
            fields(&["type", "dockerReference"])?;
            let r = field("dockerReference")?;
            parse_name("dockerReference", &r)?;
            let explicit = r.contains('@') || r.rsplit('/').next().is_some_and(|l| l.contains(':'));
            if !explicit {
                return Err(format!(
                    "signedIdentity exactReference: dockerReference {r:?} needs a tag or digest"
                ));
            }
            Ok(SignedIdentity::ExactReference {
                docker_reference: r,
            })
        }
        "exactRepository" => {
            fields(&["type", "dockerRepository"])?;
            let r = field("dockerRepository")?;
            parse_name("dockerRepository", &r)?;
            Ok(SignedIdentity::ExactRepository {
                docker_repository: r,
            })
        }
        "remapIdentity" => {
            fields(&["type", "prefix", "signedPrefix"])?;
            let (prefix, signed_prefix) = (field("prefix")?, field("signedPrefix")?);
            for (n, p) in [("prefix", &prefix), ("signedPrefix", &signed_prefix)] {
                super::scope::check_scope("docker", p)
                    .map_err(|e| format!("signedIdentity remapIdentity: {n}: {e}"))?;
                if p.starts_with("*.") {
                    return Err(format!(
                        "signedIdentity remapIdentity: {n} {p:?} must not be a wildcard"
                    ));
                }
            }
            Ok(SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            })
        }
        other => Err(format!("unknown signedIdentity type {other:?}")),
    }
}
