//! TLS on the storage link: CA verification, pinning, and refusals; and the CLI's refusal
//! to run without TLS unless `--insecure-plaintext` is given.

use std::process::Command;

use shroud_net::conn::Connection;
use shroud_net::transport::ClientTls;
use shroud_proto::Limits;
use shroud_testkit::stack::{Stack, Tls};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_verify_the_server() {
    let stack = Stack::start(shroud_proto::Shape::default())
        .await
        .expect("stack");
    let files = &stack.tls.files;
    // The right CA and name, or the pinned certificate: accepted.
    for tls in [
        ClientTls::with_ca_file(&files.ca, "localhost").unwrap(),
        ClientTls::with_pinned_cert(&files.cert).unwrap(),
    ] {
        let mut c = Connection::connect(stack.storage, &tls, Limits::default())
            .await
            .expect("verified connection");
        c.stats().await.expect("stats over TLS");
    }
    // Another CA, another pinned certificate, a wrong name, or plain TCP: refused.
    let other = Tls::new().unwrap();
    for tls in [
        ClientTls::with_ca_file(&other.files.ca, "localhost").unwrap(),
        ClientTls::with_pinned_cert(&other.files.cert).unwrap(),
        ClientTls::with_ca_file(&files.ca, "example.com").unwrap(),
        ClientTls::Plain,
    ] {
        assert!(
            Connection::connect(stack.storage, &tls, Limits::default())
                .await
                .is_err()
        );
    }
}

#[test]
fn plaintext_needs_the_explicit_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shroud"))
        .args(["storage", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-plaintext"));
    let out = Command::new(env!("CARGO_BIN_EXE_shroud"))
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--storage",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
