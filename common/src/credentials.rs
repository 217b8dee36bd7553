//! Credentials from mounted Secrets, read at start: Kafka properties from
//! `kafka.secret_properties_dir`, and the files other settings name (CA, certificates, the
//! registry's password). A service waits for files that are not there yet; a one-off command
//! stops on them. Both say which file, by its setting.

use tokio_util::sync::CancellationToken;

use crate::kafka::{KafkaSettings, SecretPropertiesError};
use crate::telemetry::Health;

/// Why the credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Files the settings name are missing (a one-off command does not wait for them).
    #[error("{0}")]
    Missing(String),
    #[error(transparent)]
    Unreadable(#[from] SecretPropertiesError),
    /// A property read from the directory is one kev sets itself.
    #[error("{0}")]
    Refused(String),
}

/// How to meet a missing file: wait for it (a service, with its readiness and stop token), or
/// stop at once (a one-off command).
pub enum OnMissing<'a> {
    Wait(&'a Health, &'a CancellationToken),
    Stop,
}

/// Waits for (or refuses) the files `kafka` and `others` (the other settings' missing files,
/// such as `RegistrySettings::missing_files`) name, then reads the secret properties into
/// `kafka.properties` and validates them. `Ok(false)` when `stop` was cancelled while waiting.
pub async fn read_mounted(
    kafka: &mut KafkaSettings,
    others: impl Fn() -> Vec<String>,
    on_missing: OnMissing<'_>,
) -> Result<bool, CredentialsError> {
    let missing = || [kafka.missing_files(), others()].concat();
    match on_missing {
        OnMissing::Wait(health, stop) => {
            if !crate::retry::until_present(health, stop, missing).await {
                return Ok(false);
            }
        }
        OnMissing::Stop => {
            let missing = missing();
            if !missing.is_empty() {
                return Err(CredentialsError::Missing(missing.join("; ")));
            }
        }
    }
    let names = kafka.load_secret_properties()?;
    kafka.validate().map_err(CredentialsError::Refused)?;
    if !names.is_empty() {
        tracing::info!(properties = ?names, "kafka properties read from the secret directory");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-off command stops on a missing file, naming it; once the Secret's files are
    /// there they are read, and a property kev sets itself is refused by name.
    #[tokio::test]
    async fn stops_on_a_missing_file_then_reads_and_validates_what_is_mounted() {
        let dir = std::env::temp_dir().join(format!("kev-credentials-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut kafka = KafkaSettings { secret_properties_dir: Some(dir.clone()), ..Default::default() };
        let none = Vec::new;
        let err = read_mounted(&mut kafka, none, OnMissing::Stop).await.unwrap_err();
        assert!(matches!(&err, CredentialsError::Missing(m) if m.contains("kafka.secret_properties_dir")), "{err}");
        let registry = || vec!["registry.password_file /x: no such file".to_string()];
        std::fs::write(dir.join("sasl.password"), "s3cr3t\n").unwrap();
        let err = read_mounted(&mut kafka, registry, OnMissing::Stop).await.unwrap_err();
        assert_eq!(err.to_string(), "registry.password_file /x: no such file");
        assert!(read_mounted(&mut kafka, none, OnMissing::Stop).await.unwrap());
        assert_eq!(kafka.properties["sasl.password"], "s3cr3t");
        std::fs::write(dir.join("group.id"), "mine").unwrap();
        let err = read_mounted(&mut kafka, none, OnMissing::Stop).await.unwrap_err();
        assert!(matches!(&err, CredentialsError::Refused(m) if m.contains("group.id")), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
