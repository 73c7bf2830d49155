//! TLS listeners and upstreams with certificates made at test time: SNI
//! choice, ALPN h2 and http/1.1, rotation by reload, refusal of bad material,
//! upstream TLS with a test CA, key formats, and the handshake time limit.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use switchyard::control::ReloadOutcome;
use switchyard::Gateway;
use tokio::io::AsyncReadExt;

/// A gateway config with one TLS listener serving `certs` (cert, key paths).
fn tls_config(
    certs: &[(std::path::PathBuf, std::path::PathBuf)],
    backend: SocketAddr,
    extra_version: &str,
) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|(c, k)| {
            format!(
                "        - {{ cert: \"{}\", key: \"{}\" }}",
                c.display(),
                k.display()
            )
        })
        .collect();
    format!(
        "workers: 1\naccess_log: false\nlimits:\n  header_read_timeout: 500ms\nlisteners:\n  - name: https\n    bind: \"127.0.0.1:0\"\n    tls:\n      certs:\n{}\nadmin:\n  bind: \"127.0.0.1:0\"\nshutdown:\n  drain_delay: 0s\n  timeout: 2s\nroutes:\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{backend}\"]{extra_version} }}\n",
        list.join("\n")
    )
}

async fn get_over_h1(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    host: &str,
) -> (u16, String) {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let req = Request::get("/headers")
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .expect("req");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_over_h2(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    host: &str,
) -> (u16, String) {
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let uri = format!("https://{host}/headers");
    let req = Request::get(uri).body(Empty::<Bytes>::new()).expect("req");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn sni_picks_the_certificate_for_each_name_and_the_first_is_the_default() {
    let backend = Backend::start("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let (a, wild) = (ca.leaf(&["a.test"]), ca.leaf(&["*.w.test"]));
    let gw = TestGateway::start(&tls_config(
        &[a.write(dir.path(), "a"), wild.write(dir.path(), "w")],
        backend.addr(),
        "",
    ));
    let addr = gw.addr();
    assert_eq!(tls_connect(addr, "a.test", &[]).await.1, a.der);
    assert_eq!(tls_connect(addr, "x.w.test", &[]).await.1, wild.der);
    assert_eq!(
        tls_connect(addr, "deep.x.w.test", &[]).await.1,
        a.der,
        "a wildcard covers one label"
    );
    assert_eq!(
        tls_connect(addr, "unknown.test", &[]).await.1,
        a.der,
        "unknown names get the default"
    );
    assert_eq!(
        tls_connect(addr, "127.0.0.1", &[]).await.1,
        a.der,
        "no SNI gets the default"
    );
}

#[tokio::test]
async fn alpn_h2_and_http11_both_proxy_with_forwarded_proto_https() {
    let backend = Backend::start("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = Ca::new().leaf(&["a.test"]);
    let gw = TestGateway::start(&tls_config(
        &[leaf.write(dir.path(), "a")],
        backend.addr(),
        "",
    ));
    let (stream, _) = tls_connect(gw.addr(), "a.test", &[b"h2"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, body) = get_over_h2(stream, "a.test").await;
    assert_eq!(status, 200);
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
    let (stream, _) = tls_connect(gw.addr(), "a.test", &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = get_over_h1(stream, "a.test").await;
    assert_eq!(status, 200);
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
    // Without ALPN the connection speaks HTTP/1.1.
    let (stream, _) = tls_connect(gw.addr(), "a.test", &[]).await;
    assert_eq!(get_over_h1(stream, "a.test").await.0, 200);
}

#[tokio::test]
async fn a_rotated_certificate_is_served_after_a_reload_and_bad_material_keeps_the_old_one() {
    let backend = Backend::start("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let first = ca.leaf(&["a.test"]);
    let paths = first.write(dir.path(), "a");
    let config = dir.path().join("switchyard.yaml");
    std::fs::write(
        &config,
        tls_config(std::slice::from_ref(&paths), backend.addr(), ""),
    )
    .expect("write config");
    let gateway = Gateway::start_from_file(&config).expect("start");
    let addr = gateway.addr();
    assert_eq!(tls_connect(addr, "a.test", &[]).await.1, first.der);

    let second = ca.leaf(&["a.test"]);
    second.write(dir.path(), "a");
    assert!(matches!(
        gateway.reload().await,
        ReloadOutcome::Applied { .. }
    ));
    assert_eq!(
        tls_connect(addr, "a.test", &[]).await.1,
        second.der,
        "new connections get the new cert"
    );

    // A garbage certificate file: refused whole, the old cert keeps serving.
    std::fs::write(&paths.0, "not a certificate").expect("write garbage");
    match gateway.reload().await {
        ReloadOutcome::Failed(error) => assert!(error.contains("a.crt"), "{error}"),
        other => panic!("a bad certificate must be refused, got {other:?}"),
    }
    assert_eq!(tls_connect(addr, "a.test", &[]).await.1, second.der);

    // A key that does not match the certificate: refused as well.
    let third = ca.leaf(&["a.test"]);
    std::fs::write(&paths.0, &third.cert_pem).expect("write cert");
    std::fs::write(&paths.1, &second.key_pem).expect("write other key");
    match gateway.reload().await {
        ReloadOutcome::Failed(error) => assert!(error.contains("does not match"), "{error}"),
        other => panic!("a mismatched key must be refused, got {other:?}"),
    }
    // A missing key file, too.
    std::fs::remove_file(&paths.1).expect("remove key");
    assert!(matches!(gateway.reload().await, ReloadOutcome::Failed(_)));
    assert_eq!(tls_connect(addr, "a.test", &[]).await.1, second.der);
}

#[tokio::test]
async fn a_stalled_handshake_is_cut_at_header_read_timeout() {
    let backend = Backend::start("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = Ca::new().leaf(&["a.test"]);
    let gw = TestGateway::start(&tls_config(
        &[leaf.write(dir.path(), "a")],
        backend.addr(),
        "",
    ));
    let mut stalled = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the stalled connection was not closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "closed after {:?}",
        started.elapsed()
    );
    // Meanwhile, and after, real clients are served.
    let (stream, _) = tls_connect(gw.addr(), "a.test", &[]).await;
    assert_eq!(get_over_h1(stream, "a.test").await.0, 200);
}

/// A TLS backend: HTTP/1.1 over rustls with `leaf`, answering "secure".
async fn tls_backend(leaf: &Leaf, dir: &Path) -> SocketAddr {
    let (cert, key) = leaf.write(dir, "backend");
    let tls = switchyard::config::ListenerTls {
        certs: vec![switchyard::config::CertPaths { cert, key }],
    };
    let config = switchyard::tls::server_config(&tls).expect("backend TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(Bytes::from("secure")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn upstream_tls_is_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let upstream = tls_backend(&ca.leaf(&["backend.test"]), dir.path()).await;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    let single_tls = |tls: &str| {
        single(&[upstream], "", "").replace(
            &format!("v1: {{ endpoints: [\"{upstream}\"] }}"),
            &format!("v1: {{ endpoints: [\"{upstream}\"], tls: {tls} }}"),
        )
    };
    let client = Client::new();
    let trusted = TestGateway::start(&single_tls(&format!(
        "{{ ca_file: \"{}\", server_name: backend.test }}",
        ca_file.display()
    )));
    let resp = client.get(&trusted.url("/")).await;
    assert_eq!(
        (resp.status.as_u16(), resp.text().as_str()),
        (200, "secure")
    );

    // The certificate names backend.test, not 127.0.0.1: refused, 502.
    let wrong_name = TestGateway::start(&single_tls(&format!(
        "{{ ca_file: \"{}\" }}",
        ca_file.display()
    )));
    assert_eq!(client.get(&wrong_name.url("/")).await.status, 502);

    // Another CA does not vouch for it: refused, 502.
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, Ca::new().pem()).expect("write other CA");
    let untrusted = TestGateway::start(&single_tls(&format!(
        "{{ ca_file: \"{}\", server_name: backend.test }}",
        other.display()
    )));
    assert_eq!(client.get(&untrusted.url("/")).await.status, 502);
}

#[tokio::test]
async fn pkcs1_and_sec1_keys_load() {
    let openssl = require("openssl", "openssl");
    let backend = Backend::start("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&openssl)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // RSA with a PKCS#1 ("RSA PRIVATE KEY") key.
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "rsa8.key",
        "-out",
        "rsa.crt",
        "-days",
        "2",
        "-subj",
        "/CN=rsa.test",
        "-addext",
        "subjectAltName=DNS:rsa.test",
    ]);
    run(&["rsa", "-in", "rsa8.key", "-traditional", "-out", "rsa.key"]);
    // EC with a SEC1 ("EC PRIVATE KEY") key.
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ec8.key",
        "-out",
        "ec.crt",
        "-days",
        "2",
        "-subj",
        "/CN=ec.test",
        "-addext",
        "subjectAltName=DNS:ec.test",
    ]);
    run(&["ec", "-in", "ec8.key", "-out", "ec.key"]);
    let rsa_key = std::fs::read_to_string(dir.path().join("rsa.key")).expect("rsa key");
    let ec_key = std::fs::read_to_string(dir.path().join("ec.key")).expect("ec key");
    assert!(
        rsa_key.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "{rsa_key}"
    );
    assert!(
        ec_key.starts_with("-----BEGIN EC PRIVATE KEY-----"),
        "{ec_key}"
    );
    let certs = [
        (dir.path().join("rsa.crt"), dir.path().join("rsa.key")),
        (dir.path().join("ec.crt"), dir.path().join("ec.key")),
    ];
    let gw = TestGateway::start(&tls_config(&certs, backend.addr(), ""));
    for name in ["rsa.test", "ec.test"] {
        let (stream, cert) = tls_connect(gw.addr(), name, &[]).await;
        let expected =
            std::fs::read_to_string(dir.path().join(format!("{}.crt", &name[..name.len() - 5])))
                .expect("crt");
        let der = <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(
            expected.as_bytes(),
        )
        .expect("pem");
        assert_eq!(cert, der, "{name}");
        assert_eq!(get_over_h1(stream, name).await.0, 200);
    }
}
