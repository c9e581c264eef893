use super::*;

fn t(min: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-03-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + Duration::minutes(min)
}

fn ev(id: &str, created_min: i64, ck: &str) -> GraphEvent {
    GraphEvent {
        id: Some(id.into()),
        created_date_time: Some(t(created_min).to_rfc3339()),
        change_key: Some(ck.into()),
        subject: Some(format!("subject {id}")),
        ..GraphEvent::default()
    }
}

fn policy() -> CalendarPolicy {
    CalendarPolicy {
        overlap: Duration::minutes(10),
        emit_updates: false,
        emit_deletes: false,
        baseline_emits: false,
    }
}

/// Applies a decision to an in-memory "store", like the transaction does.
fn apply(seen: &mut HashMap<[u8; 16], SeenEvent>, d: &Decision) -> CalendarGroupState {
    for k in &d.removals {
        seen.remove(k);
    }
    for (k, v) in &d.upserts {
        seen.insert(*k, v.clone());
    }
    d.state.clone()
}

fn step(
    seen: &mut HashMap<[u8; 16], SeenEvent>,
    listed: &[GraphEvent],
    state: &CalendarGroupState,
    p: &CalendarPolicy,
    now: DateTime<Utc>,
) -> CalendarGroupState {
    let d = decide(listed, seen, state, p, now);
    apply(seen, &d)
}

fn created_ids(d: &Decision) -> Vec<String> {
    d.emit
        .iter()
        .filter(|e| e.change == EventChange::Created)
        .map(|e| e.event.id.clone().unwrap())
        .collect()
}

#[test]
fn from_now_first_poll_records_silently_then_new_ids_are_emitted_once() {
    let mut seen = HashMap::new();
    let p = policy();
    let d = decide(
        &[ev("a", -5, "1")],
        &seen,
        &CalendarGroupState::default(),
        &p,
        t(0),
    );
    assert_eq!((d.emit.len(), d.baseline), (0, 1));
    assert_eq!(
        floor(&CalendarGroupState::default(), &p, t(0)),
        Some(t(-10))
    );
    let s = apply(&mut seen, &d);
    assert_eq!(
        s.watermark,
        Some(t(0)),
        "first poll: the watermark is at least now"
    );
    let listed = [ev("a", -5, "1"), ev("b", 1, "1")];
    let d = decide(&listed, &seen, &s, &p, t(2));
    assert_eq!(created_ids(&d), ["b"]);
    let s = apply(&mut seen, &d);
    let d = decide(&listed, &seen, &s, &p, t(3));
    assert!(d.emit.is_empty(), "re-listed inside the overlap: silent");
    assert_eq!(d.unchanged, 2);
}

#[test]
fn late_surfacing_event_inside_the_overlap_is_emitted_once() {
    let mut seen = HashMap::new();
    let p = policy();
    let s = step(&mut seen, &[], &CalendarGroupState::default(), &p, t(0));
    let s = step(&mut seen, &[ev("new", 4, "1")], &s, &p, t(5));
    // Created at minute 3 but visible only now, after a newer event moved the watermark to 4.
    let listed = [ev("new", 4, "1"), ev("late", 3, "1")];
    assert_eq!(floor(&s, &p, t(6)), Some(t(-6)));
    let d = decide(&listed, &seen, &s, &p, t(6));
    assert_eq!(created_ids(&d), ["late"]);
    let s = apply(&mut seen, &d);
    assert!(decide(&listed, &seen, &s, &p, t(7)).emit.is_empty());
}

#[test]
fn events_behind_the_window_are_ignored_and_pruned() {
    let mut seen = HashMap::new();
    let p = policy();
    let s = step(
        &mut seen,
        &[ev("a", 0, "1")],
        &CalendarGroupState::default(),
        &p,
        t(0),
    );
    let s = step(
        &mut seen,
        &[ev("a", 0, "1"), ev("b", 30, "1")],
        &s,
        &p,
        t(31),
    );
    assert_eq!(s.watermark, Some(t(30)));
    assert!(
        !seen.contains_key(&seen_key("a")),
        "a is behind 30 - 10 and pruned"
    );
    assert!(seen.contains_key(&seen_key("b")));
    // The fallback listing may still return a (below the floor): it is not new.
    let d = decide(&[ev("b", 30, "1"), ev("a", 0, "1")], &seen, &s, &p, t(32));
    assert!(d.emit.is_empty());
}

#[test]
fn repeated_event_in_one_listing_is_one_event() {
    let seen = HashMap::new();
    let s = CalendarGroupState {
        watermark: Some(t(0)),
        ..Default::default()
    };
    let d = decide(
        &[ev("x", 1, "1"), ev("x", 1, "1")],
        &seen,
        &s,
        &policy(),
        t(2),
    );
    assert_eq!(created_ids(&d), ["x"]);
    assert_eq!(d.unchanged, 1);
}

#[test]
fn existing_as_added_lists_everything_and_emits_it() {
    let p = CalendarPolicy {
        baseline_emits: true,
        ..policy()
    };
    assert_eq!(floor(&CalendarGroupState::default(), &p, t(0)), None);
    let d = decide(
        &[ev("old", -5000, "1")],
        &HashMap::new(),
        &CalendarGroupState::default(),
        &p,
        t(0),
    );
    assert_eq!(created_ids(&d), ["old"]);
    assert!(d.upserts.is_empty(), "far behind the next window: not kept");
}

#[test]
fn updates_and_deletes_only_when_asked_with_rising_versions() {
    let mut seen = HashMap::new();
    let p = CalendarPolicy {
        emit_updates: true,
        emit_deletes: true,
        ..policy()
    };
    let s = step(&mut seen, &[], &CalendarGroupState::default(), &p, t(0));
    let s = step(&mut seen, &[ev("e", 1, "1")], &s, &p, t(1));
    let d = decide(&[ev("e", 1, "2")], &seen, &s, &p, t(2));
    assert_eq!(d.emit[0].change, EventChange::Updated);
    assert_eq!(d.emit[0].version, 2);
    let s = apply(&mut seen, &d);
    let d = decide(&[], &seen, &s, &p, t(3));
    assert!(d.emit.is_empty(), "one miss is only a deletion candidate");
    let s = apply(&mut seen, &d);
    let d = decide(&[], &seen, &s, &p, t(4));
    assert_eq!(d.emit[0].change, EventChange::Deleted);
    assert_eq!(d.emit[0].event.id.as_deref(), Some("e"));
    assert_eq!(d.emit[0].version, 3);
    let s = apply(&mut seen, &d);
    assert!(decide(&[], &seen, &s, &p, t(5)).emit.is_empty());

    let quiet = policy();
    let mut seen = HashMap::new();
    let s = step(&mut seen, &[], &CalendarGroupState::default(), &quiet, t(0));
    let s = step(&mut seen, &[ev("e", 1, "1")], &s, &quiet, t(1));
    let d = decide(&[ev("e", 1, "2")], &seen, &s, &quiet, t(2));
    assert!(d.emit.is_empty(), "updates are off by default");
    let s = apply(&mut seen, &d);
    let s = step(&mut seen, &[], &s, &quiet, t(3));
    assert!(
        decide(&[], &seen, &s, &quiet, t(4)).emit.is_empty(),
        "deletes are off by default"
    );
}

fn deletes() -> CalendarPolicy {
    CalendarPolicy {
        emit_deletes: true,
        ..policy()
    }
}

fn kinds(d: &Decision) -> Vec<(EventChange, String)> {
    d.emit
        .iter()
        .map(|e| (e.change, e.event.id.clone().unwrap()))
        .collect()
}

#[test]
fn an_event_skipped_once_by_a_shifted_skip_page_is_neither_deleted_nor_recreated() {
    let mut seen = HashMap::new();
    let p = deletes();
    let all = [ev("a", 1, "1"), ev("b", 2, "1"), ev("c", 3, "1")];
    let s = step(&mut seen, &[], &CalendarGroupState::default(), &p, t(0));
    let s = step(&mut seen, &all, &s, &p, t(4));
    // An event deleted between two page requests moved "b" up onto the page already fetched: missed once.
    let d = decide(&[ev("a", 1, "1"), ev("c", 3, "1")], &seen, &s, &p, t(5));
    assert!(d.emit.is_empty(), "{:?}", kinds(&d));
    assert!(d.removals.is_empty());
    let s = apply(&mut seen, &d);
    assert_eq!(seen[&seen_key("b")].missed, 1, "marked, not forgotten");
    let d = decide(&all, &seen, &s, &p, t(6));
    assert!(d.emit.is_empty(), "listed again: no event.created either");
    let s = apply(&mut seen, &d);
    assert_eq!(seen[&seen_key("b")].missed, 0, "the mark is cleared");
    // A later single miss starts counting from zero again.
    let d = decide(&[ev("a", 1, "1"), ev("c", 3, "1")], &seen, &s, &p, t(7));
    assert!(d.emit.is_empty());
}

#[test]
fn a_real_delete_is_emitted_once_at_the_second_consecutive_miss() {
    let mut seen = HashMap::new();
    let p = deletes();
    let s = step(&mut seen, &[], &CalendarGroupState::default(), &p, t(0));
    let s = step(
        &mut seen,
        &[ev("a", 1, "1"), ev("b", 2, "1"), ev("x", 2, "1")],
        &s,
        &p,
        t(3),
    );
    let rest = [ev("a", 1, "1")];
    let d = decide(&rest, &seen, &s, &p, t(4));
    assert!(d.emit.is_empty());
    let s = apply(&mut seen, &d);
    let d = decide(&rest, &seen, &s, &p, t(5));
    assert_eq!(
        kinds(&d),
        [
            (EventChange::Deleted, "b".to_owned()),
            (EventChange::Deleted, "x".to_owned())
        ],
        "oldest first, ties by id"
    );
    let s = apply(&mut seen, &d);
    assert!(decide(&rest, &seen, &s, &p, t(6)).emit.is_empty());
}

#[test]
fn changes_of_one_poll_are_emitted_oldest_first() {
    let mut seen = HashMap::new();
    let p = CalendarPolicy {
        emit_updates: true,
        ..policy()
    };
    let s = step(&mut seen, &[], &CalendarGroupState::default(), &p, t(0));
    let s = step(&mut seen, &[ev("u", 2, "1")], &s, &p, t(3));
    // Newest first, as the listing orders them; "y" and "x" share a createdDateTime.
    let listed = [
        ev("z", 5, "1"),
        ev("y", 4, "1"),
        ev("x", 4, "1"),
        ev("u", 2, "2"),
        ev("w", 1, "1"),
    ];
    let d = decide(&listed, &seen, &s, &p, t(6));
    let got: Vec<_> = kinds(&d).into_iter().map(|(_, id)| id).collect();
    assert_eq!(got, ["w", "u", "x", "y", "z"]);
    assert_eq!(d.emit[1].change, EventChange::Updated);
}

#[test]
fn events_without_id_or_timestamp_are_skipped() {
    let mut bad = ev("x", 0, "1");
    bad.created_date_time = Some("String (timestamp)".into());
    let d = decide(
        &[bad, GraphEvent::default()],
        &HashMap::new(),
        &CalendarGroupState::default(),
        &policy(),
        t(0),
    );
    assert_eq!(d.skipped, 2);
}

#[test]
fn raising_the_overlap_never_calls_events_from_before_the_baseline_new() {
    let mut seen = HashMap::new();
    let p = policy(); // 10 minutes
    // from_now at t(0): the window starts at t(-10); "old" (t(-30)) is below it and not listed.
    let s = step(
        &mut seen,
        &[ev("recent", -5, "1")],
        &CalendarGroupState::default(),
        &p,
        t(0),
    );
    assert_eq!(s.baseline_floor, Some(t(-10)));
    let s = step(
        &mut seen,
        &[ev("a", 30, "1"), ev("recent", -5, "1")],
        &s,
        &p,
        t(31),
    );
    // The operator raises the overlap to two hours: the window now reaches "old" and "recent".
    let wide = CalendarPolicy {
        overlap: Duration::minutes(120),
        ..p
    };
    let d = decide(
        &[
            ev("c", 40, "1"),
            ev("a", 30, "1"),
            ev("recent", -5, "1"),
            ev("old", -30, "1"),
        ],
        &seen,
        &s,
        &wide,
        t(41),
    );
    // "recent" was part of the baseline and has been pruned, "old" was never listed: both existed before
    // the group was watched, so only "c" is new.
    assert_eq!(created_ids(&d), ["c"]);
    let s = apply(&mut seen, &d);
    assert!(
        seen.contains_key(&seen_key("old")),
        "old is tracked, silently"
    );
    assert!(
        decide(&[ev("old", -30, "1")], &seen, &s, &wide, t(42))
            .emit
            .is_empty()
    );
}

#[test]
fn a_pruned_event_listed_again_comes_back_with_its_first_version() {
    let mut seen = HashMap::new();
    let p = policy();
    let s = step(&mut seen, &[], &CalendarGroupState::default(), &p, t(0));
    // "a" is new at t(5) and emitted; later it falls behind the window and is pruned.
    let d = decide(&[ev("a", 5, "1")], &seen, &s, &p, t(6));
    assert_eq!(created_ids(&d), ["a"]);
    let s = apply(&mut seen, &d);
    let s = step(&mut seen, &[ev("b", 60, "1")], &s, &p, t(61));
    assert!(!seen.contains_key(&seen_key("a")), "a was pruned");
    let wide = CalendarPolicy {
        overlap: Duration::minutes(120),
        ..p
    };
    let d = decide(
        &[ev("b", 60, "1"), ev("a", 5, "1")],
        &seen,
        &s,
        &wide,
        t(62),
    );
    let again: Vec<_> = d
        .emit
        .iter()
        .map(|e| (e.event.id.clone().unwrap(), e.version))
        .collect();
    // Emitted again, but as version 1 of "created": the same deterministic CloudEvent id as the first time,
    // so a consumer drops it as a repeat (at-least-once with stable ids).
    assert_eq!(again, [("a".to_owned(), 1)]);
}

#[test]
fn records_without_an_id_are_never_reported_deleted() {
    let mut seen = HashMap::new();
    let p = policy();
    // Seen while emit_deletes was off: the record has no Outlook id.
    let s = step(
        &mut seen,
        &[ev("a", 0, "1")],
        &CalendarGroupState::default(),
        &p,
        t(0),
    );
    let del = CalendarPolicy {
        emit_deletes: true,
        ..p
    };
    let s = step(&mut seen, &[], &s, &del, t(1));
    let d = decide(&[], &seen, &s, &del, t(2));
    assert!(
        d.emit.iter().all(|e| e.event.id.is_some()),
        "no deletion without an id: {:?}",
        d.emit
    );
}

#[test]
fn with_an_existing_as_added_baseline_a_wider_window_still_repeats_nothing() {
    let mut seen = HashMap::new();
    let p = CalendarPolicy {
        baseline_emits: true,
        ..policy()
    };
    let d = decide(
        &[ev("old", -30, "1")],
        &seen,
        &CalendarGroupState::default(),
        &p,
        t(0),
    );
    assert_eq!(created_ids(&d), ["old"], "existing_as_added emits it once");
    let s = apply(&mut seen, &d);
    let s = step(&mut seen, &[ev("b", 60, "1")], &s, &p, t(61));
    assert!(!seen.contains_key(&seen_key("old")), "pruned");
    let wide = CalendarPolicy {
        overlap: Duration::minutes(240),
        ..p
    };
    let d = decide(
        &[ev("b", 60, "1"), ev("old", -30, "1")],
        &seen,
        &s,
        &wide,
        t(62),
    );
    assert!(
        d.emit.is_empty(),
        "a from_now subscription sharing the group never got it: no late \"created\" {:?}",
        d.emit
    );
}
