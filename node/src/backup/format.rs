//! The backup format, written by `umsctl backup create`, checked by `umsctl backup
//! verify` and read by `umsd restore`: a directory holding one file per Raft group and a
//! `manifest.json`, written last, that lists them with their position (applied index and
//! term), membership, source node, size and SHA-256.
//!
//! A group file is what a node streams for `GET /api/v1/backup/groups/{group}`: frames
//! of a varint length and a protobuf message, first a [`GroupHeader`], then the group's
//! snapshot chunks (the same consistent view a Raft snapshot carries, at the header's
//! applied index).

use std::io::Read;
use std::path::Path;

use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::snapshot::SnapshotChunk;

/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "manifest.json";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest frame accepted (a chunk is about 1 MiB; one large message is a chunk alone).
const MAX_FRAME_BYTES: u64 = 256 << 20;

/// The first frame of a group file: which group, where its log stood, who held it.
#[derive(Clone, PartialEq, Message)]
pub struct GroupHeader {
    #[prost(uint64, tag = "1")]
    pub group: u64,
    #[prost(uint64, tag = "2")]
    pub index: u64,
    #[prost(uint64, tag = "3")]
    pub term: u64,
    #[prost(uint64, repeated, tag = "4")]
    pub voters: Vec<u64>,
    #[prost(uint64, repeated, tag = "5")]
    pub learners: Vec<u64>,
    #[prost(string, tag = "6")]
    pub cluster_id: String,
    /// The node whose replica this is.
    #[prost(uint64, tag = "7")]
    pub node: u64,
}

/// A backup directory's table of contents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub cluster_id: String,
    /// When the backup was finished (ms since the epoch).
    pub created_ms: u64,
    /// The cluster's shard count (a restored cluster must use the same: users are
    /// placed by it).
    pub shards: u64,
    /// Every group, the meta group 0 first.
    pub groups: Vec<GroupEntry>,
}

/// One group's file in a backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub group: u64,
    pub file: String,
    pub index: u64,
    pub term: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub source_node: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Whether `dir` exists and holds anything: neither a backup nor a restore writes into
/// such a directory.
pub fn is_occupied(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// The file name of `group`'s data in a backup directory.
pub fn group_file_name(group: u64) -> String {
    format!("group-{group:05}.ums")
}

/// `message` as one frame.
pub fn frame(message: &impl Message) -> Vec<u8> {
    message.encode_length_delimited_to_vec()
}

/// The next frame's bytes, `None` at a clean end of `reader`.
fn read_frame(reader: &mut impl Read) -> Result<Option<Vec<u8>>, String> {
    let mut length: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8; 1];
        match reader.read(&mut byte) {
            Ok(0) if shift == 0 => return Ok(None),
            Ok(0) => return Err("the file ends inside a frame length".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading: {e}")),
        }
        length |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    if length > MAX_FRAME_BYTES {
        return Err(format!("a frame claims {length} bytes, more than any backup writes"));
    }
    let mut bytes = vec![0; length as usize];
    reader.read_exact(&mut bytes).map_err(|_| "the file ends inside a frame".to_string())?;
    Ok(Some(bytes))
}

/// Reads a group file frame by frame: its header, then its chunks.
struct GroupReader<R: Read> {
    reader: R,
    header: GroupHeader,
}

impl<R: Read> GroupReader<R> {
    fn new(mut reader: R) -> Result<Self, String> {
        let bytes = read_frame(&mut reader)?.ok_or("the file is empty")?;
        let header = GroupHeader::decode(bytes.as_slice()).map_err(|e| format!("not a group header: {e}"))?;
        Ok(Self { reader, header })
    }

    /// The next chunk, `None` at the end of the file.
    fn next_chunk(&mut self) -> Result<Option<SnapshotChunk>, String> {
        match read_frame(&mut self.reader)? {
            None => Ok(None),
            Some(bytes) => SnapshotChunk::decode(bytes.as_slice()).map(Some).map_err(|e| format!("not a chunk: {e}")),
        }
    }
}

/// A reader that hashes what passes through it.
struct HashingReader<R: Read> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hash.update(&buf[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a backup directory's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| {
        format!("{}: {e} (a backup directory has a manifest.json, written when the backup finished)", path.display())
    })?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if manifest.format != FORMAT_VERSION {
        return Err(format!("{}: format {} (this build reads {FORMAT_VERSION})", path.display(), manifest.format));
    }
    if manifest.groups.len() as u64 != manifest.shards + 1 {
        return Err(format!(
            "{}: lists {} groups, not the meta group and {} shards",
            path.display(),
            manifest.groups.len(),
            manifest.shards
        ));
    }
    Ok(manifest)
}

/// What reading a whole group file found.
pub struct GroupFile {
    pub header: GroupHeader,
    pub bytes: u64,
    pub sha256: String,
}

/// Reads the group file at `path` whole, frame by frame: `accept` sees its header first
/// (an error there stops before any chunk), then `each` every chunk. Returns the header,
/// the size and the SHA-256 of the file. An error names the file.
pub fn read_group_file(
    path: &Path,
    accept: impl FnOnce(&GroupHeader) -> Result<(), String>,
    mut each: impl FnMut(SnapshotChunk) -> Result<(), String>,
) -> Result<GroupFile, String> {
    let named = |what: String| format!("{}: {what}", path.display());
    let file = std::fs::File::open(path).map_err(|e| named(e.to_string()))?;
    let mut hashing = HashingReader { inner: std::io::BufReader::new(file), hash: Sha256::new(), bytes: 0 };
    let header = {
        let mut reader = GroupReader::new(&mut hashing).map_err(named)?;
        accept(&reader.header).map_err(named)?;
        while let Some(chunk) = reader.next_chunk().map_err(named)? {
            each(chunk).map_err(named)?;
        }
        reader.header
    };
    Ok(GroupFile { header, bytes: hashing.bytes, sha256: hex(&hashing.hash.finalize()) })
}

/// Checks one group file against its manifest entry: size, SHA-256, and every frame
/// readable with the header the manifest names. Calls `each` with every chunk on the
/// way (restore writes them as they come). An error names the file.
pub fn check_group_file(
    dir: &Path,
    entry: &GroupEntry,
    each: impl FnMut(SnapshotChunk) -> Result<(), String>,
) -> Result<(), String> {
    let path = dir.join(&entry.file);
    let accept = |header: &GroupHeader| {
        if (header.group, header.index, header.term) == (entry.group, entry.index, entry.term) {
            return Ok(());
        }
        Err(format!(
            "holds group {} at index {} term {}, the manifest says group {} at {} term {}",
            header.group, header.index, header.term, entry.group, entry.index, entry.term
        ))
    };
    let read = read_group_file(&path, accept, each)?;
    let named = |what: String| format!("{}: {what}", path.display());
    if read.bytes != entry.bytes {
        return Err(named(format!("{} bytes, the manifest says {}", read.bytes, entry.bytes)));
    }
    if read.sha256 != entry.sha256 {
        return Err(named(format!(
            "SHA-256 {}, the manifest says {} (the file is corrupted)",
            read.sha256, entry.sha256
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::snapshot::SnapshotPair;

    fn write_group(dir: &Path, group: u64, chunks: &[SnapshotChunk]) -> GroupEntry {
        let file = group_file_name(group);
        let header = GroupHeader { group, index: 42, term: 3, voters: vec![1, 2, 3], ..Default::default() };
        let mut bytes = frame(&header);
        for chunk in chunks {
            bytes.extend(frame(chunk));
        }
        std::fs::write(dir.join(&file), &bytes).unwrap();
        let read = read_group_file(&dir.join(&file), |_| Ok(()), |_| Ok(())).unwrap();
        assert_eq!(read.bytes, bytes.len() as u64);
        let (index, term, sha256) = (read.header.index, read.header.term, read.sha256);
        GroupEntry {
            group,
            file,
            index,
            term,
            voters: vec![1, 2, 3],
            learners: vec![],
            source_node: 1,
            bytes: read.bytes,
            sha256,
        }
    }

    fn chunk(n: u8) -> SnapshotChunk {
        SnapshotChunk { pairs: vec![SnapshotPair { cf: 2, key: vec![1, n], value: vec![n; 300] }] }
    }

    #[test]
    fn a_group_file_reads_back_and_a_flipped_byte_is_caught_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let entry = write_group(dir.path(), 7, &[chunk(1), chunk(2)]);
        let mut seen = Vec::new();
        check_group_file(dir.path(), &entry, |chunk| {
            seen.push(chunk.pairs[0].key.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [vec![1, 1], vec![1, 2]]);

        let path = dir.path().join(&entry.file);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let error = check_group_file(dir.path(), &entry, |_| Ok(())).unwrap_err();
        assert!(error.contains("group-00007.ums") && error.contains("corrupted"), "{error}");

        bytes.truncate(last - 10);
        std::fs::write(&path, &bytes).unwrap();
        let error = check_group_file(dir.path(), &entry, |_| Ok(())).unwrap_err();
        assert!(error.contains("group-00007.ums") && error.contains("ends inside a frame"), "{error}");
    }

    #[test]
    fn a_manifest_must_list_every_group() {
        let dir = tempfile::tempdir().unwrap();
        let entry = write_group(dir.path(), 0, &[]);
        let manifest =
            Manifest { format: FORMAT_VERSION, cluster_id: "c".into(), created_ms: 1, shards: 2, groups: vec![entry] };
        std::fs::write(dir.path().join(MANIFEST), serde_json::to_vec(&manifest).unwrap()).unwrap();
        assert!(read_manifest(dir.path()).unwrap_err().contains("not the meta group and 2 shards"));
        assert!(read_manifest(&dir.path().join("absent")).unwrap_err().contains("manifest.json"));
    }
}
