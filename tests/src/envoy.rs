//! Reads what the local gateway needs from an Envoy static configuration (`envoy/envoy.yaml`): the
//! listener address, the tokengate plugin (configuration, root id, vm id, .wasm path), the route's
//! upstream cluster, and every cluster's endpoint and TLS settings. Only the shapes `envoy/envoy.yaml`
//! uses are understood; anything else is an error that names the file and the path of the missing key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// What the gateway takes from `envoy.yaml`.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    /// The listener's address.
    pub listen: SocketAddr,
    /// The plugin's JSON configuration (`configuration.value`).
    pub plugin_configuration: String,
    /// `root_id` of the plugin.
    pub root_id: String,
    /// `vm_config.vm_id`.
    pub vm_id: String,
    /// `vm_config.code.local.filename`, relative to the working directory like Envoy's.
    pub wasm: PathBuf,
    /// The cluster the first route sends requests to.
    pub route_cluster: String,
    /// Every cluster by name.
    pub clusters: HashMap<String, Cluster>,
}

/// One upstream cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `host:port` of its first endpoint.
    pub address: String,
    /// Whether it has an `envoy.transport_sockets.tls` transport socket.
    pub tls: bool,
    /// `sni`, when set.
    pub sni: Option<String>,
    /// `validation_context.trusted_ca.filename`, when set.
    pub trusted_ca: Option<PathBuf>,
}

impl Cluster {
    /// The base URL the gateway uses for it.
    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.address)
    }
}

/// A missing or malformed key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: expected {expected}")]
pub struct EnvoyConfigError {
    /// The file.
    pub file: String,
    /// Dotted path of the key.
    pub key: String,
    /// What should be there.
    pub expected: String,
}

struct Reader<'a> {
    file: &'a str,
}

impl Reader<'_> {
    fn err(&self, key: &str, expected: &str) -> EnvoyConfigError {
        EnvoyConfigError { file: self.file.to_owned(), key: key.to_owned(), expected: expected.to_owned() }
    }

    fn get<'v>(&self, v: &'v Value, path: &str) -> Result<&'v Value, EnvoyConfigError> {
        let mut cur = v;
        for part in path.split('.') {
            cur = match part.parse::<usize>() {
                Ok(i) => cur.get(i),
                Err(_) => cur.get(part),
            }
            .ok_or_else(|| self.err(path, "a value here"))?;
        }
        Ok(cur)
    }

    fn str(&self, v: &Value, path: &str) -> Result<String, EnvoyConfigError> {
        match self.get(v, path)? {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(self.err(path, "a string")),
        }
    }
}

impl EnvoyConfig {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, EnvoyConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| EnvoyConfigError {
            file: file.clone(),
            key: "-".into(),
            expected: format!("a readable file ({e})"),
        })?;
        Self::parse(&file, &text)
    }

    /// Parses Envoy YAML; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, EnvoyConfigError> {
        let r = Reader { file };
        let doc: Value = serde_yaml::from_str(text).map_err(|e| r.err("-", &format!("YAML ({e})")))?;
        let listener = r.get(&doc, "static_resources.listeners.0")?;
        let host = r.str(listener, "address.socket_address.address")?;
        let port = r.str(listener, "address.socket_address.port_value")?;
        let listen = format!("{host}:{port}")
            .parse()
            .map_err(|_| r.err("static_resources.listeners.0.address.socket_address", "an IP address and port"))?;
        let hcm = r.get(listener, "filter_chains.0.filters.0.typed_config")?;
        let route_cluster = r.str(hcm, "route_config.virtual_hosts.0.routes.0.route.cluster")?;
        let filters = r.get(hcm, "http_filters")?.as_sequence().ok_or_else(|| r.err("http_filters", "a list"))?;
        let wasm = filters
            .iter()
            .find(|f| f.get("name").and_then(Value::as_str) == Some("envoy.filters.http.wasm"))
            .ok_or_else(|| r.err("http_filters", "an envoy.filters.http.wasm filter"))?;
        let plugin = r.get(wasm, "typed_config.config")?;
        let plugin_configuration = r.str(plugin, "configuration.value")?;
        serde_json::from_str::<serde_json::Value>(&plugin_configuration)
            .map_err(|e| r.err("typed_config.config.configuration.value", &format!("JSON ({e})")))?;
        let root_id = r.str(plugin, "root_id").unwrap_or_default();
        let vm_id = r.str(plugin, "vm_config.vm_id").unwrap_or_default();
        let wasm = PathBuf::from(r.str(plugin, "vm_config.code.local.filename")?);

        let mut clusters = HashMap::new();
        let list = r
            .get(&doc, "static_resources.clusters")?
            .as_sequence()
            .ok_or_else(|| r.err("static_resources.clusters", "a list"))?;
        for (i, c) in list.iter().enumerate() {
            let name = r.str(c, "name")?;
            let endpoint = r
                .get(c, "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.socket_address")
                .map_err(|_| {
                    r.err(
                        &format!("static_resources.clusters.{i}.load_assignment"),
                        "an endpoint with a socket_address",
                    )
                })?;
            let address = format!("{}:{}", r.str(endpoint, "address")?, r.str(endpoint, "port_value")?);
            let tls_context = c.get("transport_socket").and_then(|t| t.get("typed_config"));
            let cluster = Cluster {
                address,
                tls: tls_context.is_some(),
                sni: tls_context.and_then(|t| t.get("sni")).and_then(Value::as_str).map(str::to_owned),
                trusted_ca: tls_context
                    .and_then(|t| r.str(t, "common_tls_context.validation_context.trusted_ca.filename").ok())
                    .map(PathBuf::from),
            };
            clusters.insert(name, cluster);
        }
        if !clusters.contains_key(&route_cluster) {
            return Err(r.err("route.cluster", &format!("the name of a cluster, got {route_cluster:?}")));
        }
        Ok(EnvoyConfig { listen, plugin_configuration, root_id, vm_id, wasm, route_cluster, clusters })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_envoy_yaml_parses_and_its_plugin_names_a_defined_cluster() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../envoy/envoy.yaml");
        let c = EnvoyConfig::load(&path).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.route_cluster, "whoami");
        let plugin: serde_json::Value = serde_json::from_str(&c.plugin_configuration).unwrap();
        let cluster = plugin["cluster"].as_str().unwrap();
        assert!(c.clusters.contains_key(cluster), "the plugin's cluster {cluster} is defined");
        assert_eq!(c.clusters["issuer"].base_url(), "http://127.0.0.1:5556");
    }

    #[test]
    fn missing_keys_are_named() {
        let err = EnvoyConfig::parse("x.yaml", "static_resources: {listeners: []}").unwrap_err();
        assert_eq!(err.to_string(), "x.yaml: static_resources.listeners.0: expected a value here");
    }
}
