//! Group delta rounds: paging, collapsing, replays, tokens and expiry.

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::{Expiry, Faults, MemberKind, RemovedReason, Sim, SimConfig};
use super::{get, group_with_members, http, member_entries, round, start, token};

fn delta_url(sim: &Sim, query: &str) -> String {
    format!("{}/v1.0/groups/delta{query}", sim.base_url())
}

#[tokio::test]
async fn initial_round_splits_large_group_across_pages() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "big", 250);
    sim.create_group("empty", "Nobody");
    let url = delta_url(&sim, "?$select=members,displayName");
    let (pages, delta) = round(&http, &url, &token).await;
    assert_eq!(pages.len(), 3);
    assert!(delta.contains("/v1.0/groups/delta?$deltatoken="));
    let entries = member_entries(&pages);
    assert_eq!(entries.len(), 250);
    let ids: BTreeSet<_> = entries.iter().map(|(_, m, _)| m.clone()).collect();
    assert_eq!(ids.len(), 250);
    assert!(
        entries
            .iter()
            .all(|(g, _, removed)| g == "big" && removed.is_none())
    );
    for page in &pages {
        let page: Value = serde_json::from_str(page).unwrap();
        let value = page["value"].as_array().unwrap();
        let big = value
            .iter()
            .find(|g| g["id"] == "big")
            .expect("big recurs on every page");
        assert_eq!(big["displayName"], "Group big");
        assert!(big["members@delta"].as_array().unwrap().len() <= 100);
    }
    let all: Value = serde_json::from_str(&pages[2]).unwrap();
    let empty = all["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "empty");
    let empty = empty.expect("memberless group listed");
    assert!(empty.get("members@delta").is_none());
}

#[tokio::test]
async fn delta_round_reports_exactly_the_changed_links() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "g1", 5);
    group_with_members(&sim, "g2", 3);
    let (_, delta) = round(&http, &delta_url(&sim, "?$select=members"), &token).await;
    assert!(sim.add_member("g1", "new", MemberKind::Group));
    assert!(sim.remove_member("g2", "u001", RemovedReason::Changed));
    assert!(sim.remove_member("g1", "u000", RemovedReason::Deleted));
    assert!(!sim.remove_member("g1", "u000", RemovedReason::Deleted));
    let (pages, next) = round(&http, &delta, &token).await;
    let mut got = member_entries(&pages);
    got.sort();
    let some = |s: &str| Some(s.to_owned());
    let want = vec![
        ("g1".into(), "new".into(), None),
        ("g1".into(), "u000".into(), some("deleted")),
        ("g2".into(), "u001".into(), some("changed")),
    ];
    assert_eq!(got, want);
    let page: Value = serde_json::from_str(&pages[0]).unwrap();
    assert!(pages[0].contains("#microsoft.graph.group"));
    assert!(
        page["value"][0].get("displayName").is_none(),
        "not selected"
    );
    let (pages, _) = round(&http, &next, &token).await;
    assert_eq!(member_entries(&pages), vec![], "nothing changed since");
}

#[tokio::test]
async fn delta_round_collapses_to_current_state_and_reports_deleted_groups() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "g1", 2);
    group_with_members(&sim, "gone", 2);
    let (_, delta) = round(&http, &delta_url(&sim, "?$select=members"), &token).await;
    assert!(sim.add_member("g1", "brief", MemberKind::User));
    assert!(sim.remove_member("g1", "brief", RemovedReason::Deleted));
    assert!(sim.remove_member("g1", "u000", RemovedReason::Deleted));
    assert!(sim.add_member("g1", "u000", MemberKind::User));
    sim.delete_group("gone");
    let (pages, _) = round(&http, &delta, &token).await;
    let got = member_entries(&pages);
    let want = vec![
        ("g1".into(), "brief".into(), Some("deleted".into())),
        ("g1".into(), "u000".into(), None),
    ];
    assert_eq!(got, want);
    let page: Value = serde_json::from_str(&pages[0]).unwrap();
    let gone = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "gone");
    assert_eq!(gone.unwrap()["@removed"]["reason"], "changed");
    assert!(sim.members("gone").is_empty());
}

#[tokio::test]
async fn replays_old_links_showing_their_current_state() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "g1", 10);
    let (_, delta) = round(&http, &delta_url(&sim, "?$select=members"), &token).await;
    for i in 0..10 {
        assert!(sim.remove_member("g1", &format!("u{i:03}"), RemovedReason::Deleted));
    }
    let (_, delta) = round(&http, &delta, &token).await;
    sim.set_faults(Faults {
        replay_fraction: 0.3,
        ..Faults::default()
    });
    let (pages, _) = round(&http, &delta, &token).await;
    let got = member_entries(&pages);
    assert_eq!(got.len(), 3, "round(0.3 * 10) replays: {got:?}");
    assert!(got.iter().all(|(_, _, r)| r.as_deref() == Some("deleted")));
}

#[tokio::test]
async fn owners_are_tracked_only_when_selected() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "g1", 1);
    assert!(sim.add_owner("g1", "boss"));
    let (pages, delta) = round(&http, &delta_url(&sim, "?$select=members,owners"), &token).await;
    let page: Value = serde_json::from_str(&pages[0]).unwrap();
    assert_eq!(page["value"][0]["owners@delta"][0]["id"], "boss");
    assert!(sim.remove_owner("g1", "boss"));
    let (pages, _) = round(&http, &delta, &token).await;
    let page: Value = serde_json::from_str(&pages[0]).unwrap();
    assert_eq!(
        page["value"][0]["owners@delta"][0]["@removed"]["reason"],
        "deleted"
    );
    let (pages, _) = round(&http, &delta_url(&sim, "?$select=members"), &token).await;
    assert!(!pages[0].contains("owners@delta"));
}

#[tokio::test]
async fn deltatoken_latest_skips_the_initial_dump() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "g1", 5);
    let url = delta_url(&sim, "?$select=members&$deltatoken=latest");
    let (status, _, body) = get(&http, &url, &token).await;
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["value"], serde_json::json!([]));
    assert!(page.get("@odata.nextLink").is_none());
    let delta = page["@odata.deltaLink"].as_str().unwrap();
    assert!(sim.add_member("g1", "later", MemberKind::User));
    let (pages, _) = round(&http, delta, &token).await;
    assert_eq!(
        member_entries(&pages),
        vec![("g1".into(), "later".into(), None)]
    );
}

#[tokio::test]
async fn filter_is_limited_to_50_ids_and_other_options_are_rejected() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "a", 1);
    group_with_members(&sim, "b", 1);
    let ids: Vec<String> = (0..51).map(|i| format!("id eq 'g{i}'")).collect();
    let url = delta_url(&sim, "");
    let req = http.get(&url).bearer_auth(&token);
    let filter = ids.join(" or ");
    let resp = req
        .query(&[("$select", "members"), ("$filter", &filter)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Request_UnsupportedQuery");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum of 50")
    );

    let bad = delta_url(&sim, "?$filter=displayName%20eq%20'a'");
    let (status, _, body) = get(&http, &bad, &token).await;
    assert_eq!(status, 400);
    assert!(body.contains("displayName eq 'a'"), "{body}");
    for option in ["$expand=members", "$top=5", "%24orderby=id"] {
        let (status, _, _) = get(&http, &delta_url(&sim, &format!("?{option}")), &token).await;
        assert_eq!(status, 400, "{option}");
    }

    let req = http.get(&url).bearer_auth(&token);
    let resp = req
        .query(&[("$select", "members"), ("$filter", "id eq 'b'")])
        .send()
        .await;
    let first: Value = resp.unwrap().json().await.unwrap();
    let groups: Vec<&Value> = first["value"].as_array().unwrap().iter().collect();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["id"], "b");
}

#[tokio::test]
async fn expired_tokens_answer_400_sync_state_not_found() {
    let sim = start(SimConfig {
        page_size: 2,
        ..SimConfig::default()
    })
    .await;
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "g1", 5);
    let (status, _, body) = get(&http, &delta_url(&sim, "?$select=members"), &token).await;
    assert_eq!(status, 200);
    let next: Value = serde_json::from_str(&body).unwrap();
    let next = next["@odata.nextLink"].as_str().unwrap().to_owned();
    let (_, delta) = round(&http, &delta_url(&sim, "?$select=members"), &token).await;
    sim.expire_delta_tokens(Expiry::SyncStateNotFound400);
    for url in [&next, &delta, &delta_url(&sim, "?$deltatoken=garbage")] {
        let (status, _, body) = get(&http, url, &token).await;
        assert_eq!(status, 400, "{url}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "syncStateNotFound");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("The sync state generation is not found."));
    }
    let (pages, _) = round(&http, &delta_url(&sim, "?$select=members"), &token).await;
    assert_eq!(
        member_entries(&pages).len(),
        5,
        "a fresh initial round works"
    );
}

#[tokio::test]
async fn expired_tokens_answer_410_with_location_of_initial_query() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "g1", 3);
    group_with_members(&sim, "g2", 3);
    let req = http.get(delta_url(&sim, "")).bearer_auth(&token);
    let query = [
        ("$select", "members,displayName"),
        ("$filter", "id eq 'g1'"),
    ];
    let first: Value = req
        .query(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delta = first["@odata.deltaLink"].as_str().unwrap();
    sim.expire_delta_tokens(Expiry::Gone410WithLocation);
    let (status, headers, body) = get(&http, delta, &token).await;
    assert_eq!(status, 410);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "resyncRequired");
    let location = headers["location"].to_str().unwrap();
    let want =
        "/v1.0/groups/delta?$select=members,displayName&$filter=id%20eq%20%27g1%27&$deltatoken=";
    assert_eq!(location, format!("{}{want}", sim.base_url()));
    let (pages, _) = round(&http, location, &token).await;
    let entries = member_entries(&pages);
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|(g, _, _)| g == "g1"));
}

#[tokio::test]
async fn next_link_fetched_twice_returns_identical_json() {
    let sim = start(SimConfig {
        page_size: 3,
        ..SimConfig::default()
    })
    .await;
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "g1", 10);
    let (_, _, body) = get(&http, &delta_url(&sim, "?$select=members"), &token).await;
    let page: Value = serde_json::from_str(&body).unwrap();
    let next = page["@odata.nextLink"].as_str().unwrap();
    assert!(next.starts_with(&format!("{}/v1.0/groups/delta?$skiptoken=", sim.base_url())));
    let (s1, _, once) = get(&http, next, &token).await;
    assert!(sim.add_member("g1", "meanwhile", MemberKind::User));
    let (s2, _, twice) = get(&http, next, &token).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(once, twice);
}

/// Runs a fixed script against a fresh simulator and returns every delta page, with the
/// origin replaced so two simulators on different ports compare equal.
async fn scripted_pages(seed: u64) -> Vec<String> {
    let sim = start(SimConfig {
        seed,
        page_size: 7,
        ..SimConfig::default()
    })
    .await;
    sim.set_faults(Faults {
        replay_fraction: 0.4,
        repeat_fraction: 0.3,
        empty_page_fraction: 0.5,
        ..Faults::default()
    });
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "g1", 20);
    group_with_members(&sim, "g2", 5);
    let (mut all, delta) = round(&http, &delta_url(&sim, "?$select=members"), &token).await;
    for i in 0..8 {
        assert!(sim.remove_member("g1", &format!("u{i:03}"), RemovedReason::Deleted));
        assert!(sim.add_member("g2", &format!("n{i}"), MemberKind::User));
    }
    let (pages, delta) = round(&http, &delta, &token).await;
    all.extend(pages);
    let (pages, _) = round(&http, &delta, &token).await;
    all.extend(pages);
    let base = sim.base_url();
    all.into_iter().map(|p| p.replace(&base, "BASE")).collect()
}

#[tokio::test]
async fn same_seed_and_operations_give_byte_identical_responses() {
    let a = scripted_pages(42).await;
    let b = scripted_pages(42).await;
    assert_eq!(a, b);
    let c = scripted_pages(43).await;
    assert_ne!(a, c, "tokens depend on the seed");
}
