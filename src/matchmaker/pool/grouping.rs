//! The subset search behind [`Pool::process`](super::Pool::process): which of a searching
//! ticket's candidates make up its group.
//!
//! The searching ticket needs `need` more players for a group of some size. Its
//! candidates come in rank order, best first (see the pool's doc), each a solo ticket or a
//! whole party of `count` players, and are fed one at a time to [`SubsetSearch::push`].
//! The search keeps the totals that subsets of the candidates fed so far reach (a
//! subset-sum over party sizes: one bit per total up to `need`, so a step costs a shift
//! of a few words). When candidate `k` completes `need` with some earlier candidates, it
//! looks for an actual set holding `k`: a depth-first search over the earlier candidates
//! that do not clash with `k`, in rank order, taking a candidate before skipping it,
//! pruned by the totals the remaining candidates can still reach.
//!
//! Compatibility is pairwise (sessions, parties, and both queries when matching is
//! mutual), so the set must be a clique; the subset-sum ignores it and the depth-first
//! search checks it. What the search guarantees, for one size:
//!
//! - **Complete.** When the candidates fed so far hold a set of pairwise compatible
//!   candidates whose counts add up to exactly `need`, [`SubsetSearch::push`] returns a
//!   set, unless the search ran out of steps first (see [`SubsetSearch::new`]; then it
//!   returns nothing more and [`SubsetSearch::exhausted`] says so). When no two of the
//!   candidates clash, the pruning is exact and the search never backtracks: feeding `n`
//!   candidates takes at most `2n` steps, so an allowance of 2 steps per candidate never
//!   limits it; the allowance only bounds backtracking among clashing candidates.
//! - **Best by rank.** The set returned is, among all valid sets of the candidates fed so
//!   far, the one whose worst-ranked member ranks best (the shortest prefix of the
//!   candidates that holds a valid set), and among those the lexicographically earliest
//!   by rank: it holds the best-ranked candidate that any of them can hold, then the next
//!   best, and so on. For solos alone that is the `need` best-ranked compatible
//!   candidates, what greedy filling picks.
//! - **Deterministic.** The result depends only on the order of the candidates, their
//!   counts and the compatibility relation.

/// Totals reachable by some subset, one bit per total `0..=need` (bits above `need` may
/// be set and mean nothing: shifts only move them further up).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Totals(Vec<u64>);

impl Totals {
    /// Only the empty subset: total 0.
    fn zero(need: usize) -> Self {
        let mut words = vec![0; need / 64 + 1];
        words[0] = 1;
        Self(words)
    }

    fn has(&self, total: usize) -> bool {
        has(&self.0, total)
    }

    /// Adds an item of `count` to every subset: `self |= self << count`.
    fn add(&mut self, count: usize) {
        shift_or(&mut self.0, None, count);
    }
}

fn has(words: &[u64], total: usize) -> bool {
    words
        .get(total / 64)
        .is_some_and(|w| w >> (total % 64) & 1 == 1)
}

/// `to |= from << by` (or `to |= to << by` without `from`), word by word from the top so
/// that the in-place form reads every word before it is written.
fn shift_or(to: &mut [u64], from: Option<&[u64]>, by: usize) {
    let (ws, bs) = (by / 64, by % 64);
    for i in (ws..to.len()).rev() {
        let src = |j: usize, to: &[u64]| from.map_or(to[j], |f| f[j]);
        let mut v = src(i - ws, to) << bs;
        if bs > 0 && i > ws {
            v |= src(i - ws - 1, to) >> (64 - bs);
        }
        to[i] |= v;
    }
}

/// One size's search over a searching ticket's candidates, fed in rank order.
#[derive(Debug)]
pub(super) struct SubsetSearch {
    need: usize,
    /// Every candidate fed so far: its count.
    counts: Vec<usize>,
    /// Totals the candidates fed so far reach.
    reach: Totals,
    steps_per_candidate: usize,
    budget: Budget,
}

/// Steps left to a search.
#[derive(Debug)]
struct Budget {
    left: usize,
    exhausted: bool,
}

impl Budget {
    fn step(&mut self) -> bool {
        if self.left == 0 {
            self.exhausted = true;
            return false;
        }
        self.left -= 1;
        true
    }
}

impl SubsetSearch {
    /// A search for candidates adding up to exactly `need` players, allowed
    /// `steps_per_candidate` more steps with each candidate fed (a step is a compatibility
    /// check against the newest candidate of a set, or a node of the depth-first search).
    pub(super) fn new(need: usize, steps_per_candidate: usize) -> Self {
        Self {
            need,
            counts: Vec::new(),
            reach: Totals::zero(need),
            steps_per_candidate,
            budget: Budget {
                left: 0,
                exhausted: false,
            },
        }
    }

    /// Whether the step budget ran out: nothing more will be found.
    pub(super) fn exhausted(&self) -> bool {
        self.budget.exhausted
    }

    /// Feeds the next candidate (index `self.counts.len()`), a party of `count`.
    /// `compatible(i, j)` says whether candidates `i` and `j` may be in one group. Returns
    /// the best set (see the module doc) when this candidate completes one: the indices of
    /// its members, ascending, this candidate last.
    pub(super) fn push(
        &mut self,
        count: usize,
        compatible: impl Fn(usize, usize) -> bool,
    ) -> Option<Vec<usize>> {
        let k = self.counts.len();
        self.counts.push(count);
        self.budget.left = self.budget.left.saturating_add(self.steps_per_candidate);
        if self.budget.exhausted || count == 0 || count > self.need {
            return None;
        }
        let rest = self.need - count;
        // Sets without `k` were searched when their own last member came.
        let found = if self.reach.has(rest) {
            self.complete(k, rest, &compatible)
        } else {
            None
        };
        self.reach.add(count);
        found
    }

    /// The lexicographically earliest clique of candidates before `k`, compatible with
    /// `k`, adding up to `rest`; with `k` appended.
    fn complete(
        &mut self,
        k: usize,
        rest: usize,
        compatible: &impl Fn(usize, usize) -> bool,
    ) -> Option<Vec<usize>> {
        if rest == 0 {
            return Some(vec![k]);
        }
        let mut items = Vec::new();
        for j in 0..k {
            if self.counts[j] <= rest {
                if !self.budget.step() {
                    return None;
                }
                if compatible(j, k) {
                    items.push(j);
                }
            }
        }
        // suffix[p]: totals that subsets of items[p..] reach.
        let words = rest / 64 + 1;
        let mut suffix = vec![0u64; (items.len() + 1) * words];
        suffix[items.len() * words] = 1;
        for p in (0..items.len()).rev() {
            let (head, tail) = suffix.split_at_mut((p + 1) * words);
            let (to, from) = (&mut head[p * words..], &tail[..words]);
            to.copy_from_slice(from);
            shift_or(to, Some(from), self.counts[items[p]]);
        }
        let mut chosen = Vec::new();
        let search = Dfs {
            counts: &self.counts,
            items: &items,
            suffix: &suffix,
            words,
            compatible,
        };
        if search.run(0, rest, &mut chosen, &mut self.budget) {
            chosen.push(k);
            Some(chosen)
        } else {
            None
        }
    }
}

struct Dfs<'a, F> {
    counts: &'a [usize],
    items: &'a [usize],
    suffix: &'a [u64],
    words: usize,
    compatible: &'a F,
}

impl<F: Fn(usize, usize) -> bool> Dfs<'_, F> {
    fn reaches(&self, p: usize, total: usize) -> bool {
        has(&self.suffix[p * self.words..(p + 1) * self.words], total)
    }

    /// Extends `chosen` from `items[p..]` by exactly `rest`, taking before skipping;
    /// recursion only on taking, so its depth is at most the group's size.
    fn run(&self, mut p: usize, rest: usize, chosen: &mut Vec<usize>, budget: &mut Budget) -> bool {
        if rest == 0 {
            return true;
        }
        loop {
            if p == self.items.len() || !self.reaches(p, rest) || !budget.step() {
                return false;
            }
            let j = self.items[p];
            let c = self.counts[j];
            if c <= rest
                && self.reaches(p + 1, rest - c)
                && chosen.iter().all(|&i| (self.compatible)(i, j))
            {
                chosen.push(j);
                if self.run(p + 1, rest - c, chosen, budget) {
                    return true;
                }
                chosen.pop();
                if budget.exhausted {
                    return false;
                }
            }
            p += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `counts` in order; the first set found, by candidate index.
    fn first(need: usize, counts: &[usize], clash: &[(usize, usize)]) -> Option<Vec<usize>> {
        let compatible = |a: usize, b: usize| !clash.contains(&(a, b)) && !clash.contains(&(b, a));
        let mut s = SubsetSearch::new(need, 1000);
        counts.iter().find_map(|&c| s.push(c, compatible))
    }

    #[test]
    fn totals_shift_across_words() {
        let mut t = Totals::zero(200);
        t.add(63);
        t.add(70);
        for total in [0, 63, 70, 133] {
            assert!(t.has(total), "{total}");
        }
        assert!(!t.has(64) && !t.has(134) && !t.has(1));
    }

    #[test]
    fn solos_are_taken_in_rank_order() {
        assert_eq!(first(3, &[1, 1, 1, 1], &[]), Some(vec![0, 1, 2]));
    }

    #[test]
    fn parties_make_the_total_greedy_filling_misses() {
        // Greedy takes 1 and 3 and is stuck at 4 of 5.
        assert_eq!(first(5, &[1, 3, 2], &[]), Some(vec![1, 2]));
        // 1 + 1 + 3: the shortest prefix, then the earliest set.
        assert_eq!(first(5, &[1, 2, 1, 3], &[]), Some(vec![0, 2, 3]));
        assert_eq!(first(5, &[3, 3, 1], &[]), None);
    }

    #[test]
    fn clashes_fall_back_to_the_next_set() {
        // 3 + 2 clash; 3 + 1 + 1 does it.
        assert_eq!(first(5, &[3, 2, 1, 1], &[(0, 1)]), Some(vec![0, 2, 3]));
        // The earliest candidate clashes with every completion: skipped.
        assert_eq!(first(2, &[1, 1, 1], &[(0, 1), (0, 2)]), Some(vec![1, 2]));
    }

    #[test]
    fn the_budget_stops_the_search() {
        // No steps at all: the second candidate's check against the first has none left.
        let mut s = SubsetSearch::new(2, 0);
        assert_eq!(s.push(1, |_, _| true), None);
        assert!(!s.exhausted());
        assert_eq!(s.push(1, |_, _| true), None);
        assert!(s.exhausted());
        assert_eq!(s.push(1, |_, _| true), None, "nothing more once exhausted");
    }

    #[test]
    fn clash_free_searches_stay_within_two_steps_per_candidate() {
        // 40 parties of 2 and one solo: 41 = the solo and 20 parties.
        let mut counts = vec![2; 40];
        counts.push(1);
        let mut s = SubsetSearch::new(41, 2);
        let found = counts.iter().find_map(|&c| s.push(c, |_, _| true));
        let mut expected: Vec<usize> = (0..20).collect();
        expected.push(40);
        assert_eq!(found, Some(expected));
    }
}
