//! Reading registries.conf and its drop-in directory (`<file>.d/*.conf`, lexical order).
//! A missing file or directory is not an error (containers/image treats it the same way);
//! a file that cannot be read or parsed is, naming the file, the key and the reason.

use std::path::{Path, PathBuf};

use super::LoadError;
use super::conf::RegistriesConf;
use super::raw::RawFile;

/// Parses one file's text.
pub(super) fn parse_file(file: &Path, text: &str) -> Result<RawFile, LoadError> {
    toml::from_str::<RawFile>(text).map_err(|e| LoadError {
        file: file.to_owned(),
        key: String::new(),
        reason: e.to_string().trim().replace('\n', " "),
    })
}

/// Reads `file` if present, or `None`.
pub(super) fn read_optional(file: &Path) -> Result<Option<String>, LoadError> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LoadError {
            file: file.to_owned(),
            key: String::new(),
            reason: format!("cannot read: {e}"),
        }),
    }
}

/// The files of `dir` named `*.<ext>`, in lexical order (how containers tools read a
/// configuration directory); `None` when `dir` does not exist.
pub fn files_in(dir: &Path, ext: &str) -> std::io::Result<Option<Vec<PathBuf>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext) && p.is_file())
        .collect();
    files.sort();
    Ok(Some(files))
}

/// The drop-in directory of `file`: `/etc/containers/registries.conf` →
/// `/etc/containers/registries.conf.d`.
pub fn drop_in_dir(file: &Path) -> PathBuf {
    let mut d = file.as_os_str().to_owned();
    d.push(".d");
    PathBuf::from(d)
}

/// Reads `file` and its drop-ins, merged.
pub fn load_conf(file: &Path) -> Result<RegistriesConf, LoadError> {
    let mut conf = RegistriesConf::default();
    if let Some(text) = read_optional(file)? {
        conf.apply(file, parse_file(file, &text)?)?;
    }
    let dir = drop_in_dir(file);
    let drop_ins = files_in(&dir, "conf").map_err(|e| LoadError {
        file: dir.clone(),
        key: String::new(),
        reason: format!("cannot read the drop-in directory: {e}"),
    })?;
    for f in drop_ins.unwrap_or_default() {
        if let Some(text) = read_optional(&f)? {
            conf.apply(&f, parse_file(&f, &text)?)?;
        }
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registries::conf::ShortNameMode;

    #[test]
    fn drop_ins_apply_in_lexical_order_over_the_main_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("registries.conf");
        std::fs::write(
            &main,
            "unqualified-search-registries = [\"a.io\"]\nshort-name-mode = \"permissive\"\n[[registry]]\nprefix = \"x.io\"\nlocation = \"old.io\"\n[aliases]\n\"k\" = \"a.io/k\"\n",
        )
        .unwrap();
        let d = drop_in_dir(&main);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join("20-b.conf"),
            "unqualified-search-registries = [\"b.io\"]\n",
        )
        .unwrap();
        std::fs::write(
            d.join("10-a.conf"),
            "unqualified-search-registries = [\"c.io\"]\n[[registry]]\nprefix = \"x.io\"\nlocation = \"new.io\"\n[aliases]\n\"j\" = \"a.io/j\"\n",
        )
        .unwrap();
        std::fs::write(d.join("ignored.txt"), "not toml").unwrap();
        let c = load_conf(&main).unwrap();
        assert_eq!(c.search(), Some(&["b.io".to_string()][..]));
        assert_eq!(c.short_name_mode(), ShortNameMode::Permissive);
        assert_eq!(c.registries().len(), 1);
        assert_eq!(c.registries()[0].location.as_deref(), Some("new.io"));
        assert_eq!(c.aliases.len(), 2);
        assert_eq!(c.files().len(), 3);
    }

    #[test]
    fn a_missing_file_is_empty_and_permissive() {
        let c = load_conf(Path::new("/nonexistent/registries.conf")).unwrap();
        assert!(c.files().is_empty());
        assert_eq!(c.short_name_mode(), ShortNameMode::Permissive);
    }

    #[test]
    fn invalid_files_name_the_file_key_and_reason() {
        let cases = [
            (
                "short-name-mode = \"strict\"\n",
                "short-name-mode",
                "enforcing",
            ),
            (
                "[[registry]]\nprefix = \"x.io\"\nlocation = \"https://y.io\"\n",
                "[[registry]] #1 location",
                "scheme",
            ),
            (
                "[[registry]]\ninsecure = true\n",
                "[[registry]] #1 prefix",
                "prefix or a location",
            ),
            (
                "[[registry]]\nprefix = \"*.x.io\"\nlocation = \"y.io\"\n",
                "location",
                "wildcard",
            ),
            (
                "[[registry]]\nlocation = \"x.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"some\"\n",
                "[[registry.mirror]] #1 pull-from-mirror",
                "digest-only",
            ),
            (
                "[[registry]]\nlocation = \"x.io\"\nmirrors = []\n",
                "mirrors",
                "unknown key",
            ),
            (
                "unqualified-search-registries = [\"nodots\"]\n",
                "nodots",
                "host",
            ),
            ("[aliases]\n\"a:1\" = \"x.io/a\"\n", "aliases", "short name"),
            ("[aliases]\n\"a\" = \"a\"\n", "aliases", "host"),
            (
                "[registries.search]\nregistries = [\"x.io\"]\n",
                "registries",
                "version 1",
            ),
            ("[[registry]\n", "", "TOML parse error"),
            ("short-name-mode = 1\n", "", "invalid type"),
        ];
        for (text, key, reason) in cases {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("r.conf");
            std::fs::write(&f, text).unwrap();
            let e = load_conf(&f).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("r.conf"), "{text:?}: {msg}");
            assert!(
                e.key.contains(key),
                "{text:?}: key {:?} lacks {key:?}",
                e.key
            );
            assert!(msg.contains(reason), "{text:?}: {msg} lacks {reason:?}");
        }
    }

    #[test]
    fn the_contrib_drop_ins_load_without_warnings() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/pull-through");
        let mut n = 0;
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().and_then(|x| x.to_str()) != Some("conf") {
                continue;
            }
            let c = load_conf(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(
                c.warnings().is_empty(),
                "{}: {:?}",
                f.display(),
                c.warnings()
            );
            assert!(
                c.registries().iter().any(|r| !r.mirrors.is_empty()),
                "{} sets no mirror",
                f.display()
            );
            n += 1;
        }
        assert_eq!(n, 4, "one drop-in per engine");
    }

    #[test]
    fn the_contrib_examples_load() {
        let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
        let c = load_conf(&contrib.join("registries.conf")).unwrap();
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        assert_eq!(c.registries().len(), 5);
        let mut w = Vec::new();
        let a = crate::registries::AuthFile::load(&contrib.join("auth.json"), &mut w).unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(w.len(), 1, "only _comment is ignored: {w:?}");
    }

    #[test]
    fn unknown_top_level_keys_are_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.conf");
        std::fs::write(&f, "additional-layer-store-auth-helper = \"x\"\n").unwrap();
        let c = load_conf(&f).unwrap();
        assert_eq!(c.warnings().len(), 1);
        assert!(c.warnings()[0].contains("additional-layer-store-auth-helper"));
    }

    #[test]
    fn credential_helpers_are_a_checked_ordered_list() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.conf");
        std::fs::write(&f, "").unwrap();
        assert_eq!(
            load_conf(&f).unwrap().credential_helpers(),
            vec!["containers-auth.json"]
        );
        std::fs::write(
            &f,
            "credential-helpers = [\"ecr-login\", \"containers-auth.json\"]\n",
        )
        .unwrap();
        let c = load_conf(&f).unwrap();
        assert_eq!(
            c.credential_helpers(),
            vec!["ecr-login", "containers-auth.json"]
        );
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        for bad in ["[\"../bin/sh\"]", "[\"a b\"]", "[]", "[\"\"]"] {
            std::fs::write(&f, format!("credential-helpers = {bad}\n")).unwrap();
            let e = load_conf(&f).unwrap_err().to_string();
            assert!(e.contains("credential-helpers"), "{bad}: {e}");
        }
    }
}
