//! [`RequestParts`]: the request headers as plain data, with the questions the flow asks of them
//! (cookies, bearer token, is this a browser navigation). Collecting them from the host is `host`'s job.

/// Request headers the filter reads. A value outside UTF-8 in one of them is the client's error (see
/// [`RequestParts::malformed_header`]); any other header is left alone and reaches the upstream byte for byte.
/// `cookie` is not listed: a cookie pair outside UTF-8 is simply not a cookie the filter knows.
pub const INTERPRETED_HEADERS: &[&str] = &[
    ":method",
    ":scheme",
    ":authority",
    ":path",
    "host",
    "authorization",
    "accept",
    "origin",
    "access-control-request-method",
    "x-requested-with",
    "x-forwarded-proto",
    "upgrade",
    "connection",
];

/// The downstream request as the filter sees it in `on_http_request_headers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestParts {
    /// `:method`, upper-case.
    pub method: String,
    /// `:scheme`, or `x-forwarded-proto` when Envoy sits behind a TLS terminator.
    pub scheme: String,
    /// `:authority` (the Host header).
    pub authority: String,
    /// `:path`, with the query.
    pub path: String,
    /// Every header whose value is UTF-8, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// Cookie pairs whose name and value are UTF-8.
    cookies: Vec<(String, String)>,
    /// Every cookie pair as sent (bytes, trimmed), to rebuild the upstream `Cookie` header.
    raw_cookies: Vec<Vec<u8>>,
    /// Interpreted headers whose value was not UTF-8.
    malformed: Vec<String>,
    /// Names of every header as sent, lowercased (including those with non-UTF-8 values).
    names: Vec<String>,
    /// The request body, once read: only for the requests the filter answers itself from their body
    /// (back-channel logout, see [`crate::flow::Decision::ReadBody`]); `None` before.
    pub body: Option<Vec<u8>>,
}

// === impl RequestParts ===

impl RequestParts {
    /// Builds from header pairs that are known to be text (tests, benchmarks).
    pub fn from_headers(headers: Vec<(String, String)>) -> RequestParts {
        Self::from_header_bytes(headers.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect())
    }

    /// Builds from the header map as Envoy hands it over (pseudo-headers included): names and values are
    /// bytes, and a value may hold any byte but NUL, CR and LF (RFC 9110 §5.5 obs-text). Never fails: a
    /// non-UTF-8 value of an [interpreted](INTERPRETED_HEADERS) header is recorded for
    /// [`malformed_header`](Self::malformed_header); other headers are not looked at.
    pub fn from_header_bytes(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> RequestParts {
        let mut headers = Vec::with_capacity(pairs.len());
        let mut names = Vec::with_capacity(pairs.len());
        let mut malformed = Vec::new();
        let mut cookies = Vec::new();
        let mut raw_cookies = Vec::new();
        for (name, value) in pairs {
            // Envoy only passes header names that are RFC 9110 tokens; anything else cannot name a header
            // the filter reads, so a lossy copy is only ever compared, never forwarded.
            let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
            names.push(name.clone());
            if name == "cookie" {
                for pair in value.split(|b| *b == b';') {
                    let pair = pair.trim_ascii();
                    if pair.is_empty() {
                        continue;
                    }
                    raw_cookies.push(pair.to_vec());
                    if let Some((n, v)) = std::str::from_utf8(pair).ok().and_then(|p| p.split_once('=')) {
                        cookies.push((n.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
                    }
                }
                continue;
            }
            match String::from_utf8(value) {
                Ok(value) => headers.push((name, value)),
                Err(_) if INTERPRETED_HEADERS.contains(&name.as_str()) || name.starts_with("sec-fetch-") => {
                    malformed.push(name)
                }
                Err(_) => {}
            }
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let scheme = get("x-forwarded-proto")
            .and_then(|p| p.split(',').next().map(|s| s.trim().to_ascii_lowercase()))
            .filter(|p| p == "http" || p == "https")
            .or_else(|| get(":scheme"))
            .unwrap_or_else(|| "https".into());
        RequestParts {
            method: get(":method").unwrap_or_default().to_ascii_uppercase(),
            scheme,
            authority: get(":authority").or_else(|| get("host")).unwrap_or_default(),
            path: get(":path").unwrap_or_else(|| "/".into()),
            headers,
            cookies,
            raw_cookies,
            malformed,
            names,
            body: None,
        }
    }

    /// The first header the filter interprets whose value was not UTF-8: the request cannot be judged.
    pub fn malformed_header(&self) -> Option<&str> {
        self.malformed.first().map(String::as_str)
    }

    /// How many times a header was sent (name lowercase), whatever its value.
    pub fn header_count(&self, name: &str) -> usize {
        self.names.iter().filter(|n| *n == name).count()
    }

    /// Every header name as sent, lowercased.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The `Cookie` header without the pairs whose name `drop` selects, as bytes (other pairs untouched):
    /// `None` when nothing would be dropped, `Some(empty)` when nothing is left.
    pub fn cookie_header_without(&self, drop: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
        let name_of = |pair: &[u8]| -> Option<String> {
            let n = pair.split(|b| *b == b'=').next()?;
            std::str::from_utf8(n).ok().map(|n| n.trim().to_owned())
        };
        let is_dropped = |pair: &Vec<u8>| name_of(pair).is_some_and(|n| drop(&n));
        if !self.raw_cookies.iter().any(is_dropped) {
            return None;
        }
        let kept: Vec<&[u8]> = self.raw_cookies.iter().filter(|p| !is_dropped(p)).map(Vec::as_slice).collect();
        Some(kept.join(&b"; "[..]))
    }

    /// The first value of a header (name lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A cookie's value; the first wins when a name repeats.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// All cookie names starting with `prefix`.
    pub fn cookie_names_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.cookies.iter().map(|(k, _)| k.as_str()).filter(move |k| k.starts_with(prefix))
    }

    /// The path without the query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or(&self.path)
    }

    /// The decoded query parameters.
    pub fn query(&self) -> Vec<(String, String)> {
        match self.path.split_once('?') {
            Some((_, q)) => crate::url::parse_query(q),
            None => Vec::new(),
        }
    }

    /// The first value of one query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1).
    pub fn bearer_token(&self) -> Option<&str> {
        let v = self.header("authorization")?.trim();
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
    }

    /// Whether a browser is navigating here (and so can follow a login redirect), as opposed to a
    /// script or API client that should get a 401 it can handle.
    pub fn is_navigation(&self) -> bool {
        if self.method != "GET" && self.method != "HEAD" {
            return false;
        }
        // A WebSocket handshake (or any protocol upgrade) cannot follow a redirect: WHATWG Fetch uses
        // redirect mode "error" for it, RFC 6455 §4.1 lets the client fail the connection.
        if self.header("upgrade").is_some()
            || self.header("connection").is_some_and(|c| c.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
        {
            return false;
        }
        if self.header("x-requested-with").is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest")) {
            return false;
        }
        // Fetch Metadata, when present, is authoritative.
        if let Some(mode) = self.header("sec-fetch-mode") {
            return mode.eq_ignore_ascii_case("navigate");
        }
        self.header("accept").is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
    }

    /// Whether the request carries more than one credential in `Authorization`: the header sent twice, or
    /// one value holding a list (Envoy joins repeated inline headers with `,`). `Authorization` is not a
    /// list field (RFC 9110 §5.3, §11.6.2) and a token68 has no `,` (§11.2), so such a request is ambiguous.
    pub fn has_ambiguous_authorization(&self) -> bool {
        if self.header_count("authorization") > 1 {
            return true;
        }
        // `Basic a,Bearer b` is two credentials; `Digest realm="r", nonce="n"` is one with parameters.
        let Some((first, _)) = self.header("authorization").and_then(|v| v.split_once(',')) else {
            return false;
        };
        let token68 = |t: &str| {
            let body = t.trim_end_matches('=');
            !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
        };
        match first.trim().split_once(' ') {
            Some((_, credential)) => token68(credential.trim()),
            None => true,
        }
    }

    /// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
    pub fn is_cors_preflight(&self) -> bool {
        self.method == "OPTIONS"
            && self.header("origin").is_some()
            && self.header("access-control-request-method").is_some()
    }

    /// The URL the browser asked for.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.path)
    }

    /// The host without port, lowercased.
    pub fn host(&self) -> String {
        crate::url::split_host_port(&self.authority)
            .map(|(h, _)| h)
            .unwrap_or_else(|_| self.authority.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&str, &str)]) -> RequestParts {
        RequestParts::from_headers(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn pseudo_headers_and_cookies_are_collected() {
        let r = req(&[
            (":method", "get"),
            (":scheme", "http"),
            (":authority", "App.example.com:8443"),
            (":path", "/a/b?x=1&y=%2F"),
            ("Cookie", "a=1; _tg=\"v\""),
            ("cookie", "a=2;c=3"),
        ]);
        assert_eq!(r.method, "GET");
        assert_eq!(r.host(), "app.example.com");
        assert_eq!(r.path_only(), "/a/b");
        assert_eq!(r.query_param("y").as_deref(), Some("/"));
        assert_eq!(r.cookie("a"), Some("1"));
        assert_eq!(r.cookie("_tg"), Some("v"));
        assert_eq!(r.cookie("c"), Some("3"));
        assert_eq!(r.url(), "http://App.example.com:8443/a/b?x=1&y=%2F");
    }

    #[test]
    fn forwarded_proto_overrides_scheme() {
        let r = req(&[(":scheme", "http"), ("x-forwarded-proto", "https")]);
        assert_eq!(r.scheme, "https");
        let r = req(&[(":scheme", "http"), ("x-forwarded-proto", "gopher")]);
        assert_eq!(r.scheme, "http");
    }

    #[test]
    fn bearer_token_is_found_case_insensitively() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
        ];
        for (h, want) in cases {
            assert_eq!(req(&[("authorization", h)]).bearer_token(), *want, "{h:?}");
        }
    }

    #[test]
    fn navigations_are_told_from_api_calls() {
        let html = "text/html,application/xhtml+xml";
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[(":method", "GET"), ("accept", html)], true),
            (&[(":method", "GET"), ("accept", "application/json")], false),
            (&[(":method", "GET")], false),
            (&[(":method", "POST"), ("accept", html)], false),
            (&[(":method", "GET"), ("accept", html), ("x-requested-with", "XMLHttpRequest")], false),
            (&[(":method", "GET"), ("accept", "*/*"), ("sec-fetch-mode", "navigate")], true),
            (&[(":method", "GET"), ("accept", html), ("sec-fetch-mode", "cors")], false),
        ];
        for (headers, want) in cases {
            assert_eq!(req(headers).is_navigation(), *want, "{headers:?}");
        }
    }

    #[test]
    fn cors_preflight_needs_origin_and_request_method() {
        assert!(req(&[(":method", "OPTIONS"), ("origin", "https://a"), ("access-control-request-method", "PUT")])
            .is_cors_preflight());
        assert!(!req(&[(":method", "OPTIONS"), ("origin", "https://a")]).is_cors_preflight());
    }
}
