//! What every handler shares: configuration, storage, keys, connectors, metrics and the clock.

use std::borrow::Cow;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{Client, Config, StorageConfig};
use crate::connector::{BuildError, Connectors};
use crate::keyring::{Keyring, KeyringError, Loaded};
use crate::metrics::Metrics;
use crate::storage::{memory::Memory, postgres::Postgres, sqlite::Sqlite, Storage, StorageError};

/// Name of the stored secret that keys refresh-token derivation.
const SERVER_KEY: &str = "refresh-token-key";

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The contents of `AppState`.
pub struct Inner {
    /// Validated configuration.
    pub config: Config,
    /// The backend.
    pub storage: Arc<dyn Storage>,
    /// The connectors (the password database first when enabled).
    pub connectors: Connectors,
    /// Signing keys.
    pub keyring: Keyring,
    /// Keys refresh-token successor derivation (shared by replicas through storage).
    pub server_key: Vec<u8>,
    /// Time.
    pub clock: Clock,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The discovery document, rendered once.
    pub discovery: Vec<u8>,
    /// The theme and static files, and what every page shows around its content (`frontend:`).
    pub site: crate::frontend::Site,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Storage could not be opened or read.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Keys could not be loaded or generated.
    #[error("signing keys: {0}")]
    Keys(#[from] KeyringError),
    /// A connector could not be set up (a CA file that is not a certificate, ...).
    #[error(transparent)]
    Connector(#[from] BuildError),
    /// `frontend.dir` could not be read.
    #[error(transparent)]
    Frontend(#[from] crate::frontend::FrontendError),
}

/// Opens the configured backend.
pub async fn open_storage(config: &Config) -> Result<Arc<dyn Storage>, StorageError> {
    Ok(match &config.storage {
        StorageConfig::Memory => Arc::new(Memory::new()),
        StorageConfig::Sqlite { file } => Arc::new(Sqlite::open(file).await?),
        StorageConfig::Postgres(pg) => Arc::new(Postgres::open(pg).await?),
    })
}

impl AppState {
    /// Builds the state and makes sure signing keys exist.
    pub async fn new(config: Config, storage: Arc<dyn Storage>, clock: Clock) -> Result<Self, StateError> {
        let candidate: [u8; 32] = rand::random();
        let server_key = storage.get_or_create_secret(SERVER_KEY, candidate.to_vec()).await?;
        let discovery = crate::http::discovery::document(&config);
        let site = crate::frontend::Site::load(&config)?;
        let state = AppState(Arc::new(Inner {
            connectors: Connectors::new(&config, storage.clone())?,
            config,
            storage,
            keyring: Keyring::default(),
            server_key,
            clock,
            metrics: Metrics::default(),
            discovery,
            site,
        }));
        state.keys().await?;
        Ok(state)
    }

    /// The current key set.
    pub async fn keys(&self) -> Result<Arc<Loaded>, KeyringError> {
        self.keyring.get(&self.config, self.storage.as_ref(), self.clock.now()).await
    }
}

impl AppState {
    /// The client registered as `id`: a static client (`staticClients`) first, then one created through
    /// the gRPC API. Stored clients are read from storage on every call, so a client created, changed or
    /// deleted on one replica takes effect at once on all of them. `Err` only when storage fails.
    pub async fn client(&self, id: &str) -> Result<Option<Cow<'_, Client>>, StorageError> {
        if let Some(c) = self.config.client(id) {
            return Ok(Some(Cow::Borrowed(c)));
        }
        match self.storage.get_client(id).await {
            Ok(c) => Ok(Some(Cow::Owned(stored_client(c)))),
            Err(StorageError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The existing clients that the cross-client scopes (`audience:server:client_id:<peer>`) in `scope`
    /// name, for [`crate::token::parse_scopes`].
    pub async fn scope_peers(&self, scope: &str) -> Result<Vec<Cow<'_, Client>>, StorageError> {
        let mut peers = Vec::new();
        for peer in scope.split(' ').filter_map(|s| s.strip_prefix(crate::token::CROSS_CLIENT_PREFIX)) {
            if let Some(c) = self.client(peer).await? {
                peers.push(c);
            }
        }
        Ok(peers)
    }
}

/// A stored client as the HTTP layer uses clients: an empty secret means none; no login policy (the API
/// has no `allowedEmails` and the like); plain PKCE refused; SSO sharing by `sessions.ssoSharedWithDefault`.
pub fn stored_client(c: crate::storage::Client) -> Client {
    Client {
        secret: Some(c.secret).filter(|s| !s.is_empty() && !c.public),
        public: c.public,
        name: if c.name.is_empty() { c.id.clone() } else { c.name },
        id: c.id,
        redirect_uris: c.redirect_uris,
        trusted_peers: c.trusted_peers,
        post_logout_redirect_uris: c.post_logout_redirect_uris,
        allow_plain_pkce: false,
        allowed_connectors: c.allowed_connectors,
        policy: crate::connector::Policy::default(),
        // Shown only when it is a safe image reference (the API accepts any string).
        logo_url: Some(c.logo_url).filter(|l| !l.is_empty() && crate::frontend::check_image_url(l).is_ok()),
        // Empty: `sessions.ssoSharedWithDefault` applies.
        sso_shared_with: Some(c.sso_shared_with).filter(|s| !s.is_empty()),
        backchannel_logout_uri: Some(c.backchannel_logout_uri).filter(|u| !u.is_empty()),
        backchannel_logout_session_required: false,
    }
}
