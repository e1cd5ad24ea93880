//! `ringkv put|get|del`: a small client for a first try without curl.
//!
//! Values are read from the argument or, with `-`, from standard input; `get`
//! writes the raw value to standard output. Errors print the server's JSON
//! message and exit 1 (404: exit 1 with "not found").

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::io::{Read, Write};
use std::process::ExitCode;
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

pub fn run(op: Op, key: &str, node: &str, consistency: Option<&str>) -> ExitCode {
    let base = if node.starts_with("http://") {
        node.trim_end_matches('/').to_string()
    } else {
        format!("http://{node}")
    };
    let mut url = format!("{base}/v1/kv/{}", utf8_percent_encode(key, KEY_SET));
    if let Some(c) = consistency {
        url.push_str(&format!("?consistency={c}"));
    }
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
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
            agent.put(&url).send_bytes(&body)
        }
        Op::Get => agent.get(&url).call(),
        Op::Del => agent.delete(&url).call(),
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
        Err(ureq::Error::Status(code, resp)) => {
            let body = resp.into_string().unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or(body);
            eprintln!("ringkv: {code}: {message}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ringkv: cannot reach {base}: {e}");
            ExitCode::FAILURE
        }
    }
}
