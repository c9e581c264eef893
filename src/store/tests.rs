use std::collections::HashMap;

use super::*;
use crate::change::Observation;

fn obs(group: &str, member: &str, present: bool) -> Observation {
    Observation {
        group: group.into(),
        rel: Relationship::Members,
        member: member.into(),
        member_type: "user".into(),
        present,
        reason: (!present).then(|| "deleted".into()),
    }
}

fn ctx(emit_baseline: bool) -> EmitContext {
    EmitContext {
        connection: "c".into(),
        tenant: "t".into(),
        detected_at: Utc::now(),
        routes: HashMap::from([(
            "g".to_string(),
            GroupRoute {
                sinks: vec!["a".into(), "b".into()],
                baseline_sinks: if emit_baseline {
                    vec!["a".into(), "b".into()]
                } else {
                    Vec::new()
                },
            },
        )]),
    }
}

fn commit(
    store: &Store,
    before: &BatchRecord,
    link: &str,
    mid_round: bool,
    o: &[Observation],
    ctx: &EmitContext,
) -> (BatchRecord, PageOutcome) {
    let mut after = before.clone();
    after.link = Some(link.into());
    after.mid_round = mid_round;
    let end = (!mid_round && before.full_round).then(|| RoundEnd {
        stale: store.stale_links("c", &["g".into()], before.epoch).unwrap(),
        groups: vec!["g".into()],
    });
    if !mid_round {
        after.full_round = false;
    }
    let out = store
        .commit_page(&PageInput {
            batch_key: "c/1",
            before,
            after: &after,
            observations: o,
            deleted_groups: &[],
            ctx,
            round_end: end.as_ref(),
        })
        .unwrap();
    (after, out)
}

#[test]
fn cursor_moves_with_the_page_and_rows_fan_out_per_sink() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let b0 = BatchRecord::new("c", vec!["g".into()], false);
    let (b1, out) = commit(
        &store,
        &b0,
        "next-1",
        true,
        &[obs("g", "u1", true)],
        &ctx(true),
    );
    assert_eq!((out.events, out.rows), (1, 2));
    assert_eq!(store.batch("c/1").unwrap().unwrap(), b1);
    assert_eq!(store.outbox_depth("a", 10), 1);
    assert_eq!(store.outbox_depth("b", 10), 1);
}

#[test]
fn from_now_baseline_records_silently_then_emits_later_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let c = ctx(false);
    let b0 = BatchRecord::new("c", vec!["g".into()], false);
    let (b1, out) = commit(&store, &b0, "delta-1", false, &[obs("g", "u1", true)], &c);
    assert_eq!((out.events, out.baseline), (0, 1));
    assert!(store.group("c", "g").unwrap().unwrap().known);
    let (_, out) = commit(&store, &b1, "delta-2", false, &[obs("g", "u1", false)], &c);
    assert_eq!(out.events, 1);
}

#[test]
fn recommitting_a_page_after_a_crash_yields_the_same_ids_and_no_extra_event() {
    // Two stores fed the same pages: same ids (determinism across processes).
    let run = || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let c = ctx(true);
        let b0 = BatchRecord::new("c", vec!["g".into()], false);
        let (b1, o1) = commit(&store, &b0, "d1", false, &[obs("g", "u1", true)], &c);
        let (_, o2) = commit(&store, &b1, "d2", false, &[obs("g", "u1", false)], &c);
        // The same page again (as if the cursor had not moved): state says nothing changed.
        let (_, o3) = commit(&store, &b1, "d2", false, &[obs("g", "u1", false)], &c);
        assert_eq!(o3.events, 0);
        [o1.ids, o2.ids].concat()
    };
    let a = run();
    assert_eq!(a.len(), 2);
    assert_eq!(a, run());
}

#[test]
fn completed_resync_removes_links_it_did_not_see() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let c = ctx(false);
    let b0 = BatchRecord::new("c", vec!["g".into()], false);
    let page = [obs("g", "u1", true), obs("g", "u2", true)];
    let (mut b1, _) = commit(&store, &b0, "d1", false, &page, &c);
    b1.restart_full(vec!["g".into()], false);
    // The resync sees u2 (unchanged) and u3 (new); u1 is gone.
    let (_, out) = commit(
        &store,
        &b1,
        "d2",
        false,
        &[obs("g", "u2", true), obs("g", "u3", true)],
        &c,
    );
    assert_eq!(out.events, 2, "{out:?}");
    assert_eq!(out.resync_removals, 1);
    assert_eq!(store.present_members("c", "g").unwrap(), vec!["u2", "u3"]);
}

#[test]
fn acked_rows_leave_the_outbox_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let b0 = BatchRecord::new("c", vec!["g".into()], false);
    let page: Vec<_> = (0..5).map(|i| obs("g", &format!("u{i}"), true)).collect();
    commit(&store, &b0, "d1", false, &page, &ctx(true));
    let rows = store.outbox_peek("a", 3).unwrap();
    let subjects: Vec<_> = rows
        .iter()
        .map(|r| {
            cloudevents::AttributesReader::subject(&r.event)
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(subjects, ["u0", "u1", "u2"]);
    store.outbox_ack(&rows).unwrap();
    assert_eq!(store.outbox_depth("a", 100), 2);
    assert_eq!(store.outbox_depth("b", 100), 5);
}

#[test]
fn reopening_right_after_a_drop_waits_for_sled_to_release_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..30 {
        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("re-open {i}: {e}"));
        store
            .put_batch("b", &BatchRecord::new("c", vec![], false))
            .unwrap();
        drop(store);
    }
}

#[test]
fn a_store_held_open_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).expect_err("a second open must fail");
    assert!(err.to_string().contains("lock"), "{err}");
}

#[tokio::test]
async fn the_relay_flush_is_needed_only_after_rows_were_staged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(
        !store.staged_unflushed(),
        "a fresh store has nothing staged"
    );
    let b0 = BatchRecord::new("c", vec!["g".into()], false);
    commit(
        &store,
        &b0,
        "next-1",
        true,
        &[obs("g", "u1", true)],
        &ctx(true),
    );
    assert!(store.staged_unflushed(), "a page commit staged rows");
    store.flush_staged().await.unwrap();
    assert!(!store.staged_unflushed(), "flushed");
    // Delivering (settling) rows is no staging: no flush per delivered batch.
    let rows = store.pending("a", Utc::now(), 10).unwrap();
    assert_eq!(rows.len(), 1);
    let settled: Vec<_> = rows.into_iter().map(|p| (p, Disposition::Ack)).collect();
    store.settle("a", &settled).unwrap();
    assert!(!store.staged_unflushed());
    let ev = store.pending("b", Utc::now(), 1).unwrap()[0]
        .row
        .event
        .clone();
    store.outbox_push("a", &ev).unwrap();
    assert!(
        store.staged_unflushed(),
        "a replayed or pushed row is staging too"
    );
    store.flush().await.unwrap();
    assert!(!store.staged_unflushed());
}
