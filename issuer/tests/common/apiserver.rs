//! A stand-in for kube-apiserver's OIDC authenticator, shared by the issuer's kubectl tests and the
//! gateway's end-to-end tests (`tests/tests/kubernetes.rs` includes this file): discovery at the issuer
//! URL, JWKS by `kid`, RS256 only, `iss`, `aud` (the `kubernetes` client), `exp`, `email_verified`, then
//! `GET /api`. Like kube-apiserver it insists on an https issuer trusted through its CA;
//! [`ApiServer::trusting_plain_http`] lifts only that, for tests whose issuer is plain HTTP.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};

/// `--oidc-client-id`: the audience the stand-in accepts.
pub const AUDIENCE: &str = "kubernetes";
/// `--oidc-groups-prefix` of the dev configuration.
pub const GROUPS_PREFIX: &str = "oidc:";

/// Why the stand-in refused a token (kube-apiserver logs these; kubectl only sees 401).
pub type Refusal = String;

/// The stand-in's OIDC authenticator and what it has seen.
pub struct ApiServer {
    /// `--oidc-issuer-url`.
    pub issuer: String,
    /// Trusts the issuer's CA only, like `--oidc-ca-file`.
    pub http: reqwest::Client,
    /// Seconds added to the real time when checking `exp`.
    pub clock_offset: AtomicI64,
    /// `host:port`, for `serverAddressByClientCIDRs`.
    pub address: Mutex<String>,
    /// The requests it let in, in order: `(path, username, groups)`.
    pub admitted: Mutex<Vec<(String, String, Vec<String>)>>,
    /// The tokens it refused, in order.
    pub refusals: Mutex<Vec<Refusal>>,
}

fn decode_json(part: &str) -> Result<Value, Refusal> {
    let bytes = B64.decode(part).map_err(|_| "a JWS part is not base64url".to_owned())?;
    serde_json::from_slice(&bytes).map_err(|_| "a JWS part is not JSON".to_owned())
}

impl ApiServer {
    pub fn new(issuer: &str, ca_pem: &str) -> Self {
        assert!(issuer.starts_with("https://"), "kube-apiserver only accepts https issuers");
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self::with_client(issuer, http)
    }

    /// The same authenticator for an issuer on plain HTTP. kube-apiserver itself refuses such issuers;
    /// this is for tests that check a token's signature and claims against an HTTP test issuer.
    pub fn trusting_plain_http(issuer: &str) -> Self {
        Self::with_client(
            issuer,
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        )
    }

    fn with_client(issuer: &str, http: reqwest::Client) -> Self {
        Self {
            issuer: issuer.to_owned(),
            http,
            clock_offset: AtomicI64::new(0),
            address: Mutex::new(String::new()),
            admitted: Mutex::new(Vec::new()),
            refusals: Mutex::new(Vec::new()),
        }
    }

    pub fn now(&self) -> i64 {
        let real = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        real + self.clock_offset.load(Ordering::SeqCst)
    }

    async fn get_json(&self, url: &str) -> Result<Value, Refusal> {
        let r = self.http.get(url).send().await.map_err(|e| format!("fetching {url}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("fetching {url}: {}", r.status()));
        }
        r.json().await.map_err(|e| format!("{url}: {e}"))
    }

    /// kube-apiserver's OIDC authenticator (go-oidc underneath): the user's name and prefixed groups.
    pub async fn authenticate(&self, jwt: &str) -> Result<(String, Vec<String>), Refusal> {
        let parts: Vec<&str> = jwt.split('.').collect();
        let [h, p, s] = parts[..] else { return Err("not a compact JWS".into()) };
        let header = decode_json(h)?;
        // --oidc-signing-algs defaults to RS256; anything else (none, HS256, ES256) is refused up front.
        if header["alg"] != "RS256" {
            return Err(format!("alg {} is not accepted", header["alg"]));
        }
        let discovery = self.get_json(&format!("{}/.well-known/openid-configuration", self.issuer)).await?;
        if discovery["issuer"] != self.issuer.as_str() {
            return Err(format!("discovery names issuer {}, not {}", discovery["issuer"], self.issuer));
        }
        let jwks_uri = discovery["jwks_uri"].as_str().ok_or("discovery has no jwks_uri")?;
        let jwks = self.get_json(jwks_uri).await?;
        let kid = header["kid"].as_str();
        let signature = B64.decode(s).map_err(|_| "the signature is not base64url")?;
        let signed = format!("{h}.{p}");
        // go-oidc: the key named by `kid`, or every key when the header names none.
        let candidates: Vec<&Value> = jwks["keys"]
            .as_array()
            .ok_or("JWKS has no keys")?
            .iter()
            .filter(|k| k["kty"] == "RSA" && kid.is_none_or(|kid| k["kid"] == kid))
            .collect();
        if candidates.is_empty() {
            return Err(format!("no RSA key with kid {kid:?} in JWKS"));
        }
        let verified = candidates.iter().any(|k| {
            let (Some(n), Some(e)) = (k["n"].as_str(), k["e"].as_str()) else { return false };
            let (Ok(n), Ok(e)) = (B64.decode(n), B64.decode(e)) else { return false };
            RsaPublicKeyComponents { n, e }.verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature).is_ok()
        });
        if !verified {
            return Err("the signature does not verify".into());
        }
        let claims = decode_json(p)?;
        if claims["iss"] != self.issuer.as_str() {
            return Err(format!("iss {} is not {}", claims["iss"], self.issuer));
        }
        let aud_ok = match &claims["aud"] {
            Value::String(a) => a == AUDIENCE,
            Value::Array(a) => a.iter().any(|a| a == AUDIENCE),
            _ => false,
        };
        if !aud_ok {
            return Err(format!("aud {} does not contain {AUDIENCE}", claims["aud"]));
        }
        let exp = claims["exp"].as_i64().ok_or("no exp")?;
        if self.now() >= exp {
            return Err(format!("expired at {exp}"));
        }
        // The username claim is `email`: the issuer's configuration demands `claims.email_verified == true`.
        if claims["email_verified"] != true {
            return Err(format!("email_verified is {}", claims["email_verified"]));
        }
        let username = claims["email"].as_str().ok_or("no email claim")?.to_owned();
        let groups = claims["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(Value::as_str).map(|g| format!("{GROUPS_PREFIX}{g}")).collect())
            .unwrap_or_default();
        Ok((username, groups))
    }

    /// Who it let in to `GET /api`, in order: `(username, groups)`.
    pub fn users(&self) -> Vec<(String, Vec<String>)> {
        let admitted = self.admitted.lock().unwrap();
        admitted.iter().filter(|(path, ..)| path == "/api").map(|(_, u, g)| (u.clone(), g.clone())).collect()
    }

    pub fn refusals(&self) -> Vec<Refusal> {
        self.refusals.lock().unwrap().clone()
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Every request: authenticate (anonymous requests are refused, as with `--anonymous-auth=false`), then
/// `GET /api`.
pub async fn api(State(api): State<Arc<ApiServer>>, uri: Uri, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let user = match bearer {
        Some(token) => api.authenticate(&token).await,
        None => Err("no bearer token".to_owned()),
    };
    let user = match user {
        Ok(user) => user,
        Err(why) => {
            api.refusals.lock().unwrap().push(why);
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
    };
    api.admitted.lock().unwrap().push((uri.path().to_owned(), user.0, user.1));
    if uri.path() != "/api" {
        return status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource");
    }
    let address = api.address.lock().unwrap().clone();
    let body = json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
