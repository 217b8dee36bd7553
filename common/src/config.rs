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

/// Loads `T` from its serde defaults, an optional file (TOML, YAML or JSON by extension), the
/// environment (`KEV_KAFKA__BOOTSTRAP_SERVERS=...`) and `key=value` overrides, later winning.
/// Every `KEV_` variable but those in [`RESERVED_ENV`] is a setting, and an unknown one is
/// refused by name like an unknown key in the file.
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
    let vars: std::collections::HashMap<String, String> =
        vars.into_iter().filter(|(k, _)| k.starts_with("KEV_") && !RESERVED_ENV.contains(&k.as_str())).collect();
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

    #[test]
    fn refuses_unknown_keys_and_bad_overrides() {
        let env = config::Environment::with_prefix("KEV").source(Some(HashMap::new()));
        let err = load_with_env::<Sample>(None, &["kafka.bootstrap=x".into()], env).unwrap_err();
        assert!(err.to_string().contains("bootstrap"), "{err}");
        let env = config::Environment::with_prefix("KEV").source(Some(HashMap::new()));
        assert!(matches!(load_with_env::<Sample>(None, &["novalue".into()], env), Err(ConfigError::BadOverride(_))));
    }
}
