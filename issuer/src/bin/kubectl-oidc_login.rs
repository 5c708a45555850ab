//! `kubectl-oidc_login`: the kubectl exec credential plugin for this issuer (the kubeconfig page's `exec`
//! kubeconfigs run it). `get-token` prints an `ExecCredential` (`client.authentication.k8s.io/v1`) with an
//! ID token: the cached one while it is valid, else one from the cached refresh token, else a new login
//! (authorization code + PKCE through a loopback listener, or `--device` for the device flow). A login
//! needs a person: when kubectl runs the plugin without a terminal, it fails instead of waiting forever.
//!
//! Tokens are cached in `~/.kube/cache/oidc-login/` (mode 0600), one file per issuer, client and scope; a
//! lock file beside it makes parallel kubectl invocations wait for one refresh instead of racing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use aws_lc_rs::digest;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use base64::Engine;
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A token this close to expiry is refreshed rather than handed out.
const EXPIRY_MARGIN: i64 = 30;

#[derive(Parser)]
#[command(name = "kubectl-oidc_login", version, about = "kubectl credential plugin for the OIDC issuer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print an ExecCredential with a valid ID token, logging in if needed.
    GetToken(GetToken),
}

#[derive(Args)]
struct GetToken {
    /// The issuer URL.
    #[arg(long)]
    issuer_url: String,
    /// The Kubernetes client id.
    #[arg(long)]
    client_id: String,
    /// The client's secret, if it has one.
    #[arg(long)]
    client_secret: Option<String>,
    /// Base64 of the PEM CA bundle that signed the issuer's certificate.
    #[arg(long)]
    certificate_authority_data: Option<String>,
    /// Scopes to ask for.
    #[arg(long, default_value = "openid email profile groups offline_access")]
    scope: String,
    /// Use the device authorization grant instead of a browser on this machine.
    #[arg(long)]
    device: bool,
    /// The loopback redirect URI (registered with the client) the login comes back to.
    #[arg(long, default_value = "http://127.0.0.1:8000/callback")]
    redirect_url: String,
    /// Cache folder [default: ~/.kube/cache/oidc-login].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Default)]
struct Cached {
    id_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let Command::GetToken(args) = Cli::parse().command;
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(get_token(args))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `exp` of a JWT, unverified: kube-apiserver verifies; the plugin only decides when to refresh.
fn expiry(jwt: &str) -> Option<i64> {
    let payload = B64.decode(jwt.split('.').nth(1)?).ok()?;
    serde_json::from_slice::<Value>(&payload).ok()?["exp"].as_i64()
}

#[allow(clippy::print_stdout)] // the ExecCredential on stdout is the plugin's output
async fn get_token(args: GetToken) -> anyhow::Result<()> {
    let dir = match &args.cache_dir {
        Some(d) => d.clone(),
        None => {
            let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set; pass --cache-dir"))?;
            PathBuf::from(home).join(".kube/cache/oidc-login")
        }
    };
    create_private_dir(&dir)?;
    let key = hex(digest::digest(
        &digest::SHA256,
        format!("{}\0{}\0{}", args.issuer_url, args.client_id, args.scope).as_bytes(),
    )
    .as_ref());
    let cache_path = dir.join(format!("{key}.json"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{key}.lock")))
        .context("opening the cache lock")?;
    // Held until the process exits: a second kubectl waits here, then finds the refreshed token.
    lock.lock().context("locking the token cache")?;

    let cached: Option<Cached> = std::fs::read(&cache_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let client = http_client(&args)?;
    let token = match cached {
        Some(c) if expiry(&c.id_token).is_some_and(|exp| exp > now() + EXPIRY_MARGIN) => c,
        other => {
            let refreshed = match other.and_then(|c| c.refresh_token) {
                Some(rt) => refresh(&client, &args, &rt).await?,
                None => None,
            };
            let fresh = match refreshed {
                Some(t) => t,
                // A login waits for a person; without one it would wait forever (a CI job, a script).
                None if !interactive() => bail!(
                    "signing in needs a person, and kubectl ran this plugin without a terminal: run kubectl \
                     from a terminal once, or run the kubeconfig's exec command by hand"
                ),
                None if args.device => device_login(&client, &args).await?,
                None => browser_login(&client, &args).await?,
            };
            write_private(&cache_path, &serde_json::to_vec(&fresh)?)?;
            fresh
        }
    };
    let exp = expiry(&token.id_token).unwrap_or_else(now);
    let credential = json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {
            "token": token.id_token,
            "expirationTimestamp":
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(exp.max(0) as u64)).to_string(),
        },
    });
    println!("{credential}");
    Ok(())
}

/// Whether a person can answer a login. kubectl says so in `KUBERNETES_EXEC_INFO` (`spec.interactive`:
/// false when its standard input is not a terminal, with `interactiveMode: IfAvailable`); run by hand, the
/// plugin assumes a person.
fn interactive() -> bool {
    let Some(info) = std::env::var_os("KUBERNETES_EXEC_INFO") else { return true };
    let info: Value = serde_json::from_slice(info.as_encoded_bytes()).unwrap_or(Value::Null);
    info["spec"]["interactive"].as_bool().unwrap_or(true)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Writes `data` to `path` with mode 0600, replacing it atomically.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn http_client(args: &GetToken) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(data) = &args.certificate_authority_data {
        let pem = STANDARD.decode(data.trim()).context("--certificate-authority-data is not base64")?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).context("--certificate-authority-data")? {
            b = b.add_root_certificate(cert);
        }
    }
    Ok(b.build()?)
}

async fn discovery(client: &reqwest::Client, args: &GetToken) -> anyhow::Result<Value> {
    let url = format!("{}/.well-known/openid-configuration", args.issuer_url.trim_end_matches('/'));
    let r = client.get(&url).send().await.with_context(|| format!("fetching {url}"))?;
    if !r.status().is_success() {
        bail!("{url}: {}", r.status());
    }
    Ok(r.json().await?)
}

fn endpoint<'a>(doc: &'a Value, name: &str) -> anyhow::Result<&'a str> {
    doc[name].as_str().ok_or_else(|| anyhow!("the issuer's discovery document has no {name}"))
}

/// POSTs to the token endpoint with the client's credentials; the JSON body and status.
async fn token_request(
    client: &reqwest::Client,
    args: &GetToken,
    token_endpoint: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<(u16, Value)> {
    let mut form: Vec<(&str, &str)> = form.to_vec();
    let mut req = client.post(token_endpoint);
    match &args.client_secret {
        Some(secret) => req = req.basic_auth(&args.client_id, Some(secret)),
        None => form.push(("client_id", &args.client_id)),
    }
    let r = req.form(&form).send().await.with_context(|| format!("calling {token_endpoint}"))?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

fn cached_from(body: &Value) -> anyhow::Result<Cached> {
    Ok(Cached {
        id_token: body["id_token"].as_str().ok_or_else(|| anyhow!("the token response has no id_token"))?.to_owned(),
        refresh_token: body["refresh_token"].as_str().map(str::to_owned),
    })
}

/// Refreshes; `None` when the refresh token is dead (only `invalid_grant` means that) and a login is needed.
#[allow(clippy::print_stderr)] // kubectl shows the plugin's stderr to the user
async fn refresh(client: &reqwest::Client, args: &GetToken, refresh_token: &str) -> anyhow::Result<Option<Cached>> {
    let doc = discovery(client, args).await?;
    let (status, body) = token_request(
        client,
        args,
        endpoint(&doc, "token_endpoint")?,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
    )
    .await?;
    match (status, body["error"].as_str()) {
        (200, _) => Ok(Some(cached_from(&body)?)),
        (_, Some("invalid_grant")) => {
            eprintln!("The session has ended; a new sign-in is needed.");
            Ok(None)
        }
        (_, error) => bail!("refreshing the token failed: {status} {}", error.unwrap_or("")),
    }
}

#[allow(clippy::print_stderr)] // kubectl shows the plugin's stderr to the user
async fn browser_login(client: &reqwest::Client, args: &GetToken) -> anyhow::Result<Cached> {
    let doc = discovery(client, args).await?;
    let redirect = url::Url::parse(&args.redirect_url).context("--redirect-url")?;
    let addr = match (redirect.scheme(), redirect.host_str(), redirect.port()) {
        ("http", Some(host @ ("127.0.0.1" | "[::1]" | "localhost")), Some(port)) => format!("{host}:{port}"),
        _ => bail!("--redirect-url must be http://127.0.0.1:<port>/<path> (RFC 8252 loopback redirect)"),
    };
    let listener =
        tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listening on {addr} for the login"))?;
    let state = random();
    let verifier = format!("{}{}", random(), random());
    let challenge = B64.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
    let mut auth = url::Url::parse(endpoint(&doc, "authorization_endpoint")?)?;
    auth.query_pairs_mut()
        .append_pair("client_id", &args.client_id)
        .append_pair("redirect_uri", &args.redirect_url)
        .append_pair("response_type", "code")
        .append_pair("scope", &args.scope)
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    eprintln!("Open this URL in your browser to sign in:\n{auth}");

    let code = loop {
        let (mut conn, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let n = conn.read(&mut buf).await?;
        let request = String::from_utf8_lossy(&buf[..n]);
        let target = request.split_whitespace().nth(1).unwrap_or("/");
        let url = redirect.join(target)?;
        if url.path() != redirect.path() {
            conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
            continue;
        }
        let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        let (status, text, outcome) = match (param("error"), param("state"), param("code")) {
            (Some(e), _, _) => ("400 Bad Request", "Sign-in failed.", Err(anyhow!("the login failed: {e}"))),
            (None, Some(s), Some(code)) if s == state => ("200 OK", "Signed in. Return to your terminal.", Ok(code)),
            _ => ("400 Bad Request", "This sign-in was not started here.", Err(anyhow!("state mismatch"))),
        };
        let body = format!("<!doctype html><title>kubectl</title><p>{text}</p>");
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await?;
        conn.write_all(body.as_bytes()).await?;
        break outcome?;
    };
    let (status, body) = token_request(
        client,
        args,
        endpoint(&doc, "token_endpoint")?,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &args.redirect_url),
            ("code_verifier", &verifier),
        ],
    )
    .await?;
    if status != 200 {
        bail!("redeeming the code failed: {status} {}", body["error"].as_str().unwrap_or(""));
    }
    cached_from(&body)
}

#[allow(clippy::print_stderr)] // kubectl shows the plugin's stderr to the user
async fn device_login(client: &reqwest::Client, args: &GetToken) -> anyhow::Result<Cached> {
    let doc = discovery(client, args).await?;
    let (status, d) =
        token_request(client, args, endpoint(&doc, "device_authorization_endpoint")?, &[("scope", &args.scope)])
            .await?;
    if status != 200 {
        bail!("starting the device login failed: {status} {}", d["error"].as_str().unwrap_or(""));
    }
    let device_code = d["device_code"].as_str().ok_or_else(|| anyhow!("no device_code"))?;
    eprintln!(
        "Open {} and enter the code {}\n(or open {})",
        d["verification_uri"].as_str().unwrap_or(""),
        d["user_code"].as_str().unwrap_or(""),
        d["verification_uri_complete"].as_str().unwrap_or("")
    );
    let mut interval = d["interval"].as_u64().unwrap_or(5);
    let token_endpoint = endpoint(&doc, "token_endpoint")?;
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let (status, body) = token_request(
            client,
            args,
            token_endpoint,
            &[("grant_type", "urn:ietf:params:oauth:grant-type:device_code"), ("device_code", device_code)],
        )
        .await?;
        match (status, body["error"].as_str()) {
            (200, _) => return cached_from(&body),
            (_, Some("authorization_pending")) => {}
            (_, Some("slow_down")) => interval += 5,
            (_, error) => bail!("the device login failed: {status} {}", error.unwrap_or("")),
        }
    }
}

fn random() -> String {
    B64.encode(rand::random::<[u8; 24]>())
}
