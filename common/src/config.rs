//! Layered configuration: defaults (serde), then a file, then `KEV_` environment variables with
//! `__` between levels (a single `_` would break snake_case keys), then CLI `--set key=value`.

use std::path::Path;

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("--set {0:?}: expected key=value")]
    BadOverride(String),
}

/// `KEV_` variables that are not settings: `KEV_CONFIG` names the configuration file.
pub const RESERVED_ENV: [&str; 1] = ["KEV_CONFIG"];

/// Whether `name` is a variable the kubelet sets in every container for each Service of its
/// namespace (`enableServiceLinks`, on by default): for a Service `kev-enricher` with port 8080,
/// `KEV_ENRICHER_SERVICE_HOST`, `KEV_ENRICHER_SERVICE_PORT[_<PORT NAME>]`, `KEV_ENRICHER_PORT`
/// and `KEV_ENRICHER_PORT_8080_TCP[_PROTO|_PORT|_ADDR]`. kev's own Services are named `kev-*`,
/// so their links share its prefix; no setting has these forms (nested keys take `__`).
pub fn is_service_link(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("KEV_") else { return false };
    if rest.contains("__") {
        return false;
    }
    if rest.ends_with("_SERVICE_HOST") || rest.ends_with("_SERVICE_PORT") || rest.contains("_SERVICE_PORT_") {
        return true;
    }
    if rest.ends_with("_PORT") {
        return true;
    }
    // <SERVICE>_PORT_<number>_<protocol>, then optionally _PROTO, _PORT or _ADDR.
    rest.match_indices("_PORT_").any(|(i, _)| {
        let mut parts = rest[i + "_PORT_".len()..].split('_');
        let number = parts.next().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let protocol = parts.next().is_some_and(|p| matches!(p, "TCP" | "UDP" | "SCTP"));
        let suffix = match (parts.next(), parts.next()) {
            (None, _) => true,
            (Some(s), None) => matches!(s, "PROTO" | "PORT" | "ADDR"),
            _ => false,
        };
        number && protocol && suffix
    })
}

/// Loads `T` from its serde defaults, an optional file (TOML, YAML or JSON by extension), the
/// environment (`KEV_KAFKA__BOOTSTRAP_SERVERS=...`) and `key=value` overrides, later winning.
/// Every `KEV_` variable but those in [`RESERVED_ENV`] and Kubernetes's Service links
/// ([`is_service_link`]) is a setting, and an unknown one is refused by name like an unknown key
/// in the file.
pub fn load<T: DeserializeOwned>(file: Option<&Path>, overrides: &[String]) -> Result<T, ConfigError> {
    load_from_vars(file, overrides, std::env::vars())
}

/// [`load`] with the environment given: what a process started with `vars` would read (the
/// deployment tests check the variables of docker-compose.yml and the manifests this way).
pub fn load_from_vars<T: DeserializeOwned>(
    file: Option<&Path>,
    overrides: &[String],
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let vars: std::collections::HashMap<String, String> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("KEV_") && !RESERVED_ENV.contains(&k.as_str()) && !is_service_link(k))
        .collect();
    load_with_env(file, overrides, config::Environment::with_prefix("KEV").source(Some(vars)))
}

fn load_with_env<T: DeserializeOwned>(
    file: Option<&Path>,
    overrides: &[String],
    env: config::Environment,
) -> Result<T, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(file) = file {
        builder = builder.add_source(config::File::from(file).required(true));
    }
    builder = builder.add_source(
        env.prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("source.namespaces")
            .with_list_parse_key("source.files"),
    );
    for o in overrides {
        let (k, v) = o.split_once('=').ok_or_else(|| ConfigError::BadOverride(o.clone()))?;
        builder = builder.set_override(k.trim(), v.trim())?;
    }
    Ok(builder.build()?.try_deserialize()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashMap;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        kafka: Kafka,
        #[serde(default = "default_topic")]
        topic: String,
    }
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Kafka {
        #[serde(default)]
        bootstrap_servers: String,
        #[serde(default)]
        linger_ms: u32,
    }
    fn default_topic() -> String {
        "kev.raw".into()
    }

    #[test]
    fn layers_file_env_and_overrides_in_order() {
        let dir = std::env::temp_dir().join(format!("kev-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kev.toml");
        std::fs::write(&file, "topic = \"from-file\"\n[kafka]\nbootstrap_servers = \"file:9092\"\nlinger_ms = 1\n")
            .unwrap();
        let env: HashMap<String, String> =
            [("KEV_KAFKA__LINGER_MS".to_string(), "7".to_string()), ("KEV_TOPIC".to_string(), "from-env".to_string())]
                .into();
        let env = config::Environment::with_prefix("KEV").source(Some(env));
        let s: Sample = load_with_env(Some(&file), &["topic=from-flag".into()], env).unwrap();
        assert_eq!(s.kafka.bootstrap_servers, "file:9092");
        assert_eq!(s.kafka.linger_ms, 7);
        assert_eq!(s.topic, "from-flag");
    }

    /// What the kubelet sets for Services `kev-enricher` (port named `http`) and `kev-producer`
    /// in their namespace, on a real node: none of it is a setting, and a real setting and an
    /// unknown `KEV_` variable beside it are still read and refused.
    #[test]
    fn kubernetes_service_links_are_not_settings() {
        let links = [
            ("KEV_ENRICHER_SERVICE_HOST", "10.96.0.12"),
            ("KEV_ENRICHER_SERVICE_PORT", "8080"),
            ("KEV_ENRICHER_SERVICE_PORT_HTTP", "8080"),
            ("KEV_ENRICHER_PORT", "tcp://10.96.0.12:8080"),
            ("KEV_ENRICHER_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
            ("KEV_ENRICHER_PORT_8080_TCP_PROTO", "tcp"),
            ("KEV_ENRICHER_PORT_8080_TCP_PORT", "8080"),
            ("KEV_ENRICHER_PORT_8080_TCP_ADDR", "10.96.0.12"),
            ("KEV_PRODUCER_SERVICE_HOST", "10.96.0.13"),
        ];
        for (k, _) in links {
            assert!(is_service_link(k), "{k}");
        }
        for k in ["KEV_TOPIC", "KEV_KAFKA__LINGER_MS", "KEV_HTTP__PORT", "KEV_PORT_8080_TCP_X", "KEV_A_PORT_X_TCP"] {
            assert!(!is_service_link(k), "{k}");
        }
        let vars = || links.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let with = |extra: (&str, &str)| vars().chain([(extra.0.to_string(), extra.1.to_string())]);
        let s: Sample = load_from_vars(None, &[], with(("KEV_TOPIC", "from-env"))).unwrap();
        assert_eq!(s.topic, "from-env");
        let err = load_from_vars::<Sample>(None, &[], with(("KEV_TOPICS", "x"))).unwrap_err();
        assert!(err.to_string().contains("topics"), "{err}");
    }

    #[test]
    fn refuses_unknown_keys_and_bad_overrides() {
        let env = config::Environment::with_prefix("KEV").source(Some(HashMap::new()));
        let err = load_with_env::<Sample>(None, &["kafka.bootstrap=x".into()], env).unwrap_err();
        assert!(err.to_string().contains("bootstrap"), "{err}");
        let env = config::Environment::with_prefix("KEV").source(Some(HashMap::new()));
        assert!(matches!(load_with_env::<Sample>(None, &["novalue".into()], env), Err(ConfigError::BadOverride(_))));
    }
}
