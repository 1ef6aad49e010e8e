//! Append-only logs of JSON lines, one record per line, flushed as written: the operators'
//! transcripts (storage's and the proxy's) are such logs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::marker::PhantomData;
use std::path::Path;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A log of `T`s.
pub struct JsonLines<T> {
    out: Mutex<BufWriter<File>>,
    kind: PhantomData<fn(&T)>,
}

impl<T: Serialize + DeserializeOwned> JsonLines<T> {
    fn over(file: File) -> Self {
        JsonLines {
            out: Mutex::new(BufWriter::new(file)),
            kind: PhantomData,
        }
    }

    /// Creates (truncates) the file.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self::over(File::create(path)?))
    }

    /// Opens the file to add to it (creating it if missing).
    pub fn append(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::over(file))
    }

    /// Appends one line and flushes it; a failure to write is returned, never a panic.
    pub fn record(&self, entry: &T) -> std::io::Result<()> {
        let mut out = self.out.lock();
        let line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")?;
        out.flush()
    }

    /// Reads a log back.
    pub fn read(path: &Path) -> std::io::Result<Vec<T>> {
        let text = std::fs::read_to_string(path)?;
        text.lines()
            .map(|l| {
                serde_json::from_str(l)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })
            .collect()
    }
}
