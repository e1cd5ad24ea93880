//! The tokens file: a TOML list of [`TokenRecord`]s that every node of the
//! config reads (and re-reads when it changes) and `ringkv token
//! create|list|revoke` edits. Secrets are not in it, only their SHA-256.

use super::token::{TokenRecord, TokenSet};
use crate::files::{with_lock, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The largest tokens file a node reads.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

const HEADER: &str = "# ringkv client tokens. Managed by `ringkv token create|list|revoke`;\n\
# nodes reload this file when it changes (or on SIGHUP). Only SHA-256 hashes\n\
# of the secrets are stored here.\n\n";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
}

impl TokensFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<TokensFile, String> {
        let fail = |why: String| format!("{}: {why}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(fail(format!(
                "{} bytes is more than the {MAX_FILE_BYTES} a tokens file may have",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let file: TokensFile = toml::from_str(&text).map_err(|e| fail(describe(&text, &e)))?;
        file.set().map_err(fail)?;
        Ok(file)
    }

    /// The tokens as a node checks them.
    pub fn set(&self) -> Result<TokenSet, String> {
        TokenSet::new(&self.tokens)
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        let body = toml::to_string(self).map_err(|e| e.to_string())?;
        write_atomic(path, format!("{HEADER}{body}").as_bytes(), 0o600)
    }

    /// Loads `path` (empty if it does not exist), applies `change` and saves
    /// the result, holding the file's lock throughout.
    pub fn update<T>(
        path: &Path,
        change: impl FnOnce(&mut TokensFile) -> Result<T, String>,
    ) -> Result<T, String> {
        with_lock(path, || {
            let mut file = if path.exists() {
                TokensFile::load(path)?
            } else {
                TokensFile::default()
            };
            let out = change(&mut file)?;
            file.save(path)?;
            Ok(out)
        })
    }
}

/// A parse error on one line, without quoting the file (its lines go to
/// the log and to `GET /v1/cluster`).
fn describe(text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    match e.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(0, |before| before.matches('\n').count())
                + 1;
            format!("not a valid tokens file (line {line}): {message}")
        }
        None => format!("not a valid tokens file: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::{create, Role};

    #[test]
    fn tokens_survive_a_round_trip_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.toml");
        let t = create(
            Role::Write,
            Some("a/".into()),
            Some(9),
            "ci".into(),
            1,
            |b| b.fill(7),
        );
        TokensFile::update(&p, |f| {
            f.tokens.push(t.record.clone());
            Ok(())
        })
        .unwrap();
        let back = TokensFile::load(&p).unwrap();
        assert_eq!(back.tokens, vec![t.record]);
        assert!(!std::fs::read_to_string(&p)
            .unwrap()
            .contains(t.token.split_once('.').unwrap().1));
        std::fs::write(&p, "[[tokens]]\nid = 3\n").unwrap();
        let e = TokensFile::load(&p).unwrap_err();
        assert!(e.starts_with(&p.display().to_string()), "{e}");
        std::fs::write(&p, "[[tokens]]\nid = \"a\"\nsha256 = [not toml").unwrap();
        let e = TokensFile::load(&p).unwrap_err();
        assert!(e.contains("(line 3)") && !e.contains('\n'), "{e}");
    }
}
