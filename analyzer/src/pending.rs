//! Groups of replayed rows waiting for the rest of their targets, under a byte budget.
//!
//! The pairing sees each request's rows (one per target) as the `replays` files stream by.
//! Rows of one request usually arrive together, but not always: a target that died mid-run
//! or a replay cut short leaves groups that never complete, and files written per target
//! arrive one after the other. Waiting groups hold full response bodies, so they are held
//! under a budget: past it the oldest group is let go (compared with the rows it has) and
//! counted, and a row that arrives for a group already let go is counted and not compared.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

/// The default budget for waiting groups' bodies and headers.
pub const DEFAULT_PENDING_BYTES: usize = 512 << 20;

/// Waiting groups, oldest first out when over budget.
#[derive(Debug)]
pub struct Pending<K, V> {
    groups: HashMap<K, Group<V>>,
    /// Arrival order of the waiting groups' first rows.
    order: BTreeMap<u64, K>,
    next: u64,
    bytes: usize,
    budget: usize,
    /// Keys let go before they completed (a row that still comes for one is late).
    released: HashSet<K>,
    /// The most bytes held at once.
    pub peak_bytes: usize,
    /// Groups let go early to stay under the budget.
    pub evicted: u64,
    /// Rows that came for a group already let go (not compared).
    pub late: u64,
}

#[derive(Debug)]
struct Group<V> {
    seq: u64,
    bytes: usize,
    rows: HashMap<String, V>,
}

impl<K: Clone + Eq + Hash, V> Pending<K, V> {
    /// Nothing waiting; at most `budget` bytes held (one group may go past it alone).
    pub fn new(budget: usize) -> Self {
        Pending {
            groups: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            bytes: 0,
            budget,
            released: HashSet::new(),
            peak_bytes: 0,
            evicted: 0,
            late: 0,
        }
    }

    /// Adds `target`'s row (`size` bytes) to `key`'s group. Returns the group when it now has
    /// `expected` rows; `None` while it waits, or when the row is late (counted in `late`).
    pub fn add(
        &mut self,
        key: K,
        target: &str,
        row: V,
        size: usize,
        expected: usize,
    ) -> Option<(K, HashMap<String, V>)> {
        if self.released.contains(&key) {
            self.late += 1;
            return None;
        }
        let group = match self.groups.get_mut(&key) {
            Some(g) => g,
            None => {
                let seq = self.next;
                self.next += 1;
                self.order.insert(seq, key.clone());
                self.groups.entry(key.clone()).or_insert(Group {
                    seq,
                    bytes: 0,
                    rows: HashMap::new(),
                })
            }
        };
        if let Some(old) = group.rows.insert(target.to_owned(), row) {
            // The same target twice (a duplicated file): the last row counts.
            drop(old);
        } else {
            group.bytes += size;
            self.bytes += size;
        }
        self.peak_bytes = self.peak_bytes.max(self.bytes);
        if group.rows.len() >= expected {
            return self.take(&key).map(|rows| (key, rows));
        }
        None
    }

    /// The oldest waiting group, when more than the budget is held (call until `None`).
    pub fn over_budget(&mut self) -> Option<(K, HashMap<String, V>)> {
        if self.bytes <= self.budget {
            return None;
        }
        let (_, key) = self.order.pop_first()?;
        let rows = self.take(&key)?;
        self.evicted += 1;
        self.released.insert(key.clone());
        Some((key, rows))
    }

    /// Every group still waiting, oldest first (at the end of input).
    pub fn into_rest(mut self) -> Vec<(K, HashMap<String, V>)> {
        let order = std::mem::take(&mut self.order);
        order
            .into_values()
            .filter_map(|k| self.groups.remove(&k).map(|g| (k, g.rows)))
            .collect()
    }

    fn take(&mut self, key: &K) -> Option<HashMap<String, V>> {
        let g = self.groups.remove(key)?;
        self.order.remove(&g.seq);
        self.bytes -= g.bytes;
        Some(g.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_returned_when_every_target_answered() {
        let mut p: Pending<u32, &str> = Pending::new(1000);
        assert!(p.add(1, "base", "a", 10, 2).is_none());
        assert!(p.add(2, "base", "b", 10, 2).is_none());
        let (k, rows) = p.add(1, "cand", "c", 10, 2).expect("complete");
        assert_eq!(k, 1);
        assert_eq!(rows.len(), 2);
        assert_eq!(p.peak_bytes, 30);
        let rest = p.into_rest();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].0, 2);
    }

    #[test]
    fn past_the_budget_the_oldest_groups_go_first_and_late_rows_are_counted() {
        let mut p: Pending<u32, ()> = Pending::new(100);
        for k in 0..10 {
            assert!(p.add(k, "base", (), 30, 2).is_none());
            while let Some((old, _)) = p.over_budget() {
                assert!(old < k, "the oldest goes first");
            }
        }
        assert!(p.peak_bytes <= 100 + 30, "{}", p.peak_bytes);
        assert_eq!(p.evicted, 7);
        // Groups 0..7 were let go: their candidate rows are late.
        assert!(p.add(0, "cand", (), 30, 2).is_none());
        assert_eq!(p.late, 1);
        assert!(p.add(9, "cand", (), 30, 2).is_some());
        let rest: Vec<u32> = p.into_rest().into_iter().map(|(k, _)| k).collect();
        assert_eq!(rest, vec![7, 8]);
    }

    #[test]
    fn a_duplicated_row_is_not_counted_twice() {
        let mut p: Pending<u32, u8> = Pending::new(100);
        assert!(p.add(1, "base", 1, 40, 2).is_none());
        assert!(p.add(1, "base", 2, 40, 2).is_none());
        assert_eq!(p.peak_bytes, 40);
        let (_, rows) = p.add(1, "cand", 3, 40, 2).expect("complete");
        assert_eq!(rows["base"], 2);
    }
}
