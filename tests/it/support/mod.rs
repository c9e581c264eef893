//! Test support: a simulated tenant on 127.0.0.1, a temp state dir, a config that points at both, and a
//! reader for the JSONL sink's file.

#![allow(dead_code)]

pub mod sinks;

use std::collections::HashMap;
use std::path::PathBuf;

use groupwatch::app::Daemon;
use groupwatch::config::Config;
use groupwatch::sim::{MemberKind, Sim, SimConfig};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A deterministic GUID-shaped id.
pub fn guid(prefix: u32, n: u32) -> String {
    format!("{prefix:08x}-0000-4000-8000-{n:012x}")
}

/// A group id.
pub fn group(n: u32) -> String {
    guid(0x6000_0000, n)
}

/// A user id.
pub fn user(n: u32) -> String {
    guid(0x0000_0001, n)
}

/// One test world: simulator + state dir + config.
pub struct World {
    pub sim: Sim,
    pub dir: tempfile::TempDir,
    pub groups: Vec<String>,
    pub baseline: &'static str,
    pub extra: String,
}

impl World {
    /// A simulator with `groups` groups of `members` users each.
    pub async fn new(groups: u32, members: u32, page_size: usize) -> World {
        let cfg = SimConfig {
            page_size,
            ..SimConfig::default()
        };
        World::with_sim(cfg, groups, members).await
    }

    /// The same with a simulator configured by `cfg`.
    pub async fn with_sim(cfg: SimConfig, groups: u32, members: u32) -> World {
        let sim = Sim::start(cfg).await.unwrap();
        let mut ids = Vec::new();
        for g in 0..groups {
            let id = group(g);
            sim.create_group(&id, &format!("Group {g}"));
            for m in 0..members {
                sim.add_member(&id, &user(g * 100_000 + m), MemberKind::User);
            }
            ids.push(id);
        }
        World {
            sim,
            dir: tempfile::tempdir().unwrap(),
            groups: ids,
            baseline: "from_now",
            extra: String::new(),
        }
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The configuration TOML for the watched `groups`.
    pub fn toml(&self, groups: &[String]) -> String {
        let list = groups
            .iter()
            .map(|g| format!("\"{g}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            r#"
[store]
path = "{state}"

[poll]
interval_secs = 2
jitter_secs = 0

[connections.sim]
tenant_id = "{tenant}"
client_id = "{client}"
client_secret = "{secret}"
graph_url = "{graph}"
authority_url = "{authority}"
rate_limit_calls = 100000
rate_limit_period_secs = 1
max_retries = 4
request_timeout_secs = 10

[sinks.file]
type = "jsonl"
path = "{events}"

[[subscriptions]]
id = "test"
connection = "sim"
kind = "members"
groups = [{list}]
sinks = ["file"]
baseline = "{baseline}"
{extra}
"#,
            state = self.state_path().display(),
            tenant = self.sim.tenant_id(),
            client = self.sim.client_id(),
            secret = self.sim.client_secret(),
            graph = self.sim.base_url(),
            authority = self.sim.authority_url(),
            events = self.events_path().display(),
            baseline = self.baseline,
            extra = self.extra,
        )
    }

    pub fn config(&self) -> Config {
        self.config_for(&self.groups.clone())
    }

    pub fn config_for(&self, groups: &[String]) -> Config {
        Config::from_toml(&self.toml(groups)).unwrap()
    }

    /// Writes the configuration to a file (for the binary).
    pub fn config_file(&self) -> PathBuf {
        let p = self.dir.path().join("groupwatch.toml");
        std::fs::write(&p, self.toml(&self.groups)).unwrap();
        p
    }

    pub async fn daemon(&self) -> Daemon {
        Daemon::build(self.config(), CancellationToken::new())
            .await
            .unwrap()
    }

    /// Every event line delivered to the JSONL sink so far.
    pub fn events(&self) -> Vec<Value> {
        read_events(&self.events_path())
    }

    /// One poll of every batch, then deliver everything.
    pub async fn cycle(&self, d: &Daemon) {
        d.poll_all_once().await.unwrap();
        d.deliver_all().await.unwrap();
    }
}

/// Builds a daemon (no sign-in) from a configuration text.
pub async fn daemon_from(toml: &str) -> Daemon {
    Daemon::build(Config::from_toml(toml).unwrap(), CancellationToken::new())
        .await
        .unwrap()
}

/// `toml` plus a JSONL sink `audit` writing to `path` and a subscription `audit` of `kind` on `group` that
/// sends to it, with `extra` settings (e.g. a different baseline).
pub fn with_audit_subscription(
    toml: &str,
    path: &std::path::Path,
    kind: &str,
    group: &str,
    extra: &str,
) -> String {
    format!(
        r#"{toml}
[sinks.audit]
type = "jsonl"
path = "{path}"

[[subscriptions]]
id = "audit"
connection = "sim"
kind = "{kind}"
groups = ["{group}"]
sinks = ["audit"]
{extra}
"#,
        path = path.display()
    )
}

pub fn read_events(path: &std::path::Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// (type, group, member) of an event.
pub fn key(ev: &Value) -> (String, String, String) {
    (
        ev["type"].as_str().unwrap().to_owned(),
        ev["data"]["groupId"].as_str().unwrap().to_owned(),
        ev["data"]["id"].as_str().unwrap().to_owned(),
    )
}

/// Asserts no event id appears twice and returns id → event.
pub fn unique_by_id(events: &[Value]) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for ev in events {
        let id = ev["id"].as_str().unwrap().to_owned();
        assert!(
            out.insert(id.clone(), ev.clone()).is_none(),
            "duplicate event id {id}"
        );
    }
    out
}

/// Calendar worlds: the simulated signed-in account is a member of every group, the connection is delegated.
impl World {
    /// A world whose groups the simulated user belongs to (so it may read their calendars).
    pub async fn with_calendars(groups: u32) -> World {
        let w = World::new(groups, 2, 100).await;
        for g in &w.groups {
            w.sim.add_member(g, &w.sim.user_id(), MemberKind::User);
        }
        w.sim.set_device_flow(groupwatch::sim::DeviceFlow {
            approve_after_polls: 0,
            ..Default::default()
        });
        w
    }

    /// Config with a delegated connection and a calendar subscription over `groups` (plus `members`
    /// subscription when `with_members`). `calendar` is appended to the calendar subscription table.
    pub fn calendar_toml(&self, with_members: bool, use_batch: bool, calendar: &str) -> String {
        let list = self
            .groups
            .iter()
            .map(|g| format!("\"{g}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let members = if with_members {
            format!(
                "[[subscriptions]]\nid = \"members\"\nconnection = \"sim\"\nkind = \"members\"\ngroups = [{list}]\nsinks = [\"file\"]\n"
            )
        } else {
            String::new()
        };
        format!(
            r#"
[store]
path = "{state}"
[poll]
interval_secs = 2
jitter_secs = 0
[calendar]
use_batch = {use_batch}
[connections.sim]
tenant_id = "{tenant}"
client_id = "{client}"
client_secret = "{secret}"
graph_url = "{graph}"
authority_url = "{authority}"
rate_limit_calls = 100000
rate_limit_period_secs = 1
max_retries = 4
request_timeout_secs = 10
delegated_scopes = ["offline_access", "Group.Read.All"]
[sinks.file]
type = "jsonl"
path = "{events}"
{members}
[[subscriptions]]
id = "calendars"
connection = "sim"
kind = "calendar"
groups = [{list}]
sinks = ["file"]
{calendar}
"#,
            state = self.state_path().display(),
            tenant = self.sim.tenant_id(),
            client = self.sim.client_id(),
            secret = self.sim.client_secret(),
            graph = self.sim.base_url(),
            authority = self.sim.authority_url(),
            events = self.events_path().display(),
        )
    }

    /// Signs the simulated user in (in-process `login`) for `cfg`'s connection `sim`.
    pub async fn login(&self, cfg: &Config) {
        groupwatch::login::login(cfg, "sim", |_| {}).await.unwrap();
    }

    /// Signs in, then builds a daemon for `toml`.
    pub async fn calendar_daemon(&self, toml: &str) -> Daemon {
        let cfg = Config::from_toml(toml).unwrap();
        self.login(&cfg).await;
        Daemon::build(cfg, CancellationToken::new()).await.unwrap()
    }

    /// One calendar poll of every connection, then deliver everything.
    pub async fn calendar_cycle(&self, d: &Daemon) {
        d.poll_calendars_once().await.unwrap();
        d.deliver_all().await.unwrap();
    }
}

/// HTTP round trips to Graph (`/v1.0`, not counting `$batch` items or the token endpoint).
pub fn graph_round_trips(sim: &Sim) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1.0") && !r.batched)
        .count()
}
