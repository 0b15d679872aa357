//! The leader's autoscaler: for every service with a scaling policy, the desired count its
//! tasks' measured utilization asks for. Free of I/O; the scheduler proposes what it
//! returns, and apply re-checks the count it was computed from and the cooldowns, so a
//! decision on a state a little behind changes nothing.

use berth_core::ClusterState;

/// One service's desired count to change, and the figures behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scale {
    pub service: String,
    pub from: u32,
    pub to: u32,
    pub reason: String,
}

pub(crate) fn autoscale(state: &ClusterState, now: u64) -> Vec<Scale> {
    let mut out = Vec::new();
    for svc in state.services() {
        let Some(scaling) = &svc.scaling else {
            continue;
        };
        let p = scaling.policy;
        let Some(m) = state.service_metric(&svc.name, p.metric, now) else {
            continue;
        };
        let from = svc.desired_count;
        let Some(to) = p.wanted(from, m.tenths) else {
            continue;
        };
        if scaling.cooldown(from, to, now).is_err() {
            continue;
        }
        out.push(Scale {
            service: svc.name.clone(),
            from,
            to,
            reason: format!(
                "average {} {}.{} % of what its tasks reserve over {} measured task{}, target \
                 {} %",
                p.metric.as_str(),
                m.tenths / 10,
                m.tenths % 10,
                m.tasks,
                if m.tasks == 1 { "" } else { "s" },
                p.target_percent
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::tests::{apply, apply_at, report, state_with};
    use berth_core::scaling::{ScalingMetric, ScalingPolicy};
    use berth_core::utilization::Window;
    use berth_core::Command;

    fn policy() -> Command {
        Command::PutScalingPolicy {
            name: "api".into(),
            policy: Some(ScalingPolicy {
                metric: ScalingMetric::Cpu,
                target_percent: 50,
                min_count: 1,
                max_count: 6,
                scale_out_cooldown_ms: 10_000,
                scale_in_cooldown_ms: 10_000,
                disable_scale_in: false,
            }),
        }
    }

    /// Both tasks measured over the second before `now`, applied at `now`.
    fn measured(s: &mut ClusterState, now: u64, cpu: u32) {
        let windows = ["t0", "t1"]
            .iter()
            .map(|id| Window {
                task_id: id.to_string(),
                start: now - 1_000,
                end: now,
                cpu_avg: cpu,
                cpu_peak: cpu,
                memory_avg: 1,
                memory_peak: 1,
            })
            .collect();
        apply_at(
            s,
            now,
            Command::RecordUtilization {
                agent_id: "a1".into(),
                epoch: 1,
                windows,
            },
        );
    }

    #[test]
    fn a_busy_service_is_scaled_out_with_the_figures_behind_it() {
        let mut s = state_with(2, 2);
        report(&mut s, "t0", None);
        report(&mut s, "t1", None);
        apply(&mut s, policy());
        let now = s.clock();
        assert!(autoscale(&s, now).is_empty(), "nothing measured yet");
        // The test definition reserves 256 CPU units: 256 used is 100 %.
        let t = s.clock() + 1_000;
        measured(&mut s, t, 256);
        let out = autoscale(&s, t);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].from, out[0].to), (2, 4));
        assert!(
            out[0].reason.contains("CPU 100.0 %") && out[0].reason.contains("2 measured tasks"),
            "{}",
            out[0].reason
        );
        apply_at(
            &mut s,
            t,
            Command::AutoscaleService {
                name: "api".into(),
                from: 2,
                to: 4,
                reason: out[0].reason.clone(),
            },
        );
        // In the scale-out cooldown nothing more, whatever the figures.
        measured(&mut s, t + 5_000, 0);
        assert!(autoscale(&s, t + 5_000).is_empty());
        // Figures that went stale count for nothing.
        assert!(autoscale(&s, t + 20_000).is_empty());
        // After the cooldown an idle service comes back in to its minimum.
        measured(&mut s, t + 10_000, 0);
        let out = autoscale(&s, t + 10_000);
        assert_eq!((out[0].from, out[0].to), (4, 1), "{out:?}");
    }
}
