//! The "When there is a new event" trigger against the simulated tenant over real HTTP.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use groupwatch::sim::Faults;

use crate::support::{World, graph_round_trips, unique_by_id, with_audit_subscription};

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
    // Small pages plus the repeat fault: every page re-shows the previous page's last event.
    let (w, d) = calendar_after_baseline(2, false, false, "page_size = 2").await;
    let g = w.groups[0].clone();
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
    let (w, d) = batched_after_baseline(3, "after throttling").await;
    // Two items throttled with different Retry-After values, both longer than the client's own backoff
    // (500 ms), so only honouring the header makes the resend wait this long.
    w.sim.throttle_next_event_listings(1, "0.4");
    w.sim.throttle_next_event_listings(1, "1.5");
    w.calendar_cycle(&d).await;
    assert_eq!(created(&w).len(), 3);
    let posts: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1.0/$batch")
        .collect();
    let gap = posts[1].at.duration_since(posts[0].at);
    assert!(
        gap >= Duration::from_millis(1500),
        "the resend waited for every throttled item's own Retry-After (the largest): {gap:?}"
    );
    assert!(gap < Duration::from_secs(10), "{gap:?}");
    let batches = w.sim.count("/v1.0/$batch");
    let items = w.sim.requests().iter().filter(|r| r.batched).count();
    assert_eq!(
        (batches, items),
        (2, 5),
        "one batch, then one with the 2 throttled items"
    );
}

/// `groups` calendars signed in and polled once (the baseline), with `calendar_toml(with_members,
/// use_batch, extra)`.
async fn calendar_after_baseline(
    groups: u32,
    with_members: bool,
    use_batch: bool,
    extra: &str,
) -> (World, groupwatch::app::Daemon) {
    let w = World::with_calendars(groups).await;
    let d = w
        .calendar_daemon(&w.calendar_toml(with_members, use_batch, extra))
        .await;
    w.calendar_cycle(&d).await;
    (w, d)
}

/// The same with `$batch`, then one new event `subject` in each calendar, and the request log cleared.
async fn batched_after_baseline(groups: u32, subject: &str) -> (World, groupwatch::app::Daemon) {
    let (w, d) = calendar_after_baseline(groups, false, true, "").await;
    for g in &w.groups {
        w.sim.create_event(g, subject);
    }
    w.sim.reset_requests();
    (w, d)
}

/// Event listings the simulator received (HTTP round trips and `$batch` items).
fn listings(w: &World) -> Vec<groupwatch::sim::RequestRecord> {
    w.sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/events"))
        .collect()
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
    w.sim.reset_requests();
    w.calendar_cycle(&d).await;
    let first = listings(&w);
    assert_eq!(
        first.len(),
        2,
        "the refused $filter, then one page: {first:#?}"
    );
    assert!(first[0].query.contains("filter=createdDateTime") && first[0].status == 400);
    assert!(!first[1].query.contains("filter"));
    w.sim.create_event(&g, "fresh");
    for _ in 0..2 {
        w.sim.reset_requests();
        w.calendar_cycle(&d).await;
        // 6 events, $top=3: page one (fresh + 2 old) already reaches below the floor, so paging stops there.
        let reqs = listings(&w);
        assert_eq!(reqs.len(), 1, "one page per cycle: {reqs:#?}");
        assert!(!reqs[0].query.contains("filter") && !reqs[0].query.contains("skip="));
    }
    let evs = created(&w);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["data"]["subject"], "fresh");
}

#[tokio::test]
async fn a_400_that_is_not_about_the_filter_fails_the_group_and_keeps_the_filter() {
    let (w, d) = calendar_after_baseline(1, false, false, "").await;
    w.sim.create_event(&w.groups[0], "after the 400");
    w.sim.fail_next(1, 400); // invalidRequest: "The request is malformed or incorrect."
    w.sim.reset_requests();
    let r = d.poll_calendars_once().await.unwrap();
    assert_eq!((r[0].groups, r[0].failed), (0, 1), "{r:?}");
    assert_eq!(listings(&w).len(), 1, "no fallback listing");
    w.sim.reset_requests();
    w.calendar_cycle(&d).await;
    assert_eq!(created(&w).len(), 1);
    let reqs = listings(&w);
    assert!(
        !reqs.is_empty()
            && reqs
                .iter()
                .all(|r| r.query.contains("filter=createdDateTime ge")),
        "the filter stays on: {reqs:#?}"
    );
}

#[tokio::test]
async fn an_event_deleted_while_paging_causes_no_spurious_delete_and_a_real_delete_is_emitted_once()
{
    let (w, d) =
        calendar_after_baseline(1, false, false, "page_size = 2\nemit_deletes = true").await;
    let g = w.groups[0].clone();
    let now = Utc::now();
    let ids: Vec<String> = (0..5)
        .map(|i| {
            let at = now - chrono::Duration::seconds(50 - 10 * i);
            w.sim.create_event_at(&g, &format!("e{i}"), at, true)
        })
        .collect();
    w.calendar_cycle(&d).await;
    assert_eq!(created(&w).len(), 5);
    // Newest first, 2 per page: [e4 e3] [e2 e1] [e0]. e3 goes between page one and page two, so page two
    // ($skip=2) starts at e1 and e2 is skipped by this listing.
    w.sim.delete_event_before_next_page(&g, &ids[3]);
    for _ in 0..4 {
        w.calendar_cycle(&d).await;
    }
    let evs = w.events();
    unique_by_id(&evs);
    let of = |ty: &str| -> Vec<String> {
        evs.iter()
            .filter(|e| e["type"] == ty)
            .map(|e| e["data"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        of("groupwatch.event.created").len(),
        5,
        "e2 is not re-created"
    );
    assert_eq!(
        of("groupwatch.event.deleted"),
        [ids[3].clone()],
        "only the real deletion, once"
    );
}

#[tokio::test]
async fn one_polls_new_events_reach_the_sink_oldest_first() {
    let (w, d) = calendar_after_baseline(1, false, true, "page_size = 2").await;
    let g = w.groups[0].clone();
    let now = Utc::now();
    for (i, subject) in ["first", "second", "third", "fourth"].iter().enumerate() {
        let at = now - chrono::Duration::seconds(40 - 10 * i as i64);
        w.sim.create_event_at(&g, subject, at, true);
    }
    w.calendar_cycle(&d).await;
    let subjects: Vec<_> = created(&w)
        .iter()
        .map(|e| e["data"]["subject"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(subjects, ["first", "second", "third", "fourth"]);
}

#[tokio::test]
async fn a_424_on_the_batch_call_itself_is_retried() {
    let (w, d) = batched_after_baseline(2, "after a 424").await;
    w.sim.fail_next(1, 424); // the next /v1.0 request is the $batch POST itself
    w.calendar_cycle(&d).await;
    assert_eq!(created(&w).len(), 2);
    let batches: Vec<u16> = w
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == "/v1.0/$batch")
        .map(|r| r.status)
        .collect();
    assert_eq!(batches, [424, 200]);
}

#[tokio::test]
async fn a_foreign_next_link_fails_only_its_group_in_a_batch() {
    let w = World::with_calendars(2).await;
    let (bad, good) = (w.groups[0].clone(), w.groups[1].clone());
    let d = w
        .calendar_daemon(&w.calendar_toml(false, true, "page_size = 1"))
        .await;
    w.calendar_cycle(&d).await;
    w.sim.foreign_next_links(&bad);
    for g in [&bad, &good] {
        w.sim.create_event(g, "one");
        w.sim.create_event(g, "two");
    }
    for _ in 0..2 {
        let r = d.poll_calendars_once().await.unwrap();
        assert_eq!((r[0].groups, r[0].failed), (1, 1), "{r:?}");
        d.deliver_all().await.unwrap();
    }
    let groups: HashSet<String> = created(&w)
        .iter()
        .map(|e| e["data"]["groupId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created(&w).len(), 2);
    assert_eq!(groups, HashSet::from([good]));
}

/// A delegated access token for the simulated user, by the device-code grant over plain HTTP.
async fn user_token(w: &World) -> String {
    let http = reqwest::Client::new();
    let authority = format!(
        "{}/{}/oauth2/v2.0",
        w.sim.authority_url(),
        w.sim.tenant_id()
    );
    let code: serde_json::Value = http
        .post(format!("{authority}/devicecode"))
        .form(&[
            ("client_id", w.sim.client_id()),
            ("scope", "Group.Read.All".into()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok: serde_json::Value = http
        .post(format!("{authority}/token"))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:device_code".to_owned(),
            ),
            ("client_id", w.sim.client_id()),
            (
                "device_code",
                code["device_code"].as_str().unwrap().to_owned(),
            ),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tok["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn event_times_are_utc_because_the_prefer_header_asks_for_it() {
    // Without the header the simulated mailbox answers in its own zone, as Graph does.
    let w = World::with_calendars(1).await;
    let g = w.groups[0].clone();
    w.sim.create_event(&g, "zone check");
    let token = user_token(&w).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1.0/groups/{g}/events", w.sim.base_url());
    let zone = |v: &serde_json::Value| v["value"][0]["start"]["timeZone"].clone();
    let plain: serde_json::Value = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(zone(&plain), "Pacific Standard Time");
    let utc: serde_json::Value = http
        .get(&url)
        .bearer_auth(&token)
        .header("Prefer", "outlook.timezone=\"UTC\"")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(zone(&utc), "UTC");
    assert_ne!(
        plain["value"][0]["start"]["dateTime"],
        utc["value"][0]["start"]["dateTime"]
    );

    for use_batch in [false, true] {
        let w = World::with_calendars(1).await;
        let g = w.groups[0].clone();
        let d = w
            .calendar_daemon(&w.calendar_toml(false, use_batch, ""))
            .await;
        w.calendar_cycle(&d).await;
        w.sim.create_event(&g, "meeting");
        w.calendar_cycle(&d).await;
        let evs = created(&w);
        assert_eq!(evs.len(), 1);
        let data = &evs[0]["data"];
        let created_at =
            chrono::DateTime::parse_from_rfc3339(data["createdDateTime"].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc);
        // The simulator starts each event a day after its creation, for one hour.
        let local = |t: chrono::DateTime<Utc>| format!("{}.0000000", t.format("%Y-%m-%dT%H:%M:%S"));
        let start = created_at + chrono::Duration::days(1);
        assert_eq!(data["start"]["timeZone"], "UTC", "use_batch={use_batch}");
        assert_eq!(data["end"]["timeZone"], "UTC", "use_batch={use_batch}");
        assert_eq!(
            data["start"]["dateTime"],
            local(start),
            "use_batch={use_batch}"
        );
        assert_eq!(
            data["end"]["dateTime"],
            local(start + chrono::Duration::hours(1)),
            "use_batch={use_batch}"
        );
    }
}

/// Scenario of the mailbox-budget test: a budget of 2 requests per 10 minutes for the one group, then a poll
/// that needs a third request (a third page, or a second resend after two 429s). The third request would
/// need a token 5 minutes later, so the poll must still be waiting when the test stops it; counts, not
/// timings, are asserted.
async fn budget_blocks_the_third_request(use_batch: bool, resends: bool) -> usize {
    let w = World::with_calendars(1).await;
    let g = w.groups[0].clone();
    let toml = w.calendar_toml(false, use_batch, "page_size = 2").replace(
        "[calendar]\n",
        "[calendar]\nmailbox_requests_per_10min = 2\n",
    );
    let d = w.calendar_daemon(&toml).await;
    if resends {
        w.sim.create_event(&g, "one page");
        w.sim.throttle_next_event_listings(2, "0");
    } else {
        for i in 0..5 {
            w.sim.create_event(&g, &format!("page {}", i / 2 + 1));
        }
    }
    w.sim.reset_requests();
    let polled = tokio::time::timeout(Duration::from_secs(4), d.poll_calendars_once()).await;
    assert!(
        polled.is_err(),
        "use_batch={use_batch} resends={resends}: the poll must wait for the budget, got {polled:?}"
    );
    listings(&w).len()
}

#[tokio::test]
async fn the_mailbox_budget_counts_every_page_and_every_resend() {
    let runs = [(false, false), (true, false), (false, true), (true, true)];
    let counts = futures::future::join_all(
        runs.iter()
            .map(|&(batch, resends)| budget_blocks_the_third_request(batch, resends)),
    )
    .await;
    for ((batch, resends), n) in runs.iter().zip(counts) {
        assert_eq!(n, 2, "use_batch={batch} resends={resends}: requests sent");
    }
}

#[tokio::test]
async fn connections_of_one_app_share_its_4_concurrent_requests() {
    let w = World::with_calendars(8).await;
    let one = w.calendar_toml(false, false, "");
    let conn_start = one.find("[connections.sim]").unwrap();
    let conn_end = one.find("[sinks.file]").unwrap();
    let second_conn = one[conn_start..conn_end].replace("[connections.sim]", "[connections.sim2]");
    let sub_start = one.find("[[subscriptions]]").unwrap();
    let second_sub = one[sub_start..]
        .replace("id = \"calendars\"", "id = \"calendars2\"")
        .replace("connection = \"sim\"", "connection = \"sim2\"");
    let toml = format!(
        "{}{second_conn}{}\n{second_sub}",
        &one[..conn_end],
        &one[conn_end..]
    );
    let cfg = groupwatch::config::Config::from_toml(&toml).unwrap();
    let limits = groupwatch::login::app_limits(&cfg);
    assert!(std::sync::Arc::ptr_eq(&limits["sim"].0, &limits["sim2"].0));
    for conn in ["sim", "sim2"] {
        groupwatch::login::login(&cfg, conn, |_| {}).await.unwrap();
    }
    let d = groupwatch::app::Daemon::build(cfg.clone(), Default::default())
        .await
        .unwrap();
    let notifier = groupwatch::relay::Notifier::new(cfg.sinks.keys());
    let poller = groupwatch::login::calendar_poller(&cfg, d.store(), &notifier).unwrap();
    w.sim.set_faults(Faults {
        latency: Duration::from_millis(100),
        ..Faults::default()
    });
    w.sim.reset_requests();
    let (a, b) = tokio::join!(poller.poll_once("sim"), poller.poll_once("sim2"));
    assert_eq!((a.unwrap().groups, b.unwrap().groups), (8, 8));
    let max = w.sim.max_calendar_in_flight();
    assert!(max <= 4, "{max} calendar requests of one app in flight");
    assert!(max >= 3, "the two connections did overlap ({max})");
}

#[tokio::test]
async fn updates_and_deletes_are_emitted_only_when_switched_on() {
    let (w, d) =
        calendar_after_baseline(1, false, true, "emit_updates = true\nemit_deletes = true").await;
    let g = w.groups[0].clone();
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

#[tokio::test]
async fn the_mailbox_budget_counts_resends_of_a_whole_batch_call() {
    let w = World::with_calendars(1).await;
    let toml = w.calendar_toml(false, true, "").replace(
        "[calendar]\n",
        "[calendar]\nmailbox_requests_per_10min = 2\n",
    );
    let d = w.calendar_daemon(&toml).await;
    w.sim.reset_requests();
    w.sim.fail_next(2, 503); // the $batch call itself fails twice
    let polled = tokio::time::timeout(Duration::from_secs(4), d.poll_calendars_once()).await;
    assert!(
        polled.is_err(),
        "the third $batch send must wait for the budget, got {polled:?}"
    );
    let posts = w
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/$batch"))
        .count();
    assert_eq!(posts, 2, "two sends, each paid for by the group's mailbox");
}

#[tokio::test]
async fn subscriptions_sharing_a_group_each_get_the_changes_they_asked_for() {
    let w = World::with_calendars(1).await;
    let g = w.groups[0].clone();
    let old = w.sim.create_event(&g, "existing");
    let audit = w.dir.path().join("audit.jsonl");
    // "calendars" (from the helper): from_now, created only, to `file`. "audit": existing_as_added with
    // updates, to `audit`.
    let toml = with_audit_subscription(
        &w.calendar_toml(false, true, ""),
        &audit,
        "calendar",
        &g,
        "baseline = \"existing_as_added\"\nemit_updates = true",
    );
    let d = w.calendar_daemon(&toml).await;
    w.calendar_cycle(&d).await;
    let kinds = |path: &std::path::Path| -> Vec<(String, String)> {
        crate::support::read_events(path)
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["data"]["subject"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    assert!(kinds(&w.events_path()).is_empty(), "from_now: no baseline");
    assert_eq!(
        kinds(&audit),
        [("groupwatch.event.created".to_owned(), "existing".to_owned())]
    );
    w.sim.create_event(&g, "new");
    w.sim.update_event(&g, &old, "existing, moved");
    w.calendar_cycle(&d).await;
    assert_eq!(
        kinds(&w.events_path()),
        [("groupwatch.event.created".to_owned(), "new".to_owned())],
        "no updates for the subscription that did not ask for them"
    );
    let mut got = kinds(&audit);
    got.sort();
    assert_eq!(
        got,
        [
            ("groupwatch.event.created".to_owned(), "existing".to_owned()),
            ("groupwatch.event.created".to_owned(), "new".to_owned()),
            (
                "groupwatch.event.updated".to_owned(),
                "existing, moved".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn one_mailboxs_retry_after_does_not_hold_the_other_group_calendars() {
    let (w, d) = calendar_after_baseline(2, false, false, "page_size = 2").await;
    for g in &w.groups {
        for i in 0..5 {
            w.sim.create_event(g, &format!("event {i}"));
        }
    }
    w.sim.reset_requests();
    w.sim.throttle_next_event_listings(1, "1.5");
    w.calendar_cycle(&d).await;
    assert_eq!(created(&w).len(), 10);
    let reqs = listings(&w);
    let throttled = reqs.iter().find(|r| r.status == 429).expect("one 429");
    let group_of = |path: &str| path.split('/').nth(3).unwrap_or_default().to_owned();
    let other = w
        .groups
        .iter()
        .find(|g| **g != group_of(&throttled.path))
        .unwrap()
        .clone();
    let other_pages: Vec<_> = reqs.iter().filter(|r| group_of(&r.path) == other).collect();
    assert!(other_pages.len() >= 3, "{other_pages:?}");
    for r in other_pages {
        assert!(
            r.at.saturating_duration_since(throttled.at) < Duration::from_millis(1000),
            "the other mailbox's pages did not wait for the throttled one"
        );
    }
    let resent = reqs
        .iter()
        .filter(|r| group_of(&r.path) == group_of(&throttled.path) && r.at > throttled.at)
        .map(|r| r.at.duration_since(throttled.at))
        .min()
        .unwrap();
    assert!(resent >= Duration::from_millis(1500), "{resent:?}");
}
