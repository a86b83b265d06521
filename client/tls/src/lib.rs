//! TLS for smq's listeners and connections: rustls settings read from PEM files ([`ServerTls`]
//! from a server's `--tls-cert`, `--tls-key` and optional `--tls-client-ca`; [`ClientTls`] from a
//! client's `--tls-ca`), the handshakes on both sides, and errors that name the file or say
//! what the peer got wrong. Without these settings nothing here runs: plaintext connections do
//! not pass through this crate.

#[cfg(feature = "axum")]
pub mod listener;
mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

pub use stream::MaybeTls;
pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::server::TlsStream as ServerTlsStream;

/// The first byte of every TLS connection (a handshake record: the ClientHello). A server that
/// sees another first byte has a plaintext client and can tell it so in its own protocol.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {path} holds no PEM {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("the TLS settings are not usable: {0}")]
    Settings(String),
    #[error("--tls-cert and --tls-key go together: give both, or neither for plaintext")]
    UnpairedKey,
    #[error(
        "--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked only \
         over TLS"
    )]
    ClientCaWithoutCert,
    #[error("`{address}` has no host name or IP address to check the certificate against")]
    ServerName { address: String },
    #[error("TLS handshake with {peer} failed: {reason}")]
    Handshake {
        peer: String,
        reason: String,
        /// The connection broke (reset, closed) rather than TLS refusing the peer: another try
        /// may succeed.
        transient: bool,
    },
}

impl TlsError {
    /// Whether trying again may succeed: a connection that broke during the handshake, not a
    /// certificate refused or a setting wrong.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TlsError::Handshake {
                transient: true,
                ..
            }
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in the PEM file `path` (at least one).
fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "the private key file (--tls-key)",
            path: path.to_owned(),
            expected: "PRIVATE KEY",
        },
        error => TlsError::File {
            what: "the private key file (--tls-key)",
            path: path.to_owned(),
            reason: error.to_string(),
        },
    })
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(what, path)? {
        roots.add(certificate).map_err(|error| TlsError::File {
            what,
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    }
    Ok(roots)
}

/// A server's TLS: its certificate chain and key, and when client certificates are required, the
/// CA they must chain to.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    cert: PathBuf,
    requires_client_certificates: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field(
                "requires_client_certificates",
                &self.requires_client_certificates,
            )
            .finish()
    }
}

/// `--tls-cert` and `--tls-key` as given: both (`Some`) or neither (`None`), never one alone.
pub fn cert_and_key<'a>(
    cert: Option<&'a Path>,
    key: Option<&'a Path>,
) -> Result<Option<(&'a Path, &'a Path)>, TlsError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => Err(TlsError::UnpairedKey),
    }
}

impl ServerTls {
    /// A server's TLS as its flags `--tls-cert`, `--tls-key` (both or neither) and
    /// `--tls-client-ca` (only with them) ask for; `None`: plaintext.
    pub fn from_flags(
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
    ) -> Result<Option<ServerTls>, TlsError> {
        match cert_and_key(cert, key)? {
            Some((cert, key)) => ServerTls::from_files(cert, key, client_ca).map(Some),
            None if client_ca.is_some() => Err(TlsError::ClientCaWithoutCert),
            None => Ok(None),
        }
    }

    /// Reads `cert` (the chain, leaf first) and `key` (PKCS#8, PKCS#1 or SEC1), and `client_ca`
    /// if given: then only clients presenting a certificate signed by it get in.
    pub fn from_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<ServerTls, TlsError> {
        let chain = read_certificates("the certificate file (--tls-cert)", cert)?;
        let key = read_key(key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Settings(error.to_string()))?;
        let builder = match client_ca {
            Some(path) => {
                let roots = roots("the client CA file (--tls-client-ca)", path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|error| TlsError::Settings(error.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(chain, key).map_err(|error| {
            TlsError::Settings(format!(
                "{}: the key does not fit the certificate: {error}",
                cert.display()
            ))
        })?;
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            cert: cert.to_owned(),
            requires_client_certificates: client_ca.is_some(),
        })
    }

    /// The TLS handshake on an accepted connection.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<ServerTlsStream<TcpStream>> {
        self.acceptor.accept(stream).await
    }
}

/// A client's TLS: the CA that servers' certificates must chain to, and optionally the
/// certificate and key this client presents to servers that require one.
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    ca: PathBuf,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").field("ca", &self.ca).finish()
    }
}

impl ClientTls {
    /// A client's TLS as its flags `--tls-ca`, `--tls-cert` and `--tls-key` (both or neither:
    /// the certificate it presents) ask for; `None` without `--tls-ca`: plaintext.
    pub fn from_flags(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<ClientTls>, TlsError> {
        let identity = cert_and_key(cert, key)?;
        ca.map(|ca| ClientTls::build(ca, identity)).transpose()
    }

    /// Trusts the CA certificates in `ca` (PEM) and no others.
    pub fn from_ca_file(ca: &Path) -> Result<ClientTls, TlsError> {
        ClientTls::build(ca, None)
    }

    /// Trusts `ca` and presents `cert` and `key` to servers that require client certificates
    /// (`--tls-client-ca` on the server).
    pub fn with_client_certificate(
        ca: &Path,
        cert: &Path,
        key: &Path,
    ) -> Result<ClientTls, TlsError> {
        ClientTls::build(ca, Some((cert, key)))
    }

    fn build(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        let roots = roots("the CA file (--tls-ca)", ca)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Settings(error.to_string()))?
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => {
                let chain = read_certificates("the certificate file (--tls-cert)", cert)?;
                builder
                    .with_client_auth_cert(chain, read_key(key)?)
                    .map_err(|error| {
                        TlsError::Settings(format!(
                            "{}: the key does not fit the certificate: {error}",
                            cert.display()
                        ))
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            ca: ca.to_owned(),
        })
    }

    /// The TLS handshake on a connection to `address` (`host:port`): the server's certificate
    /// must name `host` and chain to the CA. Errors say what to check.
    pub async fn connect(
        &self,
        address: &str,
        stream: TcpStream,
    ) -> Result<ClientTlsStream<TcpStream>, TlsError> {
        let name = server_name(address)?;
        self.connector
            .connect(name, stream)
            .await
            .map_err(|error| TlsError::Handshake {
                peer: address.to_owned(),
                reason: explain(&error, &self.ca),
                transient: rustls_error(&error).is_none(),
            })
    }
}

/// The host of `host:port` (`[v6]:port` too) as rustls checks it against the certificate.
fn server_name(address: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName {
        address: address.to_owned(),
    })
}

fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// A handshake error with what to do about it.
fn explain(error: &io::Error, ca: &Path) -> String {
    match rustls_error(error) {
        Some(rustls::Error::InvalidCertificate(reason)) => format!(
            "its certificate is not trusted ({reason:?}): it must be signed by a CA in {} (--tls-ca) and name the host connected to",
            ca.display()
        ),
        Some(rustls::Error::InvalidMessage(_)) | Some(rustls::Error::InappropriateMessage { .. }) => {
            format!("it did not answer in TLS ({error}): does it serve TLS on this port (--tls-cert)?")
        }
        Some(rustls::Error::AlertReceived(alert)) => format!(
            "it refused the handshake ({alert:?}): if it requires client certificates (--tls-client-ca), give this client one signed by that CA"
        ),
        _ if error.kind() == io::ErrorKind::UnexpectedEof => {
            "it closed the connection during the handshake: does it serve TLS on this port (--tls-cert)?".to_owned()
        }
        _ => error.to_string(),
    }
}

/// Whether the first byte a client sent opens a TLS handshake. Waits for that byte; a client
/// that closes before sending one is not TLS.
pub async fn starts_with_tls(stream: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 1];
    let read = stream.peek(&mut first).await?;
    Ok(read == 1 && first[0] == TLS_HANDSHAKE_RECORD)
}

#[cfg(test)]
mod tests;
