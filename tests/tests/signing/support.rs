//! Keys, tasks and a signing cluster shared by the signing tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use celeriac_consumer::{Registry, TaskContext, TaskError};
use celeriac_producer::publish::{self, Route};
use celeriac_producer::Producer;
use celeriac_schema::signing::Keyring;
use celeriac_schema::store::Store;
use celeriac_schema::{Backoff, RetryPolicy, Task, Topology};
use celeriac_tests::broker;
use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Channel, Connection};

/// How long the tests wait for tasks to finish.
pub const WAIT: Duration = Duration::from_secs(60);

/// The secret of a test key: 32 bytes of `byte`.
pub fn secret(byte: u8) -> [u8; 32] {
    [byte; 32]
}

/// A keyring signing with (`id`, [`secret`]`(byte)`) and verifying with
/// the rest too.
pub fn ring(keys: &[(&str, u8)]) -> Keyring {
    let (id, byte) = keys[0];
    let mut ring = Keyring::new(id, &secret(byte)).unwrap();
    for (id, byte) in &keys[1..] {
        ring = ring.with_verification_key(id, &secret(*byte)).unwrap();
    }
    ring
}

/// A key file holding `keys`, the first first, with a comment and a blank
/// line as operators write them.
pub fn key_file(test: &str, keys: &[(&str, u8)]) -> PathBuf {
    let dir = std::env::temp_dir().join("celeriac-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{test}-{}.keys", uuid::Uuid::now_v7().simple()));
    let mut text = String::from("# signing keys: the first signs\n\n");
    for (id, byte) in keys {
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret(*byte));
        text.push_str(&format!("{id} {b64}\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Every handler call, by label, in order.
#[derive(Clone, Default)]
pub struct Runs(Arc<Mutex<Vec<String>>>);

impl Runs {
    fn push(&self, label: &str) {
        self.0.lock().unwrap().push(label.to_owned());
    }

    /// The labels so far.
    pub fn labels(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Whether `label` ran.
    pub fn ran(&self, label: &str) -> bool {
        self.labels().iter().any(|l| l == label)
    }
}

/// Records its label and returns it.
pub struct Count;
impl Task for Count {
    const NAME: &'static str = "sig.count";
    type Input = String;
    type Output = String;
}

/// Fails (retryably) on its first attempt, then returns its attempt.
pub struct Flaky;
impl Task for Flaky {
    const NAME: &'static str = "sig.flaky";
    type Input = String;
    type Output = u32;
}

/// `n + 1`.
pub struct Inc;
impl Task for Inc {
    const NAME: &'static str = "sig.inc";
    type Input = i64;
    type Output = i64;
}

/// The sum of its inputs.
pub struct Sum;
impl Task for Sum {
    const NAME: &'static str = "sig.sum";
    type Input = Vec<i64>;
    type Output = i64;
}

/// Spawns a `sig.inc` of its input and returns what it returns.
pub struct Parent;
impl Task for Parent {
    const NAME: &'static str = "sig.parent";
    type Input = i64;
    type Output = i64;
}

/// Until healed: fails for good when its label is `fatal`, retryably
/// otherwise. Once healed: returns its label.
pub struct Heal;
impl Task for Heal {
    const NAME: &'static str = "sig.heal";
    type Input = String;
    type Output = String;
}

/// The tasks above; `runs` records every call of `sig.count`, `sig.flaky`
/// and `sig.heal`, `healed` switches `sig.heal` to success.
pub fn registry(runs: &Runs, healed: &Arc<AtomicBool>) -> Registry {
    let mut registry = Registry::new();
    let r = runs.clone();
    registry.register::<Count, _, _>(move |label: String, _ctx: TaskContext| {
        let r = r.clone();
        async move {
            r.push(&label);
            Ok::<_, TaskError>(label)
        }
    });
    let r = runs.clone();
    registry.register::<Flaky, _, _>(move |label: String, ctx: TaskContext| {
        let r = r.clone();
        async move {
            r.push(&format!("{label}@{}", ctx.attempt()));
            if ctx.attempt() == 0 {
                return Err(TaskError::new("Flaky", "the first attempt fails"));
            }
            Ok(ctx.attempt())
        }
    });
    registry
        .register::<Inc, _, _>(|n, _ctx: TaskContext| async move { Ok::<_, TaskError>(n + 1) })
        .register::<Sum, _, _>(|v: Vec<i64>, _ctx: TaskContext| async move {
            Ok::<_, TaskError>(v.iter().sum())
        })
        .register::<Parent, _, _>(|n, ctx: TaskContext| async move {
            let child = ctx.spawn::<Inc>(&n).await?;
            child
                .wait(WAIT)
                .await
                .map_err(|e| TaskError::new("Subtask", e.to_string()))
        });
    let r = runs.clone();
    let healed = healed.clone();
    registry.register::<Heal, _, _>(move |label: String, _ctx: TaskContext| {
        let (r, healed) = (r.clone(), healed.clone());
        async move {
            r.push(&label);
            if healed.load(Ordering::SeqCst) {
                Ok(label)
            } else if label == "fatal" {
                Err(TaskError::fatal("NotYet", "fails for good until healed"))
            } else {
                Err(TaskError::new("NotYet", "fails until healed"))
            }
        }
    });
    registry
}

/// A retry policy that waits 100 ms between attempts.
pub fn quick_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        backoff: Backoff {
            initial_ms: 100,
            multiplier: 1.0,
            max_ms: 100,
            jitter: 0.0,
        },
    }
}

/// A producer on `namespace`, signing with `signing` when given, with
/// `store` when given.
pub async fn producer(
    namespace: &str,
    signing: Option<Keyring>,
    store: Option<Arc<dyn Store>>,
) -> Producer {
    let mut builder = Producer::builder(&broker().await.url).namespace(namespace);
    if let Some(keyring) = signing {
        builder = builder.signing(keyring);
    }
    if let Some(store) = store {
        builder = builder.store(store);
    }
    builder.connect().await.unwrap()
}

/// A confirm-mode channel for publishing messages by hand.
pub async fn publisher() -> (Connection, Channel) {
    let (conn, channel) = broker().await.channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, channel)
}

/// Publishes `body` with `props` to the `default` work queue, confirmed.
pub async fn publish_raw(
    channel: &Channel,
    topology: &Topology,
    body: &[u8],
    props: BasicProperties,
) {
    let route = Route {
        exchange: topology.work_exchange(),
        routing_key: "default".into(),
    };
    publish::publish_confirmed(channel, &route, body, props, "by hand")
        .await
        .unwrap();
}
