//! The `groupwatch` binary as a user runs it: killed mid-round, stopped by SIGTERM, fed bad config.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use groupwatch::sim::{Faults, MemberKind};

use crate::support::{World, read_events, user};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_groupwatch"))
}

fn spawn_run(cfg: &std::path::Path) -> Child {
    spawn_run_with(cfg, &[])
}

fn spawn_run_with(cfg: &std::path::Path, env: &[(&str, &str)]) -> Child {
    bin()
        .args(["run", "--config"])
        .arg(cfg)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sigterm(child: &Child) {
    signal(child, "TERM");
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_the_daemon_cleanly_and_releases_the_store() {
    let w = World::new(1, 2, 100).await;
    let cfg = w.config_file();
    let mut child = spawn_run(&cfg);
    wait_until("the baseline round", Duration::from_secs(30), || {
        w.sim.count("/v1.0/groups/delta") >= 1
    })
    .await;
    signal(&child, "INT");
    let started = std::time::Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGINT is a clean stop: {status}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let out = bin()
        .args(["state", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the store was released: {text}");
    assert!(
        text.contains("cursor=deltaLink"),
        "the baseline was saved: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_killed_between_pages_loses_nothing_on_restart() {
    let mut w = World::new(1, 100, 10).await;
    w.baseline = "existing_as_added";
    let cfg = w.config_file();
    w.sim.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    let mut child = spawn_run(&cfg);
    // The round has 10 pages; kill while the 4th is in flight (3 committed).
    wait_until("three delta pages", Duration::from_secs(60), || {
        w.sim.count("/v1.0/groups/delta") >= 4
    })
    .await;
    child.kill().unwrap(); // SIGKILL: no clean shutdown at all
    child.wait().unwrap();
    let before = read_events(&w.events_path()).len();
    assert!(
        before < 100,
        "the kill came too late to prove anything ({before} events)"
    );

    w.sim.set_faults(Faults::default());
    w.sim.reset_requests();
    let mut child = spawn_run(&cfg);
    wait_until("all 100 members", Duration::from_secs(60), || {
        let ids: std::collections::HashSet<String> = read_events(&w.events_path())
            .iter()
            .map(|e| e["data"]["id"].as_str().unwrap().to_owned())
            .collect();
        ids.len() >= 100
    })
    .await;
    sigterm(&child);
    assert!(
        child.wait().unwrap().success(),
        "SIGTERM must stop the daemon cleanly"
    );

    let first = w
        .sim
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1.0/groups/delta")
        .unwrap();
    assert!(
        first.query.contains("skiptoken"),
        "the restart resumes from the saved nextLink, got {}",
        first.query
    );
    // At-least-once: a line may repeat, but only with the same id; every member exactly one id.
    let mut per_member: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for e in read_events(&w.events_path()) {
        assert_eq!(e["type"], "groupwatch.member.added");
        per_member
            .entry(e["data"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(e["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(per_member.len(), 100);
    assert!(per_member.values().all(|ids| ids.len() == 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_daemon_delivers_changes_and_stops_on_sigterm() {
    let w = World::new(2, 3, 100).await;
    let cfg = w.config_file();
    let port = crate::support::sinks::broker::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = spawn_run_with(&cfg, &[("GROUPWATCH__HEALTH__LISTEN", &listen)]);
    // The first poll runs at start-up (baseline); then changes arrive on the 2 s schedule.
    wait_until("the baseline round", Duration::from_secs(30), || {
        w.sim.count("/v1.0/groups/delta") >= 1
    })
    .await;
    // While the daemon holds the store, the health endpoints are the live view of it.
    let http = reqwest::Client::new();
    let live = http
        .get(format!("http://{listen}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready = http
        .get(format!("http://{listen}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], true, "{body}");
    assert!(body["sinks"]["file"]["waiting"].is_u64(), "{body}");
    w.sim
        .add_member(&w.groups[0], &user(4242), MemberKind::User);
    wait_until("the event", Duration::from_secs(30), || {
        !read_events(&w.events_path()).is_empty()
    })
    .await;
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    let events = read_events(&w.events_path());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["id"], user(4242).as_str());

    let out = bin()
        .args(["state", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("cursor=deltaLink"), "{text}");
    assert!(
        text.contains(&format!("group {}  members=4", w.groups[0])),
        "{text}"
    );
    assert!(text.contains("file: 0 waiting"), "{text}");
}

#[test]
fn check_config_names_every_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        r#"
[poll]
interval_secs = 0
[connections.main]
tenant_id = "contoso.onmicrosoft.com"
client_id = "not-a-guid"
[[subscriptions]]
id = "a"
connection = "main"
kind = "members"
groups = ["1234"]
sinks = ["kafka"]
"#,
    )
    .unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    for key in [
        "poll.interval_secs",
        "connections.main.client_id",
        "connections.main.client_secret",
        "subscriptions[0].groups[0]",
        "subscriptions[0].sinks[0]",
    ] {
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }
    let out = bin()
        .args(["check-config", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("missing.toml")
    );
}

#[test]
fn demo_shows_member_and_calendar_events_within_seconds() {
    // Long enough for the demo's delta-token expiry (after 16 s) and the resync after it.
    let out = bin()
        .args(["demo", "--for-secs", "24"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" joined ") || text.contains(" left "),
        "{text}"
    );
    assert!(text.contains("demo over"), "{text}");
    assert!(
        text.contains("new event"),
        "calendar events are shown too:\n{text}"
    );
    assert!(text.contains("delta tokens expired"), "{text}");
    // Every emitted line carries its event id: none repeats, across replays and the resync.
    let ids: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" joined ") || l.contains(" left ") || l.contains("new event"))
        .filter_map(|l| l.rsplit("  id ").next())
        .collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a repeated event id:\n{text}");
    // No more member events than real member changes in the tenant (replays become nothing).
    let changes = text
        .lines()
        .filter(|l| {
            l.contains("tenant: ") && (l.contains(" added to ") || l.contains(" removed from "))
        })
        .count();
    let events = text
        .lines()
        .filter(|l| l.contains(" joined ") || l.contains(" left "))
        .count();
    assert!(
        events >= 1 && events <= changes,
        "{events} events for {changes} changes:\n{text}"
    );
}
