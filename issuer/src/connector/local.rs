//! The password database, checked with bcrypt: the users of the configuration (`staticPasswords`), then
//! the users created through the gRPC API (storage), found by email. A static user shadows a stored one
//! with the same email. Refresh re-reads the user: a deleted stored user (or one whose email now belongs
//! to another user id) can no longer refresh.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ConnectorError, PasswordConnector, RefreshConnector};
use crate::config::StaticPassword;
use crate::storage::{Identity, Password, Storage, StorageError};

/// Connector id recorded in tokens.
pub const CONNECTOR_ID: &str = "local";

/// `staticPasswords` and the stored passwords as a connector.
pub struct StaticPasswords {
    users: Vec<StaticPassword>,
    storage: Arc<dyn Storage>,
    /// Hash of a random password at the users' cost, checked for unknown users so that a login for a
    /// missing user costs as much as one for a real user.
    dummy_hash: String,
}

impl StaticPasswords {
    /// Wraps the configured users and the ones in `storage`.
    pub fn new(users: Vec<StaticPassword>, storage: Arc<dyn Storage>) -> Self {
        let cost =
            users.first().and_then(|u| u.hash.get(4..6)).and_then(|c| c.parse().ok()).unwrap_or(bcrypt::DEFAULT_COST);
        let random: [u8; 16] = rand::random();
        let dummy_hash = bcrypt::hash(random, cost).unwrap_or_default();
        Self { users, storage, dummy_hash }
    }

    fn find(&self, login: &str) -> Option<&StaticPassword> {
        self.users.iter().find(|u| u.email.eq_ignore_ascii_case(login) || u.username.eq_ignore_ascii_case(login))
    }

    fn identity(u: &StaticPassword) -> Identity {
        Identity {
            user_id: u.user_id.clone(),
            username: u.name.clone(),
            email: u.email.clone(),
            email_verified: u.email_verified,
            groups: u.groups.clone(),
            connector_id: CONNECTOR_ID.to_owned(),
            preferred_username: u.preferred_username.clone(),
            connector_data: None,
        }
    }

    /// A stored user, as a static one (stored users have no groups: Dex's API has none).
    fn from_storage(p: Password) -> StaticPassword {
        StaticPassword {
            email: p.email,
            hash: p.hash,
            name: p.username.clone(),
            preferred_username: p.username.clone(),
            email_verified: true,
            username: p.username,
            user_id: p.user_id,
            groups: vec![],
        }
    }

    /// The user `login` names: a static user by email or username, else a stored user by email.
    async fn lookup(&self, login: &str) -> Result<Option<StaticPassword>, ConnectorError> {
        if let Some(u) = self.find(login) {
            return Ok(Some(u.clone()));
        }
        match self.storage.get_password(login).await {
            Ok(p) => Ok(Some(Self::from_storage(p))),
            Err(StorageError::NotFound) => Ok(None),
            Err(e) => Err(ConnectorError::Unavailable(format!("password database: {e}"))),
        }
    }
}

#[async_trait]
impl PasswordConnector for StaticPasswords {
    async fn login(&self, login: &str, password: &str) -> Result<Option<Identity>, ConnectorError> {
        let user = self.lookup(login.trim()).await?;
        let hash = user.as_ref().map_or(self.dummy_hash.as_str(), |u| u.hash.as_str()).to_owned();
        let password = password.to_owned();
        // bcrypt takes tens of milliseconds by design: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .map_err(|e| ConnectorError::Unavailable(e.to_string()))?;
        Ok(match user {
            Some(u) if ok => Some(Self::identity(&u)),
            _ => None,
        })
    }

    fn prompt(&self) -> &str {
        "Email address"
    }
}

#[async_trait]
impl RefreshConnector for StaticPasswords {
    async fn refresh(&self, identity: &Identity) -> Result<Option<Identity>, ConnectorError> {
        if let Some(u) = self.users.iter().find(|u| u.user_id == identity.user_id) {
            return Ok(Some(Self::identity(u)));
        }
        match self.storage.get_password(&identity.email).await {
            Ok(p) if p.user_id == identity.user_id => Ok(Some(Self::identity(&Self::from_storage(p)))),
            Ok(_) | Err(StorageError::NotFound) => Ok(None),
            Err(e) => Err(ConnectorError::Unavailable(format!("password database: {e}"))),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// bcrypt("password"), as in `examples/dev.yaml`.
    pub(crate) const PASSWORD_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

    fn users() -> StaticPasswords {
        users_with(Arc::new(crate::storage::memory::Memory::new()))
    }

    fn users_with(storage: Arc<dyn Storage>) -> StaticPasswords {
        StaticPasswords::new(
            vec![StaticPassword {
                email: "Jane@Example.com".into(),
                hash: PASSWORD_HASH.into(),
                username: "jane".into(),
                name: "Jane Doe".into(),
                preferred_username: "jdoe".into(),
                email_verified: false,
                user_id: "42".into(),
                groups: vec!["developers".into()],
            }],
            storage,
        )
    }

    #[tokio::test]
    async fn right_password_gives_identity_and_login_is_case_insensitive() {
        let id = users().login("jane@example.COM", "password").await.unwrap().unwrap();
        assert_eq!((id.user_id.as_str(), id.groups.len()), ("42", 1));
        assert_eq!(
            (id.username.as_str(), id.preferred_username.as_str(), id.email_verified),
            ("Jane Doe", "jdoe", false)
        );
        assert!(users().login("jane", "password").await.unwrap().is_some(), "the username signs in too");
        assert!(users().login("jane@example.com", "Password").await.unwrap().is_none());
        assert!(users().login("nobody@example.com", "password").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn stored_users_log_in_by_email_and_refresh_until_deleted() {
        let storage: Arc<dyn Storage> = Arc::new(crate::storage::memory::Memory::new());
        let stored = |email: &str, user_id: &str| Password {
            email: email.into(),
            hash: PASSWORD_HASH.into(),
            username: "joe".into(),
            user_id: user_id.into(),
        };
        storage.create_password(stored("Joe@Example.com", "7")).await.unwrap();
        // Shadowed by the static user with the same email.
        storage.create_password(stored("jane@example.com", "99")).await.unwrap();
        let u = users_with(storage.clone());
        let joe = u.login("joe@example.com", "password").await.unwrap().unwrap();
        assert_eq!((joe.user_id.as_str(), joe.email.as_str(), joe.groups.len()), ("7", "Joe@Example.com", 0));
        assert!(u.login("joe@example.com", "wrong").await.unwrap().is_none());
        assert!(u.login("joe", "password").await.unwrap().is_none(), "stored users log in by email only");
        assert_eq!(u.login("jane@example.com", "password").await.unwrap().unwrap().user_id, "42");
        assert_eq!(u.refresh(&joe).await.unwrap().map(|i| i.user_id), Some("7".into()));
        storage.delete_password("joe@example.com").await.unwrap();
        storage.create_password(stored("joe@example.com", "8")).await.unwrap();
        assert!(u.refresh(&joe).await.unwrap().is_none(), "the email now belongs to another user id");
        storage.delete_password("joe@example.com").await.unwrap();
        assert!(u.refresh(&joe).await.unwrap().is_none(), "a deleted user cannot refresh");
    }

    #[test]
    fn unknown_users_cost_a_full_bcrypt_verify_at_the_users_cost() {
        let u = users();
        assert!(u.dummy_hash.starts_with("$2b$10$"), "{}", u.dummy_hash);
        assert_eq!(bcrypt::verify("x", &u.dummy_hash).ok(), Some(false));
    }
}
