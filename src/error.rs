//! Errors at the library's boundary.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why [`crate::serve`] could not start or stopped early.
#[derive(Debug)]
pub enum ServeError {
    /// The uploads directory could not be created or is not writable.
    UploadsDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The listener could not report its address.
    Listener(io::Error),
    /// The Redis settings are unusable (a bad URL, or a build without the
    /// `redis` feature).
    Redis(String),
    /// The history store cannot be used (its directory, its file, its
    /// database, or its settings); the message says which and what to do.
    Store(String),
    /// The media store's settings are unusable (an S3 store without
    /// credentials, say).
    Media(String),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UploadsDir { path, source } => write!(
                f,
                "uploads directory {} is not usable ({source}); create it or pass --uploads-dir",
                path.display()
            ),
            Self::Listener(e) => write!(f, "the listener is not usable: {e}"),
            Self::Redis(e) => write!(f, "cannot use Redis: {e}"),
            Self::Store(e) => write!(f, "cannot use the history store: {e}"),
            Self::Media(e) => write!(f, "cannot use the media store: {e}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::UploadsDir { source, .. } | Self::Listener(source) => Some(source),
            Self::Redis(_) | Self::Store(_) | Self::Media(_) => None,
        }
    }
}
