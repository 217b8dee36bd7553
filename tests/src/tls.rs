//! Throwaway certificates, and a TLS-terminating proxy for the Schema Registry test double.
//!
//! Kafka itself speaks TLS (the broker of `kev_tests::broker` takes the CA's server
//! certificate, and client certificates it signs for mutual TLS); the registry test double is
//! plain HTTP, so the proxy serves it over HTTPS. What is tested there is the client side (kev's
//! settings, certificate checks, error messages), which is what kev owns.

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

/// A CA made for one test, and a server certificate it signed for `127.0.0.1` and `localhost`.
#[derive(Clone)]
pub struct TestCa {
    pub ca_pem: String,
    pub server_cert_pem: String,
    /// PKCS#8, unencrypted.
    pub server_key_pem: String,
    ca_key_pem: String,
    ca_params: CertificateParams,
}

/// A client certificate and its key (PKCS#8), signed by a [`TestCa`].
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        TestCa::for_names(name, &["127.0.0.1", "localhost"])
    }

    /// A CA whose server certificate names `names` (IP addresses and DNS names).
    pub fn for_names(name: &str, names: &[&str]) -> TestCa {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, format!("kev test CA {name}"));
        let ca_cert = ca.clone().self_signed(&ca_key).unwrap();
        let mut made = TestCa {
            ca_pem: ca_cert.pem(),
            server_cert_pem: String::new(),
            server_key_pem: String::new(),
            ca_key_pem: ca_key.serialize_pem(),
            ca_params: ca,
        };
        let server = made.server(names);
        (made.server_cert_pem, made.server_key_pem) = (server.cert_pem, server.key_pem);
        made
    }

    fn issuer(&self) -> Issuer<'static, KeyPair> {
        Issuer::new(self.ca_params.clone(), KeyPair::from_pem(&self.ca_key_pem).unwrap())
    }

    /// Another server certificate, for `names` (the first is its common name).
    pub fn server(&self, names: &[&str]) -> ClientCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        ClientCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// A client certificate with common name `cn` (the principal Kafka's mutual TLS sees).
    pub fn client(&self, cn: &str) -> ClientCert {
        self.client_in(cn, None)
    }

    /// A client certificate for user `cn` in `group` (Kubernetes reads the organization as the
    /// user's group, such as `system:nodes` for a kubelet).
    pub fn client_in(&self, cn: &str, group: Option<&str>) -> ClientCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(g) = group {
            params.distinguished_name.push(DnType::OrganizationName, g);
        }
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        ClientCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    fn server_config(&self) -> rustls::ServerConfig {
        let certs = rustls_pemfile_certs(&self.server_cert_pem);
        use rustls::pki_types::pem::PemObject;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).unwrap();
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap()
    }
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).map(|c| c.unwrap()).collect()
}

/// Listens with TLS on `listener` and forwards each connection's plaintext to `upstream`.
pub fn proxy(listener: std::net::TcpListener, upstream: SocketAddr, ca: &TestCa, cancel: CancellationToken) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config()));
    listener.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        loop {
            let (client, _) = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A failed handshake (an untrusted CA on the client side) just closes.
                let Ok(mut tls) = acceptor.accept(client).await else { return };
                let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
}
