//! What the agent keeps on disk: the final report of each task it ended, until the control
//! plane has taken it (the task leaves the agent's assignments). Written before the task's
//! containers are removed, so an agent killed at any point afterwards still knows the task
//! ended, and how, and never runs it again. One small JSON file per task under
//! `DATA/tasks/`; the count is bounded by the tasks this agent holds.

use std::io;
use std::path::{Path, PathBuf};

use berth_core::TaskReport;
use tokio::io::AsyncWriteExt;

pub struct Store {
    dir: PathBuf,
}

/// Task ids become file names: only plain ones are accepted (ids are 32 hex digits).
fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Store {
    pub async fn open(data_dir: &Path) -> io::Result<Store> {
        let dir = data_dir.join("tasks");
        tokio::fs::create_dir_all(&dir).await?;
        Ok(Store { dir })
    }

    fn path(&self, id: &str) -> Option<PathBuf> {
        safe_id(id).then(|| self.dir.join(format!("{id}.json")))
    }

    /// Durably records a task's final report (write, fsync, rename).
    pub async fn save(&self, report: &TaskReport) -> io::Result<()> {
        let Some(path) = self.path(&report.task_id) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("task id `{}` is not a safe file name", report.task_id),
            ));
        };
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(report).map_err(io::Error::other)?;
        let mut f = tokio::fs::File::create(&tmp).await?;
        f.write_all(&bytes).await?;
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, &path).await
    }

    pub async fn remove(&self, id: &str) {
        if let Some(path) = self.path(id) {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(task = id, error = %e, "could not remove task record"),
            }
        }
    }

    /// Every recorded final report. Unreadable files are skipped (and said so).
    pub async fn load(&self) -> io::Result<Vec<TaskReport>> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = dir.next_entry().await? {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match tokio::fs::read(&path)
                .await
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<TaskReport>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable task record")
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{StopCode, TaskState};

    #[tokio::test]
    async fn records_survive_reopen_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let r = TaskReport {
            task_id: "abc123".into(),
            last_status: TaskState::Stopped,
            at: 5,
            containers: vec![],
            stop_code: Some(StopCode::EssentialContainerExited),
            stopped_reason: Some("x".into()),
        };
        s.save(&r).await.unwrap();
        assert!(s
            .save(&TaskReport {
                task_id: "../evil".into(),
                ..r.clone()
            })
            .await
            .is_err());
        let s = Store::open(dir.path()).await.unwrap();
        assert_eq!(s.load().await.unwrap(), vec![r]);
        s.remove("abc123").await;
        assert!(s.load().await.unwrap().is_empty());
    }
}
