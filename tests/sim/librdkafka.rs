//! librdkafka's cooperative-sticky assignor (2.16.0), as a real group was recorded
//! doing it (tests/kafka/FINDINGS.md; fixtures/kafka/cooperative_sticky_*.json): the
//! plain leave and join rules of `tests/kafka/sticky_rule.py` (`leave_rule`,
//! `join_rule`), ported. Included with `#[path]` by the simulation model
//! (`tests/sim/model.rs`), which makes it its default sticky variant, and replayed
//! against every recorded step by `tests/it/assignor.rs`.
//!
//! One topic, every member subscribed, members given in member-id order (strcmp: a
//! member id is `client.id-<uuid4>`, and `client.id` is the pod name, so they sort as
//! the pod names do). The rules are exactly librdkafka's from a balanced group (the
//! counts of any two members differ by at most one), which is all the simulator ever
//! has: it starts balanced, and each rule leaves the group balanced.

/// The member holding the fewest partitions; ties to the member id that sorts first.
fn fewest(owned: &[Vec<usize>]) -> usize {
    (0..owned.len()).min_by_key(|&k| owned[k].len()).unwrap_or(0)
}

/// A rebalance over `owned` (every member's partitions, members sorted by member id, a
/// member that just joined owning none) with `orphans` owned by nobody (the partitions
/// of members that left; every partition, for a group starting from nothing). Returns
/// how many partitions were taken from members that keep them (given up to newcomers).
///
/// - **Orphans** (a leave): the members keep what they own; the orphans are dealt
///   highest partition number first, each to the member holding the fewest (ties: the
///   member id that sorts first). Lowest number first when no member owns anything: a
///   group starting at once gets partition p on the (p mod C)-th member id
///   (round-robin, not range).
/// - **Give-up** (a join: the group is unbalanced once the newcomers count): the owned
///   partitions are lined up by turns, the member with the most not yet lined up (ties:
///   the member id that sorts last) putting up its lowest-numbered one; walking the
///   line, a partition is given up when its owner holds at least two more than the
///   member holding the fewest, until most − fewest ≤ 1. The cooperative protocol
///   revokes them in one rebalance and deals them, highest number first, each to the
///   member holding the fewest (ties: the first member id), in the next: the
///   newcomers. The simulator counts both rounds.
pub fn rebalance(owned: &mut [Vec<usize>], mut orphans: Vec<usize>) -> usize {
    if owned.is_empty() {
        return 0;
    }
    for member in owned.iter_mut() {
        member.sort_unstable();
    }
    // Unowned partitions come last in the assignor's list, in the iteration order of
    // librdkafka's hash map (the reverse of insertion: highest first), unless nobody
    // owns anything: then the list is by partition number.
    let anyone_owns = owned.iter().any(|m| !m.is_empty());
    orphans.sort_unstable();
    if anyone_owns {
        orphans.reverse();
    }
    for partition in orphans {
        let k = fewest(owned);
        owned[k].push(partition);
    }
    let given_up = give_up(owned);
    let revoked = given_up.len();
    for partition in given_up {
        let k = fewest(owned);
        owned[k].push(partition);
    }
    for member in owned.iter_mut() {
        member.sort_unstable();
    }
    revoked
}

/// The join's first step: the partitions given up, taken out of `owned`, highest first.
///
/// The line is generated as the walk goes (a heap of the members by how many they
/// have not yet lined up), and the counts are kept sorted: the walk stops as soon as the
/// group is balanced, a few partitions in, so a join on 200 members costs about as
/// much as one on 12.
fn give_up(owned: &mut [Vec<usize>]) -> Vec<usize> {
    use std::collections::{BTreeSet, BinaryHeap};
    let offered: Vec<Vec<usize>> = owned.to_vec();
    let mut counts: Vec<usize> = offered.iter().map(Vec::len).collect();
    // (count, member): the first is the member holding the fewest, ties to the first
    // member id; the last holds the most.
    let mut by_count: BTreeSet<(usize, usize)> = counts.iter().copied().zip(0..).collect();
    let balanced = |by_count: &BTreeSet<(usize, usize)>| match (by_count.first(), by_count.last()) {
        (Some(least), Some(most)) => most.0 - least.0 <= 1,
        _ => true,
    };
    // The line: by turns, the member with the most not yet lined up (ties: the member
    // id that sorts last) puts up its lowest-numbered partition.
    let mut line: BinaryHeap<(usize, usize)> = offered
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.is_empty())
        .map(|(k, p)| (p.len(), k))
        .collect();
    let mut next = vec![0usize; owned.len()];
    let mut given_up = Vec::new();
    while let Some((left, m)) = line.pop() {
        if balanced(&by_count) {
            break;
        }
        let partition = offered[m][next[m]];
        next[m] += 1;
        if left > 1 {
            line.push((left - 1, m));
        }
        // The fewest among the others: the first of the sorted counts, unless that is m.
        let others = by_count.iter().find(|(_, k)| *k != m).map_or(0, |(c, _)| *c);
        if counts[m] > others + 1 {
            by_count.remove(&(counts[m], m));
            counts[m] -= 1;
            by_count.insert((counts[m], m));
            let (c, least) = by_count.pop_first().expect("members");
            counts[least] = c + 1;
            by_count.insert((counts[least], least));
            owned[m].retain(|&p| p != partition);
            given_up.push(partition);
        }
    }
    given_up.sort_unstable_by(|a, b| b.cmp(a));
    given_up
}
