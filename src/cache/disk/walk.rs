//! The start-up walk: the files are the truth, so every record found on
//! disk is read and indexed (damaged ones and a crash's temporary files
//! removed) while requests are already being served.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::format::{self, Fail, Wait};
use super::DiskTier;

/// The start-up walk: indexes every record on disk, removes damaged ones,
/// temporary files left by a crash, and records a purge made meanwhile
/// names.
pub(super) fn walk(tier: std::sync::Weak<DiskTier>) {
    let Some(root) = tier.upgrade().map(|t| t.root.clone()) else {
        return;
    };
    // Left by an earlier process (a crash mid-write); this one's writers
    // may already be writing theirs.
    let own = format!("{}-", std::process::id());
    if let Ok(tmp) = std::fs::read_dir(root.join("tmp")) {
        for entry in tmp.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&own) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    for hh in 0..=255u8 {
        let Ok(files) = std::fs::read_dir(root.join(format!("{hh:02x}"))) else {
            continue;
        };
        for file in files.flatten() {
            let Some(tier) = tier.upgrade() else { return };
            tier.index_found(&file.path());
        }
    }
    if let Some(tier) = tier.upgrade() {
        tier.walking.store(false, Ordering::Release);
        tier.purged_while_walking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        tier.stats.recovering.set(0);
        let (entries, bytes) = tier.sizes();
        tracing::info!(entries, bytes, "disk tier indexed");
    }
}

impl DiskTier {
    /// Indexes the record at `path` (found by the walk).
    fn index_found(&self, path: &Path) {
        let Some(name) = parse_name(path) else {
            let _ = std::fs::remove_file(path);
            return;
        };
        let Ok(file) = std::fs::File::open(path) else {
            return;
        };
        let header = match format::Header::read(&file, Wait::Yes) {
            Ok(header) => header,
            Err(Fail::Bad(bad)) => {
                self.count_bad(bad);
                let _ = std::fs::remove_file(path);
                return;
            }
            Err(Fail::Blocked) => return,
        };
        let key = header.key.clone();
        if self.index.holds(&key, name) {
            return;
        }
        let expected = format::name_of(&key, &header.entry);
        if expected != name || self.purged_by_walk_orders(&key, &header.entry) {
            let _ = std::fs::remove_file(path);
            return;
        }
        if let Some(meta) = self.meta_of(&header, name, &file) {
            self.index.insert(&self.root, &key, meta, true);
            self.stats.recovered.inc();
        }
    }
}

/// `<url hash>-<secondary hash>` as two numbers.
fn parse_name(path: &Path) -> Option<(u64, u64)> {
    let name = path.file_name()?.to_str()?;
    let (url, secondary) = name.split_once('-')?;
    if url.len() != 16 || secondary.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(url, 16).ok()?,
        u64::from_str_radix(secondary, 16).ok()?,
    ))
}
