//! The TLS flags every service and client shares, and the loud warning for plain TCP.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use shroud_net::transport::{ClientTls, ServerTls};

/// How a server accepts connections.
#[derive(Args, Clone, Debug, Default)]
pub struct ServerTlsArgs {
    /// PEM certificate chain to serve (see `shroud certs`).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
}

/// How a client verifies the server it connects to.
#[derive(Args, Clone, Debug, Default)]
pub struct ClientTlsArgs {
    /// PEM CA certificate(s) the server's chain must lead to.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Accept exactly this PEM certificate (pinning) instead of checking a CA.
    #[arg(long)]
    pub pin_cert: Option<PathBuf>,
    /// The name the server's certificate must carry (with `--ca`).
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
}

/// Warns loudly that a link is unencrypted.
pub fn warn_plaintext(link: &str) {
    let msg = format!(
        "WARNING: --insecure-plaintext: the {link} link is NOT encrypted or authenticated. \
         Anyone on the network sees and can alter its traffic. Use only for local testing."
    );
    eprintln!("{msg}");
    tracing::warn!("{msg}");
}

impl ServerTlsArgs {
    /// TLS, or plain TCP if (and only if) `insecure_plaintext`.
    pub fn build(&self, insecure_plaintext: bool, link: &str) -> Result<ServerTls> {
        match (&self.tls_cert, &self.tls_key, insecure_plaintext) {
            (Some(c), Some(k), false) => Ok(ServerTls::from_pem_files(c, k)?),
            (None, None, true) => {
                warn_plaintext(link);
                Ok(ServerTls::Plain)
            }
            (_, _, true) => {
                bail!("--insecure-plaintext cannot be combined with --tls-cert/--tls-key")
            }
            _ => bail!(
                "the {link} link needs --tls-cert and --tls-key (see `shroud certs`), or --insecure-plaintext"
            ),
        }
    }
}

impl ClientTlsArgs {
    /// TLS verified by `--ca` or `--pin-cert`, or plain TCP if (and only if) `insecure_plaintext`.
    pub fn build(&self, insecure_plaintext: bool, link: &str) -> Result<ClientTls> {
        match (&self.ca, &self.pin_cert, insecure_plaintext) {
            (Some(ca), None, false) => Ok(ClientTls::with_ca_file(ca, &self.server_name)?),
            (None, Some(pin), false) => Ok(ClientTls::with_pinned_cert(pin)?),
            (None, None, true) => {
                warn_plaintext(link);
                Ok(ClientTls::Plain)
            }
            (Some(_), Some(_), _) => bail!("give either --ca or --pin-cert, not both"),
            (_, _, true) => bail!("--insecure-plaintext cannot be combined with --ca/--pin-cert"),
            _ => bail!(
                "the {link} link needs --ca or --pin-cert to verify the server, or --insecure-plaintext"
            ),
        }
    }
}
