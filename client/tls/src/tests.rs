use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::testing::TestPki;
use super::*;

/// A TLS echo server for one connection; returns its address.
async fn echo_server(tls: ServerTls) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        if let Ok(mut stream) = tls.accept(stream).await {
            let mut buf = [0u8; 5];
            if stream.read_exact(&mut buf).await.is_ok() {
                let _ = stream.write_all(&buf).await;
                let _ = stream.flush().await;
            }
        }
    });
    address
}

/// Connects with `client` and checks that what it sends comes back.
async fn echoes(client: &ClientTls, address: &str) {
    let tcp = TcpStream::connect(address).await.unwrap();
    let mut stream = client.connect(address, tcp).await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    let mut answer = [0u8; 5];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"hello");
}

#[tokio::test]
async fn a_client_trusting_the_ca_talks_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let server = ServerTls::from_files(&pki.cert, &pki.key, None).unwrap();
    let address = echo_server(server).await;
    echoes(&ClientTls::from_ca_file(&pki.ca).unwrap(), &address).await;
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_told_the_certificate_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let address = echo_server(ServerTls::from_files(&pki.cert, &pki.key, None).unwrap()).await;
    let client = ClientTls::from_ca_file(&pki.other_ca).unwrap();
    let tcp = TcpStream::connect(&address).await.unwrap();
    let error = client.connect(&address, tcp).await.unwrap_err().to_string();
    assert!(error.contains("not trusted"), "{error}");
    assert!(error.contains("--tls-ca"), "{error}");
}

#[tokio::test]
async fn a_server_requiring_client_certificates_refuses_a_client_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let server = ServerTls::from_files(&pki.cert, &pki.key, Some(&pki.ca)).unwrap();
    let address = echo_server(server).await;
    // Without a certificate: TLS 1.3 finishes the client's side of the handshake before the
    // server checks, so the refusal shows on the first read.
    let client = ClientTls::from_ca_file(&pki.ca).unwrap();
    let tcp = TcpStream::connect(&address).await.unwrap();
    let refused = match client.connect(&address, tcp).await {
        Err(error) => error.to_string(),
        Ok(mut stream) => {
            let _ = stream.write_all(b"hello").await;
            let mut answer = [0u8; 5];
            stream
                .read_exact(&mut answer)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");

    let server = ServerTls::from_files(&pki.cert, &pki.key, Some(&pki.ca)).unwrap();
    let address = echo_server(server).await;
    let client =
        ClientTls::with_client_certificate(&pki.ca, &pki.client_cert, &pki.client_key).unwrap();
    echoes(&client, &address).await;
}

#[tokio::test]
async fn a_tls_client_on_a_plaintext_port_is_told_so() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let _ = stream.read(&mut buf).await;
        let _ = stream.write_all(b"\0\0\0\x10not tls at all!!").await;
    });
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let client = ClientTls::from_ca_file(&pki.ca).unwrap();
    let tcp = TcpStream::connect(&address).await.unwrap();
    let error = client.connect(&address, tcp).await.unwrap_err().to_string();
    assert!(error.contains("does it serve TLS"), "{error}");
}

#[test]
fn missing_and_empty_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let missing = dir.path().join("nope.pem");
    let error = ServerTls::from_files(&missing, &pki.key, None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("--tls-cert") && error.contains("nope.pem"),
        "{error}"
    );
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let error = ClientTls::from_ca_file(&empty).unwrap_err().to_string();
    assert!(
        error.contains("--tls-ca") && error.contains("no PEM"),
        "{error}"
    );
    let error = ServerTls::from_files(&pki.cert, &pki.client_key, None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("does not fit"), "{error}");
}

#[test]
fn server_names_come_from_the_host_part() {
    assert!(matches!(
        server_name("127.0.0.1:10911").unwrap(),
        ServerName::IpAddress(_)
    ));
    assert!(matches!(
        server_name("[::1]:10911").unwrap(),
        ServerName::IpAddress(_)
    ));
    assert!(matches!(
        server_name("broker1.example.com:10911").unwrap(),
        ServerName::DnsName(_)
    ));
}

#[test]
fn the_flags_pair_cert_and_key_and_need_them_for_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let (cert, key, ca) = (
        Some(pki.cert.as_path()),
        Some(pki.key.as_path()),
        Some(pki.ca.as_path()),
    );
    assert!(ServerTls::from_flags(None, None, None).unwrap().is_none());
    assert!(ServerTls::from_flags(cert, key, ca).unwrap().is_some());
    for (cert, key) in [(cert, None), (None, key)] {
        let error = ServerTls::from_flags(cert, key, None).unwrap_err();
        assert!(matches!(error, TlsError::UnpairedKey), "{error}");
        let error = ClientTls::from_flags(ca, cert, key).unwrap_err();
        assert!(matches!(error, TlsError::UnpairedKey), "{error}");
    }
    let error = ServerTls::from_flags(None, None, ca).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("--tls-client-ca needs --tls-cert and --tls-key"),
        "{error}"
    );
    assert!(ClientTls::from_flags(None, None, None).unwrap().is_none());
    assert!(ClientTls::from_flags(ca, None, None).unwrap().is_some());
}
