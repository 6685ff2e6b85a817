//! TLS settings for the `serve_tls` functions of the runtime adapters (feature `tls`): rustls
//! with its `ring` provider, certificates loaded from PEM files and replaceable while running;
//! and for their clients' `wss://` connections, [`client_config`] with the Mozilla root store.
//!
//! Every runtime adapter serves its TLS connections, and its clients make their `wss://` ones,
//! with [`TlsStream`], on rustls's unbuffered API over any `futures-io` socket: it reads the
//! socket in 64 KiB steps into a buffer its thread's connections share, decrypts the records
//! there, and sends what it encrypts straight from another shared buffer, so an idle
//! connection holds no TLS buffer.
//!
//! ```no_run
//! # fn run() -> Result<(), anyws_hyper::tls::TlsError> {
//! use anyws_hyper::tls::{server_config, Certificates};
//!
//! let certificates = Certificates::from_pem_files("cert.pem", "key.pem")?;
//! let config = server_config(certificates.clone());
//! // ... serve with `config`; later, after the files were renewed:
//! certificates.reload_pem_files("cert.pem", "key.pem")?;
//! # Ok(()) }
//! ```

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

pub use stream::{TlsHandshake, TlsSide, TlsStream};

mod stream;
pub use rustls;

/// A certificate chain or key that could not be used, with the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file holds no PEM certificate (`-----BEGIN CERTIFICATE-----`).
    #[error("{}: no PEM certificate in the file", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[error("{}: no PEM private key in the file", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The file's contents are malformed, or the key is of a kind rustls cannot sign with, or
    /// it does not belong to the certificate.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// The server's certificate, which the application can replace while running: handshakes
/// after [`replace`](Self::replace) or [`reload_pem_files`](Self::reload_pem_files) use the new
/// one, and connections already open carry on. Give it to [`server_config`].
pub struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates").finish_non_exhaustive()
    }
}

impl Certificates {
    /// Serves `key` (a certificate chain and its signing key).
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Loads a PEM certificate chain (leaf first) and its PEM private key; an error names the
    /// file at fault.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Arc<Self>, TlsError> {
        Ok(Self::new(load_pem_files(
            cert_chain.as_ref(),
            key.as_ref(),
        )?))
    }

    /// Replaces the certificate for the handshakes to come.
    pub fn replace(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
    }

    /// Loads the files anew (say, after a renewal) and serves them from the next handshake on;
    /// on an error the certificate in use stays.
    pub fn reload_pem_files(
        &self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<(), TlsError> {
        self.replace(load_pem_files(cert_chain.as_ref(), key.as_ref())?);
        Ok(())
    }

    /// The certificate in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A rustls server configuration for `certificates`: the `ring` provider with its default
/// protocol versions (TLS 1.2 and 1.3) and cipher suites, no client authentication, and ALPN
/// `h2` (preferred) and `http/1.1`: the serving functions speak both.
pub fn server_config(certificates: Arc<Certificates>) -> ServerConfig {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring's provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// A rustls client configuration: the `ring` provider with its default protocol versions,
/// the Mozilla root store of `webpki-roots`, and ALPN `http/1.1` (a WebSocket handshake is an
/// HTTP/1.1 upgrade). What the adapters' `connect` functions use for `wss://` unless given one.
pub fn client_config() -> ClientConfig {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring's provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// [`client_config`], made once.
pub(crate) fn default_client_config() -> Arc<ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<ClientConfig>> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| Arc::new(client_config())).clone()
}

/// [`server_config`] for the certificate chain and key of two PEM files.
pub fn load_pem(
    cert_chain: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<ServerConfig, TlsError> {
    Ok(server_config(Certificates::from_pem_files(
        cert_chain, key,
    )?))
}

/// rustls's `ring` provider: it builds with a C compiler alone, where `aws-lc-rs` (rustls's
/// default, which adds post-quantum key exchange) also needs cmake. rustls marks it deprecated
/// for that reason only; clients fall back to X25519.
///
/// Its key exchange groups are put in the order X25519, P-256, P-384: the provider lists P-384
/// first, and ring's P-384 costs several times X25519 per handshake, while browsers offer
/// X25519 first.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::kx_group;
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(provider)
}

fn load_pem_files(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let invalid = |path: &Path, message: String| TlsError::Invalid {
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert_path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(cert_path, error.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = match PrivateKeyDer::from_pem_slice(&read(key_path)?) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key_path.to_owned(),
            })
        }
        Err(error) => return Err(invalid(key_path, error.to_string())),
    };
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|error| invalid(key_path, format!("{error} (with {})", cert_path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("anyws-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn loads_and_reloads_pem_files() {
        let dir = temp_dir("load");
        let (cert, key) = files(&dir);
        let certificates = Certificates::from_pem_files(&cert, &key).unwrap();
        let first = certificates.current();
        let config = server_config(certificates.clone());
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let (cert2, key2) = files(&temp_dir("load2"));
        certificates.reload_pem_files(&cert2, &key2).unwrap();
        assert_ne!(first.cert, certificates.current().cert);
        // A failed reload keeps the certificate in use.
        let current = certificates.current();
        assert!(certificates.reload_pem_files(&cert2, &key).is_err());
        assert_eq!(current.cert, certificates.current().cert);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = temp_dir("errors");
        let (cert, key) = files(&dir);
        let missing = dir.join("missing.pem");
        let error = Certificates::from_pem_files(&missing, &key).unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }));
        assert!(error.to_string().contains("missing.pem"), "{error}");
        // A key where the certificate should be, and the reverse.
        let error = Certificates::from_pem_files(&key, &key).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        assert!(error.to_string().contains("key.pem"), "{error}");
        let error = Certificates::from_pem_files(&cert, &cert).unwrap_err();
        assert!(matches!(error, TlsError::NoKey { .. }), "{error}");
        assert!(error.to_string().contains("cert.pem"), "{error}");
        // A key that is not the certificate's.
        let (_, other_key) = files(&temp_dir("errors2"));
        let error = Certificates::from_pem_files(&cert, &other_key).unwrap_err();
        assert!(matches!(error, TlsError::Invalid { .. }), "{error}");
        // Garbage inside the PEM markers.
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = Certificates::from_pem_files(&garbage, &key).unwrap_err();
        assert!(error.to_string().contains("garbage.pem"), "{error}");
    }
}
