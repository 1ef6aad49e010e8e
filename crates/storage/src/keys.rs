//! The files a storage server owns beside its database: the mailbox routing key
//! (`routing.key`, mode 0600, made on first start) and its public half (`routing.pub`, hex,
//! for operators to hand to clients, who pin it).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use shroud_proto::routing::RoutingKey;
use zeroize::Zeroizing;

/// The routing key's file in a storage directory.
pub const ROUTING_KEY_FILE: &str = "routing.key";
/// Its public half, in hex.
pub const ROUTING_PUB_FILE: &str = "routing.pub";

/// A storage directory that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A file could not be read, written or created.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `routing.key` holds no key.
    #[error("{path}: not a routing key (was it edited or truncated?)")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        source: shroud_proto::routing::RoutingError,
    },
    /// The database would not open.
    #[error("opening the database: {0}")]
    Backend(#[from] crate::BackendError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The routing key of the storage directory `dir`: read from `routing.key`, or made and
/// written there (0600, fsynced, then the directory fsynced) on first start. Writes
/// `routing.pub` beside it.
pub fn routing_key(dir: &Path) -> Result<RoutingKey, OpenError> {
    let path = dir.join(ROUTING_KEY_FILE);
    let key = match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            RoutingKey::from_secret(&bytes).map_err(|source| OpenError::BadKey {
                path: path.clone(),
                source,
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = RoutingKey::generate(&mut rand::rng());
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io(&path))?;
            f.write_all(&Zeroizing::new(key.secret())[..])
                .and_then(|()| f.sync_all())
                .map_err(io(&path))?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
            key
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let public = hex(&key.public());
    let pub_path = dir.join(ROUTING_PUB_FILE);
    std::fs::write(&pub_path, format!("{public}\n")).map_err(io(&pub_path))?;
    Ok(key)
}

/// Lower-case hex, as `routing.pub` and the logs show a public key.
pub fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = routing_key(dir.path()).unwrap();
        let b = routing_key(dir.path()).unwrap();
        assert_eq!(a.public(), b.public());
        let shown = std::fs::read_to_string(dir.path().join(ROUTING_PUB_FILE)).unwrap();
        assert_eq!(shown.trim(), hex(&a.public()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(ROUTING_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ROUTING_KEY_FILE), b"short").unwrap();
        assert!(matches!(
            routing_key(dir.path()),
            Err(OpenError::BadKey { .. })
        ));
    }
}
