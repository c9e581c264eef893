use super::*;

const GOOD: &str = r#"
[connections.contoso]
tenant_id = "11111111-1111-1111-1111-111111111111"
client_id = "22222222-2222-2222-2222-222222222222"
client_secret = "s3cret-value"

[sinks.out]
type = "stdout"

[[subscriptions]]
id = "hr"
connection = "contoso"
kind = "members"
groups = ["33333333-3333-3333-3333-333333333333"]
sinks = ["out"]
"#;

fn keys(err: ConfigError) -> Vec<String> {
    match err {
        ConfigError::Invalid(p) => p.into_iter().map(|p| p.key).collect(),
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn defaults_alone_are_valid() {
    let cfg = Config::from_toml("").unwrap();
    assert_eq!(cfg.poll.interval_secs, 120);
    assert_eq!(cfg.relay.batch_size, 100);
}

#[test]
fn good_config_loads_with_connection_defaults() {
    let cfg = Config::from_toml(GOOD).unwrap();
    let c = &cfg.connections["contoso"];
    assert_eq!(c.graph_url, "https://graph.microsoft.com");
    assert_eq!(c.rate_limit_calls, 100);
    assert_eq!(cfg.subscriptions[0].baseline, Baseline::FromNow);
}

#[test]
fn secret_never_appears_in_debug_output() {
    let cfg = Config::from_toml(GOOD).unwrap();
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("s3cret-value"), "{dbg}");
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let bad = GOOD
        .replace("22222222-2222-2222-2222-222222222222", "not-a-guid")
        .replace(
            "groups = [\"33333333-3333-3333-3333-333333333333\"]",
            "groups = [\"33333333-3333-3333-3333-333333333333\", \"nope\"]",
        )
        .replace("sinks = [\"out\"]", "sinks = [\"out\", \"kafka-main\"]")
        .replace("client_secret = \"s3cret-value\"", "")
        + "\n[poll]\ninterval_secs = 1\n";
    let keys = keys(Config::from_toml(&bad).unwrap_err());
    for want in [
        "poll.interval_secs",
        "connections.contoso.client_id",
        "connections.contoso.client_secret",
        "subscriptions[0].groups[1]",
        "subscriptions[0].sinks[1]",
    ] {
        assert!(keys.iter().any(|k| k == want), "{want} missing in {keys:?}");
    }
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml("[poll]\nintervall_secs = 5\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("intervall_secs"), "{msg}");
}

#[test]
fn unknown_sink_type_is_named() {
    let err = Config::from_toml("[sinks.x]\ntype = \"carrier-pigeon\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("carrier-pigeon"), "{msg}");
}

#[test]
fn environment_overrides_file_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, GOOD.replace("client_secret = \"s3cret-value\"", "")).unwrap();
    let env = vec![
        (
            "GROUPWATCH__CONNECTIONS__CONTOSO__CLIENT_SECRET".to_string(),
            "from-env".to_string(),
        ),
        (
            "GROUPWATCH__POLL__INTERVAL_SECS".to_string(),
            "300".to_string(),
        ),
        ("UNRELATED".to_string(), "x".to_string()),
    ];
    let cfg = Config::load_from(Some(&file), env).unwrap();
    assert_eq!(cfg.poll.interval_secs, 300);
    use secrecy::ExposeSecret;
    assert_eq!(
        cfg.connections["contoso"]
            .client_secret
            .as_ref()
            .unwrap()
            .expose_secret(),
        "from-env"
    );
}

#[test]
fn missing_config_file_is_named() {
    let err = Config::load_from(Some(Path::new("/nonexistent/gw.toml")), Vec::new()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/gw.toml"));
}

#[test]
fn calendar_settings_are_validated_with_their_keys() {
    let cal = GOOD.replace(
        "client_secret = \"s3cret-value\"",
        "client_secret = \"s3cret-value\"\ndelegated_scopes = [\"Group.Read.All\", \"bad scope\"]",
    ) + "\n[[subscriptions]]\nid = \"cal\"\nconnection = \"contoso\"\nkind = \"calendar\"\ngroups = [\"33333333-3333-3333-3333-333333333333\"]\nsinks = [\"out\"]\noverlap_secs = 0\npage_size = 5000\ntrack_owners = true\n"
        + "\n[calendar]\nmax_concurrent_requests = 9\n";
    let cal = cal.replace(
        "kind = \"members\"\ngroups = [\"33333333-3333-3333-3333-333333333333\"]\nsinks = [\"out\"]\n",
        "kind = \"members\"\ngroups = [\"33333333-3333-3333-3333-333333333333\"]\nsinks = [\"out\"]\nemit_updates = true\n",
    );
    let keys = keys(Config::from_toml(&cal).unwrap_err());
    for want in [
        "connections.contoso.delegated_scopes",
        "connections.contoso.delegated_scopes[1]",
        "subscriptions[0].emit_updates",
        "subscriptions[1].overlap_secs",
        "subscriptions[1].page_size",
        "subscriptions[1].track_owners",
        "calendar.max_concurrent_requests",
    ] {
        assert!(keys.iter().any(|k| k == want), "{want} missing in {keys:?}");
    }
}

#[test]
fn delegated_only_connection_needs_no_secret_for_calendars() {
    let cal = GOOD
        .replace(
            "client_secret = \"s3cret-value\"",
            "delegated_scopes = [\"offline_access\", \"Group.Read.All\"]",
        )
        .replace("kind = \"members\"", "kind = \"calendar\"");
    let cfg = Config::from_toml(&cal).unwrap();
    assert!(cfg.connections["contoso"].is_delegated());
    assert!(!cfg.connections["contoso"].has_app_credential());
}

#[test]
fn health_listen_must_be_an_address_or_empty() {
    let cfg = Config::from_toml("[health]\nlisten = \"127.0.0.1:9464\"").unwrap();
    assert_eq!(cfg.health.addr(), Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(Config::from_toml("").unwrap().health.addr(), None);
    let err = Config::from_toml("[health]\nlisten = \"localhost\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("health.listen"), "{err}");
}
