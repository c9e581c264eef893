//! `groupwatch demo`: the real daemon against an in-process simulated tenant with live churn, Graph's
//! replays and one delta-token expiry, printing events as a person would like to read them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::app::{Daemon, shutdown_signal};
use crate::config::{Config, StdoutFormat};
use crate::sim::{Expiry, Faults, MemberKind, RemovedReason, Sim, SimConfig};
use crate::sink::{AnySink, StdoutSink};

const PEOPLE: &[&str] = &[
    "Ada Lovelace",
    "Alan Turing",
    "Grace Hopper",
    "Edsger Dijkstra",
    "Barbara Liskov",
    "Donald Knuth",
    "Margaret Hamilton",
    "Ken Thompson",
    "Frances Allen",
    "John McCarthy",
    "Radia Perlman",
    "Leslie Lamport",
    "Katherine Johnson",
    "Dennis Ritchie",
    "Hedy Lamarr",
    "Tim Berners-Lee",
    "Shafi Goldwasser",
    "Niklaus Wirth",
    "Adele Goldberg",
    "Linus Torvalds",
];
const GROUPS: &[&str] = &["Engineering", "Marketing", "Sales", "Support"];
const POLL_SECS: u64 = 3;

fn id(prefix: u32, n: usize) -> String {
    format!("{prefix:08x}-0000-4000-8000-{n:012x}")
}

struct Tenant {
    sim: Sim,
    people: Vec<String>,
    groups: Vec<String>,
    names: HashMap<String, String>,
}

fn seed_tenant(sim: Sim, rng: &mut StdRng) -> Tenant {
    let people: Vec<String> = (0..PEOPLE.len()).map(|i| id(0x0000_0001, i)).collect();
    let groups: Vec<String> = (0..GROUPS.len()).map(|i| id(0x6000_0000, i)).collect();
    let mut names = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        sim.create_group(g, GROUPS[i]);
        names.insert(g.clone(), GROUPS[i].to_owned());
        // The account the demo signs in for calendars must be a member of each group (as in Graph).
        sim.add_member(g, &sim.user_id(), MemberKind::User);
    }
    names.insert(sim.user_id(), "the calendar service account".into());
    for (i, p) in people.iter().enumerate() {
        names.insert(p.clone(), PEOPLE[i].to_owned());
        for g in &groups {
            if rng.random_bool(0.35) {
                sim.add_member(g, p, MemberKind::User);
            }
        }
    }
    Tenant {
        sim,
        people,
        groups,
        names,
    }
}

fn demo_config(t: &Tenant, state: &std::path::Path) -> anyhow::Result<Config> {
    let groups = t
        .groups
        .iter()
        .map(|g| format!("\"{g}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let toml = format!(
        r#"
[store]
path = "{state}"
[poll]
interval_secs = {POLL_SECS}
jitter_secs = 0
[connections.demo]
tenant_id = "{tenant}"
client_id = "{client}"
client_secret = "{secret}"
graph_url = "{graph}"
authority_url = "{authority}"
delegated_scopes = ["offline_access", "Group.Read.All"]
[sinks.console]
type = "stdout"
format = "pretty"
[[subscriptions]]
id = "demo"
connection = "demo"
kind = "members"
groups = [{groups}]
sinks = ["console"]
baseline = "from_now"
[[subscriptions]]
id = "demo-calendars"
connection = "demo"
kind = "calendar"
groups = [{groups}]
sinks = ["console"]
"#,
        state = state.display(),
        tenant = t.sim.tenant_id(),
        client = t.sim.client_id(),
        secret = t.sim.client_secret(),
        graph = t.sim.base_url(),
        authority = t.sim.authority_url(),
    );
    Ok(Config::from_toml(&toml)?)
}

/// One random membership change in the simulated tenant, narrated in grey.
fn churn_once(t: &Tenant, rng: &mut StdRng) {
    let g = &t.groups[rng.random_range(0..t.groups.len())];
    let p = &t.people[rng.random_range(0..t.people.len())];
    let (gn, pn) = (&t.names[g], &t.names[p]);
    if t.sim.members(g).contains(p) {
        let reason = if rng.random_bool(0.2) {
            RemovedReason::Changed
        } else {
            RemovedReason::Deleted
        };
        t.sim.remove_member(g, p, reason);
        println!("\x1b[90m          tenant: {pn} removed from {gn}\x1b[0m");
    } else {
        t.sim.add_member(g, p, MemberKind::User);
        println!("\x1b[90m          tenant: {pn} added to {gn}\x1b[0m");
    }
}

const MEETINGS: &[&str] = &[
    "Sprint planning",
    "Design review",
    "All hands",
    "Customer call",
    "Retrospective",
];

/// One new event in a random group calendar, narrated in grey.
fn new_meeting(t: &Tenant, rng: &mut StdRng) {
    let g = &t.groups[rng.random_range(0..t.groups.len())];
    let subject = MEETINGS[rng.random_range(0..MEETINGS.len())];
    t.sim.create_event(g, subject);
    println!(
        "\x1b[90m          tenant: event \"{subject}\" created in the {} calendar\x1b[0m",
        t.names[g]
    );
}

async fn churn(t: Arc<Tenant>, shutdown: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(7);
    let started = tokio::time::Instant::now();
    let mut expired = false;
    for step in 0u64.. {
        let wait = Duration::from_millis(rng.random_range(700..2200));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        if step % 3 == 1 {
            new_meeting(&t, &mut rng);
        } else {
            churn_once(&t, &mut rng);
        }
        if !expired && started.elapsed() > Duration::from_secs(16) {
            expired = true;
            t.sim.expire_delta_tokens(Expiry::SyncStateNotFound400);
            println!(
                "\x1b[33m          graph: delta tokens expired (400 syncStateNotFound); the next poll resyncs and emits only the net difference\x1b[0m"
            );
        }
    }
}

/// Runs the demo until Ctrl-C (or for `duration`).
///
/// # Errors
/// When the simulator or the daemon cannot start.
pub async fn run(duration: Option<Duration>) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(42);
    let sim = Sim::start(SimConfig {
        seed: 42,
        page_size: 8,
        ..SimConfig::default()
    })
    .await?;
    // Graph's documented bad habits, on purpose: replays, repeats, empty pages.
    sim.set_faults(Faults {
        replay_fraction: 0.3,
        repeat_fraction: 0.1,
        empty_page_fraction: 0.1,
        ..Faults::default()
    });
    let tenant = Arc::new(seed_tenant(sim, &mut rng));
    let state = std::env::temp_dir().join(format!("groupwatch-demo-{}", std::process::id()));
    let cfg = demo_config(&tenant, &state)?;
    // Group calendars need a delegated sign-in: the simulated user approves the device code at once.
    tenant.sim.set_device_flow(crate::sim::DeviceFlow {
        approve_after_polls: 0,
        ..Default::default()
    });
    crate::login::login(&cfg, "demo", |m| println!("\x1b[90m  sign-in: {m}\x1b[0m")).await?;
    let console =
        StdoutSink::new("console", StdoutFormat::Pretty).with_names(Arc::new(tenant.names.clone()));
    let shutdown = CancellationToken::new();
    let daemon = Daemon::build_with_sinks(
        cfg,
        HashMap::from([("console".to_owned(), AnySink::Stdout(console))]),
        shutdown.clone(),
    )
    .await?;
    println!(
        "groupwatch demo: a simulated Microsoft 365 tenant at {}",
        tenant.sim.base_url()
    );
    println!(
        "  watching {} groups ({}) and their calendars, polling every {POLL_SECS} s;",
        GROUPS.len(),
        GROUPS.join(", ")
    );
    println!(
        "  the tenant replays 30 % of old changes and repeats some: none of them become events."
    );
    println!(
        "  Grey lines are what happens in the tenant; coloured lines are the events groupwatch emits."
    );
    println!("  Press Ctrl-C to stop.\n");
    let churner = tokio::spawn(churn(tenant.clone(), shutdown.clone()));
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        match duration {
            Some(d) => tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = shutdown_signal() => {}
            },
            None => shutdown_signal().await,
        }
        stopper.cancel();
    });
    let res = daemon.run().await;
    let _ = churner.await;
    let requests = tenant.sim.count("/v1.0/groups/delta");
    println!(
        "\ndemo over: {requests} Graph delta requests served; state was in {}",
        state.display()
    );
    let _ = std::fs::remove_dir_all(&state);
    res
}
