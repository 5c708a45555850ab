//! Drop-in compatibility with Dex's configuration file: a `config.yaml` written the way Dex's documentation
//! writes one loads unchanged, and a file with ten different mistakes gets all ten problems in one run,
//! each with its line.

use std::path::Path;
use std::time::Duration;

use issuer::config::{Config, ConfigError, GrantType, LogFormat, StorageConfig};

const FIXTURE: &str = include_str!("fixtures/dex-config.yaml");

/// The TLS and CA files the configuration names, and an empty `frontend.dir`.
fn files(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["dex.example.com".into()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("tls.crt", cert.pem()),
        ("tls.key", key.serialize_pem()),
        ("client.pem", cert.pem()),
        ("client-key.pem", key.serialize_pem()),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    std::fs::create_dir_all(dir.join("web")).unwrap();
}

fn env(name: &str) -> Option<String> {
    Some(
        match name {
            "DEX_POSTGRES_PASSWORD" => "pg-secret",
            "CONSOLE_CLIENT_ID" => "console",
            "CONSOLE_CLIENT_SECRET" => "console-secret",
            "LDAP_BIND_PASSWORD" => "ldap-secret",
            "KEYCLOAK_CLIENT_SECRET" => "kc-secret",
            "GITHUB_CLIENT_ID" => "gh-id",
            "GITHUB_CLIENT_SECRET" => "gh-secret",
            "CI_PASSWORD_HASH" => "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W",
            _ => return None,
        }
        .to_owned(),
    )
}

fn text(dir: &Path) -> String {
    FIXTURE.replace("@DIR@", &dir.display().to_string())
}

#[test]
fn a_dex_config_written_from_dex_documentation_loads_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    files(dir.path());
    let c = Config::parse("config.yaml", &text(dir.path()), &env).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(c.issuer.as_str(), "https://dex.example.com:5554/dex");
    let StorageConfig::Postgres(pg) = &c.storage else { panic!("postgres storage") };
    assert_eq!((pg.host.as_str(), pg.port, pg.password.as_deref()), ("db.example.com", 5432, Some("pg-secret")));
    assert_eq!((pg.max_open_conns, pg.connection_timeout), (10, Some(Duration::from_secs(5))));
    assert_eq!(pg.conn_max_lifetime, Some(Duration::from_secs(300)));
    assert!(pg.ssl_cert_file.is_some() && pg.ssl_key_file.is_some());
    assert_eq!(c.web.headers.len(), 5);
    assert_eq!(c.web.tls_min_version.as_deref(), Some("1.2"));
    assert_eq!(c.web.proxies.len(), 2);
    assert_eq!(c.telemetry.http.as_deref(), Some("0.0.0.0:5558"));
    assert!(c.grpc.is_some());
    assert_eq!(c.frontend.issuer, "Example Corp");
    assert_eq!(c.expiry.signing_keys, Duration::from_secs(6 * 3600), "signer.config.keysRotationPeriod");
    assert_eq!(c.expiry.refresh_tokens.reuse_interval, Duration::from_secs(3));
    assert_eq!((c.logger.format, c.logger.exclude_fields.as_slice()), (LogFormat::Json, &["ip".to_owned()][..]));
    assert_eq!(c.oauth2.grant_types.len(), 7);
    assert!(c.oauth2.allows(GrantType::TokenExchange) && c.oauth2.allows(GrantType::ClientCredentials));
    assert_eq!(c.oauth2.response_types, ["code", "token", "id_token"]);
    assert_eq!(c.oauth2.password_connector.as_deref(), Some("local"));
    let ids: Vec<&str> = c.static_clients.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["example-app", "console", "kubelogin"], "idEnv resolved");
    assert_eq!(c.static_clients[1].secret.as_deref(), Some("console-secret"));
    assert_eq!(c.connectors.len(), 3);
    let admin = &c.static_passwords[0];
    assert_eq!(
        (admin.name.as_str(), admin.preferred_username.as_str(), admin.email_verified),
        ("Admin Istrator", "admin", true)
    );
    assert_eq!(c.static_passwords.len(), 2, "hashFromEnv");
    assert_eq!(c.subject_format, issuer::connector::SubjectFormat::Dex, "Dex's subjects by default");

    // The one key accepted without Dex's exact effect is named, with its line.
    let warnings: Vec<String> = c.warnings.iter().map(|w| w.located("config.yaml")).collect();
    let line = FIXTURE.lines().position(|l| l.contains("maxIdleConns")).unwrap() + 1;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with(&format!("config.yaml:{line}: storage.config.maxIdleConns: ")), "{warnings:?}");
}

#[test]
fn ten_different_mistakes_are_ten_problems_in_one_run_each_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    files(dir.path());
    let mistakes: [(&str, &str, &str); 10] = [
        ("issuer: https://dex.example.com:5554/dex", "issuer: dex.example.com", "issuer"),
        ("    port: 5432", "    port: five", "storage.config.port"),
        ("  tlsMinVersion: \"1.2\"", "  tlsMinVersion: \"1.0\"", "web.tlsMinVersion"),
        ("      - 192.168.0.1", "      - 192.168.0.300", "web.clientRemoteIP.trustedProxies[1]"),
        ("  idTokens: \"24h\"", "  idTokens: \"tomorrow\"", "expiry.idTokens"),
        ("  format: \"json\"", "  format: \"xml\"", "logger.format"),
        ("    - \"client_credentials\"", "    - \"client_credential\"", "oauth2.grantTypes[6]"),
        ("    enforce: false", "    enforce: \"yes please\"", "oauth2.pkce.enforce"),
        (
            "        filter: \"(objectClass=person)\"",
            "        fliter: \"(objectClass=person)\"",
            "connectors[0].config.userSearch.fliter",
        ),
        ("    userID: \"ci-bot\"", "    userId: \"ci-bot\"", "staticPasswords[1].userId"),
    ];
    let mut broken = text(dir.path());
    for (good, bad, _) in &mistakes {
        assert_eq!(broken.matches(good).count(), 1, "{good}");
        broken = broken.replace(good, bad);
    }
    let Err(ConfigError::Invalid { problems, .. }) = Config::parse("config.yaml", &broken, &env) else {
        panic!("the file must be refused")
    };
    let listed: Vec<String> = problems.iter().map(|p| p.located("config.yaml")).collect();
    // `userId` for `userID` also leaves the user without its required id: that is the same mistake.
    let keys: Vec<&str> =
        problems.iter().map(|p| p.key.as_str()).filter(|k| *k != "staticPasswords[1].userID").collect();
    assert_eq!(keys.len(), 10, "{listed:#?}");
    for (_, bad, key) in &mistakes {
        let line = broken.lines().position(|l| l.contains(bad.trim())).unwrap() + 1;
        let p = problems.iter().find(|p| p.key == *key).unwrap_or_else(|| panic!("{key} missing: {listed:#?}"));
        assert_eq!(p.line, Some(line), "{key}: {listed:#?}");
    }
    let lines: Vec<usize> = problems.iter().filter_map(|p| p.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "in document order: {listed:#?}");
}
