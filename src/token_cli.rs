//! `ringkv token create|list|revoke`: edits the tokens file the config's
//! `security.tokens_file` names. Nodes reading that file pick a change up
//! within a second (or on SIGHUP).
//!
//! Why a file and not a table kept in the cluster: ringkv has no consensus,
//! so a token table replicated by the store itself would be eventually
//! consistent — a revoked token would keep working on a node that has not
//! heard of the revocation yet, and any node (a compromised one included)
//! could mint tokens for all. A file is read atomically by each node,
//! changed only by whoever may write it, auditable, and distributed the way
//! the certificates already are (a shared volume or configuration
//! management); a revocation takes effect on a node the moment its file
//! changes.

use crate::auth::store::TokensFile;
use crate::auth::token::{create, NewToken, Role};
use crate::config::Config;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

fn tokens_file(cfg: &Config) -> Result<PathBuf, String> {
    cfg.security
        .as_ref()
        .and_then(|s| s.tokens_file.clone())
        .ok_or_else(|| {
            format!(
                "{}: names no security.tokens_file, so its nodes take requests without tokens",
                cfg.path.display()
            )
        })
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds in `30d`, `12h`, `15m` or `90s`.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("'{text}' is not a duration like 30d, 12h, 15m or 90s");
    let Some(split) = text.char_indices().last().map(|(i, _)| i) else {
        return Err(bad());
    };
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).filter(|s| *s > 0).ok_or_else(bad)
}

/// A new token with random bytes from the system.
pub fn new_token(
    role: Role,
    prefix: Option<String>,
    expires_in_s: Option<u64>,
    note: String,
) -> Result<NewToken, String> {
    let now = now_unix();
    let mut failed = false;
    let token = create(
        role,
        prefix,
        expires_in_s.map(|s| now.saturating_add(s)),
        note,
        now,
        |bytes| {
            failed = rustls::crypto::ring::default_provider()
                .secure_random
                .fill(bytes)
                .is_err();
        },
    );
    if failed {
        return Err("no randomness from the system".into());
    }
    Ok(token)
}

/// Adds a token to the config's tokens file; answers the token (shown once).
pub fn create_in(
    cfg: &Config,
    role: Role,
    prefix: Option<String>,
    expires_in_s: Option<u64>,
    note: String,
) -> Result<NewToken, String> {
    let file = tokens_file(cfg)?;
    let token = new_token(role, prefix, expires_in_s, note)?;
    let record = token.record.clone();
    TokensFile::update(&file, move |f| {
        f.tokens.push(record);
        Ok(())
    })?;
    Ok(token)
}

/// One line per token: id, role, prefix, expiry, note (never a secret).
pub fn list(cfg: &Config) -> Result<Vec<String>, String> {
    let file = tokens_file(cfg)?;
    let f = TokensFile::load(&file)?;
    let now = now_unix();
    Ok(f.tokens
        .iter()
        .map(|t| {
            let expiry = match t.expires_unix {
                None => "never expires".to_string(),
                Some(e) if e <= now => "EXPIRED".to_string(),
                Some(e) => format!("expires in {}h", (e - now).div_ceil(3600)),
            };
            format!(
                "{}  {:<5}  prefix {:<12}  {expiry}  {}",
                t.id,
                t.role.to_string(),
                t.prefix
                    .as_deref()
                    .map_or("(any)".into(), |p| format!("{p:?}")),
                t.note
            )
        })
        .collect())
}

/// Removes token `id`; an unknown id is an error (nothing changes).
pub fn revoke(cfg: &Config, id: &str) -> Result<(), String> {
    let file = tokens_file(cfg)?;
    TokensFile::update(&file, |f| {
        let before = f.tokens.len();
        f.tokens.retain(|t| t.id != id);
        if f.tokens.len() == before {
            return Err(format!("no token with id '{id}' in {}", file.display()));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        for bad in [
            "",
            "d",
            "0h",
            "5w",
            "-1d",
            "99999999999999999999d",
            "5é",
            "é",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_random() {
        let a = new_token(Role::Read, None, None, String::new()).unwrap();
        let b = new_token(Role::Read, None, None, String::new()).unwrap();
        assert_ne!(a.token, b.token);
        assert_ne!(a.record.id, b.record.id);
    }
}
