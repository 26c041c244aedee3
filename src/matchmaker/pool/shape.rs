//! Roles and teams: which of a searching ticket's candidates make up a group whose every
//! team holds an exact composition, and how its team sums are balanced.
//!
//! A *shaped* ticket asks for `teams` teams (1 when it only asks for a composition) and,
//! optionally, for each team the exact count of each value of one string property (its
//! *composition*). Every ticket is a vector: with a composition, how many of its members
//! hold each value; without, its member count in one dimension. A team is full when the
//! vectors placed in it add up to the team's need exactly, and a group forms when every
//! team is full; tickets are never split, so parties stay in one team.
//!
//! The pool first fills teams by *first fit* ([`Fill`]): candidates in rank order, each
//! into the first team it fits, if it agrees with everyone placed. That costs one look
//! per candidate and finds a group whenever the window is not tight. When it leaves a
//! team short, [`Search::place`] runs: a depth-first search over the first candidates
//! in rank order that tries each candidate in every team it fits (empty teams are
//! interchangeable, so only the first empty one) before leaving it out, pruned when the
//! candidates left cannot cover what the teams still need in some dimension, and bounded
//! by a step allowance. Both prefer better-ranked candidates and are deterministic.
//!
//! [`balance`] then narrows the spread of the teams' sums of a numeric property (the
//! highest team sum minus the lowest): while some swap of two tickets with equal vectors
//! between two teams makes the spread smaller, it applies the swap that makes it
//! smallest. Swapping equal vectors keeps every team's composition exact; the result is a
//! local optimum, not always the global one (that problem is NP-hard in general).

/// The items (the searching ticket first, then its candidates) placed into teams: for
/// each chosen item, its index and its team.
pub(super) type Placement = Vec<(usize, usize)>;

/// One search for a shaped group of one size.
pub(super) struct Search<'a> {
    /// Each item's vector; item 0 is the searching ticket and is always placed.
    pub(super) vectors: &'a [&'a [usize]],
    /// Teams in the group.
    pub(super) teams: usize,
    /// What one team needs, per dimension.
    pub(super) per_team: &'a [usize],
    /// Steps allowed (a step is one node of the search).
    pub(super) max_steps: usize,
}

impl Search<'_> {
    /// The first placement found in rank order, or `None` when there is none or the
    /// allowance ran out. `compatible(a, b)` says whether items `a` and `b` (both > 0)
    /// may share a group; the searching ticket is compatible with every candidate.
    pub(super) fn place(&self, compatible: impl FnMut(usize, usize) -> bool) -> Option<Placement> {
        let dims = self.per_team.len();
        if self.vectors.is_empty() || self.teams == 0 || dims == 0 {
            return None;
        }
        if self.vectors.iter().any(|v| v.len() != dims) {
            return None;
        }
        let n = self.vectors.len();
        // suffix[i][d]: what items i.. hold in dimension d, for pruning.
        let mut suffix = vec![vec![0usize; dims]; n + 1];
        for i in (0..n).rev() {
            let (head, tail) = suffix.split_at_mut(i + 1);
            for ((to, after), x) in head[i].iter_mut().zip(&tail[0]).zip(self.vectors[i]) {
                *to = after.saturating_add(*x);
            }
        }
        let mut state = State {
            need: vec![self.per_team.to_vec(); self.teams],
            left: self
                .per_team
                .iter()
                .map(|x| x.saturating_mul(self.teams))
                .collect(),
            chosen: Vec::new(),
            steps: 0,
            max_steps: self.max_steps,
            compatible,
        };
        let found = state.dfs(self, &suffix, 0);
        found.then_some(state.chosen)
    }
}

struct State<F> {
    /// What each team still needs, per dimension.
    need: Vec<Vec<usize>>,
    /// What all teams together still need, per dimension.
    left: Vec<usize>,
    chosen: Placement,
    steps: usize,
    max_steps: usize,
    compatible: F,
}

impl<F: FnMut(usize, usize) -> bool> State<F> {
    fn dfs(&mut self, s: &Search<'_>, suffix: &[Vec<usize>], i: usize) -> bool {
        if self.left.iter().all(|x| *x == 0) {
            return true;
        }
        if i == s.vectors.len() || self.steps >= self.max_steps {
            return false;
        }
        self.steps += 1;
        if self.left.iter().zip(&suffix[i]).any(|(l, have)| l > have) {
            return false;
        }
        let v = s.vectors[i];
        let fits_all = i == 0 || {
            let chosen = std::mem::take(&mut self.chosen);
            let ok = chosen
                .iter()
                .all(|(j, _)| *j == 0 || (self.compatible)(*j, i));
            self.chosen = chosen;
            ok
        };
        if fits_all {
            let mut tried_empty = false;
            for team in 0..s.teams {
                if !v.iter().zip(&self.need[team]).all(|(a, b)| a <= b) {
                    continue;
                }
                if self.need[team].as_slice() == s.per_team {
                    if tried_empty {
                        continue;
                    }
                    tried_empty = true;
                }
                self.apply(team, v, false);
                self.chosen.push((i, team));
                if self.dfs(s, suffix, i + 1) {
                    return true;
                }
                self.chosen.pop();
                self.apply(team, v, true);
            }
        }
        // The searching ticket is never left out.
        i != 0 && self.dfs(s, suffix, i + 1)
    }

    fn apply(&mut self, team: usize, v: &[usize], undo: bool) {
        for (d, x) in v.iter().enumerate() {
            if undo {
                self.need[team][d] += x;
                self.left[d] += x;
            } else {
                self.need[team][d] -= x;
                self.left[d] -= x;
            }
        }
    }
}

/// Which kinds go to which team, for `teams` teams each needing `per_team`, with the
/// searching ticket (`own`) in team 0: `kinds` are (vector, tickets available), in the
/// order to prefer. Returns, per team, the kinds it takes (a kind once per ticket).
/// Teams are filled one after another, each by a search over kinds in order (a kind
/// may repeat), backtracking across teams; at most `max_steps` nodes.
pub(super) fn plan(
    kinds: &[(&[usize], usize)],
    teams: usize,
    per_team: &[usize],
    own: &[usize],
    max_steps: usize,
) -> Option<Vec<Vec<usize>>> {
    let dims = per_team.len();
    if teams == 0 || own.len() != dims || kinds.iter().any(|(v, _)| v.len() != dims) {
        return None;
    }
    let mut first: Vec<usize> = Vec::with_capacity(dims);
    for (p, o) in per_team.iter().zip(own) {
        first.push(p.checked_sub(*o)?);
    }
    // Not enough of some value among all the kinds: no plan, and no search.
    for d in 0..dims {
        let have: usize = kinds.iter().map(|(v, n)| v[d].saturating_mul(*n)).sum();
        let want = per_team[d].saturating_mul(teams).saturating_sub(own[d]);
        if have < want {
            return None;
        }
    }
    let mut planner = Planner {
        kinds,
        avail: kinds.iter().map(|(_, n)| *n).collect(),
        per_team,
        teams,
        out: vec![Vec::new()],
        steps: 0,
        max_steps,
    };
    planner.team(0, &mut first, 0).then_some(planner.out)
}

struct Planner<'a> {
    kinds: &'a [(&'a [usize], usize)],
    avail: Vec<usize>,
    per_team: &'a [usize],
    teams: usize,
    out: Vec<Vec<usize>>,
    steps: usize,
    max_steps: usize,
}

impl Planner<'_> {
    fn team(&mut self, j: usize, need: &mut [usize], from: usize) -> bool {
        if need.iter().all(|x| *x == 0) {
            if j + 1 == self.teams {
                return true;
            }
            let mut next = self.per_team.to_vec();
            self.out.push(Vec::new());
            if self.team(j + 1, &mut next, 0) {
                return true;
            }
            self.out.pop();
            return false;
        }
        if self.steps >= self.max_steps {
            return false;
        }
        self.steps += 1;
        for k in from..self.kinds.len() {
            let v = self.kinds[k].0;
            if self.avail[k] == 0 || !v.iter().zip(need.iter()).all(|(a, b)| a <= b) {
                continue;
            }
            self.avail[k] -= 1;
            for (n, x) in need.iter_mut().zip(v) {
                *n -= x;
            }
            self.out[j].push(k);
            if self.team(j, need, k) {
                return true;
            }
            self.out[j].pop();
            for (n, x) in need.iter_mut().zip(v) {
                *n += x;
            }
            self.avail[k] += 1;
        }
        false
    }
}

/// Teams being filled by first fit: each vector goes into the first team it fits.
pub(super) struct Fill {
    need: Vec<Vec<usize>>,
    left: usize,
}

impl Fill {
    /// `teams` empty teams, each needing `per_team`.
    pub(super) fn new(teams: usize, per_team: &[usize]) -> Self {
        Self {
            need: vec![per_team.to_vec(); teams],
            left: per_team.iter().sum::<usize>().saturating_mul(teams),
        }
    }

    /// The first team `v` fits in.
    pub(super) fn fits(&self, v: &[usize]) -> Option<usize> {
        self.need
            .iter()
            .position(|n| n.len() == v.len() && v.iter().zip(n).all(|(a, b)| a <= b))
    }

    /// Puts `v` into `team` (which it fits).
    pub(super) fn place(&mut self, team: usize, v: &[usize]) {
        if let Some(n) = self.need.get_mut(team) {
            for (need, x) in n.iter_mut().zip(v) {
                *need -= x;
                self.left -= x;
            }
        }
    }

    /// Whether every team is full.
    pub(super) fn full(&self) -> bool {
        self.left == 0
    }
}

/// Improves `placement` by swaps of items with equal vectors between teams, as the
/// module doc says; `value[i]` is item `i`'s contribution to its team's sum. Returns the
/// final spread.
pub(super) fn balance(
    placement: &mut Placement,
    vectors: &[&[usize]],
    value: &[f64],
    teams: usize,
) -> f64 {
    let sums = |p: &Placement| {
        let mut s = vec![0.0f64; teams];
        for (i, t) in p {
            s[*t] += value[*i];
        }
        s
    };
    let spread = |s: &[f64]| {
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = s.iter().copied().fold(f64::INFINITY, f64::min);
        max - min
    };
    let mut current = spread(&sums(placement));
    // Each applied swap strictly narrows the spread; the bound keeps a pass cheap even
    // for a large group.
    for _ in 0..placement.len().saturating_mul(4) {
        let base = sums(placement);
        let mut best: Option<(usize, usize, f64)> = None;
        for a in 0..placement.len() {
            for b in a + 1..placement.len() {
                let ((ia, ta), (ib, tb)) = (placement[a], placement[b]);
                if ta == tb || vectors[ia] != vectors[ib] {
                    continue;
                }
                let mut s = base.clone();
                s[ta] += value[ib] - value[ia];
                s[tb] += value[ia] - value[ib];
                let after = spread(&s);
                if after + 1e-9 < best.map_or(current, |(_, _, x)| x) {
                    best = Some((a, b, after));
                }
            }
        }
        let Some((a, b, after)) = best else { break };
        let (ta, tb) = (placement[a].1, placement[b].1);
        placement[a].1 = tb;
        placement[b].1 = ta;
        current = after;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(vectors: &[&[usize]], teams: usize, per_team: &[usize]) -> Option<Placement> {
        Search {
            vectors,
            teams,
            per_team,
            max_steps: 10_000,
        }
        .place(|_, _| true)
    }

    fn team_totals(p: &Placement, vectors: &[&[usize]], teams: usize) -> Vec<Vec<usize>> {
        let dims = vectors[0].len();
        let mut t = vec![vec![0; dims]; teams];
        for (i, team) in p {
            for d in 0..dims {
                t[*team][d] += vectors[*i][d];
            }
        }
        t
    }

    #[test]
    fn one_team_composition_is_exact() {
        // tank, healer, dps counts; need 1/1/3.
        let v: Vec<&[usize]> = vec![&[1, 0, 0], &[1, 0, 0], &[0, 0, 1], &[0, 1, 0], &[0, 0, 2]];
        let p = search(&v, 1, &[1, 1, 3]).expect("placement");
        assert_eq!(team_totals(&p, &v, 1), vec![vec![1, 1, 3]]);
        // The second tank is left out.
        assert!(!p.iter().any(|(i, _)| *i == 1));
    }

    #[test]
    fn parties_are_never_split_across_teams() {
        // Players only: teams of 3; parties of 2, 2, 1, 1.
        let v: Vec<&[usize]> = vec![&[2], &[2], &[1], &[1]];
        let p = search(&v, 2, &[3]).expect("placement");
        assert_eq!(team_totals(&p, &v, 2), vec![vec![3], vec![3]]);
        // Parties of 3, 3, 3, 1 cannot make two teams of 5.
        let v: Vec<&[usize]> = vec![&[3], &[3], &[3], &[1]];
        assert_eq!(search(&v, 2, &[5]), None);
    }

    #[test]
    fn the_searching_ticket_is_always_placed() {
        let v: Vec<&[usize]> = vec![&[2, 0], &[1, 0], &[0, 1]];
        // Need 1 of each per team: item 0 holds 2 of the first, so nothing fits.
        assert_eq!(search(&v, 1, &[1, 1]), None);
    }

    #[test]
    fn incompatible_candidates_are_not_grouped() {
        let v: Vec<&[usize]> = vec![&[1], &[1], &[1], &[1]];
        let p = Search {
            vectors: &v,
            teams: 1,
            per_team: &[3],
            max_steps: 1000,
        }
        .place(|a, b| (a, b) != (1, 2) && (a, b) != (2, 1))
        .expect("placement");
        let ids: Vec<usize> = p.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, vec![0, 1, 3]);
    }

    #[test]
    fn a_plan_uses_kinds_in_order_and_never_splits_a_ticket() {
        // tank, healer, dps; per team 1/1/3; the searcher is a lone dps.
        let trio: &[usize] = &[1, 0, 2]; // a party: tank + 2 dps
        let healer: &[usize] = &[0, 1, 0];
        let dps: &[usize] = &[0, 0, 1];
        let tank: &[usize] = &[1, 0, 0];
        let kinds = [(trio, 1), (healer, 2), (dps, 5), (tank, 1)];
        let planned = plan(&kinds, 2, &[1, 1, 3], &[0, 0, 1], 10_000).expect("plan");
        let mut totals = vec![[0usize; 3]; 2];
        for (team, ks) in planned.iter().enumerate() {
            for k in ks {
                for (t, x) in totals[team].iter_mut().zip(kinds[*k].0) {
                    *t += x;
                }
            }
        }
        totals[0][2] += 1; // the searcher
        assert_eq!(totals, vec![[1, 1, 3], [1, 1, 3]]);
        // Two healers are needed; with one there is no plan (found without searching).
        let kinds = [(trio, 1), (healer, 1), (dps, 5), (tank, 1)];
        assert_eq!(plan(&kinds, 2, &[1, 1, 3], &[0, 0, 1], 10_000), None);
        // Enough of every value, but the trio cannot sit with another tank's team
        // short of room: two trios and a healer pair cannot make 1/1/3 twice.
        let kinds = [(trio, 2), (healer, 2)];
        let plan2 = plan(&kinds, 2, &[1, 1, 3], &[0, 0, 1], 10_000);
        assert_eq!(plan2, None);
    }

    #[test]
    fn balance_swaps_equal_vectors_to_narrow_the_spread() {
        let v: Vec<&[usize]> = vec![&[1], &[1], &[1], &[1]];
        // Skills 10, 9, 1, 2: the search puts 0,1 together; balancing pairs 10 with 1/2.
        let mut p = search(&v, 2, &[2]).expect("placement");
        let value = [10.0, 9.0, 1.0, 2.0];
        let spread = balance(&mut p, &v, &value, 2);
        assert!(spread <= 2.0 + 1e-9, "spread {spread}, placement {p:?}");
        assert_eq!(team_totals(&p, &v, 2), vec![vec![2], vec![2]]);
    }
}
