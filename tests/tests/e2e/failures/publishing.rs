//! Publishing that fails: unroutable tasks, an unreachable broker.

use super::*;

#[tokio::test]
async fn unroutable_publishes_are_errors() {
    let ns = celeriac_tests::namespace("unroutable");
    let producer = producer(&ns).await;
    let topology = producer.topology().clone();
    let (_conn, channel) = broker().await.channel().await;

    // A routing key no queue is bound to, published the way workers do.
    let (_publisher_conn, publisher) = broker().await.channel().await;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let envelope = Envelope::new(Ping::NAME, rmpv::Value::Nil);
    let body = celeriac_schema::encode(&envelope).unwrap();
    let route = Route {
        exchange: topology.work_exchange(),
        routing_key: "nowhere".into(),
    };
    let props =
        publish::envelope_properties(&envelope, publish::envelope_headers(&envelope, "nowhere"));
    let err =
        publish::publish_confirmed(&publisher, &route, &body, props, &envelope.id.to_string())
            .await
            .unwrap_err();
    assert!(
        matches!(&err, ProducerError::Unroutable { routing_key, .. } if routing_key == "nowhere"),
        "expected Unroutable, got {err}"
    );
    assert!(
        !err.is_transient(),
        "an unroutable task will not route on a retry"
    );

    // The producer's own queue, once its binding is gone.
    channel
        .queue_unbind(
            topology.work_queue("default").as_str().into(),
            topology.work_exchange().as_str().into(),
            "default".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let err = producer
        .send::<Ping>(&(), &SendOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProducerError::Unroutable { exchange, routing_key, .. }
            if *exchange == topology.work_exchange() && routing_key == "default"),
        "expected Unroutable, got {err}"
    );
    assert_eq!(
        queue_len(&channel, &topology.work_queue("default")).await,
        0,
        "nothing reached the unbound queue"
    );
    assert_eq!(
        delete_queues(&channel, &topology).await,
        0,
        "a message was left behind"
    );
}

/// Connects a producer to `url`, where no broker answers; returns the error
/// and how long it took.
async fn connect_error(url: &str, connect_timeout: Duration) -> (ProducerError, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        Producer::builder(url)
            .namespace(celeriac_tests::namespace("unreachable"))
            .connect_timeout(connect_timeout)
            .connect(),
    )
    .await
    .unwrap_or_else(|_| panic!("connecting to {url} hung past the connect timeout"));
    let elapsed = started.elapsed();
    match result {
        Ok(_) => panic!("connected to {url}, where no broker is"),
        Err(err) => (err, elapsed),
    }
}

#[tokio::test]
async fn an_unreachable_broker_fails_within_the_connect_timeout() {
    let connect_timeout = Duration::from_secs(2);

    // Nothing listens: refused at once.
    let (err, elapsed) = connect_error("amqp://guest:guest@127.0.0.1:1/%2f", connect_timeout).await;
    assert!(
        matches!(err, ProducerError::Unreachable { .. }),
        "expected Unreachable, got {err}"
    );
    assert!(err.is_transient(), "the broker may come back");
    assert!(
        elapsed < connect_timeout + Duration::from_secs(1),
        "gave up after {elapsed:?}, past the {connect_timeout:?} connect timeout"
    );
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1:1"),
        "the error names the broker: {text}"
    );
    assert!(
        !text.contains("guest:guest"),
        "the error leaks the password: {text}"
    );

    // Something takes the TCP connection (the kernel completes handshakes
    // for a listener that never accepts) but never speaks AMQP.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let (err, elapsed) = connect_error(&url, connect_timeout).await;
    assert!(
        matches!(err, ProducerError::Unreachable { .. }),
        "expected Unreachable, got {err}"
    );
    assert!(
        elapsed >= connect_timeout - Duration::from_millis(100)
            && elapsed < connect_timeout + Duration::from_millis(1500),
        "gave up after {elapsed:?} with a {connect_timeout:?} connect timeout"
    );
    drop(silent);
}
