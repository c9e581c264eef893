//! The wire form of a calendar change: a CloudEvents 1.0 event (`groupwatch.event.created|updated|deleted`)
//! whose data carries every output of the connector's "When there is a new event" trigger, in Graph's own
//! field names and nesting, plus createdDateTime, webLink, organizer, group, tenant and detection time.

use chrono::{DateTime, Utc};
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use serde::{Deserialize, Serialize};

use super::calendar::{Emitted, EventChange};
use super::ids::event_id;
use crate::graph::calendar::GraphEvent;

/// `kind` fragment of calendar event ids (members use `member` / `owner`).
const KIND: &str = "event";

/// A calendar change ready to become a CloudEvent.
#[derive(Debug, Clone, PartialEq)]
pub struct CalendarChange {
    /// Connection name.
    pub connection: String,
    /// Tenant id.
    pub tenant: String,
    /// Group id.
    pub group: String,
    /// What happened, to which event, at which version.
    pub emitted: Emitted,
    /// When the daemon saw it.
    pub detected_at: DateTime<Utc>,
}

/// The payload: the Graph event (flattened) plus our fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalendarEventData {
    /// The listed event: id, subject, body, start, end, location, … exactly as Graph named them.
    #[serde(flatten)]
    pub event: GraphEvent,
    /// `created`, `updated` or `deleted`.
    pub change: EventChange,
    /// Group id.
    #[serde(rename = "groupId")]
    pub group_id: String,
    /// Tenant id.
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    /// Configured connection name.
    pub connection: String,
    /// When groupwatch detected the change.
    #[serde(rename = "detectedAt")]
    pub detected_at: DateTime<Utc>,
}

impl CalendarChange {
    /// Deterministic id: the same listing re-processed after a crash yields the same id.
    pub fn id(&self) -> String {
        event_id(
            &self.tenant,
            KIND,
            &self.group,
            self.emitted.event.id.as_deref().unwrap_or_default(),
            self.emitted.change.as_str(),
            self.emitted.version,
        )
    }

    /// `groupwatch.event.created` etc.
    pub fn event_type(&self) -> String {
        format!("groupwatch.event.{}", self.emitted.change.as_str())
    }

    /// The payload.
    pub fn data(&self) -> CalendarEventData {
        CalendarEventData {
            event: self.emitted.event.clone(),
            change: self.emitted.change,
            group_id: self.group.clone(),
            tenant_id: self.tenant.clone(),
            connection: self.connection.clone(),
            detected_at: self.detected_at,
        }
    }

    /// The CloudEvent: `source` names connection and group calendar, `subject` the Outlook event id.
    pub fn to_event(&self) -> Event {
        let data = serde_json::to_value(self.data()).expect("CalendarEventData always serializes");
        EventBuilderV10::new()
            .id(self.id())
            .source(format!(
                "/groupwatch/{}/groups/{}/events",
                self.connection, self.group
            ))
            .ty(self.event_type())
            .subject(self.emitted.event.id.clone().unwrap_or_default())
            .time(self.detected_at)
            .data("application/json", data)
            .build()
            .expect("id, source and type are always set")
    }
}

/// Reads a calendar payload back out of an event (sinks, tests).
pub fn calendar_data(event: &Event) -> Option<CalendarEventData> {
    super::envelope::data_as(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: EventChange, version: u64) -> CalendarChange {
        let body: serde_json::Value = serde_json::json!({
            "id": "AAMk=", "subject": "Plan", "reminderMinutesBeforeStart": 15, "isReminderOn": true,
            "importance": "normal", "isAllDay": false, "responseRequested": true, "showAs": "busy",
            "body": {"contentType": "html", "content": "<p>hi</p>"},
            "start": {"dateTime": "2025-03-02T10:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2025-03-02T11:00:00.0000000", "timeZone": "UTC"},
            "location": {"displayName": "Room 1"}, "createdDateTime": "2025-03-01T09:00:00Z",
            "webLink": "https://outlook.office365.com/owa/?itemid=AAMk%3D",
            "organizer": {"emailAddress": {"name": "Team", "address": "team@contoso.com"}}
        });
        CalendarChange {
            connection: "c".into(),
            tenant: "t".into(),
            group: "g".into(),
            emitted: Emitted {
                change: kind,
                event: serde_json::from_value(body).unwrap(),
                version,
            },
            detected_at: Utc::now(),
        }
    }

    #[test]
    fn created_event_carries_every_trigger_output_field() {
        let json = serde_json::to_value(change(EventChange::Created, 1).to_event()).unwrap();
        assert_eq!(json["type"], "groupwatch.event.created");
        let d = &json["data"];
        for (path, want) in [
            ("/id", "AAMk="),
            ("/subject", "Plan"),
            ("/importance", "normal"),
            ("/showAs", "busy"),
            ("/body/contentType", "html"),
            ("/body/content", "<p>hi</p>"),
            ("/start/dateTime", "2025-03-02T10:00:00.0000000"),
            ("/start/timeZone", "UTC"),
            ("/end/dateTime", "2025-03-02T11:00:00.0000000"),
            ("/end/timeZone", "UTC"),
            ("/location/displayName", "Room 1"),
            ("/createdDateTime", "2025-03-01T09:00:00Z"),
            ("/organizer/emailAddress/address", "team@contoso.com"),
            ("/groupId", "g"),
            ("/change", "created"),
        ] {
            assert_eq!(
                d.pointer(path).and_then(|v| v.as_str()),
                Some(want),
                "{path}"
            );
        }
        assert_eq!(d["reminderMinutesBeforeStart"], 15);
        assert_eq!(d["isReminderOn"], true);
        assert_eq!(d["isAllDay"], false);
        assert_eq!(d["responseRequested"], true);
        assert!(d["webLink"].as_str().unwrap().starts_with("https://"));
    }

    #[test]
    fn ids_are_deterministic_and_differ_per_change_and_version() {
        let a = change(EventChange::Created, 1);
        assert_eq!(a.id(), change(EventChange::Created, 1).id());
        assert_ne!(a.id(), change(EventChange::Updated, 2).id());
        assert_ne!(
            change(EventChange::Updated, 2).id(),
            change(EventChange::Updated, 3).id()
        );
        let back = calendar_data(&a.to_event()).unwrap();
        assert_eq!(back.event.subject.as_deref(), Some("Plan"));
    }
}
