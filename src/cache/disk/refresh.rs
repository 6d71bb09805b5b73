//! A large record refreshed by a 304 (RFC 9111 §4.3.4): the body is
//! unchanged, so a writer makes a new file with the refreshed head and the
//! old file's body, copied by the kernel (`copy_file_range`; a plain copy
//! where the file system cannot), with the same block checks. A body
//! damaged in the old file stays damaged in the new one and is caught
//! when it is read, as before.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::SystemTime;

use super::{format, index, DiskTier, Job, Streamed};
use crate::cache::record;
use crate::cache::store::Entry;

pub struct Refresh {
    key: String,
    /// The refreshed response, without its body.
    entry: Entry,
    keep_until: SystemTime,
    /// The record holding the body.
    from: Arc<Streamed>,
}

impl DiskTier {
    /// Queues a new record of `key` with `entry`'s head and `from`'s body.
    pub fn refresh(&self, key: &str, entry: Entry, keep_until: SystemTime, from: Arc<Streamed>) {
        if keep_until <= SystemTime::now() {
            self.stats.write("expired");
            return;
        }
        let key = key.to_string();
        self.queue(Job::Refresh(Box::new(Refresh {
            key,
            entry,
            keep_until,
            from,
        })));
    }

    /// A writer: writes the refreshed record and renames it into place.
    pub(super) fn refresh_one(&self, job: &Refresh) {
        let old = &job.from.header;
        let head = record::encode_head(&job.entry);
        let header =
            format::encode_header(&job.key, &head, job.keep_until, old.body_len, &old.crcs, 0);
        let name = format::name_of(&job.key, &job.entry);
        let path = index::path_of(&self.root, name);
        let tmp = self.temporary_name();
        let written = (|| {
            let file = File::create(&tmp)?;
            file.write_all_at(&header, 0)?;
            let to = header.len() as u64;
            copy_range(&job.from.file, old.body_at, &file, to, old.body_len)?;
            std::fs::rename(&tmp, &path)
        })();
        match written {
            Ok(()) => {
                let size = header.len() as u64 + old.body_len;
                self.indexed(&job.key, &job.entry, name, size, job.keep_until);
                self.stats.write("stored");
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                self.write_failed(&e);
            }
        }
    }
}

/// Copies `len` bytes of `from` at `at` to `to` at `to_at`, in the kernel
/// when it can.
fn copy_range(from: &File, mut at: u64, to: &File, mut to_at: u64, mut len: u64) -> io::Result<()> {
    while len > 0 {
        let mut off_in = at as libc::loff_t;
        let mut off_out = to_at as libc::loff_t;
        let chunk = len.min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the call, and the offsets
        // are valid pointers to locals (so the files' positions, shared
        // with other readers, are not used).
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                chunk,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => {
                    copy_by_reading(from, at, to, to_at, len)
                }
                _ => Err(e),
            };
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = n as u64;
        at += n;
        to_at += n;
        len -= n;
    }
    Ok(())
}

fn copy_by_reading(
    from: &File,
    mut at: u64,
    to: &File,
    mut to_at: u64,
    mut len: u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; format::BLOCK as usize];
    while len > 0 {
        let n = len.min(buf.len() as u64) as usize;
        from.read_exact_at(&mut buf[..n], at)?;
        to.write_all_at(&buf[..n], to_at)?;
        at += n as u64;
        to_at += n as u64;
        len -= n as u64;
    }
    Ok(())
}
