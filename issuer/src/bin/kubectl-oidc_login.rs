//! `kubectl-oidc_login`: the kubectl exec credential plugin for this issuer (the kubeconfig page's `exec`
//! kubeconfigs run it). `get-token` prints an `ExecCredential` (`client.authentication.k8s.io/v1`) with an
//! ID token: the cached one while it is valid, else one from the cached refresh token, else a new login
//! (authorization code + PKCE through a loopback listener, the device flow, a pasted code, or a password).
//! A login needs a person: when kubectl runs the plugin without a terminal, it fails instead of waiting.
//!
//! The binary name is the one int128/kubelogin installs (`kubectl krew install oidc-login`), so `get-token`
//! takes kubelogin's flags (`--oidc-issuer-url`, `--oidc-client-id`, `--oidc-extra-scope`, `--grant-type`,
//! `--listen-address`, `--token-cache-dir`, …) and a kubeconfig written for either binary works with both.
//! This plugin's older names (`--issuer-url`, `--client-id`, `--scope`, `--device`, `--redirect-url`,
//! `--cache-dir`) stay as aliases.
//!
//! Tokens are cached in `~/.kube/cache/oidc-login/` (mode 0600, kubelogin's folder too), one file per
//! issuer, client and scope, named `tokengate-<sha256>.json` so that no file kubelogin wrote is ever read
//! or overwritten; a lock file beside it makes parallel kubectl invocations wait for one refresh.

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

/// `--grant-type` (kubelogin's values).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GrantType {
    /// `authcode`, or `password` when `--username` is given (kubelogin's rule).
    Auto,
    /// Authorization code + PKCE through a browser and a loopback listener.
    Authcode,
    /// Authorization code + PKCE, the code pasted into the terminal (out-of-band redirect).
    AuthcodeKeyboard,
    /// Device authorization grant (RFC 8628): sign in on any device.
    DeviceCode,
    /// Resource owner password credentials (RFC 6749 §4.3), for issuers that allow it.
    Password,
}

#[derive(Args)]
struct GetToken {
    /// The issuer URL.
    #[arg(long = "oidc-issuer-url", visible_alias = "issuer-url")]
    issuer_url: String,
    /// The Kubernetes client id.
    #[arg(long = "oidc-client-id", visible_alias = "client-id")]
    client_id: String,
    /// The client's secret, if it has one (a public client with PKCE needs none).
    #[arg(long = "oidc-client-secret", visible_alias = "client-secret")]
    client_secret: Option<String>,
    /// A scope to ask for besides `openid` (repeatable, or comma-separated), as kubelogin does.
    #[arg(long = "oidc-extra-scope", value_delimiter = ',', conflicts_with = "scope")]
    extra_scopes: Vec<String>,
    /// The whole scope list, space-separated (this plugin's own flag).
    #[arg(long)]
    scope: Option<String>,
    /// How to sign in when there is no usable token.
    #[arg(long, value_enum, default_value = "auto")]
    grant_type: GrantType,
    /// The same as --grant-type=device-code.
    #[arg(long, hide = true)]
    device: bool,
    /// Where the loopback listener may listen, tried in order; when every one is taken, a free port on the
    /// first one's host (the issuer accepts any port on a loopback redirect, RFC 8252 §7.3).
    #[arg(long = "listen-address", default_values = ["127.0.0.1:8000", "127.0.0.1:18000"])]
    listen_addresses: Vec<String>,
    /// The host name in the loopback redirect URL (kubelogin's default is `localhost`).
    #[arg(long = "oidc-redirect-url-hostname", default_value = "localhost")]
    redirect_hostname: String,
    /// A whole loopback redirect URL instead of --listen-address (this plugin's own flag).
    #[arg(long)]
    redirect_url: Option<String>,
    /// The redirect URL of --grant-type=authcode-keyboard.
    #[arg(long = "oidc-redirect-url-authcode-keyboard", default_value = OOB)]
    keyboard_redirect_url: String,
    /// Extra authorization-request parameters, `key=value` (repeatable).
    #[arg(long = "oidc-auth-request-extra-params")]
    extra_params: Vec<String>,
    /// PKCE: `auto` and `S256` use S256 (always sent); `no` is refused, PKCE is not optional here.
    #[arg(long = "oidc-pkce-method", default_value = "auto")]
    pkce_method: String,
    /// kubelogin's old PKCE switch; PKCE is always on.
    #[arg(long = "oidc-use-pkce", hide = true)]
    use_pkce: bool,
    /// Print the sign-in URL only; do not start a browser.
    #[arg(long)]
    skip_open_browser: bool,
    /// The command that opens the sign-in URL [default: xdg-open, or open on macOS].
    #[arg(long)]
    browser_command: Option<String>,
    /// Username for --grant-type=password.
    #[arg(long)]
    username: Option<String>,
    /// Password for --grant-type=password (asked for on the terminal when absent).
    #[arg(long)]
    password: Option<String>,
    /// Cache folder [default: ~/.kube/cache/oidc-login].
    #[arg(long = "token-cache-dir", visible_alias = "cache-dir")]
    cache_dir: Option<PathBuf>,
    /// `disk` (default) or `none`.
    #[arg(long = "token-cache-storage", default_value = "disk")]
    token_cache_storage: String,
    /// Refresh (or sign in) even when the cached ID token is still valid.
    #[arg(long)]
    force_refresh: bool,
    /// A PEM file with the CA that signed the issuer's certificate (repeatable).
    #[arg(long)]
    certificate_authority: Vec<PathBuf>,
    /// Base64 of a PEM CA bundle that signed the issuer's certificate (repeatable).
    #[arg(long)]
    certificate_authority_data: Vec<String>,
    /// Do not verify the issuer's certificate (never in production).
    #[arg(long)]
    insecure_skip_tls_verify: bool,
    /// Log verbosity (accepted for kubelogin compatibility; this plugin logs only what a user needs).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
}

/// RFC 8252's out-of-band redirect: the issuer shows the code instead of redirecting.
const OOB: &str = "urn:ietf:wg:oauth:2.0:oob";

impl GetToken {
    /// The scope parameter: `--scope`, else `openid` and the extra scopes, else this plugin's default.
    fn scope(&self) -> String {
        if let Some(s) = &self.scope {
            return s.clone();
        }
        if self.extra_scopes.is_empty() {
            return "openid email profile groups offline_access".to_owned();
        }
        let mut scopes = vec!["openid".to_owned()];
        for s in self.extra_scopes.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            if !scopes.iter().any(|x| x == s) {
                scopes.push(s.to_owned());
            }
        }
        scopes.join(" ")
    }

    fn grant(&self) -> GrantType {
        match self.grant_type {
            _ if self.device => GrantType::DeviceCode,
            GrantType::Auto if self.username.is_some() => GrantType::Password,
            GrantType::Auto => GrantType::Authcode,
            g => g,
        }
    }
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
    if args.pkce_method.eq_ignore_ascii_case("no") {
        bail!("--oidc-pkce-method=no: this plugin always uses PKCE (S256)");
    }
    let use_cache = match args.token_cache_storage.as_str() {
        "disk" => true,
        "none" => false,
        other => bail!("--token-cache-storage={other}: expected disk or none"),
    };
    let dir = match &args.cache_dir {
        Some(d) => d.clone(),
        None => {
            let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set; pass --cache-dir"))?;
            PathBuf::from(home).join(".kube/cache/oidc-login")
        }
    };
    create_private_dir(&dir)?;
    let scope = args.scope();
    // kubelogin names its files by a bare hash; the prefix keeps the two plugins' entries apart.
    let key = format!(
        "tokengate-{}",
        hex(digest::digest(&digest::SHA256, format!("{}\0{}\0{scope}", args.issuer_url, args.client_id).as_bytes())
            .as_ref())
    );
    let cache_path = dir.join(format!("{key}.json"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{key}.lock")))
        .context("opening the cache lock")?;
    // Held until the process exits: a second kubectl waits here, then finds the refreshed token.
    lock.lock().context("locking the token cache")?;

    let cached: Option<Cached> = match use_cache {
        true => std::fs::read(&cache_path).ok().and_then(|b| serde_json::from_slice(&b).ok()),
        false => None,
    };
    let client = http_client(&args)?;
    let token = match cached {
        Some(c) if !args.force_refresh && expiry(&c.id_token).is_some_and(|exp| exp > now() + EXPIRY_MARGIN) => c,
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
                None => match args.grant() {
                    GrantType::DeviceCode => device_login(&client, &args, &scope).await?,
                    GrantType::Password => password_login(&client, &args, &scope).await?,
                    GrantType::AuthcodeKeyboard => keyboard_login(&client, &args, &scope).await?,
                    GrantType::Authcode | GrantType::Auto => browser_login(&client, &args, &scope).await?,
                },
            };
            if use_cache {
                write_private(&cache_path, &serde_json::to_vec(&fresh)?)?;
            }
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
    let mut bundles = Vec::new();
    for data in &args.certificate_authority_data {
        bundles.push(STANDARD.decode(data.trim()).context("--certificate-authority-data is not base64")?);
    }
    for file in &args.certificate_authority {
        bundles.push(std::fs::read(file).with_context(|| format!("--certificate-authority {}", file.display()))?);
    }
    for pem in bundles {
        for cert in reqwest::Certificate::from_pem_bundle(&pem).context("the CA bundle is not PEM")? {
            b = b.add_root_certificate(cert);
        }
    }
    if args.insecure_skip_tls_verify {
        b = b.danger_accept_invalid_certs(true);
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

/// The loopback listener and the redirect URL it answers: `--redirect-url`, else the first free
/// `--listen-address`, else any free port on the first address's host.
async fn loopback(args: &GetToken) -> anyhow::Result<(tokio::net::TcpListener, url::Url)> {
    if let Some(r) = &args.redirect_url {
        let redirect = url::Url::parse(r).context("--redirect-url")?;
        let addr = match (redirect.scheme(), redirect.host_str(), redirect.port()) {
            ("http", Some(host @ ("127.0.0.1" | "[::1]" | "localhost")), Some(port)) => format!("{host}:{port}"),
            _ => bail!("--redirect-url must be http://127.0.0.1:<port>/<path> (RFC 8252 loopback redirect)"),
        };
        let listener =
            tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listening on {addr} for the login"))?;
        return Ok((listener, redirect));
    }
    let mut listener = None;
    for addr in &args.listen_addresses {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            listener = Some(l);
            break;
        }
    }
    let listener = match listener {
        Some(l) => l,
        None => {
            let first = args.listen_addresses.first().map_or("127.0.0.1:0", String::as_str);
            let host = first.rsplit_once(':').map_or(first, |(h, _)| h);
            tokio::net::TcpListener::bind(format!("{host}:0"))
                .await
                .with_context(|| format!("listening on {host} for the login (every --listen-address is taken)"))?
        }
    };
    let port = listener.local_addr()?.port();
    let redirect = url::Url::parse(&format!("http://{}:{port}/", args.redirect_hostname))
        .context("--oidc-redirect-url-hostname")?;
    Ok((listener, redirect))
}

/// The authorization URL with PKCE S256 and `--oidc-auth-request-extra-params`.
fn authorization_url(
    doc: &Value,
    args: &GetToken,
    scope: &str,
    redirect: &str,
    state: &str,
    challenge: &str,
) -> anyhow::Result<url::Url> {
    let mut auth = url::Url::parse(endpoint(doc, "authorization_endpoint")?)?;
    {
        let mut q = auth.query_pairs_mut();
        q.append_pair("client_id", &args.client_id)
            .append_pair("redirect_uri", redirect)
            .append_pair("response_type", "code")
            .append_pair("scope", scope)
            .append_pair("state", state)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        for p in &args.extra_params {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| anyhow!("--oidc-auth-request-extra-params {p:?}: expected key=value"))?;
            q.append_pair(k, v);
        }
    }
    Ok(auth)
}

/// Redeems an authorization code.
async fn redeem(
    client: &reqwest::Client,
    args: &GetToken,
    doc: &Value,
    code: &str,
    redirect: &str,
    verifier: &str,
) -> anyhow::Result<Cached> {
    let (status, body) = token_request(
        client,
        args,
        endpoint(doc, "token_endpoint")?,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ],
    )
    .await?;
    if status != 200 {
        bail!("redeeming the code failed: {status} {}", body["error"].as_str().unwrap_or(""));
    }
    cached_from(&body)
}

/// Starts the user's browser on `url` unless told not to; the URL is printed either way.
fn open_browser(args: &GetToken, url: &str) {
    if args.skip_open_browser {
        return;
    }
    let command = args
        .browser_command
        .clone()
        .unwrap_or_else(|| if cfg!(target_os = "macos") { "open" } else { "xdg-open" }.to_owned());
    // Best effort: without a browser the printed URL is still there to copy.
    let _ = std::process::Command::new(command)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

#[allow(clippy::print_stderr)] // kubectl shows the plugin's stderr to the user
async fn browser_login(client: &reqwest::Client, args: &GetToken, scope: &str) -> anyhow::Result<Cached> {
    let doc = discovery(client, args).await?;
    let (listener, redirect) = loopback(args).await?;
    let redirect_uri = redirect.as_str().trim_end_matches('/').to_owned();
    let redirect_uri = if redirect.path() == "/" { redirect_uri } else { redirect.to_string() };
    let state = random();
    let verifier = format!("{}{}", random(), random());
    let challenge = B64.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
    let auth = authorization_url(&doc, args, scope, &redirect_uri, &state, &challenge)?;
    eprintln!("Open this URL in your browser to sign in:\n{auth}");
    open_browser(args, auth.as_str());

    let code = loop {
        let (mut conn, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let n = conn.read(&mut buf).await?;
        let request = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
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
            (None, None, None) => {
                // A browser asking for /favicon.ico or a stray request: not the redirect.
                conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
                continue;
            }
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
    redeem(client, args, &doc, &code, &redirect_uri, &verifier).await
}

/// Authorization code with the code pasted into the terminal (kubelogin's `authcode-keyboard`): the
/// issuer shows the code on a page instead of redirecting (`urn:ietf:wg:oauth:2.0:oob`).
async fn keyboard_login(client: &reqwest::Client, args: &GetToken, scope: &str) -> anyhow::Result<Cached> {
    let doc = discovery(client, args).await?;
    let state = random();
    let verifier = format!("{}{}", random(), random());
    let challenge = B64.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
    let redirect = args.keyboard_redirect_url.as_str();
    let auth = authorization_url(&doc, args, scope, redirect, &state, &challenge)?;
    // Prompts go to stderr best effort: a closed stderr must not end the login.
    let mut err = std::io::stderr();
    let _ = writeln!(err, "Open this URL in a browser, sign in, and paste the code it shows:\n{auth}");
    let _ = write!(err, "Code: ");
    let _ = err.flush();
    let code = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line.trim().to_owned())
    })
    .await??;
    if code.is_empty() {
        bail!("no code was entered");
    }
    redeem(client, args, &doc, &code, redirect, &verifier).await
}

/// Resource owner password credentials (RFC 6749 §4.3).
async fn password_login(client: &reqwest::Client, args: &GetToken, scope: &str) -> anyhow::Result<Cached> {
    let doc = discovery(client, args).await?;
    let username = args.username.as_deref().ok_or_else(|| anyhow!("--grant-type=password needs --username"))?;
    let password = match &args.password {
        Some(p) => p.clone(),
        None => {
            let prompt = format!("Password for {username}: ");
            tokio::task::spawn_blocking(move || read_password(&prompt)).await??
        }
    };
    let (status, body) = token_request(
        client,
        args,
        endpoint(&doc, "token_endpoint")?,
        &[("grant_type", "password"), ("username", username), ("password", &password), ("scope", scope)],
    )
    .await?;
    match (status, body["error"].as_str()) {
        (200, _) => cached_from(&body),
        (_, Some("unsupported_grant_type")) => {
            bail!("the issuer does not allow the password grant; use --grant-type=authcode or device-code")
        }
        (_, error) => bail!("signing in with a password failed: {status} {}", error.unwrap_or("")),
    }
}

/// Reads a line from the terminal without echo where possible (`stty -echo`), falling back to stdin.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{prompt}");
    let _ = err.flush();
    let tty = std::fs::File::open("/dev/tty").is_ok();
    let stty = |arg: &str| {
        tty && std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::fs::File::open("/dev/tty").map_or_else(|_| std::process::Stdio::null(), Into::into))
            .status()
            .is_ok_and(|s| s.success())
    };
    let hidden = stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    if hidden {
        stty("echo");
        let _ = writeln!(err);
    }
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

#[allow(clippy::print_stderr)] // kubectl shows the plugin's stderr to the user
async fn device_login(client: &reqwest::Client, args: &GetToken, scope: &str) -> anyhow::Result<Cached> {
    let doc = discovery(client, args).await?;
    let (status, d) =
        token_request(client, args, endpoint(&doc, "device_authorization_endpoint")?, &[("scope", scope)]).await?;
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
