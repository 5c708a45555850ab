//! Kubernetes documents derived from the configuration: kube-apiserver's structured
//! `AuthenticationConfiguration` for this issuer with the equivalent legacy `--oidc-*` flags, and the
//! kubeconfigs the kubeconfig page hands out. Pure functions of their inputs; the `issuer
//! kube-apiserver-config` command prints them and `http::kubeconfig` serves them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;

use crate::config::{CaFile, Cluster, Config};
use crate::keys::Algorithm;

/// Failures turning a document into text.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// YAML serialisation failed.
    #[error("serialising YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// `apiVersion` of kube-apiserver's `AuthenticationConfiguration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `apiserver.config.k8s.io/v1` (Kubernetes 1.34+).
    V1,
    /// `apiserver.config.k8s.io/v1beta1` (Kubernetes 1.30+).
    V1Beta1,
}

impl ApiVersion {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "apiserver.config.k8s.io/v1",
            ApiVersion::V1Beta1 => "apiserver.config.k8s.io/v1beta1",
        }
    }
}

/// What the kube-apiserver configuration is made for; `from_config` takes the `kubernetes:` section.
#[derive(Debug, Clone)]
pub struct ApiserverOptions {
    /// The audience kube-apiserver accepts.
    pub client_id: String,
    /// Prefix for groups.
    pub groups_prefix: String,
    /// Which `AuthenticationConfiguration` version to write.
    pub api_version: ApiVersion,
    /// The CA kube-apiserver should trust for the issuer.
    pub ca: Option<CaFile>,
}

impl ApiserverOptions {
    /// Options from the `kubernetes:` section, or its defaults when there is none.
    pub fn from_config(config: &Config) -> Self {
        let k = config.kubernetes.as_ref();
        let ca = match k {
            Some(k) => k.issuer_ca.clone(),
            // Without the section the only CA the issuer knows of is its own certificate chain.
            None => match (&config.web.tls_cert, config.issuer.scheme()) {
                (Some(path), "https") => {
                    std::fs::read_to_string(path).ok().map(|pem| CaFile { path: path.clone(), pem })
                }
                _ => None,
            },
        };
        Self {
            client_id: k.map_or_else(|| "kubernetes".to_owned(), |k| k.client_id.clone()),
            groups_prefix: k.map_or_else(|| "oidc:".to_owned(), |k| k.groups_prefix.clone()),
            api_version: ApiVersion::V1Beta1,
            ca,
        }
    }
}

/// kube-apiserver's `AuthenticationConfiguration` (only the parts this issuer needs).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationConfiguration {
    /// `apiserver.config.k8s.io/v1beta1` or `/v1`.
    pub api_version: &'static str,
    /// Always `AuthenticationConfiguration`.
    pub kind: &'static str,
    /// One JWT authenticator: this issuer.
    pub jwt: Vec<JwtAuthenticator>,
}

/// `jwt[]`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtAuthenticator {
    /// Where tokens come from.
    pub issuer: JwtIssuer,
    /// How claims become a Kubernetes user.
    pub claim_mappings: ClaimMappings,
    /// CEL rules every token must pass.
    pub claim_validation_rules: Vec<ValidationRule>,
    /// CEL rules the resulting user must pass.
    pub user_validation_rules: Vec<ValidationRule>,
}

/// `jwt[].issuer`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtIssuer {
    /// Must equal `iss`; kube-apiserver requires https.
    pub url: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// PEM bundle kube-apiserver trusts for discovery and JWKS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
}

/// `jwt[].claimMappings`.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimMappings {
    /// The username claim.
    pub username: PrefixedClaim,
    /// The groups claim.
    pub groups: PrefixedClaim,
}

/// A claim and the prefix put before its values. The prefix must be present, even empty, when a claim
/// is named (kube-apiserver's validation).
#[derive(Debug, Clone, Serialize)]
pub struct PrefixedClaim {
    /// Claim name.
    pub claim: String,
    /// Prefix.
    pub prefix: String,
}

/// A CEL rule with the message kube-apiserver logs when it fails.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationRule {
    /// CEL expression.
    pub expression: String,
    /// Why a token or user was refused.
    pub message: String,
}

/// The kube-apiserver configuration for an issuer: the structured document, the equivalent legacy flags,
/// and what the operator should know.
#[derive(Debug, Clone)]
pub struct ApiserverConfig {
    /// For `--authentication-config`.
    pub document: AuthenticationConfiguration,
    /// The `--oidc-*` flags for clusters without structured authentication.
    pub flags: Vec<String>,
    /// Problems kube-apiserver would have with this issuer.
    pub warnings: Vec<String>,
}

/// Builds the kube-apiserver configuration that trusts `config`'s issuer.
pub fn apiserver_config(config: &Config, opts: &ApiserverOptions) -> ApiserverConfig {
    let issuer = config.issuer.as_str().trim_end_matches('/').to_owned();
    let mut warnings = Vec::new();
    if config.issuer.scheme() != "https" {
        warnings.push(format!(
            "the issuer URL {issuer} is not https: kube-apiserver only accepts https issuers (serve web.https, or put a TLS proxy in front and set issuer to its URL)"
        ));
    }
    if config.client(&opts.client_id).is_none() {
        warnings.push(format!(
            "client {:?} is not in staticClients: kubectl cannot get tokens for this audience",
            opts.client_id
        ));
    }
    let alg = config.signing.algorithm;
    let signing_algs = match alg {
        Algorithm::Rs256 => None,
        Algorithm::Es256 => {
            warnings.push(
                "tokens are signed with ES256: the legacy flags need --oidc-signing-algs=ES256 (included below); the structured configuration accepts ES256 as it is"
                    .to_owned(),
            );
            Some(alg.as_str())
        }
        Algorithm::EdDsa => {
            warnings.push(format!(
                "tokens are signed with {}, which kube-apiserver does not accept: set signing.algorithm to RS256 or ES256",
                alg.as_str()
            ));
            None
        }
    };

    let document = AuthenticationConfiguration {
        api_version: opts.api_version.as_str(),
        kind: "AuthenticationConfiguration",
        jwt: vec![JwtAuthenticator {
            issuer: JwtIssuer {
                url: issuer.clone(),
                audiences: vec![opts.client_id.clone()],
                certificate_authority: opts.ca.as_ref().map(|c| c.pem.clone()),
            },
            claim_mappings: ClaimMappings {
                username: PrefixedClaim { claim: "email".to_owned(), prefix: String::new() },
                groups: PrefixedClaim { claim: "groups".to_owned(), prefix: opts.groups_prefix.clone() },
            },
            claim_validation_rules: vec![ValidationRule {
                expression: "claims.email_verified == true".to_owned(),
                message: "the email address must be verified".to_owned(),
            }],
            user_validation_rules: vec![
                ValidationRule {
                    expression: "!user.username.startsWith('system:')".to_owned(),
                    message: "username cannot use the reserved system: prefix".to_owned(),
                },
                ValidationRule {
                    expression: "user.groups.all(group, !group.startsWith('system:'))".to_owned(),
                    message: "groups cannot use the reserved system: prefix".to_owned(),
                },
            ],
        }],
    };

    let mut flags = vec![
        format!("--oidc-issuer-url={issuer}"),
        format!("--oidc-client-id={}", opts.client_id),
        "--oidc-username-claim=email".to_owned(),
        // `-` turns prefixing off; without it kube-apiserver would prefix non-email claims with the issuer.
        "--oidc-username-prefix=-".to_owned(),
        "--oidc-groups-claim=groups".to_owned(),
    ];
    if !opts.groups_prefix.is_empty() {
        flags.push(format!("--oidc-groups-prefix={}", opts.groups_prefix));
    }
    if let Some(ca) = &opts.ca {
        flags.push(format!("--oidc-ca-file={}", ca.path.display()));
    }
    if let Some(algs) = signing_algs {
        flags.push(format!("--oidc-signing-algs={algs}"));
    }
    ApiserverConfig { document, flags, warnings }
}

impl ApiserverConfig {
    /// The document as YAML, followed by the legacy flags as comments.
    pub fn to_yaml(&self) -> Result<String, KubeError> {
        let mut out = String::from(
            "# kube-apiserver --authentication-config=<this file> (structured authentication, Kubernetes 1.30+).\n",
        );
        out.push_str(&serde_yaml::to_string(&self.document)?);
        out.push_str(
            "# Or, on clusters without structured authentication, these flags instead (never both; the\n# userValidationRules above have no flag equivalent, which is what the groups prefix is for):\n",
        );
        for f in &self.flags {
            out.push_str("#   ");
            out.push_str(f);
            out.push('\n');
        }
        Ok(out)
    }
}

// === kubeconfigs ===

/// The `exec` credential plugin the exec kubeconfig runs (`src/bin/kubectl-oidc_login.rs`).
pub const EXEC_COMMAND: &str = "kubectl-oidc_login";

/// `client.authentication.k8s.io` version of the exec kubeconfig.
pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1";

/// What a user's kubeconfigs are made of.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// `idp-issuer-url`.
    pub issuer: &'a str,
    /// The Kubernetes client.
    pub client_id: &'a str,
    /// Its secret, when it has one.
    pub client_secret: Option<&'a str>,
    /// The issuer's CA (PEM), when its certificate is not publicly trusted.
    pub issuer_ca: Option<&'a str>,
    /// A fresh ID token.
    pub id_token: &'a str,
    /// The refresh token (with `offline_access`).
    pub refresh_token: Option<&'a str>,
}

/// A cluster's three ways in: an `auth-provider: oidc` kubeconfig, an `exec` kubeconfig, and the
/// `kubectl config` commands that build the exec one into an existing kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterKubeconfigs {
    /// The cluster's (and context's) name.
    pub name: String,
    /// Kubeconfig with kubectl's built-in `oidc` auth provider and the tokens.
    pub oidc: String,
    /// Kubeconfig running `kubectl-oidc_login`; it holds no tokens.
    pub exec: String,
    /// `kubectl config set-cluster/set-credentials/set-context/use-context`, one per line.
    pub commands: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Kubeconfig<'a> {
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named<ClusterEntry<'a>>>,
    users: Vec<Named<UserEntry>>,
    contexts: Vec<Named<ContextEntry<'a>>>,
    #[serde(rename = "current-context")]
    current_context: &'a str,
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct ClusterEntry<'a> {
    cluster: ClusterFields<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterFields<'a> {
    server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_authority_data: Option<String>,
}

#[derive(Serialize)]
struct UserEntry {
    user: UserFields,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct UserFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_provider: Option<AuthProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec: Option<Exec>,
}

#[derive(Serialize)]
struct AuthProvider {
    name: &'static str,
    config: std::collections::BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Exec {
    api_version: &'static str,
    command: &'static str,
    args: Vec<String>,
    interactive_mode: &'static str,
    provide_cluster_info: bool,
}

#[derive(Serialize)]
struct ContextEntry<'a> {
    context: ContextFields<'a>,
}

#[derive(Serialize)]
struct ContextFields<'a> {
    cluster: &'a str,
    user: &'a str,
}

/// The user entry's name in kubeconfigs for `cluster`.
pub fn user_name(cluster: &str) -> String {
    format!("oidc@{cluster}")
}

/// Scopes the exec kubeconfig asks for besides `openid`.
pub const EXEC_EXTRA_SCOPES: &[&str] = &["email", "profile", "groups", "offline_access"];

/// The arguments of `kubectl-oidc_login` for these credentials, in int128/kubelogin's flag names so that
/// the kubeconfig works with either binary of that name.
pub fn exec_args(c: &Credentials<'_>) -> Vec<String> {
    let mut args = vec![
        "get-token".to_owned(),
        format!("--oidc-issuer-url={}", c.issuer),
        format!("--oidc-client-id={}", c.client_id),
    ];
    if let Some(secret) = c.client_secret {
        args.push(format!("--oidc-client-secret={secret}"));
    }
    args.extend(EXEC_EXTRA_SCOPES.iter().map(|s| format!("--oidc-extra-scope={s}")));
    if let Some(ca) = c.issuer_ca {
        args.push(format!("--certificate-authority-data={}", STANDARD.encode(ca)));
    }
    args
}

/// Builds the kubeconfigs and commands for one cluster.
pub fn kubeconfigs(c: &Credentials<'_>, cluster: &Cluster) -> Result<ClusterKubeconfigs, KubeError> {
    let name = cluster.name.as_str();
    let user = user_name(name);
    let cluster_ca = cluster.certificate_authority.as_ref().map(|pem| STANDARD.encode(pem));
    let document = |user_fields: UserFields| Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name: name.to_owned(),
            value: ClusterEntry {
                cluster: ClusterFields { server: &cluster.server, certificate_authority_data: cluster_ca.clone() },
            },
        }],
        users: vec![Named { name: user.clone(), value: UserEntry { user: user_fields } }],
        contexts: vec![Named {
            name: name.to_owned(),
            value: ContextEntry { context: ContextFields { cluster: name, user: &user } },
        }],
        current_context: name,
    };

    let mut provider = std::collections::BTreeMap::new();
    provider.insert("idp-issuer-url", c.issuer.to_owned());
    provider.insert("client-id", c.client_id.to_owned());
    if let Some(secret) = c.client_secret {
        provider.insert("client-secret", secret.to_owned());
    }
    provider.insert("id-token", c.id_token.to_owned());
    if let Some(refresh) = c.refresh_token {
        provider.insert("refresh-token", refresh.to_owned());
    }
    if let Some(ca) = c.issuer_ca {
        provider.insert("idp-certificate-authority-data", STANDARD.encode(ca));
    }
    let oidc = serde_yaml::to_string(&document(UserFields {
        auth_provider: Some(AuthProvider { name: "oidc", config: provider }),
        exec: None,
    }))?;
    let exec = serde_yaml::to_string(&document(UserFields {
        auth_provider: None,
        exec: Some(Exec {
            api_version: EXEC_API_VERSION,
            command: EXEC_COMMAND,
            args: exec_args(c),
            interactive_mode: "IfAvailable",
            provide_cluster_info: false,
        }),
    }))?;

    let mut lines =
        vec![format!("kubectl config set-cluster {} --server={}", sh_quote(name), sh_quote(&cluster.server))];
    if let Some(ca) = &cluster_ca {
        lines.push(format!("kubectl config set clusters.{}.certificate-authority-data {ca}", sh_quote(name)));
    }
    let mut creds = format!(
        "kubectl config set-credentials {} --exec-api-version={EXEC_API_VERSION} --exec-command={EXEC_COMMAND}",
        sh_quote(&user)
    );
    for arg in exec_args(c) {
        creds.push_str(&format!(" --exec-arg={}", sh_quote(&arg)));
    }
    lines.push(creds);
    lines.push(format!(
        "kubectl config set-context {} --cluster={} --user={}",
        sh_quote(name),
        sh_quote(name),
        sh_quote(&user)
    ));
    lines.push(format!("kubectl config use-context {}", sh_quote(name)));
    Ok(ClusterKubeconfigs { name: name.to_owned(), oidc, exec, commands: lines.join("\n") })
}

/// Quotes a word for a POSIX shell when it needs it.
fn sh_quote(s: &str) -> String {
    let safe = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml::Value;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn config(issuer: &str, alg: &str, extra: &str) -> Config {
        let text = format!(
            "issuer: {issuer}\nweb: {{http: 127.0.0.1:5556}}\nstorage: {{type: memory}}\nsigning: {{algorithm: {alg}}}\nstaticClients:\n- id: kubernetes\n  public: true\n{extra}"
        );
        Config::parse("test.yaml", &text, &|_| None).unwrap()
    }

    fn render(config: &Config, opts: &ApiserverOptions) -> (Value, ApiserverConfig) {
        let out = apiserver_config(config, opts);
        let yaml = out.to_yaml().unwrap();
        (serde_yaml::from_str(&yaml).unwrap(), out)
    }

    #[test]
    fn structured_configuration_parses_back_with_every_field() {
        let c = config("https://login.example.com/dex", "RS256", "kubernetes: {groupsPrefix: 'corp:'}\n");
        let mut opts = ApiserverOptions::from_config(&c);
        opts.ca = Some(CaFile { path: "/etc/ca.pem".into(), pem: CA.to_owned() });
        let (doc, out) = render(&c, &opts);
        assert_eq!(doc["apiVersion"], "apiserver.config.k8s.io/v1beta1");
        assert_eq!(doc["kind"], "AuthenticationConfiguration");
        let jwt = &doc["jwt"][0];
        assert_eq!(jwt["issuer"]["url"], "https://login.example.com/dex");
        assert_eq!(jwt["issuer"]["audiences"], Value::Sequence(vec!["kubernetes".into()]));
        assert_eq!(jwt["issuer"]["certificateAuthority"], CA);
        assert_eq!(jwt["claimMappings"]["username"]["claim"], "email");
        assert_eq!(jwt["claimMappings"]["username"]["prefix"], "", "an empty prefix is written, not omitted");
        assert_eq!(jwt["claimMappings"]["groups"]["claim"], "groups");
        assert_eq!(jwt["claimMappings"]["groups"]["prefix"], "corp:");
        assert_eq!(jwt["claimValidationRules"][0]["expression"], "claims.email_verified == true");
        let rules: Vec<_> =
            jwt["userValidationRules"].as_sequence().unwrap().iter().map(|r| r["expression"].clone()).collect();
        assert_eq!(
            rules,
            vec![
                Value::from("!user.username.startsWith('system:')"),
                Value::from("user.groups.all(group, !group.startsWith('system:'))")
            ]
        );
        assert!(jwt["userValidationRules"][1]["message"].as_str().unwrap().contains("system:"));
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    }

    #[test]
    fn legacy_flags_follow_the_document_as_comments() {
        let c = config("https://login.example.com", "RS256", "kubernetes: {}\n");
        let mut opts = ApiserverOptions::from_config(&c);
        opts.ca = Some(CaFile { path: "/etc/ca.pem".into(), pem: CA.to_owned() });
        let (_, out) = render(&c, &opts);
        assert_eq!(
            out.flags,
            vec![
                "--oidc-issuer-url=https://login.example.com",
                "--oidc-client-id=kubernetes",
                "--oidc-username-claim=email",
                "--oidc-username-prefix=-",
                "--oidc-groups-claim=groups",
                "--oidc-groups-prefix=oidc:",
                "--oidc-ca-file=/etc/ca.pem",
            ]
        );
        let yaml = out.to_yaml().unwrap();
        assert!(yaml.contains("\n#   --oidc-username-prefix=-\n"), "{yaml}");
    }

    #[test]
    fn options_override_client_prefix_and_version() {
        let c = config("https://login.example.com", "RS256", "");
        let opts = ApiserverOptions {
            client_id: "k8s".into(),
            groups_prefix: String::new(),
            api_version: ApiVersion::V1,
            ca: None,
        };
        let (doc, out) = render(&c, &opts);
        assert_eq!(doc["apiVersion"], "apiserver.config.k8s.io/v1");
        assert_eq!(doc["jwt"][0]["issuer"]["audiences"][0], "k8s");
        assert!(doc["jwt"][0]["issuer"].get("certificateAuthority").is_none(), "no CA, no key");
        assert!(!out.flags.iter().any(|f| f.starts_with("--oidc-groups-prefix")), "empty prefix, no flag");
        assert!(!out.flags.iter().any(|f| f.starts_with("--oidc-ca-file")));
        assert!(out.warnings.iter().any(|w| w.contains("\"k8s\" is not in staticClients")), "{:?}", out.warnings);
    }

    #[test]
    fn plain_http_and_non_rs256_issuers_are_warned_about() {
        let cases = [
            ("http://127.0.0.1:5556", "RS256", &["not https"][..], None),
            (
                "https://login.example.com",
                "ES256",
                &["--oidc-signing-algs=ES256"][..],
                Some("--oidc-signing-algs=ES256"),
            ),
            ("https://login.example.com", "EdDSA", &["does not accept"][..], None),
        ];
        for (issuer, alg, expected, flag) in cases {
            let c = config(issuer, alg, "");
            let out = apiserver_config(&c, &ApiserverOptions::from_config(&c));
            for e in expected {
                assert!(out.warnings.iter().any(|w| w.contains(e)), "{issuer} {alg}: {:?}", out.warnings);
            }
            assert_eq!(out.warnings.len(), expected.len(), "{issuer} {alg}: {:?}", out.warnings);
            assert_eq!(out.flags.iter().find(|f| f.starts_with("--oidc-signing-algs")).map(String::as_str), flag);
        }
    }

    #[test]
    fn issuer_tls_certificate_is_the_default_ca_for_https_issuers() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, CA).unwrap();
        std::fs::write(&key, "key").unwrap();
        let web = format!("web: {{https: 127.0.0.1:5554, tlsCert: {}, tlsKey: {}}}", cert.display(), key.display());
        let text = |issuer: &str| {
            format!("issuer: {issuer}\n{web}\nstorage: {{type: memory}}\nstaticClients:\n- id: kubernetes\n  public: true\n")
        };
        let c = Config::parse("t.yaml", &text("https://127.0.0.1:5554"), &|_| None).unwrap();
        assert_eq!(ApiserverOptions::from_config(&c).ca.map(|c| c.pem).as_deref(), Some(CA));
        let c = Config::parse("t.yaml", &text("http://127.0.0.1:5554"), &|_| None).unwrap();
        assert!(ApiserverOptions::from_config(&c).ca.is_none(), "a CA means nothing to an http issuer");
    }

    fn credentials<'a>(ca: Option<&'a str>, secret: Option<&'a str>) -> Credentials<'a> {
        Credentials {
            issuer: "https://login.example.com",
            client_id: "kubernetes",
            client_secret: secret,
            issuer_ca: ca,
            id_token: "eyJ.id.token",
            refresh_token: Some("rid.rsecret"),
        }
    }

    fn cluster(ca: Option<&str>) -> Cluster {
        Cluster {
            name: "prod".into(),
            server: "https://k8s.example.com:6443".into(),
            certificate_authority: ca.map(str::to_owned),
        }
    }

    #[test]
    fn oidc_kubeconfig_carries_tokens_secret_and_both_cas() {
        let k = kubeconfigs(&credentials(Some(CA), Some("s3cret")), &cluster(Some(CA))).unwrap();
        let doc: Value = serde_yaml::from_str(&k.oidc).unwrap();
        assert_eq!(doc["apiVersion"], "v1");
        assert_eq!(doc["kind"], "Config");
        assert_eq!(doc["current-context"], "prod");
        assert_eq!(doc["clusters"][0]["name"], "prod");
        assert_eq!(doc["clusters"][0]["cluster"]["server"], "https://k8s.example.com:6443");
        assert_eq!(doc["clusters"][0]["cluster"]["certificate-authority-data"], STANDARD.encode(CA));
        assert_eq!(doc["contexts"][0]["context"]["user"], "oidc@prod");
        let user = &doc["users"][0];
        assert_eq!(user["name"], "oidc@prod");
        let cfg = &user["user"]["auth-provider"]["config"];
        assert_eq!(user["user"]["auth-provider"]["name"], "oidc");
        assert_eq!(cfg["idp-issuer-url"], "https://login.example.com");
        assert_eq!(cfg["client-id"], "kubernetes");
        assert_eq!(cfg["client-secret"], "s3cret");
        assert_eq!(cfg["id-token"], "eyJ.id.token");
        assert_eq!(cfg["refresh-token"], "rid.rsecret");
        assert_eq!(cfg["idp-certificate-authority-data"], STANDARD.encode(CA));
    }

    #[test]
    fn exec_kubeconfig_runs_the_plugin_and_holds_no_tokens() {
        let k = kubeconfigs(&credentials(None, None), &cluster(None)).unwrap();
        let doc: Value = serde_yaml::from_str(&k.exec).unwrap();
        assert!(doc["clusters"][0]["cluster"].get("certificate-authority-data").is_none());
        let exec = &doc["users"][0]["user"]["exec"];
        assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1");
        assert_eq!(exec["command"], "kubectl-oidc_login");
        assert_eq!(exec["interactiveMode"], "IfAvailable");
        assert_eq!(
            exec["args"],
            serde_yaml::from_str::<Value>(
                "[get-token, --oidc-issuer-url=https://login.example.com, --oidc-client-id=kubernetes, \
                 --oidc-extra-scope=email, --oidc-extra-scope=profile, --oidc-extra-scope=groups, \
                 --oidc-extra-scope=offline_access]"
            )
            .unwrap(),
            "int128/kubelogin's flag names"
        );
        assert!(!k.exec.contains("eyJ.id.token") && !k.exec.contains("rid.rsecret"));
        let oidc: Value = serde_yaml::from_str(&k.oidc).unwrap();
        let cfg = &oidc["users"][0]["user"]["auth-provider"]["config"];
        assert!(cfg.get("client-secret").is_none() && cfg.get("idp-certificate-authority-data").is_none());
    }

    #[test]
    fn kubectl_commands_build_the_exec_user_and_quote_what_needs_it() {
        let mut c = cluster(Some(CA));
        c.name = "it's".into();
        let k = kubeconfigs(&credentials(None, Some("a b")), &c).unwrap();
        let lines: Vec<&str> = k.commands.lines().collect();
        assert_eq!(lines[0], r"kubectl config set-cluster 'it'\''s' --server=https://k8s.example.com:6443");
        assert!(lines[1].starts_with(r"kubectl config set clusters.'it'\''s'.certificate-authority-data "));
        assert!(lines[2].contains(" --exec-command=kubectl-oidc_login --exec-arg=get-token "), "{}", lines[2]);
        assert!(lines[2].contains(" --exec-arg='--oidc-client-secret=a b'"), "{}", lines[2]);
        assert_eq!(lines[4], r"kubectl config use-context 'it'\''s'");
        assert!(!k.commands.contains("eyJ"), "no tokens in shell history");
    }
}
