//! Client tokens: their format, how a presented token is checked against
//! the stored ones, and what a role allows. Pure: the caller passes the time.
//!
//! A token is `<id>.<secret>`: a 64-bit id (16 hex digits) that names it in
//! lists, logs and revocations, and a 256-bit random secret (64 hex digits)
//! that is shown once, at creation. Only the secret's SHA-256 is stored, keyed
//! by id. Checking hashes the presented secret (no slow password hash: the
//! secret has 256 bits of entropy, so nothing is gained by stretching it) and
//! compares the digests in constant time; an unknown id is compared against
//! a dummy digest, so timing does not tell a known id from an unknown one.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// Hex digits of a token id.
pub const ID_HEX: usize = 16;
/// Hex digits of a token secret (256 bits).
pub const SECRET_HEX: usize = 64;
/// The longest `Authorization` header value looked at.
pub const MAX_HEADER_BYTES: usize = 256;

/// What a token may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `GET`/`HEAD` of keys, `/ready`, `/metrics`, `/v1/cluster`, `/v1/ring`.
    Read,
    /// Also `PUT` and `DELETE` of keys.
    Write,
    /// Also `/v1/admin/*`.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!("'{other}' is not a role (read, write or admin)")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        })
    }
}

/// One stored token (the tokens file holds a list of these).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub sha256: String,
    pub role: Role,
    /// Keys the token may touch start with this (none: every key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Unix seconds after which the token is refused (none: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix: Option<u64>,
    pub created_unix: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// A freshly made token: the record to store and the token to show once.
pub struct NewToken {
    pub record: TokenRecord,
    pub token: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.record.id)
            .finish_non_exhaustive()
    }
}

/// What a token that passed the check may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub role: Role,
    pub prefix: Option<String>,
}

/// Why a presented token was refused (for logs and metrics only: every one
/// of them answers the same 401).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Unknown,
    WrongSecret,
    Expired,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "no token",
            Refusal::Malformed => "malformed token",
            Refusal::Unknown => "unknown or revoked token",
            Refusal::WrongSecret => "wrong secret",
            Refusal::Expired => "expired token",
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if !is_hex(s, 64) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Makes a token with `random` filling its id and secret bytes.
pub fn create(
    role: Role,
    prefix: Option<String>,
    expires_unix: Option<u64>,
    note: String,
    now_unix: u64,
    random: impl FnOnce(&mut [u8; 40]),
) -> NewToken {
    let mut bytes = [0u8; 40];
    random(&mut bytes);
    let id = hex(&bytes[..8]);
    let secret = hex(&bytes[8..]);
    let record = TokenRecord {
        id: id.clone(),
        sha256: hex(&digest(&secret)),
        role,
        prefix,
        expires_unix,
        created_unix: now_unix,
        note,
    };
    NewToken {
        record,
        token: format!("{id}.{secret}"),
    }
}

/// The id and secret of an `Authorization: Bearer <id>.<secret>` value.
pub fn parse_header(value: Option<&[u8]>) -> Result<(&str, &str), Refusal> {
    let value = value.ok_or(Refusal::Missing)?;
    if value.len() > MAX_HEADER_BYTES {
        return Err(Refusal::Malformed);
    }
    let value = std::str::from_utf8(value).map_err(|_| Refusal::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(Refusal::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Malformed);
    }
    let (id, secret) = token.trim().split_once('.').ok_or(Refusal::Malformed)?;
    if !is_hex(id, ID_HEX) || !is_hex(secret, SECRET_HEX) {
        return Err(Refusal::Malformed);
    }
    Ok((id, secret))
}

/// The tokens a node accepts, by id.
#[derive(Debug, Default)]
pub struct TokenSet {
    by_id: HashMap<String, Checked>,
}

#[derive(Debug)]
struct Checked {
    digest: [u8; 32],
    grant: Grant,
    expires_unix: Option<u64>,
}

impl TokenSet {
    /// The set of `records`; refuses a duplicate id or a malformed record.
    pub fn new(records: &[TokenRecord]) -> Result<TokenSet, String> {
        let mut by_id = HashMap::new();
        for r in records {
            if !is_hex(&r.id, ID_HEX) {
                return Err(format!("token id '{}' is not {ID_HEX} hex digits", r.id));
            }
            let digest = unhex32(&r.sha256)
                .ok_or_else(|| format!("token {}: sha256 is not 64 hex digits", r.id))?;
            let checked = Checked {
                digest,
                grant: Grant {
                    id: r.id.clone(),
                    role: r.role,
                    prefix: r.prefix.clone(),
                },
                expires_unix: r.expires_unix,
            };
            if by_id.insert(r.id.clone(), checked).is_some() {
                return Err(format!("token id {} appears twice", r.id));
            }
        }
        Ok(TokenSet { by_id })
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Checks a presented id and secret at `now_unix`.
    pub fn check(&self, id: &str, secret: &str, now_unix: u64) -> Result<Grant, Refusal> {
        const DUMMY: [u8; 32] = [0x5a; 32];
        let presented = digest(secret);
        let stored = self.by_id.get(id);
        let expected = stored.map_or(&DUMMY, |c| &c.digest);
        let equal: bool = presented.ct_eq(expected).into();
        let c = match stored {
            None => return Err(Refusal::Unknown),
            Some(_) if !equal => return Err(Refusal::WrongSecret),
            Some(c) => c,
        };
        if c.expires_unix.is_some_and(|t| now_unix >= t) {
            return Err(Refusal::Expired);
        }
        Ok(c.grant.clone())
    }
}

/// What a request needs: a role and, for key routes, the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need<'a> {
    pub role: Role,
    pub key: Option<&'a [u8]>,
}

/// Whether `grant` covers `need`: its role is at least the one needed and,
/// when it has a prefix, the request names a key that starts with it
/// (routes without a key are open to a prefixed token of the role, except
/// admin routes, which read or repair every key).
pub fn allows(grant: &Grant, need: &Need) -> bool {
    if grant.role < need.role {
        return false;
    }
    match (&grant.prefix, need.key) {
        (None, _) => true,
        (Some(p), Some(key)) => key.starts_with(p.as_bytes()),
        (Some(_), None) => need.role < Role::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(role: Role, prefix: Option<&str>, expires: Option<u64>) -> NewToken {
        let mut n = 0u8;
        create(
            role,
            prefix.map(String::from),
            expires,
            String::new(),
            100,
            |b| {
                for x in b.iter_mut() {
                    n = n.wrapping_add(37);
                    *x = n;
                }
            },
        )
    }

    fn header(t: &str) -> Vec<u8> {
        format!("Bearer {t}").into_bytes()
    }

    #[test]
    fn a_created_token_checks_and_nothing_else_does() {
        let t = make(Role::Write, None, None);
        assert_eq!(t.token.len(), ID_HEX + 1 + SECRET_HEX);
        assert!(!t.record.sha256.contains(&t.token[ID_HEX + 1..]));
        let set = TokenSet::new(std::slice::from_ref(&t.record)).unwrap();
        let h = header(&t.token);
        let (id, secret) = parse_header(Some(&h)).unwrap();
        let g = set.check(id, secret, 100).unwrap();
        assert_eq!((g.role, g.id.as_str()), (Role::Write, id));
        // One digit of the secret changed.
        let mut wrong = secret.to_string();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert_eq!(set.check(id, &wrong, 100), Err(Refusal::WrongSecret));
        assert_eq!(
            set.check("0123456789abcdef", secret, 100),
            Err(Refusal::Unknown)
        );
    }

    #[test]
    fn malformed_headers_are_refused_before_any_lookup() {
        let t = make(Role::Read, None, None);
        assert_eq!(parse_header(None), Err(Refusal::Missing));
        for bad in [
            "".to_string(),
            t.token.clone(),
            format!("Basic {}", t.token),
            format!("Bearer {}", t.token.replace('.', "")),
            format!("Bearer {}", t.token.to_uppercase()),
            format!("Bearer {}x", t.token),
            format!("Bearer {}", "a".repeat(300)),
        ] {
            assert!(
                parse_header(Some(bad.as_bytes())).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert!(parse_header(Some(&[0xff, 0xfe])).is_err());
        assert!(parse_header(Some(format!("bearer  {}", t.token).as_bytes())).is_ok());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let t = make(Role::Admin, None, Some(200));
        let set = TokenSet::new(std::slice::from_ref(&t.record)).unwrap();
        let (id, secret) = t.token.split_once('.').unwrap();
        assert!(set.check(id, secret, 199).is_ok());
        assert_eq!(set.check(id, secret, 200), Err(Refusal::Expired));
    }

    #[test]
    fn roles_and_prefixes() {
        let g = |role, prefix: Option<&str>| Grant {
            id: "x".into(),
            role,
            prefix: prefix.map(String::from),
        };
        let need = |role, key: Option<&'static [u8]>| Need { role, key };
        assert!(allows(&g(Role::Write, None), &need(Role::Read, Some(b"k"))));
        assert!(!allows(
            &g(Role::Read, None),
            &need(Role::Write, Some(b"k"))
        ));
        assert!(!allows(&g(Role::Write, None), &need(Role::Admin, None)));
        let scoped = g(Role::Write, Some("users/"));
        assert!(allows(&scoped, &need(Role::Write, Some(b"users/1"))));
        assert!(!allows(&scoped, &need(Role::Write, Some(b"user"))));
        assert!(!allows(&scoped, &need(Role::Read, Some(b"other"))));
        assert!(allows(&scoped, &need(Role::Read, None)), "/v1/cluster");
        let admin_scoped = g(Role::Admin, Some("users/"));
        assert!(!allows(&admin_scoped, &need(Role::Admin, None)), "repair");
        assert!(allows(&admin_scoped, &need(Role::Admin, Some(b"users/9"))));
    }

    #[test]
    fn a_bad_tokens_file_is_refused() {
        let t = make(Role::Read, None, None);
        let mut twice = vec![t.record.clone(), t.record.clone()];
        assert!(TokenSet::new(&twice).unwrap_err().contains("twice"));
        twice.pop();
        twice[0].sha256 = "zz".into();
        assert!(TokenSet::new(&twice).unwrap_err().contains("sha256"));
    }
}
