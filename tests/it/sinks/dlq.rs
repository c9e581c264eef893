//! `groupwatch dlq list | replay | purge` on a real store, with a real receiver behind the sink.

use std::process::{Command, Output};

use cloudevents::Event;
use groupwatch::change::ChangeKind::Added;
use groupwatch::config::Config;
use groupwatch::relay;
use groupwatch::sink::AnySink;
use groupwatch::store::{DlqFilter, Store};

use crate::support::sinks::receiver::{Receiver, Reply};
use crate::support::sinks::{SECRET_A, event, ids};

fn config_toml(dir: &std::path::Path, url: &str) -> String {
    format!(
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
    )
}

fn config(dir: &std::path::Path, url: &str) -> Config {
    Config::from_toml(&config_toml(dir, url)).unwrap()
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
    store.flush().await.unwrap();
    evs
}

/// Runs the real binary: `groupwatch dlq ARGS… --config FILE`.
fn cli(config_file: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_groupwatch"))
        .arg("dlq")
        .args(args)
        .arg("--config")
        .arg(config_file)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}; stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
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
async fn dlq_replay_with_sink_re_enables_an_endpoint_even_after_its_dead_letters_were_purged() {
    let rx = Receiver::start(&[SECRET_A]).await;
    rx.script([Reply::status(410)]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &rx.url());
    stage_and_drain(&cfg, 1).await;
    groupwatch::dlq::purge(&cfg, &DlqFilter::default()).unwrap();
    let filter = DlqFilter {
        sink: Some("hooks".into()),
        ..DlqFilter::default()
    };
    let out = groupwatch::dlq::replay(&cfg, &filter).unwrap();
    assert!(out.contains("is enabled again"), "{out}");
    assert!(out.contains("no dead letter matched"), "{out}");
    let store = Store::open(&cfg.store.path).unwrap();
    assert!(store.sink_state("hooks").unwrap().disabled_at.is_none());
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

#[tokio::test]
async fn dlq_cli_lists_replays_and_purges_a_real_store() {
    let rx = Receiver::start(&[SECRET_A]).await;
    rx.script([Reply::status(400), Reply::status(400)]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("groupwatch.toml");
    std::fs::write(&file, config_toml(dir.path(), &rx.url())).unwrap();
    let cfg = config(dir.path(), &rx.url());
    let evs = stage_and_drain(&cfg, 3).await; // the store is closed again: the CLI can open it
    let dead = ids(&evs[..2]);

    let listing = stdout(&cli(&file, &["list"]));
    assert!(listing.contains("2 dead letter(s)"), "{listing}");
    for id in &dead {
        let line = listing.lines().find(|l| l.contains(id.as_str())).unwrap();
        assert!(line.contains("sink=hooks"), "{line}");
        assert!(line.contains("attempts=1"), "{line}");
        assert!(line.contains("HTTP 400"), "{line}");
    }

    let json = stdout(&cli(&file, &["list", "--json"]));
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{json}");
    for (row, id) in rows.iter().zip(&dead) {
        assert_eq!(row["sink"], "hooks");
        assert_eq!(row["attempts"], 1);
        assert_eq!(row["event"]["id"], id.as_str());
    }

    // Purging everything needs an explicit --all.
    let refused = cli(&file, &["purge"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("purge needs --sink, --id or --all"), "{err}");
    assert!(stdout(&cli(&file, &["list"])).contains("2 dead letter(s)"));

    let out = stdout(&cli(&file, &["replay", "--sink", "elsewhere"]));
    assert!(out.contains("no dead letter matched"), "{out}");
    let out = stdout(&cli(&file, &["replay", "--sink", "hooks"]));
    assert!(out.contains("replayed 2 event(s) to sink hooks"), "{out}");

    // The replayed events are back on the outbox with their ids; one is refused again.
    let store = Store::open(&cfg.store.path).unwrap();
    assert_eq!(store.outbox_depth("hooks", 10), 2);
    assert_eq!(store.dlq_count("hooks").unwrap(), 0);
    rx.script([Reply::status(400)]);
    relay::drain(&store, &sink(&cfg), 50).await.unwrap();
    assert_eq!(rx.delivered_ids(), [ids(&evs)[2].clone(), dead[1].clone()]);
    store.flush().await.unwrap();
    drop(store);

    let out = stdout(&cli(&file, &["purge", "--all"]));
    assert_eq!(out, "purged 1 dead letter(s)\n");
    assert!(stdout(&cli(&file, &["list"])).contains("0 dead letter(s)"));
}
