//! Every Microsoft documentation example that concerns a parser of ours must parse (shared/graph-examples).

use std::path::PathBuf;

use groupwatch::graph::DeltaPage;
use groupwatch::graph::delta::DirectoryObjectPage;
use groupwatch::graph::error::ErrorBody;
use oauth2::TokenResponse;
use oauth2::basic::{BasicErrorResponse, BasicTokenResponse};

/// `../shared/graph-examples` (beside the checkout, as CI lays it out), else the copy vendored in
/// `tests/it/fixtures/graph-examples` so a fresh clone elsewhere runs the same test.
fn examples_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/graph-examples");
    let dir = if shared.join("INDEX.md").exists() {
        shared
    } else {
        root.join("tests/it/fixtures/graph-examples")
    };
    assert!(
        dir.join("INDEX.md").exists(),
        "the documented Graph examples are missing at {}",
        dir.display()
    );
    dir
}

#[test]
fn vendored_examples_match_shared_ones() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/graph-examples");
    let vendored = root.join("tests/it/fixtures/graph-examples");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        // No shared/ beside this checkout: the vendored copy is all there is.
        assert!(vendored.join("INDEX.md").exists());
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        let copy = std::fs::read(vendored.join(name))
            .unwrap_or_else(|_| panic!("{name:?} is not vendored in {}", vendored.display()));
        assert_eq!(
            copy,
            std::fs::read(&p).unwrap(),
            "{name:?} differs from shared/"
        );
    }
}

fn files(prefixes: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            prefixes
                .iter()
                .any(|pre| name.starts_with(pre))
                .then(|| (name, std::fs::read_to_string(&p).unwrap()))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no example matches {prefixes:?}");
    out
}

#[test]
fn every_documented_delta_page_parses() {
    let mut links = 0;
    for (name, body) in files(&["delta-query-groups--", "group-delta--"]) {
        let page: DeltaPage = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        page.link().unwrap_or_else(|e| panic!("{name}: {e}"));
        links += 1;
        if name.contains("members-delta-removed") || name.contains("large-group-first-page") {
            let g = &page.value[0];
            assert_eq!(g.members.len(), 2, "{name}");
            let removed = &g.members[0];
            assert_eq!(
                removed.removed.as_ref().unwrap().reason.as_deref(),
                Some("deleted")
            );
            // Opaque ids: the docs' id here is not a valid GUID, and that is fine.
            assert_eq!(
                removed.id.as_deref(),
                Some("632f6bb2-3ec8-4c1f-9073-0027a8c6859")
            );
        }
        if name.contains("response-2-select-default") {
            assert!(page.value[0].id.is_none(), "documented example without id");
        }
    }
    assert!(links >= 10);
}

#[test]
fn documented_removed_annotation_parses() {
    for (name, body) in files(&["delta-query-overview--removed-annotation"]) {
        let link: groupwatch::graph::LinkDelta =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(link.removed.unwrap().reason.as_deref(), Some("changed"));
    }
}

#[test]
fn documented_error_bodies_parse_into_codes() {
    let mut seen = Vec::new();
    for (name, body) in files(&[
        "errors--",
        "throttling--",
        "delta-query-overview--not-implemented",
    ]) {
        let e = ErrorBody::parse(body.as_bytes());
        seen.push((name, e));
    }
    let code = |n: &str| seen.iter().find(|(f, _)| f.contains(n)).unwrap().1.clone();
    assert_eq!(code("example-error-response").code, "invalidRange");
    assert_eq!(code("too-many-requests").code, "TooManyRequests");
    assert_eq!(code("too-many-requests").inner_codes, vec!["429"]);
    assert_eq!(code("not-implemented").code, "NotImplemented");
    assert_eq!(code("odata-error-resource-shape").code, "string");
    assert_eq!(code("error-resource-shape").code, "");
}

#[test]
fn documented_directory_object_collections_parse() {
    for (name, body) in files(&[
        "group-list-members--",
        "group-list--",
        "user-list-memberof--",
        "user-list-ownedobjects--",
    ]) {
        let page: DirectoryObjectPage =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            !page.value.is_empty() || name.contains("example-4"),
            "{name}"
        );
    }
}

#[test]
fn documented_token_responses_parse() {
    for (name, body) in files(&[
        "oauth2-client-credentials--token-success",
        "oauth2-device-code--token-success",
        "oauth2-auth-code--token-success",
        "oauth2-auth-code--refresh-token-success",
    ]) {
        let t: BasicTokenResponse =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!t.access_token().secret().is_empty(), "{name}");
    }
    for (name, body) in files(&[
        "oauth2-client-credentials--token-error",
        "oauth2-auth-code--token-error",
        "oauth2-auth-code--refresh-token-error",
    ]) {
        let e: BasicErrorResponse =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(e.error().as_ref(), "invalid_scope", "{name}");
        assert!(e.error_description().unwrap().starts_with("AADSTS70011"));
    }
}

#[test]
fn documented_event_pages_and_events_parse() {
    use groupwatch::graph::calendar::{EventsPage, GraphEvent};
    for (name, body) in files(&["group-list-events--", "group-list-calendarview--"]) {
        let page: EventsPage =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ev = &page.value[0];
        assert!(ev.id.is_some() && ev.created().is_some(), "{name}");
        assert!(ev.body.as_ref().unwrap().content_type.is_some(), "{name}");
        assert!(ev.start.as_ref().unwrap().date_time.is_some(), "{name}");
        if name.contains("calendarview") {
            assert!(page.next_link.unwrap().contains("$skip=10"), "{name}");
        }
    }
    for (name, body) in files(&[
        "group-post-events--response",
        "group-update-event--response",
        "event--",
    ]) {
        let ev: GraphEvent = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(ev.id.is_some(), "{name}");
        if name.starts_with("event--") {
            assert!(
                ev.created().is_none(),
                "the resource shape has a placeholder timestamp"
            );
        } else {
            assert!(ev.change_key.is_some() && ev.created().is_some(), "{name}");
            assert!(
                ev.location.as_ref().unwrap().display_name.is_some(),
                "{name}"
            );
        }
    }
    for (name, body) in files(&["group-post-events--request", "group-update-event--request"]) {
        let ev: GraphEvent = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(ev.subject.is_some() || ev.location.is_some(), "{name}");
    }
}

#[test]
fn documented_batch_responses_parse_with_per_item_status() {
    use groupwatch::graph::batch::BatchResponse;
    for (name, body) in files(&["json-batching--response", "json-batching--older-response"]) {
        let r: BatchResponse =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!r.responses.is_empty(), "{name}");
        let statuses: Vec<u16> = r.responses.iter().map(|i| i.status).collect();
        let mut results = r.responses.into_iter().map(|i| (i.status, i.into_result()));
        assert!(
            results.all(|(s, res)| res.is_ok() == (200..300).contains(&s)),
            "{name}: {statuses:?}"
        );
    }
    // Requests are ours to build, but the documented ones must be the shape we send.
    for (name, body) in files(&[
        "json-batching--request",
        "json-batching--dependson",
        "json-batching--older-request",
    ]) {
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            v["requests"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["id"].is_string() && r["url"].is_string()),
            "{name}"
        );
    }
}

#[test]
fn documented_device_code_token_response_carries_a_refresh_token() {
    for (name, body) in files(&["oauth2-device-code--token-success"]) {
        let t: BasicTokenResponse =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(t.refresh_token().is_some(), "{name}");
    }
}
