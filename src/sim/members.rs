//! `GET /v1.0/groups/{id}/members` and `/owners`: plain `$top`/`$skiptoken` paging.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::{Map, Value};

use super::errors::{hex_token, json_response};
use super::state::Rel;
use super::{Shared, lock, query};

/// Graph's default and maximum `$top` for directory collections.
const DEFAULT_TOP: usize = 100;
const MAX_TOP: usize = 999;

/// Where the next page of a list starts; kept after use so a nextLink can be fetched again.
#[derive(Clone)]
pub(super) struct Cursor {
    group: String,
    rel: Rel,
    offset: usize,
    top: usize,
}

/// Direct members of a group.
pub(super) async fn list_members(
    State(shared): State<Arc<Shared>>,
    Path(group): Path<String>,
    uri: Uri,
) -> Response {
    list(&shared, group, Rel::Members, uri.query())
}

/// Owners of a group.
pub(super) async fn list_owners(
    State(shared): State<Arc<Shared>>,
    Path(group): Path<String>,
    uri: Uri,
) -> Response {
    list(&shared, group, Rel::Owners, uri.query())
}

fn list(shared: &Shared, group: String, rel: Rel, raw: Option<&str>) -> Response {
    let pairs = query::pairs(raw);
    let cursor = match query::option(&pairs, "skiptoken") {
        Some(token) => match lock(&shared.cursors).get(token).cloned() {
            Some(c) if c.group == group && c.rel == rel => c,
            _ => {
                let message = "The specified page token value has expired and can no longer be \
                               included in your request.";
                return shared.graph_error(
                    StatusCode::BAD_REQUEST,
                    "Directory_ExpiredPageToken",
                    message,
                );
            }
        },
        None => {
            let top = match query::option(&pairs, "top") {
                None => DEFAULT_TOP,
                Some(t) => match t.trim().parse::<usize>() {
                    Ok(n) if (1..=MAX_TOP).contains(&n) => n,
                    _ => {
                        let message = format!(
                            "Invalid page size specified: '{t}'. Must be between 1 and \
                             {MAX_TOP} inclusive."
                        );
                        let code = "Request_UnsupportedQuery";
                        return shared.graph_error(StatusCode::BAD_REQUEST, code, &message);
                    }
                },
            };
            Cursor {
                group,
                rel,
                offset: 0,
                top,
            }
        }
    };
    let links = {
        let tenant = lock(&shared.tenant);
        if !tenant.is_alive(&cursor.group) {
            let message = format!(
                "Resource '{}' does not exist or one of its queried reference-property objects \
                 are not present.",
                cursor.group
            );
            let code = "Request_ResourceNotFound";
            return shared.graph_error(StatusCode::NOT_FOUND, code, &message);
        }
        tenant.current_links(&cursor.group, cursor.rel)
    };
    let end = links.len().min(cursor.offset + cursor.top);
    let value: Vec<Value> = links[cursor.offset.min(end)..end]
        .iter()
        .map(|(id, kind)| {
            let mut obj = Map::new();
            obj.insert("@odata.type".into(), kind.odata_type().into());
            obj.insert("id".into(), id.clone().into());
            Value::Object(obj)
        })
        .collect();
    let mut page = Map::new();
    let context = format!("{}/v1.0/$metadata#directoryObjects", shared.base_url);
    page.insert("@odata.context".into(), context.into());
    if end < links.len() {
        let token = hex_token(&mut *lock(&shared.ids));
        let segment = match cursor.rel {
            Rel::Members => "members",
            Rel::Owners => "owners",
        };
        let link = format!(
            "{}/v1.0/groups/{}/{segment}?$top={}&$skiptoken={token}",
            shared.base_url, cursor.group, cursor.top
        );
        page.insert("@odata.nextLink".into(), link.into());
        let next = Cursor {
            offset: end,
            ..cursor
        };
        lock(&shared.cursors).insert(token, next);
    }
    page.insert("value".into(), Value::Array(value));
    json_response(StatusCode::OK, Value::Object(page).to_string())
}
