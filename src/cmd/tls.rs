//! The TLS flags every service and client shares, and the loud warning for plain TCP.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use shroud_net::transport::{ClientTls, Identity, ServerTls};

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

/// The client certificate presented to storage, which accepts only proxies (and the
/// operator's `storage stats`).
#[derive(Args, Clone, Debug, Default)]
pub struct IdentityArgs {
    /// PEM client certificate to present to storage (`shroud certs` writes proxy.pem).
    #[arg(long)]
    pub client_cert: Option<PathBuf>,
    /// Its PEM private key (proxy.key).
    #[arg(long)]
    pub client_key: Option<PathBuf>,
}

impl IdentityArgs {
    /// The identity, required unless `insecure_plaintext`; `flags` names the two flags in
    /// the error (for example `--storage-client-cert/--storage-client-key`).
    pub fn load(&self, insecure_plaintext: bool, flags: &str) -> Result<Option<Identity>> {
        match (&self.client_cert, &self.client_key, insecure_plaintext) {
            (Some(c), Some(k), false) => Ok(Some(Identity::from_pem_files(c, k)?)),
            (None, None, true) => Ok(None),
            (_, _, true) => bail!("--insecure-plaintext cannot be combined with {flags}"),
            _ => bail!(
                "storage accepts only proxies with a client certificate: give {flags} \
                 (`shroud certs` writes proxy.pem and proxy.key)"
            ),
        }
    }
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
        self.build_with(None, insecure_plaintext, link)
    }

    /// Mutual TLS: as [`ServerTlsArgs::build`], and every client must present a certificate
    /// that `client_ca` issued (`--client-ca`, required with TLS).
    pub fn build_mutual(
        &self,
        client_ca: Option<&Path>,
        insecure_plaintext: bool,
        link: &str,
    ) -> Result<ServerTls> {
        let certified = self.tls_cert.is_some() || self.tls_key.is_some();
        match (client_ca, insecure_plaintext) {
            (Some(_), true) => bail!("--insecure-plaintext cannot be combined with --client-ca"),
            (None, false) if certified => bail!(
                "the {link} link needs --client-ca: the CA whose client certificates proxies \
                 present (`shroud certs` writes ca.pem and proxy.pem)"
            ),
            (ca, _) => self.build_with(ca, insecure_plaintext, link),
        }
    }

    fn build_with(
        &self,
        client_ca: Option<&Path>,
        insecure_plaintext: bool,
        link: &str,
    ) -> Result<ServerTls> {
        match (&self.tls_cert, &self.tls_key, insecure_plaintext) {
            (Some(c), Some(k), false) => Ok(match client_ca {
                Some(ca) => ServerTls::mutual(c, k, ca)?,
                None => ServerTls::from_pem_files(c, k)?,
            }),
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
        self.build_as(None, insecure_plaintext, link)
    }

    /// As [`ClientTlsArgs::build`], presenting `identity` to a server that asks for one.
    pub fn build_as(
        &self,
        identity: Option<&Identity>,
        insecure_plaintext: bool,
        link: &str,
    ) -> Result<ClientTls> {
        match (&self.ca, &self.pin_cert, insecure_plaintext) {
            (Some(ca), None, false) => {
                Ok(ClientTls::with_ca_file_as(ca, &self.server_name, identity)?)
            }
            (None, Some(pin), false) => Ok(ClientTls::with_pinned_cert_as(pin, identity)?),
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
