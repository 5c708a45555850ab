//! Who may sign in: `allowedEmails`, `allowedEmailDomains`, `allowedGroups` and `groupsPrefix`, per connector
//! (inside its `config:`) and per client. Plain functions over [`Identity`], applied in one place after
//! every login and after every upstream refresh (`http::connector_login`, `grant::refresh_token`), so a
//! user who leaves an allowed group loses access at the next refresh.
//!
//! Order: the connector's `groupsPrefix` is added to every upstream group first, so one provider cannot
//! mint another's group names; then the connector's policy, then the client's. Both `allowedGroups` lists
//! name groups as clients see them (with the prefix).

use crate::config::Client;
use crate::connector::Connector;
use crate::storage::Identity;

/// One set of rules. Empty lists allow everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Exact addresses, compared case-insensitively.
    pub allowed_emails: Vec<String>,
    /// Domains, compared case-insensitively with what follows the last `@` of the address.
    pub allowed_email_domains: Vec<String>,
    /// Groups: the user's groups are cut to these, and a user with none of them is refused.
    pub allowed_groups: Vec<String>,
    /// Prepended to every group the connector reports (connector policies only).
    pub groups_prefix: String,
}

/// Why a policy refused a user; shown on the 403 page and written to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The address is not in `allowedEmails` or `allowedEmailDomains`.
    #[error("the email address {0:?} is not allowed")]
    Email(String),
    /// The user is in none of `allowedGroups`.
    #[error("not a member of any allowed group ({0})")]
    Groups(String),
    /// An email policy is set but the upstream did not vouch for the address.
    #[error("the email address {0:?} is not verified by the provider")]
    Unverified(String),
}

impl Policy {
    /// A policy from its keys; emails and domains are kept lower-case.
    pub fn new(emails: Vec<String>, domains: Vec<String>, groups: Vec<String>, groups_prefix: String) -> Self {
        Self {
            allowed_emails: emails.into_iter().map(|e| e.trim().to_lowercase()).collect(),
            allowed_email_domains: domains
                .into_iter()
                .map(|d| d.trim().trim_start_matches('@').to_lowercase())
                .collect(),
            allowed_groups: groups,
            groups_prefix,
        }
    }

    /// Applies the connector's prefix and rules to what the connector reported.
    pub fn apply_connector(&self, mut identity: Identity) -> Result<Identity, PolicyError> {
        if !self.groups_prefix.is_empty() {
            for g in &mut identity.groups {
                g.insert_str(0, &self.groups_prefix);
            }
        }
        self.check(identity)
    }

    /// Applies the rules (not the prefix): emails, then groups (cut to the allowed ones).
    pub fn check(&self, mut identity: Identity) -> Result<Identity, PolicyError> {
        if !self.allowed_emails.is_empty() || !self.allowed_email_domains.is_empty() {
            let email = identity.email.to_lowercase();
            let domain = email.rsplit_once('@').map(|(_, d)| d);
            let listed = self.allowed_emails.contains(&email)
                || domain.is_some_and(|d| self.allowed_email_domains.iter().any(|a| a == d));
            if !listed {
                return Err(PolicyError::Email(identity.email));
            }
            // An unverified address proves nothing about who the user is.
            if !identity.email_verified {
                return Err(PolicyError::Unverified(identity.email));
            }
        }
        if !self.allowed_groups.is_empty() {
            identity.groups.retain(|g| self.allowed_groups.contains(g));
            if identity.groups.is_empty() {
                return Err(PolicyError::Groups(self.allowed_groups.join(", ")));
            }
        }
        Ok(identity)
    }
}

/// Applies `connector`'s prefix and policy, then `client`'s policy, to what the connector reported: the
/// identity to put in tokens, or why the user is refused ("<connector name>: <reason>").
pub fn admit(connector: &Connector, client: Option<&Client>, identity: Identity) -> Result<Identity, String> {
    let identity = connector.policy.apply_connector(identity).map_err(|e| format!("{}: {e}", connector.name))?;
    match client {
        Some(c) => c.policy.check(identity).map_err(|e| format!("{}: {e}", c.name)),
        None => Ok(identity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: &str, groups: &[&str]) -> Identity {
        Identity {
            user_id: "u".into(),
            username: "U".into(),
            email: email.into(),
            email_verified: true,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            connector_id: "c".into(),
            preferred_username: String::new(),
            connector_data: None,
        }
    }

    fn policy(emails: &[&str], domains: &[&str], groups: &[&str], prefix: &str) -> Policy {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Policy::new(v(emails), v(domains), v(groups), prefix.into())
    }

    #[test]
    fn policies_decide_as_the_table_says() {
        // (policy, user email, user groups, Ok(groups) or the error's kind)
        type Case<'a> = (Policy, &'a str, &'a [&'a str], Result<&'a [&'a str], &'a str>);
        let cases: &[Case] = &[
            (Policy::default(), "a@x.org", &["g"], Ok(&["g"])),
            (policy(&["A@X.org"], &[], &[], ""), "a@x.ORG", &[], Ok(&[])),
            (policy(&["a@x.org"], &[], &[], ""), "b@x.org", &[], Err("email")),
            (policy(&[], &["x.org"], &[], ""), "b@X.Org", &[], Ok(&[])),
            (policy(&[], &["@x.org"], &[], ""), "b@x.org", &[], Ok(&[])),
            // Exact domain after the LAST @: no suffix matching, no subdomains.
            (policy(&[], &["x.org"], &[], ""), "b@evil-x.org", &[], Err("email")),
            (policy(&[], &["x.org"], &[], ""), "b@sub.x.org", &[], Err("email")),
            (policy(&[], &["x.org"], &[], ""), "\"b@x.org\"@evil.com", &[], Err("email")),
            (policy(&[], &[], &["dev", "ops"], ""), "a@x.org", &["ops", "sales", "dev"], Ok(&["ops", "dev"])),
            (policy(&[], &[], &["dev"], ""), "a@x.org", &["sales"], Err("groups")),
            (policy(&[], &[], &["dev"], ""), "a@x.org", &[], Err("groups")),
        ];
        for (i, (p, email, groups, want)) in cases.iter().enumerate() {
            let got = p.check(user(email, groups));
            match (want, got) {
                (Ok(w), Ok(id)) => assert_eq!(id.groups, w.to_vec(), "case {i}"),
                (Err("email"), Err(PolicyError::Email(_))) | (Err("groups"), Err(PolicyError::Groups(_))) => {}
                (w, g) => panic!("case {i}: expected {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn the_prefix_comes_first_so_allowed_groups_name_prefixed_groups() {
        let p = policy(&[], &[], &["ldap:dev"], "ldap:");
        assert_eq!(p.apply_connector(user("a@x.org", &["dev", "ops"])).unwrap().groups, vec!["ldap:dev"]);
        assert!(matches!(p.apply_connector(user("a@x.org", &["ldap:ops"])), Err(PolicyError::Groups(_))));
    }

    #[test]
    fn an_email_policy_refuses_unverified_addresses() {
        let mut u = user("a@x.org", &[]);
        u.email_verified = false;
        assert!(matches!(policy(&[], &["x.org"], &[], "").check(u), Err(PolicyError::Unverified(_))));
    }
}
