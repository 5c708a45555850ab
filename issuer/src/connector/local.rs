//! The password database from the configuration (`staticPasswords`), checked with bcrypt.

use async_trait::async_trait;

use super::{ConnectorError, PasswordConnector, RefreshConnector};
use crate::config::StaticPassword;
use crate::storage::Identity;

/// Connector id recorded in tokens.
pub const CONNECTOR_ID: &str = "local";

/// `staticPasswords` as a connector.
pub struct StaticPasswords {
    users: Vec<StaticPassword>,
    /// Hash of a random password at the users' cost, checked for unknown users so that a login for a
    /// missing user costs as much as one for a real user.
    dummy_hash: String,
}

impl StaticPasswords {
    /// Wraps the configured users.
    pub fn new(users: Vec<StaticPassword>) -> Self {
        let cost =
            users.first().and_then(|u| u.hash.get(4..6)).and_then(|c| c.parse().ok()).unwrap_or(bcrypt::DEFAULT_COST);
        let random: [u8; 16] = rand::random();
        let dummy_hash = bcrypt::hash(random, cost).unwrap_or_default();
        Self { users, dummy_hash }
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
}

#[async_trait]
impl PasswordConnector for StaticPasswords {
    async fn login(&self, login: &str, password: &str) -> Result<Option<Identity>, ConnectorError> {
        let user = self.find(login.trim());
        let hash = user.map_or(self.dummy_hash.as_str(), |u| u.hash.as_str()).to_owned();
        let password = password.to_owned();
        // bcrypt takes tens of milliseconds by design: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .map_err(|e| ConnectorError::Unavailable(e.to_string()))?;
        Ok(match user {
            Some(u) if ok => Some(Self::identity(u)),
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
        Ok(self.users.iter().find(|u| u.user_id == identity.user_id).map(Self::identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bcrypt("password"), as in `examples/dev.yaml`.
    pub(crate) const PASSWORD_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

    fn users() -> StaticPasswords {
        StaticPasswords::new(vec![StaticPassword {
            email: "Jane@Example.com".into(),
            hash: PASSWORD_HASH.into(),
            username: "jane".into(),
            name: "Jane Doe".into(),
            preferred_username: "jdoe".into(),
            email_verified: false,
            user_id: "42".into(),
            groups: vec!["developers".into()],
        }])
    }

    #[tokio::test]
    async fn right_password_gives_identity_and_login_is_case_insensitive() {
        let id = users().login("jane@example.COM", "password").await.unwrap().unwrap();
        assert_eq!((id.user_id.as_str(), id.groups.len()), ("42", 1));
        assert_eq!((id.username.as_str(), id.preferred_username.as_str(), id.email_verified), ("Jane Doe", "jdoe", false));
        assert!(users().login("jane", "password").await.unwrap().is_some(), "the username signs in too");
        assert!(users().login("jane@example.com", "Password").await.unwrap().is_none());
        assert!(users().login("nobody@example.com", "password").await.unwrap().is_none());
    }

    #[test]
    fn unknown_users_cost_a_full_bcrypt_verify_at_the_users_cost() {
        let u = users();
        assert!(u.dummy_hash.starts_with("$2b$10$"), "{}", u.dummy_hash);
        assert_eq!(bcrypt::verify("x", &u.dummy_hash).ok(), Some(false));
    }
}
