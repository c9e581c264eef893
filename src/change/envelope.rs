//! A change and its wire form: a CloudEvents 1.0 event whose data carries what the Power Automate trigger
//! returns (member `id`, `@removed.reason`) plus group, tenant, member type and detection time.

use chrono::{DateTime, Utc};
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use serde::{Deserialize, Serialize};

use super::ids::event_id;
use super::normalize::Relationship;

/// Added or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The link appeared.
    Added,
    /// The link disappeared (`@removed`, or absent after a full resync).
    Removed,
}

impl ChangeKind {
    /// `added` / `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
        }
    }
}

/// `@removed.reason` given to removals found by a full resync (the member is simply absent from the state).
pub const RESYNC_REASON: &str = "resync";

/// A real membership change, ready to become an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Connection name from the configuration.
    pub connection: String,
    /// Tenant id of that connection.
    pub tenant: String,
    /// Group object id.
    pub group: String,
    /// Members or owners.
    pub rel: Relationship,
    /// The member's object id.
    pub member: String,
    /// `user`, `group`, …
    pub member_type: String,
    /// Added or removed.
    pub kind: ChangeKind,
    /// `@removed.reason` for removals.
    pub reason: Option<String>,
    /// Link version after this change (part of the id).
    pub version: u64,
    /// When the daemon saw it.
    pub detected_at: DateTime<Utc>,
}

/// The event payload (`data`), in the connector's field names plus ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    /// The member's object id (as the connector's trigger returns it).
    pub id: String,
    /// Present on removals, as in Graph: `{"reason": "deleted" | "changed" | "resync"}`.
    #[serde(rename = "@removed", skip_serializing_if = "Option::is_none", default)]
    pub removed: Option<crate::graph::Removed>,
    /// `added` or `removed`.
    pub change: ChangeKind,
    /// `members` or `owners`.
    pub relationship: Relationship,
    /// Group object id.
    #[serde(rename = "groupId")]
    pub group_id: String,
    /// Tenant id.
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    /// The configured connection name.
    pub connection: String,
    /// `user`, `group` (nested group), …
    #[serde(rename = "memberType")]
    pub member_type: String,
    /// When groupwatch detected the change (RFC 3339).
    #[serde(rename = "detectedAt")]
    pub detected_at: DateTime<Utc>,
}

impl Change {
    /// The deterministic event id.
    pub fn id(&self) -> String {
        event_id(
            &self.tenant,
            self.rel.singular(),
            &self.group,
            &self.member,
            self.kind.as_str(),
            self.version,
        )
    }

    /// CloudEvent type, e.g. `groupwatch.member.added`.
    pub fn event_type(&self) -> String {
        format!("groupwatch.{}.{}", self.rel.singular(), self.kind.as_str())
    }

    /// The payload.
    pub fn data(&self) -> EventData {
        EventData {
            id: self.member.clone(),
            removed: (self.kind == ChangeKind::Removed).then(|| crate::graph::Removed {
                reason: self.reason.clone(),
            }),
            change: self.kind,
            relationship: self.rel,
            group_id: self.group.clone(),
            tenant_id: self.tenant.clone(),
            connection: self.connection.clone(),
            member_type: self.member_type.clone(),
            detected_at: self.detected_at,
        }
    }

    /// The CloudEvents 1.0 event: `source` names connection and group, `subject` the member.
    pub fn to_event(&self) -> Event {
        let data = serde_json::to_value(self.data()).expect("EventData always serializes");
        EventBuilderV10::new()
            .id(self.id())
            .source(format!(
                "/groupwatch/{}/groups/{}",
                self.connection, self.group
            ))
            .ty(self.event_type())
            .subject(self.member.clone())
            .time(self.detected_at)
            .data("application/json", data)
            .build()
            .expect("id, source and type are always set")
    }
}

/// Reads the payload back out of an event (sinks, tests).
pub fn event_data(event: &Event) -> Option<EventData> {
    data_as(event)
}

/// Decodes an event's `data` as `T`, whichever of the three CloudEvents data forms holds it.
pub fn data_as<T: serde::de::DeserializeOwned>(event: &Event) -> Option<T> {
    match event.data()? {
        cloudevents::Data::Json(v) => serde_json::from_value(v.clone()).ok(),
        cloudevents::Data::String(s) => serde_json::from_str(s).ok(),
        cloudevents::Data::Binary(b) => serde_json::from_slice(b).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::AttributesReader;

    fn change(kind: ChangeKind) -> Change {
        Change {
            connection: "contoso".into(),
            tenant: "t".into(),
            group: "g".into(),
            rel: Relationship::Members,
            member: "u".into(),
            member_type: "user".into(),
            kind,
            reason: (kind == ChangeKind::Removed).then(|| "deleted".into()),
            version: 2,
            detected_at: Utc::now(),
        }
    }

    #[test]
    fn removal_event_carries_the_removed_reason_like_graph() {
        let ev = change(ChangeKind::Removed).to_event();
        assert_eq!(ev.ty(), "groupwatch.member.removed");
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["data"]["@removed"]["reason"], "deleted");
        assert_eq!(json["data"]["id"], "u");
        assert_eq!(json["data"]["groupId"], "g");
        assert_eq!(event_data(&ev).unwrap().change, ChangeKind::Removed);
    }

    #[test]
    fn added_event_has_no_removed_annotation() {
        let json = serde_json::to_value(change(ChangeKind::Added).to_event()).unwrap();
        assert!(json["data"].get("@removed").is_none());
        assert_eq!(json["type"], "groupwatch.member.added");
    }

    #[test]
    fn event_round_trips_through_json() {
        let ev = change(ChangeKind::Added).to_event();
        let back: Event = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert_eq!(back.id(), ev.id());
        assert_eq!(event_data(&back), event_data(&ev));
    }
}
