//! Delegated sign-in for group calendars: `groupwatch login` (device code), the calendar wiring of the daemon
//! and the calendar part of `groupwatch state`.
//!
//! sled allows one process per store, so `login` opens the store only for the final write and fails fast,
//! saying so, while a daemon holds it: run `login` first (or stop the daemon, log in, start it again). The
//! daemon reads the stored refresh token at start and rotates it on every refresh.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::graph::GraphClient;
use crate::graph::calendar::{CalendarClient, mailbox_budget};
use crate::graph::client::{MailboxLimiter, delegated_endpoints, http_client};
use crate::graph::delegated::{LoginProgress, device_login};
use crate::relay::Notifier;
use crate::scheduler::{CalendarPoller, calendar_plan};
use crate::store::{SignInStatus, Store, StoreVault};

async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    Store::open_async(&cfg.store.path, cfg.store.cache_capacity_mb * 1024 * 1024)
        .await
        .with_context(|| {
            format!(
                "opening the state store at {} (sled allows one process at a time: stop the daemon, log in, start it again)",
                cfg.store.path.display()
            )
        },
    )
}

/// `groupwatch login`: runs the device authorization grant for `connection` and stores the refresh token.
/// `say` receives what the operator must read (the URL and code, slow-down notices, the result).
///
/// # Errors
/// Unknown or app-only connection, a declined/expired sign-in (with what to do next), store failures.
pub async fn login(
    cfg: &Config,
    connection: &str,
    say: impl Fn(&str) + Send + Sync,
) -> anyhow::Result<()> {
    let Some(conn) = cfg.connections.get(connection) else {
        bail!(
            "no connection {connection:?} in the configuration (known: {})",
            cfg.connections
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if !conn.is_delegated() {
        bail!(
            "connection {connection:?} has no delegated_scopes: add delegated_scopes = [\"offline_access\", \"Group.Read.All\"] to [connections.{connection}] to sign in a user for group calendars"
        );
    }
    // Fail before asking a person to type a code if the store is locked by a running daemon.
    drop(open_store(cfg).await?);
    let http = http_client(
        Duration::from_secs(conn.connect_timeout_secs),
        Duration::from_secs(conn.request_timeout_secs),
    )?;
    let endpoints = delegated_endpoints(conn);
    let outcome = device_login(http, &endpoints, |p| match p {
        LoginProgress::Instructions(text) => say(&text),
        LoginProgress::SlowDown(d) => say(&format!(
            "Entra asked to poll more slowly (slow_down); checking every {} s now.",
            d.as_secs()
        )),
        LoginProgress::Unreachable(d) => say(&format!(
            "The sign-in service could not be reached; checking again in {} s.",
            d.as_secs()
        )),
    })
    .await
    .with_context(|| format!("signing in connection {connection}"))?;
    let store = open_store(cfg).await?;
    store
        .save_login(connection, &outcome.refresh_token, &outcome.scopes)
        .await?;
    say(&format!(
        "Signed in. The refresh token of connection {connection} is stored in {} (scopes: {}); start or restart the daemon to poll its calendars.",
        cfg.store.path.display(),
        outcome.scopes.join(" ")
    ));
    Ok(())
}

/// Outlook's limits of one app: its concurrent calendar requests and its per-mailbox request budget.
type AppLimits = (Arc<Semaphore>, Arc<MailboxLimiter>);

/// Outlook limits per app id, not per connection (GRAPH.md §6.4): connections sharing a `client_id` (case
/// insensitive) share one semaphore of `calendar.max_concurrent_requests` and one per-mailbox budget.
pub fn app_limits(cfg: &Config) -> HashMap<String, AppLimits> {
    let mut by_app: HashMap<String, AppLimits> = HashMap::new();
    let mut out = HashMap::new();
    for name in calendar_plan(cfg).keys() {
        let app = cfg.connections[name].client_id.to_ascii_lowercase();
        let limits = by_app.entry(app).or_insert_with(|| {
            (
                Arc::new(Semaphore::new(cfg.calendar.max_concurrent_requests)),
                Arc::new(mailbox_budget(cfg.calendar.mailbox_requests_per_10min)),
            )
        });
        out.insert(name.clone(), limits.clone());
    }
    out
}

/// Builds the calendar poller: one delegated client per connection with calendar subscriptions; connections of
/// the same app share its Outlook limits (see [`app_limits`]).
///
/// # Errors
/// A calendar connection that was never signed in (run `groupwatch login` first), client construction.
pub fn calendar_poller(
    cfg: &Config,
    store: &Store,
    notifier: &Notifier,
) -> anyhow::Result<CalendarPoller> {
    let plan = calendar_plan(cfg);
    let mut clients = HashMap::new();
    let mut tenants = HashMap::new();
    let mut limits = app_limits(cfg);
    for name in plan.keys() {
        let conn = &cfg.connections[name];
        if store.sign_in(name)?.is_none() {
            bail!(
                "connection {name} has calendar subscriptions but no delegated sign-in: group calendars need a signed-in member account (Graph refuses app-only tokens there). Run `groupwatch login --config FILE --connection {name}` first (while the daemon is stopped)"
            );
        }
        let vault = Arc::new(StoreVault {
            store: store.clone(),
            connection: name.clone(),
        });
        let (sem, budget) = limits
            .remove(name)
            .expect("app_limits covers every planned connection");
        let graph = GraphClient::delegated(conn, vault, sem)
            .with_context(|| format!("building the calendar client of connection {name}"))?;
        clients.insert(
            name.clone(),
            Arc::new(CalendarClient::new(
                Arc::new(graph),
                cfg.calendar.use_batch,
                budget,
                cfg.poll.max_pages_per_poll,
                conn.max_retries,
            )),
        );
        tenants.insert(name.clone(), conn.tenant_id.clone());
    }
    let poller = CalendarPoller::new(
        store.clone(),
        clients,
        tenants,
        plan,
        cfg.poll.outbox_high_water,
        notifier.clone(),
    );
    poller.forget_unwatched()?;
    Ok(poller)
}

/// The calendar lines of `groupwatch state`: sign-in status per delegated connection, then per group its
/// watermark, seen ids and polls.
///
/// # Errors
/// Store read failures.
pub fn state_section(cfg: &Config, store: &Store, out: &mut String) -> anyhow::Result<()> {
    let delegated: Vec<&String> = cfg
        .connections
        .iter()
        .filter(|(_, c)| c.is_delegated())
        .map(|(n, _)| n)
        .collect();
    if delegated.is_empty() {
        return Ok(());
    }
    writeln!(out, "delegated sign-ins:")?;
    for name in delegated {
        match store.sign_in(name)? {
            None => writeln!(
                out,
                "  {name}: not signed in; run `groupwatch login --config FILE --connection {name}`"
            )?,
            Some(v) => {
                let status = match &v.status {
                    SignInStatus::Active => "active".to_owned(),
                    SignInStatus::NeedsLogin { error, detail, at } => format!(
                        "NEEDS LOGIN ({error} at {}: {detail}); calendar subscriptions are stopped, run `groupwatch login --config FILE --connection {name}`",
                        at.to_rfc3339()
                    ),
                };
                writeln!(
                    out,
                    "  {name}: {status}  login={} rotations={} last_rotation={} scopes={}",
                    v.login_at.to_rfc3339(),
                    v.rotations,
                    v.rotated_at.to_rfc3339(),
                    v.scopes.join(" ")
                )?;
            }
        }
    }
    writeln!(out, "calendars:")?;
    for g in store.calendar_groups()? {
        let w = g
            .state
            .watermark
            .map_or_else(|| "none".to_owned(), |t| t.to_rfc3339());
        writeln!(
            out,
            "  {}  group {}  watermark={w} seen={} polls={}",
            g.connection, g.group, g.seen, g.state.polls
        )?;
    }
    Ok(())
}
