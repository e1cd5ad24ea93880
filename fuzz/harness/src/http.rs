//! Fuzz target for the parsing of what HTTP clients send (`ringkv::http::request`):
//! the key from the raw path, the consistency level (query or header) and the
//! conditional headers of writes and reads. Shared by the bounded pass of
//! `cargo test`, the long `--ignored` run and the cargo-fuzz crate (`fuzz/`).
//!
//! Input layout (fields separated by `\n`, which no field can hold):
//! `flags \n path \n query \n x-ringkv-consistency \n If-Match \n If-None-Match`.
//! A missing field is an absent header; a flag bit can drop a present one.
//! The path is everything after `/v1/kv/`; bytes a URI cannot carry are
//! percent-encoded (as a client would), everything else is passed raw, so
//! the parsers see stray `%`, non-ASCII and overlong keys. Header bytes a
//! header value cannot carry (controls other than tab) are dropped; bytes
//! 0x80–0xFF (obs-text) stay.
//!
//! Checks: no panic; an accepted key is 1..=1024 bytes and is the
//! percent-decoded path; every refusal is a 400 with one of the documented
//! codes whose JSON body renders; an accepted entity tag prints back to
//! itself. These functions read no storage: garbage cannot change stored
//! data here by construction.

use crate::peer::Entropy;
use actix_web::body::MessageBody;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{StatusCode, Uri};
use actix_web::test::TestRequest;
use actix_web::ResponseError;
use percent_encoding::percent_decode_str;
use ringkv::config::MAX_KEY_BYTES;
use ringkv::http::error::ApiError;
use ringkv::http::request::{
    consistency, key, parse_etag, precondition, read_if_none_match, CONSISTENCY_HEADER, KV_PREFIX,
};
use ringkv_actors::storage::Precondition;
use ringkv_actors::version::Version;
use std::str::FromStr;

/// What one input did.
#[derive(Clone, Debug, Default)]
pub struct HttpReport {
    /// The input could not be made into a request at all (never happens:
    /// invalid bytes are encoded or dropped); nothing was parsed.
    pub skipped: bool,
    /// Parsers that refused the request (of the four).
    pub refusals: u32,
    /// Whether the key was accepted.
    pub key_accepted: bool,
    /// Broken properties; empty when all is well.
    pub findings: Vec<String>,
}

impl HttpReport {
    /// Panics (so that libFuzzer keeps the input) when something was found.
    pub fn assert_clean(&self) {
        assert!(self.findings.is_empty(), "findings: {:#?}", self.findings);
    }
}

/// Bytes allowed raw in a URI path (see the `http` crate's path scanner),
/// besides UTF-8 sequences.
fn path_byte_ok(b: u8) -> bool {
    matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x40..=0x5F | 0x61..=0x7A | 0x7C | 0x7E)
}

/// Bytes allowed raw in a URI query.
fn query_byte_ok(b: u8) -> bool {
    matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E)
}

fn encode_with(bytes: &[u8], ok: fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if ok(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request target: raw when the `http` crate accepts it, otherwise with
/// the offending bytes percent-encoded.
fn target(path: &[u8], query: Option<&[u8]>) -> Option<String> {
    let mut raw = KV_PREFIX.as_bytes().to_vec();
    raw.extend_from_slice(path);
    if let Some(q) = query {
        raw.push(b'?');
        raw.extend_from_slice(q);
    }
    if let Ok(s) = std::str::from_utf8(&raw) {
        if Uri::from_str(s).is_ok() {
            return Some(s.to_string());
        }
    }
    let mut s = format!("{KV_PREFIX}{}", encode_with(path, path_byte_ok));
    if let Some(q) = query {
        s.push('?');
        s.push_str(&encode_with(q, query_byte_ok));
    }
    Uri::from_str(&s).is_ok().then_some(s)
}

/// A header value from arbitrary bytes: controls (but tab) dropped.
fn header_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| {
        let kept: Vec<u8> = bytes
            .iter()
            .copied()
            .filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
            .collect();
        HeaderValue::from_bytes(&kept).expect("only visible bytes and tabs")
    })
}

/// Every refusal is a 400 with a documented code and a JSON body.
fn check_refusal(what: &str, e: &ApiError, codes: &[&str], findings: &mut Vec<String>) {
    if e.status != StatusCode::BAD_REQUEST || !codes.contains(&e.code) {
        findings.push(format!(
            "{what} refused with {} {} (expected 400 and one of {codes:?})",
            e.status, e.code
        ));
    }
    let resp = e.error_response();
    if resp.status() != e.status {
        findings.push(format!(
            "{what}: the response's status is {}",
            resp.status()
        ));
    }
    match resp.into_body().try_into_bytes() {
        Ok(body) => match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) if v["code"] == e.code && v["error"].is_string() => {}
            Ok(v) => findings.push(format!("{what}: error body lacks code or message: {v}")),
            Err(err) => findings.push(format!("{what}: error body is not JSON: {err}")),
        },
        Err(_) => findings.push(format!("{what}: error body is not a byte body")),
    }
}

/// An accepted entity tag must print back to itself.
fn check_etag(what: &str, v: Version, findings: &mut Vec<String>) {
    match parse_etag(what, &format!("\"{}\"", v.etag())) {
        Ok(back) if back == v => {}
        other => findings.push(format!("{what}: {v:?} does not round-trip: {other:?}")),
    }
}

/// The HTTP request target (see the module header for the input layout).
pub fn http_request(data: &[u8]) -> HttpReport {
    let mut report = HttpReport::default();
    let mut fields = data.split(|&b| b == b'\n');
    let flags = fields.next().and_then(|f| f.first().copied()).unwrap_or(0);
    let path = fields.next().unwrap_or_default();
    let query = fields.next();
    let headers: Vec<Option<&[u8]>> = (0..3).map(|_| fields.next()).collect();
    let query = query.filter(|q| !q.is_empty() || flags & 0x80 != 0);
    let Some(uri) = target(path, query) else {
        report.skipped = true;
        return report;
    };
    let mut req = TestRequest::default().uri(&uri);
    if flags & 0x08 != 0 {
        req = req.method(actix_web::http::Method::PUT);
    }
    let names = [
        HeaderName::from_static(CONSISTENCY_HEADER),
        header::IF_MATCH,
        header::IF_NONE_MATCH,
    ];
    for (i, (name, value)) in names.iter().zip(&headers).enumerate() {
        let Some(value) = value else { continue };
        if flags & (1 << i) != 0 {
            continue; // dropped by a flag
        }
        req = req.append_header((name.clone(), header_value(value)));
        if flags & (0x10 << i) != 0 {
            // The same header twice (the parsers read the first).
            req = req.append_header((name.clone(), header_value(b"*")));
        }
    }
    let req = req.to_http_request();
    let findings = &mut report.findings;

    match key(&req, KV_PREFIX) {
        Ok(k) => {
            report.key_accepted = true;
            let raw = req.uri().path().strip_prefix(KV_PREFIX).unwrap_or("");
            let decoded: Vec<u8> = percent_decode_str(raw).collect();
            if k.is_empty() || k.len() > MAX_KEY_BYTES || k.as_ref() != decoded.as_slice() {
                findings.push(format!(
                    "key accepted with {} bytes, {} decoded from the path",
                    k.len(),
                    decoded.len()
                ));
            }
        }
        Err(e) => {
            report.refusals += 1;
            check_refusal("key", &e, &["invalid_key", "key_too_long"], findings);
        }
    }
    match consistency(&req) {
        Ok(_) => {}
        Err(e) => {
            report.refusals += 1;
            check_refusal(
                "consistency",
                &e,
                &["invalid_query", "invalid_header", "invalid_consistency"],
                findings,
            );
        }
    }
    match precondition(&req) {
        Ok(Precondition::Version(v)) => check_etag("If-Match", v, findings),
        Ok(_) => {}
        Err(e) => {
            report.refusals += 1;
            check_refusal("precondition", &e, &["invalid_header"], findings);
        }
    }
    match read_if_none_match(&req) {
        Ok(Some(tags)) => {
            if tags.is_empty() {
                findings.push("If-None-Match accepted with no tags".into());
            }
            for v in tags.into_iter().flatten() {
                check_etag("If-None-Match", v, findings);
            }
        }
        Ok(None) => {}
        Err(e) => {
            report.refusals += 1;
            check_refusal("If-None-Match", &e, &["invalid_header"], findings);
        }
    }
    report
}

/// Generates inputs that reach every branch: real and broken entity tags,
/// percent sequences, keys at and past the limit, non-ASCII header bytes,
/// repeated query parameters.
pub fn arbitrary_input(e: &mut impl Entropy) -> Vec<u8> {
    let mut out = vec![e.below(256) as u8];
    let fields = [path(e), query(e), level(e), tags(e), tags(e)];
    let present = 1 + e.below(fields.len() as u64 + 1) as usize;
    for f in fields.into_iter().take(present) {
        out.push(b'\n');
        out.extend(f.into_iter().map(|b| if b == b'\n' { b'\r' } else { b }));
    }
    out
}

fn noise(e: &mut impl Entropy, max: u64) -> Vec<u8> {
    let n = e.below(max + 1) as usize;
    e.bytes(n)
}

fn pick(e: &mut impl Entropy, xs: &[&str]) -> Vec<u8> {
    xs[e.below(xs.len() as u64) as usize].as_bytes().to_vec()
}

fn path(e: &mut impl Entropy) -> Vec<u8> {
    match e.below(12) {
        0 => pick(
            e,
            &[
                "greeting", "a%2Fb", "a/b", "%", "%2", "%zz", "%%41", "%00", "%FF%FE",
            ],
        ),
        1 => Vec::new(),
        2 => vec![b'a'; MAX_KEY_BYTES],
        3 => vec![b'a'; MAX_KEY_BYTES + 1],
        4 => "%41".repeat(MAX_KEY_BYTES).into_bytes(),
        5 => "%41".repeat(MAX_KEY_BYTES + 1).into_bytes(),
        6 => "ключ/🦀/キー".as_bytes().to_vec(),
        7 => pick(e, &["k?consistency=all", "k#frag", "?", "#", "k%3Fq", "k?"]),
        8 => {
            let n = e.below(64) as usize;
            (0..n)
                .flat_map(|_| format!("%{:02X}", e.below(256)).into_bytes())
                .collect()
        }
        9 => vec![0xff; 1 + e.below(8) as usize],
        _ => noise(e, 48),
    }
}

fn query(e: &mut impl Entropy) -> Vec<u8> {
    match e.below(10) {
        0..=4 => pick(
            e,
            &[
                "consistency=one",
                "consistency=QUORUM",
                "consistency=All",
                "consistency=all&consistency=one",
                "consistency=",
                "consistency",
                "consistency=%FF",
                "consistency=o%6Ee",
                "consistency=one%00",
                "a=b&&c",
                "=&=",
                "%",
                "consistency=one;x",
                "consistency=two",
                "x=%zz&consistency=one",
                "consistency=%C3%B6ne",
            ],
        ),
        5 => Vec::new(),
        6 => "consistency=one&"
            .repeat(1 + e.below(200) as usize)
            .into_bytes(),
        _ => noise(e, 48),
    }
}

fn level(e: &mut impl Entropy) -> Vec<u8> {
    match e.below(8) {
        0..=3 => pick(
            e,
            &["one", "ALL", " quorum ", "Quorum", "", "none", "one,all"],
        ),
        4 => b"\xf6n\xeb".to_vec(),
        _ => noise(e, 16),
    }
}

fn etag(e: &mut impl Entropy) -> String {
    let v = Version::new(e.next_u64(), e.next_u64());
    match e.below(10) {
        0..=3 => format!("\"{}\"", v.etag()),
        4 => format!("W/\"{}\"", v.etag()),
        5 => v.etag(),
        6 => "*".into(),
        7 => [
            "\"\"",
            "\"-\"",
            "\"+1-+2\"",
            "\"ffffffffffffffffff-1\"",
            "\"1-\"",
            "\"",
        ][e.below(6) as usize]
            .into(),
        8 => format!("\"{}\"", v.etag().to_uppercase()),
        _ => format!(" \"{}\" ", v.etag()),
    }
}

fn tags(e: &mut impl Entropy) -> Vec<u8> {
    match e.below(10) {
        0..=4 => etag(e).into_bytes(),
        5 | 6 => {
            let most = if e.chance(5) { 2000 } else { 5 };
            let n = 1 + e.below(most);
            (0..n)
                .map(|_| etag(e))
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes()
        }
        7 => pick(e, &[",", ", ,", "*,*", "\"a\"\"b\"", "W/", "W/*"]),
        8 => {
            let mut t = etag(e).into_bytes();
            t.push(0x80 + e.below(128) as u8);
            t
        }
        _ => noise(e, 32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::{install_panic_counter, panics_so_far, XorShift, THREAD_PREFIX};
    use std::time::{Duration, Instant};

    #[derive(Debug, Default)]
    struct Counts {
        inputs: u64,
        panics: u64,
        garbage: u64,
        skipped: u64,
        keys_accepted: u64,
        findings: u64,
        examples: Vec<String>,
        wall: Duration,
    }

    fn run(runs: u64, seed: u64) -> Counts {
        install_panic_counter();
        std::thread::Builder::new()
            .name(format!("{THREAD_PREFIX}-http"))
            .spawn(move || {
                let started = Instant::now();
                let mut c = Counts::default();
                let mut e = XorShift::new(seed);
                for i in 0..runs {
                    let input = if e.chance(10) {
                        // Pure noise, for the input layout itself.
                        let n = e.below(96) as usize;
                        e.bytes(n)
                    } else {
                        arbitrary_input(&mut e)
                    };
                    let before = panics_so_far();
                    let result = std::panic::catch_unwind(|| http_request(&input));
                    c.inputs += 1;
                    if result.is_err() || panics_so_far() > before {
                        c.panics += 1;
                        if c.examples.len() < 8 {
                            c.examples.push(format!("panic on {:?}", input));
                        }
                    }
                    if let Ok(r) = result {
                        c.garbage += u64::from(r.refusals > 0);
                        c.skipped += u64::from(r.skipped);
                        c.keys_accepted += u64::from(r.key_accepted);
                        if !r.findings.is_empty() {
                            c.findings += 1;
                            if c.examples.len() < 8 {
                                c.examples.push(format!("{:?} on {:?}", r.findings, input));
                            }
                        }
                    }
                    if (i + 1) % 250_000 == 0 {
                        println!("fuzz http_request: {} inputs", i + 1);
                    }
                }
                c.wall = started.elapsed();
                c
            })
            .unwrap()
            .join()
            .unwrap()
    }

    fn report(c: &Counts) {
        println!(
            "fuzz http_request: inputs {}, panics {}, garbage inputs {}, stored data changed by \
             garbage 0 (no storage access), findings {}, keys accepted {}, skipped {}, wall {:.1} s",
            c.inputs,
            c.panics,
            c.garbage,
            c.findings,
            c.keys_accepted,
            c.skipped,
            c.wall.as_secs_f64()
        );
        for e in &c.examples {
            println!("  {e}");
        }
        assert!(c.panics == 0 && c.findings == 0, "{c:#?}");
    }

    #[test]
    fn fuzz_bounded_http_request() {
        let c = run(4_000, 0x6874_7470);
        report(&c);
        assert!(c.keys_accepted > 0 && c.garbage > 0);
    }

    /// `RINGKV_FUZZ_RUNS` inputs (default 1,000,000), seed `RINGKV_FUZZ_SEED`.
    #[test]
    #[ignore = "long: cargo test --release -p ringkv --lib fuzz -- --ignored --nocapture"]
    fn fuzz_long_http_request() {
        let env = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or(default)
        };
        let c = run(
            env("RINGKV_FUZZ_RUNS", 1_000_000),
            env("RINGKV_FUZZ_SEED", 1),
        );
        report(&c);
    }

    /// Writes a seed corpus for the cargo-fuzz target under
    /// `$RINGKV_FUZZ_SEED_DIR/http_request/`.
    #[test]
    #[ignore = "writes files: RINGKV_FUZZ_SEED_DIR=fuzz/corpus, see docs/RELIABILITY.md"]
    fn fuzz_write_http_seed_corpus() {
        let Some(dir) = std::env::var_os("RINGKV_FUZZ_SEED_DIR") else {
            return;
        };
        let d = std::path::PathBuf::from(dir).join("http_request");
        std::fs::create_dir_all(&d).unwrap();
        let mut e = XorShift::new(7);
        for i in 0..256 {
            std::fs::write(d.join(format!("seed-{i:04}")), arbitrary_input(&mut e)).unwrap();
        }
    }

    #[test]
    fn fuzz_http_documented_cases() {
        let ok = |data: &[u8]| {
            let r = http_request(data);
            r.assert_clean();
            r
        };
        assert!(ok(b"\0\ngreeting").key_accepted);
        assert!(ok(b"\0\na%2Fb\nconsistency=all").key_accepted);
        assert!(!ok(b"\0\n").key_accepted);
        assert!(!ok(format!("\0\n{}", "%41".repeat(1025)).as_bytes()).key_accepted);
        // (flag bits 0 and 1 drop the level and If-Match headers)
        // If-Match with If-None-Match on a write.
        assert_eq!(ok(b"\x01\nk\n\n\n\"1-2\"\n*").refusals, 1);
        // A non-ASCII level header, and a tag that is not ours.
        assert_eq!(ok(b"\0\nk\n\n\xf6n\xeb\n\"zz\"").refusals, 2);
        // A list of tags with `*`: fine for a read, refused for a write.
        assert_eq!(ok(b"\x03\nk\n\n\n\n\"1-2\", *").refusals, 1);
    }
}
