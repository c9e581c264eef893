//! `groupwatch dlq list | replay | purge` on a real store, with a real receiver behind the sink.

use cloudevents::Event;
use groupwatch::change::ChangeKind::Added;
use groupwatch::config::Config;
use groupwatch::relay;
use groupwatch::sink::AnySink;
use groupwatch::store::{DlqFilter, Store};

use crate::support::sinks::receiver::{Receiver, Reply};
use crate::support::sinks::{SECRET_A, event, ids};

fn config(dir: &std::path::Path, url: &str) -> Config {
    Config::from_toml(&format!(
        r#"
[store]
path = "{}"

[sinks.hooks]
type = "webhook"
url = "{url}"
secrets = ["{SECRET_A}"]
retry_schedule_secs = [0.01]
"#,
        dir.join("state").display()
    ))
    .unwrap()
}

fn sink(cfg: &Config) -> AnySink {
    AnySink::from_config("hooks", &cfg.sinks["hooks"]).unwrap()
}

async fn stage_and_drain(cfg: &Config, n: u64) -> Vec<Event> {
    let store = Store::open(&cfg.store.path).unwrap();
    let evs: Vec<Event> = (1..=n).map(|i| event("g1", i, Added)).collect();
    for e in &evs {
        store.outbox_push("hooks", e).unwrap();
    }
    relay::drain(&store, &sink(cfg), 50).await.unwrap();
    evs
}

#[tokio::test]
async fn dlq_replay_delivers_dead_letters_again_with_the_same_ids() {
    let rx = Receiver::start(&[SECRET_A]).await;
    rx.script([Reply::status(400), Reply::status(422)]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &rx.url());
    let evs = stage_and_drain(&cfg, 3).await;
    assert_eq!(rx.delivered_ids(), ids(&evs[2..]));

    let all = DlqFilter::default();
    let listing = groupwatch::dlq::list(&cfg, &all, false).unwrap();
    assert!(listing.contains("2 dead letter(s)"), "{listing}");
    for id in ids(&evs[..2]) {
        assert!(listing.contains(&id), "{listing}");
    }
    let json = groupwatch::dlq::list(&cfg, &all, true).unwrap();
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["sink"], "hooks");
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["event"]["id"], ids(&evs)[0].as_str());

    // Replay only the first one, by id.
    let one = DlqFilter {
        sink: None,
        ids: vec![ids(&evs)[0].clone()],
    };
    let out = groupwatch::dlq::replay(&cfg, &one).unwrap();
    assert!(out.contains("replayed 1 event(s) to sink hooks"), "{out}");
    let store = Store::open(&cfg.store.path).unwrap();
    assert_eq!(store.outbox_depth("hooks", 10), 1);
    assert_eq!(store.dlq_count("hooks").unwrap(), 1);
    relay::drain(&store, &sink(&cfg), 50).await.unwrap();
    assert_eq!(
        rx.delivered_ids(),
        [ids(&evs)[2].clone(), ids(&evs)[0].clone()]
    );
    drop(store);

    let out = groupwatch::dlq::purge(
        &cfg,
        &DlqFilter {
            sink: Some("hooks".into()),
            ids: vec![],
        },
    )
    .unwrap();
    assert_eq!(out, "purged 1 dead letter(s)\n");
    let listing = groupwatch::dlq::list(&cfg, &all, false).unwrap();
    assert!(listing.contains("0 dead letter(s)"), "{listing}");
}

#[tokio::test]
async fn dlq_replay_re_enables_an_endpoint_disabled_by_410() {
    let rx = Receiver::start(&[SECRET_A]).await;
    rx.script([Reply::status(410)]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &rx.url());
    let evs = stage_and_drain(&cfg, 2).await;
    let state = groupwatch::app::state_report(&cfg).unwrap();
    assert!(
        state.contains("hooks: 0 waiting, 0 retrying, 2 dead-lettered, DISABLED since"),
        "{state}"
    );

    let out = groupwatch::dlq::replay(&cfg, &DlqFilter::default()).unwrap();
    assert!(out.contains("replayed 2 event(s) to sink hooks"), "{out}");
    assert!(out.contains("is enabled again"), "{out}");
    let store = Store::open(&cfg.store.path).unwrap();
    assert!(store.sink_state("hooks").unwrap().disabled_at.is_none());
    relay::drain(&store, &sink(&cfg), 50).await.unwrap();
    assert_eq!(rx.delivered_ids(), ids(&evs));
}

#[tokio::test]
async fn dlq_replay_refuses_sinks_that_are_no_longer_configured() {
    let rx = Receiver::start(&[SECRET_A]).await;
    rx.script([Reply::status(400)]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &rx.url());
    stage_and_drain(&cfg, 1).await;
    let mut without = cfg.clone();
    without.sinks.clear();
    let err = groupwatch::dlq::replay(&without, &DlqFilter::default()).unwrap_err();
    assert!(
        err.to_string().contains("no longer configured: hooks"),
        "{err}"
    );
    let store = Store::open(&cfg.store.path).unwrap();
    assert_eq!(store.dlq_count("hooks").unwrap(), 1, "nothing moved");
}
