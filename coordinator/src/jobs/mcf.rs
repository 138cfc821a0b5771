//! Min-cost max-flow by the primal-dual method: successive shortest paths (Dijkstra on reduced
//! costs with node potentials), each phase augmenting a blocking flow (Dinic) along every shortest
//! path at once. Costs must be non-negative on the edges added; the number of phases is the number
//! of distinct shortest-path lengths, which stays small when costs take few values (as placement
//! costs do), so a network of 10,000s of edges solves in milliseconds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

#[derive(Debug, Clone)]
struct Edge {
    to: usize,
    cap: i64,
    cost: i64,
}

/// A flow network; edges are added with [`Network::add_edge`], then solved once.
#[derive(Debug, Clone, Default)]
pub struct Network {
    edges: Vec<Edge>,
    adj: Vec<Vec<usize>>,
    original: Vec<i64>,
}

const INF: i64 = i64::MAX / 4;

impl Network {
    pub fn new(nodes: usize) -> Self {
        Self { edges: Vec::new(), adj: vec![Vec::new(); nodes], original: Vec::new() }
    }

    /// Adds an edge and returns its id (for [`Network::flow`]). `cost` must be ≥ 0.
    pub fn add_edge(&mut self, from: usize, to: usize, cap: i64, cost: i64) -> usize {
        debug_assert!(cost >= 0 && cap >= 0);
        let id = self.edges.len();
        self.adj[from].push(id);
        self.edges.push(Edge { to, cap, cost });
        self.adj[to].push(id + 1);
        self.edges.push(Edge { to: from, cap: 0, cost: -cost });
        self.original.push(cap);
        id
    }

    /// Flow on an edge after solving.
    pub fn flow(&self, id: usize) -> i64 {
        self.original[id / 2] - self.edges[id].cap
    }

    /// Sends as much flow as possible from `s` to `t` at the least total cost; returns (flow, cost).
    pub fn min_cost_max_flow(&mut self, s: usize, t: usize) -> (i64, i64) {
        let n = self.adj.len();
        let mut potential = vec![0i64; n];
        let (mut flow, mut cost) = (0i64, 0i64);
        loop {
            let dist = self.dijkstra(s, &potential);
            if dist[t] >= INF {
                break;
            }
            for v in 0..n {
                if dist[v] < INF {
                    potential[v] += dist[v];
                }
            }
            let pushed = self.blocking_flow(s, t, &potential);
            if pushed == 0 {
                break;
            }
            flow += pushed;
            cost += pushed * (potential[t] - potential[s]);
        }
        (flow, cost)
    }

    fn reduced(&self, from: usize, e: usize, potential: &[i64]) -> i64 {
        self.edges[e].cost + potential[from] - potential[self.edges[e].to]
    }

    fn dijkstra(&self, s: usize, potential: &[i64]) -> Vec<i64> {
        let mut dist = vec![INF; self.adj.len()];
        let mut heap = BinaryHeap::new();
        dist[s] = 0;
        heap.push(Reverse((0i64, s)));
        while let Some(Reverse((d, u))) = heap.pop() {
            if d > dist[u] {
                continue;
            }
            for &e in &self.adj[u] {
                if self.edges[e].cap == 0 {
                    continue;
                }
                let v = self.edges[e].to;
                let nd = d + self.reduced(u, e, potential);
                if nd < dist[v] {
                    dist[v] = nd;
                    heap.push(Reverse((nd, v)));
                }
            }
        }
        dist
    }

    /// Dinic on the admissible subgraph (residual edges of reduced cost 0).
    fn blocking_flow(&mut self, s: usize, t: usize, potential: &[i64]) -> i64 {
        let n = self.adj.len();
        let mut total = 0;
        loop {
            let mut level = vec![usize::MAX; n];
            level[s] = 0;
            let mut queue = VecDeque::from([s]);
            while let Some(u) = queue.pop_front() {
                for &e in &self.adj[u] {
                    let v = self.edges[e].to;
                    if self.edges[e].cap > 0 && level[v] == usize::MAX && self.reduced(u, e, potential) == 0 {
                        level[v] = level[u] + 1;
                        queue.push_back(v);
                    }
                }
            }
            if level[t] == usize::MAX {
                return total;
            }
            let mut next = vec![0usize; n];
            loop {
                let pushed = self.augment(s, t, INF, &level, &mut next, potential);
                if pushed == 0 {
                    break;
                }
                total += pushed;
            }
        }
    }

    fn augment(
        &mut self,
        u: usize,
        t: usize,
        limit: i64,
        level: &[usize],
        next: &mut [usize],
        potential: &[i64],
    ) -> i64 {
        if u == t {
            return limit;
        }
        while next[u] < self.adj[u].len() {
            let e = self.adj[u][next[u]];
            let v = self.edges[e].to;
            if self.edges[e].cap > 0 && level[v] == level[u] + 1 && self.reduced(u, e, potential) == 0 {
                let pushed = self.augment(v, t, limit.min(self.edges[e].cap), level, next, potential);
                if pushed > 0 {
                    self.edges[e].cap -= pushed;
                    self.edges[e ^ 1].cap += pushed;
                    return pushed;
                }
            }
            next[u] += 1;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator for random instances.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Brute force over every assignment of tasks to agents (or none): most tasks placed, then least cost.
    fn brute(cost: &[Vec<Option<i64>>], capacity: &[i64]) -> (i64, i64) {
        fn go(i: usize, cost: &[Vec<Option<i64>>], left: &mut Vec<i64>, placed: i64, sum: i64, best: &mut (i64, i64)) {
            if i == cost.len() {
                if placed > best.0 || (placed == best.0 && sum < best.1) {
                    *best = (placed, sum);
                }
                return;
            }
            go(i + 1, cost, left, placed, sum, best);
            for (j, c) in cost[i].iter().enumerate() {
                if let Some(c) = c
                    && left[j] > 0
                {
                    left[j] -= 1;
                    go(i + 1, cost, left, placed + 1, sum + c, best);
                    left[j] += 1;
                }
            }
        }
        let mut best = (0, 0);
        go(0, cost, &mut capacity.to_vec(), 0, 0, &mut best);
        best
    }

    #[test]
    fn matches_brute_force_on_random_assignments() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..500 {
            let tasks = 1 + rng.below(6) as usize;
            let agents = 1 + rng.below(4) as usize;
            let cost: Vec<Vec<Option<i64>>> = (0..tasks)
                .map(|_| (0..agents).map(|_| (rng.below(4) != 0).then(|| rng.below(20) as i64)).collect())
                .collect();
            let capacity: Vec<i64> = (0..agents).map(|_| rng.below(3) as i64).collect();
            // source 0, tasks 1..=T, agents T+1..=T+A, sink T+A+1
            let sink = tasks + agents + 1;
            let mut net = Network::new(sink + 1);
            let mut assign = Vec::new();
            for (i, row) in cost.iter().enumerate() {
                net.add_edge(0, 1 + i, 1, 0);
                for (j, c) in row.iter().enumerate() {
                    if let Some(c) = c {
                        assign.push((i, j, net.add_edge(1 + i, 1 + tasks + j, 1, *c)));
                    }
                }
            }
            for (j, cap) in capacity.iter().enumerate() {
                net.add_edge(1 + tasks + j, sink, *cap, 0);
            }
            let got = net.min_cost_max_flow(0, sink);
            assert_eq!(got, brute(&cost, &capacity), "cost {cost:?} capacity {capacity:?}");
            // The flows respect capacities and add up to the reported totals.
            let mut used = vec![0; agents];
            let mut sum = 0;
            for (i, j, e) in assign {
                let f = net.flow(e);
                assert!((0..=1).contains(&f));
                used[j] += f;
                sum += f * cost[i][j].unwrap();
            }
            assert!(used.iter().zip(&capacity).all(|(u, c)| u <= c));
            assert_eq!((used.iter().sum::<i64>(), sum), got);
        }
    }

    #[test]
    fn prefers_cheap_paths_and_uses_expensive_ones_only_for_more_flow() {
        // s -> a (cap 2, cost 1) -> t, s -> b (cap 2, cost 5) -> t; demand limited by s->x edges.
        let mut net = Network::new(4);
        let cheap = net.add_edge(0, 1, 2, 1);
        let dear = net.add_edge(0, 2, 2, 5);
        net.add_edge(1, 3, 3, 0);
        net.add_edge(2, 3, 1, 0);
        assert_eq!(net.min_cost_max_flow(0, 3), (3, 7));
        assert_eq!((net.flow(cheap), net.flow(dear)), (2, 1));
    }
}
