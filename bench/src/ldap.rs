//! The `ldap` connector against a real OpenLDAP `slapd` (issue 10): logins per second through the
//! connector (user search, bind as the user, group search, on its shared service connection and pooled
//! bind connections) next to the bare bind rate of the same slapd (one simple bind per login, each client
//! on its own connection: what a login cannot beat, since it contains that bind), and the latency of a
//! refresh (the user searched again and the groups re-read). Both loads run with the same concurrency on
//! the same one-thread client runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::issuer::connector::ldap::{Config, Ldap};
use ::issuer::connector::{PasswordConnector, RefreshConnector};
use serde::{Deserialize, Serialize};

use crate::stats::Summary;

#[path = "../../issuer/tests/common/slapd.rs"]
mod slapd;

const USERS: usize = 200;
const PASSWORD: &str = "bench-password";

/// What the LDAP part measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct LdapResult {
    /// Users in the directory (each in two groups).
    pub(crate) users: usize,
    /// Concurrent clients of each load.
    pub(crate) concurrency: usize,
    /// Measured seconds per load.
    pub(crate) seconds: f64,
    /// Simple binds per second, each client on its own connection.
    pub(crate) bare_binds_per_sec: f64,
    /// Successful connector logins per second.
    pub(crate) connector_logins_per_sec: f64,
    /// Connector refreshes, one at a time.
    pub(crate) refresh: Summary,
    /// The slapd version line.
    pub(crate) slapd: String,
}

pub(crate) async fn measure(quick: bool, concurrency: usize) -> anyhow::Result<LdapResult> {
    let directory = slapd::Slapd::start().await;
    let everyone: Vec<String> = {
        let mut dns = Vec::with_capacity(USERS);
        for i in 0..USERS {
            dns.push(
                directory
                    .add_user(&format!("user{i}"), &format!("user{i}@example.org"), &format!("User {i}"), PASSWORD)
                    .await,
            );
        }
        dns
    };
    let members: Vec<&str> = everyone.iter().map(String::as_str).collect();
    directory.add_group("everyone", &members).await;
    for (team, chunk) in members.chunks(20).enumerate() {
        directory.add_group(&format!("team{team}"), chunk).await;
    }
    let seconds = if quick { 2.0 } else { 10.0 };
    let window = Duration::from_secs_f64(seconds);

    let url = format!("ldap://{}", directory.ldap);
    let bare = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let (url, bare, dns) = (url.clone(), bare.clone(), everyone.clone());
        tasks.push(tokio::spawn(async move {
            let (conn, mut l) = ldap3::LdapConnAsync::new(&url).await?;
            ldap3::drive!(conn);
            let mut i = c;
            while Instant::now() < deadline {
                l.simple_bind(&dns[i % USERS], PASSWORD).await?.success()?;
                bare.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += concurrency;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let bare_binds_per_sec = bare.load(std::sync::atomic::Ordering::Relaxed) as f64 / seconds;

    let yaml = format!(
        "host: {}\ninsecureNoSSL: true\nbindDN: {}\nbindPW: {}\nuserSearch: {{baseDN: 'ou=people,{s}', username: uid, idAttr: uid, emailAttr: mail, nameAttr: cn}}\ngroupSearch: {{baseDN: 'ou=groups,{s}', userMatchers: [{{userAttr: DN, groupAttr: member}}], nameAttr: cn}}\n",
        directory.ldap,
        slapd::SERVICE_DN,
        slapd::SERVICE_PW,
        s = slapd::SUFFIX
    );
    let config: Config = serde_yaml::from_str(&yaml)?;
    let connector = Arc::new(Ldap::new("ldap", config).map_err(anyhow::Error::msg)?);
    // Warm: the service connection is dialled and bound once.
    connector.login("user0", PASSWORD).await?.ok_or_else(|| anyhow::anyhow!("user0 cannot sign in"))?;
    let logins = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let (connector, logins) = (connector.clone(), logins.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while Instant::now() < deadline {
                let id = connector.login(&format!("user{}", i % USERS), PASSWORD).await?;
                anyhow::ensure!(id.is_some_and(|id| id.groups.len() == 2), "a login without its two groups");
                logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += concurrency;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let connector_logins_per_sec = logins.load(std::sync::atomic::Ordering::Relaxed) as f64 / seconds;

    let identity = connector.login("user1", PASSWORD).await?.ok_or_else(|| anyhow::anyhow!("user1 cannot sign in"))?;
    let mut samples = Vec::new();
    for _ in 0..if quick { 200 } else { 2_000 } {
        let started = Instant::now();
        connector.refresh(&identity).await?.ok_or_else(|| anyhow::anyhow!("user1 is gone"))?;
        samples.push(started.elapsed());
    }
    let slapd = std::process::Command::new("/usr/sbin/slapd")
        .arg("-VV")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    Ok(LdapResult {
        users: USERS,
        concurrency,
        seconds,
        bare_binds_per_sec,
        connector_logins_per_sec,
        refresh: Summary::of(&mut samples),
        slapd,
    })
}
