//! One stored variant as one file. The head (the shared record format,
//! `cache/record.rs`, with its own CRC) comes first, then the body, checked
//! in blocks of 1 MiB, each with its CRC-32 in the header: a reader streams
//! a large body block by block and never sends a block that fails its
//! check, and a range reads only the blocks it needs.
//!
//! Layout (integers big-endian):
//! `"VDF1"`, header crc u32 (of everything after it up to the body), header
//! length u32, key (u16 length + bytes), keep-until (seconds since the
//! epoch, u64), head record (u32 length + bytes), body length u64, block
//! count u32, one crc u32 per block, zero padding (the room kept for the
//! header of a body written before its length was known), then the body.
//!
//! A file is written under a temporary name and renamed into place, so a
//! record torn by a crash is never under its final name; a damaged one
//! fails its checks and is dropped.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use crate::cache::record::{self, Bad};
use crate::cache::store::Entry;

const MAGIC: &[u8; 4] = b"VDF1";
/// Body bytes per checked block.
pub const BLOCK: u64 = 1 << 20;
/// Headers larger than this are not ours (a head is at most a few hundred
/// KiB; the block table of a 4 GiB body is 16 KiB).
const MAX_HEADER: u32 = 8 << 20;

/// Why a read did not give checked bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    /// The record is damaged, cut short or not ours.
    Bad(Bad),
    /// A read without waiting found the bytes not in the page cache: try
    /// again where blocking is allowed.
    Blocked,
}

impl From<Bad> for Fail {
    fn from(bad: Bad) -> Fail {
        Fail::Bad(bad)
    }
}

/// How reads may wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// On the blocking pool: wait for the disk.
    Yes,
    /// On a request's thread: only what the page cache holds
    /// (`preadv2(RWF_NOWAIT)`), else [`Fail::Blocked`].
    No,
}

/// What the header of a record file says.
pub struct Header {
    pub key: String,
    /// After this it can neither be served nor revalidated.
    pub keep_until: SystemTime,
    /// The response without its body.
    pub entry: Entry,
    pub body_len: u64,
    /// Where the body starts in the file.
    pub body_at: u64,
    pub crcs: Box<[u32]>,
}

impl Header {
    /// Reads and checks the header of `file`.
    pub fn read(file: &File, wait: Wait) -> Result<Header, Fail> {
        let mut fixed = [0u8; 12];
        read_exact_at(file, &mut fixed, 0, wait)?;
        if &fixed[..4] != MAGIC {
            return Err(Bad::Version.into());
        }
        let crc = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let len = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
        if len > MAX_HEADER {
            return Err(Bad::Malformed.into());
        }
        let mut rest = vec![0u8; len as usize];
        read_exact_at(file, &mut rest, 12, wait)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&fixed[8..12]);
        hasher.update(&rest);
        if hasher.finalize() != crc {
            return Err(Bad::Checksum.into());
        }
        Ok(Header::parse(&rest, len)?)
    }

    /// A small record read with one system call: `size` bytes, its file's
    /// length as indexed; the header and the body, checked. `Ok(None)`
    /// when the file is not `size` bytes long (replaced since it was
    /// indexed): read it the ordinary way.
    pub fn read_small(file: &File, size: u64, wait: Wait) -> Result<Option<(Header, Bytes)>, Fail> {
        let mut buf = BytesMut::zeroed(size as usize);
        read_exact_at(file, &mut buf, 0, wait)?;
        if buf.len() < 12 {
            return Ok(None);
        }
        if &buf[..4] != MAGIC {
            return Err(Bad::Version.into());
        }
        let crc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let Some(rest) = buf.get(12..12 + len as usize) else {
            return Ok(None);
        };
        if crc32fast::hash(&buf[8..12 + len as usize]) != crc {
            return Err(Bad::Checksum.into());
        }
        let header = Header::parse(rest, len)?;
        if header.body_at + header.body_len != size {
            return Ok(None);
        }
        let body = buf.freeze().slice(header.body_at as usize..);
        for (block, want) in body.chunks(BLOCK as usize).zip(header.crcs.iter()) {
            if crc32fast::hash(block) != *want {
                return Err(Bad::Checksum.into());
            }
        }
        Ok(Some((header, body)))
    }

    /// The checked header bytes after the fixed part.
    fn parse(rest: &[u8], len: u32) -> Result<Header, Bad> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], Bad> {
            let part = rest.get(at..at + n).ok_or(Bad::Malformed)?;
            at += n;
            Ok(part)
        };
        let key_len = u16::from_be_bytes(take(2)?.try_into().map_err(|_| Bad::Malformed)?);
        let key =
            String::from_utf8(take(key_len as usize)?.to_vec()).map_err(|_| Bad::Malformed)?;
        let keep = u64::from_be_bytes(take(8)?.try_into().map_err(|_| Bad::Malformed)?);
        let head_len = u32::from_be_bytes(take(4)?.try_into().map_err(|_| Bad::Malformed)?);
        let head = Bytes::copy_from_slice(take(head_len as usize)?);
        let body_len = u64::from_be_bytes(take(8)?.try_into().map_err(|_| Bad::Malformed)?);
        let blocks = u32::from_be_bytes(take(4)?.try_into().map_err(|_| Bad::Malformed)?);
        if u64::from(blocks) != body_len.div_ceil(BLOCK) {
            return Err(Bad::Malformed);
        }
        let table = take(blocks as usize * 4)?;
        let crcs = table
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let entry = record::decode(head)?;
        Ok(Header {
            key,
            keep_until: UNIX_EPOCH + Duration::from_secs(keep),
            entry,
            body_len,
            body_at: 12 + u64::from(len),
            crcs,
        })
    }

    /// Block `i` of the body, checked.
    pub fn block(&self, file: &File, i: u64, wait: Wait) -> Result<Bytes, Fail> {
        let start = i * BLOCK;
        let len = BLOCK.min(self.body_len.saturating_sub(start)) as usize;
        let want = *self.crcs.get(i as usize).ok_or(Bad::Malformed)?;
        let mut buf = BytesMut::zeroed(len);
        read_exact_at(file, &mut buf, self.body_at + start, wait)?;
        if crc32fast::hash(&buf) != want {
            return Err(Bad::Checksum.into());
        }
        Ok(buf.freeze())
    }

    /// The whole body, every block checked.
    pub fn body(&self, file: &File, wait: Wait) -> Result<Bytes, Fail> {
        if self.body_len <= BLOCK {
            return if self.body_len == 0 {
                Ok(Bytes::new())
            } else {
                self.block(file, 0, wait)
            };
        }
        let mut all = BytesMut::with_capacity(self.body_len as usize);
        for i in 0..self.crcs.len() as u64 {
            all.extend_from_slice(&self.block(file, i, wait)?);
        }
        Ok(all.freeze())
    }
}

/// Fills `buf` from `at`. A short read is a record cut short: a checksum
/// failure, not an I/O one.
fn read_exact_at(file: &File, buf: &mut [u8], at: u64, wait: Wait) -> Result<(), Fail> {
    let done = match wait {
        Wait::Yes => file.read_exact_at(buf, at),
        Wait::No => read_cached(file, buf, at),
    };
    done.map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => Fail::Blocked,
        io::ErrorKind::UnexpectedEof => Fail::Bad(Bad::Checksum),
        _ => Fail::Bad(Bad::Malformed),
    })
}

/// `read_exact_at` from the page cache only: `WouldBlock` as soon as a
/// byte would have to come from the disk.
fn read_cached(file: &File, mut buf: &mut [u8], mut at: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    while !buf.is_empty() {
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: `iov` describes `buf`, writable and alive for the call.
        let n = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
                &iov,
                1,
                at as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                // Kernels or file systems without RWF_NOWAIT say so.
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => {
                buf = &mut buf[n as usize..];
                at += n as u64;
            }
        }
    }
    Ok(())
}

/// Writes the record of `entry` under `key` to `tmp`, then renames it to
/// `path`; the bytes written.
pub fn write(
    tmp: &Path,
    path: &Path,
    key: &str,
    entry: &Entry,
    keep_until: SystemTime,
) -> io::Result<u64> {
    let head = record::encode_head(entry);
    let body = &entry.body;
    let crcs: Vec<u32> = body.chunks(BLOCK as usize).map(crc32fast::hash).collect();
    let header = encode_header(key, &head, keep_until, body.len() as u64, &crcs, 0);
    let written = (|| {
        let mut file = File::create(tmp)?;
        file.write_all(&header)?;
        file.write_all(body)?;
        std::fs::rename(tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    Ok(header.len() as u64 + body.len() as u64)
}

/// The bytes a header takes before the body, for a body of at most
/// `max_body` bytes: where a body written before its header is known
/// starts (`spool.rs`).
pub fn header_room(key: &str, head: &[u8], max_body: u64) -> u64 {
    12 + 2 + key.len() as u64 + 8 + 4 + head.len() as u64 + 8 + 4 + 4 * max_body.div_ceil(BLOCK)
}

/// A record's header: `head` is the encoded record head, `crcs` one per
/// block of the `body_len` bytes. Padded with zeros to `room` bytes when
/// that is more (the header of a body written first, in the room kept for
/// it: the padding is covered by the header's CRC and read past).
pub fn encode_header(
    key: &str,
    head: &[u8],
    keep_until: SystemTime,
    body_len: u64,
    crcs: &[u32],
    room: u64,
) -> BytesMut {
    let mut header = BytesMut::with_capacity(64 + key.len() + head.len() + crcs.len() * 4);
    header.put_slice(MAGIC);
    header.put_u32(0); // crc, below
    header.put_u32(0); // length, below
    header.put_u16(key.len() as u16);
    header.put_slice(key.as_bytes());
    let keep = keep_until
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    header.put_u64(keep);
    header.put_u32(head.len() as u32);
    header.put_slice(head);
    header.put_u64(body_len);
    header.put_u32(crcs.len() as u32);
    for crc in crcs {
        header.put_u32(*crc);
    }
    if (header.len() as u64) < room {
        header.resize(room as usize, 0);
    }
    let len = (header.len() - 12) as u32;
    header[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32fast::hash(&header[8..]);
    header[4..8].copy_from_slice(&crc.to_be_bytes());
    header
}

/// A key's file name part: FNV-1a 64, stable across builds and restarts.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The name of `entry`'s file under `key`: the URL's hash and its
/// variant's.
pub fn name_of(key: &str, entry: &Entry) -> (u64, u64) {
    (hash(key.as_bytes()), secondary_hash(&entry.secondary))
}

/// The hash of a variant's secondary key; 0 for a response without Vary,
/// so that its file can be found from the URL alone.
pub fn secondary_hash(secondary: &[(http::HeaderName, Option<String>)]) -> u64 {
    if secondary.is_empty() {
        return 0;
    }
    let mut text = Vec::new();
    for (name, value) in secondary {
        text.extend_from_slice(name.as_str().as_bytes());
        match value {
            Some(v) => {
                text.push(1);
                text.extend_from_slice(v.as_bytes());
            }
            None => text.push(0),
        }
        text.push(b'\n');
    }
    hash(&text).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::tests_support::stored;
    use std::time::Duration;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("viaduct-format-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entry(body: Vec<u8>) -> Entry {
        let head = stored(200, &[("cache-control", "max-age=60"), ("etag", "\"v\"")]);
        Entry::new(head, Bytes::from(body), Vec::new())
            .with_tags(vec![Arc::<str>::from("t1")].into_boxed_slice())
    }

    use std::sync::Arc;

    #[test]
    fn a_record_reads_back_block_by_block_and_whole() {
        let d = dir("roundtrip");
        let body: Vec<u8> = (0..(2 * BLOCK as usize + 1234))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let until = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let path = d.join("r");
        let size = write(&d.join("t"), &path, "k", &entry(body.clone()), until).unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        assert!(!d.join("t").exists(), "the temporary name is gone");
        let file = File::open(&path).unwrap();
        let header = Header::read(&file, Wait::Yes).unwrap();
        assert_eq!(
            (header.key.as_str(), header.body_len),
            ("k", body.len() as u64)
        );
        assert_eq!(header.keep_until, until);
        assert_eq!(header.crcs.len(), 3);
        assert_eq!(header.entry.tags().len(), 1);
        assert_eq!(
            &header.block(&file, 1, Wait::No).unwrap()[..],
            &body[BLOCK as usize..2 * BLOCK as usize]
        );
        assert_eq!(&header.body(&file, Wait::No).unwrap()[..], &body[..]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_flipped_byte_anywhere_or_a_cut_is_caught() {
        let d = dir("damage");
        let body = vec![b'x'; BLOCK as usize + 10];
        let path = d.join("r");
        let until = SystemTime::now() + Duration::from_secs(60);
        let size = write(&d.join("t"), &path, "k", &entry(body), until).unwrap() as usize;
        let good = std::fs::read(&path).unwrap();
        for at in [0, 5, 20, 60, size - BLOCK as usize - 5, size - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            let file = File::open(&path).unwrap();
            let caught = match Header::read(&file, Wait::Yes) {
                Err(_) => true,
                Ok(h) => (0..h.crcs.len() as u64).any(|i| h.block(&file, i, Wait::Yes).is_err()),
            };
            assert!(caught, "a flip at {at} of {size} went unseen");
        }
        std::fs::write(&path, &good[..size - 3]).unwrap();
        let file = File::open(&path).unwrap();
        let header = Header::read(&file, Wait::Yes).unwrap();
        assert_eq!(
            header.block(&file, 1, Wait::Yes),
            Err(Fail::Bad(Bad::Checksum)),
            "a cut body"
        );
        std::fs::write(&path, &good[..40]).unwrap();
        assert!(
            Header::read(&File::open(&path).unwrap(), Wait::Yes).is_err(),
            "a cut header"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_small_record_reads_in_one_go_and_damage_is_caught() {
        let d = dir("small");
        let path = d.join("r");
        let until = SystemTime::now() + Duration::from_secs(60);
        let body: Vec<u8> = (0..3000).map(|i| (i % 251) as u8).collect();
        let size = write(&d.join("t"), &path, "k", &entry(body.clone()), until).unwrap();
        let file = File::open(&path).unwrap();
        let (header, got) = Header::read_small(&file, size, Wait::No).unwrap().unwrap();
        assert_eq!((header.key.as_str(), &got[..]), ("k", &body[..]));
        // Another length than indexed: not damage, a file replaced since.
        assert!(Header::read_small(&file, size - 1, Wait::Yes)
            .unwrap()
            .is_none());
        let good = std::fs::read(&path).unwrap();
        for at in [0, 5, 20, 60, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            let file = File::open(&path).unwrap();
            assert!(
                Header::read_small(&file, size, Wait::Yes).is_err(),
                "a flip at {at} went unseen"
            );
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn names_depend_on_the_url_and_the_vary_fields_only() {
        assert_eq!(secondary_hash(&[]), 0);
        let a = [(http::header::ACCEPT_ENCODING, Some("gzip".to_string()))];
        let b = [(http::header::ACCEPT_ENCODING, None)];
        assert_ne!(secondary_hash(&a), secondary_hash(&b));
        assert_ne!(secondary_hash(&a), 0);
        assert_eq!(hash(b"x"), hash(b"x"));
        assert_ne!(hash(b"x"), hash(b"y"));
    }
}
