//! Edges of the membership trigger, daemon against the simulated tenant over real HTTP: `@removed` entries in
//! the initial round, rounds cut by `max_pages_per_poll` (resumed, or expired and resynced), empty pages that
//! still carry a nextLink, the event envelope, and the stdout sink of the real binary.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use groupwatch::app::Daemon;
use groupwatch::sim::{Expiry, Faults, MemberKind, RemovedReason, RequestRecord, Sim, SimConfig};
use groupwatch::store::BatchRecord;
use serde_json::Value;

use crate::support::{World, daemon_from, key, read_events, unique_by_id, user};

const ADDED: &str = "groupwatch.member.added";
const REMOVED: &str = "groupwatch.member.removed";

fn sim_cfg(page_size: usize) -> SimConfig {
    SimConfig {
        page_size,
        ..SimConfig::default()
    }
}

/// The world's configuration with `[poll] max_pages_per_poll = n`.
fn toml_with_max_pages(w: &World, n: u32) -> String {
    w.toml(&w.groups).replace(
        "jitter_secs = 0",
        &format!("jitter_secs = 0\nmax_pages_per_poll = {n}"),
    )
}

fn batch_state(d: &Daemon) -> BatchRecord {
    d.store().batch(&d.plan().batches[0].key).unwrap().unwrap()
}

fn delta_requests(sim: &Sim) -> Vec<RequestRecord> {
    sim.requests()
        .into_iter()
        .filter(|r| r.path == "/v1.0/groups/delta")
        .collect()
}

fn set(v: Vec<String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

/// Sorted (type, group, member) keys.
fn sorted_keys(events: &[Value]) -> Vec<(String, String, String)> {
    let mut k: Vec<_> = events.iter().map(key).collect();
    k.sort();
    k
}

/// The net difference from `from` to `to` of one group's members, as sorted event keys.
fn net_difference(
    group: &str,
    from: &BTreeSet<String>,
    to: &BTreeSet<String>,
) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = to
        .difference(from)
        .map(|m| (ADDED.to_owned(), group.to_owned(), m.clone()))
        .chain(
            from.difference(to)
                .map(|m| (REMOVED.to_owned(), group.to_owned(), m.clone())),
        )
        .collect();
    out.sort();
    out
}

/// Applies events (in order) to a member set, asserting each one is a real change of that set.
fn apply(members: &mut BTreeSet<String>, events: &[Value]) {
    for ev in events {
        let (ty, _, m) = key(ev);
        match ty.as_str() {
            ADDED => assert!(members.insert(m.clone()), "added {m} who was a member"),
            REMOVED => assert!(members.remove(&m), "removed {m} who was not a member"),
            other => panic!("unexpected event type {other}"),
        }
    }
}

/// Polls until a round completes (at most `limit` polls); returns the reports.
async fn poll_until_round_completes(
    d: &Daemon,
    limit: usize,
) -> Vec<groupwatch::scheduler::PollReport> {
    let mut reports = Vec::new();
    for _ in 0..limit {
        let r = d.poll_all_once().await.unwrap().remove(0);
        let done = r.round_completed;
        reports.push(r);
        if done {
            return reports;
        }
    }
    panic!("no round completed within {limit} polls: {reports:?}");
}

// ---------------------------------------------------------------------------------------------------------
// 1. `@removed` entries in the initial round (GRAPH.md §1.2 ⚠).
// ---------------------------------------------------------------------------------------------------------

/// Number of `@removed` member entries the initial round of `groups` carries right now, read straight from
/// the simulator, so the tests below prove the knob is in effect.
async fn removed_entries_in_initial_round(w: &World) -> usize {
    let cfg = w.config();
    let client = groupwatch::graph::GraphClient::new(
        &cfg.connections["sim"],
        Arc::new(tokio::sync::Semaphore::new(1)),
    )
    .unwrap();
    let mut url = client.delta_start_url(&w.groups, false);
    let mut removed = 0;
    for _ in 0..1000 {
        let page = client.delta_page(&url).await.unwrap();
        removed += page
            .value
            .iter()
            .flat_map(|g| g.members.iter())
            .filter(|m| m.removed.is_some())
            .count();
        match page.link().unwrap() {
            groupwatch::graph::NextLink::Next(l) => url = l,
            groupwatch::graph::NextLink::Delta(_) => return removed,
        }
    }
    panic!("the initial round never ended");
}

/// Two groups of 4 users; before groupwatch watches them, 3 people joined and left group 0 (one of them
/// soft-deleted) and an original member left group 1. The initial round then reports those 4 as `@removed`.
async fn world_with_history(baseline: &'static str) -> World {
    let mut w = World::with_sim(sim_cfg(100), 2, 4).await;
    w.baseline = baseline;
    let (g0, g1) = (w.groups[0].clone(), w.groups[1].clone());
    for (n, why) in [
        (900, RemovedReason::Deleted),
        (901, RemovedReason::Changed),
        (902, RemovedReason::Deleted),
    ] {
        assert!(w.sim.add_member(&g0, &user(n), MemberKind::User));
        assert!(w.sim.remove_member(&g0, &user(n), why));
    }
    assert!(
        w.sim
            .remove_member(&g1, &user(100_001), RemovedReason::Deleted)
    );
    w.sim.set_faults(Faults {
        removed_in_initial: true,
        ..Faults::default()
    });
    assert_eq!(
        removed_entries_in_initial_round(&w).await,
        4,
        "the simulator must put the earlier removals into the initial round"
    );
    w
}

/// Real changes after the baseline: a re-add of someone who left before we watched, a removal of a current
/// member, a brand-new member. Returns the expected event keys, sorted.
fn later_changes(w: &World) -> Vec<(String, String, String)> {
    let (g0, g1) = (&w.groups[0], &w.groups[1]);
    assert!(w.sim.add_member(g0, &user(900), MemberKind::User));
    assert!(w.sim.remove_member(g0, &user(1), RemovedReason::Deleted));
    assert!(w.sim.add_member(g1, &user(950), MemberKind::User));
    let mut expected = vec![
        (ADDED.to_owned(), g0.clone(), user(900)),
        (REMOVED.to_owned(), g0.clone(), user(1)),
        (ADDED.to_owned(), g1.clone(), user(950)),
    ];
    expected.sort();
    expected
}

#[tokio::test]
async fn removed_entries_in_the_initial_round_keep_a_from_now_baseline_silent() {
    let w = world_with_history("from_now").await;
    let d = w.daemon().await;
    let r = d.poll_all_once().await.unwrap().remove(0);
    assert!(r.round_completed, "{r:?}");
    assert_eq!(r.events, 0, "{r:?}");
    d.deliver_all().await.unwrap();
    assert!(w.events().is_empty(), "{:?}", w.events());
    for g in &w.groups {
        assert_eq!(
            set(d.store().present_members("sim", g).unwrap()),
            set(w.sim.members(g)),
            "the stored state of {g} is the current membership, not the history"
        );
    }

    let expected = later_changes(&w);
    w.cycle(&d).await;
    let events = w.events();
    unique_by_id(&events);
    assert_eq!(sorted_keys(&events), expected);
    let readd = events
        .iter()
        .find(|e| e["data"]["id"] == user(900).as_str())
        .unwrap();
    assert!(readd["data"].get("@removed").is_none());

    // A forced resync re-reads the initial round, `@removed` history included: nothing new.
    w.sim.expire_delta_tokens(Expiry::SyncStateNotFound400);
    let r = d.poll_all_once().await.unwrap().remove(0);
    assert_eq!(r.resyncs, 1, "{r:?}");
    d.deliver_all().await.unwrap();
    w.cycle(&d).await;
    assert_eq!(
        sorted_keys(&w.events()),
        expected,
        "the resync over the same history emitted something"
    );

    // A member who leaves just before a resync shows up as `@removed` in its initial round: exactly one
    // removal, carrying Graph's reason (not a second, synthetic "resync" one at the end of the round).
    let g0 = &w.groups[0];
    assert!(w.sim.remove_member(g0, &user(2), RemovedReason::Changed));
    w.sim.expire_delta_tokens(Expiry::SyncStateNotFound400);
    let r = d.poll_all_once().await.unwrap().remove(0);
    assert_eq!((r.resyncs, r.resync_removals), (1, 0), "{r:?}");
    d.deliver_all().await.unwrap();
    w.cycle(&d).await;
    let all = w.events();
    unique_by_id(&all);
    assert_eq!(all.len(), 4);
    assert_eq!(key(&all[3]), (REMOVED.to_owned(), g0.clone(), user(2)));
    assert_eq!(all[3]["data"]["@removed"]["reason"], "changed");
}

#[tokio::test]
async fn removed_entries_in_the_initial_round_give_existing_as_added_only_current_members() {
    let w = world_with_history("existing_as_added").await;
    let d = w.daemon().await;
    w.cycle(&d).await;
    let events = w.events();
    unique_by_id(&events);
    let mut expected: Vec<_> = w
        .groups
        .iter()
        .flat_map(|g| {
            w.sim
                .members(g)
                .into_iter()
                .map(move |m| (ADDED.to_owned(), g.clone(), m))
        })
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 7);
    assert_eq!(
        sorted_keys(&events),
        expected,
        "only current members, never a removal for someone we never saw as a member"
    );

    let later = later_changes(&w);
    w.cycle(&d).await;
    let all = w.events();
    unique_by_id(&all);
    assert_eq!(sorted_keys(&all[events.len()..]), later);
    w.cycle(&d).await;
    assert_eq!(w.events().len(), all.len(), "a quiet round stays quiet");
}

// ---------------------------------------------------------------------------------------------------------
// 2. A round cut by `max_pages_per_poll`, whose tokens then expire.
// ---------------------------------------------------------------------------------------------------------

/// Asserts the poll right after expiry tried the saved nextLink, was refused with `how`, and restarted.
fn assert_saved_next_link_was_refused(sim: &Sim, how: Expiry) {
    let reqs = delta_requests(sim);
    assert!(reqs.len() >= 2, "{reqs:?}");
    assert!(
        reqs[0].query.contains("skiptoken"),
        "the poll resumed from the saved nextLink: {}",
        reqs[0].query
    );
    let status = match how {
        Expiry::SyncStateNotFound400 => 400,
        Expiry::Gone410WithLocation => 410,
    };
    assert_eq!(
        reqs[0].status, status,
        "the simulator must refuse the saved nextLink after expiry"
    );
    assert!(
        !reqs[1].query.contains("skiptoken") && !reqs[1].query.contains("deltatoken"),
        "a full round starts over: {}",
        reqs[1].query
    );
}

/// An `existing_as_added` initial round of 10 pages, cut after 3; then members change, the tokens expire,
/// and the resync announces exactly what the first 3 pages did not.
async fn initial_round_cut_then_expired(how: Expiry) {
    let mut w = World::with_sim(sim_cfg(10), 1, 100).await;
    w.baseline = "existing_as_added";
    let g = w.groups[0].clone();
    let d = daemon_from(&toml_with_max_pages(&w, 3)).await;

    let r = d.poll_all_once().await.unwrap().remove(0);
    assert_eq!(r.pages, 3, "{r:?}");
    assert!(!r.round_completed, "{r:?}");
    let state = batch_state(&d);
    assert!(state.mid_round && state.full_round, "{state:?}");
    assert!(
        state
            .link
            .as_deref()
            .is_some_and(|l| l.contains("$skiptoken=")),
        "the nextLink is saved: {state:?}"
    );
    d.deliver_all().await.unwrap();
    let first = w.events();
    assert_eq!(first.len(), 30);
    let mut known = BTreeSet::new();
    apply(&mut known, &first);
    assert!(known.contains(&user(5)) && !known.contains(&user(80)));

    // One announced member leaves, one not yet announced leaves, one joins.
    assert!(w.sim.remove_member(&g, &user(5), RemovedReason::Deleted));
    assert!(w.sim.remove_member(&g, &user(80), RemovedReason::Deleted));
    assert!(w.sim.add_member(&g, &user(500), MemberKind::User));
    w.sim.expire_delta_tokens(how);
    w.sim.reset_requests();

    let reports = poll_until_round_completes(&d, 10).await;
    assert_eq!(reports[0].resyncs, 1, "{reports:?}");
    assert_eq!(reports.iter().map(|r| r.resyncs).sum::<usize>(), 1);
    assert_saved_next_link_was_refused(&w.sim, how);
    d.deliver_all().await.unwrap();

    let all = w.events();
    unique_by_id(&all);
    let rest = &all[first.len()..];
    let target = set(w.sim.members(&g));
    assert_eq!(sorted_keys(rest), net_difference(&g, &known, &target));
    let gone = rest.iter().find(|e| e["type"] == REMOVED).unwrap();
    assert_eq!(gone["data"]["id"], user(5).as_str());
    assert_eq!(gone["data"]["@removed"]["reason"], "resync");
    assert!(
        !rest.iter().any(|e| e["data"]["id"] == user(80).as_str()),
        "someone who left before being announced is no event"
    );

    // Incremental again and quiet.
    w.cycle(&d).await;
    assert_eq!(w.events().len(), all.len());
    let state = batch_state(&d);
    assert_eq!(state.resyncs, 1);
    assert!(!state.full_round && !state.mid_round, "{state:?}");
    assert_eq!(set(d.store().present_members("sim", &g).unwrap()), target);
}

#[tokio::test]
async fn initial_round_cut_by_max_pages_then_expired_400_resyncs_to_the_net_difference() {
    initial_round_cut_then_expired(Expiry::SyncStateNotFound400).await;
}

#[tokio::test]
async fn initial_round_cut_by_max_pages_then_expired_410_resyncs_to_the_net_difference() {
    initial_round_cut_then_expired(Expiry::Gone410WithLocation).await;
}

/// A `from_now` baseline, then an incremental round of 5 pages cut after 3; members change again (some
/// announced changes are undone, some pending ones too), the tokens expire, and the resync emits exactly
/// the net difference between what was announced and the tenant's current state.
async fn incremental_round_cut_then_expired(how: Expiry) {
    let w = World::with_sim(sim_cfg(10), 1, 100).await;
    let g = w.groups[0].clone();
    let d = daemon_from(&toml_with_max_pages(&w, 3)).await;
    let baseline = poll_until_round_completes(&d, 10).await;
    assert_eq!(baseline.len(), 4, "10 pages at 3 per poll: {baseline:?}");
    d.deliver_all().await.unwrap();
    assert!(w.events().is_empty());
    let mut known = set(w.sim.members(&g));
    assert_eq!(known.len(), 100);

    for n in 0..10 {
        assert!(w.sim.remove_member(&g, &user(n), RemovedReason::Deleted));
    }
    for n in 0..40 {
        assert!(w.sim.add_member(&g, &user(900_000 + n), MemberKind::User));
    }
    let r = d.poll_all_once().await.unwrap().remove(0);
    assert_eq!(r.pages, 3, "{r:?}");
    assert!(!r.round_completed, "{r:?}");
    assert!(batch_state(&d).mid_round);
    d.deliver_all().await.unwrap();
    let first = w.events();
    assert_eq!(first.len(), 30, "3 pages of 10 changes each");
    apply(&mut known, &first);

    let announced_add = first
        .iter()
        .find(|e| e["type"] == ADDED)
        .map(key)
        .unwrap()
        .2;
    let announced_removal = first
        .iter()
        .find(|e| e["type"] == REMOVED)
        .map(key)
        .unwrap()
        .2;
    let pending_add = (0..40)
        .map(|n| user(900_000 + n))
        .find(|m| !known.contains(m))
        .expect("some adds were not announced yet");
    assert!(
        w.sim
            .remove_member(&g, &announced_add, RemovedReason::Deleted)
    );
    assert!(w.sim.add_member(&g, &announced_removal, MemberKind::User));
    assert!(
        w.sim
            .remove_member(&g, &pending_add, RemovedReason::Changed)
    );
    assert!(w.sim.remove_member(&g, &user(50), RemovedReason::Deleted));
    assert!(w.sim.add_member(&g, &user(777_777), MemberKind::User));
    w.sim.expire_delta_tokens(how);
    w.sim.reset_requests();

    let reports = poll_until_round_completes(&d, 10).await;
    assert_eq!(
        reports.iter().map(|r| r.resyncs).sum::<usize>(),
        1,
        "{reports:?}"
    );
    assert_saved_next_link_was_refused(&w.sim, how);
    d.deliver_all().await.unwrap();

    let all = w.events();
    unique_by_id(&all);
    let rest = &all[first.len()..];
    let target = set(w.sim.members(&g));
    let expected = net_difference(&g, &known, &target);
    assert!(expected.contains(&(REMOVED.to_owned(), g.clone(), announced_add.clone())));
    assert!(expected.contains(&(ADDED.to_owned(), g.clone(), announced_removal.clone())));
    assert_eq!(sorted_keys(rest), expected);
    assert!(
        !rest.iter().any(|e| e["data"]["id"] == pending_add.as_str()),
        "an add undone before it was announced is no event"
    );

    w.cycle(&d).await;
    assert_eq!(w.events().len(), all.len(), "incremental again and quiet");
    assert_eq!(set(d.store().present_members("sim", &g).unwrap()), target);
}

#[tokio::test]
async fn incremental_round_cut_by_max_pages_then_expired_400_resyncs_to_the_net_difference() {
    incremental_round_cut_then_expired(Expiry::SyncStateNotFound400).await;
}

#[tokio::test]
async fn incremental_round_cut_by_max_pages_then_expired_410_resyncs_to_the_net_difference() {
    incremental_round_cut_then_expired(Expiry::Gone410WithLocation).await;
}

// ---------------------------------------------------------------------------------------------------------
// 3. Empty pages with a nextLink; rounds cut by `max_pages_per_poll` and resumed.
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn empty_pages_with_a_next_link_are_followed_and_the_round_completes() {
    let mut w = World::with_sim(sim_cfg(10), 1, 25).await;
    w.baseline = "existing_as_added";
    let g = w.groups[0].clone();
    w.sim.set_faults(Faults {
        empty_page_fraction: 1.0,
        ..Faults::default()
    });
    let d = w.daemon().await;
    let r = d.poll_all_once().await.unwrap().remove(0);
    assert!(r.round_completed, "{r:?}");
    assert_eq!(r.pages, 6, "3 real pages, each behind an empty one: {r:?}");
    assert_eq!(w.sim.count("/v1.0/groups/delta"), 6);
    d.deliver_all().await.unwrap();
    let events = w.events();
    assert_eq!(unique_by_id(&events).len(), 25);
    let mut expected: Vec<_> = w
        .sim
        .members(&g)
        .into_iter()
        .map(|m| (ADDED.to_owned(), g.clone(), m))
        .collect();
    expected.sort();
    assert_eq!(sorted_keys(&events), expected);

    // An incremental round behind an empty page too.
    for n in 0..3 {
        assert!(w.sim.add_member(&g, &user(700 + n), MemberKind::User));
    }
    assert!(w.sim.remove_member(&g, &user(3), RemovedReason::Deleted));
    assert!(w.sim.remove_member(&g, &user(4), RemovedReason::Changed));
    let r = d.poll_all_once().await.unwrap().remove(0);
    assert!(r.round_completed, "{r:?}");
    assert_eq!(r.pages, 2, "{r:?}");
    d.deliver_all().await.unwrap();
    let all = w.events();
    unique_by_id(&all);
    let mut later = vec![
        (ADDED.to_owned(), g.clone(), user(700)),
        (ADDED.to_owned(), g.clone(), user(701)),
        (ADDED.to_owned(), g.clone(), user(702)),
        (REMOVED.to_owned(), g.clone(), user(3)),
        (REMOVED.to_owned(), g.clone(), user(4)),
    ];
    later.sort();
    assert_eq!(sorted_keys(&all[25..]), later);
}

#[tokio::test]
async fn a_round_cut_by_max_pages_resumes_from_the_saved_next_link() {
    let mut w = World::with_sim(sim_cfg(10), 1, 45).await;
    w.baseline = "existing_as_added";
    let g = w.groups[0].clone();
    let d = daemon_from(&toml_with_max_pages(&w, 2)).await;
    let mut seen_links = Vec::new();
    for (poll, (pages, total, done)) in [(2, 20, false), (2, 40, false), (1, 45, true)]
        .into_iter()
        .enumerate()
    {
        w.sim.reset_requests();
        let r = d.poll_all_once().await.unwrap().remove(0);
        assert_eq!(
            (r.pages, r.round_completed),
            (pages, done),
            "poll {poll}: {r:?}"
        );
        let reqs = delta_requests(&w.sim);
        assert_eq!(reqs.len(), pages, "poll {poll}: {reqs:?}");
        if poll == 0 {
            assert!(!reqs[0].query.contains("skiptoken"), "{}", reqs[0].query);
        } else {
            assert!(
                reqs[0].query.contains("skiptoken"),
                "poll {poll} resumes from the saved nextLink: {}",
                reqs[0].query
            );
        }
        let state = batch_state(&d);
        assert_eq!(state.mid_round, !done, "poll {poll}: {state:?}");
        seen_links.push(state.link.clone().unwrap());
        d.deliver_all().await.unwrap();
        let events = w.events();
        assert_eq!(unique_by_id(&events).len(), total, "poll {poll}");
        if poll == 0 {
            // A change made while the round is under way belongs to the next round.
            assert!(w.sim.add_member(&g, &user(4444), MemberKind::User));
        }
    }
    assert!(seen_links[2].contains("$deltatoken="), "{seen_links:?}");
    let events = w.events();
    let ids: HashSet<_> = events.iter().map(|e| key(e).2).collect();
    assert_eq!(ids.len(), 45, "every member exactly once");
    assert!(events.iter().all(|e| e["type"] == ADDED));
    assert!(!ids.contains(&user(4444)));

    let r = d.poll_all_once().await.unwrap().remove(0);
    assert!(r.round_completed, "{r:?}");
    d.deliver_all().await.unwrap();
    let all = w.events();
    unique_by_id(&all);
    assert_eq!(all.len(), 46);
    assert_eq!(key(&all[45]), (ADDED.to_owned(), g.clone(), user(4444)));
}

#[tokio::test]
async fn a_poll_cut_after_only_an_empty_page_keeps_its_next_link() {
    let mut w = World::with_sim(sim_cfg(10), 1, 15).await;
    w.baseline = "existing_as_added";
    w.sim.set_faults(Faults {
        empty_page_fraction: 1.0,
        ..Faults::default()
    });
    let d = daemon_from(&toml_with_max_pages(&w, 1)).await;
    // Pages: empty, 10 members, empty, 5 members.
    let mut links = Vec::new();
    for (poll, (total, done)) in [(0, false), (10, false), (10, false), (15, true)]
        .into_iter()
        .enumerate()
    {
        let r = d.poll_all_once().await.unwrap().remove(0);
        assert_eq!(
            (r.pages, r.round_completed),
            (1, done),
            "poll {poll}: {r:?}"
        );
        let state = batch_state(&d);
        let link = state.link.clone().unwrap();
        assert!(
            !links.contains(&link),
            "poll {poll} moved the cursor: {link}"
        );
        links.push(link);
        d.deliver_all().await.unwrap();
        assert_eq!(unique_by_id(&w.events()).len(), total, "poll {poll}");
    }
    let members: HashSet<_> = w.events().iter().map(|e| key(e).2).collect();
    assert_eq!(members.len(), 15);
}

// ---------------------------------------------------------------------------------------------------------
// 4. The event envelope.
// ---------------------------------------------------------------------------------------------------------

fn rfc3339(v: &Value, what: &str) -> DateTime<Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what} {s:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

#[tokio::test]
async fn events_carry_the_cloudevents_attributes_and_the_documented_data_fields() {
    let w = World::with_sim(sim_cfg(100), 2, 3).await;
    let (g0, g1) = (w.groups[0].clone(), w.groups[1].clone());
    let d = w.daemon().await;
    w.cycle(&d).await;
    assert!(w.sim.add_member(&g0, &user(9), MemberKind::User));
    assert!(w.sim.add_member(&g0, &g1, MemberKind::Group));
    assert!(
        w.sim
            .remove_member(&g1, &user(100_000), RemovedReason::Changed)
    );
    let before = Utc::now();
    w.cycle(&d).await;
    let after = Utc::now();
    let events = w.events();
    assert_eq!(unique_by_id(&events).len(), 3);
    let mut seen = BTreeMap::new();
    for ev in &events {
        assert_eq!(ev["specversion"], "1.0", "{ev}");
        let id = ev["id"].as_str().unwrap();
        assert_eq!(id.len(), 32, "{ev}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{ev}");
        let data = &ev["data"];
        let group = data["groupId"].as_str().unwrap();
        let member = data["id"].as_str().unwrap();
        assert_eq!(data["tenantId"], w.sim.tenant_id().as_str(), "{ev}");
        assert_eq!(data["connection"], "sim", "{ev}");
        assert_eq!(data["relationship"], "members", "{ev}");
        assert_eq!(
            ev["source"],
            format!("/groupwatch/sim/groups/{group}"),
            "{ev}"
        );
        assert_eq!(ev["subject"], member, "{ev}");
        assert_eq!(ev["datacontenttype"], "application/json", "{ev}");
        let detected = rfc3339(&data["detectedAt"], "data.detectedAt");
        let time = rfc3339(&ev["time"], "time");
        assert_eq!(time, detected, "{ev}");
        let slack = chrono::Duration::seconds(1);
        assert!(
            detected >= before - slack && detected <= after + slack,
            "detectedAt {detected} outside the cycle [{before}, {after}]"
        );
        assert!((Utc::now() - detected).num_seconds().abs() < 60);
        let change = data["change"].as_str().unwrap();
        assert_eq!(ev["type"], format!("groupwatch.member.{change}"), "{ev}");
        seen.insert(
            (group.to_owned(), member.to_owned()),
            (
                change.to_owned(),
                data["memberType"].as_str().unwrap().to_owned(),
                data.get("@removed").cloned(),
            ),
        );
    }
    let mut expected = BTreeMap::new();
    expected.insert(
        (g0.clone(), user(9)),
        ("added".to_owned(), "user".to_owned(), None),
    );
    expected.insert(
        (g0.clone(), g1.clone()),
        ("added".to_owned(), "group".to_owned(), None),
    );
    expected.insert(
        (g1.clone(), user(100_000)),
        (
            "removed".to_owned(),
            "user".to_owned(),
            Some(serde_json::json!({ "reason": "changed" })),
        ),
    );
    assert_eq!(seen, expected);
}

// ---------------------------------------------------------------------------------------------------------
// 5. The stdout sink of the real binary.
// ---------------------------------------------------------------------------------------------------------

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stdout_sink_in_json_format_writes_one_cloudevent_per_line() {
    let mut w = World::with_sim(sim_cfg(100), 2, 3).await;
    w.baseline = "existing_as_added";
    let toml = w
        .toml(&w.groups)
        .replace(
            "[sinks.file]",
            "[sinks.console]\ntype = \"stdout\"\nformat = \"json\"\n\n[sinks.file]",
        )
        .replace("sinks = [\"file\"]", "sinks = [\"console\", \"file\"]");
    assert!(toml.contains("[\"console\", \"file\"]"));
    let cfg = w.dir.path().join("stdout.toml");
    std::fs::write(&cfg, toml).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_groupwatch"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let out = child.stdout.take().unwrap();
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                lines.lock().unwrap().push(line.unwrap());
            }
        })
    };
    let count = |lines: &Arc<Mutex<Vec<String>>>| lines.lock().unwrap().len();
    wait_until(
        "the 6 baseline events on stdout",
        Duration::from_secs(30),
        || count(&lines) >= 6,
    )
    .await;
    assert!(
        w.sim
            .add_member(&w.groups[1], &user(4242), MemberKind::User)
    );
    wait_until("the 7th event on stdout", Duration::from_secs(30), || {
        count(&lines) >= 7
    })
    .await;
    wait_until("the 7th event in the file", Duration::from_secs(30), || {
        read_events(&w.events_path()).len() >= 7
    })
    .await;
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert!(child.wait().unwrap().success(), "SIGTERM is a clean stop");
    reader.join().unwrap();

    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 7, "{lines:#?}");
    let mut members = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for line in &lines {
        let ev: cloudevents::Event =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a CloudEvent ({e}): {line}"));
        use cloudevents::AttributesReader;
        assert_eq!(ev.specversion(), cloudevents::event::SpecVersion::V10);
        assert_eq!(ev.ty(), ADDED);
        assert!(ev.time().is_some());
        let json: Value = serde_json::from_str(line).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["data"]["tenantId"], w.sim.tenant_id().as_str());
        assert_eq!(
            ev.source().to_string(),
            format!(
                "/groupwatch/sim/groups/{}",
                json["data"]["groupId"].as_str().unwrap()
            )
        );
        assert!(ids.insert(ev.id().to_owned()), "repeated id in {line}");
        members.insert(json["data"]["id"].as_str().unwrap().to_owned());
    }
    let mut expected = set(w.sim.members(&w.groups[0]));
    expected.extend(w.sim.members(&w.groups[1]));
    assert_eq!(members, expected);
    assert!(members.contains(&user(4242)));
    let file_ids: BTreeSet<String> = read_events(&w.events_path())
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, file_ids, "both sinks got the same events");
}
