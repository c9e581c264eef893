//! Group calendars and `$batch` over HTTP: create/list/update/delete, the `/calendar/events` alias,
//! `$orderby`, member-only delegated access, and the batch limits and `dependsOn` failures.

use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use super::super::{DeviceFlow, MemberKind, RemovedReason, Sim, SimConfig};
use super::{http, start, token, token_url};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Signs the simulated user in through the device-code endpoints, as the daemon does: a delegated token.
async fn delegated_token(sim: &Sim, http: &reqwest::Client) -> String {
    sim.set_device_flow(DeviceFlow {
        approve_after_polls: 0,
        ..DeviceFlow::default()
    });
    let client_id = sim.client_id();
    let url = format!(
        "{}/{}/oauth2/v2.0/devicecode",
        sim.authority_url(),
        sim.tenant_id()
    );
    let form = [
        ("client_id", client_id.as_str()),
        ("scope", "offline_access Group.Read.All"),
    ];
    let resp = http.post(url).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let code: Value = resp.json().await.unwrap();
    let form = [
        ("grant_type", DEVICE_GRANT),
        ("client_id", client_id.as_str()),
        ("device_code", code["device_code"].as_str().unwrap()),
    ];
    let resp = http.post(token_url(sim, &sim.tenant_id())).form(&form);
    let resp = resp.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// A tenant with group `g1` whose only member is the signed-in user, plus that user's token.
async fn member_world() -> (Sim, reqwest::Client, String) {
    let sim = start(SimConfig::default()).await;
    sim.create_group("g1", "Group g1");
    assert!(sim.add_member("g1", &sim.user_id(), MemberKind::User));
    let http = http();
    let token = delegated_token(&sim, &http).await;
    (sim, http, token)
}

/// One request with a bearer token and an optional JSON body: status and parsed body (`Null` when empty).
async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    (status, body)
}

fn events_url(sim: &Sim, group: &str) -> String {
    format!("{}/v1.0/groups/{group}/events", sim.base_url())
}

fn alias_url(sim: &Sim, group: &str) -> String {
    format!("{}/v1.0/groups/{group}/calendar/events", sim.base_url())
}

/// A 200 listing's `value`, asserting the status.
async fn listing(http: &reqwest::Client, url: &str, token: &str) -> Vec<Value> {
    let (status, body) = send(http, Method::GET, url, token, None).await;
    assert_eq!(status, 200, "{body}");
    body["value"].as_array().unwrap().clone()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn parse_ts(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn assert_graph_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["innerError"]["request-id"].is_string());
}

#[tokio::test]
async fn post_event_returns_201_with_the_created_event_and_lists_it() {
    let (sim, http, token) = member_world().await;
    sim.create_group("g2", "Group g2");
    assert!(sim.add_member("g2", &sim.user_id(), MemberKind::User));
    assert!(
        listing(&http, &events_url(&sim, "g1"), &token)
            .await
            .is_empty()
    );

    let before = Utc::now();
    let resp = http
        .post(events_url(&sim, "g1"))
        .bearer_auth(&token)
        .json(&json!({"subject": "Standup"}))
        .send()
        .await
        .unwrap();
    let after = Utc::now();
    assert_eq!(resp.status(), 201);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("AAMkAD") && id.len() > 10, "{id}");
    assert_eq!(created["subject"], "Standup");
    let at = parse_ts(&created["createdDateTime"]);
    // createdDateTime has microsecond precision.
    let before = before - Duration::microseconds(1);
    assert!(
        before <= at && at <= after,
        "{at} outside {before}..{after}"
    );
    assert_eq!(created["lastModifiedDateTime"], created["createdDateTime"]);
    assert!(!created["changeKey"].as_str().unwrap().is_empty());
    assert!(created["@odata.etag"].as_str().unwrap().contains(id));
    assert_eq!(created["type"], "singleInstance");
    assert!(created["start"]["dateTime"].is_string());
    assert!(created["end"]["timeZone"].is_string());

    let listed = listing(&http, &events_url(&sim, "g1"), &token).await;
    assert_eq!(
        listed.as_slice(),
        std::slice::from_ref(&created),
        "the listing shows the same event"
    );
    assert!(
        listing(&http, &events_url(&sim, "g2"), &token)
            .await
            .is_empty(),
        "another group's calendar is untouched"
    );

    // A second event gets its own id and lists after the first.
    let body = Some(json!({"subject": "Retro"}));
    let (status, second) = send(&http, Method::POST, &events_url(&sim, "g1"), &token, body).await;
    assert_eq!(status, 201, "{second}");
    assert_ne!(second["id"], created["id"]);
    assert_eq!(second["subject"], "Retro");
    let listed = listing(&http, &events_url(&sim, "g1"), &token).await;
    assert_eq!(ids(&listed), [id, second["id"].as_str().unwrap()]);
}

#[tokio::test]
async fn patch_changes_the_field_and_change_key_and_delete_removes_the_event() {
    let (sim, http, token) = member_world().await;
    let (status, created) = send(
        &http,
        Method::POST,
        &events_url(&sim, "g1"),
        &token,
        Some(json!({"subject": "Old"})),
    )
    .await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap();
    let other = sim.create_event("g1", "Bystander");
    let url = format!("{}/{id}", events_url(&sim, "g1"));

    let (status, patched) = send(
        &http,
        Method::PATCH,
        &url,
        &token,
        Some(json!({"subject": "New"})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["id"], created["id"]);
    assert_eq!(patched["subject"], "New");
    assert_ne!(patched["changeKey"], created["changeKey"]);
    assert_ne!(patched["@odata.etag"], created["@odata.etag"]);
    assert_eq!(patched["createdDateTime"], created["createdDateTime"]);
    assert!(
        parse_ts(&patched["lastModifiedDateTime"]) >= parse_ts(&created["lastModifiedDateTime"])
    );
    assert_eq!(
        patched["location"], created["location"],
        "fields not sent stay"
    );

    let listed = listing(&http, &events_url(&sim, "g1"), &token).await;
    let mine = listed.iter().find(|e| e["id"] == id).unwrap();
    assert_eq!(mine, &patched, "the listing shows the update");

    // A second edit (another field) changes the changeKey again and keeps the subject.
    let body = json!({"location": {"displayName": "Room 9"}});
    let (status, again) = send(&http, Method::PATCH, &url, &token, Some(body)).await;
    assert_eq!(status, 200);
    assert_eq!(again["location"]["displayName"], "Room 9");
    assert_eq!(again["subject"], "New");
    assert_ne!(again["changeKey"], patched["changeKey"]);

    let (status, body) = send(&http, Method::DELETE, &url, &token, None).await;
    assert_eq!((status, body), (204, Value::Null), "204 without a body");
    let listed = listing(&http, &events_url(&sim, "g1"), &token).await;
    assert_eq!(ids(&listed), [other], "only the deleted event is gone");

    let (status, body) = send(&http, Method::DELETE, &url, &token, None).await;
    assert_eq!(status, 404);
    assert_graph_error(&body, "ErrorItemNotFound");
    let patch = Some(json!({"subject": "Ghost"}));
    let (status, body) = send(&http, Method::PATCH, &url, &token, patch).await;
    assert_eq!(status, 404);
    assert_graph_error(&body, "ErrorItemNotFound");
}

#[tokio::test]
async fn calendar_events_alias_behaves_like_events() {
    let (sim, http, token) = member_world().await;
    let first = sim.create_event("g1", "Made via the tenant");
    let (status, created) = send(
        &http,
        Method::POST,
        &alias_url(&sim, "g1"),
        &token,
        Some(json!({"subject": "Made via alias"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["subject"], "Made via alias");
    let id = created["id"].as_str().unwrap().to_owned();

    let plain = listing(&http, &events_url(&sim, "g1"), &token).await;
    let alias = listing(&http, &alias_url(&sim, "g1"), &token).await;
    assert_eq!(ids(&plain), [first.as_str(), id.as_str()]);
    assert_eq!(alias, plain, "both routes list the same events");

    // Paging options work the same way on the alias.
    let (status, page) = send(
        &http,
        Method::GET,
        &format!("{}?$top=1", alias_url(&sim, "g1")),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ids(page["value"].as_array().unwrap()), [first.as_str()]);
    assert!(
        page["@odata.nextLink"]
            .as_str()
            .unwrap()
            .contains("$skip=1")
    );

    let url = format!("{}/{id}", alias_url(&sim, "g1"));
    let patch = Some(json!({"subject": "Renamed via alias"}));
    let (status, patched) = send(&http, Method::PATCH, &url, &token, patch).await;
    assert_eq!(status, 200);
    assert_ne!(patched["changeKey"], created["changeKey"]);
    let plain = listing(&http, &events_url(&sim, "g1"), &token).await;
    assert_eq!(plain[1]["subject"], "Renamed via alias");

    let (status, _) = send(&http, Method::DELETE, &url, &token, None).await;
    assert_eq!(status, 204);
    assert_eq!(
        ids(&listing(&http, &events_url(&sim, "g1"), &token).await),
        [first]
    );
}

#[tokio::test]
async fn orderby_created_date_time_sorts_asc_and_desc() {
    let (sim, http, token) = member_world().await;
    let t0 = Utc::now() - Duration::hours(5);
    // Stored out of creation order, so a listing in storage order would fail both checks.
    let b = sim.create_event_at("g1", "b", t0 + Duration::hours(1), true);
    let c = sim.create_event_at("g1", "c", t0 + Duration::hours(2), true);
    let a = sim.create_event_at("g1", "a", t0, true);
    let asc = [a.clone(), b.clone(), c.clone()];
    let desc = [c, b, a];

    let query = |q: &'static str| {
        let url = events_url(&sim, "g1");
        let http = &http;
        let token = &token;
        async move {
            let resp = http.get(url).query(&[("$orderby", q)]).bearer_auth(token);
            let body: Value = resp.send().await.unwrap().json().await.unwrap();
            ids(body["value"].as_array().expect("a listing"))
        }
    };
    assert_eq!(query("createdDateTime asc").await, asc);
    assert_eq!(query("createdDateTime desc").await, desc);
    assert_eq!(
        query("createdDateTime").await,
        asc,
        "ascending without a direction"
    );
    assert_eq!(
        ids(&listing(&http, &events_url(&sim, "g1"), &token).await),
        asc
    );

    // Raw `$` and `%20`, as a hand-written URL has them; the timestamps themselves descend.
    let raw = format!("{}?$orderby=createdDateTime%20desc", events_url(&sim, "g1"));
    let listed = listing(&http, &raw, &token).await;
    assert_eq!(ids(&listed), desc);
    let times: Vec<_> = listed
        .iter()
        .map(|e| parse_ts(&e["createdDateTime"]))
        .collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");

    // nextLinks keep the order across pages.
    let mut url = format!(
        "{}?$top=2&$orderby=createdDateTime%20desc",
        events_url(&sim, "g1")
    );
    let mut paged = Vec::new();
    loop {
        let (status, page) = send(&http, Method::GET, &url, &token, None).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(ids(page["value"].as_array().unwrap()));
        match page["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains("orderby=createdDateTime%20desc"), "{next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(paged, desc);
}

#[tokio::test]
async fn unsupported_orderby_answers_400() {
    let (sim, http, token) = member_world().await;
    sim.create_event("g1", "x");
    for orderby in [
        "subject",
        "lastModifiedDateTime desc",
        "createdDateTime sideways",
    ] {
        let resp = http
            .get(events_url(&sim, "g1"))
            .query(&[("$orderby", orderby)])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{orderby}");
        let body: Value = resp.json().await.unwrap();
        assert_graph_error(&body, "ErrorInvalidUrlQuery");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(orderby), "{message}");
    }
}

#[tokio::test]
async fn delegated_token_of_a_non_member_gets_403_on_every_method() {
    let (sim, http, token) = member_world().await;
    sim.create_group("g2", "Group g2");
    assert!(sim.add_member("g2", "someone-else", MemberKind::User));
    let theirs = sim.create_event("g2", "Private");
    assert_eq!(
        listing(&http, &events_url(&sim, "g1"), &token).await.len(),
        0
    );

    let one = format!("{}/{theirs}", events_url(&sim, "g2"));
    let attempts = [
        (Method::GET, events_url(&sim, "g2"), None),
        (Method::GET, alias_url(&sim, "g2"), None),
        (
            Method::POST,
            events_url(&sim, "g2"),
            Some(json!({"subject": "Intruder"})),
        ),
        (
            Method::PATCH,
            one.clone(),
            Some(json!({"subject": "Hacked"})),
        ),
        (Method::DELETE, one, None),
    ];
    for (method, url, body) in attempts {
        let (status, body) = send(&http, method.clone(), &url, &token, body).await;
        assert_eq!(status, 403, "{method} {url}: {body}");
        assert_graph_error(&body, "ErrorAccessDenied");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not a member"),
            "{body}"
        );
    }

    // Joining the group opens it, and shows that the refused writes changed nothing.
    assert!(sim.add_member("g2", &sim.user_id(), MemberKind::User));
    let listed = listing(&http, &events_url(&sim, "g2"), &token).await;
    assert_eq!(ids(&listed), [theirs.as_str()]);
    assert_eq!(listed[0]["subject"], "Private");
    assert_eq!(listed[0]["changeKey"], "ck00000001");

    // Membership is checked on every request, with the same token.
    assert!(sim.remove_member("g2", &sim.user_id(), RemovedReason::Deleted));
    let (status, body) = send(&http, Method::GET, &events_url(&sim, "g2"), &token, None).await;
    assert_eq!(status, 403);
    assert_graph_error(&body, "ErrorAccessDenied");

    // Another signed-in user, not a member of g1, is refused there while the member is not.
    let stranger = sim.shared.new_access_token(Some("not-a-member".into()));
    let (status, body) = send(&http, Method::GET, &events_url(&sim, "g1"), &stranger, None).await;
    assert_eq!(status, 403);
    assert_graph_error(&body, "ErrorAccessDenied");
    assert_eq!(
        send(&http, Method::GET, &events_url(&sim, "g1"), &token, None)
            .await
            .0,
        200
    );

    // A group that does not exist is a 404, not a 403.
    let (status, body) = send(&http, Method::GET, &events_url(&sim, "nope"), &token, None).await;
    assert_eq!(status, 404);
    assert_graph_error(&body, "ErrorItemNotFound");
}

/// App-only GET is covered by `tests/it/calendar.rs`; this covers the write methods.
#[tokio::test]
async fn app_only_token_gets_403_on_event_writes() {
    let (sim, http, delegated) = member_world().await;
    let app = token(&sim, &http).await;
    let id = sim.create_event("g1", "Keep");
    let one = format!("{}/{id}", events_url(&sim, "g1"));
    let attempts = [
        (
            Method::POST,
            events_url(&sim, "g1"),
            Some(json!({"subject": "x"})),
        ),
        (Method::POST, alias_url(&sim, "g1"), None),
        (Method::PATCH, one.clone(), Some(json!({"subject": "y"}))),
        (Method::DELETE, one, None),
    ];
    for (method, url, body) in attempts {
        let (status, body) = send(&http, method.clone(), &url, &app, body).await;
        assert_eq!(status, 403, "{method} {url}");
        assert_graph_error(&body, "ErrorAccessDenied");
    }
    let listed = listing(&http, &events_url(&sim, "g1"), &delegated).await;
    assert_eq!(ids(&listed), [id]);
    assert_eq!(listed[0]["subject"], "Keep");
}

async fn post_batch(
    sim: &Sim,
    http: &reqwest::Client,
    token: &str,
    requests: Vec<Value>,
) -> (u16, Value) {
    let url = format!("{}/v1.0/$batch", sim.base_url());
    let body = Some(json!({ "requests": requests }));
    send(http, Method::POST, &url, token, body).await
}

/// Items of `$batch` calls that the simulator actually ran.
fn batched_items(sim: &Sim) -> usize {
    sim.requests().iter().filter(|r| r.batched).count()
}

fn get_item(id: &str) -> Value {
    json!({"id": id, "method": "GET", "url": "/groups/g1/events"})
}

#[tokio::test]
async fn batch_of_more_than_20_requests_is_a_400() {
    let (sim, http, token) = member_world().await;
    let items = |n: usize| (1..=n).map(|i| get_item(&i.to_string())).collect();

    let (status, body) = post_batch(&sim, &http, &token, items(21)).await;
    assert_eq!(status, 400, "{body}");
    assert_graph_error(&body, "BadRequest");
    assert!(body["error"]["message"].as_str().unwrap().contains("20"));
    assert_eq!(batched_items(&sim), 0, "no item of a refused batch runs");

    let (status, body) = post_batch(&sim, &http, &token, Vec::new()).await;
    assert_eq!(status, 400, "an empty batch too");
    assert_graph_error(&body, "BadRequest");

    let (status, body) = post_batch(&sim, &http, &token, items(20)).await;
    assert_eq!(status, 200, "20 is the limit, not over it");
    let responses = body["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 20);
    assert!(responses.iter().all(|r| r["status"] == 200));
    assert_eq!(batched_items(&sim), 20);
}

#[tokio::test]
async fn batch_with_a_duplicate_request_id_is_a_400() {
    let (sim, http, token) = member_world().await;
    let post = |id: &str| {
        json!({"id": id, "method": "POST", "url": "/groups/g1/events",
        "headers": {"Content-Type": "application/json"}, "body": {"subject": "dup"}})
    };
    for (a, b) in [("1", "1"), ("a", "A")] {
        let (status, body) = post_batch(&sim, &http, &token, vec![post(a), post(b)]).await;
        assert_eq!(status, 400, "{a}/{b}: {body}");
        assert_graph_error(&body, "BadRequest");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unique")
        );
    }
    assert_eq!(batched_items(&sim), 0);
    assert!(
        listing(&http, &events_url(&sim, "g1"), &token)
            .await
            .is_empty()
    );

    let (status, body) = post_batch(&sim, &http, &token, vec![post("a"), post("b")]).await;
    assert_eq!(status, 200, "distinct ids pass: {body}");
    let statuses: Vec<_> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 201]);
    assert_eq!(
        listing(&http, &events_url(&sim, "g1"), &token).await.len(),
        2
    );
}

#[tokio::test]
async fn batch_item_depending_on_a_failed_item_gets_424() {
    let (sim, http, token) = member_world().await;
    let requests = vec![
        json!({"id": "1", "method": "PATCH", "url": "/groups/g1/events/AAMkADmissing=",
            "headers": {"Content-Type": "application/json"}, "body": {"subject": "x"}}),
        json!({"id": "2", "method": "POST", "url": "/groups/g1/events", "dependsOn": ["1"],
            "headers": {"Content-Type": "application/json"}, "body": {"subject": "never"}}),
        json!({"id": "3", "method": "GET", "url": "/groups/g1/events", "dependsOn": ["2"]}),
        json!({"id": "4", "method": "POST", "url": "/groups/g1/events",
            "headers": {"Content-Type": "application/json"}, "body": {"subject": "kept"}}),
        json!({"id": "5", "method": "GET", "url": "/groups/g1/events", "dependsOn": ["4"]}),
    ];
    let (status, body) = post_batch(&sim, &http, &token, requests).await;
    assert_eq!(status, 200, "the batch itself succeeds: {body}");
    let responses = body["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 5);
    let by_id = |id: &str| {
        responses
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no response for {id}"))
    };
    assert_eq!(by_id("1")["status"], 404);
    assert_eq!(by_id("1")["body"]["error"]["code"], "ErrorItemNotFound");
    for id in ["2", "3"] {
        assert_eq!(by_id(id)["status"], 424, "{id} (3 only transitively)");
        assert_eq!(by_id(id)["body"]["error"]["code"], "FailedDependency");
    }
    assert_eq!(by_id("4")["status"], 201);
    assert_eq!(by_id("5")["status"], 200, "a succeeded dependency runs");
    let kept = by_id("4")["body"]["id"].clone();
    assert_eq!(by_id("5")["body"]["value"][0]["id"], kept, "after 4");

    // The failed dependents never ran: only items 1, 4 and 5 reached the calendar.
    let ran: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.batched)
        .map(|r| (r.method, r.status))
        .collect();
    let want = [("PATCH", 404), ("POST", 201), ("GET", 200)];
    let want: Vec<_> = want.iter().map(|(m, s)| (m.to_string(), *s)).collect();
    assert_eq!(ran, want);
    let listed = listing(&http, &events_url(&sim, "g1"), &token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], kept);
    assert_eq!(listed[0]["subject"], "kept");
}

#[tokio::test]
async fn depends_on_ids_are_case_insensitive_and_urls_may_omit_the_leading_slash() {
    let (sim, http, token) = member_world().await;
    let requests = vec![
        json!({"id": "a", "method": "PATCH", "url": "groups/g1/events/AAMkADmissing=",
            "headers": {"Content-Type": "application/json"}, "body": {"subject": "x"}}),
        json!({"id": "b", "method": "GET", "url": "groups/g1/events", "dependsOn": ["A"]}),
        json!({"id": "c", "method": "GET", "url": "groups/g1/events"}),
    ];
    let (status, body) = post_batch(&sim, &http, &token, requests).await;
    assert_eq!(status, 200, "{body}");
    let status_of = |id: &str| {
        body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["status"].clone())
            .unwrap()
    };
    assert_eq!(
        status_of("a"),
        404,
        "the URL without a leading slash reached the event route"
    );
    assert_eq!(status_of("b"), 424, "dependsOn \"A\" names item \"a\"");
    assert_eq!(status_of("c"), 200);
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_a_400_and_creates_nothing() {
    let (sim, http, token) = member_world().await;
    for body in ["", "not json", "[1, 2]"] {
        let resp = http
            .post(events_url(&sim, "g1"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "POST {body:?}");
    }
    assert!(
        listing(&http, &events_url(&sim, "g1"), &token)
            .await
            .is_empty()
    );
    let created: Value = http
        .post(events_url(&sim, "g1"))
        .bearer_auth(&token)
        .json(&json!({"subject": "real"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}/{}",
        events_url(&sim, "g1"),
        created["id"].as_str().unwrap()
    );
    let resp = http
        .patch(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "PATCH with a broken body");
    let listed = listing(&http, &events_url(&sim, "g1"), &token).await;
    assert_eq!(listed[0]["changeKey"], created["changeKey"], "unchanged");
}
