//! The Redis every store test uses: `REDIS_URL`, else a Redis container.

use std::time::Duration;

use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage};
use tokio::sync::OnceCell;

/// How a test gets a Redis, said in every failure to find one.
pub const HOW_TO_PROVIDE_REDIS: &str = "set REDIS_URL=redis://127.0.0.1:6379 to a Redis 6+ \
     (e.g. `apt-get install redis-server && redis-server --daemonize yes`), \
     or run a Docker engine so that testcontainers can start one";

/// A Redis the tests can use.
#[derive(Debug)]
pub struct Redis {
    /// The Redis URL.
    pub url: String,
    _container: Option<ContainerAsync<GenericImage>>,
}

pub(crate) static REDIS: OnceCell<Redis> = OnceCell::const_new();

/// The Redis shared by all tests of this process: `REDIS_URL`, or a
/// container.
///
/// # Panics
///
/// When no Redis can be found or started, with a message saying how to
/// provide one.
pub async fn redis() -> &'static Redis {
    REDIS
        .get_or_init(|| async {
            match std::env::var("REDIS_URL") {
                Ok(url) if !url.is_empty() => {
                    let reachable = async {
                        let client = redis_client_for(&url)
                            .map_err(|e| ::redis::RedisError::from(std::io::Error::other(e.to_string())))?;
                        let mut conn = client.get_multiplexed_async_connection().await?;
                        ::redis::cmd("PING").query_async::<String>(&mut conn).await
                    };
                    match tokio::time::timeout(Duration::from_secs(5), reachable).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => panic!(
                            "cannot reach Redis at REDIS_URL={}: {e}; {HOW_TO_PROVIDE_REDIS}",
                            celeriac_producer::redact_url(&url)
                        ),
                        Err(_) => panic!(
                            "no answer from Redis at REDIS_URL={} within 5 s; {HOW_TO_PROVIDE_REDIS}",
                            celeriac_producer::redact_url(&url)
                        ),
                    }
                    Redis {
                        url,
                        _container: None,
                    }
                }
                _ => {
                    let image = GenericImage::new("redis", "7")
                        .with_exposed_port(ContainerPort::Tcp(6379))
                        .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"));
                    let container = match image.start().await {
                        Ok(c) => c,
                        Err(e) => panic!("REDIS_URL is not set and no Redis container could be started ({e}); {HOW_TO_PROVIDE_REDIS}"),
                    };
                    let port = match container.get_host_port_ipv4(6379).await {
                        Ok(p) => p,
                        Err(e) => panic!("the Redis container exposes no port ({e}); {HOW_TO_PROVIDE_REDIS}"),
                    };
                    Redis {
                        url: format!("redis://127.0.0.1:{port}"),
                        _container: Some(container),
                    }
                }
            }
        })
        .await
}

/// The TLS options for a `rediss://` REDIS_URL, from the environment as the
/// binaries read it: `CELERIAC_REDIS_TLS_CA`, `_CERT`, `_KEY`, each
/// defaulting to `CELERIAC_TLS_CA`, `_CERT`, `_KEY`.
pub fn redis_tls() -> celeriac_producer::tls::TlsOptions {
    let from_env = |prefix: &str| {
        let mut tls = celeriac_producer::tls::TlsOptions::new();
        if let Some(ca) = std::env::var_os(format!("{prefix}_CA")) {
            tls = tls.ca(ca);
        }
        if let Some(cert) = std::env::var_os(format!("{prefix}_CERT")) {
            tls = tls.cert(cert);
        }
        if let Some(key) = std::env::var_os(format!("{prefix}_KEY")) {
            tls = tls.key(key);
        }
        tls
    };
    from_env("CELERIAC_REDIS_TLS").or(&from_env("CELERIAC_TLS"))
}

/// A raw Redis client for `url` (to look into what the store keeps), over
/// TLS for `rediss://` with [`redis_tls`], as the store connects.
///
/// # Errors
///
/// An invalid URL or unusable TLS files.
pub fn redis_client_for(url: &str) -> celeriac_producer::Result<::redis::Client> {
    celeriac_producer::tls::redis_client(url, &redis_tls())
}

/// A Redis store on the test's namespace with `settings`.
///
/// # Panics
///
/// When Redis cannot be reached.
pub async fn redis_store(
    namespace: &str,
    settings: celeriac_schema::store::StoreSettings,
) -> celeriac_store::RedisStore {
    let redis = redis().await;
    celeriac_store::RedisStore::connect_with_tls(&redis.url, namespace, settings, &redis_tls())
        .await
        .unwrap_or_else(|e| panic!("Redis store: {e}; {HOW_TO_PROVIDE_REDIS}"))
}
