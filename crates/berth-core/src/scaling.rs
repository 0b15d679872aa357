//! Target-tracking autoscaling of a service (ECS Service Auto Scaling's target tracking):
//! the desired count follows the tasks' measured utilization toward a target, within a
//! minimum and a maximum, with cooldowns after each change.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::limits::MAX_DESIRED_COUNT;
use crate::model::Millis;

/// Application Auto Scaling's default cooldowns for ECS services.
pub const DEFAULT_COOLDOWN_MS: u64 = 300_000;
/// The longest cooldown accepted (a day).
pub const MAX_COOLDOWN_MS: u64 = 86_400_000;
/// Scale-in waits until the metric is this far under the target (in percent of the
/// target), so a service that sits near its target does not flap.
pub const SCALE_IN_MARGIN_PERCENT: u64 = 10;

/// What a policy tracks: the service's average CPU or memory utilization, in percent of what
/// its tasks reserve (ECS's ECSServiceAverageCPUUtilization / MemoryUtilization).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScalingMetric {
    Cpu,
    Memory,
}

impl ScalingMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            ScalingMetric::Cpu => "CPU",
            ScalingMetric::Memory => "MEMORY",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [ScalingMetric::Cpu, ScalingMetric::Memory]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    pub metric: ScalingMetric,
    /// 1..=100.
    pub target_percent: u32,
    pub min_count: u32,
    pub max_count: u32,
    /// After a scale-out, no further scale-out (nor any scale-in) for this long.
    pub scale_out_cooldown_ms: u64,
    /// After a scale-in, no further scale-in for this long.
    pub scale_in_cooldown_ms: u64,
    /// Scale out only; the desired count comes down only by hand.
    #[serde(default)]
    pub disable_scale_in: bool,
}

impl ScalingPolicy {
    pub fn check(&self) -> Result<(), Error> {
        if !(1..=100).contains(&self.target_percent) {
            return Err(Error::invalid(format!(
                "targetPercent {} is outside 1..=100 (percent of what the tasks reserve)",
                self.target_percent
            )));
        }
        if self.max_count > MAX_DESIRED_COUNT {
            return Err(Error::invalid(format!(
                "maxCount {} is above the desired count limit {MAX_DESIRED_COUNT}",
                self.max_count
            )));
        }
        if self.min_count > self.max_count {
            return Err(Error::invalid(format!(
                "minCount {} is above maxCount {}",
                self.min_count, self.max_count
            )));
        }
        for (name, v) in [
            ("scaleOutCooldownMs", self.scale_out_cooldown_ms),
            ("scaleInCooldownMs", self.scale_in_cooldown_ms),
        ] {
            if v > MAX_COOLDOWN_MS {
                return Err(Error::invalid(format!(
                    "{name} {v} ms is above a day ({MAX_COOLDOWN_MS} ms)"
                )));
            }
        }
        Ok(())
    }

    /// The desired count the metric (in tenths of a percent) asks for, if it differs from
    /// `desired`: `ceil(desired × metric / target)` within min and max. Scale-in only once
    /// the metric is under the target by the margin.
    pub fn wanted(&self, desired: u32, metric_tenths: u32) -> Option<u32> {
        let target_tenths = u64::from(self.target_percent) * 10;
        let raw = (u64::from(desired) * u64::from(metric_tenths)).div_ceil(target_tenths);
        let want = (raw.min(u64::from(u32::MAX)) as u32).clamp(self.min_count, self.max_count);
        let margin = target_tenths * (100 - SCALE_IN_MARGIN_PERCENT) / 100;
        if want > desired {
            Some(want)
        } else if want < desired {
            // Outside the bounds (the policy changed) it comes back in at once.
            if desired > self.max_count {
                return Some(self.max_count);
            }
            let under = u64::from(metric_tenths) < margin;
            (under && !self.disable_scale_in).then_some(want)
        } else {
            None
        }
    }
}

/// A service's policy and when it last scaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    pub policy: ScalingPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_out_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_in_at: Option<Millis>,
}

impl Scaling {
    /// Whether a change from `from` to `to` may happen at `now`, or why not.
    pub fn cooldown(&self, from: u32, to: u32, now: Millis) -> Result<(), String> {
        let out_until = self
            .last_scale_out_at
            .map(|t| t + self.policy.scale_out_cooldown_ms);
        let in_until = self
            .last_scale_in_at
            .map(|t| t + self.policy.scale_in_cooldown_ms);
        let blocked = if to > from {
            out_until.filter(|u| now < *u)
        } else {
            out_until
                .into_iter()
                .chain(in_until)
                .filter(|u| now < *u)
                .max()
        };
        match blocked {
            Some(until) => Err(format!("in cooldown for {} ms more", until - now)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(target: u32, min: u32, max: u32) -> ScalingPolicy {
        ScalingPolicy {
            metric: ScalingMetric::Cpu,
            target_percent: target,
            min_count: min,
            max_count: max,
            scale_out_cooldown_ms: 1_000,
            scale_in_cooldown_ms: 5_000,
            disable_scale_in: false,
        }
    }

    #[test]
    fn the_count_follows_the_metric_toward_the_target_within_the_bounds() {
        let p = policy(50, 1, 10);
        // 2 tasks at 100 % with a 50 % target: 4.
        assert_eq!(p.wanted(2, 1000), Some(4));
        // 3 tasks at 51 %: ceil(3.06) = 4.
        assert_eq!(p.wanted(3, 510), Some(4));
        assert_eq!(p.wanted(8, 1000), Some(10));
        // At the target: nothing.
        assert_eq!(p.wanted(4, 500), None);
        // Just under the target, inside the margin: nothing; well under: in.
        assert_eq!(p.wanted(4, 460), None);
        assert_eq!(p.wanted(4, 200), Some(2));
        assert_eq!(p.wanted(4, 0), Some(1));
        let mut q = p;
        q.disable_scale_in = true;
        assert_eq!(q.wanted(4, 0), None);
        // A service above a lowered maximum comes back in whatever the metric.
        assert_eq!(p.wanted(12, 1000), Some(10));
    }

    #[test]
    fn cooldowns_hold_back_the_next_change() {
        let mut s = Scaling {
            policy: policy(50, 1, 10),
            last_scale_out_at: Some(10_000),
            last_scale_in_at: None,
        };
        assert!(s.cooldown(2, 4, 10_500).is_err());
        assert!(s.cooldown(2, 4, 11_000).is_ok());
        // Scale-in waits out a scale-out's cooldown too.
        assert!(s.cooldown(4, 2, 10_500).is_err());
        s.last_scale_in_at = Some(11_000);
        assert!(s.cooldown(4, 2, 15_999).is_err());
        assert!(s.cooldown(4, 2, 16_000).is_ok());
        // A scale-out does not wait for a scale-in's cooldown.
        assert!(s.cooldown(2, 4, 12_000).is_ok());
    }

    #[test]
    fn policies_out_of_bounds_are_refused() {
        assert!(policy(50, 1, 10).check().is_ok());
        assert!(policy(0, 1, 10).check().is_err());
        assert!(policy(101, 1, 10).check().is_err());
        assert!(policy(50, 11, 10).check().is_err());
        assert!(policy(50, 1, MAX_DESIRED_COUNT + 1).check().is_err());
        let mut p = policy(50, 1, 10);
        p.scale_in_cooldown_ms = MAX_COOLDOWN_MS + 1;
        assert!(p
            .check()
            .unwrap_err()
            .to_string()
            .contains("scaleInCooldownMs"));
    }
}
