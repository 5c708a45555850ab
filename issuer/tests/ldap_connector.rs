//! The `ldap` connector against a real OpenLDAP `slapd`: login over plain LDAP, StartTLS and LDAPS with a
//! development CA; groups (nested ones too); usernames with filter metacharacters; two entries for one
//! login; and refresh re-reading the directory (a group removed with a modify, a deleted user, slapd stopped
//! and started again).

mod common;

use common::slapd::{Slapd, SERVICE_DN, SERVICE_PW, SUFFIX};
use common::{claims, query_param, Browser, Issuer, REDIRECT};

const SCOPES: &str = "openid email profile groups offline_access";

/// A `connectors:` list with one `ldap` connector; `transport` is the YAML for host and TLS.
fn connector_yaml(transport: &str) -> String {
    format!(
        r#"connectors:
  - type: ldap
    id: ldap
    name: Corporate LDAP
    config:
      {transport}
      bindDN: {SERVICE_DN}
      bindPW: {SERVICE_PW}
      usernamePrompt: Corporate username
      userSearch:
        baseDN: ou=people,{SUFFIX}
        filter: "(objectClass=inetOrgPerson)"
        username: [uid, mail]
        idAttr: uid
        emailAttr: mail
        nameAttr: cn
        preferredUsernameAttr: uid
      groupSearch:
        baseDN: ou=groups,{SUFFIX}
        filter: "(objectClass=groupOfNames)"
        userMatchers:
          - userAttr: DN
            groupAttr: member
        nameAttr: cn
        nestedGroups: true
"#
    )
}

fn plain(slapd: &Slapd) -> String {
    format!("host: {}\n      insecureNoSSL: true", slapd.ldap)
}

/// Jane in `developers`, which is itself a member of `engineering`.
async fn seed(slapd: &Slapd) -> String {
    let jane = slapd.add_user("jane", "jane@example.org", "Jane Doe", "jane-password").await;
    // groupOfNames needs a member: the service account stays in when Jane leaves.
    let developers = slapd.add_group("developers", &[&jane, SERVICE_DN]).await;
    slapd.add_group("engineering", &[&developers]).await;
    jane
}

/// Signs in through the LDAP form: (status, Location, body).
async fn ldap_login(issuer: &Issuer, login: &str, password: &str) -> (u16, Option<String>, String) {
    let browser = Browser::new();
    let (login_url, req, csrf) = browser.open_login(&issuer.auth_url(SCOPES, "st")).await;
    let page = browser.client.get(&login_url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Corporate username"), "the LDAP form has its own prompt: {page}");
    let action = login_url.split('?').next().unwrap();
    let r = browser
        .client
        .post(action)
        .form(&[
            ("req", req.as_str()),
            ("csrf", &csrf),
            ("connector", "ldap"),
            ("login", login),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
    (status, location, r.text().await.unwrap())
}

/// A full LDAP login and code exchange: the token response.
async fn tokens(issuer: &Issuer, login: &str, password: &str) -> serde_json::Value {
    let (status, location, body) = ldap_login(issuer, login, password).await;
    assert_eq!(status, 303, "{body}");
    let location = location.unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    let (status, body) = issuer.exchange(&query_param(&location, "code").unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn ldap_users_sign_in_over_plain_ldap_starttls_and_ldaps_with_groups_and_dex_subjects() {
    let slapd = Slapd::start().await;
    seed(&slapd).await;
    let ca = slapd.ca_path().display().to_string();
    let transports = [
        ("plain", plain(&slapd)),
        ("starttls", format!("host: {}\n      startTLS: true\n      rootCA: {ca}", slapd.ldap)),
        ("ldaps", format!("host: {}\n      rootCA: {ca}", slapd.ldaps)),
        // A list of hosts: the first refuses connections, the second answers.
        ("hosts", format!("host: ['127.0.0.1:1', '{}']\n      insecureNoSSL: true", slapd.ldap)),
    ];
    for (name, transport) in transports {
        let issuer = Issuer::start_with(&connector_yaml(&transport), |_| {}).await;
        let body = tokens(&issuer, "jane", "jane-password").await;
        let c = claims(body["id_token"].as_str().unwrap());
        assert_eq!(c["email"], "jane@example.org", "{name}");
        assert_eq!(c["email_verified"], true, "{name}");
        assert_eq!(c["name"], "Jane Doe", "{name}");
        assert_eq!(c["preferred_username"], "jane", "{name}");
        let mut groups: Vec<String> = serde_json::from_value(c["groups"].clone()).unwrap();
        groups.sort();
        assert_eq!(groups, vec!["developers", "engineering"], "{name}: direct and nested groups");
        assert_eq!(c["sub"], issuer::connector::dex_subject("jane", "ldap"), "{name}: Dex's subject encoding");
    }
}

#[tokio::test]
async fn wrong_passwords_and_filter_metacharacters_never_sign_in_and_a_strange_username_works() {
    let slapd = Slapd::start().await;
    seed(&slapd).await;
    let odd = r"we*ird(1)\x";
    slapd.add_user(odd, "odd@example.org", "Odd", "odd-password").await;
    let issuer = Issuer::start_with(&connector_yaml(&plain(&slapd)), |_| {}).await;

    let (status, _, body) = ldap_login(&issuer, "jane", "wrong").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Invalid corporate username or password"), "{body}");
    // Escaped once: `*` is a literal, not a wildcard that would match jane's entry.
    for login in ["*", "jan*", "*)(uid=*", "jane)(|(uid=*"] {
        let (status, _, _) = ldap_login(&issuer, login, "jane-password").await;
        assert_eq!(status, 401, "{login:?} must match no entry");
    }
    let body = tokens(&issuer, odd, "odd-password").await;
    assert_eq!(claims(body["id_token"].as_str().unwrap())["preferred_username"], odd);
    // The password is passed exactly as typed: with a trailing space it is another password.
    let (status, _, _) = ldap_login(&issuer, odd, "odd-password ").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn two_entries_for_one_login_and_account_problems_never_sign_in_or_tell_strangers_anything() {
    let slapd = Slapd::start().await;
    slapd.add_user("twin1", "twins@example.org", "Twin One", "pw").await;
    slapd.add_user("twin2", "twins@example.org", "Twin Two", "pw").await;
    // An entry without the emailAttr Dex requires.
    slapd
        .add(
            &format!("uid=nomail,ou=people,{SUFFIX}"),
            &[
                ("objectClass", &["inetOrgPerson"]),
                ("uid", &["nomail"]),
                ("cn", &["No Mail"]),
                ("sn", &["M"]),
                ("userPassword", &["pw"]),
            ],
        )
        .await;
    let issuer = Issuer::start_with(&connector_yaml(&plain(&slapd)), |_| {}).await;
    // Ambiguous: answered like a wrong password (the administrator finds it in the log), never a login.
    let (status, _, body) = ldap_login(&issuer, "twins@example.org", "pw").await;
    assert_eq!(status, 401, "{body}");
    // Each twin can still sign in by its unique uid.
    tokens(&issuer, "twin1", "pw").await;
    // The missing attribute is told only to someone who knows the password.
    let (status, _, _) = ldap_login(&issuer, "nomail", "wrong").await;
    assert_eq!(status, 401);
    let (status, _, body) = ldap_login(&issuer, "nomail", "pw").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("no mail attribute (emailAttr)"), "{body}");
}

#[tokio::test]
async fn email_suffix_uses_the_directory_spelling_of_the_name_not_what_was_typed() {
    let slapd = Slapd::start().await;
    seed(&slapd).await;
    let yaml =
        connector_yaml(&plain(&slapd)).replace("        emailAttr: mail\n", "        emailSuffix: corp.example\n");
    let issuer = Issuer::start_with(&yaml, |_| {}).await;
    for typed in ["JANE", "jane@example.org"] {
        let c = claims(tokens(&issuer, typed, "jane-password").await["id_token"].as_str().unwrap());
        assert_eq!(c["email"], "jane@corp.example", "typed {typed:?}");
    }
}

#[tokio::test]
async fn an_ldaps_server_with_an_untrusted_certificate_is_unavailable_not_a_login_or_a_500() {
    let slapd = Slapd::start().await;
    seed(&slapd).await;
    // No rootCA: the development CA is not among the Mozilla roots.
    let issuer = Issuer::start_with(&connector_yaml(&format!("host: {}", slapd.ldaps)), |_| {}).await;
    let (status, _, body) = ldap_login(&issuer, "jane", "jane-password").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Corporate LDAP did not answer"), "{body}");
}

#[tokio::test]
async fn refresh_rereads_the_directory_survives_an_outage_and_ends_for_a_deleted_user() {
    let mut slapd = Slapd::start().await;
    let jane = seed(&slapd).await;
    let issuer = Issuer::start_with(&connector_yaml(&plain(&slapd)), |_| {}).await;
    let body = tokens(&issuer, "jane", "jane-password").await;
    let rt = body["refresh_token"].as_str().unwrap().to_owned();

    // Jane leaves `developers` (and so `engineering`, which she was in through it).
    slapd.remove_value(&format!("cn=developers,ou=groups,{SUFFIX}"), "member", &jane).await;
    slapd.add_group("support", &[&jane]).await;
    let (status, body) = issuer.refresh(&rt).await;
    assert_eq!(status, 200, "{body}");
    let c = claims(body["id_token"].as_str().unwrap());
    assert_eq!(c["groups"], serde_json::json!(["support"]), "groups re-read at refresh");
    let rt = body["refresh_token"].as_str().unwrap().to_owned();

    // The directory is down: 503 temporarily_unavailable, and the token is not spent.
    slapd.stop();
    let r = common::http()
        .post(issuer.endpoint("/token"))
        .basic_auth(common::CLIENT, Some(common::SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let err: serde_json::Value = r.json().await.unwrap();
    assert_eq!(err["error"], "temporarily_unavailable", "{err}");
    assert_eq!(err["error_description"], "Corporate LDAP cannot be reached; retry later", "says what is away");
    slapd.restart().await;
    let (status, body) = issuer.refresh(&rt).await;
    assert_eq!(status, 200, "the same refresh token works once the directory is back: {body}");
    let rt = body["refresh_token"].as_str().unwrap().to_owned();

    // Deleted: the family ends.
    slapd.delete(&jane).await;
    let (status, body) = issuer.refresh(&rt).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

#[tokio::test]
async fn unknown_ldap_keys_are_errors_naming_the_key_path() {
    let yaml = "connectors:\n  - type: ldap\n    id: ldap\n    config:\n      host: h\n      userSearch: {baseDN: 'dc=x', username: uid, bogus: 1}\n";
    let dir = tempfile::tempdir().unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml");
    let text = format!("{}\n{yaml}", std::fs::read_to_string(path).unwrap())
        .replace("./data/issuer.db", &dir.path().join("db").display().to_string());
    let err = issuer::config::Config::parse("dex.yaml", &text, &|_| None).unwrap_err().to_string();
    assert!(err.contains("dex.yaml"), "{err}");
    assert!(err.contains("connectors[0].config.userSearch.bogus"), "{err}");
}

#[tokio::test]
async fn check_config_probe_binds_reads_the_base_and_reports_tls_and_certificate_expiry() {
    let mut slapd = Slapd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dev = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml")).unwrap();
    let ldaps = format!("host: {}\n      rootCA: {}", slapd.ldaps, slapd.ca_path().display());
    let yaml = format!(
        "{dev}\n{}\n{}",
        connector_yaml(&ldaps),
        connector_yaml(&plain(&slapd)).replace("connectors:\n", "").replace("id: ldap", "id: plain")
    )
    .replace("./data/issuer.db", &dir.path().join("db").display().to_string());
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    let probe = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
            .args(["check-config", "--probe"])
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = probe();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(&format!("connector ldap (ldap): reachable: bound and read ou=people,{SUFFIX}")),
        "{stdout}"
    );
    // The test certificate (rcgen's default validity runs to the year 4096) is far from expiry.
    assert!(stdout.contains("more days"), "the LDAPS certificate's expiry is reported: {stdout}");
    assert!(stdout.contains("connector plain (ldap): reachable"), "{stdout}");
    assert!(stdout.contains("warning: plain LDAP without TLS (insecureNoSSL)"), "{stdout}");

    slapd.stop();
    let out = probe();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("connector ldap (ldap): NOT reachable"), "{stdout}");
}

#[tokio::test]
async fn a_refusal_after_a_correct_password_spends_a_brute_force_attempt() {
    let slapd = Slapd::start().await;
    // An entry without the emailAttr: refused (403) only after its password is checked.
    slapd
        .add(
            &format!("uid=nomail,ou=people,{SUFFIX}"),
            &[
                ("objectClass", &["inetOrgPerson"]),
                ("uid", &["nomail"]),
                ("cn", &["N"]),
                ("sn", &["M"]),
                ("userPassword", &["pw"]),
            ],
        )
        .await;
    let issuer = Issuer::start_with(&connector_yaml(&plain(&slapd)), |c| c.brute_force.max_attempts = 2).await;
    assert_eq!(ldap_login(&issuer, "nomail", "pw").await.0, 403);
    assert_eq!(ldap_login(&issuer, "nomail", "pw").await.0, 403);
    assert_eq!(ldap_login(&issuer, "nomail", "pw").await.0, 429, "refusals count like wrong passwords");
}
