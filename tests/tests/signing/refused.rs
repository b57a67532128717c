//! What a worker that requires signatures refuses: unsigned messages, a
//! flipped body byte, a changed signed header, a key id not in its ring, a
//! malformed signature. Each is dead-lettered with `bad-signature`, byte for
//! byte as published, and its handler never runs.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use celeriac_producer::publish::{long_string, task_properties};
use celeriac_schema::signing::SIGNATURE_HEADER;
use celeriac_schema::{encode, headers, Envelope, Task};
use celeriac_tests::{
    drain, eventually, header_int, header_str, namespace, queue_len, InProcessWorker,
};
use lapin::types::AMQPValue;
use lapin::BasicProperties;

use crate::support::{publish_raw, publisher, registry, ring, Count, Runs};

/// A `sig.count` envelope whose input is `label`, with a marker in its
/// metadata that a tamperer can flip.
fn envelope(label: &str) -> Envelope {
    let mut env = Envelope::new(Count::NAME, rmpv::Value::from(label));
    env.meta.insert("marker".into(), "tamper-me-x".into());
    env
}

fn with_header(props: BasicProperties, name: &str, value: AMQPValue) -> BasicProperties {
    let mut table = props.headers().clone().unwrap_or_default();
    table.insert(name.into(), value);
    props.with_headers(table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_tampered_and_foreign_messages_are_dead_lettered_unchanged() {
    let ns = namespace("sig-refused");
    let runs = Runs::default();
    let keys = ring(&[("k-2025-06", 1)]);
    let worker = InProcessWorker::start(
        &ns,
        registry(&runs, &Arc::new(AtomicBool::new(false))),
        |b| b.signing(keys.clone()),
    )
    .await;
    let (_conn, channel) = publisher().await;
    let topology = ns.topology().clone();

    // (label, body, properties, what the error message says)
    let mut sent: Vec<(String, Vec<u8>, BasicProperties, &str)> = Vec::new();
    let signed = |label: &str| {
        let env = envelope(label);
        let body = encode(&env).unwrap();
        let props = task_properties(&env, "default", &body, Some(&keys)).unwrap();
        (env, body, props)
    };

    let env = envelope("unsigned");
    let body = encode(&env).unwrap();
    let props = task_properties(&env, "default", &body, None).unwrap();
    sent.push((
        "unsigned".into(),
        body,
        props,
        "no `celeriac-signature` header",
    ));

    // The body still decodes after the flip: only the signature tells.
    let (_, mut body, props) = signed("flipped-body");
    let at = body.windows(11).position(|w| w == b"tamper-me-x").unwrap();
    body[at + 10] = b'y';
    celeriac_schema::decode(&body).expect("the tampered body is a valid envelope");
    sent.push(("flipped-body".into(), body, props, "does not match"));

    let (_, body, props) = signed("attempt-changed");
    let props = with_header(props, headers::ATTEMPT, AMQPValue::LongLongInt(1));
    sent.push(("attempt-changed".into(), body, props, "does not match"));

    let (_, body, props) = signed("task-renamed");
    let props = with_header(props, headers::TASK, long_string("celeriac.exec"));
    sent.push(("task-renamed".into(), body, props, "does not match"));

    let removed = ring(&[("k-2024-12", 2)]);
    let env = envelope("removed-key");
    let body = encode(&env).unwrap();
    let props = task_properties(&env, "default", &body, Some(&removed)).unwrap();
    sent.push((
        "removed-key".into(),
        body,
        props,
        "\"k-2024-12\", which is not in the keyring",
    ));

    let (_, body, props) = signed("garbled");
    let props = with_header(
        props,
        SIGNATURE_HEADER,
        long_string("hmac-sha256-v1:k-2025-06:zz"),
    );
    sent.push(("garbled".into(), body, props, "malformed signature"));

    for (_, body, props, _) in &sent {
        publish_raw(&channel, &topology, body, props.clone()).await;
    }
    // A good one after them: the worker runs it.
    let (_, body, props) = signed("good");
    publish_raw(&channel, &topology, &body, props).await;

    let dlq = topology.dead_letter_queue("default");
    let settled = eventually(Duration::from_secs(30), || async {
        runs.ran("good") && queue_len(&channel, &dlq).await as usize == sent.len()
    })
    .await;
    assert!(
        settled,
        "ran {:?}; {} dead letters of {}",
        runs.labels(),
        queue_len(&channel, &dlq).await,
        sent.len()
    );
    let letters: HashMap<String, _> = drain(&channel, &dlq)
        .await
        .into_iter()
        .map(|letter| {
            let id = letter
                .delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string();
            (id, letter)
        })
        .collect();
    assert_eq!(letters.len(), sent.len());
    for (label, body, props, says) in &sent {
        let id = props.message_id().as_ref().unwrap().to_string();
        let letter = &letters[&id];
        assert_eq!(
            header_str(letter, headers::REASON),
            "bad-signature",
            "{label}"
        );
        assert_eq!(
            header_str(letter, headers::ERROR_TYPE),
            "SignatureError",
            "{label}"
        );
        let message = header_str(letter, headers::ERROR_MESSAGE);
        assert!(message.contains(says), "{label}: {message}");
        assert_eq!(header_int(letter, headers::ATTEMPTS), 0, "{label}");
        assert_eq!(
            &letter.delivery.data, body,
            "{label}: the body is kept byte for byte"
        );
    }
    assert_eq!(runs.labels(), ["good"], "no refused message ran");
    let metrics = worker.metrics();
    let series = format!(
        "celeriac_tasks_dead_lettered_total{{queue=\"default\",reason=\"bad-signature\",task=\"unknown\"}} {}",
        sent.len()
    );
    assert!(metrics.contains(&series), "no `{series}` in\n{metrics}");
    let stats = worker.stop().await;
    assert_eq!(stats.dead_lettered, sent.len() as u64);
    assert_eq!(stats.succeeded, 1);
}
