//! `GET /v1.0/groups/delta`: rounds, paging and the server-side token store.
//!
//! A round is computed in full when its first request arrives; every later page is stored
//! under an opaque skiptoken, so fetching a nextLink twice returns the same bytes. A
//! deltatoken stores only a log position plus the query it was issued for.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Map, Value, json};

use super::errors::{hex_token, json_response};
use super::query::{self, DeltaQuery};
use super::state::{Entry, Item, Rel};
use super::{Expiry, Shared, lock};

/// Something handed out under an opaque token, with the query it belongs to.
struct Saved<T> {
    value: T,
    query: DeltaQuery,
    expired: Option<Expiry>,
}

/// Issued deltatokens (log positions) and skiptokens (pre-rendered pages).
pub(super) struct Store {
    rng: StdRng,
    deltas: HashMap<String, Saved<usize>>,
    pages: HashMap<String, Saved<String>>,
}

impl Store {
    pub fn new(rng: StdRng) -> Self {
        Self {
            rng,
            deltas: HashMap::new(),
            pages: HashMap::new(),
        }
    }

    /// Marks every token issued so far as expired, keeping the first expiry's flavour.
    pub fn expire(&mut self, how: Expiry) {
        let deltas = self.deltas.values_mut().map(|s| &mut s.expired);
        let pages = self.pages.values_mut().map(|s| &mut s.expired);
        for expired in deltas.chain(pages) {
            expired.get_or_insert(how);
        }
    }
}

/// Where a round starts.
enum Start {
    Initial,
    From(usize),
}

/// The handler; see the module docs for the round and token model.
pub(super) async fn groups_delta(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let pairs = query::pairs(uri.query());
    let request = match DeltaQuery::parse(&pairs) {
        Ok(q) => q,
        Err(msg) => {
            let code = "Request_UnsupportedQuery";
            return shared.graph_error(StatusCode::BAD_REQUEST, code, &msg);
        }
    };
    let body = if let Some(token) = query::option(&pairs, "skiptoken") {
        let store = lock(&shared.store);
        match store.pages.get(token) {
            None => return unknown_token(&shared),
            Some(Saved {
                expired: Some(how),
                query,
                ..
            }) => return expired(&shared, *how, query),
            Some(saved) => saved.value.clone(),
        }
    } else {
        match query::option(&pairs, "deltatoken").filter(|t| !t.is_empty()) {
            None => round(&shared, request, Start::Initial),
            Some(t) if t.eq_ignore_ascii_case("latest") => latest(&shared, request),
            Some(token) => {
                let (pos, query) = {
                    let store = lock(&shared.store);
                    match store.deltas.get(token) {
                        None => return unknown_token(&shared),
                        Some(Saved {
                            expired: Some(how),
                            query,
                            ..
                        }) => return expired(&shared, *how, query),
                        Some(saved) => (saved.value, saved.query.clone()),
                    }
                };
                round(&shared, query, Start::From(pos))
            }
        }
    };
    json_response(StatusCode::OK, body)
}

fn unknown_token(shared: &Shared) -> Response {
    tracing::debug!("Simulated delta got an unknown token.");
    expired(shared, Expiry::SyncStateNotFound400, &empty_query())
}

fn empty_query() -> DeltaQuery {
    DeltaQuery::parse(&[]).unwrap_or_else(|_| unreachable!("an empty query is valid"))
}

fn expired(shared: &Shared, how: Expiry, query: &DeltaQuery) -> Response {
    match how {
        Expiry::SyncStateNotFound400 => shared.graph_error(
            StatusCode::BAD_REQUEST,
            "syncStateNotFound",
            "The sync state generation is not found. The delta token is expired and data must \
             be synchronized again.",
        ),
        Expiry::Gone410WithLocation => {
            let mut response = shared.graph_error(
                StatusCode::GONE,
                "resyncRequired",
                "The delta token is no longer valid, and the application must reset the sync state.",
            );
            let location = query.restart_url(&shared.base_url);
            if let Ok(v) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            response
        }
    }
}

/// `$deltatoken=latest`: no data, just a deltaLink at the current end of the log.
fn latest(shared: &Shared, query: DeltaQuery) -> String {
    let pos = lock(&shared.tenant).position();
    let mut store = lock(&shared.store);
    let token = hex_token(&mut store.rng);
    let body = page_body(shared, Vec::new(), &delta_link(shared, &token));
    store.deltas.insert(token, saved(pos, query));
    body
}

fn saved<T>(value: T, query: DeltaQuery) -> Saved<T> {
    Saved {
        value,
        query,
        expired: None,
    }
}

/// Computes a whole round, stores pages 2.. and the final deltatoken, returns page 1.
fn round(shared: &Shared, query: DeltaQuery, start: Start) -> String {
    let faults = lock(&shared.gate).faults.clone();
    let tenant = lock(&shared.tenant);
    let mut store = lock(&shared.store);
    let store = &mut *store;
    let sel = &query.selection;
    let items = match start {
        Start::Initial => tenant.snapshot(sel, faults.removed_in_initial),
        Start::From(pos) => tenant.changes_since(sel, pos, faults.replay_fraction, &mut store.rng),
    };
    let end = tenant.position();
    drop(tenant);
    let items = add_repeats(items, faults.repeat_fraction, &mut store.rng);
    let size = shared.cfg.page_size.max(1);
    let pages = paginate(&items, size, faults.empty_page_fraction, &mut store.rng);
    tracing::debug!(
        pages = pages.len(),
        groups = items.len(),
        "Simulated delta round computed."
    );
    let skips: Vec<String> = (1..pages.len())
        .map(|_| hex_token(&mut store.rng))
        .collect();
    let delta = hex_token(&mut store.rng);
    let mut first = String::new();
    for (i, objects) in pages.into_iter().enumerate() {
        let link = match skips.get(i) {
            Some(next) => next_link(shared, next),
            None => delta_link(shared, &delta),
        };
        let body = page_body(shared, objects, &link);
        match i.checked_sub(1).and_then(|j| skips.get(j)) {
            Some(token) => {
                store
                    .pages
                    .insert(token.clone(), saved(body, query.clone()));
            }
            None => first = body,
        }
    }
    store.deltas.insert(delta, saved(end, query));
    first
}

/// A page's trailing link: `("@odata.nextLink" | "@odata.deltaLink", url)`.
type Link = (&'static str, String);

fn next_link(shared: &Shared, token: &str) -> Link {
    let url = format!("{}/v1.0/groups/delta?$skiptoken={token}", shared.base_url);
    ("@odata.nextLink", url)
}

fn delta_link(shared: &Shared, token: &str) -> Link {
    let url = format!("{}/v1.0/groups/delta?$deltatoken={token}", shared.base_url);
    ("@odata.deltaLink", url)
}

fn page_body(shared: &Shared, objects: Vec<Value>, link: &Link) -> String {
    let mut page = Map::new();
    let context = format!("{}/v1.0/$metadata#groups", shared.base_url);
    page.insert("@odata.context".into(), context.into());
    page.insert(link.0.into(), link.1.clone().into());
    page.insert("value".into(), Value::Array(objects));
    Value::Object(page).to_string()
}

/// Appends a second group object carrying `fraction` of the round's entries again.
fn add_repeats(mut items: Vec<Item>, fraction: f64, rng: &mut impl Rng) -> Vec<Item> {
    let flat: Vec<(usize, usize)> = (items.iter().enumerate())
        .flat_map(|(i, item)| (0..item.entries.len()).map(move |j| (i, j)))
        .collect();
    let wanted = (fraction.clamp(0.0, 1.0) * flat.len() as f64).round() as usize;
    let mut chosen = rand::seq::index::sample(rng, flat.len(), wanted.min(flat.len())).into_vec();
    chosen.sort_unstable();
    let mut extra: Vec<(usize, Item)> = Vec::new();
    for (i, j) in chosen.into_iter().map(|k| flat[k]) {
        let entry = items[i].entries[j].clone();
        match extra.last_mut() {
            Some((src, item)) if *src == i => item.entries.push(entry),
            _ => {
                let mut item = items[i].clone();
                item.entries = vec![entry];
                extra.push((i, item));
            }
        }
    }
    items.extend(extra.into_iter().map(|(_, item)| item));
    items
}

/// Splits items into pages of at most `size` entries (an entry-less group object counts as
/// one), splitting a big group across consecutive pages, with optional empty pages.
fn paginate(items: &[Item], size: usize, empty: f64, rng: &mut impl Rng) -> Vec<Vec<Value>> {
    let mut pages: Vec<Vec<Value>> = Vec::new();
    let (mut page, mut used) = (Vec::new(), 0);
    for item in items {
        let mut rest: &[Entry] = &item.entries;
        loop {
            if used == size {
                pages.push(std::mem::take(&mut page));
                used = 0;
            }
            let take = rest.len().min(size - used);
            page.push(group_object(item, &rest[..take]));
            used += take.max(1);
            rest = &rest[take..];
            if rest.is_empty() {
                break;
            }
        }
    }
    if !page.is_empty() || pages.is_empty() {
        pages.push(page);
    }
    let mut out = Vec::with_capacity(pages.len());
    for page in pages {
        if empty > 0.0 && rng.random_bool(empty.clamp(0.0, 1.0)) {
            out.push(Vec::new());
        }
        out.push(page);
    }
    out
}

fn group_object(item: &Item, entries: &[Entry]) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), item.group.clone().into());
    if item.removed {
        obj.insert("@removed".into(), json!({ "reason": "changed" }));
        return Value::Object(obj);
    }
    if let Some(name) = &item.display_name {
        obj.insert("displayName".into(), name.clone().into());
    }
    for (rel, key) in [
        (Rel::Members, "members@delta"),
        (Rel::Owners, "owners@delta"),
    ] {
        let list: Vec<Value> = (entries.iter())
            .filter(|e| e.rel == rel)
            .map(entry_json)
            .collect();
        if !list.is_empty() {
            obj.insert(key.into(), Value::Array(list));
        }
    }
    Value::Object(obj)
}

fn entry_json(e: &Entry) -> Value {
    let mut obj = Map::new();
    obj.insert("@odata.type".into(), e.kind.odata_type().into());
    obj.insert("id".into(), e.id.clone().into());
    if let Some(reason) = e.removed {
        obj.insert("@removed".into(), json!({ "reason": reason.as_str() }));
    }
    Value::Object(obj)
}
