//! The membership trigger against the simulated tenant over real HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use groupwatch::sim::{Expiry, Faults, MemberKind, RemovedReason};
use rand::{Rng, SeedableRng};

use crate::support::{World, daemon_from, key, unique_by_id, user, with_audit_subscription};

#[tokio::test]
async fn replays_at_30_percent_produce_no_duplicate_events() {
    let w = World::new(5, 20, 15).await;
    let d = w.daemon().await;
    w.cycle(&d).await; // baseline (from_now): silent
    assert!(w.events().is_empty());
    w.sim.set_faults(Faults {
        replay_fraction: 0.3,
        repeat_fraction: 0.2,
        empty_page_fraction: 0.2,
        ..Faults::default()
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut expected = Vec::new();
    for _round in 0..12u32 {
        // Graph reports each link's state at poll time, so several changes to one link between two
        // polls are one change (or none): expect the net difference per cycle.
        let mut touched = BTreeMap::new();
        for _ in 0..4 {
            let g = w.groups[rng.random_range(0..w.groups.len())].clone();
            let m = user(rng.random_range(0..40u32) + 900_000);
            let was = w.sim.members(&g).contains(&m);
            touched.entry((g.clone(), m.clone())).or_insert(was);
            if was {
                assert!(w.sim.remove_member(&g, &m, RemovedReason::Deleted));
            } else {
                assert!(w.sim.add_member(&g, &m, MemberKind::User));
            }
        }
        for ((g, m), was) in touched {
            match (was, w.sim.members(&g).contains(&m)) {
                (false, true) => expected.push(("groupwatch.member.added".to_string(), g, m)),
                (true, false) => expected.push(("groupwatch.member.removed".to_string(), g, m)),
                _ => {}
            }
        }
        w.cycle(&d).await;
    }
    let events = w.events();
    unique_by_id(&events);
    let got: Vec<_> = events.iter().map(key).collect();
    // Per (group, member) the sequence of changes must match exactly (one event per real change).
    let per_link = |v: &[(String, String, String)]| {
        let mut m: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for (t, g, u) in v {
            m.entry((g.clone(), u.clone())).or_default().push(t.clone());
        }
        m
    };
    assert_eq!(per_link(&got), per_link(&expected));
    assert!(w.sim.count("/v1.0/groups/delta") > 12);
}

#[tokio::test]
async fn add_remove_add_of_one_member_yields_three_events_with_distinct_ids() {
    let w = World::new(1, 3, 100).await;
    let d = w.daemon().await;
    w.cycle(&d).await;
    let (g, m) = (&w.groups[0], user(777));
    w.sim.add_member(g, &m, MemberKind::User);
    w.cycle(&d).await;
    w.sim.remove_member(g, &m, RemovedReason::Deleted);
    w.cycle(&d).await;
    w.sim.add_member(g, &m, MemberKind::User);
    w.cycle(&d).await;
    let events = w.events();
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "groupwatch.member.added",
            "groupwatch.member.removed",
            "groupwatch.member.added"
        ]
    );
    assert_eq!(unique_by_id(&events).len(), 3);
    assert_eq!(events[1]["data"]["@removed"]["reason"], "deleted");
    assert!(events[0]["data"].get("@removed").is_none());
}

#[tokio::test]
async fn both_removed_reasons_are_removals_and_the_reason_is_carried() {
    let w = World::new(1, 4, 100).await;
    let d = w.daemon().await;
    w.cycle(&d).await;
    let g = &w.groups[0];
    w.sim.remove_member(g, &user(0), RemovedReason::Deleted);
    w.sim.remove_member(g, &user(1), RemovedReason::Changed);
    w.cycle(&d).await;
    let mut reasons: Vec<_> = w
        .events()
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "groupwatch.member.removed");
            e["data"]["@removed"]["reason"].as_str().unwrap().to_owned()
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["changed", "deleted"]);
}

#[tokio::test]
async fn a_5000_member_group_split_over_many_pages_is_seen_completely() {
    let mut w = World::new(1, 5000, 100).await;
    w.baseline = "existing_as_added";
    let d = w.daemon().await;
    let reports = d.poll_all_once().await.unwrap();
    assert!(reports[0].round_completed);
    assert!(reports[0].pages >= 50, "{:?}", reports[0].pages);
    d.deliver_all().await.unwrap();
    let events = w.events();
    assert_eq!(unique_by_id(&events).len(), 5000);
    let members: std::collections::HashSet<_> = events
        .iter()
        .map(|e| e["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(members.len(), 5000);
    assert_eq!(
        d.store()
            .present_members("sim", &w.groups[0])
            .unwrap()
            .len(),
        5000
    );
}

#[tokio::test]
async fn nested_groups_are_members_of_type_group() {
    let w = World::new(2, 1, 100).await;
    let d = w.daemon().await;
    w.cycle(&d).await;
    w.sim
        .add_member(&w.groups[0], &w.groups[1], MemberKind::Group);
    w.cycle(&d).await;
    let events = w.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["memberType"], "group");
    assert_eq!(events[0]["data"]["id"], w.groups[1].as_str());
}

#[tokio::test]
async fn owners_are_tracked_when_asked() {
    let mut w = World::new(1, 2, 100).await;
    w.extra = "track_owners = true".into();
    let d = w.daemon().await;
    w.cycle(&d).await;
    w.sim.add_owner(&w.groups[0], &user(5));
    w.sim.add_member(&w.groups[0], &user(6), MemberKind::User);
    w.cycle(&d).await;
    let mut types: Vec<_> = w
        .events()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(types, ["groupwatch.member.added", "groupwatch.owner.added"]);
}

async fn expiry_emits_only_the_net_difference(how: Expiry) {
    let w = World::new(3, 10, 7).await;
    let d = w.daemon().await;
    w.cycle(&d).await;
    let g = &w.groups[1];
    w.sim.add_member(g, &user(555), MemberKind::User);
    w.sim
        .remove_member(g, &user(100_003), RemovedReason::Deleted);
    w.sim.expire_delta_tokens(how);
    let reports = d.poll_all_once().await.unwrap();
    assert_eq!(reports[0].resyncs, 1, "{reports:?}");
    d.deliver_all().await.unwrap();
    let mut got: Vec<_> = w.events().iter().map(key).collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("groupwatch.member.added".into(), g.clone(), user(555)),
            ("groupwatch.member.removed".into(), g.clone(), user(100_003)),
        ]
    );
    // The next cycle is incremental again and quiet.
    w.cycle(&d).await;
    assert_eq!(w.events().len(), 2);
    let state = d.store().batch(&d.plan().batches[0].key).unwrap().unwrap();
    assert_eq!(state.resyncs, 1);
    assert!(!state.full_round);
}

#[tokio::test]
async fn expired_token_400_sync_state_not_found_emits_only_the_net_difference() {
    expiry_emits_only_the_net_difference(Expiry::SyncStateNotFound400).await;
}

#[tokio::test]
async fn sync_reset_410_with_location_emits_only_the_net_difference() {
    expiry_emits_only_the_net_difference(Expiry::Gone410WithLocation).await;
}

#[tokio::test]
async fn restart_on_the_same_state_resumes_from_the_saved_cursor() {
    let w = World::new(2, 5, 100).await;
    {
        let d = w.daemon().await;
        w.cycle(&d).await;
        w.sim.add_member(&w.groups[0], &user(42), MemberKind::User);
        w.cycle(&d).await;
        d.store().flush().await.unwrap();
    }
    assert_eq!(w.events().len(), 1);
    w.sim
        .remove_member(&w.groups[0], &user(42), RemovedReason::Deleted);
    w.sim.add_member(&w.groups[1], &user(43), MemberKind::User);
    w.sim.reset_requests();
    let d = w.daemon().await;
    w.cycle(&d).await;
    let first = w
        .sim
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1.0/groups/delta")
        .unwrap();
    assert!(
        first.query.contains("deltatoken"),
        "restart must use the saved deltaLink, got {}",
        first.query
    );
    let events = w.events();
    unique_by_id(&events);
    let got: Vec<_> = events.iter().map(key).collect();
    assert_eq!(got.len(), 3);
    assert!(got.contains(&(
        "groupwatch.member.removed".into(),
        w.groups[0].clone(),
        user(42)
    )));
    assert!(got.contains(&(
        "groupwatch.member.added".into(),
        w.groups[1].clone(),
        user(43)
    )));
}

#[tokio::test]
async fn no_request_is_sent_before_retry_after_elapses() {
    let w = World::new(1, 2, 100).await;
    let d = w.daemon().await;
    w.cycle(&d).await;
    w.sim.reset_requests();
    w.sim.throttle_next(1, "1.5");
    w.sim.add_member(&w.groups[0], &user(9), MemberKind::User);
    w.cycle(&d).await;
    let reqs: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1.0/"))
        .collect();
    assert_eq!(reqs[0].status, 429);
    assert_eq!(reqs[1].status, 200);
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(gap >= Duration::from_millis(1500), "retried after {gap:?}");
    assert_eq!(w.events().len(), 1);
}

#[tokio::test]
async fn transient_5xx_are_retried_and_nothing_is_lost() {
    let w = World::new(1, 2, 100).await;
    let d = w.daemon().await;
    w.cycle(&d).await;
    w.sim.fail_next(2, 503);
    w.sim.add_member(&w.groups[0], &user(9), MemberKind::User);
    w.cycle(&d).await;
    assert_eq!(w.events().len(), 1);
}

#[tokio::test]
async fn a_failed_poll_keeps_the_cursor_and_the_next_poll_catches_up() {
    let w = World::new(1, 2, 100).await;
    let d = w.daemon().await;
    w.cycle(&d).await;
    let before = d.store().batch(&d.plan().batches[0].key).unwrap().unwrap();
    w.sim.fail_next(5, 500); // the first try and all 4 retries
    w.sim.add_member(&w.groups[0], &user(9), MemberKind::User);
    assert!(d.poll_all_once().await.is_err());
    let after = d.store().batch(&d.plan().batches[0].key).unwrap().unwrap();
    assert_eq!(before.link, after.link);
    w.sim.set_faults(Faults::default());
    w.cycle(&d).await;
    assert_eq!(w.events().len(), 1);
}

#[tokio::test]
async fn a_revoked_access_token_is_replaced_transparently() {
    let w = World::new(1, 2, 100).await;
    let d = w.daemon().await;
    w.cycle(&d).await;
    w.sim.revoke_access_tokens();
    w.sim.add_member(&w.groups[0], &user(9), MemberKind::User);
    w.cycle(&d).await;
    assert_eq!(w.events().len(), 1);
    let tokens = w
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/oauth2/v2.0/token"))
        .count();
    assert_eq!(tokens, 2);
}

#[tokio::test]
async fn a_wrong_client_secret_fails_with_the_aadsts_error() {
    let w = World::new(1, 1, 100).await;
    let toml = w
        .toml(&w.groups)
        .replace(&w.sim.client_secret(), "wrong-secret");
    let d = daemon_from(&toml).await;
    let err = d.poll_all_once().await.unwrap_err().to_string();
    assert!(err.contains("invalid_client"), "{err}");
    assert!(err.contains("AADSTS7000215"), "{err}");
}

#[tokio::test]
async fn one_hundred_twenty_groups_cost_three_delta_requests_per_cycle() {
    let w = World::new(120, 2, 1000).await;
    let d = w.daemon().await;
    assert_eq!(d.plan().batches.len(), 3);
    w.cycle(&d).await;
    for cycle in 0..3u32 {
        w.sim.reset_requests();
        w.sim.add_member(
            &w.groups[(cycle * 50) as usize],
            &user(900 + cycle),
            MemberKind::User,
        );
        w.cycle(&d).await;
        assert_eq!(w.sim.count("/v1.0/groups/delta"), 3, "cycle {cycle}");
    }
    assert_eq!(w.events().len(), 3);
}

#[tokio::test]
async fn outbox_above_high_water_pauses_polling() {
    let mut w = World::new(1, 30, 100).await;
    w.baseline = "existing_as_added";
    let toml = w
        .toml(&w.groups)
        .replace("jitter_secs = 0", "jitter_secs = 0\noutbox_high_water = 10");
    let d = daemon_from(&toml).await;
    d.poll_all_once().await.unwrap(); // stages 30 rows, above the mark
    w.sim.reset_requests();
    let r = d.poll_all_once().await.unwrap();
    assert!(r[0].backpressure);
    assert_eq!(w.sim.count("/v1.0/groups/delta"), 0);
    d.deliver_all().await.unwrap();
    let r = d.poll_all_once().await.unwrap();
    assert!(!r[0].backpressure);
    assert_eq!(w.events().len(), 30);
}

#[tokio::test]
async fn client_side_rate_limit_spaces_requests() {
    let w = World::new(4, 1, 100).await;
    // 2 calls per second: a burst of 2, then one every 0.5 s.
    let toml = w
        .toml(&w.groups)
        .replace("rate_limit_calls = 100000", "rate_limit_calls = 2");
    let cfg = groupwatch::config::Config::from_toml(&toml).unwrap();
    let client = groupwatch::graph::GraphClient::new(
        &cfg.connections["sim"],
        std::sync::Arc::new(tokio::sync::Semaphore::new(4)),
    )
    .unwrap();
    for g in &w.groups {
        let url = client.delta_start_url(std::slice::from_ref(g), false);
        client.delta_page(&url).await.unwrap();
    }
    let at: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1.0/groups/delta")
        .map(|r| r.at)
        .collect();
    assert_eq!(at.len(), 4);
    let spread = at[3].duration_since(at[0]);
    assert!(
        spread >= Duration::from_millis(900),
        "4 calls in {spread:?}"
    );
}

#[tokio::test]
async fn links_to_another_host_are_not_followed() {
    let w = World::new(1, 1, 100).await;
    let cfg = w.config();
    let client = groupwatch::graph::GraphClient::new(
        &cfg.connections["sim"],
        std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
    )
    .unwrap();
    let err = client
        .delta_page("https://evil.example/v1.0/groups/delta?$deltatoken=x")
        .await
        .unwrap_err();
    assert!(
        matches!(err, groupwatch::graph::Error::ForeignLink(_)),
        "{err}"
    );
    assert_eq!(w.sim.requests().len(), 0, "not even a token request");
}

#[tokio::test]
async fn retry_after_holds_every_batch_of_the_connection() {
    // 51 groups: two batches on one connection, polled side by side as the scheduler's jobs are.
    let w = World::new(51, 1, 100).await;
    let d = w.daemon().await;
    w.cycle(&d).await;
    let batches = d.plan().batches.clone();
    assert_eq!(batches.len(), 2);
    w.sim.reset_requests();
    w.sim.throttle_next(1, "1.5");
    w.sim.add_member(&w.groups[0], &user(9), MemberKind::User);
    w.sim
        .add_member(&w.groups[50], &user(5_000_009), MemberKind::User);
    let (a, b) = tokio::join!(d.poller().poll_once(&batches[0]), async {
        // The second batch starts while the first waits out its 429.
        tokio::time::sleep(Duration::from_millis(200)).await;
        d.poller().poll_once(&batches[1]).await
    });
    a.unwrap();
    b.unwrap();
    d.deliver_all().await.unwrap();
    let reqs: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1.0/"))
        .collect();
    assert_eq!(reqs[0].status, 429);
    assert!(reqs.len() >= 3, "{reqs:?}");
    for r in &reqs[1..] {
        let gap = r.at.duration_since(reqs[0].at);
        assert!(
            gap >= Duration::from_millis(1500),
            "a request of the connection left {gap:?} after the 429"
        );
    }
    assert_eq!(w.events().len(), 2);
}

#[tokio::test]
async fn the_access_token_is_refreshed_before_it_expires() {
    // A 4 s token: groupwatch refreshes it halfway (Entra's real ones 5 minutes early), never waiting for
    // Graph to refuse it.
    let cfg = groupwatch::sim::SimConfig {
        token_ttl: Duration::from_secs(4),
        ..groupwatch::sim::SimConfig::default()
    };
    let w = World::with_sim(cfg, 1, 2).await;
    let d = w.daemon().await;
    w.cycle(&d).await;
    let tokens = |w: &World| {
        w.sim
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/oauth2/v2.0/token"))
            .count()
    };
    assert_eq!(tokens(&w), 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    w.sim.add_member(&w.groups[0], &user(9), MemberKind::User);
    w.cycle(&d).await;
    assert_eq!(tokens(&w), 2, "a new token before the old one expired");
    assert!(
        w.sim.requests().iter().all(|r| r.status != 401),
        "Graph never had to refuse a token"
    );
    assert_eq!(w.events().len(), 1);
}

#[tokio::test]
async fn a_graph_request_that_times_out_is_retried_and_nothing_is_lost() {
    let w = World::new(1, 2, 100).await;
    let toml = w
        .toml(&w.groups)
        .replace("request_timeout_secs = 10", "request_timeout_secs = 1");
    let d = daemon_from(&toml).await;
    w.cycle(&d).await;
    w.sim.add_member(&w.groups[0], &user(9), MemberKind::User);
    w.sim.set_faults(Faults {
        latency: Duration::from_millis(1500),
        ..Faults::default()
    });
    let slow = tokio::spawn({
        let sim = w.sim.clone();
        async move {
            // Graph recovers while the client backs off.
            tokio::time::sleep(Duration::from_millis(1200)).await;
            sim.set_faults(Faults::default());
        }
    });
    w.cycle(&d).await;
    slow.await.unwrap();
    let delta: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1.0/groups/delta")
        .collect();
    assert!(
        delta.len() >= 3,
        "the timed-out request was sent again: {}",
        delta.len()
    );
    assert_eq!(w.events().len(), 1);
}

#[tokio::test]
async fn each_subscription_gets_its_own_baseline_on_a_shared_group() {
    // One group, two subscriptions: `from_now` to the file sink, `existing_as_added` to a second file.
    let w = World::new(1, 3, 100).await;
    let audit = w.dir.path().join("audit.jsonl");
    let toml = with_audit_subscription(
        &w.toml(&w.groups),
        &audit,
        "members",
        &w.groups[0],
        "baseline = \"existing_as_added\"",
    );
    let d = daemon_from(&toml).await;
    w.cycle(&d).await;
    let audited = |n| {
        let evs = crate::support::read_events(&audit);
        assert_eq!(evs.len(), n, "{evs:?}");
        evs
    };
    assert!(
        w.events().is_empty(),
        "the from_now subscription's sink gets no baseline"
    );
    audited(3);
    w.sim.add_member(&w.groups[0], &user(9), MemberKind::User);
    w.cycle(&d).await;
    assert_eq!(w.events().len(), 1, "later changes reach both");
    let evs = audited(4);
    assert_eq!(
        evs[3]["id"],
        w.events()[0]["id"],
        "the same event, the same id"
    );
}
