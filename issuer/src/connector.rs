//! Connectors: where identities come from. Narrow capability traits, as in Dex: a connector that checks
//! passwords implements `PasswordConnector`; one that can re-read a user at refresh implements
//! `RefreshConnector`. The built-in password database (`staticPasswords`) is `local::StaticPasswords`.

use async_trait::async_trait;

use crate::storage::Identity;

pub mod local;

/// Connector failures (not a wrong password: that is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The backend could not answer.
    #[error("connector unavailable: {0}")]
    Unavailable(String),
}

/// Checks a login name and password.
#[async_trait]
pub trait PasswordConnector: Send + Sync {
    /// The identity for `login`/`password`, or `None` if they do not match.
    async fn login(&self, login: &str, password: &str) -> Result<Option<Identity>, ConnectorError>;
    /// What the login field is called on the form.
    fn prompt(&self) -> &str;
}

/// Re-reads a user at refresh, so group changes reach new tokens.
#[async_trait]
pub trait RefreshConnector: Send + Sync {
    /// The user's current identity, or `None` if the user no longer exists.
    async fn refresh(&self, identity: &Identity) -> Result<Option<Identity>, ConnectorError>;
}
