//! The free-capacity index: agents bucketed on a 2-D grid of (free CPU, free memory), with
//! bitmaps of the non-empty buckets, so a query visits buckets, not agents.
//!
//! Bucket boundaries are "log-linear": 16 steps per power of two (values under 256 in steps
//! of 16). Relative width is at most 1/16, which keeps best fit within about 6 % of exact,
//! and every Fargate size (256 … 16384 CPU units, 512 MiB … 120 GiB) lands exactly on a
//! boundary, so for those a bucket either fits a demand entirely or not at all. A demand that
//! falls inside a bucket makes that bucket "partial": its agents are checked one by one, a
//! few at a time on the fast pass and all of them on the exhaustive pass that runs before a
//! failure is declared.

use crate::rng::Rng;
use crate::{BinpackField, Free};

pub(crate) const NIL: u32 = u32::MAX;

/// Agents checked per partial bucket on the fast pass. Small, because the exhaustive pass is
/// there to make a failure exact; the fast pass only needs a good candidate.
const WALK: usize = 8;
/// Random probes before `random` gives up sampling and walks the members in order.
const PROBES: usize = 32;
/// A leaf stays a plain list up to this many agents: a grid costs tens of KiB whatever its
/// size, a scan of 64 agents costs less than the grid's bitmap walk.
pub(crate) const FLAT_MAX: usize = 64;

pub(crate) fn level(v: u32) -> u32 {
    if v < 256 {
        v >> 4
    } else {
        let e = 31 - v.leading_zeros();
        16 + (e - 8) * 16 + ((v >> (e - 4)) & 15)
    }
}

/// The smallest value in `level`'s bucket.
pub(crate) fn floor(level: u32) -> u32 {
    if level < 16 {
        level << 4
    } else {
        let e = (level - 16) / 16 + 8;
        (16 + (level - 16) % 16) << (e - 4)
    }
}

/// How a leaf chooses among agents that fit. `Both` is a weighted sum of what is left in
/// each dimension, each weighted by the inverse of the cluster's largest capacity in it, so
/// that 1 vCPU and 4 GiB left on a 4 GiB-per-vCPU fleet weigh the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    Binpack(BinpackField),
    Random,
}

/// What a query needs besides the index: the demand, everyone's free capacity, the weights.
pub(crate) struct Query<'a> {
    pub cpu: u32,
    pub mem: u32,
    pub pick: Pick,
    pub free: &'a [Free],
    pub cpu_ref: u64,
    pub mem_ref: u64,
    /// Walk partial buckets to the end (the pass before declaring a failure).
    pub exhaustive: bool,
}

impl Query<'_> {
    fn fits(&self, f: Free) -> bool {
        f.cpu >= self.cpu && f.mem >= self.mem
    }
    /// Best-fit score of what would be left; smaller is better.
    fn left(&self, cpu: u32, mem: u32) -> u64 {
        let c = u64::from(cpu.saturating_sub(self.cpu)) * self.mem_ref;
        let m = u64::from(mem.saturating_sub(self.mem)) * self.cpu_ref;
        match self.pick {
            Pick::Binpack(BinpackField::Cpu) => c,
            Pick::Binpack(BinpackField::Memory) => m,
            _ => c.saturating_add(m),
        }
    }
}

/// Smallest set bit at or after `from`, below `limit`.
fn next_set(bits: &[u64], from: usize, limit: usize) -> Option<usize> {
    if from >= limit {
        return None;
    }
    let mut w = from / 64;
    let mut word = bits[w] & (!0u64 << (from % 64));
    loop {
        if word != 0 {
            let i = w * 64 + word.trailing_zeros() as usize;
            return (i < limit).then_some(i);
        }
        w += 1;
        if w >= bits.len() || w * 64 >= limit {
            return None;
        }
        word = bits[w];
    }
}

/// The grid. Members live in "slots"; the caller maps its agents to slots (the engine's
/// all-agents index uses the agent index itself as the slot).
pub(crate) struct Grid {
    rows: usize,
    cols: usize,
    /// Words in one row's column bitmap, and in one column's row bitmap.
    cw: usize,
    rw: usize,
    /// First slot of each bucket's list, `rows * cols`.
    heads: Vec<u32>,
    /// Per row, which columns have a non-empty bucket; per column, which rows do. Two views
    /// because binpack on CPU walks rows and binpack on memory walks columns.
    row_bits: Vec<u64>,
    col_bits: Vec<u64>,
    any_row: Vec<u64>,
    any_col: Vec<u64>,
    // Per slot. A doubly linked list per bucket makes moving an agent O(1).
    agent: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    bucket: Vec<u32>,
    /// Every member once, for `random` and for scans; `dense_pos` is a slot's place in it.
    dense: Vec<u32>,
    dense_pos: Vec<u32>,
    /// Slots given back by `remove`, reused first so slot numbers stay dense. Unused by the
    /// engine's all-agents grid, whose slots are agent indexes.
    spare: Vec<u32>,
    reuse_slots: bool,
}

impl Grid {
    /// A grid whose top row and column hold `max_cpu` and `max_mem`; larger values are
    /// clamped into the top bucket, which is still correct (a bucket's floor stays a lower
    /// bound of its members) but no longer orders them.
    pub(crate) fn new(max_cpu: u32, max_mem: u32, reuse_slots: bool) -> Grid {
        let rows = level(max_cpu) as usize + 1;
        let cols = level(max_mem) as usize + 1;
        let cw = cols.div_ceil(64);
        let rw = rows.div_ceil(64);
        Grid {
            rows,
            cols,
            cw,
            rw,
            heads: vec![NIL; rows * cols],
            row_bits: vec![0; rows * cw],
            col_bits: vec![0; cols * rw],
            any_row: vec![0; rw],
            any_col: vec![0; cw],
            agent: Vec::new(),
            next: Vec::new(),
            prev: Vec::new(),
            bucket: Vec::new(),
            dense: Vec::new(),
            dense_pos: Vec::new(),
            spare: Vec::new(),
            reuse_slots,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.dense.len()
    }

    pub(crate) fn members(&self) -> impl Iterator<Item = u32> + '_ {
        self.dense.iter().map(|s| self.agent[*s as usize])
    }

    pub(crate) fn bytes(&self) -> usize {
        4 * (self.heads.capacity()
            + self.agent.capacity()
            + self.next.capacity()
            + self.prev.capacity()
            + self.bucket.capacity()
            + self.dense.capacity()
            + self.dense_pos.capacity()
            + self.spare.capacity())
            + 8 * (self.row_bits.capacity()
                + self.col_bits.capacity()
                + self.any_row.capacity()
                + self.any_col.capacity())
    }

    fn bucket_of(&self, f: Free) -> usize {
        let r = (level(f.cpu) as usize).min(self.rows - 1);
        let c = (level(f.mem) as usize).min(self.cols - 1);
        r * self.cols + c
    }

    fn link(&mut self, slot: u32, b: usize) {
        let s = slot as usize;
        let head = self.heads[b];
        self.next[s] = head;
        self.prev[s] = NIL;
        if head != NIL {
            self.prev[head as usize] = slot;
        } else {
            let (r, c) = (b / self.cols, b % self.cols);
            self.row_bits[r * self.cw + c / 64] |= 1 << (c % 64);
            self.col_bits[c * self.rw + r / 64] |= 1 << (r % 64);
            self.any_row[r / 64] |= 1 << (r % 64);
            self.any_col[c / 64] |= 1 << (c % 64);
        }
        self.heads[b] = slot;
        self.bucket[s] = b as u32;
    }

    fn unlink(&mut self, slot: u32) {
        let s = slot as usize;
        let b = self.bucket[s] as usize;
        let (p, n) = (self.prev[s], self.next[s]);
        if p != NIL {
            self.next[p as usize] = n;
        } else {
            self.heads[b] = n;
        }
        if n != NIL {
            self.prev[n as usize] = p;
        }
        if self.heads[b] == NIL {
            let (r, c) = (b / self.cols, b % self.cols);
            self.row_bits[r * self.cw + c / 64] &= !(1 << (c % 64));
            self.col_bits[c * self.rw + r / 64] &= !(1 << (r % 64));
            if self.row_bits[r * self.cw..(r + 1) * self.cw]
                .iter()
                .all(|w| *w == 0)
            {
                self.any_row[r / 64] &= !(1 << (r % 64));
            }
            if self.col_bits[c * self.rw..(c + 1) * self.rw]
                .iter()
                .all(|w| *w == 0)
            {
                self.any_col[c / 64] &= !(1 << (c % 64));
            }
        }
    }

    /// Adds `agent` with free capacity `f` at `slot` (the engine's identity mapping) or at a
    /// fresh slot (`None`); returns the slot.
    pub(crate) fn insert(&mut self, agent: u32, f: Free, slot: Option<u32>) -> u32 {
        let slot = match slot.or_else(|| self.spare.pop()) {
            Some(s) => s,
            None => self.agent.len() as u32,
        };
        let s = slot as usize;
        if s >= self.agent.len() {
            self.agent.resize(s + 1, NIL);
            self.next.resize(s + 1, NIL);
            self.prev.resize(s + 1, NIL);
            self.bucket.resize(s + 1, NIL);
            self.dense_pos.resize(s + 1, NIL);
        }
        debug_assert_eq!(self.bucket[s], NIL, "slot {slot} is already in use");
        self.agent[s] = agent;
        self.dense_pos[s] = self.dense.len() as u32;
        self.dense.push(slot);
        let b = self.bucket_of(f);
        self.link(slot, b);
        slot
    }

    pub(crate) fn remove(&mut self, slot: u32) {
        let s = slot as usize;
        debug_assert_ne!(self.bucket[s], NIL, "slot {slot} is not in use");
        self.unlink(slot);
        self.bucket[s] = NIL;
        let at = self.dense_pos[s] as usize;
        self.dense.swap_remove(at);
        if let Some(moved) = self.dense.get(at) {
            self.dense_pos[*moved as usize] = at as u32;
        }
        self.dense_pos[s] = NIL;
        self.agent[s] = NIL;
        if self.reuse_slots {
            self.spare.push(slot);
        }
    }

    /// Re-buckets a slot whose agent's free capacity is now `f`.
    pub(crate) fn moved(&mut self, slot: u32, f: Free) {
        let b = self.bucket_of(f);
        if self.bucket[slot as usize] as usize != b {
            self.unlink(slot);
            self.link(slot, b);
        }
    }

    /// Walks one bucket's list for a member that fits; returns the best one seen and its score.
    fn walk(&self, b: usize, q: &Query<'_>) -> Option<(u64, u32)> {
        let mut slot = self.heads[b];
        let mut seen = 0;
        let mut best: Option<(u64, u32)> = None;
        while slot != NIL && (q.exhaustive || seen < WALK) {
            let a = self.agent[slot as usize];
            let f = q.free[a as usize];
            if q.fits(f) {
                let s = q.left(f.cpu, f.mem);
                if best.is_none_or(|(bs, _)| s < bs) {
                    best = Some((s, a));
                }
            }
            slot = self.next[slot as usize];
            seen += 1;
        }
        best
    }

    /// An agent that fits the query, chosen by its pick; `None` means none fits (on an
    /// exhaustive query) or none was found cheaply (on a fast one).
    pub(crate) fn find(&self, q: &Query<'_>, rng: &mut Rng) -> Option<u32> {
        if self.dense.is_empty() {
            return None;
        }
        match q.pick {
            Pick::Random => self.random(q, rng),
            Pick::Binpack(BinpackField::Memory) => self.by_columns(q),
            Pick::Binpack(_) => self.by_rows(q),
        }
    }

    /// Binpack on CPU (first fitting row wins) and on both dimensions (rows until the CPU
    /// left alone is worse than the best found). Within a row the first fitting column is the
    /// row's best, because columns only grow.
    fn by_rows(&self, q: &Query<'_>) -> Option<u32> {
        let r0 = (level(q.cpu) as usize).min(self.rows - 1);
        let c0 = (level(q.mem) as usize).min(self.cols - 1);
        let cpu_only = q.pick == Pick::Binpack(BinpackField::Cpu);
        let mut best: Option<(u64, u32)> = None;
        let mut r = r0;
        while let Some(row) = next_set(&self.any_row, r, self.rows) {
            let lo_c = floor(row as u32);
            let row_lb = q.left(lo_c, q.mem);
            if best.is_some_and(|(bs, _)| row_lb >= bs) {
                break;
            }
            let bits = &self.row_bits[row * self.cw..(row + 1) * self.cw];
            let mut col = c0;
            while let Some(k) = next_set(bits, col, self.cols) {
                let lo_m = floor(k as u32);
                let lb = q.left(lo_c, lo_m);
                if best.is_some_and(|(bs, _)| lb >= bs) {
                    break;
                }
                let b = row * self.cols + k;
                if lo_c >= q.cpu && lo_m >= q.mem {
                    best = Some((lb, self.agent[self.heads[b] as usize]));
                    break;
                }
                if let Some((s, a)) = self.walk(b, q) {
                    if best.is_none_or(|(bs, _)| s < bs) {
                        best = Some((s, a));
                    }
                }
                col = k + 1;
            }
            if cpu_only && best.is_some() {
                break;
            }
            r = row + 1;
        }
        best.map(|(_, a)| a)
    }

    /// Binpack on memory: the first column (least memory left) with any fitting row.
    fn by_columns(&self, q: &Query<'_>) -> Option<u32> {
        let r0 = (level(q.cpu) as usize).min(self.rows - 1);
        let c0 = (level(q.mem) as usize).min(self.cols - 1);
        let mut c = c0;
        while let Some(col) = next_set(&self.any_col, c, self.cols) {
            let lo_m = floor(col as u32);
            let bits = &self.col_bits[col * self.rw..(col + 1) * self.rw];
            let mut best: Option<(u64, u32)> = None;
            let mut r = r0;
            while let Some(row) = next_set(bits, r, self.rows) {
                let lo_c = floor(row as u32);
                let b = row * self.cols + col;
                if lo_c >= q.cpu && lo_m >= q.mem {
                    let cand = (q.left(lo_c, lo_m), self.agent[self.heads[b] as usize]);
                    if best.is_none_or(|(bs, _)| cand.0 < bs) {
                        best = Some(cand);
                    }
                    break;
                }
                if let Some(cand) = self.walk(b, q) {
                    if best.is_none_or(|(bs, _)| cand.0 < bs) {
                        best = Some(cand);
                    }
                }
                r = row + 1;
            }
            if let Some((_, a)) = best {
                return Some(a);
            }
            c = col + 1;
        }
        None
    }

    /// Uniform among fitting members by rejection sampling; if fitting members are too rare
    /// for that, a walk of every member from a random start (the one scan `random` can need).
    fn random(&self, q: &Query<'_>, rng: &mut Rng) -> Option<u32> {
        let n = self.dense.len();
        for _ in 0..PROBES {
            let a = self.agent[self.dense[rng.below(n)] as usize];
            if q.fits(q.free[a as usize]) {
                return Some(a);
            }
        }
        if !q.exhaustive {
            return None;
        }
        let start = rng.below(n);
        (0..n)
            .map(|i| self.agent[self.dense[(start + i) % n] as usize])
            .find(|a| q.fits(q.free[*a as usize]))
    }
}

/// A set of agents a query runs over: a plain list while small, a grid once large.
pub(crate) enum Leaf {
    Flat(Vec<u32>),
    Grid(Box<Grid>),
}

impl Leaf {
    pub(crate) fn members(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            Leaf::Flat(v) => Box::new(v.iter().copied()),
            Leaf::Grid(g) => Box::new(g.members()),
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        match self {
            Leaf::Flat(v) => 4 * v.capacity(),
            Leaf::Grid(g) => g.bytes(),
        }
    }

    /// Adds an agent; returns its slot (its position in a flat list, its grid slot). A flat
    /// list past `FLAT_MAX` becomes a grid and every member gets a new slot, reported
    /// through `reslot`.
    pub(crate) fn insert(
        &mut self,
        agent: u32,
        free: &[Free],
        max: (u32, u32),
        reslot: &mut dyn FnMut(u32, u32),
    ) -> u32 {
        if let Leaf::Flat(v) = self {
            if v.len() < FLAT_MAX {
                v.push(agent);
                return (v.len() - 1) as u32;
            }
            let mut g = Grid::new(max.0, max.1, true);
            for a in v.iter() {
                let s = g.insert(*a, free[*a as usize], None);
                reslot(*a, s);
            }
            *self = Leaf::Grid(Box::new(g));
        }
        match self {
            Leaf::Grid(g) => g.insert(agent, free[agent as usize], None),
            Leaf::Flat(_) => unreachable!("converted above"),
        }
    }

    /// Removes the agent at `slot`; a flat list moves its last member into the hole and
    /// reports that through `reslot`.
    pub(crate) fn remove(&mut self, slot: u32, reslot: &mut dyn FnMut(u32, u32)) {
        match self {
            Leaf::Flat(v) => {
                v.swap_remove(slot as usize);
                if let Some(a) = v.get(slot as usize) {
                    reslot(*a, slot);
                }
            }
            Leaf::Grid(g) => g.remove(slot),
        }
    }

    pub(crate) fn moved(&mut self, slot: u32, f: Free) {
        if let Leaf::Grid(g) = self {
            g.moved(slot, f);
        }
    }

    pub(crate) fn find(&self, q: &Query<'_>, rng: &mut Rng) -> Option<u32> {
        match self {
            Leaf::Grid(g) => g.find(q, rng),
            Leaf::Flat(v) => {
                if q.pick == Pick::Random {
                    // Reservoir sampling: uniform among the fitting ones in one pass.
                    let mut chosen = None;
                    let mut seen = 0;
                    for a in v.iter().filter(|a| q.fits(q.free[**a as usize])) {
                        seen += 1;
                        if rng.below(seen) == 0 {
                            chosen = Some(*a);
                        }
                    }
                    return chosen;
                }
                v.iter()
                    .filter(|a| q.fits(q.free[**a as usize]))
                    .min_by_key(|a| {
                        let f = q.free[**a as usize];
                        (q.left(f.cpu, f.mem), **a)
                    })
                    .copied()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_monotone_and_floors_are_lower_bounds() {
        let mut last = 0;
        for v in (0..2_000_000u32).step_by(7).chain([u32::MAX - 1, u32::MAX]) {
            let l = level(v);
            assert!(l >= last);
            last = l;
            assert!(floor(l) <= v, "floor({l}) = {} > {v}", floor(l));
            assert!(l == level(floor(l)));
        }
    }

    #[test]
    fn fargate_sizes_are_bucket_floors() {
        let mut sizes: Vec<u32> = vec![256, 512, 1024, 2048, 4096, 8192, 16384];
        sizes.extend((1..=30).map(|g| g * 1024));
        sizes.extend((16..=60).step_by(4).map(|g| g * 1024));
        sizes.extend((32..=120).step_by(8).map(|g| g * 1024));
        for s in sizes {
            assert_eq!(floor(level(s)), s, "{s}");
        }
    }

    #[test]
    fn next_set_finds_bits() {
        let bits = [0b1000u64, 0, 1 << 5];
        assert_eq!(next_set(&bits, 0, 192), Some(3));
        assert_eq!(next_set(&bits, 4, 192), Some(133));
        assert_eq!(next_set(&bits, 4, 133), None);
        assert_eq!(next_set(&bits, 134, 192), None);
    }
}
