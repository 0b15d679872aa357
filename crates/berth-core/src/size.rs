//! Task sizes: Fargate's table of CPU/memory pairs, and the ECS spellings of sizes.

use serde::{Deserialize, Deserializer};

use crate::error::Error;

/// One row of Fargate's table: a CPU size and the memory sizes allowed with it.
struct Row {
    cpu: u32,
    min_memory: u32,
    max_memory: u32,
    step: u32,
    /// The 256-unit size allows 512, 1024 and 2048 only (not a regular step from 512).
    exact: &'static [u32],
}

const TABLE: &[Row] = &[
    Row {
        cpu: 256,
        min_memory: 512,
        max_memory: 2048,
        step: 0,
        exact: &[512, 1024, 2048],
    },
    Row {
        cpu: 512,
        min_memory: 1024,
        max_memory: 4096,
        step: 1024,
        exact: &[],
    },
    Row {
        cpu: 1024,
        min_memory: 2048,
        max_memory: 8192,
        step: 1024,
        exact: &[],
    },
    Row {
        cpu: 2048,
        min_memory: 4096,
        max_memory: 16384,
        step: 1024,
        exact: &[],
    },
    Row {
        cpu: 4096,
        min_memory: 8192,
        max_memory: 30720,
        step: 1024,
        exact: &[],
    },
    Row {
        cpu: 8192,
        min_memory: 16384,
        max_memory: 61440,
        step: 4096,
        exact: &[],
    },
    Row {
        cpu: 16384,
        min_memory: 32768,
        max_memory: 122880,
        step: 8192,
        exact: &[],
    },
];

/// Bounds when the cluster has opted into free sizing.
pub const FREE_MIN_CPU: u32 = 64;
pub const FREE_MAX_CPU: u32 = 65536;
pub const FREE_MIN_MEMORY: u32 = 32;
pub const FREE_MAX_MEMORY: u32 = 1024 * 1024;

/// Fills in defaults and checks the pair. `cpu` absent means 256; `memory` absent means
/// the smallest memory allowed with that CPU.
pub fn resolve(
    cpu: Option<u32>,
    memory: Option<u32>,
    free_sizing: bool,
) -> Result<(u32, u32), Error> {
    let cpu = cpu.unwrap_or(256);
    if free_sizing {
        let memory = memory.unwrap_or(cpu * 2);
        if !(FREE_MIN_CPU..=FREE_MAX_CPU).contains(&cpu) {
            return Err(Error::invalid(format!(
                "cpu: {cpu} units is outside {FREE_MIN_CPU}..={FREE_MAX_CPU}"
            )));
        }
        if !(FREE_MIN_MEMORY..=FREE_MAX_MEMORY).contains(&memory) {
            return Err(Error::invalid(format!(
                "memory: {memory} MiB is outside {FREE_MIN_MEMORY}..={FREE_MAX_MEMORY}"
            )));
        }
        return Ok((cpu, memory));
    }
    let Some(row) = TABLE.iter().find(|r| r.cpu == cpu) else {
        return Err(Error::invalid(format!(
            "cpu: {cpu} is not a task size; use one of 256, 512, 1024, 2048, 4096, 8192, 16384 \
             (1024 units = 1 vCPU)"
        )));
    };
    let memory = memory.unwrap_or(row.min_memory);
    let ok = if row.exact.is_empty() {
        memory >= row.min_memory
            && memory <= row.max_memory
            && (memory - row.min_memory).is_multiple_of(row.step)
    } else {
        row.exact.contains(&memory)
    };
    if !ok {
        return Err(Error::invalid(format!(
            "memory: {memory} MiB is not allowed with cpu {cpu}; allowed: {}",
            allowed_memory(row)
        )));
    }
    Ok((cpu, memory))
}

fn allowed_memory(row: &Row) -> String {
    if row.exact.is_empty() {
        format!(
            "{}..={} MiB in steps of {} MiB",
            row.min_memory, row.max_memory, row.step
        )
    } else {
        let list: Vec<String> = row.exact.iter().map(|m| m.to_string()).collect();
        format!("{} MiB", list.join(", "))
    }
}

/// Parses ECS's spellings: `256`, `"256"`, `"0.25 vCPU"` for CPU; `512`, `"512"`, `"2 GB"`,
/// `"2GiB"` for memory. The unit decides the scale, so the same parser serves both.
pub fn parse_units(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{} is not a size", crate::quote(s)))?;
    let scale = match unit.as_str() {
        "" | "mib" | "mb" => 1.0,
        "vcpu" | "gb" | "gib" => 1024.0,
        _ => {
            return Err(format!(
                "{}: unknown unit {} (use vCPU, MiB or GB)",
                crate::quote(s),
                crate::quote(&unit)
            ))
        }
    };
    let v = value * scale;
    if v.fract() != 0.0 || !(0.0..=u32::MAX as f64).contains(&v) {
        return Err(format!(
            "{} is not a whole number of units",
            crate::quote(s)
        ));
    }
    Ok(v as u32)
}

pub(crate) fn de_opt_units<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(u64),
        Str(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Num(n)) => u32::try_from(n)
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{n} is too large"))),
        Some(Raw::Str(s)) => parse_units(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fargate_table_edges() {
        assert_eq!(resolve(None, None, false), Ok((256, 512)));
        assert_eq!(resolve(Some(256), Some(2048), false), Ok((256, 2048)));
        assert!(resolve(Some(256), Some(1536), false).is_err());
        assert!(resolve(Some(256), Some(4096), false).is_err());
        assert_eq!(resolve(Some(512), Some(3072), false), Ok((512, 3072)));
        assert!(resolve(Some(512), Some(3000), false).is_err());
        assert_eq!(resolve(Some(4096), Some(30720), false), Ok((4096, 30720)));
        assert!(resolve(Some(4096), Some(31744), false).is_err());
        assert_eq!(resolve(Some(8192), Some(20480), false), Ok((8192, 20480)));
        assert!(resolve(Some(8192), Some(17408), false).is_err());
        assert_eq!(
            resolve(Some(16384), Some(122880), false),
            Ok((16384, 122880))
        );
        assert!(resolve(Some(16384), Some(36864), false).is_err());
        let err = resolve(Some(300), None, false).unwrap_err().to_string();
        assert!(err.contains("cpu: 300"), "{err}");
    }

    #[test]
    fn free_sizing_bounds() {
        assert_eq!(resolve(Some(100), Some(64), true), Ok((100, 64)));
        assert!(resolve(Some(10), Some(64), true).is_err());
        assert!(resolve(Some(100), Some(1), true).is_err());
    }

    #[test]
    fn ecs_spellings() {
        assert_eq!(parse_units("256"), Ok(256));
        assert_eq!(parse_units("0.25 vCPU"), Ok(256));
        assert_eq!(parse_units("2 GB"), Ok(2048));
        assert_eq!(parse_units("2GiB"), Ok(2048));
        assert!(parse_units("0.3 vCPU").is_err());
        assert!(parse_units("lots").is_err());
        assert!(parse_units("2 parsecs").is_err());
    }
}
