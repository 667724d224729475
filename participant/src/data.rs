//! The site's data as the shell hands it to the site machine: a CSV file's
//! contents, already read, with the name it is known by in local messages.
//! The machine parses it for each task; it never opens a file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A site's CSV data, in memory.
#[derive(Clone)]
pub struct LocalData {
    /// Where it came from (for the site's own log and error details).
    pub source: PathBuf,
    /// The file's bytes.
    pub csv: Arc<[u8]>,
    /// A separate file of held-out rows for federated evaluation, if the site
    /// keeps one (`[evaluation] data`).
    pub held_out: Option<Arc<LocalData>>,
}

impl std::fmt::Debug for LocalData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalData")
            .field("source", &self.source)
            .field("bytes", &self.csv.len())
            .field("held_out", &self.held_out)
            .finish()
    }
}

impl LocalData {
    /// Data held in memory (tests, in-process simulations).
    pub fn from_bytes(source: impl Into<PathBuf>, csv: impl Into<Arc<[u8]>>) -> Self {
        Self {
            source: source.into(),
            csv: csv.into(),
            held_out: None,
        }
    }

    /// The same data with a separate file of held-out rows.
    pub fn with_held_out(mut self, held_out: LocalData) -> Self {
        self.held_out = Some(Arc::new(held_out));
        self
    }

    /// Reads a CSV file (the shell's job, before the machine starts).
    pub fn read(path: &Path) -> std::io::Result<Self> {
        Ok(Self::from_bytes(path, std::fs::read(path)?))
    }
}
