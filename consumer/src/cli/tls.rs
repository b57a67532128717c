//! The TLS options of the command lines: `--tls-*` for the broker,
//! `--redis-tls-*` for Redis, each Redis one defaulting to its broker
//! counterpart.

use std::path::PathBuf;

use celeriac_producer::tls::TlsOptions;

/// TLS options of `celeriac-worker` and `celeriac`; they apply to
/// `amqps://` and `rediss://` URLs only.
///
/// # Examples
///
/// ```
/// use clap::Parser;
/// use celeriac_consumer::cli::TlsArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     tls: TlsArgs,
/// }
///
/// let cli = Cli::parse_from(["demo", "--tls-ca", "/etc/ca.pem", "--redis-tls-cert", "/etc/redis.pem"]);
/// let redis = cli.tls.redis();
/// assert_eq!(redis.ca_path().and_then(|p| p.to_str()), Some("/etc/ca.pem"));
/// assert_eq!(redis.cert_path().and_then(|p| p.to_str()), Some("/etc/redis.pem"));
/// assert_eq!(cli.tls.broker().cert_path(), None);
/// ```
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// CA bundle (PEM) to trust for an amqps:// broker, instead of the
    /// system's root certificates.
    #[arg(long, env = "CELERIAC_TLS_CA", value_name = "PATH", global = true)]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) to present to an amqps:// broker (mutual
    /// TLS); needs --tls-key.
    #[arg(long, env = "CELERIAC_TLS_CERT", value_name = "PATH", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM, unencrypted) of --tls-cert.
    #[arg(long, env = "CELERIAC_TLS_KEY", value_name = "PATH", global = true)]
    pub tls_key: Option<PathBuf>,

    /// CA bundle (PEM) to trust for a rediss:// store [default: --tls-ca].
    #[arg(
        long,
        env = "CELERIAC_REDIS_TLS_CA",
        value_name = "PATH",
        global = true
    )]
    pub redis_tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) to present to a rediss:// store [default:
    /// --tls-cert].
    #[arg(
        long,
        env = "CELERIAC_REDIS_TLS_CERT",
        value_name = "PATH",
        global = true
    )]
    pub redis_tls_cert: Option<PathBuf>,

    /// Private key (PEM, unencrypted) of --redis-tls-cert [default:
    /// --tls-key].
    #[arg(
        long,
        env = "CELERIAC_REDIS_TLS_KEY",
        value_name = "PATH",
        global = true
    )]
    pub redis_tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The broker's TLS options.
    pub fn broker(&self) -> TlsOptions {
        options(&self.tls_ca, &self.tls_cert, &self.tls_key)
    }

    /// Redis's TLS options, each unset one taken from the broker's.
    pub fn redis(&self) -> TlsOptions {
        options(
            &self.redis_tls_ca,
            &self.redis_tls_cert,
            &self.redis_tls_key,
        )
        .or(&self.broker())
    }

    /// Checks the files of the options that `amqp_url` and `redis_url`
    /// will use: for a program to refuse bad files at start.
    ///
    /// # Errors
    ///
    /// The first [`celeriac_producer::Error::TlsConfig`] found.
    pub fn check(&self, amqp_url: &str, redis_url: Option<&str>) -> celeriac_producer::Result<()> {
        if is_tls(amqp_url, "amqps") {
            self.broker().check()?;
        }
        if redis_url.is_some_and(|url| is_tls(url, "rediss")) {
            self.redis().check()?;
        }
        Ok(())
    }
}

fn options(ca: &Option<PathBuf>, cert: &Option<PathBuf>, key: &Option<PathBuf>) -> TlsOptions {
    let mut options = TlsOptions::new();
    if let Some(ca) = ca {
        options = options.ca(ca);
    }
    if let Some(cert) = cert {
        options = options.cert(cert);
    }
    if let Some(key) = key {
        options = options.key(key);
    }
    options
}

fn is_tls(url: &str, scheme: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(s, _)| s.eq_ignore_ascii_case(scheme))
}
