//! CloudEvent → Kafka record, per the CloudEvents Kafka protocol binding. Pure, so the wire format is unit-tested.
//! Binary mode: attributes as `ce_*` headers, `content-type` = the data content type, data as the value.
//! Structured mode: the whole event as JSON, `content-type: application/cloudevents+json; charset=UTF-8`.
//! Either way the key is the group id, so one group's events share a partition and stay ordered.

use cloudevents::event::ExtensionValue;
use cloudevents::{AttributesReader, Data, Event};

use crate::config::{KafkaMode, KafkaSinkConfig};
use crate::sink::SinkError;

/// Structured-mode content type.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";

/// A record ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Target topic.
    pub topic: String,
    /// Message key: the group id.
    pub key: String,
    /// Message value.
    pub payload: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
}

/// The partition key: the event data's `groupId`, falling back to the event source (always set).
pub fn key_of(ev: &Event) -> String {
    let from_data = crate::change::envelope::data_as::<serde_json::Value>(ev)
        .and_then(|v| v.get("groupId")?.as_str().map(str::to_owned));
    from_data.unwrap_or_else(|| ev.source().to_string())
}

fn data_bytes(ev: &Event) -> Result<Vec<u8>, SinkError> {
    Ok(match ev.data() {
        Some(Data::Json(v)) => serde_json::to_vec(v)
            .map_err(|e| SinkError::Permanent(format!("data does not serialize: {e}")))?,
        Some(Data::String(s)) => s.clone().into_bytes(),
        Some(Data::Binary(b)) => b.clone(),
        None => Vec::new(),
    })
}

fn extension_string(v: &ExtensionValue) -> String {
    match v {
        ExtensionValue::String(s) => s.clone(),
        ExtensionValue::Boolean(b) => b.to_string(),
        ExtensionValue::Integer(i) => i.to_string(),
    }
}

/// Builds the record for `ev` under `cfg` (topic routing and mode).
///
/// # Errors
/// [`SinkError::Permanent`] when the event cannot be serialized (never for events groupwatch builds).
pub fn build(ev: &Event, cfg: &KafkaSinkConfig) -> Result<KafkaRecord, SinkError> {
    let topic = cfg.topic_for(ev.ty()).to_owned();
    let key = key_of(ev);
    let (payload, headers) = match cfg.mode {
        KafkaMode::Structured => {
            let payload = serde_json::to_vec(ev)
                .map_err(|e| SinkError::Permanent(format!("event does not serialize: {e}")))?;
            let headers = vec![("content-type".into(), STRUCTURED_CONTENT_TYPE.into())];
            (payload, headers)
        }
        KafkaMode::Binary => {
            let mut h: Vec<(String, String)> = vec![
                ("ce_specversion".into(), ev.specversion().to_string()),
                ("ce_id".into(), ev.id().to_owned()),
                ("ce_source".into(), ev.source().to_string()),
                ("ce_type".into(), ev.ty().to_owned()),
            ];
            if let Some(s) = ev.subject() {
                h.push(("ce_subject".into(), s.to_owned()));
            }
            if let Some(t) = ev.time() {
                h.push(("ce_time".into(), t.to_rfc3339()));
            }
            if let Some(s) = ev.dataschema() {
                h.push(("ce_dataschema".into(), s.to_string()));
            }
            for (name, v) in ev.iter_extensions() {
                h.push((format!("ce_{name}"), extension_string(v)));
            }
            let ct = ev.datacontenttype().unwrap_or("application/json");
            h.push(("content-type".into(), ct.to_owned()));
            (data_bytes(ev)?, h)
        }
    };
    Ok(KafkaRecord {
        topic,
        key,
        payload,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use cloudevents::{EventBuilder, EventBuilderV10};

    use super::*;
    use crate::config::{DottedMap, KafkaSinkConfig};

    fn cfg(mode: KafkaMode) -> KafkaSinkConfig {
        let mut topics = DottedMap::default();
        topics
            .0
            .insert("groupwatch.owner.added".into(), "owners".into());
        KafkaSinkConfig {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: "events".into(),
            topics,
            mode,
            delivery_timeout_secs: 30,
            healthcheck_timeout_secs: 10,
            properties: DottedMap::default(),
        }
    }

    fn event(ty: &str) -> Event {
        EventBuilderV10::new()
            .id("abc")
            .source("/groupwatch/contoso/groups/g1")
            .ty(ty)
            .subject("u1")
            .time("2026-01-02T03:04:05Z")
            .data(
                "application/json",
                serde_json::json!({"id": "u1", "groupId": "g1"}),
            )
            .build()
            .unwrap()
    }

    fn header<'a>(r: &'a KafkaRecord, k: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn binary_mode_writes_ce_headers_and_plain_json_data() {
        let r = build(&event("groupwatch.member.added"), &cfg(KafkaMode::Binary)).unwrap();
        assert_eq!(r.topic, "events");
        assert_eq!(r.key, "g1");
        assert_eq!(header(&r, "ce_id"), Some("abc"));
        assert_eq!(header(&r, "ce_specversion"), Some("1.0"));
        assert_eq!(header(&r, "ce_type"), Some("groupwatch.member.added"));
        assert_eq!(
            header(&r, "ce_source"),
            Some("/groupwatch/contoso/groups/g1")
        );
        assert_eq!(header(&r, "ce_subject"), Some("u1"));
        assert_eq!(header(&r, "ce_time"), Some("2026-01-02T03:04:05+00:00"));
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v, serde_json::json!({"id": "u1", "groupId": "g1"}));
    }

    #[test]
    fn structured_mode_carries_the_whole_event() {
        let r = build(
            &event("groupwatch.owner.added"),
            &cfg(KafkaMode::Structured),
        )
        .unwrap();
        assert_eq!(r.topic, "owners", "routed by type");
        assert_eq!(r.key, "g1");
        assert_eq!(
            r.headers,
            vec![("content-type".into(), STRUCTURED_CONTENT_TYPE.into())]
        );
        let back: Event = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(back, event("groupwatch.owner.added"));
    }

    #[test]
    fn key_falls_back_to_the_source_without_group_id() {
        let ev = EventBuilderV10::new()
            .id("x")
            .source("/s")
            .ty("t")
            .build()
            .unwrap();
        assert_eq!(key_of(&ev), "/s");
    }
}
