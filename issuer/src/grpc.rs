//! Dex's gRPC administration API (`api.v2`, `proto/api.proto`): its configuration (`grpc:`), the server
//! (tonic over rustls; with `tlsClientCA`, clients must present a certificate signed by it) and the
//! service. Clients and passwords created here live in storage, so every replica sees them on its next
//! request; the ones in the configuration (`staticClients`, `staticPasswords`) are listed too but are
//! read-only, and a change to one is refused with FAILED_PRECONDITION, as Dex refuses it. Connectors come
//! only from the configuration: they are listed, and changing them is UNIMPLEMENTED. What a request gets
//! wrong is INVALID_ARGUMENT with the reason; storage failures are UNAVAILABLE or INTERNAL. Every change
//! is logged as an audit event (`target: "audit"`, `via = "grpc"`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use tonic::{Request, Response, Status};

use crate::state::AppState;
use crate::storage::{self, RefreshToken, StorageError};

/// The generated messages, service trait (`dex_server::Dex`) and client (`dex_client::DexClient`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod api {
    tonic::include_proto!("api");
}

/// The compiled `api.proto`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/api_descriptor.bin"));

/// The API version `GetVersion` reports: Dex's number for this set of methods (clients with
/// `ListClients`, passwords, refresh tokens, no sessions).
pub const API_VERSION: i32 = 3;

/// bcrypt costs accepted for password hashes (Dex's lower bound is bcrypt's default cost).
const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 10..=16;

// === configuration ===

/// `grpc:` as written (Dex's keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawGrpc {
    #[serde(default)]
    addr: Option<String>,
    #[serde(default)]
    tls_cert: Option<PathBuf>,
    #[serde(default)]
    tls_key: Option<PathBuf>,
    #[serde(default, rename = "tlsClientCA")]
    tls_client_ca: Option<PathBuf>,
    #[serde(default)]
    tls_min_version: Option<String>,
    #[serde(default)]
    tls_max_version: Option<String>,
    #[serde(default)]
    reflection: bool,
}

/// `grpc:`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcConfig {
    /// Listen address (`addr`).
    pub addr: SocketAddr,
    /// Server certificate and key, PEM files (`tlsCert`, `tlsKey`); `None`: plaintext (h2c).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA bundle (PEM) that client certificates must chain to (`tlsClientCA`); when set, every client
    /// must present one (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Whether gRPC server reflection is served (`reflection`).
    pub reflection: bool,
}

impl RawGrpc {
    /// Checks the section; each problem goes to `problem(key, expected)`. `None` when there was one.
    pub(crate) fn validate(self, problem: &mut dyn FnMut(String, String)) -> Option<GrpcConfig> {
        let before = std::cell::Cell::new(0_usize);
        let mut p = |key: &str, expected: String| {
            before.set(before.get() + 1);
            problem(format!("grpc.{key}"), expected);
        };
        let addr = match self.addr.as_deref().map(str::parse::<SocketAddr>) {
            Some(Ok(a)) => Some(a),
            Some(Err(_)) | None => {
                p("addr", format!("an address such as 127.0.0.1:5557, got {:?}", self.addr.unwrap_or_default()));
                None
            }
        };
        for (key, file) in
            [("tlsCert", &self.tls_cert), ("tlsKey", &self.tls_key), ("tlsClientCA", &self.tls_client_ca)]
        {
            if let Some(f) = file.as_ref().filter(|f| !f.is_file()) {
                p(key, format!("an existing PEM file, got {}", f.display()));
            }
        }
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                p("tlsCert", "grpc.tlsCert and grpc.tlsKey together".into());
                None
            }
        };
        if self.tls_client_ca.is_some() && tls.is_none() {
            p("tlsClientCA", "to be set only with grpc.tlsCert and grpc.tlsKey (client certificates need TLS)".into());
        }
        // rustls speaks TLS 1.2 and 1.3; the server cannot narrow that range.
        if let Some(v) = self.tls_min_version.as_deref().filter(|v| *v != "1.2") {
            p("tlsMinVersion", format!("\"1.2\" (TLS 1.2 and 1.3 are always offered), got {v:?}"));
        }
        if let Some(v) = self.tls_max_version.as_deref().filter(|v| *v != "1.3") {
            p("tlsMaxVersion", format!("\"1.3\" (TLS 1.2 and 1.3 are always offered), got {v:?}"));
        }
        if before.get() > 0 {
            return None;
        }
        Some(GrpcConfig { addr: addr?, tls, client_ca: self.tls_client_ca, reflection: self.reflection })
    }
}

// === server ===

/// Why the gRPC server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// A TLS file could not be read.
    #[error("grpc: reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The transport failed (bad TLS material, a listener error).
    #[error("grpc: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("grpc reflection: {0}")]
    Reflection(String),
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, GrpcError> {
    std::fs::read(path).map_err(|source| GrpcError::Read { path: path.display().to_string(), source })
}

/// Serves the API on `listener` (bound by the caller: `config.addr`, or an ephemeral port in tests) until
/// `shutdown` completes.
pub async fn serve(
    state: AppState,
    config: &GrpcConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
    let mut server = Server::builder();
    if let Some((cert, key)) = &config.tls {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(ca) = &config.client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        server = server.tls_config(tls)?;
    }
    let reflection = if config.reflection {
        let service = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| GrpcError::Reflection(e.to_string()))?;
        Some(service)
    } else {
        None
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    server
        .add_service(api::dex_server::DexServer::new(DexApi { state }))
        .add_optional_service(reflection)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

// === the service ===

/// The `Dex` service over the issuer's state.
pub struct DexApi {
    state: AppState,
}

impl DexApi {
    /// The service for `state` (for embedding in another tonic server).
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn invalid(why: impl Into<String>) -> Status {
    Status::invalid_argument(why)
}

fn storage_status(e: StorageError) -> Status {
    match e {
        StorageError::Unavailable(why) => Status::unavailable(format!("storage unavailable: {why}")),
        other => {
            tracing::error!(error = %other, "grpc: storage failure");
            Status::internal("storage failure")
        }
    }
}

fn read_only(what: &str, id: &str, key: &str) -> Status {
    Status::failed_precondition(format!(
        "{what} {id:?} is defined in the configuration ({key}) and is read-only through the API"
    ))
}

fn peer<T>(r: &Request<T>) -> String {
    r.remote_addr().map_or_else(|| "-".to_owned(), |a| a.to_string())
}

/// Checks the client fields beyond the basics: `backchannel_logout_uri` must be an absolute http(s) URL
/// (Back-Channel Logout 1.0 §2.2); `refresh_token_lifetime` is refused when set, rather than dropped
/// (lifetimes are the configuration's).
fn check_client_fields(backchannel: &str, lifetime: &str) -> Result<(), Status> {
    if !backchannel.is_empty() && !crate::config::valid_backchannel_logout_uri(backchannel) {
        return Err(invalid(format!("backchannel_logout_uri: expected an absolute http(s) URL, got {backchannel:?}")));
    }
    if !lifetime.is_empty() {
        return Err(invalid("refresh_token_lifetime is not supported: lifetimes come from expiry.refreshTokens"));
    }
    Ok(())
}

fn check_redirect_uris(uris: &[String], key: &str) -> Result<(), Status> {
    for u in uris {
        if url::Url::parse(u).is_err() {
            return Err(invalid(format!("{key}: expected absolute URLs, got {u:?}")));
        }
    }
    Ok(())
}

impl DexApi {
    fn check_connectors(&self, ids: &[String]) -> Result<(), Status> {
        for id in ids {
            if self.state.connectors.get(id).is_none() {
                let known: Vec<&str> = self.state.connectors.iter().map(|c| c.id.as_str()).collect();
                return Err(invalid(format!(
                    "allowed_connectors: {id:?} is not a configured connector (known: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn static_password(&self, email: &str) -> Option<&crate::config::StaticPassword> {
        self.state.config.static_passwords.iter().find(|p| p.email.eq_ignore_ascii_case(email))
    }
}

fn api_client(c: &crate::config::Client) -> api::Client {
    api::Client {
        id: c.id.clone(),
        secret: c.secret.clone().unwrap_or_default(),
        redirect_uris: c.redirect_uris.clone(),
        trusted_peers: c.trusted_peers.clone(),
        public: c.public,
        name: c.name.clone(),
        allowed_connectors: c.allowed_connectors.clone(),
        post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
        sso_shared_with: c.sso_shared_with.clone().unwrap_or_default(),
        backchannel_logout_uri: c.backchannel_logout_uri.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn stored_api_client(c: storage::Client) -> api::Client {
    api::Client {
        id: c.id,
        secret: c.secret,
        redirect_uris: c.redirect_uris,
        trusted_peers: c.trusted_peers,
        public: c.public,
        name: c.name,
        logo_url: c.logo_url,
        allowed_connectors: c.allowed_connectors,
        post_logout_redirect_uris: c.post_logout_redirect_uris,
        sso_shared_with: c.sso_shared_with,
        backchannel_logout_uri: c.backchannel_logout_uri,
        ..Default::default()
    }
}

fn client_info(c: api::Client) -> api::ClientInfo {
    api::ClientInfo {
        id: c.id,
        redirect_uris: c.redirect_uris,
        trusted_peers: c.trusted_peers,
        public: c.public,
        name: c.name,
        logo_url: c.logo_url,
        allowed_connectors: c.allowed_connectors,
        post_logout_redirect_uris: c.post_logout_redirect_uris,
        sso_shared_with: c.sso_shared_with,
        backchannel_logout_uri: c.backchannel_logout_uri,
        ..Default::default()
    }
}

/// A bcrypt hash as the API sends it (bytes): valid, at a cost Dex accepts.
fn check_hash(hash: &[u8]) -> Result<String, Status> {
    let text = std::str::from_utf8(hash).map_err(|_| invalid("hash: expected a bcrypt hash (\"$2a$10$...\")"))?;
    let parts = text
        .parse::<bcrypt::HashParts>()
        .map_err(|e| invalid(format!("hash: expected a bcrypt hash (\"$2a$10$...\"): {e}")))?;
    if !BCRYPT_COSTS.contains(&parts.get_cost()) {
        return Err(invalid(format!(
            "hash: expected a bcrypt cost from {} to {}, got {}",
            BCRYPT_COSTS.start(),
            BCRYPT_COSTS.end(),
            parts.get_cost()
        )));
    }
    Ok(text.to_owned())
}

/// Dex's `IDTokenSubject` (`server/internal/types.proto`): what a federated `sub` encodes.
#[derive(Clone, PartialEq, prost::Message)]
struct IdTokenSubject {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(string, tag = "2")]
    conn_id: String,
}

/// The (connector, user id) pairs a `sub` may stand for: Dex's encoding of both (how Dex and this issuer
/// mint subjects for every connector but the password database here), and the password database's user
/// id as it is (this issuer's `sub` for those users).
fn subject_candidates(sub: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    let mut out = vec![(crate::connector::local::CONNECTOR_ID.to_owned(), sub.to_owned())];
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sub.trim_end_matches('='))
        .ok()
        .and_then(|b| <IdTokenSubject as prost::Message>::decode(b.as_slice()).ok())
        .filter(|s| !s.user_id.is_empty() && !s.conn_id.is_empty());
    if let Some(s) = decoded {
        // Guard against a plain id that happens to decode: the pair must re-encode to the same subject.
        if crate::connector::dex_subject(&s.user_id, &s.conn_id) == sub.trim_end_matches('=') {
            out.push((s.conn_id, s.user_id));
        }
    }
    out
}

/// One live refresh-token family: the client, when the login started and when the token was last
/// exchanged.
struct Family {
    id: String,
    client_id: String,
    created_at: i64,
    last_used: i64,
}

impl DexApi {
    /// The live families (an unrotated, unexpired token) of the user `sub`, oldest first.
    async fn families(&self, sub: &str) -> Result<Vec<Family>, Status> {
        let now = self.state.clock.now();
        let mut tokens: Vec<RefreshToken> = Vec::new();
        for (connector, user) in subject_candidates(sub) {
            tokens
                .extend(self.state.storage.list_user_refresh_tokens(&connector, &user).await.map_err(storage_status)?);
        }
        let mut families: Vec<Family> = Vec::new();
        for t in tokens.iter().filter(|t| t.rotated_at.is_none() && t.expiry >= now) {
            if families.iter().any(|f| f.id == t.family_id) {
                continue;
            }
            families.push(Family {
                id: t.family_id.clone(),
                client_id: t.client_id.clone(),
                created_at: t.family_created_at,
                last_used: t.created_at,
            });
        }
        families.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(families)
    }
}

/// Dex's discovery fields, read back from the issuer's own document.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    userinfo_endpoint: String,
    device_authorization_endpoint: String,
    introspection_endpoint: String,
    grant_types_supported: Vec<String>,
    response_types_supported: Vec<String>,
    subject_types_supported: Vec<String>,
    id_token_signing_alg_values_supported: Vec<String>,
    code_challenge_methods_supported: Vec<String>,
    scopes_supported: Vec<String>,
    token_endpoint_auth_methods_supported: Vec<String>,
    claims_supported: Vec<String>,
}

#[tonic::async_trait]
impl api::dex_server::Dex for DexApi {
    async fn get_client(&self, r: Request<api::GetClientReq>) -> Result<Response<api::GetClientResp>, Status> {
        let id = r.into_inner().id;
        if let Some(c) = self.state.config.client(&id) {
            return Ok(Response::new(api::GetClientResp { client: Some(api_client(c)) }));
        }
        match self.state.storage.get_client(&id).await {
            Ok(c) => Ok(Response::new(api::GetClientResp { client: Some(stored_api_client(c)) })),
            Err(StorageError::NotFound) => Err(Status::not_found(format!("no client {id:?}"))),
            Err(e) => Err(storage_status(e)),
        }
    }

    async fn create_client(&self, r: Request<api::CreateClientReq>) -> Result<Response<api::CreateClientResp>, Status> {
        let peer = peer(&r);
        let mut c = r.into_inner().client.ok_or_else(|| invalid("no client supplied"))?;
        check_client_fields(&c.backchannel_logout_uri, &c.refresh_token_lifetime)?;
        check_redirect_uris(&c.redirect_uris, "redirect_uris")?;
        check_redirect_uris(&c.post_logout_redirect_uris, "post_logout_redirect_uris")?;
        self.check_connectors(&c.allowed_connectors)?;
        if c.id.is_empty() {
            c.id = crate::token::random_b64::<16>();
        }
        if self.state.config.client(&c.id).is_some() {
            return Err(read_only("client", &c.id, "staticClients"));
        }
        if c.secret.is_empty() && !c.public {
            c.secret = crate::token::random_b64::<32>();
        }
        let record = storage::Client {
            id: c.id.clone(),
            secret: c.secret.clone(),
            redirect_uris: c.redirect_uris.clone(),
            trusted_peers: c.trusted_peers.clone(),
            public: c.public,
            name: c.name.clone(),
            logo_url: c.logo_url.clone(),
            allowed_connectors: c.allowed_connectors.clone(),
            post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
            sso_shared_with: c.sso_shared_with.clone(),
            backchannel_logout_uri: c.backchannel_logout_uri.clone(),
        };
        match self.state.storage.create_client(record).await {
            Ok(()) => {
                tracing::info!(target: "audit", event = "client_created", via = "grpc", client = %c.id, public = c.public, peer);
                Ok(Response::new(api::CreateClientResp { already_exists: false, client: Some(c) }))
            }
            Err(StorageError::AlreadyExists) => {
                Ok(Response::new(api::CreateClientResp { already_exists: true, client: None }))
            }
            Err(e) => Err(storage_status(e)),
        }
    }

    async fn update_client(&self, r: Request<api::UpdateClientReq>) -> Result<Response<api::UpdateClientResp>, Status> {
        let peer = peer(&r);
        let u = r.into_inner();
        if u.id.is_empty() {
            return Err(invalid("no client id supplied"));
        }
        check_client_fields(
            u.backchannel_logout_uri.as_deref().unwrap_or(""),
            u.refresh_token_lifetime.as_deref().unwrap_or(""),
        )?;
        check_redirect_uris(&u.redirect_uris, "redirect_uris")?;
        check_redirect_uris(&u.post_logout_redirect_uris, "post_logout_redirect_uris")?;
        self.check_connectors(&u.allowed_connectors)?;
        if self.state.config.client(&u.id).is_some() {
            return Err(read_only("client", &u.id, "staticClients"));
        }
        let id = u.id.clone();
        // Dex's rule: an empty list or string keeps the current value.
        let update: storage::Update<storage::Client> = Box::new(move |mut c| {
            let keep_or = |new: Vec<String>, old: &mut Vec<String>| {
                if !new.is_empty() {
                    *old = new;
                }
            };
            keep_or(u.redirect_uris, &mut c.redirect_uris);
            keep_or(u.trusted_peers, &mut c.trusted_peers);
            keep_or(u.allowed_connectors, &mut c.allowed_connectors);
            keep_or(u.post_logout_redirect_uris, &mut c.post_logout_redirect_uris);
            if !u.name.is_empty() {
                c.name = u.name;
            }
            if !u.logo_url.is_empty() {
                c.logo_url = u.logo_url;
            }
            keep_or(u.sso_shared_with, &mut c.sso_shared_with);
            // Optional in the update message: present and empty clears it.
            if let Some(uri) = u.backchannel_logout_uri {
                c.backchannel_logout_uri = uri;
            }
            Ok(c)
        });
        match self.state.storage.update_client(&id, update).await {
            Ok(_) => {
                tracing::info!(target: "audit", event = "client_updated", via = "grpc", client = %id, peer);
                Ok(Response::new(api::UpdateClientResp { not_found: false }))
            }
            Err(StorageError::NotFound) => Ok(Response::new(api::UpdateClientResp { not_found: true })),
            Err(e) => Err(storage_status(e)),
        }
    }

    async fn delete_client(&self, r: Request<api::DeleteClientReq>) -> Result<Response<api::DeleteClientResp>, Status> {
        let peer = peer(&r);
        let id = r.into_inner().id;
        if self.state.config.client(&id).is_some() {
            return Err(read_only("client", &id, "staticClients"));
        }
        match self.state.storage.delete_client(&id).await {
            Ok(()) => {
                tracing::info!(target: "audit", event = "client_deleted", via = "grpc", client = %id, peer);
                Ok(Response::new(api::DeleteClientResp { not_found: false }))
            }
            Err(StorageError::NotFound) => Ok(Response::new(api::DeleteClientResp { not_found: true })),
            Err(e) => Err(storage_status(e)),
        }
    }

    async fn list_clients(&self, _: Request<api::ListClientReq>) -> Result<Response<api::ListClientResp>, Status> {
        let mut clients: Vec<api::ClientInfo> =
            self.state.config.static_clients.iter().map(|c| client_info(api_client(c))).collect();
        let stored = self.state.storage.list_clients().await.map_err(storage_status)?;
        clients.extend(stored.into_iter().map(|c| client_info(stored_api_client(c))));
        Ok(Response::new(api::ListClientResp { clients }))
    }

    async fn create_password(
        &self,
        r: Request<api::CreatePasswordReq>,
    ) -> Result<Response<api::CreatePasswordResp>, Status> {
        let peer = peer(&r);
        let p = r.into_inner().password.ok_or_else(|| invalid("no password supplied"))?;
        if p.email.is_empty() {
            return Err(invalid("no email supplied"));
        }
        if p.user_id.is_empty() {
            return Err(invalid("no user_id supplied"));
        }
        if p.hash.is_empty() {
            return Err(invalid("no hash of the password supplied"));
        }
        let hash = check_hash(&p.hash)?;
        if self.static_password(&p.email).is_some() {
            return Err(read_only("password", &p.email, "staticPasswords"));
        }
        let username = if p.username.is_empty() { p.email.clone() } else { p.username };
        let record = storage::Password { email: p.email.clone(), hash, username, user_id: p.user_id.clone() };
        match self.state.storage.create_password(record).await {
            Ok(()) => {
                tracing::info!(target: "audit", event = "password_created", via = "grpc", user = %p.email, sub = %p.user_id, peer);
                Ok(Response::new(api::CreatePasswordResp { already_exists: false }))
            }
            Err(StorageError::AlreadyExists) => Ok(Response::new(api::CreatePasswordResp { already_exists: true })),
            Err(e) => Err(storage_status(e)),
        }
    }

    async fn update_password(
        &self,
        r: Request<api::UpdatePasswordReq>,
    ) -> Result<Response<api::UpdatePasswordResp>, Status> {
        let peer = peer(&r);
        let u = r.into_inner();
        if u.email.is_empty() {
            return Err(invalid("no email supplied"));
        }
        if u.new_hash.is_empty() && u.new_username.is_empty() {
            return Err(invalid("nothing to update: set new_hash or new_username"));
        }
        let hash = if u.new_hash.is_empty() { None } else { Some(check_hash(&u.new_hash)?) };
        if self.static_password(&u.email).is_some() {
            return Err(read_only("password", &u.email, "staticPasswords"));
        }
        let (new_username, changed_hash) = (u.new_username, hash.is_some());
        let update: storage::Update<storage::Password> = Box::new(move |mut p| {
            if let Some(h) = hash {
                p.hash = h;
            }
            if !new_username.is_empty() {
                p.username = new_username;
            }
            Ok(p)
        });
        match self.state.storage.update_password(&u.email, update).await {
            Ok(_) => {
                tracing::info!(target: "audit", event = "password_updated", via = "grpc", user = %u.email, hash = changed_hash, peer);
                Ok(Response::new(api::UpdatePasswordResp { not_found: false }))
            }
            Err(StorageError::NotFound) => Ok(Response::new(api::UpdatePasswordResp { not_found: true })),
            Err(e) => Err(storage_status(e)),
        }
    }

    async fn delete_password(
        &self,
        r: Request<api::DeletePasswordReq>,
    ) -> Result<Response<api::DeletePasswordResp>, Status> {
        let peer = peer(&r);
        let email = r.into_inner().email;
        if email.is_empty() {
            return Err(invalid("no email supplied"));
        }
        if self.static_password(&email).is_some() {
            return Err(read_only("password", &email, "staticPasswords"));
        }
        match self.state.storage.delete_password(&email).await {
            Ok(()) => {
                tracing::info!(target: "audit", event = "password_deleted", via = "grpc", user = %email, peer);
                Ok(Response::new(api::DeletePasswordResp { not_found: false }))
            }
            Err(StorageError::NotFound) => Ok(Response::new(api::DeletePasswordResp { not_found: true })),
            Err(e) => Err(storage_status(e)),
        }
    }

    async fn list_passwords(
        &self,
        _: Request<api::ListPasswordReq>,
    ) -> Result<Response<api::ListPasswordResp>, Status> {
        // Hashes are never listed (as in Dex).
        let mut passwords: Vec<api::Password> = (self.state.config.static_passwords.iter())
            .map(|p| api::Password {
                email: p.email.clone(),
                hash: vec![],
                username: p.username.clone(),
                user_id: p.user_id.clone(),
            })
            .collect();
        let stored = self.state.storage.list_passwords().await.map_err(storage_status)?;
        passwords.extend(stored.into_iter().map(|p| api::Password {
            email: p.email,
            hash: vec![],
            username: p.username,
            user_id: p.user_id,
        }));
        Ok(Response::new(api::ListPasswordResp { passwords }))
    }

    async fn create_connector(
        &self,
        _: Request<api::CreateConnectorReq>,
    ) -> Result<Response<api::CreateConnectorResp>, Status> {
        Err(connectors_are_static())
    }

    async fn update_connector(
        &self,
        _: Request<api::UpdateConnectorReq>,
    ) -> Result<Response<api::UpdateConnectorResp>, Status> {
        Err(connectors_are_static())
    }

    async fn delete_connector(
        &self,
        _: Request<api::DeleteConnectorReq>,
    ) -> Result<Response<api::DeleteConnectorResp>, Status> {
        Err(connectors_are_static())
    }

    async fn list_connectors(
        &self,
        _: Request<api::ListConnectorReq>,
    ) -> Result<Response<api::ListConnectorResp>, Status> {
        // Configurations hold upstream secrets: only ids, types and names are listed.
        let connectors = (self.state.connectors.iter())
            .map(|c| api::Connector {
                id: c.id.clone(),
                r#type: c.kind.to_owned(),
                name: c.name.clone(),
                config: vec![],
                grant_types: vec![],
            })
            .collect();
        Ok(Response::new(api::ListConnectorResp { connectors }))
    }

    async fn get_version(&self, _: Request<api::VersionReq>) -> Result<Response<api::VersionResp>, Status> {
        Ok(Response::new(api::VersionResp { server: env!("CARGO_PKG_VERSION").to_owned(), api: API_VERSION }))
    }

    async fn get_discovery(&self, _: Request<api::DiscoveryReq>) -> Result<Response<api::DiscoveryResp>, Status> {
        let d: Discovery = serde_json::from_slice(&self.state.discovery)
            .map_err(|e| Status::internal(format!("discovery document: {e}")))?;
        Ok(Response::new(api::DiscoveryResp {
            issuer: d.issuer,
            authorization_endpoint: d.authorization_endpoint,
            token_endpoint: d.token_endpoint,
            jwks_uri: d.jwks_uri,
            userinfo_endpoint: d.userinfo_endpoint,
            device_authorization_endpoint: d.device_authorization_endpoint,
            introspection_endpoint: d.introspection_endpoint,
            grant_types_supported: d.grant_types_supported,
            response_types_supported: d.response_types_supported,
            subject_types_supported: d.subject_types_supported,
            id_token_signing_alg_values_supported: d.id_token_signing_alg_values_supported,
            code_challenge_methods_supported: d.code_challenge_methods_supported,
            scopes_supported: d.scopes_supported,
            token_endpoint_auth_methods_supported: d.token_endpoint_auth_methods_supported,
            claims_supported: d.claims_supported,
        }))
    }

    /// One entry per live refresh-token family of the user (each login with `offline_access` starts one):
    /// `id` is the family id, stable across rotations; `created_at` is the login, `last_used` the last
    /// exchange.
    async fn list_refresh(&self, r: Request<api::ListRefreshReq>) -> Result<Response<api::ListRefreshResp>, Status> {
        let sub = r.into_inner().user_id;
        if sub.is_empty() {
            return Err(invalid("no user_id supplied"));
        }
        let refresh_tokens = (self.families(&sub).await?.into_iter())
            .map(|f| api::RefreshTokenRef {
                id: f.id,
                client_id: f.client_id,
                created_at: f.created_at,
                last_used: f.last_used,
            })
            .collect();
        Ok(Response::new(api::ListRefreshResp { refresh_tokens }))
    }

    /// Revokes every refresh-token family the user holds for the client (Dex keeps one per client; here
    /// each login has its own, and all of them go).
    async fn revoke_refresh(
        &self,
        r: Request<api::RevokeRefreshReq>,
    ) -> Result<Response<api::RevokeRefreshResp>, Status> {
        let peer = peer(&r);
        let req = r.into_inner();
        if req.user_id.is_empty() || req.client_id.is_empty() {
            return Err(invalid("user_id and client_id are required"));
        }
        let mut revoked = 0_u64;
        for f in self.families(&req.user_id).await?.into_iter().filter(|f| f.client_id == req.client_id) {
            let n = self.state.storage.delete_refresh_family(&f.id).await.map_err(storage_status)?;
            if n > 0 {
                crate::metrics::Metrics::count(&self.state.metrics.revocations, "api");
                tracing::info!(target: "audit", event = "revocation", cause = "api", via = "grpc", family = %f.id, tokens = n, sub = %req.user_id, client = %req.client_id, peer);
                revoked += 1;
            }
        }
        Ok(Response::new(api::RevokeRefreshResp { not_found: revoked == 0 }))
    }

    async fn verify_password(
        &self,
        r: Request<api::VerifyPasswordReq>,
    ) -> Result<Response<api::VerifyPasswordResp>, Status> {
        let req = r.into_inner();
        if req.email.is_empty() {
            return Err(invalid("no email supplied"));
        }
        if req.password.is_empty() {
            return Err(invalid("no password to verify supplied"));
        }
        let hash = match self.static_password(&req.email) {
            Some(p) => p.hash.clone(),
            None => match self.state.storage.get_password(&req.email).await {
                Ok(p) => p.hash,
                Err(StorageError::NotFound) => {
                    return Ok(Response::new(api::VerifyPasswordResp { verified: false, not_found: true }))
                }
                Err(e) => return Err(storage_status(e)),
            },
        };
        // bcrypt takes tens of milliseconds by design: keep it off the async workers.
        let verified = tokio::task::spawn_blocking(move || bcrypt::verify(req.password, &hash).unwrap_or(false))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(api::VerifyPasswordResp { verified, not_found: false }))
    }
}

fn connectors_are_static() -> Status {
    Status::unimplemented(
        "connectors come from the configuration file (connectors:) and cannot be changed through the API",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_decode_to_the_pairs_they_may_stand_for() {
        let local = |id: &str| ("local".to_owned(), id.to_owned());
        assert_eq!(subject_candidates("42"), vec![local("42")]);
        let dex = crate::connector::dex_subject("0-385-28089-0", "local");
        assert_eq!(subject_candidates(&dex), vec![local(&dex), local("0-385-28089-0")]);
        let ldap = crate::connector::dex_subject("uid=jane", "ldap");
        assert_eq!(subject_candidates(&ldap)[1], ("ldap".to_owned(), "uid=jane".to_owned()));
        assert_eq!(subject_candidates("!!not base64").len(), 1);
    }

    #[test]
    fn hashes_must_be_bcrypt_at_an_accepted_cost() {
        let good = crate::connector::local::tests::PASSWORD_HASH;
        assert_eq!(check_hash(good.as_bytes()).unwrap(), good);
        for bad in [&b"password"[..], b"$2a$04$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W", &[0xff, 0xfe]] {
            let e = check_hash(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e}");
        }
    }

    #[test]
    fn grpc_section_problems_name_their_keys() {
        let parse = |yaml: &str| {
            let raw: RawGrpc = serde_yaml::from_str(yaml).unwrap();
            let mut problems = Vec::new();
            let config = raw.validate(&mut |k, e| problems.push(format!("{k}: {e}")));
            (config, problems)
        };
        let (c, p) = parse("addr: 127.0.0.1:5557\nreflection: true\n");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            c,
            Some(GrpcConfig { addr: "127.0.0.1:5557".parse().unwrap(), tls: None, client_ca: None, reflection: true })
        );
        let (c, p) = parse("addr: nowhere\ntlsCert: /nonexistent.pem\ntlsClientCA: /ca.pem\ntlsMinVersion: '1.3'\n");
        assert!(c.is_none());
        let keys: Vec<&str> = p.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            ["grpc.addr", "grpc.tlsCert", "grpc.tlsClientCA", "grpc.tlsCert", "grpc.tlsClientCA", "grpc.tlsMinVersion"],
            "{p:#?}"
        );
    }
}
