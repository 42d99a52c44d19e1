//! What nodes say to each other over NATS: a small binary format of our own (a version byte,
//! little-endian integers, length-prefixed bytes), so a frame's JSON travels as it is, without
//! escaping, and a receiver hands the very same bytes to its connections.
//!
//! This is not the client protocol: only nodes of one cluster, running the same build, speak it.
//! A message that does not decode is logged and dropped (the log still has everything).

use bytes::{BufMut, Bytes, BytesMut};
use parley_core::ids::*;

use parley_router::{Kick, LogPosition, Outbound, PresenceState};

const VERSION: u8 = 1;

/// Builds one node-bound message: frames, each with the recipients on that node.
pub(crate) struct FrameBatch {
    buf: BytesMut,
    count: u32,
    count_at: usize,
}

impl FrameBatch {
    pub(crate) fn new(origin: &str) -> Self {
        let mut buf = BytesMut::with_capacity(256);
        buf.put_u8(VERSION);
        put_str(&mut buf, origin);
        let count_at = buf.len();
        buf.put_u32_le(0);
        FrameBatch { buf, count: 0, count_at }
    }

    pub(crate) fn push(&mut self, users: &[UserId], frame: &Outbound) {
        self.buf.reserve(16 + users.len() * 8 + frame.json.len());
        self.buf.put_u32_le(users.len() as u32);
        for &u in users {
            self.buf.put_i64_le(i64::from(u));
        }
        put_target(&mut self.buf, frame);
        self.buf.put_u32_le(frame.json.len() as u32);
        self.buf.put_slice(&frame.json);
        self.count += 1;
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn finish(mut self) -> Bytes {
        let at = self.count_at;
        self.buf[at..at + 4].copy_from_slice(&self.count.to_le_bytes());
        self.buf.freeze()
    }
}

/// Frames with their recipients on the receiving node.
pub(crate) type RoutedFrames = Vec<(Vec<UserId>, Outbound)>;

/// A decoded frame batch: its origin and each (recipients, frame). Frames share the payload's
/// memory.
pub(crate) fn decode_frames(payload: &Bytes) -> Option<(String, RoutedFrames)> {
    let mut r = Reader::new(payload)?;
    let origin = r.str()?;
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let users = r.users()?;
        let (position, device) = r.target()?;
        let json = r.bytes()?;
        out.push((users, Outbound { json, position, device }));
    }
    Some((origin, out))
}

pub(crate) fn encode_kick(origin: &str, user: UserId, device: DeviceId, why: Kick) -> Bytes {
    let mut buf = header(origin);
    buf.put_i64_le(i64::from(user));
    buf.put_i64_le(i64::from(device));
    buf.put_u8(match why {
        Kick::TooSlow => 0,
        Kick::Revoked => 1,
        Kick::Resync => 2,
    });
    buf.freeze()
}

pub(crate) fn decode_kick(payload: &Bytes) -> Option<(String, UserId, DeviceId, Kick)> {
    let mut r = Reader::new(payload)?;
    let origin = r.str()?;
    let (user, device) = (UserId(r.i64()?), DeviceId(r.i64()?));
    let why = match r.u8()? {
        0 => Kick::TooSlow,
        1 => Kick::Revoked,
        2 => Kick::Resync,
        _ => return None,
    };
    Some((origin, user, device, why))
}

pub(crate) fn encode_members(origin: &str, conv: ConversationId, removed: Option<UserId>) -> Bytes {
    let mut buf = header(origin);
    buf.put_i64_le(i64::from(conv));
    match removed {
        None => buf.put_u8(0),
        Some(u) => {
            buf.put_u8(1);
            buf.put_i64_le(i64::from(u));
        }
    }
    buf.freeze()
}

pub(crate) fn decode_members(payload: &Bytes) -> Option<(String, ConversationId, Option<UserId>)> {
    let mut r = Reader::new(payload)?;
    let (origin, conv) = (r.str()?, ConversationId(r.i64()?));
    let removed = if r.u8()? == 0 { None } else { Some(UserId(r.i64()?)) };
    Some((origin, conv, removed))
}

/// A presence change or a privacy change, as carried on the presence subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PresenceMsg {
    State(PresenceState),
    Visibility(UserId, bool),
}

pub(crate) fn encode_presence(origin: &str, msg: &PresenceMsg) -> Bytes {
    let mut buf = header(origin);
    match *msg {
        PresenceMsg::State(s) => {
            buf.put_u8(0);
            buf.put_i64_le(i64::from(s.user_id));
            buf.put_u8(u8::from(s.online));
            buf.put_i64_le(s.last_seen.unwrap_or(-1));
            buf.put_u64_le(s.version);
        }
        PresenceMsg::Visibility(user, visible) => {
            buf.put_u8(1);
            buf.put_i64_le(i64::from(user));
            buf.put_u8(u8::from(visible));
        }
    }
    buf.freeze()
}

pub(crate) fn decode_presence(payload: &Bytes) -> Option<(String, PresenceMsg)> {
    let mut r = Reader::new(payload)?;
    let origin = r.str()?;
    let msg = match r.u8()? {
        0 => {
            let user_id = UserId(r.i64()?);
            let online = r.u8()? != 0;
            let last_seen = Some(r.i64()?).filter(|&t| t >= 0);
            let version = r.u64()?;
            PresenceMsg::State(PresenceState { user_id, online, last_seen, version })
        }
        1 => PresenceMsg::Visibility(UserId(r.i64()?), r.u8()? != 0),
        _ => return None,
    };
    Some((origin, msg))
}

/// A durable fanout job: the recipients and the frame.
pub(crate) fn encode_job(conv: ConversationId, users: &[UserId], frame: &Outbound) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + users.len() * 8 + frame.json.len());
    buf.put_u8(VERSION);
    buf.put_i64_le(i64::from(conv));
    buf.put_u32_le(users.len() as u32);
    for &u in users {
        buf.put_i64_le(i64::from(u));
    }
    put_target(&mut buf, frame);
    buf.put_u32_le(frame.json.len() as u32);
    buf.put_slice(&frame.json);
    buf.freeze()
}

pub(crate) fn decode_job(payload: &Bytes) -> Option<(ConversationId, Vec<UserId>, Outbound)> {
    let mut r = Reader::new(payload)?;
    let conv = ConversationId(r.i64()?);
    let users = r.users()?;
    let (position, device) = r.target()?;
    let json = r.bytes()?;
    Some((conv, users, Outbound { json, position, device }))
}

fn header(origin: &str) -> BytesMut {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u8(VERSION);
    put_str(&mut buf, origin);
    buf
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u16_le(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

/// A frame's log position (tag 1), or the one device it is for (tag 2), or neither (0).
fn put_target(buf: &mut BytesMut, frame: &Outbound) {
    match (frame.position, frame.device) {
        (None, Some(d)) => {
            buf.put_u8(2);
            buf.put_i64_le(i64::from(d));
        }
        (p, _) => put_position(buf, p),
    }
}

fn put_position(buf: &mut BytesMut, p: Option<LogPosition>) {
    match p {
        None => buf.put_u8(0),
        Some(p) => {
            buf.put_u8(1);
            buf.put_i64_le(i64::from(p.conversation_id));
            buf.put_i64_le(p.seq.0);
            match p.sender_device_id {
                None => buf.put_u8(0),
                Some(d) => {
                    buf.put_u8(1);
                    buf.put_i64_le(i64::from(d));
                }
            }
        }
    }
}

/// Bounds-checked reading; every method returns `None` past the end.
struct Reader<'a> {
    payload: &'a Bytes,
    at: usize,
}

impl<'a> Reader<'a> {
    /// Checks the version byte.
    fn new(payload: &'a Bytes) -> Option<Self> {
        let mut r = Reader { payload, at: 0 };
        (r.u8()? == VERSION).then_some(r)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.payload.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }

    fn bytes(&mut self) -> Option<Bytes> {
        let n = self.u32()? as usize;
        let start = self.at;
        self.take(n)?;
        Some(self.payload.slice(start..start + n))
    }

    fn users(&mut self) -> Option<Vec<UserId>> {
        let n = self.u32()? as usize;
        // Each id is 8 bytes: refuse a count the payload cannot hold before allocating.
        if n > (self.payload.len() - self.at) / 8 {
            return None;
        }
        (0..n).map(|_| self.i64().map(UserId)).collect()
    }

    fn target(&mut self) -> Option<(Option<LogPosition>, Option<DeviceId>)> {
        match self.u8()? {
            0 => Some((None, None)),
            1 => Some((Some(self.log_position()?), None)),
            2 => Some((None, Some(DeviceId(self.i64()?)))),
            _ => None,
        }
    }

    fn log_position(&mut self) -> Option<LogPosition> {
        let conversation_id = ConversationId(self.i64()?);
        let seq = self.i64()?;
        let sender_device_id = if self.u8()? == 0 { None } else { Some(DeviceId(self.i64()?)) };
        Some(LogPosition { conversation_id, seq: Seq(seq), sender_device_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_batches_round_trip() {
        let a = Outbound { json: Bytes::from_static(b"{\"type\":\"typing\"}"), position: None, device: None };
        let b = Outbound {
            json: Bytes::from_static(b"{\"type\":\"message\"}"),
            position: Some(LogPosition {
                conversation_id: ConversationId(7),
                seq: Seq(42),
                sender_device_id: Some(DeviceId(9)),
            }),
            device: None,
        };
        let c = Outbound {
            json: Bytes::from_static(b"{\"type\":\"to_device\"}"),
            position: None,
            device: Some(DeviceId(5)),
        };
        let mut batch = FrameBatch::new("node-a");
        batch.push(&[UserId(1), UserId(2)], &a);
        batch.push(&[UserId(3)], &b);
        batch.push(&[UserId(4)], &c);
        let (origin, frames) = decode_frames(&batch.finish()).unwrap();
        assert_eq!(origin, "node-a");
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].0, vec![UserId(1), UserId(2)]);
        assert_eq!(frames[0].1.json, a.json);
        assert_eq!(frames[1].1.position, b.position);
        assert_eq!((frames[2].1.position, frames[2].1.device), (None, Some(DeviceId(5))));
    }

    #[test]
    fn truncated_input_is_refused() {
        let mut batch = FrameBatch::new("n");
        batch.push(
            &[UserId(1), UserId(2), UserId(3)],
            &Outbound { json: Bytes::from_static(b"xyz"), position: None, device: None },
        );
        let full = batch.finish();
        for cut in 0..full.len() {
            assert!(decode_frames(&full.slice(..cut)).is_none(), "cut at {cut}");
        }
        assert!(decode_kick(&Bytes::from_static(&[9, 9, 9])).is_none());
    }

    #[test]
    fn presence_and_jobs_round_trip() {
        let s = PresenceState { user_id: UserId(5), online: false, last_seen: Some(1234), version: 99 };
        let (_, got) = decode_presence(&encode_presence("n", &PresenceMsg::State(s))).unwrap();
        assert_eq!(got, PresenceMsg::State(s));
        let (_, got) = decode_presence(&encode_presence("n", &PresenceMsg::Visibility(UserId(5), true))).unwrap();
        assert_eq!(got, PresenceMsg::Visibility(UserId(5), true));
        let frame = Outbound { json: Bytes::from_static(b"{}"), position: None, device: None };
        let (conv, users, f) = decode_job(&encode_job(ConversationId(3), &[UserId(4), UserId(5)], &frame)).unwrap();
        assert_eq!((conv, users, f.json), (ConversationId(3), vec![UserId(4), UserId(5)], frame.json));
        let (origin, user, device, why) =
            decode_kick(&encode_kick("x", UserId(1), DeviceId(2), Kick::Revoked)).unwrap();
        assert_eq!((origin.as_str(), user, device, why), ("x", UserId(1), DeviceId(2), Kick::Revoked));
    }
}
