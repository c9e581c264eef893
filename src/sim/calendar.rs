//! Group calendars: `GET/POST /v1.0/groups/{id}/events`, `PATCH/DELETE …/events/{eid}` (also under
//! `/calendar/events`). Delegated tokens of a member only (app-only → 403 `ErrorAccessDenied`), `$top`
//! (default 10), `$skip` nextLinks, `$orderby=createdDateTime [asc|desc]`, `$filter=createdDateTime ge …`.
//! Events can be created with a past createdDateTime and hidden until revealed, to model late surfacing.
//!
//! `start`/`end` come in the zone `Prefer: outlook.timezone="…"` asks for (also as a `$batch` item header);
//! without it, in the group mailbox's own zone, "Pacific Standard Time" (a fixed UTC−8 here, no DST), so a
//! client that forgets the header gets visibly non-UTC times.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::errors::{hex_token, json_response};
use super::state::Rel;
use super::{Shared, lock, query};

/// One simulated event.
#[derive(Clone, Debug)]
pub(super) struct SimEvent {
    pub id: String,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub version: u64,
    pub subject: String,
    pub location: String,
    pub visible: bool,
}

/// A zone `start`/`end` can be expressed in: its Windows name and its (standard-time) offset from UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Zone {
    name: &'static str,
    offset_hours: i64,
}

/// The group mailboxes' own zone: what Graph uses without `Prefer: outlook.timezone`.
const MAILBOX_ZONE: Zone = Zone {
    name: "Pacific Standard Time",
    offset_hours: -8,
};

/// Zones the simulator knows by name.
const ZONES: &[Zone] = &[
    Zone {
        name: "UTC",
        offset_hours: 0,
    },
    MAILBOX_ZONE,
    Zone {
        name: "Eastern Standard Time",
        offset_hours: -5,
    },
    Zone {
        name: "W. Europe Standard Time",
        offset_hours: 1,
    },
];

/// The zone a request's `Prefer: outlook.timezone="…"` asks for (several preferences may share one header,
/// comma-separated); the mailbox zone when absent or unknown.
pub(super) fn zone(headers: &HeaderMap) -> Zone {
    headers
        .get_all("Prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix("outlook.timezone="))
        .map(|z| z.trim().trim_matches('"'))
        .find_map(|z| ZONES.iter().find(|k| k.name.eq_ignore_ascii_case(z)))
        .copied()
        .unwrap_or(MAILBOX_ZONE)
}

impl SimEvent {
    fn json(&self, base: &str, group: &str, zone: Zone) -> Value {
        let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
        let start = self.created + chrono::Duration::days(1);
        let local = |t: DateTime<Utc>| {
            let t = t + chrono::Duration::hours(zone.offset_hours);
            format!("{}.0000000", t.format("%Y-%m-%dT%H:%M:%S"))
        };
        json!({
            "@odata.etag": format!("W/\"{}{}\"", self.id, self.version),
            "id": self.id,
            "createdDateTime": ts(self.created),
            "lastModifiedDateTime": ts(self.modified),
            "changeKey": format!("ck{:08}", self.version),
            "reminderMinutesBeforeStart": 15,
            "isReminderOn": true,
            "subject": self.subject,
            "importance": "normal",
            "isAllDay": false,
            "responseRequested": true,
            "showAs": "busy",
            "type": "singleInstance",
            "webLink": format!("{base}/owa/?itemid={}&exvsurl=1&path=/calendar/item", self.id),
            "body": {"contentType": "html", "content": format!("<html><body>{}</body></html>", self.subject)},
            "start": {"dateTime": local(start), "timeZone": zone.name},
            "end": {"dateTime": local(start + chrono::Duration::hours(1)), "timeZone": zone.name},
            "location": {"displayName": self.location},
            "organizer": {"emailAddress": {"name": format!("Group {group}"), "address": format!("{group}@sim.example")}},
        })
    }
}

/// Every group's events plus scripted listing faults.
#[derive(Default)]
pub(super) struct Calendars {
    pub events: BTreeMap<String, Vec<SimEvent>>,
    /// Next listings answered 429 with this `Retry-After`.
    pub throttle: VecDeque<String>,
    /// Answer `$filter` on createdDateTime with 400, as an unverified Graph might.
    pub reject_filter: bool,
    /// (group, event id) deleted just before the next page request (`$skip` > 0) of that group's listing: the
    /// later pages shift up by one, as Graph's do when an event is deleted while a client pages.
    pub delete_before_page: Option<(String, String)>,
    /// Groups whose listing nextLinks point at another host.
    pub foreign_links: HashSet<String>,
}

impl Calendars {
    pub fn create(
        &mut self,
        rng_id: String,
        group: &str,
        subject: &str,
        created: DateTime<Utc>,
        visible: bool,
    ) -> String {
        let id = format!("AAMkAD{rng_id}=");
        self.events
            .entry(group.to_owned())
            .or_default()
            .push(SimEvent {
                id: id.clone(),
                created,
                modified: created,
                version: 1,
                subject: subject.to_owned(),
                location: "Room 1".into(),
                visible,
            });
        id
    }

    pub fn find(&mut self, group: &str, id: &str) -> Option<&mut SimEvent> {
        self.events.get_mut(group)?.iter_mut().find(|e| e.id == id)
    }

    pub fn delete(&mut self, group: &str, id: &str) -> bool {
        let Some(list) = self.events.get_mut(group) else {
            return false;
        };
        let before = list.len();
        list.retain(|e| e.id != id);
        list.len() != before
    }
}

/// Refuses app-only callers and non-members, as Graph does for group calendars.
fn check_caller(shared: &Shared, headers: &HeaderMap, group: &str) -> Option<Response> {
    let denied =
        |msg: &str| Some(shared.graph_error(StatusCode::FORBIDDEN, "ErrorAccessDenied", msg));
    let user = super::auth::bearer(headers).and_then(|t| lock(&shared.auth).user(t));
    let Some(Some(user)) = user else {
        return denied("Access is denied. Check credentials and try again.");
    };
    let tenant = lock(&shared.tenant);
    if !tenant.is_alive(group) {
        let msg = format!("The group '{group}' does not exist.");
        return Some(shared.graph_error(StatusCode::NOT_FOUND, "ErrorItemNotFound", &msg));
    }
    let members = tenant.current_links(group, Rel::Members);
    if !members.iter().any(|(m, _)| *m == user) {
        return denied("Access is denied. The signed-in user is not a member of the group.");
    }
    None
}

/// `GET` (list) and `POST` (create) on a group's events.
pub(super) async fn events(
    State(shared): State<Arc<Shared>>,
    Path(group): Path<String>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: String,
) -> Response {
    if let Some(r) = check_caller(&shared, &headers, &group) {
        return r;
    }
    if method == Method::POST {
        let Some(v) = serde_json::from_str::<Value>(&body)
            .ok()
            .filter(Value::is_object)
        else {
            return shared.graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidRequest",
                "The request body must be a JSON event object.",
            );
        };
        let subject = v["subject"].as_str().unwrap_or("(no subject)").to_owned();
        let rng = hex_token(&mut *lock(&shared.ids));
        let mut cal = lock(&shared.calendar);
        let id = cal.create(rng, &group, &subject, Utc::now(), true);
        let ev = cal
            .find(&group, &id)
            .map(|e| e.json(&shared.base_url, &group, zone(&headers)));
        return json_response(StatusCode::CREATED, ev.unwrap_or_default().to_string());
    }
    list(&shared, &group, &headers, uri.query())
}

fn list(shared: &Shared, group: &str, headers: &HeaderMap, raw: Option<&str>) -> Response {
    let pairs = query::pairs(raw);
    if let Some(after) = lock(&shared.calendar).throttle.pop_front() {
        let mut r = shared.graph_error(
            StatusCode::TOO_MANY_REQUESTS,
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
        );
        if let Ok(v) = HeaderValue::from_str(&after) {
            r.headers_mut().insert("Retry-After", v);
        }
        return r;
    }
    let num = |name: &str, default: usize| -> Result<usize, String> {
        match query::option(&pairs, name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("Invalid ${name}: {v}")),
        }
    };
    let (top, skip) = match (num("top", 10), num("skip", 0)) {
        (Ok(t), Ok(s)) => (t.clamp(1, 1000), s),
        (Err(m), _) | (_, Err(m)) => {
            return shared.graph_error(StatusCode::BAD_REQUEST, "ErrorInvalidUrlQuery", &m);
        }
    };
    let floor = match query::option(&pairs, "filter") {
        None => None,
        Some(f) => {
            let parsed = f
                .strip_prefix("createdDateTime ge ")
                .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok());
            match parsed {
                Some(t) if !lock(&shared.calendar).reject_filter => Some(t.with_timezone(&Utc)),
                _ => {
                    let msg = format!("The query filter '{f}' is not supported.");
                    return shared.graph_error(
                        StatusCode::BAD_REQUEST,
                        "ErrorInvalidUrlQueryFilter",
                        &msg,
                    );
                }
            }
        }
    };
    let desc = match query::option(&pairs, "orderby").map(str::trim) {
        None | Some("createdDateTime") | Some("createdDateTime asc") => false,
        Some("createdDateTime desc") => true,
        Some(o) => {
            let msg = format!("The $orderby '{o}' is not supported.");
            return shared.graph_error(StatusCode::BAD_REQUEST, "ErrorInvalidUrlQuery", &msg);
        }
    };
    let repeat = lock(&shared.gate).faults.repeat_fraction > 0.0;
    let mut cal = lock(&shared.calendar);
    if skip > 0
        && let Some((g, id)) = cal.delete_before_page.take_if(|(g, _)| g == group)
    {
        cal.delete(&g, &id);
    }
    let host = if cal.foreign_links.contains(group) {
        "https://graph.attacker.example"
    } else {
        shared.base_url.as_str()
    };
    let mut all: Vec<SimEvent> = cal
        .events
        .get(group)
        .map(|v| {
            v.iter()
                .filter(|e| e.visible && floor.is_none_or(|f| e.created >= f))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    drop(cal);
    all.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    if desc {
        all.reverse();
    }
    // With the repeat fault, each later page starts with the previous page's last event, as `$skip` paging
    // does when an event is created between two page requests.
    let from = if repeat && skip > 0 { skip - 1 } else { skip };
    let end = all.len().min(skip + top);
    let zone = zone(headers);
    let value: Vec<Value> = all[from.min(end)..end]
        .iter()
        .map(|e| e.json(&shared.base_url, group, zone))
        .collect();
    let mut page = serde_json::Map::new();
    page.insert(
        "@odata.context".into(),
        format!(
            "{}/v1.0/$metadata#groups('{group}')/events",
            shared.base_url
        )
        .into(),
    );
    page.insert("value".into(), Value::Array(value));
    if end < all.len() {
        let kept: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| !k.trim_start_matches('$').eq_ignore_ascii_case("skip"))
            .map(|(k, v)| format!("{k}={}", query::encode(v)))
            .collect();
        let link = format!(
            "{host}/v1.0/groups/{group}/events?{}&$skip={end}",
            kept.join("&")
        );
        page.insert("@odata.nextLink".into(), link.into());
    }
    let mut r = json_response(StatusCode::OK, Value::Object(page).to_string());
    if let Some(p) = headers.get("Prefer") {
        r.headers_mut().insert("Preference-Applied", p.clone());
    }
    r
}

/// `PATCH` (subject/location; bumps changeKey) and `DELETE` (204) on one event.
pub(super) async fn event(
    State(shared): State<Arc<Shared>>,
    Path((group, id)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(r) = check_caller(&shared, &headers, &group) {
        return r;
    }
    let mut cal = lock(&shared.calendar);
    if method == Method::DELETE {
        return if cal.delete(&group, &id) {
            StatusCode::NO_CONTENT.into_response()
        } else {
            drop(cal);
            shared.graph_error(
                StatusCode::NOT_FOUND,
                "ErrorItemNotFound",
                "The specified object was not found in the store.",
            )
        };
    }
    let Some(v) = serde_json::from_str::<Value>(&body)
        .ok()
        .filter(Value::is_object)
    else {
        drop(cal);
        return shared.graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "The request body must be a JSON object with the fields to change.",
        );
    };
    let Some(ev) = cal.find(&group, &id) else {
        drop(cal);
        return shared.graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    if let Some(s) = v["subject"].as_str() {
        ev.subject = s.to_owned();
    }
    if let Some(l) = v["location"]["displayName"].as_str() {
        ev.location = l.to_owned();
    }
    ev.version += 1;
    ev.modified = Utc::now();
    let body = ev
        .json(&shared.base_url, &group, zone(&headers))
        .to_string();
    json_response(StatusCode::OK, body)
}

/// Calendar controls of the simulated tenant, for tests and the demo.
impl super::Sim {
    /// The account device-code sign-ins sign in; add it as a member to let it read a group's calendar.
    pub fn user_id(&self) -> String {
        self.shared.cfg.user_id.clone()
    }

    /// Creates a visible event created now; returns its id.
    pub fn create_event(&self, group: &str, subject: &str) -> String {
        self.create_event_at(group, subject, chrono::Utc::now(), true)
    }

    /// Creates an event with the given createdDateTime; hidden ones surface with [`Sim::reveal_event`].
    pub fn create_event_at(
        &self,
        group: &str,
        subject: &str,
        created: chrono::DateTime<chrono::Utc>,
        visible: bool,
    ) -> String {
        let rng = hex_token(&mut *lock(&self.shared.ids));
        lock(&self.shared.calendar).create(rng, group, subject, created, visible)
    }

    /// Makes a hidden event visible (late surfacing: its createdDateTime stays in the past).
    pub fn reveal_event(&self, group: &str, id: &str) {
        if let Some(e) = lock(&self.shared.calendar).find(group, id) {
            e.visible = true;
        }
    }

    /// Changes an event's subject (new changeKey).
    pub fn update_event(&self, group: &str, id: &str, subject: &str) {
        if let Some(e) = lock(&self.shared.calendar).find(group, id) {
            e.subject = subject.to_owned();
            e.version += 1;
            e.modified = chrono::Utc::now();
        }
    }

    /// Deletes an event.
    pub fn delete_event(&self, group: &str, id: &str) -> bool {
        lock(&self.shared.calendar).delete(group, id)
    }

    /// The next `n` event listings answer 429 with `Retry-After: retry_after`.
    pub fn throttle_next_event_listings(&self, n: usize, retry_after: &str) {
        let mut cal = lock(&self.shared.calendar);
        cal.throttle
            .extend(std::iter::repeat_n(retry_after.to_owned(), n));
    }

    /// Answer `$filter=createdDateTime ge …` with 400 (the filter is undocumented on group events).
    pub fn reject_created_filter(&self, reject: bool) {
        lock(&self.shared.calendar).reject_filter = reject;
    }

    /// Deletes event `id` of `group` right before the next page request (`$skip` > 0) of a listing of that
    /// group, so the pages after it shift up by one and the event just behind the page boundary is skipped.
    pub fn delete_event_before_next_page(&self, group: &str, id: &str) {
        lock(&self.shared.calendar).delete_before_page = Some((group.to_owned(), id.to_owned()));
    }

    /// Makes `group`'s listing nextLinks point at a foreign host (`https://graph.attacker.example`).
    pub fn foreign_next_links(&self, group: &str) {
        lock(&self.shared.calendar)
            .foreign_links
            .insert(group.to_owned());
    }

    /// The most calendar requests ever answered at once (since the last [`Sim::reset_requests`]).
    pub fn max_calendar_in_flight(&self) -> usize {
        self.shared
            .cal_max_inflight
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}
