//! Printing answers: JSON (the wire messages as camelCase JSON) or aligned tables.

use serde::Serialize;

use crate::Format;

pub fn json<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A table printed with columns padded to their widest cell.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for r in &self.rows {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if i + 1 == r.len() {
                        s.clone()
                    } else {
                        format!("{s:<w$}", w = widths[i])
                    }
                })
                .collect();
            println!("{}", line.join("  ").trim_end());
        }
    }
}

/// Prints `v` as JSON, or as the table `table` builds.
pub fn show<T: Serialize + ?Sized>(
    format: Format,
    v: &T,
    table: impl FnOnce() -> Table,
) -> anyhow::Result<()> {
    match format {
        Format::Json => json(v),
        Format::Table => {
            table().print();
            Ok(())
        }
    }
}

/// Milliseconds since the epoch as a UTC time of day, or `-`.
pub fn time(ms: Option<u64>) -> String {
    match ms {
        Some(ms) if ms > 0 => {
            let s = ms / 1000;
            let (h, m, sec) = ((s / 3600) % 24, (s / 60) % 60, s % 60);
            format!("{h:02}:{m:02}:{sec:02}Z")
        }
        _ => "-".into(),
    }
}
