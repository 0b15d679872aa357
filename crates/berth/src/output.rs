//! Printing answers: JSON (the wire messages as camelCase JSON) or aligned tables.
//!
//! Every line goes through [`line`], which returns the write's error instead of panicking as
//! `println!` does: when the reader goes away early (`| head`, `| grep -q`), the error comes
//! back to `main`, which ends quietly.

use std::fmt;
use std::io::{self, Write};

use serde::Serialize;

use crate::Format;

/// Writes one line to stdout.
pub fn line(args: fmt::Arguments<'_>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")
}

/// Whether `e` comes from writing to a reader that has gone away.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

pub fn json<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    line(format_args!("{}", serde_json::to_string_pretty(v)?))?;
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

    /// RFC 4180: every cell quoted where it holds a comma, a quote or a line break.
    pub fn print_csv(&self) -> io::Result<()> {
        for r in &self.rows {
            let cells: Vec<String> = r
                .iter()
                .map(|c| {
                    if c.contains([',', '"', '\n', '\r']) {
                        format!("\"{}\"", c.replace('"', "\"\""))
                    } else {
                        c.clone()
                    }
                })
                .collect();
            self::line(format_args!("{}", cells.join(",")))?;
        }
        Ok(())
    }

    pub fn print(&self) -> io::Result<()> {
        self::line(format_args!("{}", self.render().trim_end_matches('\n')))
    }

    /// The table as text, columns aligned, one line per row: comfy-table without borders,
    /// two spaces between columns, no trailing blanks (so `grep`, `awk` and tests see what a
    /// person sees).
    pub fn render(&self) -> String {
        let mut rows = self.rows.iter();
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::NOTHING)
            .set_content_arrangement(comfy_table::ContentArrangement::Disabled);
        if let Some(header) = rows.next() {
            t.set_header(header.clone());
        }
        t.add_rows(rows.cloned());
        for c in t.column_iter_mut() {
            c.set_padding((0, 2));
        }
        let mut out = String::new();
        for l in t.lines() {
            out.push_str(l.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Prints `v` as JSON, or as the table `table` builds (it may print lines of its own
/// before it).
pub fn show<T: Serialize + ?Sized>(
    format: Format,
    v: &T,
    table: impl FnOnce() -> io::Result<Table>,
) -> anyhow::Result<()> {
    match format {
        Format::Json => json(v),
        Format::Table => Ok(table()?.print()?),
        Format::Csv => Ok(table()?.print_csv()?),
    }
}

/// Milliseconds since the epoch as a UTC time of day, or `-`.
/// Task states in the order a task goes through them (the API's words).
pub const TASK_STATES: [&str; 8] = [
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
];

pub fn time(ms: Option<u64>) -> String {
    match ms {
        Some(ms) if ms > 0 => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(at).to_string()
        }
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::{time, Table};

    #[test]
    fn tables_align_by_characters_and_end_without_blanks() {
        let mut t = Table::new(&["AGENT", "STATUS", "NOTE"]);
        t.row(vec!["a-1".into(), "READY".into(), "".into()]);
        t.row(vec!["zone-é".into(), "DOWN".into(), "since 10:00".into()]);
        assert_eq!(
            t.render(),
            "AGENT   STATUS  NOTE\n\
             a-1     READY\n\
             zone-é  DOWN    since 10:00\n"
        );
    }

    #[test]
    fn times_carry_their_date() {
        assert_eq!(time(Some(1_796_029_351_004)), "2026-11-30T09:02:31Z");
        assert_eq!(time(None), "-");
        assert_eq!(time(Some(0)), "-");
    }
}
