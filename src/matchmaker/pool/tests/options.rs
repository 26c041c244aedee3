//! Unit tests of roles (composition), teams, widening, expiry, backfill and the checks
//! on a custom processor's groups.

use super::*;

fn roles(counts: &[(&str, usize)]) -> CompositionRule {
    CompositionRule {
        property: "role".into(),
        counts: counts.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
    }
}

fn composition(counts: &[(&str, usize)]) -> TicketOptions {
    TicketOptions {
        composition: Some(roles(counts)),
        ..TicketOptions::default()
    }
}

fn teams(count: usize, balance: Option<&str>) -> TicketOptions {
    TicketOptions {
        teams: Some(TeamRule {
            count,
            balance: balance.map(str::to_owned),
        }),
        ..TicketOptions::default()
    }
}

const TANK_HEALER_3DPS: &[(&str, usize)] = &[("tank", 1), ("healer", 1), ("dps", 3)];

fn now(f: &Fixture) -> Instant {
    f.t0 + Duration::from_secs(10_000)
}

/// Each group's users as (ticket, team), tickets in group order.
fn teams_of(m: &Matched) -> Vec<(TicketId, Option<u32>)> {
    let mut out: Vec<(TicketId, Option<u32>)> =
        m.entries.iter().map(|e| (e.ticket, e.team)).collect();
    out.dedup();
    out
}

#[test]
fn a_composition_is_met_exactly() {
    let mut f = Fixture::new(PoolConfig::default());
    let role = |f: &mut Fixture, r: &str| {
        f.add(
            add(5, 5)
                .s("role", r)
                .options(composition(TANK_HEALER_3DPS)),
        )
    };
    let tank1 = role(&mut f, "tank");
    let tank2 = role(&mut f, "tank");
    let dps1 = role(&mut f, "dps");
    let dps2 = role(&mut f, "dps");
    let healer = role(&mut f, "healer");
    // Not yet: two dps only.
    assert!(f.process().is_empty());
    let dps3 = role(&mut f, "dps");
    let groups = f.process();
    assert_eq!(groups.len(), 1);
    let mut got = groups[0].clone();
    got.sort();
    let mut want = vec![tank1, dps1, dps2, healer, dps3];
    want.sort();
    assert_eq!(got, want);
    // The second tank waits: a group holds exactly one.
    assert_eq!(f.pool.len(), 1);
    assert!(f.pool.tickets.contains_key(&tank2));
}

#[test]
fn a_party_counts_by_its_members_values() {
    let mut f = Fixture::new(PoolConfig::default());
    let party = f.add(
        add(5, 5)
            .party(2)
            .s("role", "tank, dps")
            .options(composition(TANK_HEALER_3DPS)),
    );
    // Two more tanks cannot join; a healer and two dps complete it.
    f.add(
        add(5, 5)
            .s("role", "tank")
            .options(composition(TANK_HEALER_3DPS)),
    );
    let h = f.add(
        add(5, 5)
            .s("role", "healer")
            .options(composition(TANK_HEALER_3DPS)),
    );
    let d1 = f.add(
        add(5, 5)
            .s("role", "dps")
            .options(composition(TANK_HEALER_3DPS)),
    );
    let d2 = f.add(
        add(5, 5)
            .s("role", "dps")
            .options(composition(TANK_HEALER_3DPS)),
    );
    let groups = f.process();
    assert_eq!(groups, vec![vec![party, h, d1, d2]]);
}

#[test]
fn tickets_with_other_compositions_or_none_never_meet() {
    let mut f = Fixture::new(PoolConfig::default());
    f.add(
        add(2, 2)
            .s("role", "tank")
            .options(composition(&[("tank", 1), ("dps", 1)])),
    );
    f.add(
        add(2, 2)
            .s("role", "dps")
            .options(composition(&[("tank", 1), ("dps", 1), ("x", 0)])),
    );
    f.add(add(2, 2).s("role", "dps"));
    assert!(f.process().is_empty());
    let d = f.add(
        add(2, 2)
            .s("role", "dps")
            .options(composition(&[("tank", 1), ("dps", 1)])),
    );
    let groups = f.process();
    assert_eq!(groups.len(), 1);
    assert!(groups[0].contains(&d));
}

#[test]
fn composition_mistakes_are_refused_with_a_reason() {
    let mut f = Fixture::new(PoolConfig::default());
    let err = |r: Result<TicketId, PoolError>| match r {
        Err(PoolError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    };
    let m = err(f.try_add(add(5, 5).options(composition(TANK_HEALER_3DPS))));
    assert!(m.contains("needs the string property \"role\""), "{m}");
    let m = err(f.try_add(
        add(5, 5)
            .s("role", "mage")
            .options(composition(TANK_HEALER_3DPS)),
    ));
    assert!(
        m.contains("\"mage\" of property \"role\" is not in the composition"),
        "{m}"
    );
    let m = err(f.try_add(
        add(5, 5)
            .party(2)
            .s("role", "tank")
            .options(composition(TANK_HEALER_3DPS)),
    ));
    assert!(m.contains("lists 1 values for 2 members"), "{m}");
    let m = err(f.try_add(
        add(2, 4)
            .s("role", "tank")
            .options(composition(TANK_HEALER_3DPS)),
    ));
    assert!(m.contains("the composition makes groups of 5"), "{m}");
    let m = err(f.try_add(
        add(5, 5)
            .party(2)
            .s("role", "tank,tank")
            .options(composition(TANK_HEALER_3DPS)),
    ));
    assert!(m.contains("more \"tank\" than one team takes"), "{m}");
    let m = err(f.try_add(add(4, 4).options(teams(3, None))));
    assert!(m.contains("multiple of 3 teams"), "{m}");
    let m = err(f.try_add(add(4, 4).party(3).options(teams(2, None))));
    assert!(m.contains("does not fit in a team of 2"), "{m}");
}

#[test]
fn teams_keep_parties_whole_and_balance_the_sums() {
    let mut f = Fixture::new(PoolConfig::default());
    let t = |f: &mut Fixture, skill: f64| {
        f.add(add(4, 4).n("skill", skill).options(teams(2, Some("skill"))))
    };
    let a = t(&mut f, 10.0);
    let b = t(&mut f, 9.0);
    let c = t(&mut f, 1.0);
    let d = t(&mut f, 2.0);
    let groups = f.pool.process(now(&f));
    assert_eq!(groups.len(), 1);
    let placed = teams_of(&groups[0]);
    let team = |id: TicketId| {
        placed
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, tm)| *tm)
    };
    // 10 and 9 on different teams: sums 11/11 or 12/10, never 19/3.
    assert_ne!(team(a), team(b));
    assert_ne!(team(c), team(d));
    assert!(placed.iter().all(|(_, tm)| tm.is_some()));

    // A party of two is never split: two teams of 2 with a party and two solos.
    let mut f = Fixture::new(PoolConfig::default());
    let p = f.add(add(4, 4).party(2).options(teams(2, None)));
    let s1 = f.add(add(4, 4).options(teams(2, None)));
    let s2 = f.add(add(4, 4).options(teams(2, None)));
    let groups = f.pool.process(now(&f));
    assert_eq!(groups.len(), 1);
    let by_user: Vec<(TicketId, Option<u32>)> = groups[0]
        .entries
        .iter()
        .map(|e| (e.ticket, e.team))
        .collect();
    let party_teams: Vec<_> = by_user
        .iter()
        .filter(|(t, _)| *t == p)
        .map(|(_, tm)| *tm)
        .collect();
    assert_eq!(party_teams.len(), 2);
    assert_eq!(party_teams[0], party_teams[1]);
    let solo = |id| by_user.iter().find(|(t, _)| *t == id).map(|(_, tm)| *tm);
    assert_eq!(solo(s1), solo(s2));
    assert_ne!(solo(s1), Some(party_teams[0]));
}

#[test]
fn teams_with_a_composition_fill_every_team_exactly() {
    let mut f = Fixture::new(PoolConfig::default());
    let opts = || TicketOptions {
        composition: Some(roles(&[("tank", 1), ("dps", 2)])),
        teams: Some(TeamRule {
            count: 2,
            balance: None,
        }),
        ..TicketOptions::default()
    };
    let mut ids = Vec::new();
    for r in ["tank", "dps", "dps", "dps", "tank"] {
        ids.push(f.add(add(6, 6).s("role", r).options(opts())));
    }
    assert!(f.pool.process(now(&f)).is_empty(), "one dps short");
    // A party of a tank and a dps completes it.
    f.add(add(6, 6).party(2).s("role", "dps,tank").options(opts()));
    let groups = f.pool.process(now(&f));
    assert_eq!(groups.len(), 1);
    let m = &groups[0];
    for team in 0..2u32 {
        // Count each ticket's values once (a party's entries share its property).
        let mut seen: Vec<TicketId> = Vec::new();
        let mut count = BTreeMap::<&str, usize>::new();
        for e in m.entries.iter().filter(|e| e.team == Some(team)) {
            if seen.contains(&e.ticket) {
                continue;
            }
            seen.push(e.ticket);
            for r in e.properties.strings["role"].split(',') {
                *count.entry(r.trim()).or_default() += 1;
            }
        }
        assert_eq!(
            count,
            [("dps", 2), ("tank", 1)].into_iter().collect(),
            "team {team}"
        );
    }
    assert_eq!(m.entries.len(), 6);
    assert!(ids
        .iter()
        .all(|id| m.entries.iter().any(|e| e.ticket == *id) || f.pool.tickets.contains_key(id)));
}

#[test]
fn a_fallback_query_widens_after_its_passes() {
    let mut f = Fixture::new(PoolConfig::default());
    let a = f.add(
        add(2, 2)
            .query("+properties.mode:ranked")
            .s("mode", "casual")
            .options(TicketOptions {
                fallback: Some((Query::parse("*").expect("query"), 2)),
                ..TicketOptions::default()
            }),
    );
    let b = f.add(add(2, 2).s("mode", "casual"));
    assert!(f.process().is_empty(), "pass 1: ranked only");
    assert!(f.process().is_empty(), "pass 2: ranked only");
    assert_eq!(
        f.process(),
        vec![vec![a, b]],
        "pass 3: the fallback applies"
    );
}

#[test]
fn a_fallback_that_ranks_joins_the_ranking_index() {
    let mut f = Fixture::new(PoolConfig::default());
    let old = f.add(add(2, 2).s("mode", "casual").options(TicketOptions {
        fallback: Some((Query::parse("properties.mode:ranked").expect("query"), 1)),
        ..TicketOptions::default()
    }));
    // `old` is indifferent at first, then prefers ranked tickets.
    f.add(
        add(2, 2)
            .s("mode", "casual")
            .session(900)
            .query("+properties.x:1"),
    );
    f.process();
    let casual = f.add(add(2, 2).s("mode", "casual"));
    let ranked = f.add(add(2, 2).s("mode", "ranked"));
    assert_eq!(f.process(), vec![vec![old, ranked]]);
    assert!(f.pool.tickets.contains_key(&casual));
}

#[test]
fn an_unmatched_ticket_expires_after_its_passes() {
    let mut f = Fixture::new(PoolConfig::default());
    let lonely = f.add(add(2, 2).query("+properties.x:1").options(TicketOptions {
        expires_after: Some(2),
        ..TicketOptions::default()
    }));
    let other = f.add(add(2, 2).query("+properties.y:1"));
    f.process();
    assert!(f.pool.take_expired().is_empty());
    f.process();
    let expired = f.pool.take_expired();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].ticket, lonely);
    assert_eq!(expired[0].notify.len(), 1, "its member is told");
    assert!(!f.pool.tickets.contains_key(&lonely));
    assert!(
        f.pool.tickets.contains_key(&other),
        "no expiry without expires_after"
    );
    assert!(f.pool.take_expired().is_empty());
}

#[test]
fn a_backfill_fills_its_seats_over_passes() {
    let mut f = Fixture::new(PoolConfig::default());
    let match_id = MatchId::new_random();
    let bf = TicketSpec::backfill(
        Query::parse("+properties.mode:ranked").expect("query"),
        Properties::default(),
        match_id,
        3,
    )
    .expect("backfill");
    let bf = f.pool.add(bf, f.t0).expect("add");
    f.n += 1;
    // Counts of the candidates do not apply: a 1v1 ticket fills a seat too.
    let a = f.add(add(2, 2).s("mode", "ranked"));
    let b = f.add(add(2, 4).party(2).s("mode", "ranked"));
    f.add(add(2, 2).s("mode", "casual"));
    let groups = f.pool.process(now(&f));
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].backfill, Some(match_id));
    let tickets: Vec<TicketId> = teams_of(&groups[0]).into_iter().map(|(t, _)| t).collect();
    assert_eq!(tickets, vec![a, b]);
    assert!(!tickets.contains(&bf), "the backfill ticket has no users");
    // All 3 seats were filled: the backfill is gone.
    assert!(f.pool.backfills().is_empty());

    // With more seats than players, it keeps the rest open.
    let bf = TicketSpec::backfill(
        Query::parse("*").expect("q"),
        Properties::default(),
        match_id,
        3,
    )
    .expect("backfill");
    let bf = f.pool.add(bf, f.t0).expect("add");
    let c = f.add(add(2, 2));
    let groups = f.pool.process(now(&f));
    assert_eq!(groups.len(), 1);
    assert_eq!(teams_of(&groups[0]).len(), 2, "the casual ticket and c");
    assert!(groups[0].entries.iter().any(|e| e.ticket == c));
    assert_eq!(f.pool.tickets[&bf].spec.max_count, 1, "one seat left");
    f.pool.remove_backfill(bf).expect("cancel");
    assert!(f.pool.is_empty());
}

#[test]
fn a_backfill_is_never_anyone_elses_candidate() {
    let mut f = Fixture::new(PoolConfig::default());
    let a = f.add(add(2, 2));
    let bf = TicketSpec::backfill(
        Query::parse("*").expect("q"),
        Properties::default(),
        MatchId::new_random(),
        1,
    )
    .expect("backfill");
    f.pool
        .add(bf, f.t0 + Duration::from_secs(100))
        .expect("add");
    // `a` searches first (older) and finds nobody; the backfill then takes it.
    let groups = f.pool.process(now(&f));
    assert_eq!(groups.len(), 1);
    assert!(groups[0].backfill.is_some());
    assert_eq!(groups[0].entries[0].ticket, a);
}

#[test]
fn a_processors_groups_are_checked_before_they_form() {
    let mut f = Fixture::new(PoolConfig::default());
    let a = f.add(add(2, 3));
    let b = f.add(add(2, 3));
    let c = f.add(add(3, 3));
    let d = f.add(add(2, 2).session(50));
    let e = f.add(add(2, 2).session(50));
    let x = f.add(add(2, 2).options(TicketOptions {
        expires_after: Some(1),
        ..TicketOptions::default()
    }));
    let started = f.pool.begin_custom_pass();
    let snapshot = f.pool.snapshot(now(&f));
    assert_eq!(snapshot.len(), 6);
    assert_eq!(snapshot[0].ticket, a);
    assert_eq!(snapshot[0].passes, 1);
    let ghost = TicketId::new_random();
    let groups = vec![
        vec![a, b],     // valid
        vec![b, c],     // b used twice
        vec![c],        // one ticket
        vec![c, ghost], // not in the pool
        vec![d, e],     // one session twice
        vec![c, x],     // 2 does not suit c (3..3)
    ];
    let (formed, rejected) = f.pool.finish_custom_pass(groups, started, now(&f));
    assert_eq!(formed.len(), 1);
    assert_eq!(
        teams_of(&formed[0])
            .into_iter()
            .map(|(t, _)| t)
            .collect::<Vec<_>>(),
        vec![a, b]
    );
    let reasons: Vec<&str> = rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(rejected.len(), 5, "{reasons:?}");
    assert!(reasons[0].contains("used twice"));
    assert!(reasons[1].contains("at least two tickets"));
    assert!(reasons[2].contains("not in the pool"));
    assert!(reasons[3].contains("share a session"));
    assert!(reasons[4].contains("does not suit ticket"));
    // Expiry still applies to a custom pass.
    let expired = f.pool.take_expired();
    assert_eq!(
        expired.iter().map(|c| c.ticket).collect::<Vec<_>>(),
        vec![x]
    );
    assert_eq!(f.pool.len(), 3);
}
