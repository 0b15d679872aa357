//! How a state is written into a snapshot: a versioned frame under a checksum.
//!
//! ```text
//! magic "BERTHSNP" | version u16 | CRC-32 of the body u32 | body length u64 | body
//! ```
//! (integers big-endian). Version 1's body is the state's JSON in an LZ4 frame: written
//! and read through the compressor, so neither side holds the uncompressed JSON, and about
//! a tenth of its size on disk and on the wire. Bytes that do not start with the magic are
//! a state written before frames (bare JSON) and are read as such, so a node of this
//! release reads what a node of the previous one wrote or sent.

use std::io::{BufReader, BufWriter, Read, Write};

use berth_core::ClusterState;

const MAGIC: &[u8; 8] = b"BERTHSNP";
/// The frame this release writes.
pub const VERSION: u16 = 1;
const HEADER: usize = 8 + 2 + 4 + 8;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("snapshot is damaged: {0}")]
    Damaged(String),
    #[error("snapshot frame version {0} is newer than this release reads ({VERSION}); upgrade this node")]
    Version(u16),
    #[error("snapshot state: {0}")]
    Json(#[from] serde_json::Error),
    #[error("snapshot: {0}")]
    Io(#[from] std::io::Error),
}

/// Counts and checksums what passes through to the inner writer.
struct Summing<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The state, framed.
pub fn encode(state: &ClusterState) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(HEADER + 64 * 1024);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&[0; 12]);
    let summing = Summing {
        inner: out,
        crc: crc32fast::Hasher::new(),
    };
    let mut lz = lz4_flex::frame::FrameEncoder::new(summing);
    // serde_json writes a few bytes at a time; the compressor wants blocks.
    let mut buffered = BufWriter::with_capacity(64 * 1024, &mut lz);
    serde_json::to_writer(&mut buffered, state)?;
    buffered.flush()?;
    drop(buffered);
    let summing = lz
        .finish()
        .map_err(|e| CodecError::Io(std::io::Error::other(e)))?;
    let crc = summing.crc.finalize();
    let mut out = summing.inner;
    let body = (out.len() - HEADER) as u64;
    out[10..14].copy_from_slice(&crc.to_be_bytes());
    out[14..HEADER].copy_from_slice(&body.to_be_bytes());
    Ok(out)
}

/// A state from a frame, or from the bare JSON of a previous release.
pub fn decode(bytes: &[u8]) -> Result<ClusterState, CodecError> {
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        return Ok(serde_json::from_slice(bytes)?);
    };
    if bytes.len() < HEADER {
        return Err(CodecError::Damaged(format!(
            "{} bytes, shorter than the frame's header",
            bytes.len()
        )));
    }
    let version = u16::from_be_bytes([rest[0], rest[1]]);
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let crc = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&rest[6..14]);
    let body = &bytes[HEADER..];
    if u64::try_from(body.len()).ok() != Some(u64::from_be_bytes(len)) {
        return Err(CodecError::Damaged(format!(
            "the body is {} bytes where the header says {}",
            body.len(),
            u64::from_be_bytes(len)
        )));
    }
    if crc32fast::hash(body) != crc {
        return Err(CodecError::Damaged("checksum mismatch".into()));
    }
    let lz = lz4_flex::frame::FrameDecoder::new(body);
    let mut reader = BufReader::with_capacity(64 * 1024, lz);
    let state = serde_json::from_reader(&mut reader)?;
    // Nothing may follow the state inside the frame.
    if reader.read(&mut [0u8; 1])? != 0 {
        return Err(CodecError::Damaged(
            "bytes after the state in the frame".into(),
        ));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::command::{AgentRegistration, Batch, Command};

    fn state() -> ClusterState {
        let mut s = ClusterState::new();
        let commands = (0..50)
            .map(|i| {
                Command::RegisterAgent(AgentRegistration {
                    id: format!("agent-{i}"),
                    cpu: 4096,
                    memory: 8192,
                    attributes: Default::default(),
                    address: format!("10.0.0.{i}:7600"),
                })
            })
            .collect();
        s.apply(
            1,
            &Batch {
                now: 1_000,
                commands,
            },
        );
        s
    }

    #[test]
    fn a_state_round_trips_through_a_frame_smaller_than_its_json() {
        let s = state();
        let framed = encode(&s).unwrap();
        let json = serde_json::to_vec(&s).unwrap();
        assert!(framed.starts_with(MAGIC));
        assert!(
            framed.len() * 3 < json.len(),
            "{} vs {}",
            framed.len(),
            json.len()
        );
        assert_eq!(decode(&framed).unwrap().digest(), s.digest());
    }

    #[test]
    fn a_snapshot_of_the_previous_release_bare_json_still_reads() {
        let s = state();
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(decode(&json).unwrap().digest(), s.digest());
    }

    #[test]
    fn a_flipped_bit_truncation_or_newer_version_is_refused_by_name() {
        let framed = encode(&state()).unwrap();
        let mut flipped = framed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x10;
        assert!(matches!(decode(&flipped), Err(CodecError::Damaged(m)) if m.contains("checksum")));
        assert!(matches!(
            decode(&framed[..framed.len() - 5]),
            Err(CodecError::Damaged(m)) if m.contains("header says")
        ));
        assert!(matches!(decode(&framed[..12]), Err(CodecError::Damaged(_))));
        let mut newer = framed.clone();
        newer[8..10].copy_from_slice(&2u16.to_be_bytes());
        let err = decode(&newer).unwrap_err();
        assert!(matches!(err, CodecError::Version(2)));
        assert!(err.to_string().contains("upgrade"), "{err}");
    }
}
