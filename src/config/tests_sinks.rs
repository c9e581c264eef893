use super::*;

const BASE: &str = r#"
[connections.contoso]
tenant_id = "11111111-1111-1111-1111-111111111111"
client_id = "22222222-2222-2222-2222-222222222222"
client_secret = "s3cret-value"

[[subscriptions]]
id = "hr"
connection = "contoso"
kind = "members"
groups = ["33333333-3333-3333-3333-333333333333"]
sinks = ["events", "hooks"]
"#;

const SINKS: &str = r#"
[sinks.events]
type = "kafka"
brokers = ["127.0.0.1:9092"]
topic = "groupwatch.events"
topics = { "groupwatch.owner.added" = "owners", "groupwatch.owner.removed" = "owners" }
mode = "structured"

[sinks.events.properties]
"security.protocol" = "SASL_SSL"
sasl.mechanism = "SCRAM-SHA-512"
sasl.username = "gw"
sasl.password = "kafka-pw-123"
"linger.ms" = 5

[sinks.hooks]
type = "webhook"
url = "https://hooks.example.com/groupwatch"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
retry_schedule_secs = [0.01, 0.02]
"#;

fn problems(toml: &str) -> Vec<Problem> {
    match Config::from_toml(toml) {
        Err(ConfigError::Invalid(p)) => p,
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("expected problems"),
    }
}

#[test]
fn kafka_and_webhook_sinks_load_with_dotted_keys_flattened() {
    let cfg = Config::from_toml(&format!("{BASE}{SINKS}")).unwrap();
    let SinkConfig::Kafka(k) = &cfg.sinks["events"] else {
        panic!()
    };
    assert_eq!(k.mode, KafkaMode::Structured);
    assert_eq!(k.topic_for("groupwatch.owner.added"), "owners");
    assert_eq!(k.topic_for("groupwatch.member.added"), "groupwatch.events");
    let p = &k.properties.0;
    assert_eq!(p["security.protocol"], "SASL_SSL");
    assert_eq!(p["sasl.mechanism"], "SCRAM-SHA-512");
    assert_eq!(p["sasl.password"], "kafka-pw-123");
    assert_eq!(p["linger.ms"], "5");
    assert_eq!(k.delivery_timeout_secs, 30);
    let SinkConfig::Webhook(w) = &cfg.sinks["hooks"] else {
        panic!()
    };
    assert_eq!(w.timeout_secs, 15);
    assert_eq!(w.schedule().delays.len(), 2);
}

#[test]
fn sink_secrets_never_appear_in_debug_output() {
    let cfg = Config::from_toml(&format!("{BASE}{SINKS}")).unwrap();
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("kafka-pw-123"), "{dbg}");
    assert!(!dbg.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{dbg}");
    assert!(
        dbg.contains("SCRAM-SHA-512"),
        "non-secret properties stay visible"
    );
}

#[test]
fn webhook_urls_are_masked_in_debug_output_and_messages() {
    let toml = format!("{BASE}{SINKS}").replace(
        "https://hooks.example.com/groupwatch",
        "https://user:pw-777@prod.logic.azure.com/workflows/x/triggers/manual/paths/invoke?api-version=2016-06-01&sig=sas-secret-999",
    );
    let cfg = Config::from_toml(&toml).unwrap();
    let dbg = format!("{cfg:?}");
    assert!(
        !dbg.contains("sas-secret-999") && !dbg.contains("pw-777"),
        "{dbg}"
    );
    assert!(dbg.contains("prod.logic.azure.com/workflows/"), "{dbg}");
    assert_eq!(
        redact_url("https://hooks.slack.com/services/T000/B000/tok-123"),
        "https://hooks.slack.com/services/REDACTED"
    );
    assert_eq!(
        redact_url("not a url?sig=sas-secret-999"),
        "not a url…(REDACTED)"
    );
}

#[test]
fn webhook_secrets_come_from_one_environment_string() {
    let env = [(
        "GROUPWATCH__SINKS__HOOKS__SECRETS".to_owned(),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".to_owned(),
    )];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, format!("{BASE}{SINKS}")).unwrap();
    let cfg = Config::load_from(Some(&file), env).unwrap();
    let SinkConfig::Webhook(w) = &cfg.sinks["hooks"] else {
        panic!()
    };
    assert_eq!(w.secrets.0.len(), 2);
}

#[test]
fn every_sink_problem_is_reported_with_its_key() {
    let bad = format!("{BASE}{SINKS}")
        .replace("brokers = [\"127.0.0.1:9092\"]", "brokers = [\"nohost\"]")
        .replace("topic = \"groupwatch.events\"", "topic = \"bad topic\"")
        .replace(
            "\"linger.ms\" = 5",
            "\"enable.idempotence\" = false\n\"enable.gapless.guarantee\" = false\nacks = \"1\"\n\"request.required.acks\" = \"0\"\n\"delivery.timeout.ms\" = 1000\n\"bootstrap.servers\" = \"x:1\"",
        )
        .replace("https://hooks.example.com/groupwatch", "ftp://nope")
        .replace(
            "secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]",
            "secrets = [\"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"whsec_!!\"]\ntimeout_secs = 0",
        )
        .replace("[0.01, 0.02]", "[0.01, -1]");
    let keys: Vec<String> = problems(&bad).into_iter().map(|p| p.key).collect();
    for want in [
        "sinks.events.brokers[0]",
        "sinks.events.topic",
        "sinks.events.properties.\"enable.idempotence\"",
        "sinks.events.properties.\"enable.gapless.guarantee\"",
        "sinks.events.properties.\"acks\"",
        "sinks.events.properties.\"request.required.acks\"",
        "sinks.events.properties.\"delivery.timeout.ms\"",
        "sinks.events.properties.\"bootstrap.servers\"",
        "sinks.hooks.url",
        "sinks.hooks.secrets[0]",
        "sinks.hooks.secrets[1]",
        "sinks.hooks.timeout_secs",
        "sinks.hooks.retry_schedule_secs[1]",
    ] {
        assert!(keys.iter().any(|k| k == want), "missing {want} in {keys:?}");
    }
}

#[test]
fn empty_brokers_and_missing_secrets_are_problems() {
    let bad = format!("{BASE}{SINKS}")
        .replace("brokers = [\"127.0.0.1:9092\"]", "brokers = []")
        .replace(
            "secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]",
            "secrets = []",
        );
    let keys: Vec<String> = problems(&bad).into_iter().map(|p| p.key).collect();
    assert!(
        keys.contains(&"sinks.events.brokers".to_owned()),
        "{keys:?}"
    );
    assert!(keys.contains(&"sinks.hooks.secrets".to_owned()), "{keys:?}");
}

#[test]
fn unknown_sink_keys_are_rejected() {
    let err = Config::from_toml(
        &format!("{BASE}{SINKS}").replace("mode = \"structured\"", "mdoe = \"x\""),
    )
    .unwrap_err();
    assert!(err.to_string().contains("mdoe"), "{err}");
}

/// The shipped `config/example.toml` (Kafka, webhook, calendar) is valid once its secrets come from the
/// environment, as its comments tell the operator.
#[test]
fn shipped_example_is_valid_with_secrets_from_the_environment() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let env = [
        ("GROUPWATCH__CONNECTIONS__CONTOSO__CLIENT_SECRET", "s3cret"),
        (
            "GROUPWATCH__SINKS__HOOKS__SECRETS",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        ),
        (
            "GROUPWATCH__SINKS__BUS__PROPERTIES__SASL__PASSWORD",
            "kafka-pw",
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let cfg = Config::load_from(Some(&file), env).unwrap();
    let SinkConfig::Kafka(k) = &cfg.sinks["bus"] else {
        panic!("bus is not a kafka sink")
    };
    assert_eq!(k.properties.0["sasl.password"], "kafka-pw");
    assert_eq!(
        k.topic_for("groupwatch.event.created"),
        "groupwatch.calendar"
    );
    assert!(
        !format!("{cfg:?}").contains("kafka-pw"),
        "a secret leaked into Debug"
    );
    let SinkConfig::Webhook(w) = &cfg.sinks["hooks"] else {
        panic!("hooks is not a webhook sink")
    };
    assert_eq!(w.secrets.0.len(), 2);
    // Without the webhook secrets the problem names the key.
    let err = Config::load_from(Some(&file), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("sinks.hooks.secrets"), "{err}");
}
