//! Certificates for a cluster (rcgen, ECDSA P-256): a development CA and one
//! certificate per node, as `ringkv certs init|renew` writes them and as the
//! tests use them.
//!
//! A node certificate carries the node's identity ([`crate::peer::tls::identity`],
//! a DNS name), the IP addresses it serves on (so HTTPS clients can check
//! them), any extra names asked for, and both the server and the client
//! extended key usages (a node is both ends of peer connections). A separate
//! HTTPS certificate ([`Ca::issue_https`]) carries no node identity and only
//! the server usage, so it is no peer credential. The CA is
//! rebuilt from its own certificate and key when more certificates are issued
//! later, so renewals chain to the same CA.

use crate::peer::tls::identity;
pub use rcgen::ExtendedKeyUsagePurpose as KeyUse;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

/// A certificate and its private key, in PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a private key.
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CertError(pub String);

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        CertError(e.to_string())
    }
}

/// When a certificate is valid.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks of a cluster differ) for `days` days.
    pub fn days(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days.into()),
        }
    }

    /// From an hour ago until `seconds` from now (tests of certificates
    /// that expire while in use).
    pub fn seconds(seconds: i64) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::seconds(seconds),
        }
    }

    /// Validity in the past (tests of expired certificates).
    pub fn expired() -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        }
    }
}

/// A certificate authority able to issue node certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// What a node certificate names besides the node's identity.
#[derive(Clone, Debug, Default)]
pub struct NodeNames {
    /// IP addresses (the node's HTTP and peer addresses).
    pub ips: Vec<IpAddr>,
    /// Extra DNS names (a load balancer's, say).
    pub dns: Vec<String>,
}

impl Ca {
    /// A new CA for cluster `cluster`, valid for `days`.
    pub fn generate(cluster: &str, validity: Validity) -> Result<(Ca, Issued), CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("ringkv CA {cluster}"));
        dn.push(DnType::OrganizationName, "ringkv");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial()?);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok((Ca { cert, key }, issued))
    }

    /// The CA of an existing certificate and key (PEM), to issue more.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| CertError(format!("the CA key is not a usable private key: {e}")))?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)
            .map_err(|e| CertError(format!("the CA certificate cannot be read: {e}")))?;
        // Re-signing with the CA's own key gives an issuer whose name and
        // key are the original's: what it signs chains to the original.
        let cert = params.self_signed(&key)?;
        if cert.der().is_empty() {
            return Err(CertError("the CA certificate is empty".into()));
        }
        Ok(Ca { cert, key })
    }

    /// A certificate and new key for node `node_id`: its identity
    /// (`<id>.node.ringkv`) and `names`, for both ends of a peer connection.
    pub fn issue_node(
        &self,
        node_id: &str,
        names: &NodeNames,
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let mut dns = vec![identity(node_id)];
        dns.extend(names.dns.iter().cloned());
        self.issue(
            &identity(node_id),
            &dns,
            &names.ips,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            validity,
        )
    }

    /// A certificate and new key for a node's HTTPS port only: `names` and
    /// `localhost`, server authentication only and no node identity, so it
    /// is no peer credential (it may sit on a proxy).
    pub fn issue_https(&self, names: &NodeNames, validity: Validity) -> Result<Issued, CertError> {
        let mut dns = vec!["localhost".to_string()];
        dns.extend(names.dns.iter().cloned());
        self.issue(
            "ringkv https",
            &dns,
            &names.ips,
            &[ExtendedKeyUsagePurpose::ServerAuth],
            validity,
        )
    }

    /// A certificate with exactly these names and uses (tests of what the
    /// checks refuse, e.g. wildcards).
    pub fn issue(
        &self,
        common_name: &str,
        dns: &[String],
        ips: &[IpAddr],
        uses: &[ExtendedKeyUsagePurpose],
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "ringkv");
        params.distinguished_name = dn;
        let mut sans = Vec::new();
        for name in dns {
            sans.push(SanType::DnsName(name.clone().try_into()?));
        }
        for ip in ips {
            sans.push(SanType::IpAddress(*ip));
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = uses.to_vec();
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A random 128-bit serial number (positive).
fn random_serial() -> Result<rcgen::SerialNumber, CertError> {
    use rustls::crypto::ring::default_provider;
    let mut bytes = [0u8; 16];
    default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CertError("no randomness from the system".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}
