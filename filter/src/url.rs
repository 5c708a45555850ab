//! Absolute `http(s)` URLs, percent-encoding and query strings: the small subset of RFC 3986 the filter
//! needs for issuer endpoints, redirect targets and form bodies. It does not resolve relative references
//! or IDNA; hosts are ASCII and compared lowercased.
//!
//! The `url` crate would do more, but its IDNA tables would dominate the size of the `.wasm`.

use std::fmt;

/// Why a string is not an absolute `http(s)` URL the filter accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Neither `http://` nor `https://`.
    #[error("must start with http:// or https://")]
    Scheme,
    /// Empty host, or characters a DNS name or IP literal cannot hold.
    #[error("has an invalid host")]
    Host,
    /// The port is not a number in 1..=65535.
    #[error("has an invalid port")]
    Port,
    /// `user:pass@` in the authority: never needed here and a classic open-redirect trick.
    #[error("must not contain user information (@)")]
    UserInfo,
    /// Whitespace, control characters or backslashes, which browsers "repair" in surprising ways.
    #[error("contains whitespace, control characters or backslashes")]
    Characters,
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The scheme as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A parsed absolute URL: scheme, lowercased host, optional explicit port, and the path with its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Lowercased host name or IP literal (IPv6 keeps its brackets).
    pub host: String,
    /// The port when one was written and differs from the scheme's default.
    pub port: Option<u16>,
    /// Path and query, always starting with `/`. The fragment is dropped.
    pub path_and_query: String,
}

// === impl HttpUrl ===

impl HttpUrl {
    /// Parses an absolute `http(s)` URL.
    pub fn parse(input: &str) -> Result<HttpUrl, UrlError> {
        if input.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
            return Err(UrlError::Characters);
        }
        let (scheme, rest) = if let Some(rest) = strip_prefix_ignore_case(input, "https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(input, "http://") {
            (Scheme::Http, rest)
        } else {
            return Err(UrlError::Scheme);
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = split_host_port(authority)?;
        let port = port.filter(|p| *p != scheme.default_port());
        let tail = tail.split('#').next().unwrap_or("");
        let path_and_query = if tail.starts_with('/') { tail.to_owned() } else { format!("/{tail}") };
        Ok(HttpUrl { scheme, host, port, path_and_query })
    }

    /// `host[:port]`, as sent in `Host`/`:authority`.
    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or(&self.path_and_query)
    }

    /// The URL with `pairs` appended to its query string, percent-encoded.
    pub fn with_query(&self, pairs: &[(&str, &str)]) -> String {
        let mut out = self.to_string();
        let mut sep = if self.path_and_query.contains('?') { '&' } else { '?' };
        for (k, v) in pairs {
            out.push(sep);
            out.push_str(&percent_encode(k));
            out.push('=');
            out.push_str(&percent_encode(v));
            sep = '&';
        }
        out
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme.as_str(), self.authority(), self.path_and_query)
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Splits `host[:port]` and validates both halves; the host comes back lowercased.
pub fn split_host_port(authority: &str) -> Result<(String, Option<u16>), UrlError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let close = rest.find(']').ok_or(UrlError::Host)?;
        let host = &authority[..close + 2];
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UrlError::Host),
        };
        if !rest[..close].chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return Err(UrlError::Host);
        }
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty()
        || !(host.starts_with('[')
            || host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
    {
        return Err(UrlError::Host);
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(UrlError::Port),
            Ok(n) => Some(n),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, which is safe in any component and
/// in `application/x-www-form-urlencoded` bodies.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes and, as in form encoding, `+` as a space. Invalid escapes are kept literally
/// and invalid UTF-8 is replaced, so callers compare the result rather than trust it.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses `a=1&b=two` into decoded pairs, in order.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(pair), String::new()),
        })
        .collect()
}

/// Encodes pairs as an `application/x-www-form-urlencoded` body.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_absolute_urls_and_normalises_host_and_default_port() {
        type Parts<'a> = (&'a str, &'a str, Option<u16>, &'a str);
        let cases: &[(&str, Result<Parts<'_>, UrlError>)] = &[
            ("https://Dex.Example.com/", Ok(("https", "dex.example.com", None, "/"))),
            ("https://dex.example.com", Ok(("https", "dex.example.com", None, "/"))),
            ("https://dex:443/x?y=1#frag", Ok(("https", "dex", None, "/x?y=1"))),
            ("http://127.0.0.1:5556/dex", Ok(("http", "127.0.0.1", Some(5556), "/dex"))),
            ("http://[::1]:8080/", Ok(("http", "[::1]", Some(8080), "/"))),
            ("ftp://x/", Err(UrlError::Scheme)),
            ("//evil.com/", Err(UrlError::Scheme)),
            ("/relative", Err(UrlError::Scheme)),
            ("https://user@evil.com/", Err(UrlError::UserInfo)),
            ("https://a.com\\@evil.com/", Err(UrlError::Characters)),
            ("https://a.com/ x", Err(UrlError::Characters)),
            ("https://:443/", Err(UrlError::Host)),
            ("https://a.com:0/", Err(UrlError::Port)),
            ("https://a.com:99999/", Err(UrlError::Port)),
            ("https://a b/", Err(UrlError::Characters)),
        ];
        for (input, want) in cases {
            let got = HttpUrl::parse(input);
            match (got, want) {
                (Ok(u), Ok((s, h, p, pq))) => {
                    assert_eq!(
                        (u.scheme.as_str(), u.host.as_str(), u.port, u.path_and_query.as_str()),
                        (*s, *h, *p, *pq),
                        "{input}"
                    );
                }
                (Err(e), Err(w)) => assert_eq!(&e, w, "{input}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn query_round_trips_through_encode_and_parse() {
        let body = form_encode(&[("a b", "c&d=e"), ("ü", "/?#")]);
        assert_eq!(body, "a%20b=c%26d%3De&%C3%BC=%2F%3F%23");
        assert_eq!(parse_query(&body), vec![("a b".into(), "c&d=e".into()), ("ü".into(), "/?#".into())]);
        assert_eq!(
            parse_query("x=1+2&bad=%zz&end=%"),
            vec![("x".into(), "1 2".into()), ("bad".into(), "%zz".into()), ("end".into(), "%".into())]
        );
    }

    #[test]
    fn with_query_appends_to_existing_query() {
        let u = HttpUrl::parse("https://idp/logout?x=1").unwrap();
        assert_eq!(u.with_query(&[("a", "b c")]), "https://idp/logout?x=1&a=b%20c");
        let u = HttpUrl::parse("https://idp/logout").unwrap();
        assert_eq!(u.with_query(&[("a", "b")]), "https://idp/logout?a=b");
    }
}
