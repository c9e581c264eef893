//! End-to-end tests over real HTTP on 127.0.0.1, plus the shared helpers.

mod calendar_http;
mod delta;
mod faults;

use std::collections::BTreeSet;

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{MemberKind, Sim, SimConfig};

pub(super) const SCOPE: &str = "https://graph.microsoft.com/.default";

pub(super) async fn start(cfg: SimConfig) -> Sim {
    Sim::start(cfg).await.expect("simulator starts")
}

pub(super) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client builds")
}

pub(super) fn token_url(sim: &Sim, tenant: &str) -> String {
    format!("{}/{tenant}/oauth2/v2.0/token", sim.authority_url())
}

/// Requests a token with the simulator's own credentials.
pub(super) async fn token(sim: &Sim, http: &reqwest::Client) -> String {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", &sim.client_id()),
        ("client_secret", &sim.client_secret()),
        ("scope", SCOPE),
    ];
    let resp = http.post(token_url(sim, &sim.tenant_id())).form(&form);
    let body: Value = resp.send().await.unwrap().json().await.unwrap();
    body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

/// A GET with a bearer token: status, headers and raw body.
pub(super) async fn get(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> (u16, HeaderMap, String) {
    let resp = http.get(url).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// Follows nextLinks from `url` to the deltaLink: `(raw pages, deltaLink)`.
pub(super) async fn round(http: &reqwest::Client, url: &str, token: &str) -> (Vec<String>, String) {
    let mut pages = Vec::new();
    let mut url = url.to_owned();
    loop {
        let (status, _, body) = get(http, &url, token).await;
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        assert!(
            page["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("/v1.0/$metadata#groups")
        );
        pages.push(body);
        let next = page["@odata.nextLink"].as_str();
        let delta = page["@odata.deltaLink"].as_str();
        match (next, delta) {
            (Some(n), None) => url = n.to_owned(),
            (None, Some(d)) => return (pages, d.to_owned()),
            other => panic!("a page needs exactly one link, got {other:?}"),
        }
    }
}

/// Every `members@delta` entry of a round as `(group, member, removed reason)`.
pub(super) fn member_entries(pages: &[String]) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for page in pages {
        let page: Value = serde_json::from_str(page).unwrap();
        for group in page["value"].as_array().unwrap() {
            let gid = group["id"].as_str().unwrap();
            for e in group["members@delta"].as_array().into_iter().flatten() {
                let reason = e["@removed"]["reason"].as_str().map(str::to_owned);
                out.push((gid.to_owned(), e["id"].as_str().unwrap().to_owned(), reason));
            }
        }
    }
    out
}

/// Creates group `g` with members `u000..u{n}`.
pub(super) fn group_with_members(sim: &Sim, g: &str, n: usize) {
    sim.create_group(g, &format!("Group {g}"));
    for i in 0..n {
        assert!(sim.add_member(g, &format!("u{i:03}"), MemberKind::User));
    }
}

#[tokio::test]
async fn issues_bearer_token_via_form_and_basic_auth() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "22222222-2222-2222-2222-222222222222"),
        ("client_secret", "sim-secret"),
        ("scope", SCOPE),
    ];
    let resp = http.post(token_url(&sim, &sim.tenant_id())).form(&form);
    let resp = resp.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body["ext_expires_in"].is_u64());
    assert!(body["access_token"].as_str().unwrap().len() > 20);

    let form = [("grant_type", "client_credentials"), ("scope", SCOPE)];
    let resp = http.post(token_url(&sim, &sim.tenant_id())).form(&form);
    let resp = resp.basic_auth(sim.client_id(), Some(sim.client_secret()));
    let body: Value = resp.send().await.unwrap().json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let url = format!("{}/v1.0/groups/delta", sim.base_url());
    assert_eq!(get(&http, &url, token).await.0, 200);
}

#[tokio::test]
async fn token_errors_have_aad_shape_and_codes() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let (tenant, client, secret) = (sim.tenant_id(), sim.client_id(), sim.client_secret());
    let cases = [
        (
            "nope",
            "client_credentials",
            client.as_str(),
            secret.as_str(),
            SCOPE,
            400,
            "invalid_request",
            90002,
        ),
        (
            &tenant,
            "client_credentials",
            "unknown-app",
            &secret,
            SCOPE,
            400,
            "unauthorized_client",
            700016,
        ),
        (
            &tenant,
            "client_credentials",
            &client,
            "wrong",
            SCOPE,
            401,
            "invalid_client",
            7000215,
        ),
        (
            &tenant,
            "client_credentials",
            &client,
            &secret,
            "https://graph.microsoft.com/User.Read",
            400,
            "invalid_scope",
            70011,
        ),
        (
            &tenant,
            "password",
            &client,
            &secret,
            SCOPE,
            400,
            "unsupported_grant_type",
            70003,
        ),
    ];
    for (tenant, grant, id, secret, scope, status, error, code) in cases {
        let form = [
            ("grant_type", grant),
            ("client_id", id),
            ("client_secret", secret),
            ("scope", scope),
        ];
        let resp = http
            .post(token_url(&sim, tenant))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{error}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], error);
        assert_eq!(body["error_codes"], serde_json::json!([code]));
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{description}"
        );
        assert!(description.contains("\r\nTrace ID: "), "{description}");
        for field in ["timestamp", "trace_id", "correlation_id"] {
            assert!(body[field].is_string(), "{field} missing");
        }
        if code == 7000215 {
            assert!(description.contains("Invalid client secret provided."));
        }
    }
}

#[tokio::test]
async fn graph_answers_401_without_token_and_after_revocation() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let url = format!("{}/v1.0/groups/delta", sim.base_url());
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert_eq!(
        body["error"]["message"],
        "Access token has expired or is not yet valid."
    );
    assert!(body["error"]["innerError"]["request-id"].is_string());
    assert_eq!(get(&http, &url, "made-up").await.0, 401);

    let token = token(&sim, &http).await;
    assert_eq!(get(&http, &url, &token).await.0, 200);
    sim.revoke_access_tokens();
    assert_eq!(get(&http, &url, &token).await.0, 401);
    let fresh = self::token(&sim, &http).await;
    assert_eq!(get(&http, &url, &fresh).await.0, 200);
}

#[tokio::test]
async fn access_tokens_expire_after_ttl() {
    let cfg = SimConfig {
        token_ttl: std::time::Duration::from_millis(300),
        ..SimConfig::default()
    };
    let sim = start(cfg).await;
    let http = http();
    let token = token(&sim, &http).await;
    let url = format!("{}/v1.0/groups/delta", sim.base_url());
    assert_eq!(get(&http, &url, &token).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(get(&http, &url, &token).await.0, 401);
}

#[tokio::test]
async fn members_list_pages_with_top_and_rejects_bad_input() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    group_with_members(&sim, "g1", 250);
    assert!(sim.add_member("g1", "nested", MemberKind::Group));
    let mut url = format!("{}/v1.0/groups/g1/members?$top=100", sim.base_url());
    let (mut ids, mut pages, mut types) = (BTreeSet::new(), 0, BTreeSet::new());
    loop {
        let (status, _, body) = get(&http, &url, &token).await;
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        assert!(
            page["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("$metadata#directoryObjects")
        );
        let value = page["value"].as_array().unwrap();
        assert!(value.len() <= 100);
        for v in value {
            ids.insert(v["id"].as_str().unwrap().to_owned());
            types.insert(v["@odata.type"].as_str().unwrap().to_owned());
        }
        pages += 1;
        match page["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains("$skiptoken="));
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!((pages, ids.len()), (3, 251));
    assert_eq!(types.len(), 2, "users and a nested group");
    assert_eq!(ids, sim.members("g1").into_iter().collect());

    let too_big = format!("{}/v1.0/groups/g1/members?%24top=1000", sim.base_url());
    let (status, _, body) = get(&http, &too_big, &token).await;
    assert_eq!(status, 400, "{body}");
    let missing = format!("{}/v1.0/groups/nope/members", sim.base_url());
    let (status, _, body) = get(&http, &missing, &token).await;
    assert_eq!(status, 404);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "Request_ResourceNotFound");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Resource 'nope' does not exist")
    );
}

#[tokio::test]
async fn unknown_routes_answer_404_with_graph_error() {
    let sim = start(SimConfig::default()).await;
    let http = http();
    let token = token(&sim, &http).await;
    for path in ["/v1.0/users", "/nothing/here"] {
        let (status, _, body) = get(&http, &format!("{}{path}", sim.base_url()), &token).await;
        assert_eq!(status, 404, "{path}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body["error"]["code"].is_string());
    }
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sim = start(SimConfig::default()).await;
    let url = format!("{}/v1.0/groups/delta", sim.base_url());
    assert_eq!(http().get(&url).send().await.unwrap().status(), 401);
    sim.shutdown();
    sim.shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(http().get(&url).send().await.is_err());
}
