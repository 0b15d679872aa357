//! How a task's size becomes per-container hard limits. Pure arithmetic, tested alone.
//!
//! A task definition gives the task's CPU units and MiB; each container may declare its own
//! share (`cpu`, `memory`). Docker limits containers, not groups of them, so the task's size
//! is split: a declared share is kept, the rest is split evenly among the containers that
//! declared nothing, and the parts never add up to more than the task. Docker refuses limits
//! below a minimum (0.01 CPU, 6 MiB), so each part is at least that floor.

/// One vCPU (1024 units) in Docker's nano-CPUs.
pub const NANO_CPUS_PER_VCPU: u64 = 1_000_000_000;
/// Docker's smallest CPU limit: 0.01 CPU.
pub const MIN_NANO_CPUS: u64 = 10_000_000;
/// Docker's smallest memory limit.
pub const MIN_MEMORY_BYTES: u64 = 6 * MIB;
/// Fewest processes a container may be limited to: a shell and a few children.
pub const MIN_PIDS: u64 = 16;
pub const MIB: u64 = 1024 * 1024;

/// Hard limits of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
    pub pids: u64,
}

/// Splits `total` among containers. `declared[i]` is container i's own share, if any. Every
/// part is at least `floor`; unless `total` is below `floor` per container (impossible for
/// validated definitions), the parts add up to at most `total`.
pub fn split(total: u64, declared: &[Option<u64>], floor: u64) -> Vec<u64> {
    let n = declared.len() as u64;
    if n == 0 {
        return Vec::new();
    }
    if total < n * floor {
        return vec![floor; declared.len()];
    }
    let undeclared = declared.iter().filter(|d| d.is_none()).count() as u64;
    let declared_count = n - undeclared;
    let declared_sum: u64 = declared.iter().flatten().sum();
    // What the declared shares may take while leaving every undeclared container its floor.
    let room = total - undeclared * floor;
    let scale = declared_sum > room || declared.iter().flatten().any(|d| *d < floor);
    let mut parts: Vec<Option<u64>> = declared
        .iter()
        .map(|d| {
            d.map(|d| {
                if !scale {
                    return d;
                }
                // The floor each, and the rest of the room in proportion to what was
                // declared: adds up to at most `room`.
                ((room - declared_count * floor) * d)
                    .checked_div(declared_sum)
                    .map_or(floor, |share| floor + share)
            })
        })
        .collect();
    let taken: u64 = parts.iter().flatten().sum();
    let rest = total.saturating_sub(taken);
    let each = rest.checked_div(undeclared).unwrap_or(0).max(floor);
    for p in parts.iter_mut() {
        if p.is_none() {
            *p = Some(each);
        }
    }
    let out: Vec<u64> = parts.into_iter().map(|p| p.unwrap_or(floor)).collect();
    debug_assert!(out.iter().all(|p| *p >= floor));
    debug_assert!(out.iter().sum::<u64>() <= total);
    out
}

/// The limits of each container of a task of `cpu` units and `memory` MiB, from the
/// containers' declared `(cpu units, memory MiB)`, with `pids_per_task` processes split
/// evenly.
pub fn task_limits(
    cpu: u32,
    memory: u32,
    declared: &[(Option<u32>, Option<u32>)],
    pids_per_task: u32,
) -> Vec<Limits> {
    let nano = |units: u32| u64::from(units) * NANO_CPUS_PER_VCPU / 1024;
    let cpus = split(
        nano(cpu),
        &declared
            .iter()
            .map(|(c, _)| c.map(nano))
            .collect::<Vec<_>>(),
        MIN_NANO_CPUS,
    );
    let mem = split(
        u64::from(memory) * MIB,
        &declared
            .iter()
            .map(|(_, m)| m.map(|m| u64::from(m) * MIB))
            .collect::<Vec<_>>(),
        MIN_MEMORY_BYTES,
    );
    let pids = split(
        u64::from(pids_per_task),
        &vec![None; declared.len()],
        MIN_PIDS,
    );
    cpus.into_iter()
        .zip(mem)
        .zip(pids)
        .map(|((nano_cpus, memory_bytes), pids)| Limits {
            nano_cpus,
            memory_bytes,
            pids,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_container_gets_the_whole_task() {
        let l = task_limits(512, 1024, &[(None, None)], 4096);
        assert_eq!(
            l,
            vec![Limits {
                nano_cpus: 500_000_000,
                memory_bytes: 1024 * MIB,
                pids: 4096
            }]
        );
    }

    #[test]
    fn undeclared_containers_split_the_rest_evenly() {
        let l = task_limits(
            1024,
            2048,
            &[(Some(512), Some(1024)), (None, None), (None, None)],
            300,
        );
        assert_eq!(l[0].nano_cpus, 500_000_000);
        assert_eq!(l[1].nano_cpus, 250_000_000);
        assert_eq!(l[2].nano_cpus, 250_000_000);
        assert_eq!(l[0].memory_bytes, 1024 * MIB);
        assert_eq!(l[1].memory_bytes, 512 * MIB);
        assert_eq!(l[1].pids, 100);
    }

    #[test]
    fn declared_shares_that_leave_nothing_are_scaled_down() {
        // The first container declares the whole task; the second still needs its floor.
        let parts = split(100, &[Some(100), None], 10);
        assert_eq!(parts.iter().sum::<u64>(), 100);
        assert!(parts[1] >= 10);
        assert!(parts[0] >= 10);
    }

    #[test]
    fn declared_only_is_kept_even_below_the_task() {
        assert_eq!(split(100, &[Some(30), Some(20)], 5), vec![30, 20]);
    }

    #[test]
    fn parts_never_exceed_the_task_and_respect_the_floor() {
        // Exhaustive over small shapes: every combination of up to 4 containers.
        let choices = [None, Some(0), Some(1), Some(7), Some(50), Some(100)];
        for total in [40u64, 64, 100, 1000] {
            for a in choices {
                for b in choices {
                    for c in choices {
                        for d in choices {
                            let decl = [a, b, c, d];
                            // Validation guarantees declared shares fit the task.
                            if decl.iter().flatten().sum::<u64>() > total {
                                continue;
                            }
                            let parts = split(total, &decl, 10);
                            assert!(
                                parts.iter().sum::<u64>() <= total,
                                "{total} {decl:?} {parts:?}"
                            );
                            assert!(parts.iter().all(|p| *p >= 10), "{total} {decl:?} {parts:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn ten_containers_on_the_smallest_task_fit_dockers_minimums() {
        let l = task_limits(256, 512, &[(None, None); 10], 4096);
        assert!(l.iter().all(|l| l.nano_cpus >= MIN_NANO_CPUS));
        assert!(l.iter().all(|l| l.memory_bytes >= MIN_MEMORY_BYTES));
        assert!(l.iter().map(|l| l.nano_cpus).sum::<u64>() <= 250_000_000);
        assert!(l.iter().map(|l| l.memory_bytes).sum::<u64>() <= 512 * MIB);
    }
}
