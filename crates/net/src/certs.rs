//! A development CA, one server certificate and one proxy (client) certificate signed by it,
//! for running the proxy and storage with TLS on one machine. Storage accepts only clients
//! whose certificate its `--client-ca` issued: the proxy presents `proxy.pem`. Each
//! certificate is limited to its role by its extended key usage (server or client
//! authentication, RFC 5280 section 4.2.1.12), so the server key cannot act as a proxy. Not
//! for production: use your own PKI there.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

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
    /// The proxy's client certificate, which storage requires (`--storage-client-cert`).
    pub proxy_cert: PathBuf,
    /// Its private key (`--storage-client-key`; mode 0600).
    pub proxy_key: PathBuf,
}

impl CertFiles {
    /// The files [`generate`] writes into `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        CertFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            proxy_cert: dir.join("proxy.pem"),
            proxy_key: dir.join("proxy.key"),
        }
    }
}

/// Writes `ca.pem`, `server.pem` and `server.key` (the server certificate valid for `names`,
/// DNS names or IP addresses), and `proxy.pem` and `proxy.key` (a client certificate for
/// proxies) into `dir`.
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
    let files = CertFiles::in_dir(dir);
    std::fs::write(&files.ca, ca_cert.pem()).map_err(io(&files.ca))?;
    let roles = [
        (
            names.to_vec(),
            "shroud server",
            ExtendedKeyUsagePurpose::ServerAuth,
            &files.cert,
            &files.key,
        ),
        (
            Vec::new(),
            "shroud proxy",
            ExtendedKeyUsagePurpose::ClientAuth,
            &files.proxy_cert,
            &files.proxy_key,
        ),
    ];
    for (names, name, usage, cert_path, key_path) in roles {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer)?;
        std::fs::write(cert_path, cert.pem()).map_err(io(cert_path))?;
        write_private(key_path, key.serialize_pem().as_bytes()).map_err(io(key_path))?;
    }
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
