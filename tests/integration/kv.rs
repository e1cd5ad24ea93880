//! The key-value API against a single node (replication factor 1).

use crate::harness::{encode_key, kv, raw_http, Client, Cluster, ClusterSpec, Resp};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

fn one_node(spec: ClusterSpec) -> (Cluster, Client) {
    let cluster = Cluster::start(spec);
    let client = cluster.node(0).client();
    (cluster, client)
}

/// The ETag without quotes (what `x-ringkv-version` and JSON bodies carry).
fn unquoted(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// Asserts a successful write: `status`, a quoted ETag, the matching
/// `x-ringkv-version`, no body. Returns the ETag (quoted).
fn written(r: &Resp, status: u16) -> String {
    r.expect_status(status);
    let etag = r.etag();
    assert_eq!(
        r.header("x-ringkv-version"),
        Some(unquoted(&etag)),
        "x-ringkv-version must be the ETag without quotes: {r}"
    );
    assert!(r.body.is_empty(), "a write answers without a body: {r}");
    etag
}

/// Asserts `GET path` answers 200 with exactly `value` and `etag`.
fn assert_value(c: &Client, path: &str, value: &[u8], etag: &str) -> Resp {
    let r = c.get(path);
    r.expect_status(200);
    assert_eq!(r.body, value, "value of {path}: {r}");
    assert_eq!(r.etag(), etag, "ETag of {path}: {r}");
    assert_eq!(r.header("x-ringkv-version"), Some(unquoted(etag)), "{r}");
    r
}

fn assert_absent(c: &Client, path: &str) {
    c.get(path).expect_error(404, "not_found");
}

/// Asserts a 412 that reports `current` (quoted ETag, or `None`: no live
/// value) in the `ETag` header and as `current_etag` in the body.
fn assert_precondition_failed(r: &Resp, current: Option<&str>) {
    let body = r.expect_error(412, "precondition_failed");
    match current {
        Some(etag) => {
            assert_eq!(r.header("etag"), Some(etag), "ETag header of a 412: {r}");
            assert_eq!(body["current_etag"], unquoted(etag), "current_etag: {r}");
        }
        None => {
            assert_eq!(r.header("etag"), None, "no live value, no ETag: {r}");
            assert!(body["current_etag"].is_null(), "current_etag: {r}");
        }
    }
}

#[test]
fn crud_lifecycle() {
    let (cluster, c) = one_node(ClusterSpec::single());
    let path = kv("greeting");

    let before = SystemTime::now();
    let e1 = written(&c.put(&path, b"hello"), 201);
    let after = SystemTime::now();

    let r = assert_value(&c, &path, b"hello", &e1);
    assert_eq!(
        r.header("content-type"),
        Some("application/octet-stream"),
        "{r}"
    );
    let lm = r.header("last-modified").expect("Last-Modified on GET");
    let lm = httpdate::parse_http_date(lm).unwrap_or_else(|e| panic!("Last-Modified {lm:?}: {e}"));
    // HTTP dates have whole seconds: allow the truncation on both sides.
    assert!(
        lm + Duration::from_secs(1) >= before && lm <= after + Duration::from_secs(1),
        "Last-Modified {lm:?} is not the time of the write ({before:?}..{after:?})"
    );

    // Overwrite: 204 and a new version.
    let e2 = written(&c.put(&path, b"world"), 204);
    assert_ne!(e1, e2, "an overwrite must get a new ETag");
    assert_value(&c, &path, b"world", &e2);

    // HEAD: the GET headers, no body.
    let h = c.head(&path);
    h.expect_status(200);
    assert_eq!(h.etag(), e2);
    assert_eq!(h.header("x-ringkv-version"), Some(unquoted(&e2)));
    assert!(h.header("last-modified").is_some(), "{h}");
    let raw = raw_http(
        cluster.node(0).http_addr,
        format!("HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let raw = String::from_utf8_lossy(&raw);
    let (head, rest) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {raw:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{raw:?}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 5"),
        "HEAD keeps the Content-Length of the GET: {raw:?}"
    );
    assert_eq!(rest, "", "HEAD must not send a body: {raw:?}");

    // Conditional GET.
    for inm in [e2.clone(), "*".to_string(), format!("{e1}, {e2}")] {
        let r = c.get_with(&path, &[("If-None-Match", &inm)]);
        r.expect_status(304);
        assert_eq!(r.etag(), e2, "{r}");
        assert!(r.body.is_empty(), "{r}");
    }
    let r = c.get_with(&path, &[("If-None-Match", &e1)]);
    r.expect_status(200);
    assert_eq!(r.body, b"world");

    // Delete, then it is gone for GET and HEAD.
    written(&c.delete(&path), 204);
    let r = c.get(&path);
    let body = r.expect_error(404, "not_found");
    assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{r}");
    assert_eq!(c.head(&path).status, 404);
    assert_eq!(c.get_with(&path, &[("If-None-Match", "*")]).status, 404);

    // Deleting a key that never existed is not an error.
    written(&c.delete(&kv("never-written")), 204);
    assert_absent(&c, &kv("never-written"));
}

#[test]
fn create_only_if_absent() {
    let (_cluster, c) = one_node(ClusterSpec::single());
    let path = kv("create-me");
    let etag = written(&c.put_with(&path, &[("If-None-Match", "*")], b"first"), 201);
    assert_value(&c, &path, b"first", &etag);

    let r = c.put_with(&path, &[("If-None-Match", "*")], b"second");
    assert_precondition_failed(&r, Some(&etag));
    assert_value(&c, &path, b"first", &etag);
}

#[test]
fn update_only_if_present() {
    let (_cluster, c) = one_node(ClusterSpec::single());
    let path = kv("update-me");
    let r = c.put_with(&path, &[("If-Match", "*")], b"nothing to update");
    assert_precondition_failed(&r, None);
    assert_absent(&c, &path);

    let e1 = written(&c.put(&path, b"v1"), 201);
    let e2 = written(&c.put_with(&path, &[("If-Match", "*")], b"v2"), 204);
    assert_ne!(e1, e2);
    assert_value(&c, &path, b"v2", &e2);
}

#[test]
fn compare_and_set() {
    let (_cluster, c) = one_node(ClusterSpec::single());
    let path = kv("cas");
    let e1 = written(&c.put(&path, b"v1"), 201);
    let e2 = written(&c.put_with(&path, &[("If-Match", &e1)], b"v2"), 204);
    assert_ne!(e1, e2);
    assert_value(&c, &path, b"v2", &e2);

    // e1 is stale now.
    let r = c.put_with(&path, &[("If-Match", &e1)], b"v3");
    assert_precondition_failed(&r, Some(&e2));
    assert_value(&c, &path, b"v2", &e2);

    // A weak tag of the current version matches too.
    let weak = format!("W/{e2}");
    let e3 = written(&c.put_with(&path, &[("If-Match", &weak)], b"v3"), 204);
    assert_value(&c, &path, b"v3", &e3);

    // A well-formed tag that never existed, and a tag on an absent key.
    let r = c.put_with(&path, &[("If-Match", "\"1-1\"")], b"v4");
    assert_precondition_failed(&r, Some(&e3));
    let r = c.put_with(&kv("cas-absent"), &[("If-Match", &e3)], b"x");
    assert_precondition_failed(&r, None);
    assert_absent(&c, &kv("cas-absent"));
    assert_value(&c, &path, b"v3", &e3);
}

#[test]
fn conditional_delete() {
    let (_cluster, c) = one_node(ClusterSpec::single());
    let path = kv("cond-delete");
    let e1 = written(&c.put(&path, b"v1"), 201);
    let e2 = written(&c.put(&path, b"v2"), 204);

    let r = c.delete_with(&path, &[("If-Match", &e1)]);
    assert_precondition_failed(&r, Some(&e2));
    assert_value(&c, &path, b"v2", &e2);

    written(&c.delete_with(&path, &[("If-Match", &e2)]), 204);
    assert_absent(&c, &path);

    // Deleting again with the old tag or `*`: nothing live to match.
    assert_precondition_failed(&c.delete_with(&path, &[("If-Match", &e2)]), None);
    assert_precondition_failed(&c.delete_with(&path, &[("If-Match", "*")]), None);
    assert_absent(&c, &path);
}

#[test]
fn create_after_delete() {
    let (_cluster, c) = one_node(ClusterSpec::single());
    let path = kv("phoenix");
    written(&c.put(&path, b"old"), 201);
    written(&c.delete(&path), 204);
    // The tombstone counts as absent for If-Match: * ...
    assert_precondition_failed(&c.put_with(&path, &[("If-Match", "*")], b"x"), None);
    assert_absent(&c, &path);
    // ... and for If-None-Match: *, which creates it again.
    let e = written(&c.put_with(&path, &[("If-None-Match", "*")], b"new"), 201);
    assert_value(&c, &path, b"new", &e);

    // An unconditional PUT after a delete is a creation as well.
    let other = kv("phoenix-2");
    written(&c.put(&other, b"a"), 201);
    written(&c.delete(&other), 204);
    let e = written(&c.put(&other, b"b"), 201);
    assert_value(&c, &other, b"b", &e);
}

#[test]
fn concurrent_compare_and_set_has_one_winner() {
    const THREADS: usize = 16;
    let (_cluster, c) = one_node(ClusterSpec::single());
    let path = kv("contended");
    let start = written(&c.put(&path, b"start"), 201);

    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (c, path, start, barrier) =
                (c.base.clone(), path.clone(), start.clone(), barrier.clone());
            std::thread::spawn(move || {
                let c = Client::new(c);
                // Open the connection before the race.
                c.get("/health").expect_status(200);
                barrier.wait();
                let value = format!("writer-{i}");
                (
                    value.clone(),
                    c.put_with(&path, &[("If-Match", &start)], value.as_bytes()),
                )
            })
        })
        .collect();
    let results: Vec<(String, Resp)> = handles
        .into_iter()
        .map(|h| h.join().expect("writer thread panicked"))
        .collect();

    let winners: Vec<&(String, Resp)> = results.iter().filter(|(_, r)| r.status == 204).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one compare-and-set must win; statuses: {:?}",
        results.iter().map(|(_, r)| r.status).collect::<Vec<_>>()
    );
    let (value, win) = winners[0];
    let etag = written(win, 204);
    for (_, r) in results.iter().filter(|(_, r)| r.status != 204) {
        assert_precondition_failed(r, Some(&etag));
    }
    assert_value(&c, &path, value.as_bytes(), &etag);
}

#[test]
fn binary_and_empty_values() {
    let (_cluster, c) = one_node(ClusterSpec::single());
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let e = written(&c.put(&kv("binary"), &all_bytes), 201);
    let r = assert_value(&c, &kv("binary"), &all_bytes, &e);
    assert_eq!(r.header("content-length"), Some("256"));

    let e = written(&c.put(&kv("empty"), b""), 201);
    let r = assert_value(&c, &kv("empty"), b"", &e);
    assert_eq!(r.header("content-length"), Some("0"), "{r}");
    // An empty value is a value, not a delete.
    assert_eq!(c.head(&kv("empty")).status, 200);
    assert_precondition_failed(
        &c.put_with(&kv("empty"), &[("If-None-Match", "*")], b"x"),
        Some(&e),
    );
}

#[test]
fn percent_encoded_keys() {
    let (_cluster, c) = one_node(ClusterSpec::single());

    // The key is the percent-decoded path tail: `a%2Fb` and `a/b` are the
    // same key `a/b`.
    let e = written(&c.put(&kv("a%2Fb"), b"slash"), 201);
    assert_value(&c, &kv("a/b"), b"slash", &e);
    assert_value(&c, &kv("a%2fb"), b"slash", &e);
    let e = written(&c.put(&kv("a/b"), b"same key"), 204);
    assert_value(&c, &kv("a%2Fb"), b"same key", &e);
    assert_absent(&c, &kv("a"));
    assert_absent(&c, &kv("b"));

    // `%41` is `A`.
    let e = written(&c.put(&kv("%41BC"), b"abc"), 201);
    assert_value(&c, &kv("ABC"), b"abc", &e);

    // `?` and `#` are part of the key when encoded; `+` is not a space.
    let e = written(&c.put(&kv("what%3F%23"), b"q"), 201);
    assert_value(&c, &kv("what%3f%23?consistency=one"), b"q", &e);
    assert_absent(&c, &kv("what"));
    let e = written(&c.put(&kv("a+b"), b"plus"), 201);
    assert_value(&c, &kv("a%2Bb"), b"plus", &e);
    assert_absent(&c, &kv("a%20b"));

    // Bytes that are not UTF-8, and NUL.
    let e = written(&c.put(&kv("%FF%00"), b"ff00"), 201);
    assert_value(&c, &kv("%ff%00"), b"ff00", &e);
    assert_absent(&c, &kv("%FF"));
    assert_absent(&c, &kv("%FF%00%00"));
    let e_ff = written(&c.put(&kv("%FF"), b"ff"), 201);
    assert_value(&c, &kv("%FF"), b"ff", &e_ff);
    assert_value(&c, &kv("%FF%00"), b"ff00", &e);

    // Every byte value in one key.
    let all: Vec<u8> = (0..=255u8).collect();
    let path = kv(&encode_key(&all));
    let e = written(&c.put(&path, b"all bytes"), 201);
    assert_value(&c, &path, b"all bytes", &e);
    written(&c.delete(&path), 204);
    assert_absent(&c, &path);
}

#[test]
fn key_length_limit() {
    let (_cluster, c) = one_node(ClusterSpec::single());
    let max = kv(&"k".repeat(1024));
    let e = written(&c.put(&max, b"longest"), 201);
    assert_value(&c, &max, b"longest", &e);

    let over = kv(&"k".repeat(1025));
    for r in [
        c.put(&over, b"too long"),
        c.get(&over),
        c.delete(&over),
        c.put_with(&over, &[("If-None-Match", "*")], b"too long"),
    ] {
        let body = r.expect_error(400, "key_too_long");
        assert_eq!(body["limit"], 1024, "{r}");
    }

    // The limit counts decoded bytes: 1024 `%FF` is 1024 bytes.
    let max_encoded = kv(&"%FF".repeat(1024));
    let e = written(&c.put(&max_encoded, b"ff"), 201);
    assert_value(&c, &max_encoded, b"ff", &e);
    let over_encoded = kv(&"%FF".repeat(1025));
    let body = c.put(&over_encoded, b"x").expect_error(400, "key_too_long");
    assert_eq!(body["limit"], 1024);

    // The refused writes changed nothing.
    assert_value(
        &c,
        &max,
        b"longest",
        &written(&c.put(&max, b"longest"), 204),
    );
    assert_value(&c, &max_encoded, b"ff", &e);
}

#[test]
fn value_size_limit() {
    let (_cluster, c) = one_node(ClusterSpec::single().storage_toml("max_value_bytes = 1000"));
    let big = vec![b'x'; 1001];
    let exact = vec![b'y'; 1000];

    let body = c.put(&kv("v"), &big).expect_error(413, "value_too_large");
    assert_eq!(body["limit"], 1000);
    assert_absent(&c, &kv("v"));

    let e = written(&c.put(&kv("v"), &exact), 201);
    assert_value(&c, &kv("v"), &exact, &e);

    // Too large over an existing value, with Content-Length and chunked.
    let body = c.put(&kv("v"), &big).expect_error(413, "value_too_large");
    assert_eq!(body["limit"], 1000);
    let body = c
        .send_chunked("PUT", &kv("v"), &[], &big)
        .expect_error(413, "value_too_large");
    assert_eq!(body["limit"], 1000);
    let body = c
        .put_with(&kv("v"), &[("If-Match", &e)], &big)
        .expect_error(413, "value_too_large");
    assert_eq!(body["limit"], 1000);
    assert_value(&c, &kv("v"), &exact, &e);

    // A chunked body within the limit is fine.
    let r = c.send_chunked("PUT", &kv("chunked"), &[], &exact);
    let e = written(&r, 201);
    assert_value(&c, &kv("chunked"), &exact, &e);
}

#[test]
fn bad_requests_change_nothing() {
    let (_cluster, c) = one_node(ClusterSpec::single());
    let path = kv("k");
    let e = written(&c.put(&path, b"orig"), 201);
    let absent = kv("absent");

    // Empty key.
    for method in ["GET", "PUT", "DELETE"] {
        let body = (method == "PUT").then_some(&b"v"[..]);
        c.call(method, &kv(""), &[], body)
            .expect_error(400, "invalid_key");
    }
    assert_eq!(c.head(&kv("")).status, 400);

    // Unknown consistency level, in the query and in the header.
    for (p, h) in [
        (format!("{path}?consistency=two"), None),
        (format!("{absent}?consistency=two"), None),
        (path.clone(), Some(("x-ringkv-consistency", "two"))),
        (absent.clone(), Some(("x-ringkv-consistency", "two"))),
        (format!("{path}?consistency="), None),
    ] {
        let headers: Vec<(&str, &str)> = h.into_iter().collect();
        for (method, body) in [
            ("GET", None),
            ("PUT", Some(&b"changed"[..])),
            ("DELETE", None),
        ] {
            let r = c.call(method, &p, &headers, body);
            let b = r.expect_error(400, "invalid_consistency");
            assert!(
                b["error"].as_str().unwrap().contains("one, quorum or all"),
                "the message names the valid levels: {r}"
            );
        }
    }

    // Both preconditions at once.
    let both = [("If-Match", e.as_str()), ("If-None-Match", "*")];
    c.put_with(&path, &both, b"changed")
        .expect_error(400, "invalid_header");
    c.put_with(&absent, &both, b"changed")
        .expect_error(400, "invalid_header");
    c.delete_with(&path, &both)
        .expect_error(400, "invalid_header");

    // Malformed entity tags.
    for bad in ["\"nonsense\"", unquoted(&e), "\"12-\"", "\"\"", "W/"] {
        let r = c.put_with(&path, &[("If-Match", bad)], b"changed");
        let b = r.expect_error(400, "invalid_header");
        assert!(
            b["error"].as_str().unwrap().contains("If-Match"),
            "the message names the header: {r}"
        );
        c.delete_with(&path, &[("If-Match", bad)])
            .expect_error(400, "invalid_header");
        c.get_with(&path, &[("If-None-Match", bad)])
            .expect_error(400, "invalid_header");
    }
    // A write only takes `If-None-Match: *`.
    c.put_with(&path, &[("If-None-Match", &e)], b"changed")
        .expect_error(400, "invalid_header");
    c.put_with(&absent, &[("If-None-Match", &e)], b"changed")
        .expect_error(400, "invalid_header");
    c.delete_with(&path, &[("If-None-Match", "*")])
        .expect_status(412);

    assert_value(&c, &path, b"orig", &e);
    assert_absent(&c, &absent);
}

#[test]
fn unknown_routes_and_methods() {
    let (_cluster, c) = one_node(ClusterSpec::single());
    for p in ["/nope", "/v1/kvx/a", "/v2/kv/a", "/"] {
        c.get(p).expect_error(404, "no_route");
        c.put(p, b"v").expect_error(404, "no_route");
    }
    // The key route without a key names what is missing.
    for p in ["/v1/kv", "/v1/kv/"] {
        c.get(p).expect_error(400, "invalid_key");
        c.put(p, b"v").expect_error(400, "invalid_key");
    }
    for method in ["POST", "PATCH"] {
        let r = c.call(method, &kv("x"), &[], Some(b"v"));
        let body = r.expect_error(405, "method_not_allowed");
        assert!(body["error"].as_str().unwrap().contains("PUT"), "{r}");
    }
    assert_absent(&c, &kv("x"));
}

#[test]
fn consistency_levels_on_one_node() {
    let (_cluster, c) = one_node(ClusterSpec::single());
    for level in ["one", "quorum", "all", "QUORUM"] {
        let key = kv(&format!("level-{level}"));
        let q = format!("{key}?consistency={level}");
        let e1 = written(&c.put(&q, b"v1"), 201);
        let r = c.get(&q);
        r.expect_status(200);
        assert_eq!((r.body.as_slice(), r.etag()), (&b"v1"[..], e1.clone()));

        let h = [("x-ringkv-consistency", level)];
        let e2 = written(&c.put_with(&key, &h, b"v2"), 204);
        let r = c.get_with(&key, &h);
        r.expect_status(200);
        assert_eq!((r.body.as_slice(), r.etag()), (&b"v2"[..], e2.clone()));

        let e3 = written(&c.put_with(&q, &[("If-Match", &e2)], b"v3"), 204);
        assert_precondition_failed(&c.put_with(&q, &[("If-Match", &e2)], b"v4"), Some(&e3));
        written(&c.delete(&q), 204);
        assert_absent(&c, &q);
        assert_absent(&c, &key);
    }
}

#[test]
fn health_and_ready() {
    let (_cluster, c) = one_node(ClusterSpec::single());
    for (path, status) in [("/health", "ok"), ("/ready", "ready")] {
        let r = c.get(path);
        r.expect_status(200);
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{r}"
        );
        let body = r.json();
        assert_eq!(body["status"], status, "{r}");
        assert_eq!(body["node"], "n1", "{r}");
    }
}
