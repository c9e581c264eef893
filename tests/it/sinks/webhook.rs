//! Webhook sink through the real relay against a real receiver: signatures, statuses, durable retries.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cloudevents::Event;
use groupwatch::change::ChangeKind::Added;
use groupwatch::relay;
use groupwatch::store::{DlqFilter, Store};

use crate::support::sinks::broker::free_port;
use crate::support::sinks::receiver::{Receiver, Reply};
use crate::support::sinks::{
    RelayTask, SECRET_A, SECRET_B, event, ids, sink_from_toml, temp_store, wait_for, webhook_sink,
};

const FAST: &str = "[0.05, 0.05, 0.05]";

fn stage(store: &Store, sink: &str, n: u64) -> Vec<Event> {
    let evs: Vec<Event> = (1..=n).map(|i| event("g1", i, Added)).collect();
    for e in &evs {
        store.outbox_push(sink, e).unwrap();
    }
    evs
}

fn empty(store: &Store, sink: &str) -> bool {
    store.outbox_depth(sink, usize::MAX) == 0 && store.retry_depth(sink, usize::MAX) == 0
}

#[tokio::test]
async fn delivers_signed_structured_cloudevents_on_2xx() {
    let rx = Receiver::start(&[SECRET_A]).await;
    let (_d, store) = temp_store();
    let sink = webhook_sink("hooks", &rx.url(), &[SECRET_A], FAST);
    let evs = stage(&store, "hooks", 3);
    let n = relay::drain(&store, &sink, 50).await.unwrap();
    assert_eq!(n, 3);
    let hits = rx.hits();
    assert_eq!(
        hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>(),
        ids(&evs),
        "in order"
    );
    for (h, ev) in hits.iter().zip(&evs) {
        assert_eq!(h.status, 204);
        assert_eq!(h.content_type, "application/cloudevents+json");
        assert_eq!(h.secrets_matched, 1);
        let ts: i64 = h.timestamp.parse().unwrap();
        assert!((Utc::now().timestamp() - ts).abs() < 10);
        let body: Event = serde_json::from_slice(&h.body).unwrap();
        assert_eq!(&body, ev, "the body is the structured CloudEvent");
    }
    assert!(empty(&store, "hooks"));
}

/// The receiver answers `status` twice, then 204: the event is retried with the same `webhook-id`.
async fn retried_twice_with_the_same_webhook_id(status: u16) {
    let rx = Receiver::start(&[SECRET_A]).await;
    rx.script([Reply::status(status), Reply::status(status)]);
    let (_d, store) = temp_store();
    let evs = stage(&store, "hooks", 1);
    let relay = RelayTask::spawn(
        &store,
        Arc::new(webhook_sink("hooks", &rx.url(), &[SECRET_A], FAST)),
    );
    rx.wait_delivered(1, Duration::from_secs(10)).await;
    relay.stop().await;
    let hits = rx.hits();
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        [status, status, 204]
    );
    assert!(
        hits.iter().all(|h| h.id == ids(&evs)[0]),
        "same webhook-id on every attempt"
    );
    assert!(empty(&store, "hooks"));
    assert_eq!(store.dlq_count("hooks").unwrap(), 0);
}

#[tokio::test]
async fn retries_webhook_on_503_with_the_same_webhook_id() {
    retried_twice_with_the_same_webhook_id(503).await;
}

#[tokio::test]
async fn retries_webhook_on_408_with_the_same_webhook_id() {
    // 408 Request Timeout is retried too.
    retried_twice_with_the_same_webhook_id(408).await;
}

#[tokio::test]
async fn a_receiver_slower_than_timeout_secs_is_retried_with_the_same_webhook_id() {
    let rx = Receiver::start(&[SECRET_A]).await;
    // The first request is answered only after 2 s; the sender gives up after 1 s.
    rx.script([Reply::status(204).delay(Duration::from_secs(2))]);
    let (_d, store) = temp_store();
    let evs = stage(&store, "hooks", 1);
    let sink = sink_from_toml(
        "hooks",
        &format!(
            "type = \"webhook\"\nurl = \"{}\"\nsecrets = [\"{SECRET_A}\"]\ntimeout_secs = 1\nretry_schedule_secs = {FAST}\nretry_jitter = 0.0\n",
            rx.url()
        ),
    );
    let started = std::time::Instant::now();
    let p = relay::deliver_once(&store, &sink, 50).await.unwrap();
    let took = started.elapsed();
    assert_eq!((p.delivered, p.rescheduled, p.dead), (0, 1, 0), "{p:?}");
    assert!(p.error.unwrap().is_retryable());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
        "the attempt was cut off by timeout_secs, after {took:?}"
    );

    tokio::time::sleep(Duration::from_millis(100)).await; // the 0.05 s retry is due
    assert_eq!(relay::drain(&store, &sink, 50).await.unwrap(), 1);
    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    assert!(
        hits.iter().all(|h| h.id == ids(&evs)[0]),
        "the retry carries the same webhook-id, so the receiver can drop the repeat"
    );
    assert!(empty(&store, "hooks"));
    assert_eq!(store.dlq_count("hooks").unwrap(), 0);
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_receiver_appears() {
    let port = free_port(); // nothing listens here yet
    let url = format!("http://127.0.0.1:{port}/hook");
    let (_d, store) = temp_store();
    let evs = stage(&store, "hooks", 2);
    let sink = webhook_sink(
        "hooks",
        &url,
        &[SECRET_A],
        "[0.05, 0.05, 0.05, 0.05, 0.05, 0.05]",
    );
    for _ in 0..2 {
        let p = relay::deliver_once(&store, &sink, 50).await.unwrap();
        // The first event is tried and rescheduled; the sink stops there, and the second, not sent to an
        // endpoint that just failed, is deferred onto its schedule (without counting an attempt).
        assert_eq!(
            (p.delivered, p.rescheduled, p.kept, p.dead),
            (0, 2, 0, 0),
            "{p:?}"
        );
        assert!(p.error.unwrap().is_retryable());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let later = Utc::now() + chrono::Duration::hours(1);
    let rows = store.pending("hooks", later, 10).unwrap();
    assert_eq!(
        rows.iter().map(|p| p.attempts).collect::<Vec<_>>(),
        [2, 1],
        "the first was tried twice; the second, held back both times, used up a step only once it was due"
    );
    assert_eq!(
        store.outbox_depth("hooks", 10),
        0,
        "the outbox drained while the receiver was away"
    );
    assert_eq!(store.dlq_count("hooks").unwrap(), 0, "not dead-lettered");

    let rx = Receiver::start_on(&[SECRET_A], port).await;
    assert_eq!(relay::drain(&store, &sink, 50).await.unwrap(), 2);
    assert_eq!(rx.delivered_ids(), ids(&evs));
    assert!(empty(&store, "hooks"));
    assert_eq!(store.dlq_count("hooks").unwrap(), 0);
}

#[tokio::test]
async fn redirects_are_not_followed_and_dead_letter() {
    let rx = Receiver::start(&[SECRET_A]).await;
    let moved = rx.url_for("/moved");
    let codes = [301, 302, 303, 307, 308];
    rx.script(codes.map(|c| Reply::status(c).location(&moved)));
    let (_d, store) = temp_store();
    let evs = stage(&store, "hooks", 6);
    let sink = webhook_sink("hooks", &rx.url(), &[SECRET_A], FAST);
    assert_eq!(relay::drain(&store, &sink, 50).await.unwrap(), 1);
    let hits = rx.hits();
    assert!(
        hits.iter().all(|h| h.path == "/hook" && h.method == "POST"),
        "a redirect was followed: {:?}",
        hits.iter()
            .map(|h| format!("{} {}", h.method, h.path))
            .collect::<Vec<_>>()
    );
    assert_eq!(hits.len(), 6, "one attempt each: redirects are not retried");
    let dead = store.dlq_list(&DlqFilter::default()).unwrap();
    assert_eq!(dead.len(), codes.len());
    for ((_, d), (code, ev)) in dead.iter().zip(codes.iter().zip(&evs)) {
        assert_eq!(&d.event, ev);
        assert_eq!(d.attempts, 1);
        assert!(d.error.contains(&format!("HTTP {code}")), "{}", d.error);
    }
    assert_eq!(rx.delivered_ids(), ids(&evs[5..]));
    assert!(empty(&store, "hooks"));
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let rx = Receiver::start(&[SECRET_A]).await;
    rx.script([Reply::status(429).retry_after("1")]);
    let (_d, store) = temp_store();
    stage(&store, "hooks", 1);
    let relay = RelayTask::spawn(
        &store,
        Arc::new(webhook_sink(
            "hooks",
            &rx.url(),
            &[SECRET_A],
            "[0.01, 0.01]",
        )),
    );
    rx.wait_delivered(1, Duration::from_secs(10)).await;
    relay.stop().await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, before Retry-After"
    );
}

#[tokio::test]
async fn dead_letters_on_400_and_delivers_the_rest() {
    let rx = Receiver::start(&[SECRET_A]).await;
    rx.script([Reply::status(400)]);
    let (_d, store) = temp_store();
    let evs = stage(&store, "hooks", 3);
    let sink = webhook_sink("hooks", &rx.url(), &[SECRET_A], FAST);
    assert_eq!(relay::drain(&store, &sink, 50).await.unwrap(), 2);
    let dead = store.dlq_list(&DlqFilter::default()).unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0].1;
    assert_eq!((d.sink.as_str(), d.attempts), ("hooks", 1));
    assert!(d.error.contains("400"), "{}", d.error);
    assert_eq!(d.event, evs[0]);
    assert_eq!(rx.hits().len(), 3, "a 400 is not retried");
    assert_eq!(rx.delivered_ids(), ids(&evs[1..]));
    assert!(empty(&store, "hooks"));
}

#[tokio::test]
async fn disables_endpoint_on_410_and_remembers_it_across_restart() {
    let rx = Receiver::start(&[SECRET_A]).await;
    rx.script([Reply::status(410)]);
    let (dir, store) = temp_store();
    stage(&store, "hooks", 3);
    let sink = webhook_sink("hooks", &rx.url(), &[SECRET_A], FAST);
    relay::drain(&store, &sink, 50).await.unwrap();
    assert_eq!(rx.hits().len(), 1, "nothing is sent after the 410");
    assert!(store.sink_state("hooks").unwrap().disabled_at.is_some());
    assert_eq!(
        store.dlq_count("hooks").unwrap(),
        3,
        "its events are dead letters, not lost"
    );
    drop(store);

    let store = Store::open(&dir.path().join("state")).unwrap();
    let state = store.sink_state("hooks").unwrap();
    assert!(state.disabled_at.is_some(), "disabled state persisted");
    assert!(state.disabled_reason.unwrap().contains("410"));
    stage(&store, "hooks", 1);
    relay::drain(&store, &sink, 50).await.unwrap();
    assert_eq!(rx.hits().len(), 1, "still not sent after a restart");
    assert_eq!(store.dlq_count("hooks").unwrap(), 4);
    let report = relay::sink_report(&store, [&"hooks".to_owned()]).unwrap();
    assert!(report.contains("DISABLED since"), "{report}");
    assert!(report.contains("4 dead-lettered"), "{report}");
    // Readiness, the live view while the daemon runs, turns red and says how to recover.
    let cfg = groupwatch::config::Config::from_toml(&format!(
        "[sinks.hooks]\ntype = \"webhook\"\nurl = \"{}\"\nsecrets = [\"{SECRET_A}\"]\n",
        rx.url()
    ))
    .unwrap();
    let r = groupwatch::health::readiness(&cfg, &store).unwrap();
    assert!(!r.ready);
    assert_eq!(r.sinks["hooks"].dead_lettered, 4);
    assert!(
        r.sinks["hooks"]
            .disabled
            .as_deref()
            .unwrap()
            .contains("410")
    );
    assert!(
        r.problems[0].contains("dlq replay --config FILE --sink hooks"),
        "{:?}",
        r.problems
    );
}

#[tokio::test]
async fn retry_state_survives_a_restart() {
    let rx = Receiver::start(&[SECRET_A]).await;
    rx.set_status(503);
    let (dir, store) = temp_store();
    let evs = stage(&store, "hooks", 1);
    let schedule = "[0.5, 0.1]";
    let sink = webhook_sink("hooks", &rx.url(), &[SECRET_A], schedule);
    let p = relay::deliver_once(&store, &sink, 50).await.unwrap();
    assert_eq!(p.rescheduled, 1);
    drop((store, sink));

    // "Restart": a new store handle and a new sink. The retry is still scheduled, not yet due.
    let store = Store::open(&dir.path().join("state")).unwrap();
    assert_eq!(store.retry_depth("hooks", 10), 1);
    assert_eq!(store.outbox_depth("hooks", 10), 0);
    assert!(store.next_retry_due("hooks").unwrap().unwrap() > Utc::now());
    assert!(store.pending("hooks", Utc::now(), 10).unwrap().is_empty());
    let relay = RelayTask::spawn(
        &store,
        Arc::new(webhook_sink("hooks", &rx.url(), &[SECRET_A], schedule)),
    );
    wait_for(Duration::from_secs(10), "the dead letter", || {
        store.dlq_count("hooks").unwrap() == 1
    })
    .await;
    relay.stop().await;
    let dead = store.dlq_list(&DlqFilter::default()).unwrap();
    assert_eq!(
        dead[0].1.attempts, 3,
        "1 attempt before the restart + 2 after: the count survived"
    );
    assert!(
        dead[0].1.error.contains("gave up after 3 attempts"),
        "{}",
        dead[0].1.error
    );
    let hits = rx.hits();
    assert_eq!(hits.len(), 3);
    assert!(
        hits[1].at - hits[0].at >= Duration::from_millis(400),
        "waited for the persisted due time"
    );
    assert!(hits.iter().all(|h| h.id == ids(&evs)[0]));
}

#[tokio::test]
async fn secret_rotation_signs_with_every_secret() {
    let both = Receiver::start(&[SECRET_A, SECRET_B]).await;
    let only_new = Receiver::start(&[SECRET_B]).await;
    let (_d, store) = temp_store();
    stage(&store, "both", 1);
    stage(&store, "new", 1);
    let s1 = webhook_sink("both", &both.url(), &[SECRET_A, SECRET_B], FAST);
    let s2 = webhook_sink("new", &only_new.url(), &[SECRET_A, SECRET_B], FAST);
    assert_eq!(relay::drain(&store, &s1, 10).await.unwrap(), 1);
    assert_eq!(relay::drain(&store, &s2, 10).await.unwrap(), 1);
    let h = &both.hits()[0];
    assert_eq!(h.signature.split(' ').count(), 2, "{}", h.signature);
    assert_eq!(
        h.secrets_matched, 2,
        "each secret produced its own valid signature"
    );
    assert_eq!(only_new.hits()[0].secrets_matched, 1);
    assert!(
        only_new.hits()[0].ok(),
        "a receiver that rotated to the new secret still verifies"
    );
}

#[tokio::test]
async fn a_failing_webhook_does_not_delay_another_sink() {
    let down = Receiver::start(&[SECRET_A]).await;
    down.set_status(503);
    let up = Receiver::start(&[SECRET_A]).await;
    let (_d, store) = temp_store();
    stage(&store, "down", 20);
    let evs = stage(&store, "up", 20);
    let r1 = RelayTask::spawn(
        &store,
        Arc::new(webhook_sink("down", &down.url(), &[SECRET_A], "[30, 30]")),
    );
    let r2 = RelayTask::spawn(
        &store,
        Arc::new(webhook_sink("up", &up.url(), &[SECRET_A], "[30, 30]")),
    );
    let got = up.wait_delivered(20, Duration::from_secs(10)).await;
    assert_eq!(got, ids(&evs));
    assert!(down.delivered_ids().is_empty());
    assert!(
        store.outbox_depth("down", 100) + store.retry_depth("down", 100) == 20,
        "nothing lost"
    );
    r1.stop().await;
    r2.stop().await;
}

#[tokio::test]
async fn a_down_webhook_keeps_its_outbox_draining_onto_per_event_schedules() {
    let down = Receiver::start(&[SECRET_A]).await;
    down.set_status(503);
    let (_d, store) = temp_store();
    stage(&store, "down", 250);
    let sink = webhook_sink("down", &down.url(), &[SECRET_A], "[30, 30]");
    let mut rescheduled = 0;
    for _ in 0..3 {
        rescheduled += relay::deliver_once(&store, &sink, 100)
            .await
            .unwrap()
            .rescheduled;
    }
    assert_eq!(rescheduled, 250);
    assert_eq!(
        store.outbox_depth("down", usize::MAX),
        0,
        "the outbox drained although the receiver is down"
    );
    assert_eq!(
        store.retry_depth("down", usize::MAX),
        250,
        "every event waits on a schedule of its own: nothing lost"
    );
    assert_eq!(
        down.hits().len(),
        3,
        "one request per round: the rest of a round is not sent to an endpoint that just failed"
    );
}

#[tokio::test]
async fn the_relay_sends_one_request_to_a_down_webhook_however_long_its_outbox() {
    let down = Receiver::start(&[SECRET_A]).await;
    down.set_status(503);
    let (_d, store) = temp_store();
    stage(&store, "down", 250);
    let task = RelayTask::spawn(
        &store,
        Arc::new(webhook_sink("down", &down.url(), &[SECRET_A], "[30, 30]")),
    );
    wait_for(Duration::from_secs(10), "the outbox drained", || {
        store.outbox_depth("down", 10) == 0
    })
    .await;
    task.stop().await;
    assert_eq!(store.retry_depth("down", usize::MAX), 250, "nothing lost");
    assert_eq!(
        down.hits().len(),
        1,
        "after the first failure the rest moved onto their schedules without a request each"
    );
    let later = Utc::now() + chrono::Duration::hours(1);
    let attempts: Vec<u32> = store
        .pending("down", later, 300)
        .unwrap()
        .iter()
        .map(|p| p.attempts)
        .collect();
    assert_eq!(attempts.iter().filter(|a| **a == 1).count(), 1);
    assert_eq!(attempts.iter().filter(|a| **a == 0).count(), 249);
}

#[tokio::test]
async fn a_credential_in_the_webhook_url_never_reaches_errors_or_dead_letters() {
    let port = free_port(); // nothing listens: the error text is what logs and dead letters keep
    let url = format!("http://127.0.0.1:{port}/invoke?api-version=1&sig=sas-secret-999");
    let (_d, store) = temp_store();
    stage(&store, "hooks", 1);
    let sink = webhook_sink("hooks", &url, &[SECRET_A], "[0.01]");
    let p = relay::deliver_once(&store, &sink, 10).await.unwrap();
    let shown = p.error.unwrap().to_string();
    assert!(!shown.contains("sas-secret-999"), "{shown}");
    assert!(
        shown.contains(&format!("127.0.0.1:{port}/invoke")),
        "{shown}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    relay::deliver_once(&store, &sink, 10).await.unwrap(); // the schedule runs out: dead letter
    let dead = store.dlq_list(&DlqFilter::default()).unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        !dead[0].1.error.contains("sas-secret-999"),
        "{}",
        dead[0].1.error
    );
    assert!(!format!("{sink:?}").contains("sas-secret-999"));
}

#[tokio::test]
async fn a_dead_endpoint_dead_letters_every_event_when_its_own_schedule_runs_out() {
    let down = Receiver::start(&[SECRET_A]).await;
    down.set_status(503);
    let (_d, store) = temp_store();
    stage(&store, "down", 200);
    let task = RelayTask::spawn(
        &store,
        Arc::new(webhook_sink("down", &down.url(), &[SECRET_A], "[0.2, 0.2]")),
    );
    // A schedule of 2 waits allows 3 attempts. Each event is held back once while fresh (no step used),
    // then uses a step at each due time, whether it was sent or held back behind a failure.
    wait_for(Duration::from_secs(20), "every event dead-lettered", || {
        store.dlq_count("down").unwrap() == 200
    })
    .await;
    task.stop().await;
    assert!(empty(&store, "down"));
    let hits = down.hits().len();
    assert!(
        (1..200).contains(&hits),
        "one request per round, not one per event and step: {hits}"
    );
    let letters = store.dlq_list(&DlqFilter::default()).unwrap();
    assert!(
        letters.iter().all(|(_, d)| d.attempts == 3),
        "each used its own 3 attempts"
    );
}
