//! SFTP version 3 on the wire (draft-ietf-secsh-filexfer-02): packet framing, the request
//! parser and the reply encoders.
//!
//! "All packets transmitted over the secure connection are of the following format:
//! uint32 length; byte type; byte[length - 1] data payload." Every read here is bounds-checked:
//! a short or malformed packet is a [`Malformed`] error, never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::common::SftpStatus;

/// The protocol version this server speaks.
pub const SFTP_VERSION: u32 = 3;

/// Largest packet the server accepts, matching OpenSSH's `SFTP_MAX_MSG_LENGTH` (256 KiB).
/// A larger packet is skipped whole and answered with `SSH_FX_BAD_MESSAGE`.
pub const MAX_PACKET_LEN: u32 = 256 * 1024;
/// Longest handle the framer looks for in a packet it skips.
const MAX_HANDLE_LEN: usize = 256;
/// Largest READ reply payload, advertised in `limits@openssh.com`; the OpenSSH client aborts
/// on replies above what it asked for, and asks for at most this.
pub const MAX_READ_LEN: u32 = MAX_PACKET_LEN - 1024;
/// Largest WRITE payload advertised in `limits@openssh.com`.
pub const MAX_WRITE_LEN: u32 = MAX_PACKET_LEN - 1024;

/// Request packet types.
pub mod fxp {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const REALPATH: u8 = 16;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const READLINK: u8 = 19;
    pub const SYMLINK: u8 = 20;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
    pub const EXTENDED_REPLY: u8 = 201;
}

/// `SSH_FXF_*` open flags.
pub mod open_flags {
    pub const READ: u32 = 0x01;
    pub const WRITE: u32 = 0x02;
    pub const APPEND: u32 = 0x04;
    pub const CREAT: u32 = 0x08;
    pub const TRUNC: u32 = 0x10;
    pub const EXCL: u32 = 0x20;
}

const ATTR_SIZE: u32 = 0x01;
const ATTR_UIDGID: u32 = 0x02;
const ATTR_PERMISSIONS: u32 = 0x04;
const ATTR_ACMODTIME: u32 = 0x08;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// A packet that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// File attributes as SFTP v3 carries them; absent fields are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Size in bytes.
    pub size: Option<u64>,
    /// Owner and group ids.
    pub uid_gid: Option<(u32, u32)>,
    /// POSIX mode bits including the file type.
    pub permissions: Option<u32>,
    /// Access and modification times, seconds since the epoch.
    pub atime_mtime: Option<(u32, u32)>,
}

impl Attrs {
    /// The modification time, if set.
    pub fn mtime(&self) -> Option<SystemTime> {
        self.atime_mtime
            .map(|(_, m)| UNIX_EPOCH + Duration::from_secs(u64::from(m)))
    }

    fn encode(&self, out: &mut BytesMut) {
        let mut flags = 0;
        flags |= if self.size.is_some() { ATTR_SIZE } else { 0 };
        flags |= if self.uid_gid.is_some() {
            ATTR_UIDGID
        } else {
            0
        };
        flags |= if self.permissions.is_some() {
            ATTR_PERMISSIONS
        } else {
            0
        };
        flags |= if self.atime_mtime.is_some() {
            ATTR_ACMODTIME
        } else {
            0
        };
        out.put_u32(flags);
        if let Some(s) = self.size {
            out.put_u64(s);
        }
        if let Some((u, g)) = self.uid_gid {
            out.put_u32(u);
            out.put_u32(g);
        }
        if let Some(p) = self.permissions {
            out.put_u32(p);
        }
        if let Some((a, m)) = self.atime_mtime {
            out.put_u32(a);
            out.put_u32(m);
        }
    }
}

/// One parsed client request. Paths are raw bytes decoded as UTF-8 (lossless or refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `SSH_FXP_INIT`: the client's version.
    Init { version: u32 },
    /// `SSH_FXP_OPEN`.
    Open {
        id: u32,
        path: Bytes,
        pflags: u32,
        attrs: Attrs,
    },
    /// `SSH_FXP_CLOSE`.
    Close { id: u32, handle: Bytes },
    /// `SSH_FXP_READ`.
    Read {
        id: u32,
        handle: Bytes,
        offset: u64,
        len: u32,
    },
    /// `SSH_FXP_WRITE`: `data` is a slice of the received packet, not a copy.
    Write {
        id: u32,
        handle: Bytes,
        offset: u64,
        data: Bytes,
    },
    /// `SSH_FXP_STAT` and `SSH_FXP_LSTAT` (no symlinks exist, so they are the same).
    Stat { id: u32, path: Bytes },
    /// `SSH_FXP_FSTAT`.
    Fstat { id: u32, handle: Bytes },
    /// `SSH_FXP_SETSTAT`.
    Setstat { id: u32, path: Bytes, attrs: Attrs },
    /// `SSH_FXP_FSETSTAT`.
    Fsetstat {
        id: u32,
        handle: Bytes,
        attrs: Attrs,
    },
    /// `SSH_FXP_OPENDIR`.
    Opendir { id: u32, path: Bytes },
    /// `SSH_FXP_READDIR`.
    Readdir { id: u32, handle: Bytes },
    /// `SSH_FXP_REMOVE`.
    Remove { id: u32, path: Bytes },
    /// `SSH_FXP_MKDIR`.
    Mkdir { id: u32, path: Bytes },
    /// `SSH_FXP_RMDIR`.
    Rmdir { id: u32, path: Bytes },
    /// `SSH_FXP_REALPATH`.
    Realpath { id: u32, path: Bytes },
    /// `SSH_FXP_RENAME` (v3: fails if the target exists).
    Rename { id: u32, from: Bytes, to: Bytes },
    /// `SSH_FXP_READLINK` and `SSH_FXP_SYMLINK`: Coffer has no symlinks.
    Symlink { id: u32 },
    /// `SSH_FXP_EXTENDED`: the name and the rest of the packet.
    Extended { id: u32, name: Bytes, data: Bytes },
    /// A packet type this server does not know.
    Unknown { id: u32 },
}

impl Request {
    /// The request id, `None` for INIT.
    pub fn id(&self) -> Option<u32> {
        match self {
            Self::Init { .. } => None,
            Self::Open { id, .. }
            | Self::Close { id, .. }
            | Self::Read { id, .. }
            | Self::Write { id, .. }
            | Self::Stat { id, .. }
            | Self::Fstat { id, .. }
            | Self::Setstat { id, .. }
            | Self::Fsetstat { id, .. }
            | Self::Opendir { id, .. }
            | Self::Readdir { id, .. }
            | Self::Remove { id, .. }
            | Self::Mkdir { id, .. }
            | Self::Rmdir { id, .. }
            | Self::Realpath { id, .. }
            | Self::Rename { id, .. }
            | Self::Symlink { id }
            | Self::Extended { id, .. }
            | Self::Unknown { id } => Some(*id),
        }
    }

    /// Parses one packet body (type byte onwards, without the length).
    pub fn parse(mut body: Bytes) -> Result<Self, Malformed> {
        let kind = get_u8(&mut body)?;
        if kind == fxp::INIT {
            return Ok(Self::Init {
                version: get_u32(&mut body)?,
            });
        }
        let id = get_u32(&mut body)?;
        let b = &mut body;
        let req = match kind {
            fxp::OPEN => Self::Open {
                id,
                path: get_string(b)?,
                pflags: get_u32(b)?,
                attrs: get_attrs(b)?,
            },
            fxp::CLOSE => Self::Close {
                id,
                handle: get_string(b)?,
            },
            fxp::READ => Self::Read {
                id,
                handle: get_string(b)?,
                offset: get_u64(b)?,
                len: get_u32(b)?,
            },
            fxp::WRITE => Self::Write {
                id,
                handle: get_string(b)?,
                offset: get_u64(b)?,
                data: get_string(b)?,
            },
            fxp::STAT | fxp::LSTAT => Self::Stat {
                id,
                path: get_string(b)?,
            },
            fxp::FSTAT => Self::Fstat {
                id,
                handle: get_string(b)?,
            },
            fxp::SETSTAT => Self::Setstat {
                id,
                path: get_string(b)?,
                attrs: get_attrs(b)?,
            },
            fxp::FSETSTAT => Self::Fsetstat {
                id,
                handle: get_string(b)?,
                attrs: get_attrs(b)?,
            },
            fxp::OPENDIR => Self::Opendir {
                id,
                path: get_string(b)?,
            },
            fxp::READDIR => Self::Readdir {
                id,
                handle: get_string(b)?,
            },
            fxp::REMOVE => Self::Remove {
                id,
                path: get_string(b)?,
            },
            fxp::MKDIR => Self::Mkdir {
                id,
                path: get_string(b)?,
            },
            fxp::RMDIR => Self::Rmdir {
                id,
                path: get_string(b)?,
            },
            fxp::REALPATH => Self::Realpath {
                id,
                path: get_string(b)?,
            },
            fxp::RENAME => Self::Rename {
                id,
                from: get_string(b)?,
                to: get_string(b)?,
            },
            fxp::READLINK | fxp::SYMLINK => Self::Symlink { id },
            fxp::EXTENDED => Self::Extended {
                id,
                name: get_string(b)?,
                data: body.clone(),
            },
            _ => Self::Unknown { id },
        };
        Ok(req)
    }
}

fn get_u8(b: &mut Bytes) -> Result<u8, Malformed> {
    if b.remaining() < 1 {
        return Err(Malformed);
    }
    Ok(b.get_u8())
}

/// An SSH `uint32`.
pub fn get_u32(b: &mut Bytes) -> Result<u32, Malformed> {
    if b.remaining() < 4 {
        return Err(Malformed);
    }
    Ok(b.get_u32())
}

/// An SSH `uint64`.
pub fn get_u64(b: &mut Bytes) -> Result<u64, Malformed> {
    if b.remaining() < 8 {
        return Err(Malformed);
    }
    Ok(b.get_u64())
}

/// An SSH `string`: a length and that many bytes, returned without copying.
pub fn get_string(b: &mut Bytes) -> Result<Bytes, Malformed> {
    let len = get_u32(b)? as usize;
    if b.remaining() < len {
        return Err(Malformed);
    }
    Ok(b.split_to(len))
}

fn get_attrs(b: &mut Bytes) -> Result<Attrs, Malformed> {
    let flags = get_u32(b)?;
    let mut a = Attrs::default();
    if flags & ATTR_SIZE != 0 {
        a.size = Some(get_u64(b)?);
    }
    if flags & ATTR_UIDGID != 0 {
        a.uid_gid = Some((get_u32(b)?, get_u32(b)?));
    }
    if flags & ATTR_PERMISSIONS != 0 {
        a.permissions = Some(get_u32(b)?);
    }
    if flags & ATTR_ACMODTIME != 0 {
        a.atime_mtime = Some((get_u32(b)?, get_u32(b)?));
    }
    if flags & ATTR_EXTENDED != 0 {
        let count = get_u32(b)?;
        for _ in 0..count {
            get_string(b)?;
            get_string(b)?;
        }
    }
    Ok(a)
}

/// One reply, ready to send: a header and, for DATA replies, the payload kept uncopied.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The packet, or for DATA its header up to and including the payload length.
    pub head: Bytes,
    /// The DATA payload; empty otherwise.
    pub body: Bytes,
}

/// Builds a packet: reserves the length, lets `fill` write type and body, patches the length.
fn packet(
    kind: u8,
    id: Option<u32>,
    extra_len: usize,
    fill: impl FnOnce(&mut BytesMut),
) -> BytesMut {
    let mut out = BytesMut::with_capacity(64);
    out.put_u32(0);
    out.put_u8(kind);
    if let Some(id) = id {
        out.put_u32(id);
    }
    fill(&mut out);
    let len = (out.len() - 4 + extra_len) as u32;
    if let Some(mut prefix) = out.get_mut(..4) {
        prefix.put_u32(len);
    }
    out
}

fn put_string(out: &mut BytesMut, s: &[u8]) {
    out.put_u32(s.len() as u32);
    out.put_slice(s);
}

impl Reply {
    fn single(b: BytesMut) -> Self {
        Self {
            head: b.freeze(),
            body: Bytes::new(),
        }
    }

    /// `SSH_FXP_VERSION` with extension pairs.
    pub fn version(extensions: &[(&str, &str)]) -> Self {
        Self::single(packet(fxp::VERSION, None, 0, |o| {
            o.put_u32(SFTP_VERSION);
            for (name, data) in extensions {
                put_string(o, name.as_bytes());
                put_string(o, data.as_bytes());
            }
        }))
    }

    /// `SSH_FXP_STATUS`.
    pub fn status(id: u32, status: SftpStatus, message: &str) -> Self {
        Self::single(packet(fxp::STATUS, Some(id), 0, |o| {
            o.put_u32(status.code());
            put_string(o, message.as_bytes());
            put_string(o, b"en");
        }))
    }

    /// `SSH_FX_OK`.
    pub fn ok(id: u32) -> Self {
        Self::status(id, SftpStatus::Ok, "Success")
    }

    /// `SSH_FXP_HANDLE`.
    pub fn handle(id: u32, handle: &[u8]) -> Self {
        Self::single(packet(fxp::HANDLE, Some(id), 0, |o| put_string(o, handle)))
    }

    /// `SSH_FXP_DATA`: the payload is sent as is, after a small header.
    pub fn data(id: u32, payload: Bytes) -> Self {
        let head = packet(fxp::DATA, Some(id), payload.len(), |o| {
            o.put_u32(payload.len() as u32)
        });
        Self {
            head: head.freeze(),
            body: payload,
        }
    }

    /// `SSH_FXP_NAME`: (file name, `ls -l` long name, attributes) triples.
    pub fn name(id: u32, entries: &[(String, String, Attrs)]) -> Self {
        Self::single(packet(fxp::NAME, Some(id), 0, |o| {
            o.put_u32(entries.len() as u32);
            for (name, long, attrs) in entries {
                put_string(o, name.as_bytes());
                put_string(o, long.as_bytes());
                attrs.encode(o);
            }
        }))
    }

    /// `SSH_FXP_ATTRS`.
    pub fn attrs(id: u32, attrs: &Attrs) -> Self {
        Self::single(packet(fxp::ATTRS, Some(id), 0, |o| attrs.encode(o)))
    }

    /// `SSH_FXP_EXTENDED_REPLY` carrying big-endian u64 values (statvfs, limits).
    pub fn extended_u64s(id: u32, values: &[u64]) -> Self {
        Self::single(packet(fxp::EXTENDED_REPLY, Some(id), 0, |o| {
            for v in values {
                o.put_u64(*v);
            }
        }))
    }

    /// `SSH_FXP_EXTENDED_REPLY` to `check-file-name`/`check-file-handle`
    /// (draft-ietf-secsh-filexfer-extensions-00, section 3): `"check-file"`, the algorithm
    /// used, then the hash bytes to the end of the packet.
    pub fn check_file(id: u32, algorithm: &str, hash: &[u8]) -> Self {
        Self::single(packet(fxp::EXTENDED_REPLY, Some(id), 0, |o| {
            put_string(o, b"check-file");
            put_string(o, algorithm.as_bytes());
            o.put_slice(hash);
        }))
    }

    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// `true` for an empty reply (never built by the encoders).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reassembles packets from the channel's data stream.
///
/// Oversized packets are not buffered: their id is answered with `SSH_FX_BAD_MESSAGE` and their
/// body is skipped as it arrives, so the stream stays in step.
#[derive(Debug, Default)]
pub struct Framer {
    buf: BytesMut,
    skip: usize,
}

/// What the framer found in the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete packet body (type byte onwards).
    Packet(Bytes),
    /// A packet above [`MAX_PACKET_LEN`], being skipped; its id, to answer, and for a WRITE
    /// the handle it was for (so that upload is not completed as if the write had not been).
    TooLarge { id: u32, handle: Option<Bytes> },
    /// A packet too short to carry a type and an id: the stream cannot be trusted.
    Garbage,
}

impl Framer {
    /// Appends received bytes.
    pub fn push(&mut self, mut data: &[u8]) {
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = data.get(n..).unwrap_or_default();
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if any.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.skip > 0 || self.buf.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([
            *self.buf.first()?,
            *self.buf.get(1)?,
            *self.buf.get(2)?,
            *self.buf.get(3)?,
        ]);
        if len < 5 {
            return Some(Frame::Garbage);
        }
        if len > MAX_PACKET_LEN {
            if self.buf.len() < 9 {
                return None;
            }
            let id = u32::from_be_bytes([
                *self.buf.get(5)?,
                *self.buf.get(6)?,
                *self.buf.get(7)?,
                *self.buf.get(8)?,
            ]);
            let mut handle = None;
            if self.buf.get(4) == Some(&fxp::WRITE) {
                if self.buf.len() < 13 {
                    return None;
                }
                let hlen = u32::from_be_bytes([
                    *self.buf.get(9)?,
                    *self.buf.get(10)?,
                    *self.buf.get(11)?,
                    *self.buf.get(12)?,
                ]) as usize;
                // Coffer's handles are a few bytes; a longer one names no handle of ours.
                if hlen <= MAX_HANDLE_LEN {
                    if self.buf.len() < 13 + hlen {
                        return None;
                    }
                    handle = self.buf.get(13..13 + hlen).map(Bytes::copy_from_slice);
                }
            }
            let total = 4 + len as usize;
            let have = self.buf.len().min(total);
            self.skip = total - have;
            self.buf.advance(have);
            return Some(Frame::TooLarge { id, handle });
        }
        let total = 4 + len as usize;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return None;
        }
        let mut packet = self.buf.split_to(total);
        packet.advance(4);
        Some(Frame::Packet(packet.freeze()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn write_packet(id: u32, handle: &[u8], offset: u64, data: &[u8]) -> Vec<u8> {
        let mut b = vec![fxp::WRITE];
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&(handle.len() as u32).to_be_bytes());
        b.extend_from_slice(handle);
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        frame(&b)
    }

    #[test]
    fn write_request_split_across_channel_messages_is_reassembled() {
        let wire = write_packet(7, b"h1", 4096, b"hello");
        let mut f = Framer::default();
        f.push(&wire[..3]);
        assert_eq!(f.next_frame(), None);
        f.push(&wire[3..10]);
        assert_eq!(f.next_frame(), None);
        f.push(&wire[10..]);
        let Some(Frame::Packet(p)) = f.next_frame() else {
            panic!("no packet")
        };
        let req = Request::parse(p).unwrap();
        assert_eq!(
            req,
            Request::Write {
                id: 7,
                handle: Bytes::from_static(b"h1"),
                offset: 4096,
                data: Bytes::from_static(b"hello")
            }
        );
        assert_eq!(f.next_frame(), None);
    }

    #[test]
    fn oversized_packet_is_skipped_and_the_next_one_still_parses() {
        let big = write_packet(9, b"h1", 0, &vec![0u8; MAX_PACKET_LEN as usize + 10]);
        let next = frame(&[fxp::STAT, 0, 0, 0, 10, 0, 0, 0, 1, b'a']);
        let mut f = Framer::default();
        f.push(&big[..11]);
        assert_eq!(f.next_frame(), None, "waits for the handle of a WRITE");
        f.push(&big[11..100]);
        assert_eq!(
            f.next_frame(),
            Some(Frame::TooLarge {
                id: 9,
                handle: Some(Bytes::from_static(b"h1"))
            })
        );
        assert_eq!(f.next_frame(), None);
        f.push(&big[100..]);
        f.push(&next);
        let Some(Frame::Packet(p)) = f.next_frame() else {
            panic!("stream desynchronised")
        };
        assert_eq!(
            Request::parse(p).unwrap(),
            Request::Stat {
                id: 10,
                path: Bytes::from_static(b"a")
            }
        );
    }

    #[test]
    fn truncated_fields_are_malformed_not_a_panic() {
        for body in [
            &[fxp::OPEN][..],
            &[fxp::OPEN, 0, 0, 0, 1, 0, 0, 0, 9, b'x'],
            &[fxp::READ, 0, 0, 0, 1, 0, 0, 0, 0, 1],
        ] {
            assert_eq!(Request::parse(Bytes::copy_from_slice(body)), Err(Malformed));
        }
        let mut f = Framer::default();
        f.push(&[0, 0, 0, 2, 1, 2]);
        assert_eq!(f.next_frame(), Some(Frame::Garbage));
    }

    #[test]
    fn data_reply_length_covers_the_uncopied_payload() {
        let r = Reply::data(5, Bytes::from_static(b"abc"));
        let len = u32::from_be_bytes(r.head[..4].try_into().unwrap()) as usize;
        assert_eq!(len + 4, r.len());
        assert_eq!(&r.head[4..5], &[fxp::DATA]);
        assert_eq!(&r.body[..], b"abc");
    }

    /// A fuzz smoke test: arbitrary bytes, cut at arbitrary points, never panic the framer or
    /// the parser, and every frame is either a packet, a skip, or garbage.
    #[test]
    fn random_bytes_never_panic_the_framer_or_the_parser() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let len = (next() % 600) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Plausible small lengths and known types make the parser go deeper.
            if data.len() > 5 {
                data[0] = 0;
                data[1] = 0;
                data[2] = (next() % 3) as u8;
                data[4] = [
                    fxp::OPEN,
                    fxp::WRITE,
                    fxp::SETSTAT,
                    fxp::EXTENDED,
                    fxp::INIT,
                ][(next() % 5) as usize];
            }
            let mut f = Framer::default();
            let cut = if data.is_empty() {
                0
            } else {
                (next() as usize) % data.len()
            };
            f.push(&data[..cut]);
            f.push(&data[cut..]);
            while let Some(frame) = f.next_frame() {
                match frame {
                    Frame::Packet(p) => {
                        let _ = Request::parse(p);
                    }
                    Frame::TooLarge { .. } => {}
                    Frame::Garbage => break,
                }
            }
        }
    }

    #[test]
    fn attrs_round_trip_through_setstat() {
        let attrs = Attrs {
            size: Some(12),
            uid_gid: None,
            permissions: Some(0o100644),
            atime_mtime: Some((1, 2)),
        };
        let mut body = BytesMut::new();
        body.put_u8(fxp::SETSTAT);
        body.put_u32(3);
        put_string(&mut body, b"/f");
        attrs.encode(&mut body);
        let req = Request::parse(body.freeze()).unwrap();
        assert_eq!(
            req,
            Request::Setstat {
                id: 3,
                path: Bytes::from_static(b"/f"),
                attrs
            }
        );
    }
}
