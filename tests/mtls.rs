//! `tls` on an `http` channel: mutual TLS against a loopback HTTPS server
//! that demands a client certificate, with a throwaway CA made here (the
//! server's certificate and the engine's both signed by it).

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// A CA, and a certificate with its key signed by it.
struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "steadfast test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let signed = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca_cert.pem(),
        server: signed(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "partner",
        ),
        client: signed(
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            "steadfast-client",
        ),
    }
}

/// An HTTPS server on loopback that completes a handshake only with a
/// client certificate signed by `pki`'s CA, and answers each request 200.
/// Returns its URL and the count of requests it answered.
async fn mtls_server(pki: &Pki) -> (String, Arc<Mutex<usize>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    steadfast::install_tls_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(pki.server.0.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.server.1.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let answered = Arc::new(Mutex::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                // No client certificate: the handshake fails here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request);
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if request.len() < end + 4 + length {
                        continue;
                    }
                    request.drain(..end + 4 + length);
                    *count.lock().unwrap() += 1;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (url, answered)
}

#[tokio::test]
async fn a_client_certificate_opens_a_partner_that_demands_one() {
    let pki = pki();
    let files = tempfile::tempdir().unwrap();
    let path = |name: &str| files.path().join(name).display().to_string();
    std::fs::write(path("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(path("client.pem"), &pki.client.0).unwrap();
    std::fs::write(path("client.key"), &pki.client.1).unwrap();
    let (url, answered) = mtls_server(&pki).await;

    let policy = r#"
templates:
  once: { retries: 0 }
channels:
  with-cert:
    http:
      url: "${PARTNER}/hook"
      tls: { client_cert: "${DIR}/client.pem", client_key: "${DIR}/client.key", ca: "${DIR}/ca.pem" }
  without-cert:
    http:
      url: "${PARTNER}/hook"
      tls: { ca: "${DIR}/ca.pem" }
flows:
  with-cert: { steps: [ { name: deliver, channel: with-cert, retry: once } ] }
  without-cert: { steps: [ { name: deliver, channel: without-cert, retry: once } ] }
"#;
    let policies = policy_dir(&[("mtls.yaml", policy)]);
    let dir = files.path().display().to_string();
    let node = TestNode::start(
        policies.path(),
        &[("PARTNER", url.as_str()), ("DIR", dir.as_str())],
    )
    .await;

    let id = node.submit_ok("with-cert", json!({"n": 1}), None).await;
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(*answered.lock().unwrap(), 1);

    // The partner's CA alone: the server refuses the handshake.
    let id = node.submit_ok("without-cert", json!({"n": 2}), None).await;
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "dead", "{job}");
    let error = job["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(["tls", "reset", "connect"].contains(&error), "{job}");
    assert_eq!(
        *answered.lock().unwrap(),
        1,
        "nothing was delivered without a certificate"
    );
    node.shutdown().await;
}

/// A certificate file that cannot be read, and a key without its
/// certificate, are errors at their keys when the policy is loaded.
#[test]
fn tls_files_are_checked_when_the_policy_is_loaded() {
    use steadfast::compile::load_policy;
    use steadfast::policy::{EnvMode, MapEnv};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "channels:\n  a:\n    http:\n      url: https://partner.example/\n      \
         tls: { ca: /nonexistent/ca.pem }\n  b:\n    http:\n      url: https://partner.example/\n      \
         tls: { client_key: /nonexistent/k.pem }\n\
         flows:\n  f: { steps: [ { name: s, channel: a, retry: standard }, { name: t, channel: b, retry: standard } ] }\n",
    )
    .unwrap();
    let c = load_policy(
        &[dir.path().to_path_buf()],
        &EnvMode::from_source(MapEnv::new()),
    );
    let errors: Vec<String> = c.errors().map(ToString::to_string).collect();
    let f = file.display();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "{f}:5:18: error: channels.a.http.tls.ca: cannot read `/nonexistent/ca.pem`"
        )),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("channels.b.http.tls.client_key: cannot read"),
        "{errors:?}"
    );
}
