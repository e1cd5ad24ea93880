//! `ringkv put|get|del`: a small client for a first try without curl.
//!
//! Values are read from the argument or, with `-`, from standard input; `get`
//! writes the raw value to standard output. Errors print the server's JSON
//! message and exit 1 (404: exit 1 with "not found"). With `--token` (or
//! `RINGKV_TOKEN`) requests carry `Authorization: Bearer …`; with
//! `--ca-file` (or `RINGKV_CA_FILE`) the node's HTTPS certificate is checked
//! against that CA (and an address without a scheme means `https://`).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Characters kept as they are in a key path segment.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub enum Op {
    Put { value: Option<String> },
    Get,
    Del,
}

/// Where and how to reach a node.
pub struct Conn<'a> {
    pub node: &'a str,
    pub consistency: Option<&'a str>,
    pub token: Option<&'a str>,
    pub ca_file: Option<&'a Path>,
}

/// An HTTPS client configuration trusting the CA certificates in `ca_file`.
pub fn tls_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let pem = std::fs::read(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: holds no certificate", ca_file.display()));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The base URL of `node`: as given when it has a scheme, else https://
/// when a CA file is given and http:// otherwise.
pub fn base_url(node: &str, tls: bool) -> String {
    if node.starts_with("http://") || node.starts_with("https://") {
        node.trim_end_matches('/').to_string()
    } else if tls {
        format!("https://{node}")
    } else {
        format!("http://{node}")
    }
}

/// Whether a request to `base` would carry a token in clear over a network:
/// plain http:// to anything but a loopback address.
pub fn token_in_clear(base: &str) -> bool {
    let Some(rest) = base.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// What a command needs to talk to a node: its base URL, an agent (with
/// the CA when given) and the Authorization header value.
pub struct Session {
    pub base: String,
    pub agent: ureq::Agent,
    pub auth: Option<String>,
}

impl Session {
    /// Refuses (exit 2, said on stderr) to send a token in clear off
    /// loopback, or a CA file that cannot be read.
    pub fn open(conn: &Conn) -> Result<Session, ExitCode> {
        let base = base_url(conn.node, conn.ca_file.is_some());
        if conn.token.is_some() && token_in_clear(&base) {
            eprintln!(
                "ringkv: refusing to send the token in clear to {base}: use https (--ca-file) or a loopback address"
            );
            return Err(ExitCode::from(2));
        }
        let mut agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30));
        if let Some(ca) = conn.ca_file {
            match tls_config(ca) {
                Ok(cfg) => agent = agent.tls_config(cfg),
                Err(e) => {
                    eprintln!("ringkv: --ca-file: {e}");
                    return Err(ExitCode::from(2));
                }
            }
        }
        Ok(Session {
            base,
            agent: agent.build(),
            auth: conn.token.map(|t| format!("Bearer {}", t.trim())),
        })
    }

    /// A request to `url`, with the token.
    pub fn request(&self, method: &str, url: &str) -> ureq::Request {
        let r = self.agent.request(method, url);
        match &self.auth {
            Some(a) => r.set("Authorization", a),
            None => r,
        }
    }

    /// `GET path` answered with JSON; a failure is said on stderr.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value, ExitCode> {
        match self.request("GET", &format!("{}{path}", self.base)).call() {
            Ok(resp) => {
                let body = resp.into_string().map_err(|e| {
                    eprintln!("ringkv: {path}: reading the answer: {e}");
                    ExitCode::FAILURE
                })?;
                serde_json::from_str(&body).map_err(|e| {
                    eprintln!("ringkv: {path}: the answer is not JSON: {e}");
                    ExitCode::FAILURE
                })
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Says why a request failed; answers the exit code.
    pub fn failed(&self, e: ureq::Error) -> ExitCode {
        match e {
            ureq::Error::Status(code, resp) => {
                let body = resp.into_string().unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                    .unwrap_or(body);
                eprintln!("ringkv: {code}: {message}");
            }
            e => eprintln!("ringkv: cannot reach {}: {e}", self.base),
        }
        ExitCode::FAILURE
    }
}

pub fn run(op: Op, key: &str, conn: &Conn) -> ExitCode {
    let session = match Session::open(conn) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut url = format!(
        "{}/v1/kv/{}",
        session.base,
        utf8_percent_encode(key, KEY_SET)
    );
    if let Some(c) = conn.consistency {
        url.push_str(&format!("?consistency={c}"));
    }
    let request = |method: &str| session.request(method, &url);
    let result = match &op {
        Op::Put { value } => {
            let body = match value.as_deref() {
                Some("-") | None => {
                    let mut buf = Vec::new();
                    if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
                        eprintln!("ringkv: reading the value from stdin: {e}");
                        return ExitCode::FAILURE;
                    }
                    buf
                }
                Some(v) => v.as_bytes().to_vec(),
            };
            request("PUT").send_bytes(&body)
        }
        Op::Get => request("GET").call(),
        Op::Del => request("DELETE").call(),
    };
    match result {
        Ok(resp) => {
            let etag = resp.header("etag").unwrap_or("").to_string();
            match op {
                Op::Get => {
                    let mut value = Vec::new();
                    if let Err(e) = resp.into_reader().read_to_end(&mut value) {
                        eprintln!("ringkv: reading the response: {e}");
                        return ExitCode::FAILURE;
                    }
                    let _ = std::io::stdout().write_all(&value);
                    eprintln!("(etag {etag})");
                }
                Op::Put { .. } => println!("stored, etag {etag} ({})", resp.status()),
                Op::Del => println!("deleted"),
            }
            ExitCode::SUCCESS
        }
        Err(ureq::Error::Status(404, _)) if matches!(op, Op::Get) => {
            eprintln!("not found");
            ExitCode::FAILURE
        }
        Err(e) => session.failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_travel_in_clear_only_on_loopback() {
        for local in [
            "http://127.0.0.1:7001",
            "http://localhost:7001",
            "http://[::1]:7001/",
            "https://10.0.0.1:7001",
        ] {
            assert!(!token_in_clear(local), "{local}");
        }
        for remote in [
            "http://10.0.0.1:7001",
            "http://db.example:7001",
            "http://[2001:db8::1]:1",
        ] {
            assert!(token_in_clear(remote), "{remote}");
        }
    }
}
