//! Delegated sign-in and certificate credentials: `groupwatch login` end to end, refresh-token rotation across
//! restarts, `invalid_grant` handling, app-only misconfiguration, and the client_assertion JWT.

use std::process::Command;

use groupwatch::app::Daemon;
use groupwatch::config::Config;
use groupwatch::sim::{DeviceFlow, DeviceOutcome, MemberKind};
use groupwatch::store::SignInStatus;
use tokio_util::sync::CancellationToken;

use crate::support::{World, user};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_groupwatch"))
}

async fn run_bin(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || bin().args(args).env("RUST_LOG", "warn").output().unwrap())
        .await
        .unwrap()
}

/// `groupwatch login --config FILE --connection sim`, run as a user would.
async fn login_bin(file: String) -> std::process::Output {
    let args = ["login", "--config", &file, "--connection", "sim"];
    run_bin(args.map(str::to_owned).to_vec()).await
}

fn config_file(w: &World, toml: &str) -> String {
    let p = w.dir.path().join("groupwatch.toml");
    std::fs::write(&p, toml).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_binary_signs_in_after_a_few_polls_and_the_stored_token_works() {
    let w = World::with_calendars(1).await;
    w.sim.set_device_flow(DeviceFlow {
        approve_after_polls: 2,
        ..DeviceFlow::default()
    });
    let toml = w.calendar_toml(false, true, "");
    let file = config_file(&w, &toml);
    let out = login_bin(file).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("/devicelogin") && text.contains("enter the code"),
        "{text}"
    );
    assert!(text.contains("Signed in"), "{text}");
    // The daemon uses what login stored: one refresh, then the calendar answers.
    let d = Daemon::build(Config::from_toml(&toml).unwrap(), CancellationToken::new())
        .await
        .unwrap();
    w.sim.create_event(&w.groups[0], "hello");
    let r = d.poll_calendars_once().await.unwrap();
    assert_eq!(r[0].groups, 1);
    assert_eq!(w.sim.refreshes(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(w.state_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "state dir holds refresh tokens");
        // Every file of the store, including those sled wrote after it was opened (the rotated refresh
        // token lives in them), is owner-only.
        fn check(dir: &std::path::Path) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                if path.is_dir() {
                    assert_eq!(mode, 0o700, "{}", path.display());
                    check(&path);
                } else {
                    assert_eq!(mode, 0o600, "{}", path.display());
                }
            }
        }
        check(&w.state_path());
        assert!(w.state_path().join("db").exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_reports_a_declined_or_expired_sign_in_clearly() {
    for (outcome, words) in [
        (DeviceOutcome::Decline, "declined"),
        (DeviceOutcome::Expire, "expired"),
    ] {
        let w = World::with_calendars(1).await;
        w.sim.set_device_flow(DeviceFlow {
            approve_after_polls: 1,
            outcome,
            ..DeviceFlow::default()
        });
        let file = config_file(&w, &w.calendar_toml(false, true, ""));
        let out = login_bin(file).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(words) && err.contains("groupwatch login"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn slow_down_adds_five_seconds_to_the_interval() {
    let w = World::with_calendars(1).await;
    w.sim.set_device_flow(DeviceFlow {
        approve_after_polls: 1,
        slow_down_at_poll: Some(1),
        interval_secs: 0,
        ..DeviceFlow::default()
    });
    let cfg = Config::from_toml(&w.calendar_toml(false, true, "")).unwrap();
    let said = std::sync::Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    groupwatch::login::login(&cfg, "sim", |m| said.lock().unwrap().push(m.to_owned()))
        .await
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_secs(5));
    let said = said.into_inner().unwrap();
    assert!(said.iter().any(|m| m.contains("slow_down")), "{said:?}");
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_retried_without_a_slow_down() {
    let w = World::with_calendars(1).await;
    w.sim.set_device_flow(DeviceFlow {
        approve_after_polls: 1,
        interval_secs: 1,
        stall_polls: 1, // the first poll hangs past the client's 1 s timeout: a transport error
        ..DeviceFlow::default()
    });
    let toml = w
        .calendar_toml(false, true, "")
        .replace("request_timeout_secs = 10", "request_timeout_secs = 1");
    let cfg = Config::from_toml(&toml).unwrap();
    let said = std::sync::Mutex::new(Vec::new());
    groupwatch::login::login(&cfg, "sim", |m| said.lock().unwrap().push(m.to_owned()))
        .await
        .unwrap();
    let said = said.into_inner().unwrap();
    assert!(
        said.iter().any(|m| m.contains("could not be reached")),
        "{said:?}"
    );
    assert!(!said.iter().any(|m| m.contains("slow_down")), "{said:?}");
    assert!(said.iter().any(|m| m.contains("Signed in")), "{said:?}");
}

#[tokio::test]
async fn bad_verification_code_says_to_log_in_again() {
    let w = World::with_calendars(1).await;
    w.sim.set_device_flow(DeviceFlow {
        approve_after_polls: 1,
        outcome: DeviceOutcome::BadVerificationCode,
        interval_secs: 0,
        ..DeviceFlow::default()
    });
    let cfg = Config::from_toml(&w.calendar_toml(false, true, "")).unwrap();
    let err = groupwatch::login::login(&cfg, "sim", |_| {})
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("bad_verification_code")
            && msg.contains("did not recognise the device code")
            && msg.contains("groupwatch login"),
        "{msg}"
    );
    assert!(no_login_stored(&cfg), "nothing stored");
}

fn no_login_stored(cfg: &Config) -> bool {
    let store = groupwatch::store::Store::open(&cfg.store.path).unwrap();
    store.sign_in("sim").unwrap().is_none()
}

#[tokio::test]
async fn a_refused_refresh_stops_calendars_for_invalid_grant_and_interaction_required() {
    for error in ["invalid_grant", "interaction_required"] {
        let w = World::with_calendars(1).await;
        let d = w.calendar_daemon(&w.calendar_toml(false, true, "")).await;
        w.calendar_cycle(&d).await;
        w.sim.fail_refresh(Some(error));
        w.sim.revoke_access_tokens(); // forces a refresh on the next calendar call
        let err = d.poll_calendars_once().await.unwrap_err().to_string();
        assert!(
            err.contains(error) && err.contains("groupwatch login"),
            "{error}: {err}"
        );
        match d.store().sign_in("sim").unwrap().unwrap().status {
            SignInStatus::NeedsLogin { error: got, .. } => assert_eq!(got, error),
            other => panic!("{error}: {other:?}"),
        }
        // Later ticks stop without calling Graph or the token endpoint again.
        w.sim.reset_requests();
        assert!(d.poll_calendars_once().await.is_err());
        assert!(
            w.sim.requests().is_empty(),
            "{error}: {:?}",
            w.sim.requests()
        );
    }
}

#[tokio::test]
async fn rotated_refresh_token_is_persisted_across_restart() {
    let w = World::with_calendars(1).await;
    let toml = w.calendar_toml(false, true, "");
    {
        let d = w.calendar_daemon(&toml).await; // login: refresh token RT1
        d.poll_calendars_once().await.unwrap(); // RT1 spent, RT2 stored
        assert_eq!(w.sim.refreshes(), 1);
    }
    // RT1 is now invalid at the simulated authority: only the persisted RT2 can work.
    let d = Daemon::build(Config::from_toml(&toml).unwrap(), CancellationToken::new())
        .await
        .unwrap();
    d.poll_calendars_once().await.unwrap();
    assert_eq!(w.sim.refreshes(), 2);
    let view = d.store().sign_in("sim").unwrap().unwrap();
    assert_eq!(view.rotations, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grant_stops_calendars_with_a_clear_status_while_membership_keeps_flowing() {
    let w = World::with_calendars(1).await;
    let toml = w.calendar_toml(true, true, "");
    let file = config_file(&w, &toml);
    {
        let d = w.calendar_daemon(&toml).await;
        w.cycle(&d).await;
        w.calendar_cycle(&d).await;
        w.sim.fail_refresh(Some("invalid_grant"));
        w.sim.revoke_access_tokens(); // forces a refresh on the next calendar call
        let err = d.poll_calendars_once().await.unwrap_err().to_string();
        assert!(
            err.contains("invalid_grant") && err.contains("groupwatch login"),
            "{err}"
        );
        // Later ticks stop without calling Graph; membership still flows.
        w.sim.reset_requests();
        assert!(d.poll_calendars_once().await.is_err());
        assert_eq!(
            w.sim.count(&format!("/v1.0/groups/{}/events", w.groups[0])),
            0
        );
        w.sim.add_member(&w.groups[0], &user(77), MemberKind::User);
        w.cycle(&d).await;
        let members: Vec<_> = w
            .events()
            .iter()
            .filter(|e| e["type"] == "groupwatch.member.added")
            .map(|e| e["data"]["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(members, [user(77)]);
        // Readiness (the live view while the daemon holds the store) says what is wrong and what to do.
        let (status, body) = get_readyz(d.health_router()).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["sign_ins"]["sim"], "needs_login", "{body}");
        let problem = body["problems"][0].as_str().unwrap();
        assert!(
            problem.contains("invalid_grant")
                && problem.contains("groupwatch login --config FILE --connection sim")
                && problem.contains("membership keeps running"),
            "{problem}"
        );
        d.store().flush().await.unwrap();
    }
    let out = run_bin(vec!["state".into(), "--config".into(), file.clone()]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("sim: NEEDS LOGIN (invalid_grant"), "{text}");
    assert!(
        text.contains("groupwatch login --config FILE --connection sim"),
        "{text}"
    );
    // A new login heals it.
    w.sim.fail_refresh(None);
    let cfg = Config::from_toml(&toml).unwrap();
    w.login(&cfg).await;
    let d = Daemon::build(cfg, CancellationToken::new()).await.unwrap();
    d.poll_calendars_once().await.unwrap();
    let (status, body) = get_readyz(d.health_router()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sign_ins"]["sim"], "active", "{body}");
}

/// Serves `router` on 127.0.0.1:0 and GETs `/readyz` over real HTTP.
async fn get_readyz(router: axum::Router) -> (u16, serde_json::Value) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let resp = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap();
    server.abort();
    (status, body)
}

#[tokio::test]
async fn app_only_connection_on_a_calendar_subscription_is_refused_with_an_explanation() {
    let w = World::with_calendars(1).await;
    let toml = w.calendar_toml(false, true, "").replace(
        "delegated_scopes = [\"offline_access\", \"Group.Read.All\"]",
        "",
    );
    let err = Config::from_toml(&toml).unwrap_err().to_string();
    assert!(err.contains("subscriptions[0].connection"), "{err}");
    assert!(err.contains("app-only") && err.contains("403"), "{err}");
    assert!(
        err.contains("delegated sign-in") && err.contains("groupwatch login"),
        "{err}"
    );
    // Delegated but never signed in: a start-up error that says what to run.
    let cfg = Config::from_toml(&w.calendar_toml(false, true, "")).unwrap();
    let err = Daemon::build(cfg, CancellationToken::new())
        .await
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("no delegated sign-in") && msg.contains("groupwatch login"),
        "{msg}"
    );
}

fn write_cert(w: &World, name: &str) -> (String, String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["groupwatch-test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_path = w.dir.path().join(format!("{name}.crt"));
    let key_path = w.dir.path().join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        cert.pem(),
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

#[tokio::test]
async fn certificate_client_credentials_send_a_jwt_the_sim_verifies() {
    for alg in ["PS256", "RS256"] {
        let mut w = World::new(1, 2, 100).await;
        let (pem, cert, key) = write_cert(&w, "app");
        w.sim.trust_certificate(&pem);
        let secret_line = format!("client_secret = \"{}\"", w.sim.client_secret());
        let toml = w.toml(&w.groups.clone()).replace(
            &secret_line,
            &format!("client_certificate_path = \"{cert}\"\nclient_key_path = \"{key}\"\nclient_assertion_alg = \"{alg}\""),
        );
        w.extra = String::new();
        let d = Daemon::build(Config::from_toml(&toml).unwrap(), CancellationToken::new())
            .await
            .unwrap();
        w.cycle(&d).await;
        w.sim.add_member(&w.groups[0], &user(9), MemberKind::User);
        w.cycle(&d).await;
        assert_eq!(w.events().len(), 1, "{alg}");
        assert_eq!(
            w.sim.verified_assertions(),
            1,
            "{alg}: one token, one verified assertion"
        );
    }
}

#[tokio::test]
async fn mismatched_certificate_key_is_a_config_error_naming_the_key_path() {
    let w = World::new(1, 1, 100).await;
    let (_, cert, _) = write_cert(&w, "a");
    let (_, _, other_key) = write_cert(&w, "b");
    let secret_line = format!("client_secret = \"{}\"", w.sim.client_secret());
    let toml = w.toml(&w.groups.clone()).replace(
        &secret_line,
        &format!("client_certificate_path = \"{cert}\"\nclient_key_path = \"{other_key}\""),
    );
    let err = Config::from_toml(&toml).unwrap_err().to_string();
    assert!(err.contains("connections.sim.client_key_path"), "{err}");
    assert!(err.contains("does not match"), "{err}");
    let toml = toml.replace(&other_key, "/nonexistent/app.key");
    let err = Config::from_toml(&toml).unwrap_err().to_string();
    assert!(
        err.contains("client_key_path") && err.contains("/nonexistent/app.key"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn login_while_a_daemon_holds_the_store_fails_before_showing_a_code() {
    let w = World::with_calendars(1).await;
    let toml = w.calendar_toml(false, true, "");
    let file = config_file(&w, &toml);
    // A running daemon (here: in this process) holds the store; sign it in first so it can start.
    let _daemon = w.calendar_daemon(&toml).await;
    let out = login_bin(file).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("stop the daemon"),
        "the error says what to do: {stderr}"
    );
    assert!(
        !stdout.contains("enter the code"),
        "no code is shown to a person who could not complete the sign-in: {stdout}"
    );
}
