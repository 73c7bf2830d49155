//! TLS with rustls (ring provider): server configs for TLS listeners and
//! client configs for TLS upstreams.
//!
//! Listener certificates are chosen by SNI: the first certificate whose SANs
//! cover the requested name (exact or wildcard, checked by webpki as a client
//! would) wins; without SNI, or for an unknown name, the first certificate is
//! the default. Only TLS 1.2 and 1.3; ALPN offers `h2` and `http/1.1`.
//! Certificates and keys (PEM; PKCS#8, PKCS#1 and SEC1 keys) are loaded at
//! start and on every reload; any problem refuses the reload whole.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{self, CertPaths, Config, ListenerTls, Protocol};

/// Why TLS material could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    pub path: String,
    pub reason: String,
}

fn fail(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// TLS to an upstream: the client config and the name to verify.
#[derive(Clone)]
pub struct UpstreamTls {
    pub config: Arc<ClientConfig>,
    pub server_name: Option<ServerName<'static>>,
    /// Identifies the material (CA content, server name) for carry-over.
    pub fingerprint: u64,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One certificate chain with its key, and the chain's leaf for SNI checks.
#[derive(Debug)]
struct Entry {
    key: Arc<CertifiedKey>,
}

impl Entry {
    fn covers(&self, name: &str) -> bool {
        let Ok(name) = ServerName::try_from(name) else {
            return false;
        };
        let Some(leaf) = self.key.cert.first() else {
            return false;
        };
        webpki::EndEntityCert::try_from(leaf)
            .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
    }
}

/// Picks the certificate for a handshake by SNI.
#[derive(Debug)]
struct SniResolver {
    entries: Vec<Entry>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|name| self.entries.iter().find(|e| e.covers(name)));
        chosen.or(self.entries.first()).map(|e| Arc::clone(&e.key))
    }
}

fn load_certified(paths: &CertPaths, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert)
        .map_err(|e| fail(&paths.cert, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(&paths.cert, format!("invalid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(fail(&paths.cert, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .map_err(|e| fail(&paths.key, format!("cannot read the key: {e}")))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| fail(&paths.key, format!("unusable key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        fail(
            &paths.key,
            format!("the key does not match {}: {e}", paths.cert.display()),
        )
    })?;
    Ok(certified)
}

/// A server config for one TLS listener.
pub fn server_config(tls: &ListenerTls) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let entries = tls
        .certs
        .iter()
        .map(|paths| load_certified(paths, &provider).map(|key| Entry { key: Arc::new(key) }))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError {
            path: String::new(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { entries }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's suite order decides (AES-GCM first, as rustls lists them),
    // not whatever a client prefers: what TLS audits expect of a server.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The system's trusted roots, loaded once for the process (on first use,
/// which is at start or on a blocking thread).
pub fn native_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        Arc::new(roots)
    });
    Arc::clone(roots)
}

/// The one builder of client configs: TLS 1.3 and 1.2 with the ring
/// provider, trusting `roots`, no client certificate.
pub fn client_config(roots: Arc<RootCertStore>) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError {
            path: String::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl UpstreamTls {
    /// TLS with the system's roots and the URL's host as the name (the
    /// Prometheus source).
    pub fn system() -> Result<UpstreamTls, TlsError> {
        Ok(UpstreamTls {
            config: Arc::new(client_config(native_roots())?),
            server_name: None,
            fingerprint: 0,
        })
    }
}

/// TLS to one version's endpoints: the CA file's roots, or the system's;
/// ALPN offers what `protocol` speaks (h2, http/1.1, or both for `auto`).
pub fn upstream(tls: &config::UpstreamTls, protocol: Protocol) -> Result<UpstreamTls, TlsError> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    protocol.as_str().hash(&mut hasher);
    let roots = match &tls.ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let pem = std::fs::read(path).map_err(|e| fail(path, format!("cannot read: {e}")))?;
            pem.hash(&mut hasher);
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| fail(path, format!("invalid PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| fail(path, format!("unusable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(fail(path, "no CA certificate in the file"));
            }
            Arc::new(roots)
        }
        None => {
            let roots = native_roots();
            if roots.is_empty() {
                return Err(TlsError {
                    path: "system roots".into(),
                    reason: "no trusted roots found".into(),
                });
            }
            roots
        }
    };
    let server_name = match &tls.server_name {
        Some(name) => {
            name.hash(&mut hasher);
            Some(ServerName::try_from(name.clone()).map_err(|e| TlsError {
                path: "server_name".into(),
                reason: format!("{name:?} is not a valid name: {e}"),
            })?)
        }
        None => None,
    };
    let mut config = client_config(roots)?;
    config.alpn_protocols = match protocol {
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::H2 => vec![b"h2".to_vec()],
        Protocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(UpstreamTls {
        config: Arc::new(config),
        server_name,
        fingerprint: hasher.finish(),
    })
}

/// Every TLS config a gateway config needs, loaded from disk.
#[derive(Clone, Default)]
pub struct TlsMaterial {
    /// Server configs by listener name.
    pub listeners: HashMap<String, Arc<ServerConfig>>,
    /// Upstream TLS by (backend, version).
    pub upstreams: HashMap<(String, String), UpstreamTls>,
}

/// Loads every certificate, key and CA file of `config`; any problem fails
/// the whole load.
pub fn load(config: &Config) -> Result<TlsMaterial, TlsError> {
    let mut material = TlsMaterial::default();
    for listener in &config.listeners {
        if let Some(tls) = &listener.tls {
            material
                .listeners
                .insert(listener.name.clone(), server_config(tls)?);
        }
    }
    for (backend, b) in &config.backends {
        for (version, v) in &b.versions {
            if let Some(tls) = &v.tls {
                material.upstreams.insert(
                    (backend.clone(), version.clone()),
                    upstream(tls, v.protocol)?,
                );
            }
        }
    }
    Ok(material)
}
