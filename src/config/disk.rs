//! `[cache.disk]`: the local disk tier, below memory and above the shared
//! tier and the origin; it survives restarts.

use std::path::PathBuf;

use serde::{de, Deserialize, Deserializer};

use super::Size;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The directory the tier owns (created if missing).
    #[serde(deserialize_with = "absolute")]
    pub path: PathBuf,
    /// Bytes of records kept; the least recently used go past it.
    #[serde(default = "default_capacity")]
    pub capacity: Size,
    /// Larger responses are not written to disk.
    #[serde(default = "default_max_object_size")]
    pub max_object_size: Size,
}

fn default_capacity() -> Size {
    Size(10 << 30)
}

fn default_max_object_size() -> Size {
    Size(64 << 20)
}

fn absolute<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if !path.is_absolute() {
        return Err(de::Error::custom(format!(
            "{}: the disk tier's path must be absolute",
            path.display()
        )));
    }
    Ok(path)
}

impl DiskConfig {
    /// Checks that need more than one field.
    pub fn check(&self) -> Result<(), String> {
        if self.capacity.bytes() == 0 {
            return Err("[cache.disk] capacity must be more than 0".into());
        }
        if self.max_object_size.bytes() > self.capacity.bytes() {
            return Err("[cache.disk] max_object_size is larger than capacity".into());
        }
        if self.max_object_size.bytes() > u32::MAX as u64 {
            return Err("[cache.disk] max_object_size may be at most 4GiB".into());
        }
        Ok(())
    }
}
