//! The cluster CA bundle (`ca_file`) and which of its CAs are trusted now.
//!
//! webpki does not look at a trust anchor's own validity, so ringkv does:
//! loading refuses a bundle that holds a CA certificate that has expired or
//! is not valid yet, naming the file and the CA's subject
//! ([`parse_strict`]); and [`Trust::roots_at`] answers the roots of the CAs
//! valid at a given time together with the time that answer next changes,
//! so that `PeerTls` rebuilds its roots when a CA expires while the node
//! runs (one comparison per use until then).
//!
//! A reload that fails after `ca_file` changed restricts trust to the CAs
//! that are both in the bundle in force and in the new file as far as it
//! parses ([`parse_lenient`], [`Trust::restricted_to`]): a half-written or
//! unreadable new bundle can only remove trust (an unreadable one removes
//! all of it), never keep a CA the operator is removing.
//!
//! Bounded: a bundle is read up to [`MAX_BUNDLE_BYTES`] and holds at most
//! [`MAX_CAS`] certificates.

use super::{err, TlsError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// The largest CA bundle a node reads.
pub const MAX_BUNDLE_BYTES: u64 = 1 << 20;
/// The most CA certificates a bundle may hold.
pub const MAX_CAS: usize = 100;

/// One CA certificate of the bundle and when it is valid (unix seconds,
/// both ends included, as X.509 has it).
#[derive(Clone, Debug)]
pub struct CaCert {
    pub der: CertificateDer<'static>,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl CaCert {
    fn parse(der: CertificateDer<'static>) -> Result<CaCert, String> {
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
        let v = parsed.validity();
        Ok(CaCert {
            subject: parsed.subject().to_string(),
            not_before: v.not_before.timestamp(),
            not_after: v.not_after.timestamp(),
            der,
        })
    }

    pub fn valid_at(&self, now: i64) -> bool {
        (self.not_before..=self.not_after).contains(&now)
    }
}

/// Reads `path`, at most [`MAX_BUNDLE_BYTES`].
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    let file = std::fs::File::open(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_BUNDLE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(path, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(err(
            path,
            format!("is larger than the {MAX_BUNDLE_BYTES} bytes a CA bundle may have"),
        ));
    }
    Ok(bytes)
}

fn date(unix: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(unix)
        .map_or_else(|_| unix.to_string(), |t| t.to_string())
}

/// Every certificate of `pem` (read from `file`): each a usable CA
/// certificate, valid at `now` — else an error naming the file, and the CA
/// by its subject.
pub fn parse_strict(file: &Path, pem: &[u8], now: i64) -> Result<Vec<CaCert>, TlsError> {
    let mut cas = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let der = cert.map_err(|e| err(file, format!("not a PEM certificate: {e}")))?;
        if cas.len() == MAX_CAS {
            return Err(err(file, format!("holds more than {MAX_CAS} certificates")));
        }
        let mut probe = RootCertStore::empty();
        probe
            .add(der.clone())
            .map_err(|e| err(file, format!("not a usable CA certificate: {e}")))?;
        let ca = CaCert::parse(der).map_err(|e| err(file, e))?;
        if now > ca.not_after {
            return Err(err(
                file,
                format!(
                    "the CA certificate '{}' has expired (valid until {}): remove it from the \
                     bundle (or replace the CA)",
                    ca.subject,
                    date(ca.not_after)
                ),
            ));
        }
        if now < ca.not_before {
            return Err(err(
                file,
                format!(
                    "the CA certificate '{}' is not valid yet (valid from {})",
                    ca.subject,
                    date(ca.not_before)
                ),
            ));
        }
        cas.push(ca);
    }
    if cas.is_empty() {
        return Err(err(file, "holds no certificate"));
    }
    Ok(cas)
}

/// The certificates of a possibly damaged bundle that parse as PEM (at most
/// [`MAX_CAS`]); a damaged block is skipped.
pub fn parse_lenient(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .take(MAX_CAS * 2)
        .filter_map(Result::ok)
        .take(MAX_CAS)
        .collect()
}

/// Which CAs are trusted: those of the last bundle that loaded, less those
/// a failing reload of a changed bundle did not find in the new file.
#[derive(Clone, Debug)]
pub struct Trust {
    cas: Arc<Vec<CaCert>>,
    /// DER of the certificates the newest (unloadable) file holds; `None`:
    /// no restriction.
    allowed: Option<Arc<HashSet<Vec<u8>>>>,
}

/// The roots trusted at some time.
pub struct Roots {
    pub store: RootCertStore,
    /// Unix second from which this answer no longer holds (a CA expires or
    /// becomes valid); `i64::MAX`: never.
    pub until: i64,
    /// CAs trusted, of how many the bundle in force has.
    pub trusted: usize,
    pub of: usize,
}

impl Trust {
    pub fn new(cas: Vec<CaCert>) -> Trust {
        Trust {
            cas: Arc::new(cas),
            allowed: None,
        }
    }

    /// The CAs of the bundle in force that are also among `newest` (what a
    /// changed, unloadable bundle still holds).
    pub fn restricted_to(&self, newest: &[CertificateDer<'_>]) -> Trust {
        Trust {
            cas: self.cas.clone(),
            allowed: Some(Arc::new(newest.iter().map(|c| c.to_vec()).collect())),
        }
    }

    pub fn is_restricted(&self) -> bool {
        self.allowed.is_some()
    }

    /// The roots of the CAs trusted and valid at `now` (unix seconds).
    pub fn roots_at(&self, now: i64) -> Roots {
        let mut store = RootCertStore::empty();
        let mut until = i64::MAX;
        let mut trusted = 0;
        for ca in self.cas.iter() {
            if let Some(allowed) = &self.allowed {
                if !allowed.contains(ca.der.as_ref()) {
                    continue;
                }
            }
            if ca.valid_at(now) {
                until = until.min(ca.not_after.saturating_add(1));
                let (added, _) = store.add_parsable_certificates([ca.der.clone()]);
                trusted += added;
            } else if ca.not_before > now {
                until = until.min(ca.not_before);
            }
        }
        Roots {
            store,
            until,
            trusted,
            of: self.cas.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certgen::{Ca, Validity};

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn roots_follow_validity_and_restriction() {
        let (_, a) = Ca::generate("a", Validity::days(2)).unwrap();
        let (_, b) = Ca::generate("b", Validity::seconds(100)).unwrap();
        let bundle = format!("{}{}", a.cert_pem, b.cert_pem);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let cas = parse_strict(Path::new("ca.crt"), bundle.as_bytes(), now).unwrap();
        let trust = Trust::new(cas);
        let r = trust.roots_at(now);
        assert_eq!((r.trusted, r.of), (2, 2));
        assert!(
            (now + 99..=now + 101).contains(&(r.until - 1)),
            "b expires first"
        );
        // Past b's end, only a.
        let later = trust.roots_at(r.until);
        assert_eq!(later.trusted, 1);
        assert!(later.until > now + 86_400);
        // A damaged new file naming only b: a is no longer trusted, and
        // nothing not in force is added.
        let (_, c) = Ca::generate("c", Validity::days(2)).unwrap();
        let damaged = format!(
            "{}{}-----BEGIN CERTIFICATE-----\nAAA",
            b.cert_pem, c.cert_pem
        );
        let newest = parse_lenient(damaged.as_bytes());
        assert_eq!(newest.len(), 2);
        let only_b = trust.restricted_to(&newest);
        assert!(only_b.is_restricted());
        assert_eq!(only_b.roots_at(now).trusted, 1);
        assert_eq!(only_b.roots_at(r.until).trusted, 0);
        assert_eq!(trust.restricted_to(&[]).roots_at(now).trusted, 0);
        assert_eq!(
            trust
                .restricted_to(&[der(&a.cert_pem)])
                .roots_at(now)
                .trusted,
            1
        );
    }
}
