//! A CA and certificates made on the spot in a directory, for tests: a server certificate for
//! `localhost` and 127.0.0.1, a client certificate, and a second CA that signed neither.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// PEM files written into a directory.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA that signed `cert` and `client_cert`.
    pub ca: PathBuf,
    /// The server certificate (SANs `localhost`, `127.0.0.1`, `::1`), also good as a client
    /// certificate, and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A client certificate and key, signed by `ca`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: a client trusting only it refuses the servers.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("valid params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("a key");
    let cert = params.self_signed(&key).expect("a CA certificate");
    (cert, key)
}

fn leaf(name: &str, ca: &rcgen::Certificate, ca_key: &KeyPair) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .expect("valid names");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("a key");
    let cert = params.signed_by(&key, ca, ca_key).expect("a certificate");
    (cert, key)
}

impl TestPki {
    /// Makes the CAs and certificates and writes them as PEM files into `dir`.
    pub fn generate(dir: &Path) -> TestPki {
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        let (ca_cert, ca_key) = ca("smq test CA");
        let (server, server_key) = leaf("smq test server", &ca_cert, &ca_key);
        let (client, client_key) = leaf("smq test client", &ca_cert, &ca_key);
        let (other, _) = ca("another CA");
        TestPki {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("server.pem", server.pem()),
            key: write("server-key.pem", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client-key.pem", client_key.serialize_pem()),
            other_ca: write("other-ca.pem", other.pem()),
        }
    }
}
