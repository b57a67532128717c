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

/// A self-signed X.509 v3 certificate and its key (P-256).
const V3_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBdDCCARugAwIBAgIUAvc6QLdmDxlF1Mwl1vUYph0uZKIwCgYIKoZIzj0EAwIw\nEDEOMAwGA1UEAwwFb3RoZXIwHhcNMjYxMjA2MDM1NzEyWhcNMzYxMjAzMDM1NzEy\nWjAQMQ4wDAYDVQQDDAVvdGhlcjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABKkC\npmPs1MgQWLw6t5mJCcLy/Q8+EL5dymXc0eQjMYnTIvZa1TX7DYx+NhNzN+cBU10K\nDujYSjWY323HBli030qjUzBRMB0GA1UdDgQWBBTgMssExC9tDPXiAtatbL193T5P\nQTAfBgNVHSMEGDAWgBTgMssExC9tDPXiAtatbL193T5PQTAPBgNVHRMBAf8EBTAD\nAQH/MAoGCCqGSM49BAMCA0cAMEQCICV34CUVcmPqseEZZCdpzQD3xfDHxhZm2FnE\nBFS5Q5IlAiBo25jqKydbVXAJuiwNst+kRMOQiXP/7dIFhVJhGhfBOw==\n-----END CERTIFICATE-----\n";
const V3_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0K/2LCwm6CZIjU0U\na1K8ijOte9WubMfZZJKWaJRmufWhRANCAASpAqZj7NTIEFi8OreZiQnC8v0PPhC+\nXcpl3NHkIzGJ0yL2WtU1+w2MfjYTczfnAVNdCg7o2Eo1mN9txwZYtN9K\n-----END PRIVATE KEY-----\n";
/// An X.509 v1 certificate (no extensions), which rustls refuses, and its
/// key.
const V1_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBITCByQIUCY4TKqgV8+BBz7niOYXpsZajjGEwCgYIKoZIzj0EAwIwFDESMBAG\nA1UEAwwJdjEgY2xpZW50MB4XDTI2MTIwNjAzNTcxMloXDTM2MTIwMzAzNTcxMlow\nFDESMBAGA1UEAwwJdjEgY2xpZW50MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\nC6eh246Nu9rcjrFWRD8GvlqsgJdRMX5ssOQBZ5hU+6vur4Z1LC96p07wwKDAnUcm\noXhfOOx6xEiO7bLTmuFODjAKBggqhkjOPQQDAgNHADBEAiBDz5+6nKeOJ10IBYn2\n6cQplkG2sIm4srMK5hi59lUAUAIgbJykOLU1HhvHd/r5vvVNO62qAWHfOBTuIK4K\nwJTiNP4=\n-----END CERTIFICATE-----\n";
const V1_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTSwTKRoj3hYQI7Ah\nyMUrtIZUpiPmEO3wGhH1PoCYELGhRANCAAQLp6Hbjo272tyOsVZEPwa+WqyAl1Ex\nfmyw5AFnmFT7q+6vhnUsL3qnTvDAoMCdRyaheF847HrESI7tstOa4U4O\n-----END PRIVATE KEY-----\n";

#[test]
fn usable_files_make_a_configuration() {
    let dir = scratch("usable");
    let cert = write(&dir, "client.pem", V3_CERT);
    let key = write(&dir, "client.key", V3_KEY);
    let tls = TlsOptions::new().ca(&cert).cert(&cert).key(&key);
    assert!(tls.rustls_config().is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_key_of_another_certificate_is_named() {
    let dir = scratch("mismatch");
    let cert = write(&dir, "client.pem", V3_CERT);
    let key = write(&dir, "other.key", V1_KEY);
    let message = match TlsOptions::new()
        .cert(&cert)
        .key(&key)
        .ca(&cert)
        .rustls_config()
    {
        Err(Error::TlsConfig(message)) => message,
        other => panic!("expected a TLS configuration error, got {other:?}"),
    };
    assert!(message.contains(&cert.display().to_string()), "{message}");
    assert!(message.contains(&key.display().to_string()), "{message}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_certificate_rustls_refuses_is_named() {
    let dir = scratch("v1");
    let ca = write(&dir, "ca.pem", V3_CERT);
    let cert = write(&dir, "v1.pem", V1_CERT);
    let key = write(&dir, "v1.key", V1_KEY);
    let message = match TlsOptions::new()
        .cert(&cert)
        .key(&key)
        .ca(&ca)
        .rustls_config()
    {
        Err(Error::TlsConfig(message)) => message,
        other => panic!("expected a TLS configuration error, got {other:?}"),
    };
    assert!(message.contains(&cert.display().to_string()), "{message}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_server_that_hangs_up_mid_handshake_is_a_tls_failure_with_a_hint() {
    use super::explain::{tls_failure, Peer};
    for kind in [
        std::io::ErrorKind::UnexpectedEof,
        std::io::ErrorKind::ConnectionReset,
    ] {
        let error = std::io::Error::from(kind);
        let reason = tls_failure(&error, Peer::Broker).expect("a TLS failure");
        assert!(reason.contains("--tls-cert"), "{reason}");
        let reason = tls_failure(&error, Peer::Redis).expect("a TLS failure");
        assert!(reason.contains("--redis-tls-cert"), "{reason}");
    }
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(tls_failure(&refused, Peer::Broker), None, "not about TLS");
}
