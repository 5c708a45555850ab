//! What every handler shares: configuration, storage, keys, connectors, metrics and the clock.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{Config, StorageConfig};
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
            connectors: Connectors::new(&config)?,
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
