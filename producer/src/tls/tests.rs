//! Reading the TLS files: every way they can be wrong names the file.

use std::path::{Path, PathBuf};

use super::TlsOptions;
use crate::Error;

/// A directory of its own under the system's temporary directory.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "celeriac-tls-unit-{test}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a scratch file");
    path
}

fn config_error(result: crate::Result<()>) -> String {
    match result {
        Err(Error::TlsConfig(message)) => message,
        other => panic!("expected a TLS configuration error, got {other:?}"),
    }
}

#[test]
fn nothing_set_needs_no_file() {
    assert!(TlsOptions::new().check().is_ok());
}

#[test]
fn a_missing_ca_file_is_named() {
    let message = config_error(TlsOptions::new().ca("/nonexistent/celeriac/ca.pem").check());
    assert!(
        message.contains("cannot read the CA bundle /nonexistent/celeriac/ca.pem"),
        "{message}"
    );
}

#[test]
fn a_ca_file_without_certificates_is_named() {
    let dir = scratch("no-cert");
    let ca = write(&dir, "ca.pem", "not a certificate\n");
    let message = config_error(TlsOptions::new().ca(&ca).check());
    assert!(
        message.contains(&format!(
            "the CA bundle {} holds no PEM certificate",
            ca.display()
        )),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_broken_certificate_is_named() {
    let dir = scratch("broken-cert");
    let ca = write(
        &dir,
        "ca.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let message = config_error(TlsOptions::new().ca(&ca).check());
    assert!(message.contains(&ca.display().to_string()), "{message}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_certificate_needs_its_key_and_a_key_its_certificate() {
    let message = config_error(TlsOptions::new().cert("/x/client.pem").check());
    assert!(
        message.contains("/x/client.pem is given without its private key"),
        "{message}"
    );
    let message = config_error(TlsOptions::new().key("/x/client.key").check());
    assert!(
        message.contains("/x/client.key is given without its client certificate"),
        "{message}"
    );
}

#[test]
fn a_key_file_without_a_key_is_named() {
    let dir = scratch("no-key");
    let cert = write(
        &dir,
        "client.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let key = write(&dir, "client.key", "no key here\n");
    let message = config_error(TlsOptions::new().cert(&cert).key(&key).check());
    assert!(
        message.contains(&format!("the private key {} holds no", key.display())),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn redis_options_fall_back_one_by_one() {
    let broker = TlsOptions::new().ca("b-ca").cert("b-cert").key("b-key");
    let redis = TlsOptions::new().key("r-key").or(&broker);
    assert_eq!(
        redis,
        TlsOptions::new().ca("b-ca").cert("b-cert").key("r-key")
    );
    assert_eq!(TlsOptions::new().or(&TlsOptions::new()), TlsOptions::new());
}
