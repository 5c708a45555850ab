//! The `issuer` command: serve, check a configuration, hash a password, make development certificates.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::builder::NonEmptyStringValueParser;
use clap::{Parser, Subcommand};
use issuer::config::Config;
use issuer::state::{open_storage, AppState};

#[derive(Parser)]
#[command(name = "issuer", version, about = "OpenID Connect issuer for Kubernetes and Envoy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the issuer.
    Serve {
        /// YAML configuration file (`--config FILE`, `ISSUER_CONFIG`, or Dex's `serve FILE`).
        #[arg(long, short, env = "ISSUER_CONFIG", required_unless_present = "file")]
        config: Option<PathBuf>,
        /// The configuration file as Dex takes it: `issuer serve config.yaml`.
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
    },
    /// Validate a configuration file and list every problem.
    CheckConfig {
        /// YAML configuration file.
        file: PathBuf,
        /// Also connect to each connector's upstream the way a login would (LDAP bind and base search,
        /// OIDC discovery and JWKS, API reachability) and report TLS that is off and certificates that
        /// expire within 30 days. Exits non-zero when an upstream cannot be reached.
        #[arg(long)]
        probe: bool,
    },
    /// Read a password from standard input and print its bcrypt hash.
    HashPassword {
        /// bcrypt cost.
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
    /// Write a development CA and a server certificate signed by it.
    DevCerts {
        /// Output directory.
        #[arg(long, default_value = "dev-certs")]
        out: PathBuf,
        /// Host names (and IP addresses) the server certificate is for.
        #[arg(long = "host", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
        hosts: Vec<String>,
    },
    /// Print kube-apiserver's AuthenticationConfiguration for this issuer, and the equivalent --oidc-* flags.
    KubeApiserverConfig {
        /// YAML configuration file.
        #[arg(long, short, env = "ISSUER_CONFIG")]
        config: PathBuf,
        /// The audience kube-apiserver accepts [default: kubernetes.clientID, or "kubernetes"].
        #[arg(long)]
        client_id: Option<String>,
        /// Prefix for groups [default: kubernetes.groupsPrefix, or "oidc:"].
        #[arg(long)]
        groups_prefix: Option<String>,
        /// AuthenticationConfiguration version: v1beta1 (Kubernetes 1.30+) or v1 (1.34+).
        #[arg(long, value_enum, default_value = "v1beta1")]
        api_version: ApiVersionArg,
        /// PEM file of the CA that signed the issuer's certificate [default:
        /// kubernetes.issuerCertificateAuthority, or web.tlsCert for an https issuer].
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Print only the legacy --oidc-* flags, one per line.
        #[arg(long)]
        flags: bool,
    },
    /// Revoke a user's, group's or session's logins (or all of them): removes the refresh-token families
    /// and browser sessions from storage and appends the revocation to the feed gateways poll.
    Revoke {
        /// YAML configuration file (its storage is opened).
        #[arg(long, short, env = "ISSUER_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        target: RevokeTarget,
    },
}

/// What `issuer revoke` revokes: exactly one of these. Values may begin with `-` (a base64url `sid` does
/// one time in 64).
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct RevokeTarget {
    /// Every login of the user with this email (case-insensitively).
    #[arg(long, allow_hyphen_values = true, value_parser = NonEmptyStringValueParser::new())]
    user: Option<String>,
    /// Every login with this `sub` claim.
    #[arg(long, allow_hyphen_values = true, value_parser = NonEmptyStringValueParser::new())]
    sub: Option<String>,
    /// Every login whose groups hold this group.
    #[arg(long, allow_hyphen_values = true, value_parser = NonEmptyStringValueParser::new())]
    group: Option<String>,
    /// One browser session (the `sid` claim).
    #[arg(long, allow_hyphen_values = true, value_parser = NonEmptyStringValueParser::new())]
    session: Option<String>,
    /// Everything: every refresh token and browser session.
    #[arg(long)]
    all: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ApiVersionArg {
    V1,
    V1beta1,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, file } => match config.or(file) {
            Some(path) => serve(&path),
            None => bail!("serve: expected a configuration file (--config FILE or serve FILE)"),
        },
        Command::CheckConfig { file, probe } => check_config(&file, probe),
        Command::HashPassword { cost } => hash_password(cost),
        Command::DevCerts { out, hosts } => dev_certs(&out, &hosts),
        Command::KubeApiserverConfig { config, client_id, groups_prefix, api_version, ca_file, flags } => {
            kube_apiserver_config(&config, client_id, groups_prefix, api_version, ca_file, flags)
        }
        Command::Revoke { config, target } => revoke(&config, target),
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // the command's output is its result; warnings go to stderr
fn revoke(file: &Path, t: RevokeTarget) -> anyhow::Result<()> {
    use issuer::revocation::Target;
    let target = match (t.user, t.sub, t.group, t.session, t.all) {
        (Some(u), ..) => Target::User(u),
        (_, Some(s), ..) => Target::Sub(s),
        (_, _, Some(g), ..) => Target::Group(g),
        (_, _, _, Some(s), _) => Target::Session(s),
        _ => Target::All,
    };
    let config = Config::load(file)?;
    issuer::logging::init(&config.logger)?;
    if matches!(config.storage, issuer::config::StorageConfig::Memory) {
        bail!("{}: storage is memory; nothing outside the serving process can revoke in it", file.display());
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let storage = open_storage(&config).await.context("opening storage")?;
        let state = AppState::new(config, storage, issuer::clock::Clock::system()).await?;
        let summary =
            issuer::revocation::revoke(&state, &target).await.map_err(|e| anyhow::anyhow!("revoking: {e}"))?;
        tracing::info!(target: "audit", event = "admin_revoke", target = %target, families = summary.families, sessions = summary.sessions);
        println!("revoked {} refresh-token famil(ies) and {} browser session(s)", summary.families, summary.sessions);
        if let (Target::User(email), true) = (&target, summary.logged.is_empty()) {
            // Without a login on record there is no `sub` to publish: ID tokens already out stay valid.
            eprintln!(
                "warning: no refresh token or browser session of {email:?} is stored, so nothing was revoked or \
                 logged; check the email, or revoke by `--sub SUB` (the sub claim of the user's tokens)"
            );
        }
        for (kind, value, seq) in &summary.logged {
            println!("logged {} {value:?} as revocation {seq}", kind.as_str());
        }
        // The process ends with this command: wait for the back-channel logouts (each is bounded).
        for (sid, delivery) in summary.deliveries {
            match delivery.await {
                Ok(outcome) => println!("back-channel logout for session {sid}: {outcome:?}"),
                Err(e) => println!("back-channel logout for session {sid}: task failed: {e}"),
            }
        }
        Ok(())
    })
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // the command's output is its result; warnings go to stderr
fn kube_apiserver_config(
    file: &Path,
    client_id: Option<String>,
    groups_prefix: Option<String>,
    api_version: ApiVersionArg,
    ca_file: Option<PathBuf>,
    flags_only: bool,
) -> anyhow::Result<()> {
    use issuer::kube::{apiserver_config, ApiVersion, ApiserverOptions};
    let config = Config::load(file)?;
    let mut opts = ApiserverOptions::from_config(&config);
    if let Some(id) = client_id {
        opts.client_id = id;
    }
    if let Some(prefix) = groups_prefix {
        opts.groups_prefix = prefix;
    }
    opts.api_version = match api_version {
        ApiVersionArg::V1 => ApiVersion::V1,
        ApiVersionArg::V1beta1 => ApiVersion::V1Beta1,
    };
    if let Some(path) = ca_file {
        let pem = std::fs::read_to_string(&path).with_context(|| format!("reading --ca-file {}", path.display()))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            bail!("--ca-file {}: expected a PEM certificate", path.display());
        }
        opts.ca = Some(issuer::config::CaFile { path, pem });
    }
    let out = apiserver_config(&config, &opts);
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    if flags_only {
        for f in &out.flags {
            println!("{f}");
        }
    } else {
        print!("{}", out.to_yaml()?);
    }
    Ok(())
}

#[allow(clippy::print_stdout)] // the command's output is its result
fn check_config(file: &Path, probe: bool) -> anyhow::Result<()> {
    let c = Config::load(file)?;
    println!(
        "{}: ok (issuer {}, {} client(s), {} user(s), {} connector(s), {} storage, {} signing)",
        file.display(),
        c.issuer,
        c.static_clients.len(),
        c.static_passwords.len(),
        c.connectors.len(),
        match c.storage {
            issuer::config::StorageConfig::Memory => "memory",
            issuer::config::StorageConfig::Sqlite { .. } => "sqlite3",
            issuer::config::StorageConfig::Postgres(_) => "postgres",
        },
        c.signing.algorithm.as_str()
    );
    for w in &c.warnings {
        println!("warning: {}", w.located(&file.display().to_string()));
    }
    if probe {
        // Probing reaches the upstreams only: the password database's storage is not opened.
        let connectors = issuer::connector::Connectors::new(&c, Arc::new(issuer::storage::memory::Memory::new()))?;
        let failed =
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(probe_connectors(&connectors));
        if failed > 0 {
            bail!("{failed} connector(s) cannot be reached");
        }
    }
    Ok(())
}

/// Certificates expiring sooner than this are reported.
const CERTIFICATE_WARNING_DAYS: i64 = 30;

/// Probes every connector (they run concurrently) and prints one line each, then its warnings. Returns how
/// many could not be reached.
#[allow(clippy::print_stdout)] // the command's output is its result
async fn probe_connectors(connectors: &issuer::connector::Connectors) -> usize {
    let probes = connectors.iter().filter_map(|c| c.probe.clone().map(|p| (c.id.clone(), c.kind, p)));
    let handles: Vec<_> =
        probes.map(|(id, kind, p)| (id, kind, tokio::spawn(async move { p.probe().await }))).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut failed = 0;
    for (id, kind, handle) in handles {
        match handle.await {
            Ok(Ok(report)) => {
                println!("connector {id} ({kind}): reachable: {}", report.detail);
                if let Some(w) = report.tls_warning {
                    println!("  warning: {w}");
                }
                let expiry = report.peer_certificate.as_deref().and_then(issuer::connector::tls::certificate_not_after);
                if let Some(not_after) = expiry {
                    let days = (not_after - now).div_euclid(86_400);
                    if days < CERTIFICATE_WARNING_DAYS {
                        println!("  warning: the upstream's TLS certificate expires in {days} day(s)");
                    } else {
                        println!("  certificate valid for {days} more days");
                    }
                }
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("connector {id} ({kind}): NOT reachable: {e}");
            }
            Err(e) => {
                failed += 1;
                println!("connector {id} ({kind}): probe failed: {e}");
            }
        }
    }
    failed
}

#[allow(clippy::print_stdout)] // the command's output is its result
fn hash_password(cost: u32) -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("reading the password from standard input")?;
    let password = input.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("no password on standard input");
    }
    println!("{}", bcrypt::hash(password, cost)?);
    Ok(())
}

#[allow(clippy::print_stdout)] // the command's output is its result
fn dev_certs(out: &Path, hosts: &[String]) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "issuer development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, hosts.first().map_or("localhost", String::as_str));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    write(&out.join("ca.pem"), ca.pem().as_bytes(), 0o644)?;
    write(&out.join("ca-key.pem"), ca_key.serialize_pem().as_bytes(), 0o600)?;
    write(&out.join("cert.pem"), cert.pem().as_bytes(), 0o644)?;
    write(&out.join("key.pem"), key.serialize_pem().as_bytes(), 0o600)?;
    println!("wrote {0}/ca.pem, {0}/cert.pem and {0}/key.pem for {1}", out.display(), hosts.join(", "));
    Ok(())
}

fn write(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

fn serve(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    issuer::logging::init(&config.logger)?;
    for w in &config.warnings {
        tracing::warn!(key = %w.key, line = w.line, "{}: {}", path.display(), w.message);
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let storage = open_storage(&config).await.context("opening storage")?;
    let state = AppState::new(config.clone(), storage, issuer::clock::Clock::system()).await?;
    tokio::spawn(issuer::gc::run(state.clone(), Duration::from_secs(300)));
    let telemetry = issuer::telemetry_app(state.clone()).into_make_service();
    let app = issuer::app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let mut servers = tokio::task::JoinSet::new();
    if let Some(addr) = &config.telemetry.http {
        let addr: SocketAddr = addr.parse()?;
        tracing::info!(%addr, "listening (telemetry: /metrics, /healthz)");
        servers.spawn(axum_server::bind(addr).handle(handle.clone()).serve(telemetry));
    }
    if let Some(addr) = &config.web.http {
        let addr: SocketAddr = addr.parse()?;
        tracing::info!(%addr, issuer = %config.issuer, "listening (http)");
        servers.spawn(axum_server::bind(addr).handle(handle.clone()).serve(app.clone()));
    }
    if let (Some(addr), Some(cert), Some(key)) = (&config.web.https, &config.web.tls_cert, &config.web.tls_key) {
        let addr: SocketAddr = addr.parse()?;
        let tls = web_tls(&config.web, cert, key)
            .with_context(|| format!("loading web.tlsCert {} / web.tlsKey {}", cert.display(), key.display()))?;
        tracing::info!(%addr, issuer = %config.issuer, "listening (https)");
        servers.spawn(axum_server::bind_rustls(addr, tls).handle(handle.clone()).serve(app.clone()));
    }
    let (stop_grpc, grpc_stopped) = tokio::sync::watch::channel(false);
    if let Some(grpc) = config.grpc.clone() {
        let listener = tokio::net::TcpListener::bind(grpc.addr)
            .await
            .with_context(|| format!("grpc.addr: binding {}", grpc.addr))?;
        let mode = match (&grpc.tls, &grpc.client_ca) {
            (None, _) => "plaintext",
            (Some(_), None) => "tls",
            (Some(_), Some(_)) => "mutual tls",
        };
        tracing::info!(addr = %grpc.addr, mode, reflection = grpc.reflection, "listening (grpc api)");
        let state = state.clone();
        let mut stopped = grpc_stopped.clone();
        servers.spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            issuer::grpc::serve(state, &grpc, listener, shutdown).await.map_err(std::io::Error::other)
        });
    }
    tokio::select! {
        _ = shutdown_signal() => {
            let _ = stop_grpc.send(true);
            tracing::info!("shutting down");
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
            while servers.join_next().await.is_some() {}
        }
        Some(result) = servers.join_next() => { result??; }
    }
    Ok(())
}

/// The HTTPS listener's TLS: the certificate chain and key, the versions `web.tlsMinVersion` /
/// `web.tlsMaxVersion` allow (TLS 1.2 and 1.3 by default), ALPN h2 and http/1.1.
fn web_tls(
    web: &issuer::config::Web,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let min = web.tls_min_version.as_deref().unwrap_or("1.2");
    let max = web.tls_max_version.as_deref().unwrap_or("1.3");
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [("1.2", &rustls::version::TLS12), ("1.3", &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| *v >= min && *v <= max)
            .map(|(_, p)| p)
            .collect();
    let mut tls = rustls::ServerConfig::builder_with_protocol_versions(&versions)
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(std::sync::Arc::new(tls)))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn revoke_takes_a_session_id_that_begins_with_a_hyphen() {
        let cli = Cli::try_parse_from(["issuer", "revoke", "--config", "c.yaml", "--session", "-9QmVx2_a"]).unwrap();
        let Command::Revoke { target, .. } = cli.command else { panic!("revoke") };
        assert_eq!(target.session.as_deref(), Some("-9QmVx2_a"));
        assert!(Cli::try_parse_from(["issuer", "revoke", "--config", "c.yaml", "--session"]).is_err(), "a value");
        for flag in ["--user", "--sub", "--group", "--session"] {
            let empty = Cli::try_parse_from(["issuer", "revoke", "--config", "c.yaml", flag, ""]);
            assert!(empty.is_err(), "{flag} '' would log an entry naming nothing");
        }
    }
}
