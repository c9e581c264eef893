//! The "When there is a new event" trigger against the simulated tenant over real HTTP.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use groupwatch::sim::Faults;

use crate::support::{World, graph_round_trips, unique_by_id};

fn created(w: &World) -> Vec<serde_json::Value> {
    w.events()
        .into_iter()
        .filter(|e| e["type"] == "groupwatch.event.created")
        .collect()
}

#[tokio::test]
async fn event_created_inside_the_overlap_window_is_emitted_once() {
    let w = World::with_calendars(1).await;
    let g = w.groups[0].clone();
    w.sim.create_event(&g, "Existing before the first poll");
    let d = w.calendar_daemon(&w.calendar_toml(false, true, "")).await;
    w.calendar_cycle(&d).await; // from_now baseline: silent
    assert!(w.events().is_empty());
    let id = w.sim.create_event(&g, "Quarterly planning");
    for _ in 0..3 {
        w.calendar_cycle(&d).await; // re-listed inside the overlap every time
    }
    let evs = created(&w);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    let data = &evs[0]["data"];
    assert_eq!(data["id"], id.as_str());
    assert_eq!(data["subject"], "Quarterly planning");
    assert_eq!(data["groupId"], g.as_str());
    assert_eq!(data["start"]["timeZone"], "UTC");
    assert_eq!(data["location"]["displayName"], "Room 1");
    assert_eq!(data["body"]["contentType"], "html");
    for field in [
        "reminderMinutesBeforeStart",
        "isReminderOn",
        "importance",
        "isAllDay",
    ] {
        assert!(!data[field].is_null(), "{field} missing");
    }
    for field in [
        "responseRequested",
        "showAs",
        "webLink",
        "organizer",
        "createdDateTime",
    ] {
        assert!(!data[field].is_null(), "{field} missing");
    }
    assert_eq!(
        evs[0]["source"],
        format!("/groupwatch/sim/groups/{g}/events")
    );
}

#[tokio::test]
async fn late_visible_and_replayed_events_are_emitted_once() {
    let w = World::with_calendars(2).await;
    let g = w.groups[0].clone();
    // Small pages plus the repeat fault: every page re-shows the previous page's last event.
    let d = w
        .calendar_daemon(&w.calendar_toml(false, false, "page_size = 2"))
        .await;
    w.calendar_cycle(&d).await;
    w.sim.set_faults(Faults {
        repeat_fraction: 1.0,
        ..Faults::default()
    });
    let mut want = HashSet::new();
    for i in 0..7 {
        want.insert(w.sim.create_event(&g, &format!("event {i}")));
    }
    // Created two minutes ago, but Graph shows it only after the next poll.
    let late = w.sim.create_event_at(
        &g,
        "surfaced late",
        Utc::now() - chrono::Duration::minutes(2),
        false,
    );
    w.calendar_cycle(&d).await;
    w.sim.reveal_event(&g, &late);
    want.insert(late.clone());
    for _ in 0..3 {
        w.calendar_cycle(&d).await;
    }
    let evs = created(&w);
    unique_by_id(&evs);
    let got: HashSet<String> = evs
        .iter()
        .map(|e| e["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(evs.len(), want.len(), "each event exactly once");
    assert_eq!(got, want);
}

#[tokio::test]
async fn restarting_reprocesses_nothing_and_keeps_the_watermark() {
    let w = World::with_calendars(1).await;
    let g = w.groups[0].clone();
    let toml = w.calendar_toml(false, true, "");
    {
        let d = w.calendar_daemon(&toml).await;
        w.calendar_cycle(&d).await;
        w.sim.create_event(&g, "one");
        w.calendar_cycle(&d).await;
        d.store().flush().await.unwrap();
    }
    let cfg = groupwatch::config::Config::from_toml(&toml).unwrap();
    let d = groupwatch::app::Daemon::build(cfg, Default::default())
        .await
        .unwrap();
    w.sim.create_event(&g, "two");
    w.calendar_cycle(&d).await;
    let subjects: Vec<_> = created(&w)
        .iter()
        .map(|e| e["data"]["subject"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(subjects, ["one", "two"]);
}

async fn measure(use_batch: bool, page_size: u32) -> (usize, usize, usize) {
    let w = World::with_calendars(10).await;
    let toml = w.calendar_toml(false, use_batch, &format!("page_size = {page_size}"));
    let d = w.calendar_daemon(&toml).await;
    for g in &w.groups {
        for i in 0..25 {
            w.sim.create_event(g, &format!("event {i}"));
        }
    }
    w.sim.set_faults(Faults {
        latency: Duration::from_millis(20),
        ..Faults::default()
    });
    w.sim.reset_requests();
    w.calendar_cycle(&d).await; // first cycle: baseline of 250 events
    let first = graph_round_trips(&w.sim);
    let max = w.sim.max_calendar_in_flight();
    w.sim.reset_requests();
    w.calendar_cycle(&d).await; // steady state: the overlap window re-lists all 25 per group
    let steady = graph_round_trips(&w.sim);
    (first, steady, max.max(w.sim.max_calendar_in_flight()))
}

#[tokio::test]
async fn ten_groups_of_25_events_cost_counted_requests_never_more_than_4_in_flight() {
    let mut rows = Vec::new();
    for (batch, top) in [(false, 10), (true, 10), (false, 100), (true, 100)] {
        let (first, steady, max) = measure(batch, top).await;
        eprintln!(
            "use_batch={batch} $top={top}: {first} requests first cycle, {steady} per steady cycle, max {max} in flight"
        );
        assert!(max <= 4, "{max} calendar requests in flight");
        assert!(max >= 2, "the requests did overlap ({max})");
        rows.push((batch, top, steady));
    }
    // 25 events per group: 3 pages at $top=10, 1 at $top=100.
    assert_eq!(
        rows[0].2, 30,
        "without $batch, $top=10: 10 groups × 3 pages"
    );
    assert_eq!(rows[1].2, 3, "with $batch: 3 paging rounds of ≤ 20 items");
    assert_eq!(
        rows[2].2, 10,
        "without $batch, $top=100: one page per group"
    );
    assert_eq!(
        rows[3].2, 1,
        "with $batch, $top=100: one call for all 10 groups"
    );
}

#[tokio::test]
async fn throttled_batch_items_are_retried_after_their_own_retry_after() {
    let w = World::with_calendars(3).await;
    let d = w.calendar_daemon(&w.calendar_toml(false, true, "")).await;
    w.calendar_cycle(&d).await;
    for g in &w.groups {
        w.sim.create_event(g, "after throttling");
    }
    w.sim.reset_requests();
    w.sim.throttle_next_event_listings(2, "0.3");
    let started = std::time::Instant::now();
    w.calendar_cycle(&d).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(created(&w).len(), 3);
    let batches = w.sim.count("/v1.0/$batch");
    let items = w.sim.requests().iter().filter(|r| r.batched).count();
    assert_eq!(
        (batches, items),
        (2, 5),
        "one batch, then one with the 2 throttled items"
    );
}

#[tokio::test]
async fn unsupported_created_filter_falls_back_to_newest_first_listing() {
    let w = World::with_calendars(1).await;
    let g = w.groups[0].clone();
    w.sim.reject_created_filter(true);
    let d = w
        .calendar_daemon(&w.calendar_toml(false, false, "page_size = 3"))
        .await;
    for i in 0..5 {
        w.sim.create_event_at(
            &g,
            &format!("old {i}"),
            Utc::now() - chrono::Duration::days(3),
            true,
        );
    }
    w.calendar_cycle(&d).await;
    w.sim.create_event(&g, "fresh");
    w.calendar_cycle(&d).await;
    w.calendar_cycle(&d).await;
    let evs = created(&w);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["data"]["subject"], "fresh");
    assert!(
        w.sim.requests().iter().all(|r| !r.query.contains("skip=6")),
        "paging stopped at the floor instead of walking old events"
    );
}

#[tokio::test]
async fn updates_and_deletes_are_emitted_only_when_switched_on() {
    let w = World::with_calendars(1).await;
    let g = w.groups[0].clone();
    let d = w
        .calendar_daemon(&w.calendar_toml(false, true, "emit_updates = true\nemit_deletes = true"))
        .await;
    w.calendar_cycle(&d).await;
    let id = w.sim.create_event(&g, "draft");
    w.calendar_cycle(&d).await;
    w.sim.update_event(&g, &id, "final");
    w.calendar_cycle(&d).await;
    w.sim.delete_event(&g, &id);
    w.calendar_cycle(&d).await;
    w.calendar_cycle(&d).await;
    let types: Vec<_> = w
        .events()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "groupwatch.event.created",
            "groupwatch.event.updated",
            "groupwatch.event.deleted"
        ]
    );
    assert_eq!(unique_by_id(&w.events()).len(), 3);
}

#[tokio::test]
async fn app_only_token_gets_403_access_denied_on_group_events() {
    let w = World::with_calendars(1).await;
    let http = reqwest::Client::new();
    let form = [
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", w.sim.client_id()),
        ("client_secret", w.sim.client_secret()),
        ("scope", format!("{}/.default", w.sim.base_url())),
    ];
    let tok: serde_json::Value = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            w.sim.authority_url(),
            w.sim.tenant_id()
        ))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = http
        .get(format!(
            "{}/v1.0/groups/{}/events",
            w.sim.base_url(),
            w.groups[0]
        ))
        .bearer_auth(tok["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ErrorAccessDenied");
}
