//! Interoperability: the reference Standard Webhooks verifier (the Python `standardwebhooks` package from
//! PyPI) verifies exactly what groupwatch sent over the wire.

use std::io::Write;
use std::process::{Command, Stdio};

use groupwatch::change::ChangeKind::Added;
use groupwatch::relay;

use crate::support::sinks::receiver::Receiver;
use crate::support::sinks::{SECRET_A, SECRET_B, event, temp_store, webhook_sink};

const VERIFY_PY: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
d = json.load(sys.stdin)
try:
    payload = Webhook(d["secret"]).verify(d["body"].encode(), d["headers"])
except Exception as e:
    print("REJECTED", type(e).__name__, e)
    sys.exit(3)
print("VERIFIED", payload["id"])
"#;

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !crate::support::sinks::broker::strict(),
            "python3 with the standardwebhooks package is required under CI (tests/run.sh installs it)"
        );
        eprintln!(
            "\n!!!!!! SKIPPED: python3 -c 'import standardwebhooks' failed; run `bash tests/run.sh`. !!!!!!\n"
        );
    }
    ok
}

fn verify_with_python(secret: &str, headers: serde_json::Value, body: &str) -> (bool, String) {
    let mut child = Command::new("python3")
        .args(["-c", VERIFY_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::json!({"secret": secret, "headers": headers, "body": body});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn python_standardwebhooks_verifies_what_we_sent() {
    if !python_ready() {
        return;
    }
    let rx = Receiver::start(&[SECRET_A]).await;
    let (_d, store) = temp_store();
    let ev = event("g1", 1, Added);
    store.outbox_push("hooks", &ev).unwrap();
    let sink = webhook_sink("hooks", &rx.url(), &[SECRET_A, SECRET_B], "[1]");
    assert_eq!(relay::drain(&store, &sink, 10).await.unwrap(), 1);
    let hit = rx.hits().remove(0);
    let body = String::from_utf8(hit.body.to_vec()).unwrap();
    let headers = serde_json::json!({
        "webhook-id": hit.id, "webhook-timestamp": hit.timestamp, "webhook-signature": hit.signature,
    });
    for secret in [SECRET_A, SECRET_B] {
        let (ok, text) = verify_with_python(secret, headers.clone(), &body);
        assert!(
            ok,
            "reference verifier rejected our delivery with {secret}: {text}"
        );
        assert!(text.contains("VERIFIED"), "{text}");
        assert!(
            text.contains(&hit.id),
            "the verified payload is our CloudEvent: {text}"
        );
    }
    // And it is a real check: a tampered body is rejected.
    let (ok, text) = verify_with_python(SECRET_A, headers, &body.replace("m00001", "m00002"));
    assert!(!ok, "tampered body verified: {text}");
    assert!(text.contains("REJECTED"), "{text}");
}
