//! Poll-path figures, printed (no timing assertions: these machines are shared and noisy).
//!
//! Side by side in one run against the same simulated tenant over real HTTP on 127.0.0.1:
//! - raw: GET + JSON-decode every page of a full delta round (no state, no transactions);
//! - groupwatch: the same round through normalize → dedup → one sled transaction per page (+ flush);
//!
//! Then incremental cycles with churn and 30 % replays, and Graph requests per cycle by group count.
//!
//! Run: `cargo bench --bench poll`.

use std::time::{Duration, Instant};

use groupwatch::app::Daemon;
use groupwatch::config::Config;
use groupwatch::graph::{DeltaPage, GraphClient};
use groupwatch::sim::{Faults, MemberKind, RemovedReason, Sim, SimConfig};
use tokio_util::sync::CancellationToken;

fn gid(n: u32) -> String {
    format!("60000000-0000-4000-8000-{n:012x}")
}
fn uid(n: u32) -> String {
    format!("00000001-0000-4000-8000-{n:012x}")
}

fn toml(sim: &Sim, dir: &std::path::Path, groups: &[String], baseline: &str) -> String {
    let list = groups
        .iter()
        .map(|g| format!("\"{g}\""))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        r#"
[store]
path = "{state}"
[poll]
interval_secs = 120
jitter_secs = 0
[connections.sim]
tenant_id = "{t}"
client_id = "{c}"
client_secret = "{s}"
graph_url = "{g}"
authority_url = "{a}"
rate_limit_calls = 1000000
rate_limit_period_secs = 1
[sinks.file]
type = "jsonl"
path = "{events}"
[[subscriptions]]
id = "bench"
connection = "sim"
kind = "members"
groups = [{list}]
sinks = ["file"]
baseline = "{baseline}"
"#,
        state = dir.join("state").display(),
        events = dir.join("events.jsonl").display(),
        t = sim.tenant_id(),
        c = sim.client_id(),
        s = sim.client_secret(),
        g = sim.base_url(),
        a = sim.authority_url(),
    )
}

async fn world(groups: u32, members: u32, page: usize) -> (Sim, Vec<String>) {
    let sim = Sim::start(SimConfig {
        page_size: page,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut ids = Vec::new();
    for g in 0..groups {
        let id = gid(g);
        sim.create_group(&id, "g");
        for m in 0..members {
            sim.add_member(&id, &uid(g * 1_000_000 + m), MemberKind::User);
        }
        ids.push(id);
    }
    (sim, ids)
}

async fn raw_round(sim: &Sim, cfg: &Config, groups: &[String]) -> (usize, usize) {
    let client = GraphClient::new(
        &cfg.connections["sim"],
        std::sync::Arc::new(tokio::sync::Semaphore::new(4)),
    )
    .unwrap();
    let (mut pages, mut links) = (0, 0);
    for chunk in groups.chunks(50) {
        let mut url = client.delta_start_url(chunk, false);
        loop {
            let p: DeltaPage = client.delta_page(&url).await.unwrap();
            pages += 1;
            links += p.value.iter().map(|g| g.members.len()).sum::<usize>();
            match (p.next_link, p.delta_link) {
                (Some(n), _) => url = n,
                _ => break,
            }
        }
    }
    let _ = sim;
    (pages, links)
}

#[tokio::main]
async fn main() {
    // 1. Full round: raw fetch vs groupwatch (existing_as_added, so every link becomes an event).
    let (groups, members, page) = (20u32, 2_000u32, 200usize);
    let (sim, ids) = world(groups, members, page).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(&toml(&sim, dir.path(), &ids, "existing_as_added")).unwrap();
    let t = Instant::now();
    let (pages, links) = raw_round(&sim, &cfg, &ids).await;
    let raw = t.elapsed();
    let d = Daemon::build(cfg, CancellationToken::new()).await.unwrap();
    let t = Instant::now();
    let reports = d.poll_all_once().await.unwrap();
    let ours = t.elapsed();
    let events: usize = reports.iter().map(|r| r.events).sum();
    let t = Instant::now();
    let delivered = d.deliver_all().await.unwrap();
    let relay = t.elapsed();
    println!("full round: {groups} groups x {members} members, {pages} pages of <= {page} links");
    println!(
        "  raw fetch+decode : {:>8.1} ms  {:>9.0} links/s",
        ms(raw),
        links as f64 / raw.as_secs_f64()
    );
    println!(
        "  groupwatch poll  : {:>8.1} ms  {:>9.0} links/s  ({events} events staged)  ratio {:.2}x raw",
        ms(ours),
        events as f64 / ours.as_secs_f64(),
        ours.as_secs_f64() / raw.as_secs_f64()
    );
    println!(
        "  relay to JSONL   : {:>8.1} ms  {:>9.0} events/s (fsync per batch of 100)",
        ms(relay),
        delivered as f64 / relay.as_secs_f64()
    );

    // 2. Incremental cycles with churn and 30 % replays.
    sim.set_faults(Faults {
        replay_fraction: 0.3,
        ..Faults::default()
    });
    let mut changes = 0;
    let mut staged = 0;
    let mut unchanged = 0;
    let t = Instant::now();
    for cycle in 0..10u32 {
        for (i, g) in ids.iter().enumerate() {
            let m = uid(i as u32 * 1_000_000 + cycle);
            sim.remove_member(g, &m, RemovedReason::Deleted);
            sim.add_member(
                g,
                &uid(900_000_000 + cycle * 1000 + i as u32),
                MemberKind::User,
            );
            changes += 2;
        }
        for r in d.poll_all_once().await.unwrap() {
            staged += r.events;
            unchanged += r.unchanged;
        }
    }
    let inc = t.elapsed();
    println!(
        "incremental: 10 cycles, {changes} real changes -> {staged} events, {unchanged} replayed entries suppressed, {:.1} ms/cycle",
        ms(inc) / 10.0
    );
    drop(d);

    // 3. Graph delta requests per cycle by number of watched groups.
    for n in [1u32, 50, 120, 1000] {
        let (sim, ids) = world(n, 2, 1000).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_toml(&toml(&sim, dir.path(), &ids, "from_now")).unwrap();
        let d = Daemon::build(cfg, CancellationToken::new()).await.unwrap();
        d.poll_all_once().await.unwrap();
        sim.reset_requests();
        d.poll_all_once().await.unwrap();
        println!(
            "requests per cycle: {n:>5} groups -> {:>3} delta requests ({} batches)",
            sim.count("/v1.0/groups/delta"),
            d.plan().batches.len()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
