//! [`RequestParts`]: the request headers as plain data, with the questions the flow asks of them
//! (cookies, bearer token, is this a browser navigation). Collecting them from the host is `host`'s job.

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
    /// Every header, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    cookies: Vec<(String, String)>,
}

// === impl RequestParts ===

impl RequestParts {
    /// Builds from the header map Envoy hands over (pseudo-headers included).
    pub fn from_headers(headers: Vec<(String, String)>) -> RequestParts {
        let headers: Vec<(String, String)> = headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let scheme = get("x-forwarded-proto")
            .and_then(|p| p.split(',').next().map(|s| s.trim().to_ascii_lowercase()))
            .filter(|p| p == "http" || p == "https")
            .or_else(|| get(":scheme"))
            .unwrap_or_else(|| "https".into());
        let cookies = headers
            .iter()
            .filter(|(k, _)| k == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|c| {
                let (n, v) = c.split_once('=')?;
                Some((n.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            })
            .collect();
        RequestParts {
            method: get(":method").unwrap_or_default().to_ascii_uppercase(),
            scheme,
            authority: get(":authority").or_else(|| get("host")).unwrap_or_default(),
            path: get(":path").unwrap_or_else(|| "/".into()),
            headers,
            cookies,
        }
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
        if self.header("x-requested-with").is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest")) {
            return false;
        }
        // Fetch Metadata, when present, is authoritative.
        if let Some(mode) = self.header("sec-fetch-mode") {
            return mode.eq_ignore_ascii_case("navigate");
        }
        self.header("accept").is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
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
