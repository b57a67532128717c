//! The broker every test uses: `AMQP_ADDR`, else a RabbitMQ container.

use std::process::Command;

use lapin::{Channel, Connection, ConnectionProperties};
use testcontainers::core::{ContainerPort, ExecCommand, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage};
use tokio::sync::OnceCell;

/// How a test gets a broker, said in every failure to find one.
pub const HOW_TO_PROVIDE_A_BROKER: &str = "set AMQP_ADDR=amqp://guest:guest@127.0.0.1:5672/%2f \
     to a RabbitMQ 3.10+ (e.g. `apt-get install rabbitmq-server && rabbitmq-server -detached`), \
     or run a Docker engine so that testcontainers can start one";

/// A broker the tests can use.
#[derive(Debug)]
pub struct Broker {
    /// The AMQP URL.
    pub url: String,
    container: Option<ContainerAsync<GenericImage>>,
}

pub(crate) static BROKER: OnceCell<Broker> = OnceCell::const_new();

/// The broker shared by all tests of this process.
///
/// # Panics
///
/// When no broker can be found or started, with a message saying how to
/// provide one.
pub async fn broker() -> &'static Broker {
    BROKER
        .get_or_init(|| async {
            match std::env::var("AMQP_ADDR") {
                Ok(url) if !url.is_empty() => {
                    let broker = Broker {
                        url,
                        container: None,
                    };
                    if let Err(e) = Connection::connect(&broker.url, ConnectionProperties::default()).await {
                        panic!(
                            "cannot reach the broker at AMQP_ADDR={}: {e}; {HOW_TO_PROVIDE_A_BROKER}",
                            celeriac_producer::redact_url(&broker.url)
                        );
                    }
                    broker
                }
                _ => start_container().await,
            }
        })
        .await
}

async fn start_container() -> Broker {
    let image = GenericImage::new("rabbitmq", "3.13-management")
        .with_exposed_port(ContainerPort::Tcp(5672))
        .with_wait_for(WaitFor::message_on_stdout("Server startup complete"));
    let container = match image.start().await {
        Ok(c) => c,
        Err(e) => panic!("AMQP_ADDR is not set and no RabbitMQ container could be started ({e}); {HOW_TO_PROVIDE_A_BROKER}"),
    };
    let port = match container.get_host_port_ipv4(5672).await {
        Ok(p) => p,
        Err(e) => {
            panic!("the RabbitMQ container exposes no AMQP port ({e}); {HOW_TO_PROVIDE_A_BROKER}")
        }
    };
    Broker {
        url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        container: Some(container),
    }
}

impl Broker {
    /// Runs `rabbitmqctl` against this broker and returns its stdout.
    ///
    /// # Panics
    ///
    /// When rabbitmqctl cannot be run or fails.
    pub async fn rabbitmqctl(&self, args: &[&str]) -> String {
        match &self.container {
            Some(container) => {
                let mut cmd = vec!["rabbitmqctl"];
                cmd.extend_from_slice(args);
                let mut result = container
                    .exec(ExecCommand::new(cmd))
                    .await
                    .unwrap_or_else(|e| panic!("rabbitmqctl {args:?} in the container: {e}"));
                let out = result.stdout_to_vec().await.unwrap_or_default();
                String::from_utf8_lossy(&out).into_owned()
            }
            None => {
                let out = Command::new("rabbitmqctl")
                    .args(args)
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run rabbitmqctl {args:?} (the tests that inject broker faults need it on PATH): {e}"));
                assert!(
                    out.status.success(),
                    "rabbitmqctl {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        }
    }

    /// Opens a plain connection and channel.
    ///
    /// # Panics
    ///
    /// When the broker cannot be reached.
    pub async fn channel(&self) -> (Connection, Channel) {
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("connect to the broker: {e}; {HOW_TO_PROVIDE_A_BROKER}"));
        let channel = conn
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("open a channel: {e}"));
        (conn, channel)
    }
}
