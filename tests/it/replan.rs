//! Adding or removing watched groups between runs must not lose or duplicate other groups' changes.

use groupwatch::app::Daemon;
use groupwatch::sim::{MemberKind, RemovedReason};
use tokio_util::sync::CancellationToken;

use crate::support::{World, key, unique_by_id, user};

async fn daemon(w: &World, groups: &[String]) -> Daemon {
    Daemon::build(w.config_for(groups), CancellationToken::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn adding_a_group_keeps_the_running_batch_cursor_and_loses_nothing() {
    let w = World::new(3, 4, 100).await;
    let (g0, g1, g2) = (
        w.groups[0].clone(),
        w.groups[1].clone(),
        w.groups[2].clone(),
    );
    let first_key;
    let first_link;
    {
        let d = daemon(&w, &[g0.clone(), g1.clone()]).await;
        w.cycle(&d).await;
        first_key = d.plan().batches[0].key.clone();
        first_link = d.store().batch(&first_key).unwrap().unwrap().link;
    }
    // Changes happen while the configuration is being edited.
    w.sim.add_member(&g1, &user(500), MemberKind::User);
    w.sim.add_member(&g2, &user(501), MemberKind::User);
    let d = daemon(&w, &[g0.clone(), g1.clone(), g2.clone()]).await;
    assert_eq!(
        d.plan().batches.len(),
        2,
        "the new group gets its own batch"
    );
    let kept = d.store().batch(&first_key).unwrap().unwrap();
    assert_eq!(
        kept.link, first_link,
        "the running batch keeps its deltaLink"
    );
    w.cycle(&d).await;
    // g1's change arrives once; g2 is new (from_now): its current members are the baseline.
    let got: Vec<_> = w.events().iter().map(key).collect();
    assert_eq!(
        got,
        [("groupwatch.member.added".into(), g1.clone(), user(500))]
    );
    w.sim.add_member(&g2, &user(502), MemberKind::User);
    w.sim.add_member(&g0, &user(503), MemberKind::User);
    w.cycle(&d).await;
    let events = w.events();
    unique_by_id(&events);
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn removing_a_group_silences_it_and_keeps_the_others_flowing() {
    let w = World::new(2, 4, 100).await;
    let (g0, g1) = (w.groups[0].clone(), w.groups[1].clone());
    {
        let d = daemon(&w, &[g0.clone(), g1.clone()]).await;
        w.cycle(&d).await;
    }
    w.sim.remove_member(&g0, &user(1), RemovedReason::Deleted);
    w.sim
        .remove_member(&g1, &user(100_001), RemovedReason::Deleted);
    let d = daemon(&w, std::slice::from_ref(&g1)).await;
    assert_eq!(d.plan().batches[0].groups, vec![g1.clone()]);
    w.cycle(&d).await;
    let got: Vec<_> = w.events().iter().map(key).collect();
    assert_eq!(
        got,
        [(
            "groupwatch.member.removed".into(),
            g1.clone(),
            user(100_001)
        )]
    );
    assert!(
        d.store().group("sim", &g0).unwrap().is_none(),
        "g0's state is forgotten"
    );
    assert!(d.store().present_members("sim", &g0).unwrap().is_empty());
}

#[tokio::test]
async fn turning_on_owners_restarts_the_batch_as_a_resync_without_duplicates() {
    let mut w = World::new(1, 4, 100).await;
    let g = w.groups[0].clone();
    {
        let d = w.daemon().await;
        w.cycle(&d).await;
    }
    w.sim.add_member(&g, &user(9), MemberKind::User);
    w.sim.add_owner(&g, &user(0));
    w.extra = "track_owners = true".into();
    let d = w.daemon().await;
    w.cycle(&d).await;
    let mut got: Vec<_> = w.events().iter().map(key).collect();
    got.sort();
    // The member change is a net difference; owners are new, so they are a silent baseline.
    assert_eq!(
        got,
        [("groupwatch.member.added".into(), g.clone(), user(9))]
    );
    w.sim.add_owner(&g, &user(1));
    w.cycle(&d).await;
    assert_eq!(w.events().len(), 2);
    assert_eq!(w.events()[1]["type"], "groupwatch.owner.added");
}

#[tokio::test]
async fn a_group_watched_again_after_removal_gets_its_own_first_round() {
    let w = World::new(2, 4, 100).await;
    let (g0, g1) = (w.groups[0].clone(), w.groups[1].clone());
    let first_key;
    {
        let d = daemon(&w, &[g0.clone(), g1.clone()]).await;
        w.cycle(&d).await;
        first_key = d.plan().batches[0].key.clone();
    }
    {
        // g0 is dropped while its batch keeps the deltaLink (g1 is still watched there).
        let d = daemon(&w, std::slice::from_ref(&g1)).await;
        w.cycle(&d).await;
    }
    // Changes while g0 is not watched are not ours to report.
    w.sim.remove_member(&g0, &user(1), RemovedReason::Deleted);
    let d = daemon(&w, &[g0.clone(), g1.clone()]).await;
    let batch_of_g0 = d
        .plan()
        .batches
        .iter()
        .find(|b| b.groups.contains(&g0))
        .unwrap()
        .key
        .clone();
    assert_ne!(
        batch_of_g0, first_key,
        "a re-watched group starts in a batch of its own"
    );
    w.cycle(&d).await;
    assert!(
        w.events().is_empty(),
        "the new first round is a silent from_now baseline: {:?}",
        w.events()
    );
    // After the baseline, real changes of g0 are reported; a removal needs the baseline to be seen.
    w.sim.remove_member(&g0, &user(2), RemovedReason::Deleted);
    w.sim.add_member(&g1, &user(100_900), MemberKind::User);
    w.cycle(&d).await;
    let mut got: Vec<_> = w.events().iter().map(key).collect();
    got.sort();
    let mut want = vec![
        ("groupwatch.member.removed".to_string(), g0.clone(), user(2)),
        (
            "groupwatch.member.added".to_string(),
            g1.clone(),
            user(100_900),
        ),
    ];
    want.sort();
    assert_eq!(got, want);
}
