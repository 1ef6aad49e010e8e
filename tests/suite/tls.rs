//! TLS on the storage link: CA verification, pinning, and refusals; and the CLI's refusal
//! to run without TLS (and storage without client certificates) unless
//! `--insecure-plaintext` is given. That storage refuses clients without a proxy
//! certificate is shown against a real storage process in `amplification.rs`.

use std::process::Command;

use shroud_net::conn::Connection;
use shroud_net::transport::{ClientTls, Identity};
use shroud_proto::Limits;
use shroud_testkit::stack::{Stack, Tls};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_verify_the_server() {
    let stack = Stack::start(shroud_proto::Shape::default())
        .await
        .expect("stack");
    let files = &stack.tls.files;
    // Storage serves only proxies: every client here presents the proxy certificate.
    let id = Identity::from_pem_files(&files.proxy_cert, &files.proxy_key).unwrap();
    let id = Some(&id);
    // The right CA and name, or the pinned certificate: accepted.
    for tls in [
        ClientTls::with_ca_file_as(&files.ca, "localhost", id).unwrap(),
        ClientTls::with_pinned_cert_as(&files.cert, id).unwrap(),
    ] {
        let mut c = Connection::connect(stack.storage, &tls, Limits::default())
            .await
            .expect("verified connection");
        c.stats().await.expect("stats over TLS");
    }
    // Another CA, another pinned certificate, a wrong name, or plain TCP: refused.
    let other = Tls::new().unwrap();
    for tls in [
        ClientTls::with_ca_file_as(&other.files.ca, "localhost", id).unwrap(),
        ClientTls::with_pinned_cert_as(&other.files.cert, id).unwrap(),
        ClientTls::with_ca_file_as(&files.ca, "example.com", id).unwrap(),
        ClientTls::Plain,
    ] {
        assert!(
            Connection::connect(stack.storage, &tls, Limits::default())
                .await
                .is_err()
        );
    }
}

/// Runs `shroud` with `args`, which must fail at start; returns what it printed on stderr.
fn refused_at_start(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shroud"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn plaintext_needs_the_explicit_flag() {
    let dir = tempfile::tempdir().unwrap();
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let db = dir.path().join("db");
    let listen = [os("--listen"), os("127.0.0.1:0")];
    let err =
        refused_at_start(&[&[os("storage"), os("--db"), db.as_os_str()][..], &listen].concat());
    assert!(err.contains("--insecure-plaintext"), "{err}");
    let certs = shroud_net::certs::generate(&dir.path().join("certs"), &["localhost".into()])
        .expect("certs");
    let served = [
        os("--tls-cert"),
        certs.cert.as_os_str(),
        os("--tls-key"),
        certs.key.as_os_str(),
    ];
    // TLS without a CA for client certificates: storage would serve anyone; refused.
    let err = refused_at_start(
        &[
            &[os("storage"), os("--db"), db.as_os_str()][..],
            &listen,
            &served,
        ]
        .concat(),
    );
    assert!(err.contains("--client-ca"), "{err}");
    // A proxy without a client certificate for storage: refused at start, naming the flags.
    let proxy = [os("proxy"), os("--storage"), os("127.0.0.1:1")];
    let storage_ca = [os("--storage-ca"), certs.ca.as_os_str()];
    let err = refused_at_start(&[&proxy[..], &listen, &served, &storage_ca].concat());
    assert!(err.contains("--storage-client-cert"), "{err}");
    // And without any TLS flag at all.
    refused_at_start(&[&proxy[..], &listen].concat());
}
