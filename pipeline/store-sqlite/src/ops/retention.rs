//! Retention: a month file is deleted whole (with its `-wal` and `-shm`) once the entire month
//! is older than the archive tier, the embedded form of ScyllaDB's TTL + time-window compaction.
//! No row is ever bulk-deleted; reads hide rows past the tier meanwhile.

use std::path::PathBuf;

use herald_store::{Month, RetentionReport};
use tracing::info;

use crate::error::{Result, io};
use crate::months::lock_map;
use crate::store::Inner;

impl Inner {
    pub(crate) fn enforce_retention(&self) -> Result<RetentionReport> {
        let oldest = self.oldest_kept();
        let mut expired = Vec::new();
        let listing =
            std::fs::read_dir(&self.months_dir).map_err(|e| io("list", &self.months_dir, e))?;
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(month) = name
                .strip_suffix(".db")
                .and_then(|stem| stem.split_once('-'))
                .and_then(|(y, m)| Some(y.parse::<i32>().ok()? * 100 + m.parse::<i32>().ok()?))
                .and_then(Month::from_bucket)
            else {
                continue;
            };
            if month.end_ms() <= oldest {
                expired.push(month);
            }
        }
        expired.sort();
        let mut report = RetentionReport::default();
        for month in expired {
            lock_map(&self.months)?.remove(&month);
            let db = self.month_path(month);
            for suffix in ["", "-wal", "-shm"] {
                let mut path = db.clone().into_os_string();
                path.push(suffix);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("remove", &PathBuf::from(path), e)),
                }
            }
            info!(%month, file = %db.display(), "retention: dropped an expired month");
            report.dropped.push(month.to_string());
        }
        Ok(report)
    }
}
