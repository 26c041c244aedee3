//! Unit tests of the pool and its pass: exact groups for hand-made pools, and a
//! proptest against a brute-force search.

use super::*;
use quicmatch_protocol::UserId;

struct Fixture {
    pool: Pool,
    t0: Instant,
    n: u64,
}

fn presence(n: u64) -> Presence {
    Presence {
        user_id: UserId(uuid::Uuid::from_u128(u128::from(n))),
        session_id: SessionId(uuid::Uuid::from_u128(u128::from(n))),
        username: format!("p{n}"),
    }
}

struct Add<'a> {
    query: &'a str,
    min: usize,
    max: usize,
    multiple: usize,
    strings: Vec<(&'a str, &'a str)>,
    numbers: Vec<(&'a str, f64)>,
    party: Option<PartyId>,
    members: usize,
    session: Option<u64>,
    options: Option<TicketOptions>,
}

fn add(min: usize, max: usize) -> Add<'static> {
    Add {
        query: "*",
        min,
        max,
        multiple: 1,
        strings: vec![],
        numbers: vec![],
        party: None,
        members: 1,
        session: None,
        options: None,
    }
}

impl<'a> Add<'a> {
    fn query(mut self, q: &'a str) -> Self {
        self.query = q;
        self
    }
    fn multiple(mut self, m: usize) -> Self {
        self.multiple = m;
        self
    }
    fn s(mut self, k: &'a str, v: &'a str) -> Self {
        self.strings.push((k, v));
        self
    }
    fn n(mut self, k: &'a str, v: f64) -> Self {
        self.numbers.push((k, v));
        self
    }
    fn party(mut self, size: usize) -> Self {
        self.party = Some(PartyId::new_random());
        self.members = size;
        self
    }
    fn session(mut self, s: u64) -> Self {
        self.session = Some(s);
        self
    }
    fn options(mut self, o: TicketOptions) -> Self {
        self.options = Some(o);
        self
    }
}

impl Fixture {
    fn new(config: PoolConfig) -> Self {
        Self {
            pool: Pool::new(config),
            t0: Instant::now(),
            n: 0,
        }
    }

    fn with_intervals(max_intervals: u32) -> Self {
        Self::new(PoolConfig {
            max_intervals,
            ..PoolConfig::default()
        })
    }

    /// Adds a ticket one "second" after the previous one.
    fn add(&mut self, a: Add<'_>) -> TicketId {
        self.try_add(a).expect("add")
    }

    fn try_add(&mut self, a: Add<'_>) -> Result<TicketId, PoolError> {
        let members = (0..a.members)
            .map(|_| {
                self.n += 1;
                presence(a.session.unwrap_or(self.n))
            })
            .collect();
        let props = Properties {
            strings: a
                .strings
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            numbers: a.numbers.iter().map(|(k, v)| ((*k).into(), *v)).collect(),
        };
        let spec = TicketSpec::new(
            Query::parse(a.query).expect("query"),
            Counts {
                min_count: a.min,
                max_count: a.max,
                count_multiple: a.multiple,
            },
            props,
            a.party,
            members,
            256,
        )?;
        let spec = match a.options {
            Some(o) => spec.with_options(o)?,
            None => spec,
        };
        let at = self.t0 + Duration::from_secs(self.n);
        self.pool.add(spec, at)
    }

    fn process(&mut self) -> Vec<Vec<TicketId>> {
        let now = self.t0 + Duration::from_secs(10_000);
        self.pool
            .process(now)
            .into_iter()
            .map(|m| {
                let mut ids: Vec<TicketId> = m.entries.iter().map(|e| e.ticket).collect();
                ids.dedup();
                ids
            })
            .collect()
    }
}

#[test]
fn exact_sizes_form_at_once() {
    let mut f = Fixture::with_intervals(2);
    let a = f.add(add(2, 2));
    let b = f.add(add(2, 2));
    let c = f.add(add(2, 2));
    assert_eq!(f.process(), vec![vec![a, b]]);
    assert_eq!(f.pool.len(), 1);
    let d = f.add(add(2, 2));
    assert_eq!(f.process(), vec![vec![c, d]]);
    assert!(f.pool.is_empty());
}

#[test]
fn ideal_size_first_then_relaxation() {
    let mut f = Fixture::with_intervals(3);
    let ids: Vec<_> = (0..3).map(|_| f.add(add(2, 4))).collect();
    assert!(f.process().is_empty(), "pass 1 waits for 4");
    assert!(f.process().is_empty(), "pass 2 waits for 4");
    assert_eq!(f.process(), vec![ids.clone()], "pass 3 accepts 3");
}

#[test]
fn a_full_group_forms_before_relaxation() {
    let mut f = Fixture::with_intervals(3);
    let ids: Vec<_> = (0..5).map(|_| f.add(add(2, 4))).collect();
    assert_eq!(f.process(), vec![ids[..4].to_vec()], "the 4 oldest");
    assert!(f.process().is_empty());
    assert!(
        f.process().is_empty(),
        "the last one cannot reach min 2 alone"
    );
    assert_eq!(f.pool.len(), 1);
}

#[test]
fn count_multiple_leaves_the_newest_out() {
    let mut f = Fixture::with_intervals(1);
    let ids: Vec<_> = (0..23).map(|_| f.add(add(5, 25).multiple(5))).collect();
    let groups = f.process();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0], ids[..20].to_vec(), "20 oldest, 3 newest left");
    assert_eq!(f.pool.len(), 3);
}

#[test]
fn parties_fill_a_group_and_are_never_split() {
    let mut f = Fixture::with_intervals(1);
    let p5 = f.add(add(10, 10).party(5));
    let p3 = f.add(add(10, 10).party(3));
    let s1 = f.add(add(10, 10));
    let s2 = f.add(add(10, 10));
    let groups = f.process();
    assert_eq!(groups, vec![vec![p5, p3, s1, s2]]);
    // A party of 4 with 5 singles for a group of 8: the party plus the 4 oldest.
    let mut f = Fixture::with_intervals(1);
    let singles: Vec<_> = (0..5).map(|_| f.add(add(8, 8))).collect();
    let party = f.add(add(8, 8).party(4));
    let groups = f.process();
    assert_eq!(groups.len(), 1);
    let mut expected = singles[..4].to_vec();
    expected.push(party);
    assert_eq!(groups[0], expected);
    // A party that would overflow is skipped, not split: 3 + 3 cannot make 4.
    let mut f = Fixture::with_intervals(1);
    f.add(add(4, 4).party(3));
    f.add(add(4, 4).party(3));
    assert!(f.process().is_empty());
}

#[test]
fn a_party_never_meets_itself() {
    let mut f = Fixture::with_intervals(1);
    let party = PartyId::new_random();
    let mut a = add(2, 4).party(2);
    a.party = Some(party);
    let mut b = add(2, 4).party(2);
    b.party = Some(party);
    f.add(a);
    f.add(b);
    assert!(f.process().is_empty());
}

#[test]
fn parties_larger_than_max_are_rejected() {
    let mut f = Fixture::with_intervals(1);
    assert!(matches!(
        f.try_add(add(2, 4).party(4)),
        Err(PoolError::Invalid(_))
    ));
    assert!(f.try_add(add(2, 4).party(3)).is_ok());
}

#[test]
fn one_session_never_twice_in_a_group() {
    let mut f = Fixture::with_intervals(1);
    let a = f.add(add(2, 2).session(1));
    f.add(add(2, 2).session(1));
    assert!(f.process().is_empty());
    let c = f.add(add(2, 2).session(2));
    let groups = f.process();
    assert_eq!(
        groups,
        vec![vec![a, c]],
        "the oldest of the session's tickets is used"
    );
    assert_eq!(f.pool.len(), 1, "the session's other ticket stays");
}

#[test]
fn mutual_queries_are_required() {
    let mut f = Fixture::with_intervals(1);
    // a wants eu; b is eu but wants rank >= 10, a has rank 5.
    f.add(
        add(2, 2)
            .query("+properties.region:eu")
            .s("region", "eu")
            .n("rank", 5.0),
    );
    f.add(
        add(2, 2)
            .query("+properties.rank:>=10")
            .s("region", "eu")
            .n("rank", 20.0),
    );
    assert!(f.process().is_empty());
    // One-way mode (Nakama's default) matches them: the searcher's query suffices.
    let mut f = Fixture::new(PoolConfig {
        mutual: false,
        max_intervals: 1,
        ..PoolConfig::default()
    });
    let a = f.add(
        add(2, 2)
            .query("+properties.region:eu")
            .s("region", "eu")
            .n("rank", 5.0),
    );
    let b = f.add(
        add(2, 2)
            .query("+properties.rank:>=10")
            .s("region", "eu")
            .n("rank", 20.0),
    );
    assert_eq!(f.process(), vec![vec![a, b]]);
}

#[test]
fn every_pair_in_a_group_must_agree() {
    let mut f = Fixture::with_intervals(1);
    let a = f.add(add(3, 3).query("properties.x:*").s("x", "1"));
    // b refuses c, so the group of three is a, b and d.
    let b = f.add(
        add(3, 3)
            .query("-properties.name:c")
            .s("x", "1")
            .s("name", "b"),
    );
    f.add(add(3, 3).s("x", "1").s("name", "c"));
    let d = f.add(add(3, 3).s("x", "1").s("name", "d"));
    assert_eq!(f.process(), vec![vec![a, b, d]]);
}

#[test]
fn numeric_range_boundaries_are_inclusive_or_exclusive_as_written() {
    let mut f = Fixture::with_intervals(1);
    let a = f.add(
        add(2, 2)
            .query("+properties.rank:>=10 +properties.rank:<20")
            .n("rank", 15.0),
    );
    f.add(add(2, 2).n("rank", 20.0));
    let c = f.add(add(2, 2).n("rank", 10.0));
    assert_eq!(f.process(), vec![vec![a, c]]);
}

#[test]
fn should_terms_and_boosts_rank_above_age() {
    let mut f = Fixture::with_intervals(1);
    let a = f.add(
        add(2, 2)
            .query("+properties.mode:ranked properties.region:eu^5 properties.lang:de")
            .s("mode", "ranked"),
    );
    f.add(add(2, 2).s("mode", "ranked").s("region", "us"));
    f.add(add(2, 2).s("mode", "ranked").s("lang", "de"));
    let eu = f.add(add(2, 2).s("mode", "ranked").s("region", "eu"));
    assert_eq!(f.process()[0], vec![a, eu]);
}

#[test]
fn oldest_first_among_equals() {
    let mut f = Fixture::with_intervals(1);
    let ids: Vec<_> = (0..6).map(|_| f.add(add(3, 3))).collect();
    assert_eq!(f.process(), vec![ids[..3].to_vec(), ids[3..].to_vec()]);
}

#[test]
fn no_ticket_is_stranded() {
    // Nakama strands a(2-3) with b(3-4), c(3-4): here they meet once b and c relax.
    let mut f = Fixture::with_intervals(2);
    let a = f.add(add(2, 3));
    let b = f.add(add(3, 4));
    let c = f.add(add(3, 4));
    assert!(
        f.process().is_empty(),
        "pass 1: everyone waits for their max"
    );
    assert_eq!(f.process(), vec![vec![a, b, c]]);
    // Tickets that finished waiting keep matching in later passes.
    let mut f = Fixture::with_intervals(1);
    let x = f.add(add(2, 4));
    for _ in 0..5 {
        assert!(f.process().is_empty());
    }
    let y = f.add(add(2, 4));
    assert_eq!(f.process(), vec![vec![x, y]]);
}

#[test]
fn max_tickets_per_session_and_party() {
    let mut f = Fixture::new(PoolConfig {
        max_tickets: 2,
        ..PoolConfig::default()
    });
    f.add(add(2, 2).session(9));
    let second = f.add(add(2, 2).session(9));
    assert!(matches!(
        f.try_add(add(2, 2).session(9)),
        Err(PoolError::TooManyTickets(_))
    ));
    f.pool
        .remove(second, presence(9).session_id)
        .expect("remove");
    f.add(add(2, 2).session(9));
    assert_eq!(
        f.pool.remove(second, presence(9).session_id),
        Err(PoolError::NotFound)
    );
}

#[test]
fn cancellation_by_session_and_party() {
    let mut f = Fixture::with_intervals(1);
    let party = f.add(add(2, 4).party(3));
    let solo = f.add(add(2, 4));
    let member = presence(1).session_id;
    let cancelled = f.pool.remove_session(member);
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].ticket, party);
    assert_eq!(
        cancelled[0].notify.len(),
        2,
        "the two other members are told"
    );
    assert_eq!(f.pool.len(), 1);
    assert!(f.pool.remove_party(PartyId::new_random()).is_empty());
    let _ = solo;
}

#[test]
fn validation_messages() {
    let mut f = Fixture::with_intervals(1);
    for (a, msg) in [
        (add(1, 2), "min_count must be >= 2"),
        (add(3, 2), "max_count must be >= min_count"),
        (add(2, 300), "max_count must be <="),
        (add(2, 4).multiple(0), "count_multiple must be >= 1"),
        (add(2, 5).multiple(2), "must divide"),
        (add(2, 2).n("x", f64::NAN), "finite"),
    ] {
        match f.try_add(a) {
            Err(PoolError::Invalid(m)) => assert!(m.contains(msg), "{m}"),
            other => panic!("expected {msg}, got {other:?}"),
        }
    }
}

#[test]
fn process_is_deterministic() {
    let build = || {
        let mut f = Fixture::with_intervals(1);
        for i in 0..40 {
            let region = ["eu", "us"][i % 2];
            f.add(
                add(2, 4)
                    .query("+properties.region:eu properties.rank:>5")
                    .s("region", region)
                    .n("rank", (i % 10) as f64),
            );
        }
        f
    };
    let shape = |f: &mut Fixture| -> Vec<usize> { f.process().iter().map(Vec::len).collect() };
    let mut a = build();
    let mut b = build();
    assert_eq!(shape(&mut a), shape(&mut b));
}

#[test]
fn stats_report_pool_and_completions() {
    let mut f = Fixture::with_intervals(1);
    f.add(add(2, 2));
    f.add(add(2, 2));
    f.add(add(2, 2));
    let now = f.t0 + Duration::from_secs(100);
    assert_eq!(
        f.pool.stats(now).oldest_ticket_age,
        Some(Duration::from_secs(99))
    );
    f.pool.process(now);
    let stats = f.pool.stats(now);
    assert_eq!(stats.tickets, 1);
    assert_eq!(
        stats.recent_completions,
        vec![Duration::from_secs(99), Duration::from_secs(98)]
    );
    assert_eq!(stats.groups, 1);
    assert_eq!(stats.tickets_matched, 2);
    assert_eq!(stats.passes, 1);
}

#[test]
fn parties_complete_a_group_solos_cannot() {
    // Greedy filling from the oldest solo takes s1, s2 and one party (5 of 6) and is
    // stuck; the two parties alone make 6.
    let mut f = Fixture::with_intervals(1);
    let s1 = f.add(add(6, 6));
    let s2 = f.add(add(6, 6));
    let p1 = f.add(add(6, 6).party(3));
    let p2 = f.add(add(6, 6).party(3));
    assert_eq!(f.process(), vec![vec![p1, p2]]);
    assert_eq!(f.pool.len(), 2);
    assert!(f.pool.tickets.contains_key(&s1) && f.pool.tickets.contains_key(&s2));
    for _ in 0..3 {
        assert!(f.process().is_empty(), "1 + 1 never makes 6");
    }
    // And a solo with a party of 2 and a party of 3 skips the first solo.
    let mut f = Fixture::with_intervals(1);
    let a = f.add(add(6, 6));
    f.add(add(6, 6).party(4));
    let b = f.add(add(6, 6).party(2));
    let c = f.add(add(6, 6).party(3));
    assert_eq!(f.process(), vec![vec![a, b, c]]);
}

#[test]
fn count_multiple_with_parties_reaches_the_full_size() {
    // Sizes 2, 4 or 6. Greedy filling for a reaches 5 (a, b, the 2, c), cannot fit
    // the 3, and fell back to 4; the subset-sum finds a + b + c + 3 = 6.
    let mut f = Fixture::with_intervals(1);
    let a = f.add(add(2, 6).multiple(2));
    let b = f.add(add(2, 6).multiple(2));
    let p2 = f.add(add(2, 6).multiple(2).party(2));
    let c = f.add(add(2, 6).multiple(2));
    let p3 = f.add(add(2, 6).multiple(2).party(3));
    assert_eq!(f.process(), vec![vec![a, b, c, p3]]);
    assert!(
        f.pool.tickets.contains_key(&p2),
        "the party of 2 alone is no match"
    );
    // Multiples of 4 from parties of 3 and solos: 3 + 1 = 4 or 3 + 3 + 1 + 1 = 8,
    // and a full 8 is preferred.
    let mut f = Fixture::with_intervals(1);
    let x = f.add(add(4, 8).multiple(4).party(3));
    let y = f.add(add(4, 8).multiple(4).party(3));
    let s1 = f.add(add(4, 8).multiple(4));
    let s2 = f.add(add(4, 8).multiple(4));
    assert_eq!(f.process(), vec![vec![x, y, s1, s2]]);
}

#[test]
fn relaxation_with_parties_takes_the_largest_valid_size() {
    // s1 (max 6) with a party of 3 makes 4 and with a party of 4 makes 5; 6 is out of
    // reach. Greedy collection (s1, the 3, no room for the 4) settled for 4.
    let mut f = Fixture::with_intervals(2);
    let s1 = f.add(add(4, 6));
    let p3 = f.add(add(4, 6).party(3));
    let p4 = f.add(add(4, 6).party(4));
    assert!(f.process().is_empty(), "pass 1 waits for 6");
    assert_eq!(f.process(), vec![vec![s1, p4]]);
    assert!(f.pool.tickets.contains_key(&p3));
    // Before relaxing, smaller sizes the parties make exactly (3, 4, 5) wait; once
    // relaxed, the largest of them.
    let mut f = Fixture::with_intervals(3);
    let a = f.add(add(3, 6).party(2));
    let b = f.add(add(3, 6).party(2));
    let c = f.add(add(3, 6));
    assert!(f.process().is_empty());
    assert!(f.process().is_empty());
    assert_eq!(f.process(), vec![vec![a, b, c]], "pass 3: 5");
}

#[test]
fn clashing_parties_fall_back_to_the_next_best_set() {
    // 3 + 2 = 5 would complete t's 6, but the 2 refuses the 3: 3 + 1 + 1 instead.
    let mut f = Fixture::with_intervals(1);
    let t = f.add(add(6, 6));
    let p3 = f.add(add(6, 6).party(3).s("name", "p3"));
    let q2 = f.add(add(6, 6).party(2).query("-properties.name:p3"));
    let s1 = f.add(add(6, 6));
    let s2 = f.add(add(6, 6));
    assert_eq!(f.process(), vec![vec![t, p3, s1, s2]]);
    assert!(f.pool.tickets.contains_key(&q2));
}

#[test]
fn the_candidates_preference_counts_too() {
    // b is indifferent (`*`), so by age alone it would take a. x, newer than a,
    // prefers ranked players: x's opinion of b (2: ok and ranked) beats a's (0).
    let mut f = Fixture::with_intervals(1);
    let b = f.add(add(2, 2).s("mode", "ranked").s("ok", "y"));
    let a = f.add(add(2, 2).s("mode", "casual").s("ok", "y"));
    let x = f.add(
        add(2, 2)
            .query("+properties.ok:y properties.mode:ranked")
            .s("ok", "y"),
    );
    assert_eq!(f.process(), vec![vec![b, x]]);
    assert!(f.pool.tickets.contains_key(&a));
    // Both sides add up: the searcher's weak preference for c (1) loses to d's
    // stronger one for the searcher (2 + 0).
    let mut f = Fixture::with_intervals(1);
    let s = f.add(
        add(2, 2)
            .query("properties.side:c properties.side:d^0.5")
            .s("mode", "ranked"),
    );
    let c = f.add(add(2, 2).s("side", "c"));
    let d = f.add(
        add(2, 2)
            .query("properties.mode:ranked^2 properties.mode:*")
            .s("side", "d"),
    );
    assert_eq!(f.process(), vec![vec![s, d]]);
    assert!(f.pool.tickets.contains_key(&c));
    // A searcher looking in a bucket (eu) hears the ranking tickets of that bucket,
    // however far down the age order, and none from elsewhere.
    let mut f = Fixture::with_intervals(1);
    let eu = |a: Add<'static>| a.query("+properties.region:eu").s("region", "eu");
    let searcher = f.add(eu(add(2, 2)).s("lang", "de"));
    let older: Vec<_> = (0..5).map(|_| f.add(eu(add(2, 2)))).collect();
    let fan = f.add(
        add(2, 2)
            .query("+properties.region:eu properties.lang:de")
            .s("region", "eu"),
    );
    assert_eq!(f.pool.rankers.len(), 1);
    let groups = f.process();
    assert_eq!(groups[0], vec![searcher, fan]);
    assert_eq!(groups[1..], [older[..2].to_vec(), older[2..4].to_vec()]);
    assert!(f.pool.rankers.is_empty() && f.pool.ranker_buckets.0.is_empty());
}

#[test]
fn tickets_that_refuse_the_searcher_do_not_use_its_scan() {
    // Ten old tickets accept nobody; with max_scan 3 they used to fill the window of
    // every ticket that searched the whole pool.
    let config = |max_scan| PoolConfig {
        max_intervals: 1,
        max_scan,
        ..PoolConfig::default()
    };
    let mut f = Fixture::new(config(3));
    for _ in 0..10 {
        f.add(add(2, 2).query("+properties.never:y"));
    }
    let a = f.add(add(2, 2));
    let b = f.add(add(2, 2));
    assert_eq!(f.process(), vec![vec![a, b]]);
    assert_eq!(f.pool.len(), 10);
    // Work stays bounded: past SCAN_CAP_FACTOR × max_scan tickets looked at, the
    // search stops even though nothing eligible was found.
    let mut f = Fixture::new(config(3));
    for _ in 0..SCAN_CAP_FACTOR * 3 {
        f.add(add(2, 2).query("+properties.never:y"));
    }
    f.add(add(2, 2));
    f.add(add(2, 2));
    assert!(f.process().is_empty());
}

#[test]
fn same_input_same_groups() {
    let build = || {
        let mut f = Fixture::with_intervals(1);
        let mut ids = Vec::new();
        for i in 0..60usize {
            let region = ["eu", "us", "asia"][i % 3];
            let query = [
                "*",
                "+properties.region:eu properties.rank:>5",
                "properties.region:us^2 properties.region:asia",
                "-properties.rank:<3",
            ][i % 4];
            let mut a = add(2 + i % 3, 4 + i % 3)
                .query(query)
                .s("region", region)
                .n("rank", (i * 7 % 10) as f64);
            if i % 5 == 0 {
                a = a.party(1 + i % 3);
            }
            ids.push(f.add(a));
        }
        let mut groups = Vec::new();
        for _ in 0..3 {
            for g in f.process() {
                let index = |id: &TicketId| ids.iter().position(|x| x == id);
                groups.push(g.iter().map(index).collect::<Vec<_>>());
            }
        }
        groups
    };
    let first = build();
    assert!(first.len() > 5, "{first:?}");
    assert_eq!(first, build());
}

mod property {
    use super::*;
    use proptest::prelude::*;

    /// (party size, min, max, multiple), already valid.
    type Shape = (usize, usize, usize, usize);

    fn shape() -> impl Strategy<Value = Shape> {
        (1usize..=3, 2usize..=6, 2usize..=6, 1usize..=2).prop_map(|(party, x, y, m)| {
            let (mut lo, mut hi) = (x.min(y), x.max(y));
            if m == 2 {
                lo += lo % 2;
                hi -= hi % 2;
                hi = hi.max(lo);
            }
            (party.min(hi - 1), lo, hi, m)
        })
    }

    fn accepts(&(_, lo, hi, m): &Shape, size: usize) -> bool {
        lo <= size && size <= hi && size.is_multiple_of(m)
    }

    /// The largest size of a valid group of at least two of `members` (indices into
    /// `shapes`), that holds `must` when given.
    fn best(shapes: &[Shape], members: &[usize], must: Option<usize>) -> Option<usize> {
        let mut best = None;
        for mask in 1u32..(1 << members.len()) {
            let group: Vec<usize> = (0..members.len())
                .filter(|i| mask >> i & 1 == 1)
                .map(|i| members[i])
                .collect();
            if group.len() < 2 || must.is_some_and(|m| !group.contains(&m)) {
                continue;
            }
            let size = group.iter().map(|&i| shapes[i].0).sum();
            if group.iter().all(|&i| accepts(&shapes[i], size)) {
                best = best.max(Some(size));
            }
        }
        best
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// All `*` queries, every size acceptable at once (max_intervals 1): if any
        /// valid group holds the oldest ticket, the pass groups it, at the largest
        /// such size; every group formed is valid; and what is left holds no valid
        /// group at all.
        #[test]
        fn the_oldest_ticket_is_grouped_whenever_it_can_be(
            shapes in proptest::collection::vec(shape(), 1..=10)
        ) {
            let mut f = Fixture::with_intervals(1);
            let ids: Vec<TicketId> = shapes
                .iter()
                .map(|&(party, lo, hi, m)| {
                    let a = add(lo, hi).multiple(m);
                    f.add(if party > 1 { a.party(party) } else { a })
                })
                .collect();
            let all: Vec<usize> = (0..shapes.len()).collect();
            let expected = best(&shapes, &all, Some(0));
            let groups = f.process();
            let index = |id: &TicketId| ids.iter().position(|x| x == id).expect("known");
            let mut grouped = vec![false; shapes.len()];
            let mut oldest = None;
            for g in &groups {
                let members: Vec<usize> = g.iter().map(index).collect();
                let size: usize = members.iter().map(|&i| shapes[i].0).sum();
                prop_assert!(members.len() >= 2);
                for &i in &members {
                    prop_assert!(accepts(&shapes[i], size), "{members:?} of {size}");
                    prop_assert!(!grouped[i]);
                    grouped[i] = true;
                }
                if members.contains(&0) {
                    oldest = Some(size);
                }
            }
            prop_assert_eq!(oldest, expected);
            let left: Vec<usize> = all.into_iter().filter(|&i| !grouped[i]).collect();
            prop_assert_eq!(best(&shapes, &left, None), None, "left: {:?}", left);
        }
    }
}

mod options;
