//! The agent's access token: what a local process must present (Redis `AUTH`) before the
//! agent's front does anything for it. The front is on loopback, which every local user and
//! process can reach; the token, in a file only its owner reads (mode 0600), is what keeps
//! other users' processes from reading every value and sending mail as the user (issue 12,
//! finding 8). `redis-cli -a TOKEN` and `redis-benchmark -a TOKEN` send it.

use std::path::Path;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Bytes of randomness in a token (printed as twice as many hex digits).
const TOKEN_BYTES: usize = 32;

/// A token failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The file could not be read or written.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file does not hold a token.
    #[error("token file {0} does not hold a token (64 hex digits)")]
    Malformed(std::path::PathBuf),
}

/// The agent's access token.
///
/// # Security
/// Whoever holds it can use the agent as its owner does. Wiped on drop, compared in constant
/// time, never printed.
#[derive(Clone)]
pub struct AccessToken(Zeroizing<String>);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl AccessToken {
    /// A fresh token.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut raw = Zeroizing::new([0u8; TOKEN_BYTES]);
        rng.fill_bytes(&mut raw[..]);
        let mut text = Zeroizing::new(String::with_capacity(2 * TOKEN_BYTES));
        for b in raw.iter() {
            text.push_str(&format!("{b:02x}"));
        }
        AccessToken(text)
    }

    /// Reads the token in `path`.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let token = text.trim();
        if token.len() != 2 * TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Malformed(path.to_path_buf()));
        }
        Ok(AccessToken(Zeroizing::new(token.to_string())))
    }

    /// Reads the token in `path`, or makes one there (mode 0600, fsynced with its directory).
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        if path.exists() {
            return Self::load(path);
        }
        let token = Self::generate(&mut rand::rng());
        crate::fsutil::write_private(path, token.0.as_bytes()).map_err(|source| {
            TokenError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(token)
    }

    /// The token's text, to send (`AUTH <token>`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if `presented` is this token (in constant time for tokens of the right length).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_private_files_and_compare_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.token");
        let t = AccessToken::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = AccessToken::load_or_create(&path).unwrap();
        assert!(again.matches(t.as_str().as_bytes()));
        assert!(!t.matches(b"nope"));
        let mut other = t.as_str().as_bytes().to_vec();
        other[0] ^= 1;
        assert!(!t.matches(&other));
        assert_eq!(format!("{t:?}"), "AccessToken(<redacted>)");
        std::fs::write(dir.path().join("bad"), "xyz").unwrap();
        assert!(matches!(
            AccessToken::load(&dir.path().join("bad")),
            Err(TokenError::Malformed(_))
        ));
    }
}
