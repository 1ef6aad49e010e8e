//! One contact's two streams of chunks, as one end keeps them: what we send it (numbered,
//! kept until acknowledged, streamed without waiting for acknowledgements) and what it sends
//! us (acknowledged cumulatively, reassembled into messages). The rules are the ones
//! `super::plan`'s simulation checked (docs/mail-delivery.md "Spending queries and rows"):
//! - each row to the contact carries the next chunk not yet sent, else the oldest not yet
//!   acknowledged again (round robin over them), and always our acknowledgement;
//! - we owe the contact a row while we have chunks it has not acknowledged, or since a chunk
//!   of its arrived (a chunk seen again means it missed our acknowledgement);
//! - a chunk is taken once (by number), however often it comes; its content is decrypted
//!   only then (a chunk's Olm message is made once, when its message is queued, and sent
//!   again as it is: a message key opens it once).
//!
//! Everything here is saved in the write-ahead record with the rest of the courier's state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::chunk::{Chunk, Content, MAX_CHUNKS, OlmBytes};

/// Chunks past the first missing one we keep track of (a contact cannot make us hold more).
pub const MAX_AHEAD: u64 = 1024;
/// Messages being reassembled at once, per contact.
pub const MAX_PARTIAL: usize = 64;

/// A chunk we sent and the contact has not acknowledged.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Outgoing {
    seq: u64,
    /// The send it belongs to (the courier's number).
    ticket: u64,
    /// Its content, encrypted once.
    olm: OlmBytes,
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
    /// True if the chunk was refused (too far ahead, not opening, or not fitting its
    /// message).
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
    /// Queues the chunks of one send (`ticket`), their contents already encrypted, in order.
    pub fn queue(&mut self, ticket: u64, chunks: Vec<OlmBytes>) {
        for olm in chunks {
            self.last_seq += 1;
            self.out.push_back(Outgoing {
                seq: self.last_seq,
                ticket,
                olm,
            });
        }
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
        let chunk = Chunk {
            seq: pick.map_or(0, |o| o.seq),
            ack,
            sack,
            olm: pick.map(|o| o.olm.clone()),
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

    /// Takes a chunk from the contact (already authenticated under its pair key); `open`
    /// decrypts its content, and is called only for a chunk not taken before.
    pub fn receive(
        &mut self,
        c: &Chunk,
        open: impl FnOnce(&OlmBytes) -> Option<Content>,
    ) -> Received {
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
        let Some(olm) = c.olm.as_ref().filter(|_| c.seq > 0) else {
            return r;
        };
        self.ack_owed = true;
        if c.seq <= self.in_through || self.ahead.contains(&c.seq) {
            return r;
        }
        if c.seq > self.in_through + MAX_AHEAD {
            r.refused = true;
            return r;
        }
        let Some(content) = open(olm) else {
            r.refused = true;
            return r;
        };
        let fits = content.count <= MAX_CHUNKS;
        let partial_ok = match self.partial.get(&content.message) {
            Some(p) => p.count == content.count,
            None => self.partial.len() < MAX_PARTIAL || content.count <= 1,
        };
        if !fits || !partial_ok {
            r.refused = true;
            return r;
        }
        r.new = true;
        self.ahead.insert(c.seq);
        while self.ahead.remove(&(self.in_through + 1)) {
            self.in_through += 1;
        }
        // A session's confirmation: taken (and acknowledged), no message.
        if content.count == 0 {
            return r;
        }
        let p = self.partial.entry(content.message).or_default();
        p.count = content.count;
        p.parts.insert(content.index, content.payload);
        if p.parts.len() == usize::from(p.count)
            && let Some(p) = self.partial.remove(&content.message)
        {
            r.message = Some((content.message, p.parts.into_values().flatten().collect()));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::chunk::PAYLOAD_LEN;
    use proptest::prelude::*;

    /// Queues `body` with its contents as they are (these tests are about numbering and
    /// acknowledgements; encryption is the session's).
    fn queue(s: &mut Stream, ticket: u64, message: u64, body: &[u8]) {
        let chunks = Content::split(message, body)
            .expect("fits")
            .iter()
            .map(|c| OlmBytes {
                pre_key: false,
                bytes: c.to_bytes().expect("fits").to_vec(),
            })
            .collect();
        s.queue(ticket, chunks);
    }

    fn take(s: &mut Stream, c: &Chunk) -> Received {
        s.receive(c, |o| Content::from_bytes(&o.bytes))
    }

    /// One direction, Alice to Bob, through a channel that loses each row with probability
    /// `loss` (seeded): every message arrives whole, once, whatever is lost or sent again.
    fn deliver(seed: u64, loss: f64, bodies: &[Vec<u8>]) -> (Vec<Vec<u8>>, usize) {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (mut alice, mut bob) = (Stream::default(), Stream::default());
        for (i, b) in bodies.iter().enumerate() {
            queue(&mut alice, i as u64, 100 + i as u64, b);
        }
        let mut got = Vec::new();
        let mut rounds = 0;
        while alice.owed() || bob.owed() {
            rounds += 1;
            assert!(rounds < 10_000, "no progress");
            if alice.owed() {
                let (c, _) = alice.next_row();
                if !rng.random_bool(loss) {
                    let r = take(&mut bob, &c);
                    assert!(!r.refused);
                    got.extend(r.message.map(|(_, b)| b));
                }
            }
            if bob.owed() {
                let (ack, _) = bob.next_row();
                if !rng.random_bool(loss) {
                    take(&mut alice, &ack);
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
        queue(&mut alice, 1, 9, b"hi");
        let (c, new) = alice.next_row();
        assert!(new);
        assert_eq!(take(&mut bob, &c).message, Some((9, b"hi".to_vec())));
        let (_, _) = bob.next_row();
        assert!(!bob.owed());
        let again = bob.receive(&c, |_| {
            panic!("a chunk taken before is not decrypted again")
        });
        assert!(again.message.is_none() && !again.new);
        assert!(bob.owed(), "the writer missed the acknowledgement");
        let (ack, _) = bob.next_row();
        assert_eq!(take(&mut alice, &ack).acked, vec![1]);
        assert!(!alice.owed());
    }

    #[test]
    fn a_contact_cannot_make_us_hold_too_much() {
        let mut bob = Stream::default();
        let chunk = |seq: u64, message: u64, count: u16| {
            let content = Content {
                message,
                index: 0,
                count,
                payload: vec![1],
            };
            Chunk {
                seq,
                ack: 0,
                sack: 0,
                olm: Some(OlmBytes {
                    pre_key: false,
                    bytes: content.to_bytes().expect("fits").to_vec(),
                }),
            }
        };
        assert!(take(&mut bob, &chunk(MAX_AHEAD + 2, 1, 1)).refused);
        let mut open = 0;
        for m in 0..(MAX_PARTIAL as u64 + 5) {
            let r = take(&mut bob, &chunk(m + 1, m, 2));
            open += usize::from(!r.refused);
        }
        assert_eq!(open, MAX_PARTIAL);
        // A chunk that does not open is refused, and not taken: it may come again.
        let mut carol = Stream::default();
        let c = chunk(1, 1, 1);
        assert!(carol.receive(&c, |_| None).refused);
        assert!(take(&mut carol, &c).message.is_some());
        // A confirmation is taken and acknowledged, and is no message.
        let mut dave = Stream::default();
        let confirm = Chunk {
            olm: Some(OlmBytes {
                pre_key: false,
                bytes: Content::confirmation().to_bytes().expect("fits").to_vec(),
            }),
            ..c
        };
        let r = take(&mut dave, &confirm);
        assert!(r.new && r.message.is_none() && !r.refused);
        assert_eq!(dave.next_row().0.ack, 1);
    }

    #[test]
    fn selective_acknowledgements_spare_resends() {
        let (mut alice, mut bob) = (Stream::default(), Stream::default());
        queue(&mut alice, 1, 5, &vec![0; 3 * PAYLOAD_LEN]);
        let (first, _) = alice.next_row();
        let (_, _) = alice.next_row(); // lost
        let (third, _) = alice.next_row();
        take(&mut bob, &first);
        take(&mut bob, &third);
        let (ack, _) = bob.next_row();
        assert_eq!((ack.ack, ack.sack), (1, 0b10));
        assert_eq!(take(&mut alice, &ack).acked.len(), 2);
        assert_eq!(alice.unacknowledged(), 1);
        let (again, new) = alice.next_row();
        assert_eq!((again.seq, new), (2, false));
    }
}
