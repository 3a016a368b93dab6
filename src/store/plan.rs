//! What SQLite and PostgreSQL do the same way around their own SQL: the
//! order in which a claim visits the flows, and how a batch of transitions
//! is split into statements.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;

use super::{JobRecord, Transition};

/// The lease a claim puts on the jobs it takes. Owned, so that a claim can
/// be handed to SQLite's writer thread.
pub(super) struct Lease {
    pub owner: String,
    pub now: Timestamp,
    pub lease_until: Timestamp,
}

/// The order in which a claim of up to `limit` jobs visits the flows in
/// `due` (the one waiting longest first). Round robin: every flow gets an
/// equal share of the round first, so a backlog in one flow delays another
/// flow's job by one round at most; what the shares leave free goes, in
/// order, to the flows that filled theirs. The store asks
/// [`RoundRobin::next`] which flow to claim from and how many, claims them
/// earliest due first, and hands them to [`RoundRobin::claimed`].
pub(super) struct RoundRobin<'a> {
    due: &'a [String],
    limit: usize,
    share: usize,
    /// The next flow of the first pass.
    next: usize,
    /// Flows that filled their share in the first pass: they may have more.
    hungry: Vec<&'a str>,
    /// The next hungry flow of the second pass.
    next_hungry: usize,
    jobs: Vec<JobRecord>,
}

impl<'a> RoundRobin<'a> {
    pub fn new(due: &'a [String], limit: usize) -> Self {
        Self {
            due,
            limit,
            share: (limit / due.len().max(1)).max(1),
            next: 0,
            hungry: Vec::new(),
            next_hungry: 0,
            jobs: Vec::with_capacity(limit),
        }
    }

    /// The flow to claim from next and the most to claim; `None` once the
    /// claim is full or every flow has had its turns.
    pub fn next(&mut self) -> Option<(&'a str, usize)> {
        let room = self.limit - self.jobs.len();
        if room == 0 {
            return None;
        }
        if let Some(flow) = self.due.get(self.next) {
            self.next += 1;
            return Some((flow.as_str(), self.share.min(room)));
        }
        let flow = *self.hungry.get(self.next_hungry)?;
        self.next_hungry += 1;
        Some((flow, room))
    }

    /// What the claim [`RoundRobin::next`] asked for took: up to `room`
    /// jobs of `flow`.
    pub fn claimed(&mut self, flow: &'a str, room: usize, jobs: Vec<JobRecord>) {
        if self.next_hungry == 0 && jobs.len() == room {
            self.hungry.push(flow);
        }
        self.jobs.extend(jobs);
    }

    /// The jobs claimed, higher priority first, then earliest due first:
    /// the order the workers start them in.
    pub fn into_jobs(mut self) -> Vec<JobRecord> {
        self.jobs.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.next_at.cmp(&b.next_at))
                .then_with(|| a.id.cmp(&b.id))
        });
        self.jobs
    }
}

/// Splits a batch into runs in which no job appears twice, so that one
/// set-based update per run says exactly which transitions applied.
pub(super) fn runs_of_distinct_jobs(transitions: &[Transition]) -> Vec<&[Transition]> {
    let mut runs = Vec::new();
    let mut seen = HashSet::new();
    let mut start = 0;
    for (index, transition) in transitions.iter().enumerate() {
        if !seen.insert(transition.job_id.as_str()) {
            runs.push(&transitions[start..index]);
            seen.clear();
            seen.insert(transition.job_id.as_str());
            start = index;
        }
    }
    runs.push(&transitions[start..]);
    runs
}

/// The flows with a job due at `now`, the one waiting longest first (ties
/// by name), and each one's due lanes, highest priority first.
#[derive(Debug, Default, PartialEq)]
pub(super) struct DueLanes {
    pub flows: Vec<String>,
    lanes: HashMap<String, Vec<i64>>,
}

impl DueLanes {
    /// The priorities of `flow` with a job due, highest first: a claim of
    /// the flow takes from them in this order.
    pub fn priorities(&self, flow: &str) -> &[i64] {
        self.lanes.get(flow).map_or(&[], Vec::as_slice)
    }
}

/// [`DueLanes`] at `now`, from each waiting lane's flow, priority and
/// earliest due time in milliseconds.
pub(super) fn due_first(
    waiting: impl IntoIterator<Item = (String, i64, Option<i64>)>,
    now: Timestamp,
) -> DueLanes {
    let now = now.as_millisecond();
    let mut earliest: HashMap<String, i64> = HashMap::new();
    let mut lanes: HashMap<String, Vec<i64>> = HashMap::new();
    for (flow, priority, at) in waiting {
        let Some(at) = at.filter(|at| *at <= now) else {
            continue;
        };
        earliest
            .entry(flow.clone())
            .and_modify(|e| *e = (*e).min(at))
            .or_insert(at);
        lanes.entry(flow).or_default().push(priority);
    }
    for priorities in lanes.values_mut() {
        priorities.sort_unstable_by(|a, b| b.cmp(a));
    }
    let mut due: Vec<(i64, String)> = earliest.into_iter().map(|(f, at)| (at, f)).collect();
    due.sort();
    DueLanes {
        flows: due.into_iter().map(|(_, flow)| flow).collect(),
        lanes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_flows_come_longest_waiting_first_and_future_ones_not_at_all() {
        let at = |s: i64| Some(s * 1000);
        let waiting = [
            ("later".to_string(), 0, at(50)),
            ("b".to_string(), 0, at(10)),
            ("a".to_string(), 0, at(10)),
            ("oldest".to_string(), 0, at(1)),
            ("none".to_string(), 0, None),
            ("now".to_string(), 0, at(20)),
        ];
        let now = Timestamp::from_second(20).unwrap();
        assert_eq!(due_first(waiting, now).flows, ["oldest", "a", "b", "now"]);
    }

    #[test]
    fn a_flows_due_lanes_come_highest_priority_first_and_future_lanes_not_at_all() {
        let at = |s: i64| Some(s * 1000);
        let waiting = [
            ("leads".to_string(), -5, at(1)),
            ("leads".to_string(), 0, at(30)),
            ("leads".to_string(), 10, at(15)),
            ("leads".to_string(), 50, at(19)),
            ("orders".to_string(), 0, at(5)),
            ("orders".to_string(), 7, at(40)),
        ];
        let due = due_first(waiting, Timestamp::from_second(20).unwrap());
        // The flow's place comes from its earliest lane, whatever its
        // priority: fairness across flows is unchanged.
        assert_eq!(due.flows, ["leads", "orders"]);
        assert_eq!(due.priorities("leads"), [50, 10, -5]);
        assert_eq!(due.priorities("orders"), [0]);
        assert!(due.priorities("refunds").is_empty());
    }

    fn job(flow: &str, n: i64) -> JobRecord {
        let at = Timestamp::from_second(1_800_000_000 + n).unwrap();
        JobRecord::claimed_for_test(&format!("{flow}-{n:03}"), flow, &format!("{n}"), at)
    }

    /// Runs a round against flows holding `waiting` due jobs each; returns
    /// the claims asked for and the jobs claimed, per flow.
    fn run(waiting: &[(&str, usize)], limit: usize) -> (Vec<(String, usize)>, Vec<JobRecord>) {
        let due: Vec<String> = waiting.iter().map(|(flow, _)| flow.to_string()).collect();
        let mut left: Vec<usize> = waiting.iter().map(|(_, count)| *count).collect();
        let mut taken = vec![0; waiting.len()];
        let mut asked = Vec::new();
        let mut round = RoundRobin::new(&due, limit);
        while let Some((flow, room)) = round.next() {
            asked.push((flow.to_string(), room));
            let index = due.iter().position(|f| f == flow).unwrap();
            let count = room.min(left[index]);
            let jobs = (0..count)
                .map(|k| job(flow, (taken[index] + k) as i64))
                .collect();
            left[index] -= count;
            taken[index] += count;
            round.claimed(flow, room, jobs);
        }
        (asked, round.into_jobs())
    }

    fn asked(pairs: &[(&str, usize)]) -> Vec<(String, usize)> {
        pairs.iter().map(|(f, n)| (f.to_string(), *n)).collect()
    }

    #[test]
    fn every_flow_gets_its_share_first_and_the_rest_goes_to_those_with_more() {
        let (claims, jobs) = run(&[("leads", 100), ("orders", 2), ("refunds", 100)], 30);
        assert_eq!(
            claims,
            asked(&[("leads", 10), ("orders", 10), ("refunds", 10), ("leads", 8)])
        );
        let count = |flow: &str| jobs.iter().filter(|j| j.flow == flow).count();
        assert_eq!(
            (count("leads"), count("orders"), count("refunds")),
            (18, 2, 10)
        );
    }

    #[test]
    fn a_claim_stops_when_full_and_when_the_flows_run_dry() {
        let (claims, jobs) = run(&[("leads", 3), ("orders", 3)], 4);
        assert_eq!(claims, asked(&[("leads", 2), ("orders", 2)]));
        assert_eq!(jobs.len(), 4);

        let (claims, jobs) = run(&[("leads", 1), ("orders", 1)], 10);
        assert_eq!(claims, asked(&[("leads", 5), ("orders", 5)]));
        assert_eq!(jobs.len(), 2);

        let (claims, jobs) = run(&[], 10);
        assert!(claims.is_empty() && jobs.is_empty());
    }

    #[test]
    fn more_flows_than_room_take_one_each_in_order_until_full() {
        let (claims, _) = run(&[("a", 5), ("b", 5), ("c", 5)], 2);
        assert_eq!(claims, asked(&[("a", 1), ("b", 1)]));
    }

    #[test]
    fn jobs_come_back_earliest_due_first() {
        let (_, jobs) = run(&[("leads", 3), ("orders", 3)], 6);
        let due: Vec<_> = jobs.iter().map(|j| (j.next_at, j.id.clone())).collect();
        let mut sorted = due.clone();
        sorted.sort();
        assert_eq!(due, sorted);
    }
}

/// The share of claims retries may take while the engine is yellow or red
/// (`None`: no cut), kept by a store as permille so that the scheduler can
/// set it while claims read it.
#[derive(Debug, Default)]
pub struct RetryShare(std::sync::atomic::AtomicU32);

/// The permille of [`RetryShare`] that means no cut.
const NO_CUT: u32 = 0;

/// A cut in force for one claim: retries get this many permille of a lane's
/// room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryCut(u32);

impl RetryCut {
    /// Of `room` claims in a lane, how many retries may take: at least one,
    /// so that a backlog still drains.
    pub fn retry_room(self, room: usize) -> usize {
        (room * self.0 as usize / 1000).clamp(1, room.max(1))
    }
}

impl RetryShare {
    /// Sets the share (`None`, or 1.0 and more: no cut).
    pub fn set(&self, share: Option<f64>) {
        let permille = match share {
            Some(share) if share < 1.0 => ((share.max(0.0) * 1000.0).round() as u32).max(1),
            _ => NO_CUT,
        };
        self.0.store(permille, std::sync::atomic::Ordering::Relaxed);
    }

    /// The cut in force, if any.
    pub fn cut(&self) -> Option<RetryCut> {
        let permille = self.0.load(std::sync::atomic::Ordering::Relaxed);
        (permille != NO_CUT).then_some(RetryCut(permille))
    }
}

#[cfg(test)]
mod retry_share_tests {
    use super::RetryShare;

    #[test]
    fn a_cut_leaves_retries_their_share_and_at_least_one() {
        let share = RetryShare::default();
        assert_eq!(share.cut(), None);
        share.set(Some(0.5));
        assert_eq!(share.cut().map(|c| c.retry_room(64)), Some(32));
        share.set(Some(0.1));
        let cut = share.cut().unwrap();
        assert_eq!((cut.retry_room(64), cut.retry_room(3)), (6, 1));
        share.set(None);
        assert_eq!(share.cut(), None);
        share.set(Some(1.0));
        assert_eq!(share.cut(), None);
    }
}
