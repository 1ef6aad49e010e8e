//! Transport for every link: TLS 1.3/1.2 with rustls, or plain TCP only when a caller asks
//! for it explicitly ([`ServerTls::Plain`], [`ClientTls::Plain`]; the CLI's
//! `--insecure-plaintext`).
//!
//! Clients verify the server either against a CA file (the usual chain check, with the
//! server name) or by pinning the server's exact certificate (the handshake signature is still
//! checked against it). A server may also demand a client certificate ([`ServerTls::mutual`]):
//! storage does, so that only proxies holding an [`Identity`] its CA issued reach it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::punctual::{Gate, PunctualTcp};

/// A byte stream: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// A TLS setup problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("reading {path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid server name {0}")]
    Name(String),
    /// The client-certificate verifier could not be built from the CA given.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn pem_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(path, e))?
        .collect();
    let certs = certs.map_err(|e| pem_err(path, e))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no certificate found"));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c)?;
    }
    Ok(roots)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// How a server accepts connections.
#[derive(Clone)]
#[non_exhaustive]
pub enum ServerTls {
    /// Plain TCP: only for `--insecure-plaintext`.
    Plain,
    /// TLS with this certificate chain and key.
    Tls(TlsAcceptor),
}

impl ServerTls {
    /// TLS from PEM files: the certificate chain and the private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = load_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(ServerTls::Tls(TlsAcceptor::from(Arc::new(config))))
    }

    /// Mutual TLS: as [`ServerTls::from_pem_files`], and every client must present a
    /// certificate chain leading to a CA in `client_ca`, valid for client authentication
    /// (rustls' WebPKI verifier checks the chain, the dates and the extended key usage).
    /// A client without one fails the handshake, before any frame is read.
    pub fn mutual(cert: &Path, key: &Path, client_ca: &Path) -> Result<Self, TlsError> {
        let chain = load_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
        let provider = provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(load_roots(client_ca)?),
            provider.clone(),
        )
        .build()?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        Ok(ServerTls::Tls(TlsAcceptor::from(Arc::new(config))))
    }

    /// Completes the TLS handshake (if any) within `timeout`, so a stalled handshake costs
    /// the server nothing but a timer.
    pub async fn accept(&self, tcp: TcpStream, timeout: Duration) -> std::io::Result<BoxIo> {
        match self {
            ServerTls::Plain => Ok(Box::new(tcp)),
            ServerTls::Tls(acceptor) => {
                let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                Ok(Box::new(tls))
            }
        }
    }
}

/// How a client connects.
#[derive(Clone)]
#[non_exhaustive]
pub enum ClientTls {
    /// Plain TCP: only for `--insecure-plaintext`.
    Plain,
    /// TLS, verifying the server as configured.
    Tls {
        /// The rustls connector.
        connector: TlsConnector,
        /// The name the certificate must carry (for CA verification).
        name: ServerName<'static>,
    },
}

impl ClientTls {
    /// Verifies the server's chain against the CA certificates in `ca` and the name
    /// `server_name` (a DNS name or an IP address).
    pub fn with_ca_file(ca: &Path, server_name: &str) -> Result<Self, TlsError> {
        Self::with_ca_file_as(ca, server_name, None)
    }

    /// As [`ClientTls::with_ca_file`], presenting `identity` if the server asks for one.
    pub fn with_ca_file_as(
        ca: &Path,
        server_name: &str,
        identity: Option<&Identity>,
    ) -> Result<Self, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(load_roots(ca)?);
        Self::from_config(presenting(builder, identity)?, server_name)
    }

    /// Accepts exactly the certificate in `cert` (the first one in the file), whatever its
    /// issuer or name: certificate pinning.
    pub fn with_pinned_cert(cert: &Path) -> Result<Self, TlsError> {
        Self::with_pinned_cert_as(cert, None)
    }

    /// As [`ClientTls::with_pinned_cert`], presenting `identity` if the server asks for one.
    pub fn with_pinned_cert_as(cert: &Path, identity: Option<&Identity>) -> Result<Self, TlsError> {
        let pinned = load_certs(cert)?.swap_remove(0);
        let provider = provider();
        let verifier = Arc::new(Pinned {
            pinned,
            provider: provider.clone(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        Self::from_config(presenting(builder, identity)?, "pinned.invalid")
    }

    fn from_config(config: rustls::ClientConfig, server_name: &str) -> Result<Self, TlsError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| TlsError::Name(server_name.into()))?;
        Ok(ClientTls::Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Connects to `addr` and completes the handshake.
    pub async fn connect(&self, addr: std::net::SocketAddr) -> std::io::Result<BoxIo> {
        self.over(tcp_to(addr).await?).await
    }

    /// As [`ClientTls::connect`], over a [`PunctualTcp`]: a thread of the connection's own
    /// reads it, and its writes can be held and released at a set time through the returned
    /// [`Gate`] (TLS records are sealed while held; only their leaving waits).
    pub async fn connect_punctual(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<(BoxIo, Gate)> {
        let (tcp, gate) = PunctualTcp::new(tcp_to(addr).await?)?;
        Ok((self.over(tcp).await?, gate))
    }

    async fn over(&self, tcp: impl Io) -> std::io::Result<BoxIo> {
        match self {
            ClientTls::Plain => Ok(Box::new(tcp)),
            ClientTls::Tls { connector, name } => {
                Ok(Box::new(connector.connect(name.clone(), tcp).await?))
            }
        }
    }
}

/// A TCP connection to `addr`, without Nagle's delay (frames leave when written).
async fn tcp_to(addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// A client certificate chain and its private key: what a proxy presents to storage.
///
/// # Security
/// The key is the proxy's credential toward storage: whoever holds it may send storage
/// requests (still bounded by storage's admission caps). Keep its file mode 0600.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Reads the chain from `cert` and the key from `key` (PEM, as `shroud certs` writes
    /// `proxy.pem` and `proxy.key`).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Identity {
            chain: load_certs(cert)?,
            key: PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?,
        })
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Finishes a client configuration, with `identity` as its client certificate if given.
fn presenting(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    identity: Option<&Identity>,
) -> Result<rustls::ClientConfig, TlsError> {
    Ok(match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    })
}

/// A verifier that accepts one exact certificate.
#[derive(Debug)]
struct Pinned {
    pinned: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
