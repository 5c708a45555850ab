//! Every deployment file in `envoy/` parses, and the pieces that must agree do: the plugin configuration in
//! the Envoy and Istio files passes the filter's own parser and names a cluster that exists, the Istio
//! cluster name matches its ServiceEntry, the issuer configuration in the Kubernetes ConfigMap passes the
//! issuer's own validation, and the kube-apiserver configuration trusts the issuer it configures.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

fn envoy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../envoy")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).collect()
}

fn filter_accepts(json: &str, source: &str) -> filter::config::FilterConfig {
    filter::config::FilterConfig::parse(json.as_bytes())
        .unwrap_or_else(|e| panic!("{source}: the filter refuses its plugin configuration: {e:?}"))
}

#[test]
fn every_file_in_envoy_parses() {
    let mut files = Vec::new();
    yaml_files(&envoy_dir(), &mut files);
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        let docs = documents(f);
        assert!(!docs.is_empty(), "{} has no documents", f.display());
        for d in &docs {
            if f.components().any(|c| c.as_os_str() == "k8s" || c.as_os_str() == "istio") {
                assert!(
                    d["apiVersion"].is_string() && d["kind"].is_string(),
                    "{}: every resource has apiVersion and kind",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn the_envoy_plugin_configuration_passes_the_filter_parser_and_names_a_cluster() {
    let config = tests::envoy::EnvoyConfig::load(&envoy_dir().join("envoy.yaml")).unwrap();
    let plugin = filter_accepts(&config.plugin_configuration, "envoy.yaml");
    assert!(config.clusters.contains_key(&plugin.cluster), "cluster {} is defined", plugin.cluster);
    assert!(config.clusters.contains_key(&config.route_cluster));
}

#[test]
fn the_istio_plugin_configuration_passes_the_filter_parser_and_its_cluster_is_the_service_entry() {
    let docs = documents(&envoy_dir().join("istio/wasmplugin.yaml"));
    let plugin = of_kind(&docs, "WasmPlugin")[0];
    let json = serde_json::to_string(&plugin["spec"]["pluginConfig"]).unwrap();
    let cfg = filter_accepts(&json, "istio/wasmplugin.yaml");
    assert_eq!(plugin["spec"]["failStrategy"].as_str(), Some("FAIL_CLOSE"));

    let entry = of_kind(&docs, "ServiceEntry")[0];
    let host = entry["spec"]["hosts"][0].as_str().unwrap();
    let port = entry["spec"]["ports"][0]["number"].as_u64().unwrap();
    assert_eq!(cfg.cluster, format!("outbound|{port}||{host}"), "Istio names the ServiceEntry's cluster this way");
    let rule = of_kind(&docs, "DestinationRule")[0];
    assert_eq!(rule["spec"]["host"].as_str(), Some(host));
    assert_eq!(rule["spec"]["trafficPolicy"]["tls"]["mode"].as_str(), Some("SIMPLE"), "TLS to the issuer");
    assert_eq!(url::Url::parse(&cfg.issuer).unwrap().host_str(), Some(host));
}

#[test]
fn the_kubernetes_issuer_config_passes_validation_and_the_deployment_is_highly_available() {
    let path = envoy_dir().join("k8s/issuer.yaml");
    let docs = documents(&path);
    let secret = of_kind(&docs, "Secret")[0];
    let env = |name: &str| secret["stringData"][name].as_str().map(str::to_owned);
    let config_yaml = of_kind(&docs, "ConfigMap")[0]["data"]["config.yaml"].as_str().unwrap();
    // TLS files only exist in the pod: check everything else.
    let config = issuer::config::Config::parse("k8s/issuer.yaml#config.yaml", config_yaml, &env);
    match config {
        Ok(c) => assert_eq!(c.issuer.as_str(), "https://dex.example.com/"),
        Err(issuer::config::ConfigError::Invalid { problems, .. }) => {
            let other: Vec<_> = problems.iter().filter(|p| !p.key.starts_with("web.tls")).collect();
            assert!(other.is_empty(), "{other:#?}");
        }
        Err(e) => panic!("{e}"),
    }
    let deployment = of_kind(&docs, "Deployment")[0];
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    for (probe, path) in [("readinessProbe", "/healthz/ready"), ("livenessProbe", "/healthz/live")] {
        assert_eq!(container[probe]["httpGet"]["path"].as_str(), Some(path), "{probe}");
    }
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert_eq!(of_kind(&docs, "PodDisruptionBudget").len(), 1);
    assert_eq!(of_kind(&docs, "Service").len(), 1);
}

#[test]
fn kube_apiserver_trusts_the_issuer_with_the_kubernetes_audience_and_forbids_system_names() {
    let docs = documents(&envoy_dir().join("k8s/authentication-config.yaml"));
    let auth = of_kind(&docs, "AuthenticationConfiguration")[0];
    let jwt = &auth["jwt"][0];
    let issuer_docs = documents(&envoy_dir().join("k8s/issuer.yaml"));
    let config_yaml = of_kind(&issuer_docs, "ConfigMap")[0]["data"]["config.yaml"].as_str().unwrap();
    let issuer: Value = serde_yaml::from_str(config_yaml).unwrap();
    assert_eq!(jwt["issuer"]["url"], issuer["issuer"], "kube-apiserver trusts the issuer deployed next to it");
    assert_eq!(jwt["issuer"]["audiences"][0].as_str(), Some("kubernetes"));
    assert_eq!(jwt["claimMappings"]["username"]["claim"].as_str(), Some("email"));
    assert_eq!(jwt["claimMappings"]["groups"]["claim"].as_str(), Some("groups"));
    let rules: Vec<&str> =
        jwt["userValidationRules"].as_sequence().unwrap().iter().filter_map(|r| r["expression"].as_str()).collect();
    assert!(rules.iter().any(|r| r.contains("user.username.startsWith('system:')")));
    assert!(rules.iter().any(|r| r.contains("group.startsWith('system:')")));
}
