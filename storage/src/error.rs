//! Errors of the storage layer.

/// What went wrong while reading or writing durable state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine itself failed (IO error, corruption, full disk). The node cannot
    /// continue safely with the affected group; callers treat this as fatal.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// A persisted record could not be decoded: the data directory is damaged or
    /// was written by an incompatible version.
    #[error("corrupt record {what} for group {group}: {detail}")]
    Corrupt { group: u64, what: &'static str, detail: String },
    /// A snapshot stream was malformed or did not belong to the group it was applied to.
    #[error("invalid snapshot for group {group}: {detail}")]
    InvalidSnapshot { group: u64, detail: String },
}

/// Result alias of the storage crate.
pub type Result<T> = std::result::Result<T, Error>;

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Engine(e.into_string())
    }
}
