//! Group calendars (GRAPH.md §3): typed events and the per-group listing of `/groups/{id}/events`, newest
//! first, from a createdDateTime floor, following every `$skip` nextLink — one HTTP request per page, or up
//! to 20 pages per JSON `$batch` call.
//!
//! `$filter=createdDateTime ge …` on group events is not documented (GRAPH.md §3.2 ⚠). It is tried first;
//! on a 400 that concerns the filter (code `ErrorInvalidUrlQueryFilter`, or a message naming the filter or
//! createdDateTime) the client falls back for good to `$orderby=createdDateTime desc` and stops paging at the
//! floor. Any other 400 fails that group's listing for this tick and leaves the filter on.
//!
//! Requests count against a per-mailbox budget (Outlook: 10,000 requests per 10 minutes per app and
//! mailbox), shared by the connections of one app: every request, retries and `$batch` resends included.
//! One group's bad nextLink (another host, or outside `/v1.0`) fails that group only.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::batch::{self, BatchGet};
use super::client::{Call, GraphClient, MailboxLimiter};
use super::error::{Error, Result};

/// Times in UTC, whatever the group's or organizer's zone (GRAPH.md implication 14).
const PREFER_UTC: (&str, &str) = ("Prefer", "outlook.timezone=\"UTC\"");

/// `body`: `{contentType, content}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemBody {
    /// `html` or `text`.
    #[serde(
        rename = "contentType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub content_type: Option<String>,
    /// The body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `start` / `end`: `{dateTime, timeZone}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateTimeTimeZone {
    /// Local date-time without offset, e.g. `2019-06-16T12:00:00.0000000`.
    #[serde(rename = "dateTime", default, skip_serializing_if = "Option::is_none")]
    pub date_time: Option<String>,
    /// Its zone (UTC with our `Prefer` header).
    #[serde(rename = "timeZone", default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// `location` (only `displayName` is an output of the connector's trigger).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Shown name of the place.
    #[serde(
        rename = "displayName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<String>,
}

/// A group event with every field the "When there is a new event" trigger outputs plus what dedup needs.
/// Every field is optional: documented examples (and the resource shape) omit or placeholder many.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphEvent {
    /// Outlook item id (opaque).
    #[serde(default)]
    pub id: Option<String>,
    /// Creation time (UTC ISO 8601): the polling watermark.
    #[serde(default)]
    pub created_date_time: Option<String>,
    /// Last modification time.
    #[serde(default)]
    pub last_modified_date_time: Option<String>,
    /// Changes on every edit: the update detector.
    #[serde(default)]
    pub change_key: Option<String>,
    /// Minutes before start (Outlook has no reminders for group events, but Graph returns the field).
    #[serde(default)]
    pub reminder_minutes_before_start: Option<i64>,
    /// Reminder flag.
    #[serde(default)]
    pub is_reminder_on: Option<bool>,
    /// Title.
    #[serde(default)]
    pub subject: Option<String>,
    /// `low` | `normal` | `high`.
    #[serde(default)]
    pub importance: Option<String>,
    /// All-day event.
    #[serde(default)]
    pub is_all_day: Option<bool>,
    /// Organizer asks for responses.
    #[serde(default)]
    pub response_requested: Option<bool>,
    /// `free` | `tentative` | `busy` | `oof` | `workingElsewhere` | `unknown`.
    #[serde(default)]
    pub show_as: Option<String>,
    /// Body.
    #[serde(default)]
    pub body: Option<ItemBody>,
    /// Start.
    #[serde(default)]
    pub start: Option<DateTimeTimeZone>,
    /// End.
    #[serde(default)]
    pub end: Option<DateTimeTimeZone>,
    /// Location.
    #[serde(default)]
    pub location: Option<Location>,
    /// Outlook web link.
    #[serde(default)]
    pub web_link: Option<String>,
    /// `{emailAddress: {name, address}}`, kept as Graph sends it.
    #[serde(default)]
    pub organizer: Option<serde_json::Value>,
}

impl GraphEvent {
    /// `createdDateTime` parsed, if it is a timestamp (the resource shape has a placeholder there).
    pub fn created(&self) -> Option<DateTime<Utc>> {
        let raw = self.created_date_time.as_deref()?;
        DateTime::parse_from_rfc3339(raw)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// One page of `/groups/{id}/events`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventsPage {
    /// The next page (`$skip=N`), followed as-is.
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
    /// Events on this page.
    #[serde(default)]
    pub value: Vec<GraphEvent>,
}

/// What to list for one group.
#[derive(Debug, Clone)]
pub struct ListRequest {
    /// Group id.
    pub group: String,
    /// Only events created at or after this (None: all).
    pub floor: Option<DateTime<Utc>>,
    /// `$top`.
    pub top: u32,
}

/// A complete listing of one group's window.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Events, possibly with repeats (`$skip` pages shift while events are created).
    pub events: Vec<GraphEvent>,
    /// Pages fetched.
    pub pages: usize,
}

/// Calendar access of one connection: the delegated client, a per-mailbox request budget, batching.
pub struct CalendarClient {
    graph: Arc<GraphClient>,
    mailbox: Arc<MailboxLimiter>,
    use_batch: bool,
    filter_supported: AtomicBool,
    max_pages: u32,
    max_retries: usize,
}

struct Cursor {
    req: ListRequest,
    url: String,
    filtered: bool,
    listing: Listing,
}

/// What a page did to a group's listing.
enum Step {
    More(Cursor),
    Done(String, Result<Listing>),
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A per-mailbox budget of `per_10min` requests per 10 minutes (Outlook: 10,000 per app and mailbox), keyed by
/// group id; share one between the connections of the same app.
pub fn mailbox_budget(per_10min: u32) -> MailboxLimiter {
    let n = NonZeroU32::new(per_10min.max(1)).expect("max(1) is non-zero");
    let quota = Quota::with_period(Duration::from_secs(600) / n.get())
        .expect("a non-zero period")
        .allow_burst(n);
    RateLimiter::keyed(quota)
}

/// True for a 400 about our `$filter` (the query Graph may not support on group events), not for other
/// rejections, which must not switch the filter off for good.
fn refuses_filter(e: &Error) -> bool {
    let Error::BadRequest {
        status: 400,
        code,
        message,
    } = e
    else {
        return false;
    };
    let message = message.to_ascii_lowercase();
    code.eq_ignore_ascii_case("ErrorInvalidUrlQueryFilter")
        || message.contains("filter")
        || message.contains("createddatetime")
}

impl CalendarClient {
    /// `mailbox` is the per-mailbox budget (see [`mailbox_budget`]).
    pub fn new(
        graph: Arc<GraphClient>,
        use_batch: bool,
        mailbox: Arc<MailboxLimiter>,
        max_pages: u32,
        max_retries: usize,
    ) -> Self {
        Self {
            graph,
            mailbox,
            use_batch,
            filter_supported: AtomicBool::new(true),
            max_pages,
            max_retries,
        }
    }

    fn url(&self, req: &ListRequest) -> (String, bool) {
        let root = self.graph.v1_root();
        let base = format!(
            "{root}/groups/{}/events?$orderby=createdDateTime%20desc&$top={}",
            req.group, req.top
        );
        match req.floor {
            Some(f) if self.filter_supported.load(Ordering::Relaxed) => (
                format!("{base}&$filter=createdDateTime%20ge%20{}", instant(f)),
                true,
            ),
            _ => (base, false),
        }
    }

    /// Lists every group's window completely. One result per group; a failing group does not fail others.
    /// Without `$batch` each group pages on its own, so one mailbox's throttling or slowness never holds
    /// another's; with `$batch` the groups page in rounds, one `$batch` call per round of ≤ 20.
    ///
    /// # Errors
    /// Only a failing `$batch` call as a whole (then nothing of this round is returned).
    pub async fn list(&self, reqs: Vec<ListRequest>) -> Result<HashMap<String, Result<Listing>>> {
        let mut active: Vec<Cursor> = reqs
            .into_iter()
            .map(|req| {
                let (url, filtered) = self.url(&req);
                Cursor {
                    req,
                    url,
                    filtered,
                    listing: Listing::default(),
                }
            })
            .collect();
        if !self.use_batch {
            let alone = active.into_iter().map(|c| self.list_alone(c));
            return Ok(futures::future::join_all(alone).await.into_iter().collect());
        }
        let mut done = HashMap::new();
        while !active.is_empty() {
            let pages = self.fetch_batched(&active).await?;
            let mut next = Vec::new();
            for (c, page) in active.into_iter().zip(pages) {
                match self.advance(c, page) {
                    Step::More(c) => next.push(c),
                    Step::Done(group, listing) => {
                        done.insert(group, listing);
                    }
                }
            }
            active = next;
        }
        Ok(done)
    }

    /// One group's whole listing, page after page, with its own requests.
    async fn list_alone(&self, mut c: Cursor) -> (String, Result<Listing>) {
        let headers = [PREFER_UTC];
        loop {
            let keys = [c.req.group.as_str()];
            let call = Call {
                headers: &headers,
                mailbox: Some((&self.mailbox, &keys)),
                ..Call::get(&c.url)
            };
            let page = self.graph.call_json::<EventsPage>(call).await;
            match self.advance(c, page) {
                Step::More(next) => c = next,
                Step::Done(group, listing) => return (group, listing),
            }
        }
    }

    /// Takes one page (or its failure) into a group's listing: more pages to fetch, or the listing done.
    fn advance(&self, mut c: Cursor, page: Result<EventsPage>) -> Step {
        match page {
            Ok(page) => {
                c.listing.pages += 1;
                let oldest = page.value.iter().filter_map(GraphEvent::created).min();
                c.listing.events.extend(page.value);
                // Newest first: once a page reaches below the floor, later pages hold only older events.
                let below = matches!((oldest, c.req.floor), (Some(o), Some(f)) if o < f);
                match page.next_link {
                    Some(_) if !below && c.listing.pages >= self.max_pages as usize => {
                        // An incomplete listing must not be decided on (it would fake deletions).
                        let e = Error::Decode(format!(
                            "group {} has more than {} event pages in its window",
                            c.req.group, self.max_pages
                        ));
                        Step::Done(c.req.group, Err(e))
                    }
                    Some(link) if !below => {
                        c.url = link;
                        Step::More(c)
                    }
                    _ => Step::Done(c.req.group, Ok(c.listing)),
                }
            }
            Err(e) if c.filtered && refuses_filter(&e) => {
                if self.filter_supported.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "Graph refused $filter on createdDateTime; listing newest first and stopping at the floor instead.");
                }
                (c.url, c.filtered) = self.url(&c.req);
                c.listing = Listing::default();
                Step::More(c)
            }
            Err(e) => Step::Done(c.req.group, Err(e)),
        }
    }

    /// One page for each cursor, in order, through `$batch`.
    ///
    /// # Errors
    /// Only a failing `$batch` call as a whole.
    async fn fetch_batched(&self, cursors: &[Cursor]) -> Result<Vec<Result<EventsPage>>> {
        let root = self.graph.v1_root();
        let mut pages: Vec<Option<Result<EventsPage>>> = Vec::with_capacity(cursors.len());
        let mut gets = Vec::new();
        for (i, c) in cursors.iter().enumerate() {
            // A link outside this host's `/v1.0` fails its group only; the others still go in the batch.
            match c.url.strip_prefix(&root).filter(|u| u.starts_with('/')) {
                Some(url) => {
                    pages.push(None);
                    gets.push(BatchGet {
                        id: (i + 1).to_string(),
                        url: url.to_owned(),
                        headers: vec![(PREFER_UTC.0.into(), PREFER_UTC.1.into())],
                        mailbox: Some(c.req.group.clone()),
                    });
                }
                None => pages.push(Some(Err(Error::ForeignLink(c.url.clone())))),
            }
        }
        let mut answers = if gets.is_empty() {
            HashMap::new()
        } else {
            batch::get_all(&self.graph, gets, self.max_retries, Some(&self.mailbox)).await?
        };
        Ok(pages
            .into_iter()
            .enumerate()
            .map(|(i, page)| {
                page.unwrap_or_else(|| {
                    let id = (i + 1).to_string();
                    let v = answers.remove(&id).unwrap_or_else(|| {
                        Err(Error::Decode(format!("no $batch answer for {id}")))
                    })?;
                    serde_json::from_value(v)
                        .map_err(|e| Error::Decode(format!("events page: {e}")))
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(code: &str, message: &str) -> Error {
        Error::BadRequest {
            status: 400,
            code: code.into(),
            message: message.into(),
        }
    }

    #[test]
    fn only_a_400_about_the_filter_switches_it_off() {
        assert!(refuses_filter(&bad(
            "ErrorInvalidUrlQueryFilter",
            "The query filter 'createdDateTime ge 2025-01-01T00:00:00Z' is not supported."
        )));
        assert!(refuses_filter(&bad("BadRequest", "Invalid filter clause")));
        assert!(refuses_filter(&bad(
            "ErrorInvalidProperty",
            "The property 'CreatedDateTime' does not support filtering."
        )));
        assert!(!refuses_filter(&bad(
            "invalidRequest",
            "The request is malformed or incorrect."
        )));
        assert!(!refuses_filter(&bad(
            "ErrorInvalidUrlQuery",
            "Invalid $top: x"
        )));
        let other_status = Error::BadRequest {
            status: 405,
            code: "ErrorInvalidUrlQueryFilter".into(),
            message: "filter".into(),
        };
        assert!(!refuses_filter(&other_status));
        assert!(!refuses_filter(&Error::Throttled { retry_after: None }));
    }
}
