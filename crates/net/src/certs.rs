//! A development CA and one server certificate signed by it, for
//! running the proxy and storage with TLS on one machine. Not for production: use your own
//! PKI there.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A certificate that could not be made or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// rcgen refused the parameters or failed to sign.
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files `generate` writes.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The CA certificate, for clients' `--ca`.
    pub ca: PathBuf,
    /// The server certificate chain, for servers' `--tls-cert`.
    pub cert: PathBuf,
    /// The server's private key, for servers' `--tls-key` (mode 0600).
    pub key: PathBuf,
}

/// Writes `ca.pem`, `server.pem` and `server.key` into `dir`, the server certificate valid
/// for `names` (DNS names or IP addresses).
pub fn generate(dir: &Path, names: &[String]) -> Result<CertFiles, CertError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "shroud development CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "shroud server");
    let cert = params.signed_by(&key, &issuer)?;
    let files = CertFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).map_err(io(&files.ca))?;
    std::fs::write(&files.cert, cert.pem()).map_err(io(&files.cert))?;
    write_private(&files.key, key.serialize_pem().as_bytes()).map_err(io(&files.key))?;
    Ok(files)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

/// The default names: this machine over loopback.
pub fn local_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}
