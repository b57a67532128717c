//! A store that fails: a worker whose store is down, writes that fail in a
//! shared transaction, Redis cut off and back.

use super::*;

/// A store that fails on demand, in front of an in-memory one.
#[derive(Debug)]
struct Flaky {
    inner: MemoryStore,
    down: AtomicBool,
    /// Claims applied whose answer is then lost, as when the connection to
    /// a Redis primary breaks after it ran the script.
    lost_claim_answers: AtomicUsize,
}

impl Flaky {
    /// A store that answers, and the same store as the trait object that
    /// producers and workers take.
    fn up() -> (Arc<Flaky>, Arc<dyn Store>) {
        let flaky = Arc::new(Flaky {
            inner: MemoryStore::new(StoreSettings::default()),
            down: AtomicBool::new(false),
            lost_claim_answers: AtomicUsize::new(0),
        });
        let store: Arc<dyn Store> = flaky.clone();
        (flaky, store)
    }

    fn check(&self, op: &'static str) -> celeriac_schema::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(celeriac_schema::Error::StoreUnavailable {
                op,
                message: "switched off by the test".into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for Flaky {
    fn settings(&self) -> &StoreSettings {
        self.inner.settings()
    }
    async fn ping(&self) -> celeriac_schema::Result<()> {
        self.check("ping")
    }
    async fn record(&self, updates: &[Update]) -> celeriac_schema::Result<()> {
        self.check("record")?;
        self.inner.record(updates).await
    }
    async fn get(&self, id: TaskId) -> celeriac_schema::Result<Option<TaskRecord>> {
        self.check("get")?;
        self.inner.get(id).await
    }
    async fn wait(
        &self,
        id: TaskId,
        timeout: Duration,
    ) -> celeriac_schema::Result<Option<TaskRecord>> {
        self.inner.wait(id, timeout).await
    }
    async fn claim(&self, claims: &[(String, Update)]) -> celeriac_schema::Result<Vec<Claim>> {
        self.check("claim")?;
        let answers = self.inner.claim(claims).await?;
        let lose = self
            .lost_claim_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lose {
            return Err(celeriac_schema::Error::StoreUnavailable {
                op: "claim",
                message: "broken pipe (the claim was applied)".into(),
            });
        }
        Ok(answers)
    }
    async fn unclaim(&self, claims: &[(String, TaskId)]) -> celeriac_schema::Result<()> {
        self.check("unclaim")?;
        self.inner.unclaim(claims).await
    }
    async fn lease(&self, key: &str, token: &str) -> celeriac_schema::Result<Begin> {
        self.check("lease")?;
        self.inner.lease(key, token).await
    }
    async fn started(&self, update: &Update) -> celeriac_schema::Result<()> {
        self.check("started")?;
        self.inner.started(update).await
    }
    async fn renew(&self, key: &str, token: &str) -> celeriac_schema::Result<bool> {
        self.check("renew")?;
        self.inner.renew(key, token).await
    }
    async fn finish(&self, key: &str, token: &str, update: &Update) -> celeriac_schema::Result<()> {
        self.check("finish")?;
        self.inner.finish(key, token, update).await
    }
    async fn results(&self, ids: &[TaskId]) -> celeriac_schema::Result<Vec<Option<Vec<u8>>>> {
        self.check("results")?;
        self.inner.results(ids).await
    }
    async fn create_workflow(
        &self,
        workflow: &celeriac_schema::workflow::Workflow,
        outputs: &[String],
    ) -> celeriac_schema::Result<bool> {
        self.check("create_workflow")?;
        self.inner.create_workflow(workflow, outputs).await
    }
    async fn workflow_nodes(
        &self,
        workflow: TaskId,
        nodes: &[String],
    ) -> celeriac_schema::Result<Vec<Option<celeriac_schema::workflow::Node>>> {
        self.check("workflow_nodes")?;
        self.inner.workflow_nodes(workflow, nodes).await
    }
    async fn node_succeeded(
        &self,
        workflow: TaskId,
        node: &str,
    ) -> celeriac_schema::Result<Vec<celeriac_schema::store::Ready>> {
        self.check("node_succeeded")?;
        self.inner.node_succeeded(workflow, node).await
    }
    async fn node_failed(
        &self,
        workflow: TaskId,
        node: &str,
    ) -> celeriac_schema::Result<Vec<String>> {
        self.check("node_failed")?;
        self.inner.node_failed(workflow, node).await
    }
    async fn get_workflow(
        &self,
        workflow: TaskId,
    ) -> celeriac_schema::Result<Option<celeriac_schema::store::WorkflowRecord>> {
        self.check("get_workflow")?;
        self.inner.get_workflow(workflow).await
    }
    async fn wait_workflow(
        &self,
        workflow: TaskId,
        timeout: Duration,
    ) -> celeriac_schema::Result<Option<celeriac_schema::store::WorkflowRecord>> {
        self.inner.wait_workflow(workflow, timeout).await
    }
}

#[tokio::test]
async fn a_worker_whose_store_is_down_is_not_ready_and_acks_nothing() {
    let ns = namespace("store-down");
    let (flaky, store) = Flaky::up();
    let producer = Producer::builder(&broker().await.url)
        .namespace(&*ns)
        .connect()
        .await
        .unwrap();
    let (runs, running, peak) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::default(),
        Arc::default(),
    );
    let worker = InProcessWorker::start(&ns, counting_registry(runs.clone(), running, peak), |b| {
        b.store(store.clone()).grace(Duration::from_millis(500))
    })
    .await;

    // Down before the run: the task waits, the worker turns not ready.
    flaky.down.store(true, Ordering::SeqCst);
    let first = producer
        .send::<KeyEcho>(&0, &SendOptions::new())
        .await
        .unwrap();
    let not_ready = eventually(Duration::from_secs(5), || async { !worker.is_ready() }).await;
    assert!(not_ready, "a worker without its store is not ready");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "nothing runs before `started` is stored"
    );
    flaky.down.store(false, Ordering::SeqCst);
    let record = eventually(Duration::from_secs(10), || async {
        store.get(first.id()).await.ok().flatten().map(|r| r.state) == Some(TaskState::Succeeded)
    })
    .await;
    assert!(record, "the task completes once the store is back");
    assert!(eventually(Duration::from_secs(5), || async { worker.is_ready() }).await);

    // Down after the run: the outcome cannot be stored, so the delivery is
    // not acked; a shutdown hands it back to the queue.
    let (_conn, channel) = broker().await.channel().await;
    let second = producer
        .send::<KeyEcho>(&300, &SendOptions::new())
        .await
        .unwrap();
    let running_now = eventually(Duration::from_secs(5), || async {
        runs.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(running_now);
    flaky.down.store(true, Ordering::SeqCst);
    let stats = worker.stop().await;
    assert!(stats.store_errors > 0);
    let requeued = eventually(Duration::from_secs(10), || async {
        queue_len(&channel, &ns.topology().work_queue("default")).await == 1
    })
    .await;
    assert!(requeued, "the unstored outcome left the task in the queue");
    flaky.down.store(false, Ordering::SeqCst);
    assert_ne!(
        store.get(second.id()).await.unwrap().map(|r| r.state),
        Some(TaskState::Succeeded)
    );
}

/// A TCP relay to Redis that a test can cut off and restore, to take the
/// store's Redis away from it alone (other tests share the same Redis).
struct Relay {
    url: String,
    open: Arc<AtomicBool>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    /// Listens on a free local port and relays to the Redis of `url`.
    async fn start(url: &str) -> Relay {
        let target = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.rsplit('@').next())
            .and_then(|rest| rest.split('/').next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("a Redis URL with a host and port: {url}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_url = url.replacen(&target, &listener.local_addr().unwrap().to_string(), 1);
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (accepting, tracked) = (open.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let target = target.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().unwrap().push(link.abort_handle());
            }
        });
        Relay {
            url: relay_url,
            open,
            links,
        }
    }

    /// Closes every relayed connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn succeeded(id: TaskId) -> Update {
    let mut done = Update::new(id, "t.batch", "default", TaskState::Succeeded, 0);
    done.result = Some(celeriac_schema::store::encode_result(&id.to_string()).unwrap());
    done
}

/// A task whose record in namespace `ns` is a string, not a hash, and
/// sixty-four sound task ids with it in the middle: run at once, they
/// share the store's batches.
async fn sixty_four_around_a_broken_record(ns: &str) -> (TaskId, Vec<TaskId>) {
    let broken = TaskId::new();
    let mut conn = raw_redis().await;
    let _: () = celeriac_tests::redis_client::cmd("SET")
        .arg(celeriac_schema::store::layout::record_key(ns, broken))
        .arg("not a hash")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut ids: Vec<TaskId> = (0..64).map(|_| TaskId::new()).collect();
    ids.insert(32, broken);
    (broken, ids)
}

#[tokio::test]
async fn a_write_that_fails_inside_a_shared_transaction_fails_alone() {
    let ns = namespace("store-batch-alone");
    let store = redis_store(&ns, StoreSettings::default()).await;
    // One record is not a hash: writing it fails inside the transaction.
    let (broken, ids) = sixty_four_around_a_broken_record(&ns).await;
    let writes = ids.iter().map(|id| {
        let store = store.clone();
        let id = *id;
        async move {
            let key = format!("key-{id}");
            store.lease(&key, "run").await?;
            store.finish(&key, "run", &succeeded(id)).await
        }
    });
    let outcomes = futures_util::future::join_all(writes).await;
    for (id, outcome) in ids.iter().zip(&outcomes) {
        if *id == broken {
            let e = outcome
                .as_ref()
                .expect_err("the broken record's write fails");
            assert!(e.to_string().contains("WRONGTYPE"), "{e}");
        } else {
            outcome
                .as_ref()
                .unwrap_or_else(|e| panic!("a sound write sharing its batch failed: {e}"));
            let record = store.get(*id).await.unwrap().unwrap();
            assert_eq!(record.state, TaskState::Succeeded);
            assert_eq!(
                record.decode_result::<String>().unwrap(),
                Some(id.to_string())
            );
        }
    }
}

#[tokio::test]
async fn a_lease_that_fails_ahead_of_a_shared_transaction_fails_alone() {
    let ns = namespace("store-lease-alone");
    let store = redis_store(&ns, StoreSettings::default()).await;
    // Tasks run under their own ids as keys, so taking a lease also reads
    // the record's state; one record is not a hash, so that read fails.
    let (broken, ids) = sixty_four_around_a_broken_record(&ns).await;
    let runs = ids.iter().map(|id| {
        let store = store.clone();
        let id = *id;
        async move {
            let key = id.to_string();
            let begun = store.lease(&key, "run").await?;
            store.finish(&key, "run", &succeeded(id)).await?;
            Ok::<_, celeriac_schema::Error>(begun)
        }
    });
    let outcomes = futures_util::future::join_all(runs).await;
    for (id, outcome) in ids.iter().zip(&outcomes) {
        if *id == broken {
            let e = outcome
                .as_ref()
                .expect_err("the broken record's lease fails");
            assert!(e.to_string().contains("WRONGTYPE"), "{e}");
            continue;
        }
        let begun = outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("a sound run sharing its batch failed: {e}"));
        assert_eq!(*begun, Begin::Run);
        let record = store.get(*id).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Succeeded);
        // Its success is in its record: a second lease reads it.
        assert_eq!(
            store.lease(&id.to_string(), "again").await.unwrap(),
            Begin::Succeeded { task_id: *id }
        );
    }
}

#[tokio::test]
async fn store_writes_fail_while_redis_is_cut_off_and_work_again_after() {
    let ns = namespace("store-cut-off");
    let relay = Relay::start(&redis().await.url).await;
    let store = celeriac_store::RedisStore::connect(&relay.url, &ns, StoreSettings::default())
        .await
        .unwrap_or_else(|e| panic!("Redis store through the relay: {e}; {HOW_TO_PROVIDE_REDIS}"));
    let ids: Vec<TaskId> = (0..16).map(|_| TaskId::new()).collect();
    for id in &ids {
        assert_eq!(
            store.lease(&format!("key-{id}"), "run").await.unwrap(),
            Begin::Run
        );
    }

    relay.cut();
    let started = Instant::now();
    let writes = ids.iter().map(|id| {
        let store = store.clone();
        let id = *id;
        async move {
            store
                .finish(&format!("key-{id}"), "run", &succeeded(id))
                .await
        }
    });
    for outcome in futures_util::future::join_all(writes).await {
        match outcome {
            Err(celeriac_schema::Error::StoreUnavailable { op, .. }) => assert_eq!(op, "finish"),
            other => panic!("a write while Redis is cut off must fail as unavailable: {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failed writes answer within the response timeout, took {:?}",
        started.elapsed()
    );

    relay.restore();
    for id in &ids {
        let key = format!("key-{id}");
        assert!(
            eventually(Duration::from_secs(20), || async {
                store.finish(&key, "run", &succeeded(*id)).await.is_ok()
            })
            .await,
            "writes work again once Redis is back"
        );
        let record = store.get(*id).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Succeeded);
        assert_eq!(
            store.lease(&key, "again").await.unwrap(),
            Begin::Succeeded { task_id: *id }
        );
    }
}

/// A keyed send goes through a store failover by itself: while the store
/// does not answer it claims again, and a claim whose answer was lost
/// (applied before the connection broke) is claimed again by the same
/// task, which is then published, not skipped.
#[tokio::test]
async fn a_keyed_send_claims_again_while_the_store_fails_over() {
    let ns = namespace("store-claim-again");
    let (flaky, store) = Flaky::up();
    let producer = Producer::builder(&broker().await.url)
        .namespace(&*ns)
        .store(store.clone())
        .store_retry(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let (runs, running, peak) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::default(),
        Arc::default(),
    );
    let worker = InProcessWorker::start(&ns, counting_registry(runs.clone(), running, peak), |b| {
        b.store(store.clone())
    })
    .await;

    // The store is away for 400 ms while the send claims.
    flaky.down.store(true, Ordering::SeqCst);
    let back = {
        let flaky = flaky.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            flaky.down.store(false, Ordering::SeqCst);
        })
    };
    let began = Instant::now();
    let first = producer
        .send::<KeyEcho>(&1, &SendOptions::new().idempotency_key("away"))
        .await
        .expect("the send claims again once the store answers");
    assert!(began.elapsed() >= Duration::from_millis(300));
    back.await.unwrap();

    // The claim is applied but its answer lost, twice.
    flaky.lost_claim_answers.store(2, Ordering::SeqCst);
    let second = producer
        .send::<KeyEcho>(&2, &SendOptions::new().idempotency_key("lost-answer"))
        .await
        .expect("the send claims its own key again and publishes");
    assert_eq!(flaky.lost_claim_answers.load(Ordering::SeqCst), 0);

    for handle in [first.id(), second.id()] {
        let done = eventually(Duration::from_secs(10), || async {
            store.get(handle).await.ok().flatten().map(|r| r.state) == Some(TaskState::Succeeded)
        })
        .await;
        assert!(done, "task {handle} ran");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2, "each task ran once");

    // A store that stays away fails the send once the budget is spent,
    // and nothing was published.
    let impatient = Producer::builder(&broker().await.url)
        .namespace(&*ns)
        .store(store.clone())
        .store_retry(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    flaky.down.store(true, Ordering::SeqCst);
    let err = impatient
        .send::<KeyEcho>(&3, &SendOptions::new().idempotency_key("gone"))
        .await
        .expect_err("the store never answered");
    flaky.down.store(false, Ordering::SeqCst);
    assert!(
        matches!(
            err,
            Error::Schema(celeriac_schema::Error::StoreUnavailable { op: "claim", .. })
        ),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the failed send published nothing"
    );
    worker.stop().await;
}
