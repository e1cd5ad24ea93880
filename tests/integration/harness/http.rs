//! Harness: HTTP — a blocking client that never turns a 4xx/5xx into an error, raw requests.

use super::*;

/// A request that got no HTTP response (refused, reset, timed out…).
pub type TransportError = Box<ureq::Error>;

/// A response, whatever its status.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    /// Lowercase names, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    fn read(r: ureq::Response) -> Result<Resp, TransportError> {
        let status = r.status();
        let mut headers = Vec::new();
        for name in r.headers_names() {
            for v in r.all(&name) {
                headers.push((name.to_ascii_lowercase(), v.to_string()));
            }
        }
        let mut body = Vec::new();
        r.into_reader()
            .read_to_end(&mut body)
            .map_err(|e| Box::new(ureq::Error::from(e)))?;
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `ETag` header as sent (with quotes); panics if absent or unquoted.
    pub fn etag(&self) -> String {
        let tag = self
            .header("etag")
            .unwrap_or_else(|| panic!("no ETag header in {self}"));
        assert!(
            tag.len() > 2 && tag.starts_with('"') && tag.ends_with('"'),
            "ETag {tag:?} is not a quoted entity tag"
        );
        tag.to_string()
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the body) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self}"))
    }

    /// Asserts an error response: `status`, a JSON content type, and a body
    /// `{"error": "<non-empty>", "code": code, ...}`. Returns the body.
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self}");
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "content-type {ct:?}: {self}"
        );
        let v = self.json();
        assert_eq!(v["code"], code, "unexpected error code: {self}");
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "no error message: {self}"
        );
        v
    }

    /// Asserts the status, with the whole response in the message.
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self
    }
}

impl fmt::Display for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {:?} body ", self.status, self.headers)?;
        if self.body.len() > 512 {
            let head: String = self.text().chars().take(256).collect();
            write!(f, "({} bytes) {head:?}…", self.body.len())
        } else {
            write!(f, "{:?}", self.text())
        }
    }
}

/// Blocking HTTP client bound to one base URL.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    pub base: String,
    /// Sent as `Authorization: Bearer …` unless a request sets its own.
    pub token: Option<String>,
}

impl Client {
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_timeout(base, HTTP_TIMEOUT)
    }

    pub fn with_timeout(base: impl Into<String>, timeout: Duration) -> Self {
        Self::for_access(base, timeout, &Access::default())
    }

    /// A client checking HTTPS against `access.ca` and sending its token.
    pub fn for_access(base: impl Into<String>, timeout: Duration, access: &Access) -> Self {
        let mut agent = ureq::AgentBuilder::new().timeout(timeout).redirects(0);
        if let Some(ca) = &access.ca {
            agent = agent.tls_config(ringkv::client::tls_config(ca).expect("CA file"));
        }
        Client {
            agent: agent.build(),
            base: base.into(),
            token: access.token.clone(),
        }
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> ureq::Request {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        req
    }

    fn finish(r: Result<ureq::Response, ureq::Error>) -> Result<Resp, TransportError> {
        match r {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => Resp::read(resp),
            Err(e) => Err(Box::new(e)),
        }
    }

    /// Any request; `Err` only for transport failures (connection refused,
    /// reset, timeout…), never for a status code.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, TransportError> {
        let req = self.request(method, path, headers);
        Self::finish(match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        })
    }

    /// Like [`Client::send`], panicking on a transport failure.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        self.send(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {}{path}: {e}", self.base))
    }

    /// A body sent with `Transfer-Encoding: chunked` (no Content-Length).
    pub fn send_chunked(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let req = self.request(method, path, headers);
        Self::finish(req.send(std::io::Cursor::new(body.to_vec())))
            .unwrap_or_else(|e| panic!("{method} {}{path} (chunked): {e}", self.base))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, &[], None)
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.call("GET", path, headers, None)
    }

    pub fn head(&self, path: &str) -> Resp {
        self.call("HEAD", path, &[], None)
    }

    pub fn put(&self, path: &str, body: &[u8]) -> Resp {
        self.call("PUT", path, &[], Some(body))
    }

    pub fn put_with(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.call("PUT", path, headers, Some(body))
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, &[], None)
    }

    pub fn delete_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.call("DELETE", path, headers, None)
    }
}

/// `/v1/kv/<raw>`: `raw` goes into the path as is (already percent-encoded).
pub fn kv(raw: &str) -> String {
    format!("/v1/kv/{raw}")
}

/// Percent-encodes every byte except ASCII letters and digits.
pub fn encode_key(key: &[u8]) -> String {
    percent_encode(key, NON_ALPHANUMERIC).to_string()
}

/// Sends `request` as is on a fresh connection and returns everything the
/// server sent until it closed the connection (send `Connection: close`).
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(HTTP_TIMEOUT)).expect("timeout");
    s.write_all(request).expect("write request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read response");
    out
}
