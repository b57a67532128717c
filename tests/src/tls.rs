//! Real TLS servers for the TLS tests, set up by the test itself: a
//! throwaway PKI ([`Pki`]: a CA, a server certificate for `127.0.0.1` and
//! `localhost`, a client certificate, and a second CA that signed none of
//! them), a TLS listener added to the running RabbitMQ and removed again
//! ([`TlsBroker`]), a TLS-only `redis-server` child process ([`TlsRedis`]),
//! and an HTTPS stand-in for the RabbitMQ management API
//! ([`ManagementStandIn`]).

use std::net::TcpListener as StdTcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use celeriac_producer::tls::TlsOptions;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the TLS tests get their servers, said when one cannot be set up.
pub const HOW_TO_RUN_THE_TLS_TESTS: &str = "the TLS tests add a TLS listener to a RabbitMQ on \
     this machine with `rabbitmqctl eval` (set AMQP_ADDR to it and keep rabbitmqctl on PATH; the \
     broker reads the certificates from the system's temporary directory) and start \
     `redis-server` with TLS (apt-get install redis-server)";

/// Certificates and keys in a directory of their own, removed on drop.
///
/// The directory and files are world-readable: the broker, which runs as
/// another user, reads the server's certificate and key.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    /// The server's certificate (`127.0.0.1`, `localhost`).
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// The client's certificate (CN `celeriac test client`).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// The common name of the client certificate.
pub const CLIENT_NAME: &str = "celeriac test client";

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a CA key"))
        .expect("a self-signed CA")
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("a key");
    let cert = params
        .signed_by(&key, issuer)
        .expect("a signed certificate");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// A fresh PKI for `test`.
    ///
    /// # Panics
    ///
    /// When the files cannot be written.
    pub fn new(test: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "celeriac-tls-{test}-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        set_mode(&dir, 0o755);
        let authority = ca("celeriac test CA");
        let other = ca("celeriac other CA");
        let (server_cert, server_key) = leaf(
            &authority,
            "celeriac test server",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &authority,
            CLIENT_NAME,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            set_mode(&path, 0o644);
            path
        };
        Pki {
            ca: write("ca.pem", &authority.pem()),
            other_ca: write("other-ca.pem", &other.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            dir,
        }
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Trusts the CA and presents the client certificate.
    pub fn client(&self) -> TlsOptions {
        TlsOptions::new()
            .ca(&self.ca)
            .cert(&self.client_cert)
            .key(&self.client_key)
    }

    /// Trusts the CA, presents no client certificate.
    pub fn ca_only(&self) -> TlsOptions {
        TlsOptions::new().ca(&self.ca)
    }

    /// Trusts the other CA (not the server's), presents the client
    /// certificate.
    pub fn wrong_ca(&self) -> TlsOptions {
        self.client().ca(&self.other_ca)
    }

    /// `--tls-ca`, `--tls-cert` and `--tls-key` for the client options.
    pub fn client_flags(&self) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.ca.display().to_string(),
            "--tls-cert".into(),
            self.client_cert.display().to_string(),
            "--tls-key".into(),
            self.client_key.display().to_string(),
        ]
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A free TCP port on 127.0.0.1 (free when asked: the caller binds it
/// right away).
///
/// # Panics
///
/// When no port can be bound.
pub fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// A TLS listener of the test broker on a port of its own, added at run
/// time and stopped on drop: it checks client certificates against the
/// PKI's CA and refuses clients without one.
#[derive(Debug)]
pub struct TlsBroker {
    /// `amqps://` with the test broker's credentials and virtual host.
    pub url: String,
    /// The listener's port.
    pub port: u16,
}

impl TlsBroker {
    /// Starts the listener.
    ///
    /// # Panics
    ///
    /// When the broker is not local or refuses, with how to run the tests.
    pub async fn start(pki: &Pki) -> TlsBroker {
        let broker = crate::broker().await;
        let options = format!(
            "[{{cacertfile,{ca:?}}},{{certfile,{cert:?}}},{{keyfile,{key:?}}},{{verify,verify_peer}},{{fail_if_no_peer_cert,true}}]",
            ca = pki.ca.display().to_string(),
            cert = pki.server_cert.display().to_string(),
            key = pki.server_key.display().to_string(),
        );
        // A port found free may be taken before the broker binds it (as the
        // local end of another connection): then another one.
        let mut attempts = 0;
        let port = loop {
            let port = free_port();
            let out = rabbitmqctl_eval(&format!(
                "rabbit_networking:start_ssl_listener({{\"127.0.0.1\", {port}}}, {options}, 1)."
            ));
            if out.trim() == "ok" {
                break port;
            }
            attempts += 1;
            assert!(
                attempts < 5 && out.contains("eaddrinuse"),
                "the broker did not start a TLS listener on 127.0.0.1:{port}: {out}; {HOW_TO_RUN_THE_TLS_TESTS}"
            );
        };
        let mut url = url::Url::parse(&broker.url)
            .unwrap_or_else(|e| panic!("the test broker URL does not parse: {e}"));
        let tls = url.set_scheme("amqps").is_ok()
            && url.set_host(Some("127.0.0.1")).is_ok()
            && url.set_port(Some(port)).is_ok();
        assert!(tls, "cannot make an amqps:// URL from the test broker's");
        TlsBroker {
            url: url.to_string(),
            port,
        }
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = rabbitmqctl_eval(&format!(
            "rabbit_networking:stop_tcp_listener({{\"127.0.0.1\", {}}}).",
            self.port
        ));
    }
}

/// Runs `rabbitmqctl eval EXPR` on this machine; its output, or why it
/// failed.
fn rabbitmqctl_eval(expr: &str) -> String {
    match Command::new("rabbitmqctl")
        .args(["-q", "eval", expr])
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => format!(
            "rabbitmqctl failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("cannot run rabbitmqctl: {e}"),
    }
}

/// The connections the broker has on `port`: `(client-given name, ssl,
/// peer certificate subject)` each.
///
/// # Panics
///
/// When rabbitmqctl cannot list them.
pub async fn connections_on(port: u16) -> Vec<(String, bool, String)> {
    let out = crate::broker()
        .await
        .rabbitmqctl(&[
            "-q",
            "list_connections",
            "port",
            "ssl",
            "peer_cert_subject",
            "client_properties",
        ])
        .await;
    out.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.splitn(4, '\t').collect();
            match fields.as_slice() {
                [p, ssl, subject, properties] if p.trim() == port.to_string() => Some((
                    connection_name(properties),
                    ssl.trim() == "true",
                    (*subject).to_owned(),
                )),
                _ => None,
            }
        })
        .collect()
}

/// The `connection_name` of a `client_properties` column, empty if none.
fn connection_name(properties: &str) -> String {
    const KEY: &str = "{\"connection_name\",\"";
    properties
        .find(KEY)
        .map(|at| &properties[at + KEY.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

/// A `redis-server` that speaks only TLS, on a port of its own, requiring
/// client certificates signed by the PKI's CA; killed on drop.
#[derive(Debug)]
pub struct TlsRedis {
    child: Child,
    /// `rediss://127.0.0.1:{port}`.
    pub url: String,
    /// Its port.
    pub port: u16,
}

impl TlsRedis {
    /// Starts it and waits until it listens.
    ///
    /// # Panics
    ///
    /// When redis-server cannot be started, with how to get it.
    pub fn start(pki: &Pki) -> TlsRedis {
        let mut attempts = 0;
        loop {
            match Self::try_start(pki) {
                Ok(redis) => return redis,
                // The port was taken between finding it free and binding.
                Err(why) if attempts < 4 => {
                    attempts += 1;
                    eprintln!("TLS redis-server: {why}; trying another port");
                }
                Err(why) => panic!("{why}; {HOW_TO_RUN_THE_TLS_TESTS}"),
            }
        }
    }

    fn try_start(pki: &Pki) -> Result<TlsRedis, String> {
        let port = free_port();
        let path = |p: &Path| p.display().to_string();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &path(&pki.server_cert)])
            .args(["--tls-key-file", &path(&pki.server_key)])
            .args(["--tls-ca-cert-file", &path(&pki.ca)])
            .args(["--tls-auth-clients", "yes"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &path(pki.dir())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let mut redis = TlsRedis {
            child,
            url: format!("rediss://127.0.0.1:{port}"),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = redis.child.try_wait() {
                return Err(format!(
                    "redis-server exited ({status}) before listening on {port}"
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("redis-server does not listen on {port} after 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server standing in for the RabbitMQ management API (whose plugin the
/// test broker may not run): over HTTPS it requires a client certificate
/// signed by the PKI's CA; it answers `GET /api/queues/...` for user
/// `guest` with the given queue names, 401 to anyone else.
#[derive(Debug)]
pub struct ManagementStandIn {
    /// `https://127.0.0.1:{port}`, or `http://` without TLS.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl ManagementStandIn {
    /// Starts it over HTTPS with `pki`'s server certificate, or plain HTTP
    /// without a PKI.
    ///
    /// # Panics
    ///
    /// When the PKI's files cannot be used or no port can be bound.
    pub async fn start(pki: Option<&Pki>, queues: &[&str]) -> ManagementStandIn {
        let acceptor = pki.map(|pki| tokio_rustls::TlsAcceptor::from(server_config(pki)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in");
        let port = listener.local_addr().expect("its address").port();
        let body = serde_json::to_string(
            &queues
                .iter()
                .map(|name| serde_json::json!({ "name": name }))
                .collect::<Vec<_>>(),
        )
        .expect("JSON");
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                answer(tls, &body).await;
                            }
                        }
                        None => answer(stream, &body).await,
                    }
                });
            }
        });
        ManagementStandIn {
            url: format!("{scheme}://127.0.0.1:{port}"),
            task,
        }
    }
}

impl Drop for ManagementStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS server configuration with `pki`'s server certificate that
/// requires client certificates signed by its CA.
fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).expect("the CA file") {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("a usable CA");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("a client verifier");
    let chain = CertificateDer::pem_file_iter(&pki.server_cert)
        .expect("the server certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("the server certificate");
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).expect("the server key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("a server configuration");
    Arc::new(config)
}

/// Reads one request and answers it (see [`ManagementStandIn`]).
async fn answer<S>(mut stream: S, body: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
    let status = if !head.starts_with("get /api/queues/") {
        "404 Not Found"
    // Basic guest:guest, lower-cased with the rest.
    } else if !head.contains("authorization: basic z3vlc3q6z3vlc3q=") {
        "401 Unauthorized"
    } else {
        "200 OK"
    };
    let body = if status == "200 OK" { body } else { "" };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
