//! The server's certificate from its PEM files: read, checked against its key, and reloaded
//! when either file's modification time changes (looked at on a handshake, at most every
//! `reload_check_ms`); a reload that fails keeps serving the previous certificate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustls::InconsistentKeys;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

use super::{TlsConfig, TlsError};

/// The certificates in the PEM file `path`, at least one.
pub(super) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let malformed = |reason: String| TlsError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(e.to_string()))?;
    if chain.is_empty() {
        return Err(malformed("none found".into()));
    }
    Ok(chain)
}

/// The chain in `cert` with the key in `key`, checked to belong together.
fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates(cert)?;
    let unusable = |reason: String| TlsError::Key {
        path: key.to_owned(),
        reason,
    };
    let der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| unusable(key_reason(&e)))?;
    let signing_key = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| unusable(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(_) => Err(TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
    }
}

/// Why a key file did not parse, without quoting any of it.
fn key_reason(error: &pem::Error) -> String {
    match error {
        pem::Error::NoItemsFound => "none found".into(),
        pem::Error::MissingSectionEnd { .. } => "a section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line".into(),
        pem::Error::Base64Decode(_) => "invalid base64".into(),
        _ => "malformed".into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

/// The server's certificate, reloaded when the certificate or key file's modification time
/// changes (looked at on a handshake, at most every `check_every`).
pub(super) struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    check_every: Duration,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded>,
}

/// What is served now, and from which versions of the files.
struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: Stamps,
    checked_at: Instant,
}

/// The files' modification times (`None`: unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamps {
    cert: Option<SystemTime>,
    key: Option<SystemTime>,
}

impl Stamps {
    fn of(cert: &Path, key: &Path) -> Self {
        let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Stamps {
            cert: modified(cert),
            key: modified(key),
        }
    }
}

impl ReloadingCert {
    pub(super) fn load(
        config: &TlsConfig,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        // The times first: a change while reading is seen at the next check.
        let stamps = Stamps::of(&config.cert_file, &config.key_file);
        let key = load_certified_key(&config.cert_file, &config.key_file, &provider)?;
        Ok(ReloadingCert {
            cert_file: config.cert_file.clone(),
            key_file: config.key_file.clone(),
            check_every: Duration::from_millis(config.reload_check_ms),
            provider,
            state: Mutex::new(Loaded {
                key: Arc::new(key),
                stamps,
                checked_at: Instant::now(),
            }),
        })
    }

    /// The certificate to serve at `now`, reloaded first if it is time to check and a file
    /// changed. A failed reload is logged and retried when a file changes again.
    fn current(&self, now: Instant) -> Arc<CertifiedKey> {
        let mut loaded = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(loaded.checked_at) >= self.check_every {
            loaded.checked_at = now;
            let stamps = Stamps::of(&self.cert_file, &self.key_file);
            if stamps != loaded.stamps {
                loaded.stamps = stamps;
                match load_certified_key(&self.cert_file, &self.key_file, &self.provider) {
                    Ok(key) => {
                        loaded.key = Arc::new(key);
                        info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
                    }
                    Err(error) => {
                        warn!(%error, "TLS certificate not reloaded: serving the previous one");
                    }
                }
            }
        }
        Arc::clone(&loaded.key)
    }
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("check_every", &self.check_every)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    use super::*;

    /// Writes a new CA's certificate for `localhost` and its key to `dir`; returns the config.
    fn write_certificate(dir: &Path) -> TlsConfig {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("certificate");
        let config = TlsConfig {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            client_ca_file: None,
            reload_check_ms: 1_000,
        };
        std::fs::write(&config.cert_file, cert.pem()).expect("write cert");
        std::fs::write(&config.key_file, key.serialize_pem()).expect("write key");
        config
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn a_changed_certificate_is_served_after_the_check_interval_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("dir");
        let config = write_certificate(dir.path());
        let resolver = ReloadingCert::load(&config, provider()).expect("load");
        let start = Instant::now();
        let first = resolver.current(start);

        write_certificate(dir.path());
        assert!(
            Arc::ptr_eq(&first, &resolver.current(start)),
            "checked too early"
        );
        let second = resolver.current(start + Duration::from_secs(2));
        assert_ne!(first.cert, second.cert, "not reloaded");

        std::fs::write(&config.cert_file, "not a certificate").expect("write");
        let kept = resolver.current(start + Duration::from_secs(4));
        assert!(
            Arc::ptr_eq(&second, &kept),
            "a broken certificate replaced a good one"
        );
    }
}
