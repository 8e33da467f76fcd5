//! Randomized deterministic simulations of 64 groups under leader kills, partitions,
//! message loss and crash-restarts. Each seed must end with every request acknowledged
//! exactly once, at the position it was acknowledged with, and with identical replicas.
//! `UMS_SIM_SEEDS` sets seeds per test (default 500, so 1,000 per CI run);
//! `UMS_SIM_SEED` replays one seed.

use consensus_sim::{WorkloadOptions, run_random};

/// Seeds `offset..offset+count`, or exactly the one in `UMS_SIM_SEED`.
fn seeds(offset: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("UMS_SIM_SEED") {
        return vec![seed.parse().expect("UMS_SIM_SEED must be a number")];
    }
    let count: u64 = std::env::var("UMS_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    (offset..offset + count).collect()
}

fn run_seeds(nodes: usize, offset: u64) {
    let mut failures = Vec::new();
    let (mut attempts, mut faults) = (0, 0);
    let seeds = seeds(offset);
    for &seed in &seeds {
        // A panic inside raft-rs or our invariants counts as a failure of this seed.
        let outcome = std::panic::catch_unwind(|| run_random(&WorkloadOptions::standard(seed, nodes)))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&panic))));
        match outcome {
            Ok(report) => {
                attempts += report.attempts;
                faults += report.faults;
            }
            Err(error) => {
                eprintln!("seed {seed} FAILED ({nodes} replicas); replay with UMS_SIM_SEED={seed}:\n{error}");
                failures.push(seed);
            }
        }
    }
    eprintln!("{} seeds with {nodes} replicas: {attempts} attempts, {faults} faults injected", seeds.len());
    assert!(failures.is_empty(), "failing seeds ({nodes} replicas): {failures:?}");
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-string panic".into())
}

#[test]
fn three_replicas_survive_random_faults() {
    run_seeds(3, 0);
}

#[test]
fn five_replicas_survive_random_faults() {
    run_seeds(5, 1_000_000);
}

#[test]
fn a_seed_replays_exactly() {
    let options = WorkloadOptions::standard(4242, 3);
    let first = run_random(&options).expect("seed 4242 passes");
    let second = run_random(&options).expect("seed 4242 passes");
    assert_eq!(
        (first.attempts, first.faults, first.virtual_ms),
        (second.attempts, second.faults, second.virtual_ms),
        "same seed, different run: the simulation is not deterministic"
    );
}

/// Replica moves, additions and removals (joint consensus, learners caught up by
/// snapshot, leadership handed over first) under the same faults: every group must end
/// with exactly its target voters, not joint, with no replica left elsewhere.
#[test]
fn membership_changes_survive_random_faults() {
    let seeds = seeds(2_000_000);
    let count = std::env::var("UMS_SIM_MOVE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut failures = Vec::new();
    let (mut changes, mut faults, mut virtual_ms) = (0, 0, 0);
    for &seed in seeds.iter().take(count) {
        let outcome = std::panic::catch_unwind(|| run_random(&WorkloadOptions::with_moves(seed)))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&panic))));
        match outcome {
            Ok(report) => {
                changes += report.target_changes;
                faults += report.faults;
                virtual_ms += report.virtual_ms;
            }
            Err(error) => {
                eprintln!("seed {seed} FAILED (moves); replay with UMS_SIM_SEED={seed}:\n{error}");
                failures.push(seed);
            }
        }
    }
    eprintln!("{count} seeds with moves: {changes} target changes, {faults} faults, {virtual_ms} virtual ms");
    assert!(failures.is_empty(), "failing seeds (moves): {failures:?}");
}
