//! The dead-letter tool over TLS: the broker through a TLS listener added
//! to the running RabbitMQ (mutual TLS), the management API through an
//! HTTPS stand-in that requires a client certificate.

mod common;

use celeriac_tests::tls::{ManagementStandIn, Pki, TlsBroker};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn reads_dead_letters_over_mutual_tls() {
    let s = setup("dlq-tls").await;
    let published = dead_letters(
        &s,
        &[
            Spec::new("default", "images.resize"),
            Spec::new("default", "mail.send"),
            Spec::new(EMAILS, "mail.send"),
        ],
    )
    .await;
    let pki = Pki::new("dlq");
    let broker = TlsBroker::start(&pki).await;
    let with = |more: &[&str]| {
        let mut args = vec!["--amqp-addr".to_owned(), broker.url.clone()];
        args.extend(pki.client_flags());
        args.extend(more.iter().map(|s| (*s).to_owned()));
        args
    };
    let run = |args: Vec<String>| {
        let ns = s.ns.name().to_owned();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            dlq(&ns, &args).await
        }
    };

    let list = run(with(&["--queue", "default", "list", "--json"])).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    let ids: Vec<String> = list
        .records()
        .iter()
        .filter_map(|r| r["task_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&published[0].task_id));

    // The queues found through the HTTPS management API, with the same
    // certificates.
    let dlqs = [dlq_name(&s, "default"), dlq_name(&s, EMAILS)];
    let https = ManagementStandIn::start(Some(&pki), &[&dlqs[0], &dlqs[1], "other.dlq.x"]).await;
    let stats = run(with(&["--management-url", &https.url, "stats", "--json"])).await;
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    let st = &stats.json()[0];
    assert_eq!(st["total"], 3, "{}", stats.stdout);
    assert_eq!(st["by_queue"][EMAILS], 1);

    // Plain HTTP still works.
    let http = ManagementStandIn::start(None, &[&dlqs[1]]).await;
    let stats = run(with(&["--management-url", &http.url, "stats", "--json"])).await;
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    assert_eq!(stats.json()[0]["total"], 1, "{}", stats.stdout);

    // A broker certificate from another CA: exit 1, the host named.
    let mut wrong = with(&["--queue", "default", "list"]);
    let ca = wrong
        .iter()
        .position(|a| a == "--tls-ca")
        .expect("the flags have --tls-ca");
    wrong[ca + 1] = pki.other_ca.display().to_string();
    let refused = run(wrong).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!(
            "TLS connection to 127.0.0.1:{} failed",
            broker.port
        )),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("UnknownIssuer"),
        "{}",
        refused.stderr
    );

    // The management API without a client certificate: refused, and said.
    let plain_broker = celeriac_tests::broker().await.url.clone();
    let ca_only = vec![
        "--amqp-addr".to_owned(),
        plain_broker,
        "--tls-ca".to_owned(),
        pki.ca.display().to_string(),
        "--management-url".to_owned(),
        https.url.clone(),
        "stats".to_owned(),
    ];
    let refused = run(ca_only).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("management API") && refused.stderr.contains("TLS"),
        "{}",
        refused.stderr
    );
}
