//! Throttling, scripted failures, empty pages, repeats and request recording.

use serde_json::Value;

use super::super::{Faults, SimConfig};
use super::{get, group_with_members, http, member_entries, round, start, token};

#[tokio::test]
async fn throttle_next_sends_retry_after_verbatim_then_recovers() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    let url = format!("{}/v1.0/groups/delta", sim.base_url());
    sim.throttle_next(2, "1.5");
    for _ in 0..2 {
        let (status, headers, body) = get(&http, &url, &token).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "1.5");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "TooManyRequests");
        assert_eq!(body["error"]["innerError"]["status"], "429");
    }
    assert_eq!(get(&http, &url, &token).await.0, 200);
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 429, 429, 200], "token request first");
}

#[tokio::test]
async fn scripted_throttles_come_before_auth() {
    let sim = start(SimConfig::default()).await;
    let url = format!("{}/v1.0/groups/delta", sim.base_url());
    sim.throttle_next(1, "0");
    let (status, headers, _) = get(&http(), &url, "no-token").await;
    assert_eq!(
        (status, headers["retry-after"].to_str().unwrap()),
        (429, "0")
    );
    assert_eq!(get(&http(), &url, "no-token").await.0, 401);
}

#[tokio::test]
async fn fail_next_and_random_faults_answer_with_graph_bodies() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    let url = format!("{}/v1.0/groups/delta", sim.base_url());
    sim.fail_next(1, 503);
    sim.fail_next(1, 504);
    for want in [503, 504] {
        let (status, headers, body) = get(&http, &url, &token).await;
        assert_eq!(status, want);
        assert!(headers.get("retry-after").is_none());
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "serviceNotAvailable");
    }
    sim.set_faults(Faults {
        throttle_fraction: 1.0,
        retry_after_secs: 1.5,
        ..Faults::default()
    });
    let (status, headers, _) = get(&http, &url, &token).await;
    assert_eq!(
        (status, headers["retry-after"].to_str().unwrap()),
        (429, "1.5")
    );
    sim.set_faults(Faults {
        error_5xx_fraction: 1.0,
        ..Faults::default()
    });
    assert_eq!(get(&http, &url, &token).await.0, 503);
}

#[tokio::test]
async fn empty_pages_and_repeats_keep_the_union_intact() {
    let sim = start(SimConfig {
        page_size: 10,
        ..SimConfig::default()
    })
    .await;
    sim.set_faults(Faults {
        empty_page_fraction: 1.0,
        repeat_fraction: 0.5,
        ..Faults::default()
    });
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "g1", 20);
    let url = format!("{}/v1.0/groups/delta?$select=members", sim.base_url());
    let (pages, _) = round(&http, &url, &token).await;
    let empty = pages.iter().filter(|p| p.contains(r#""value":[]"#)).count();
    let entries = member_entries(&pages);
    assert_eq!(entries.len(), 30, "20 entries plus 10 repeats");
    assert_eq!(
        pages.len(),
        2 * (30 / 10),
        "an empty page before each real page"
    );
    assert_eq!(empty, 3);
    let distinct: std::collections::BTreeSet<_> = entries.iter().map(|e| &e.1).collect();
    assert_eq!(distinct.len(), 20);
}

#[tokio::test]
async fn records_requests_with_decoded_query_and_counts_paths() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    let base = sim.base_url();
    let req = http
        .get(format!("{base}/v1.0/groups/delta"))
        .bearer_auth(&token);
    req.query(&[("$select", "members")]).send().await.unwrap();
    let token_path = format!("/{}/oauth2/v2.0/token", sim.tenant_id());
    assert_eq!(sim.count(&token_path), 1);
    assert_eq!(sim.count("/v1.0/groups/delta"), 1);
    let last = sim.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.query.as_str(), last.status),
        ("GET", "$select=members", 200)
    );
    sim.reset_requests();
    assert!(sim.requests().is_empty());
    sim.set_faults(Faults {
        latency: std::time::Duration::from_millis(150),
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    get(&http, &format!("{base}/v1.0/groups/delta"), &token).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    assert_eq!(sim.count("/v1.0/groups/delta"), 1);
}

#[tokio::test]
async fn initial_round_carries_earlier_removals_when_enabled() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "g1", 3);
    let reason = super::super::RemovedReason::Changed;
    assert!(sim.remove_member("g1", "u001", reason));
    let url = format!("{}/v1.0/groups/delta?$select=members", sim.base_url());
    let (pages, _) = round(&http, &url, &token).await;
    assert_eq!(member_entries(&pages).len(), 2, "off by default");
    sim.set_faults(Faults {
        removed_in_initial: true,
        ..Faults::default()
    });
    let (pages, _) = round(&http, &url, &token).await;
    let removed: Vec<_> = member_entries(&pages)
        .into_iter()
        .filter(|e| e.2.is_some())
        .collect();
    assert_eq!(
        removed,
        [("g1".into(), "u001".into(), Some("changed".into()))]
    );
}
