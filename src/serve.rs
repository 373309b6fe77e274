//! (being written by the lead; this stub only lets `callgate serve` compile until the merge.)

/// Why the gateway stopped. Placeholder until the real `serve` module lands.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the gateway (`serve`) is not part of this build yet")]
    NotImplemented,
}

/// Runs the gateway until shutdown. Placeholder: the lead's version replaces this file.
pub async fn run(_config: crate::config::Config) -> Result<(), ServeError> {
    Err(ServeError::NotImplemented)
}
