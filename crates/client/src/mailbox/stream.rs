//! One contact's two streams of chunks, as one end keeps them: what we send it (numbered,
//! kept until acknowledged, streamed without waiting for acknowledgements) and what it sends
//! us (acknowledged cumulatively, reassembled into messages). The rules are the ones
//! `super::plan`'s simulation checked (docs/mail-delivery.md "Spending queries and rows"):
//! - each row to the contact carries the next chunk not yet sent, else the oldest not yet
//!   acknowledged again (round robin over them), and always our acknowledgement;
//! - we owe the contact a row while we have chunks it has not acknowledged, or since a chunk
//!   of its arrived (a chunk seen again means it missed our acknowledgement);
//! - a chunk is taken once (by number), however often it comes.
//!
//! Everything here is saved in the write-ahead record with the rest of the courier's state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::chunk::{Chunk, PAYLOAD_LEN};

/// Chunks past the first missing one we keep track of (a contact cannot make us hold more).
pub const MAX_AHEAD: u64 = 1024;
/// Messages being reassembled at once, per contact.
pub const MAX_PARTIAL: usize = 64;
/// Most chunks of one message.
pub const MAX_CHUNKS: u16 = 128;

/// A chunk we sent and the contact has not acknowledged.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Outgoing {
    seq: u64,
    /// The send it belongs to (the courier's number).
    ticket: u64,
    message: u64,
    index: u16,
    count: u16,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

/// A message being reassembled.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Partial {
    count: u16,
    parts: BTreeMap<u16, Vec<u8>>,
}

/// What a chunk from the contact did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The tickets of our chunks it acknowledged (one entry per chunk).
    pub acked: Vec<u64>,
    /// True if it carried a chunk not seen before.
    pub new: bool,
    /// A message it completed: its id and body.
    pub message: Option<(u64, Vec<u8>)>,
    /// True if the chunk was refused (too far ahead, or not fitting its message).
    pub refused: bool,
}

/// Both streams with one contact.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stream {
    /// The last number given to a chunk of ours.
    last_seq: u64,
    /// Our chunks not yet acknowledged, by number.
    out: VecDeque<Outgoing>,
    /// The highest number sent at least once.
    sent_through: u64,
    /// The number last sent again (the round robin over unacknowledged chunks).
    resent: u64,
    /// Every chunk of the contact's up to this arrived.
    in_through: u64,
    /// Chunks of the contact's past a missing one.
    ahead: BTreeSet<u64>,
    /// A chunk of the contact's arrived since our last row to it.
    ack_owed: bool,
    partial: BTreeMap<u64, Partial>,
}

impl Stream {
    /// Splits `body` into chunks of message `message` and queues them; `None` if it needs
    /// more than [`MAX_CHUNKS`].
    pub fn queue(&mut self, ticket: u64, message: u64, body: &[u8]) -> Option<u16> {
        let parts: Vec<&[u8]> = if body.is_empty() {
            vec![&[][..]]
        } else {
            body.chunks(PAYLOAD_LEN).collect()
        };
        let count = u16::try_from(parts.len())
            .ok()
            .filter(|&c| c <= MAX_CHUNKS)?;
        for (i, part) in parts.into_iter().enumerate() {
            self.last_seq += 1;
            self.out.push_back(Outgoing {
                seq: self.last_seq,
                ticket,
                message,
                index: i as u16,
                count,
                payload: part.to_vec(),
            });
        }
        Some(count)
    }

    /// True if we owe the contact a row: chunks it has not acknowledged, or an
    /// acknowledgement.
    pub fn owed(&self) -> bool {
        !self.out.is_empty() || self.ack_owed
    }

    /// Chunks of ours not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.out.len()
    }

    /// Our acknowledgement of the contact's chunks: (`ack`, `sack`).
    fn acknowledgement(&self) -> (u64, u64) {
        let sack = (0..64u64)
            .filter(|i| self.ahead.contains(&(self.in_through + 1 + i)))
            .fold(0u64, |s, i| s | 1 << i);
        (self.in_through, sack)
    }

    /// The chunk for our next row to the contact, and whether it is sent for the first time
    /// (a new chunk: the conversation goes on).
    pub fn next_row(&mut self) -> (Chunk, bool) {
        let (ack, sack) = self.acknowledgement();
        self.ack_owed = false;
        let unsent = self.out.iter().find(|o| o.seq > self.sent_through);
        let (pick, new) = match unsent {
            Some(o) => (Some(o), true),
            None => {
                let again = self
                    .out
                    .iter()
                    .find(|o| o.seq > self.resent)
                    .or_else(|| self.out.front());
                (again, false)
            }
        };
        let chunk = match pick {
            Some(o) => Chunk {
                seq: o.seq,
                ack,
                sack,
                message: o.message,
                index: o.index,
                count: o.count,
                payload: o.payload.clone(),
            },
            None => Chunk {
                seq: 0,
                ack,
                sack,
                message: 0,
                index: 0,
                count: 0,
                payload: Vec::new(),
            },
        };
        if chunk.seq > 0 {
            if new {
                self.sent_through = chunk.seq;
            } else {
                self.resent = chunk.seq;
            }
        }
        let new = new && chunk.seq > 0;
        (chunk, new)
    }

    /// Takes a chunk from the contact (already authenticated under its pair key).
    pub fn receive(&mut self, c: Chunk) -> Received {
        let mut r = Received::default();
        // Its acknowledgement of ours.
        let acked = |seq: u64| {
            seq <= c.ack || (seq - c.ack - 1 < 64 && c.sack & (1 << (seq - c.ack - 1)) != 0)
        };
        self.out.retain(|o| {
            let gone = acked(o.seq);
            if gone {
                r.acked.push(o.ticket);
            }
            !gone
        });
        if c.seq == 0 {
            return r;
        }
        self.ack_owed = true;
        if c.seq <= self.in_through || self.ahead.contains(&c.seq) {
            return r;
        }
        let fits = c.count > 0 && c.count <= MAX_CHUNKS && c.index < c.count;
        let partial_ok = match self.partial.get(&c.message) {
            Some(p) => p.count == c.count,
            None => self.partial.len() < MAX_PARTIAL || c.count == 1,
        };
        if c.seq > self.in_through + MAX_AHEAD || !fits || !partial_ok {
            r.refused = true;
            return r;
        }
        r.new = true;
        self.ahead.insert(c.seq);
        while self.ahead.remove(&(self.in_through + 1)) {
            self.in_through += 1;
        }
        let p = self.partial.entry(c.message).or_default();
        p.count = c.count;
        p.parts.insert(c.index, c.payload);
        if p.parts.len() == usize::from(p.count)
            && let Some(p) = self.partial.remove(&c.message)
        {
            r.message = Some((c.message, p.parts.into_values().flatten().collect()));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One direction, Alice to Bob, through a channel that loses each row with probability
    /// `loss` (seeded): every message arrives whole, once, whatever is lost or sent again.
    fn deliver(seed: u64, loss: f64, bodies: &[Vec<u8>]) -> (Vec<Vec<u8>>, usize) {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (mut alice, mut bob) = (Stream::default(), Stream::default());
        for (i, b) in bodies.iter().enumerate() {
            alice.queue(i as u64, 100 + i as u64, b).expect("queued");
        }
        let mut got = Vec::new();
        let mut rounds = 0;
        while alice.owed() || bob.owed() {
            rounds += 1;
            assert!(rounds < 10_000, "no progress");
            if alice.owed() {
                let (c, _) = alice.next_row();
                if !rng.random_bool(loss) {
                    let r = bob.receive(c);
                    assert!(!r.refused);
                    got.extend(r.message.map(|(_, b)| b));
                }
            }
            if bob.owed() {
                let (ack, _) = bob.next_row();
                if !rng.random_bool(loss) {
                    alice.receive(ack);
                }
            }
        }
        (got, rounds)
    }

    #[test]
    fn a_long_message_streams_without_waiting() {
        let body: Vec<u8> = (0..PAYLOAD_LEN * 5 + 3).map(|i| i as u8).collect();
        let (got, rounds) = deliver(1, 0.0, std::slice::from_ref(&body));
        assert_eq!(got, vec![body]);
        // Six chunks in six rounds, the last acknowledgement in the seventh.
        assert!(rounds <= 7, "{rounds} rounds");
    }

    proptest! {
        #[test]
        fn every_message_arrives_once_whatever_is_lost(
            seed in any::<u64>(),
            loss in 0.0f64..0.7,
            sizes in proptest::collection::vec(0usize..3 * PAYLOAD_LEN, 1..6),
        ) {
            let bodies: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
            let (mut got, _) = deliver(seed, loss, &bodies);
            got.sort();
            let mut want = bodies.clone();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_duplicate_is_acknowledged_again_but_taken_once() {
        let (mut alice, mut bob) = (Stream::default(), Stream::default());
        alice.queue(1, 9, b"hi").expect("queued");
        let (c, new) = alice.next_row();
        assert!(new);
        assert_eq!(bob.receive(c.clone()).message, Some((9, b"hi".to_vec())));
        let (_, _) = bob.next_row();
        assert!(!bob.owed());
        let again = bob.receive(c);
        assert!(again.message.is_none() && !again.new);
        assert!(bob.owed(), "the writer missed the acknowledgement");
        let (ack, _) = bob.next_row();
        assert_eq!(alice.receive(ack).acked, vec![1]);
        assert!(!alice.owed());
    }

    #[test]
    fn a_contact_cannot_make_us_hold_too_much() {
        let mut bob = Stream::default();
        let far = Chunk {
            seq: MAX_AHEAD + 2,
            ack: 0,
            sack: 0,
            message: 1,
            index: 0,
            count: 1,
            payload: vec![],
        };
        assert!(bob.receive(far).refused);
        let mut open = 0;
        for m in 0..(MAX_PARTIAL as u64 + 5) {
            let r = bob.receive(Chunk {
                seq: m + 1,
                ack: 0,
                sack: 0,
                message: m,
                index: 0,
                count: 2,
                payload: vec![1],
            });
            open += usize::from(!r.refused);
        }
        assert_eq!(open, MAX_PARTIAL);
    }

    #[test]
    fn selective_acknowledgements_spare_resends() {
        let (mut alice, mut bob) = (Stream::default(), Stream::default());
        alice
            .queue(1, 5, &vec![0; 3 * PAYLOAD_LEN])
            .expect("queued");
        let (first, _) = alice.next_row();
        let (_, _) = alice.next_row(); // lost
        let (third, _) = alice.next_row();
        bob.receive(first);
        bob.receive(third);
        let (ack, _) = bob.next_row();
        assert_eq!((ack.ack, ack.sack), (1, 0b10));
        assert_eq!(alice.receive(ack).acked.len(), 2);
        assert_eq!(alice.unacknowledged(), 1);
        let (again, new) = alice.next_row();
        assert_eq!((again.seq, new), (2, false));
    }
}
