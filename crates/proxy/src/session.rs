//! One client's session as a state machine without I/O: frames in, decisions out.
//!
//! The tokio driver ([`crate::connection`]) owns the socket, the clocks and the shared epoch;
//! this owns every rule of the client-proxy protocol, so that each rule is tested here
//! without sockets or clocks:
//! - the first frame is a hello with our magic and version ([`Hello::check`]); a second
//!   hello closes the session;
//! - slots and mail need a registration, and a slot must carry the registered grant;
//! - a slot has exactly the shape's sizes and stays inside the store;
//! - only a shape with mail takes mail: one PIR key per connection, of the shape's key size,
//!   before any round frame; a round frame has exactly the shape's write and query sizes; at
//!   most one outbox request per connection (each may make storage check work and write);
//! - a client's K slots enter an epoch together, when the K-th has arrived (frames that
//!   straddle an epoch's boundary would otherwise split a turn across two batches, which
//!   storage would see); at most K slots per epoch and one round frame per round;
//! - any malformed or oversized frame closes the session with a typed [`ErrorCode`].

use shroud_proto::board::{OUTBOX_REQUEST_LEN, PirBytes};
use shroud_proto::proxy::{ClientMsg, ProxyMsg, Reads, RoundFrame, Slot};
use shroud_proto::sealed::Sealed;
use shroud_proto::{Difficulty, ErrorCode, Geometry, Grant, Hello, Limits, Shape, Work, decode};
use shroud_proto::{Mode, SlotRef};

/// What a session asks its driver to do with a frame that passed every rule.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// Answer with the proxy's counters.
    Stats,
    /// Create (or confirm) this store at storage with the shape's geometry, then report back
    /// with [`Session::on_registered`].
    Register(Grant, Geometry, Work),
    /// A slot was taken. Empty until it is the K-th of the client's turn, then the whole
    /// turn, for the open epoch: admit it with [`Session::admit_slots`] while holding the
    /// epoch, so that the count and the epoch cannot part.
    Slots(Vec<Slot>),
    /// Keep this connection's PIR key at storage, then report back with
    /// [`Session::on_key_kept`].
    ReaderKey(PirBytes),
    /// A round frame for the open epoch; admit it with [`Session::admit_round`].
    Round(RoundFrame),
    /// Forward a sealed outbox request to storage and its sealed reply back.
    Outbox(Sealed),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Hello,
    Open,
    Closed,
}

/// One client's session.
///
/// # Security
/// Every frame from a client is untrusted: it is decoded under a frame limit derived from
/// the shape, and anything that breaks a rule ends the session with a typed error. The
/// session never lets one client put more than its K slots (and one round frame) into an
/// epoch, which is what keeps every client's share of a batch the same size.
#[derive(Debug)]
pub struct Session {
    shape: Shape,
    limits: Limits,
    phase: Phase,
    registered: Option<Grant>,
    /// A registration was asked for: one per connection (a connection looping `Register`
    /// would make storage create stores, with an fsync each, as fast as it can send).
    registering: bool,
    /// The slots of the turn so far (fewer than K).
    turn: Vec<Slot>,
    slot_epoch: Option<u64>,
    slots_in_epoch: u32,
    /// A PIR key was sent (one per connection), and storage kept it.
    key_sent: bool,
    key_kept: bool,
    /// An outbox request was sent (one per connection).
    outbox_sent: bool,
    /// The last round a frame was taken for.
    round_taken: Option<u64>,
}

/// The largest frame a client may send: one slot, PIR key or round frame of this shape,
/// with room to spare.
pub fn client_limits(shape: &Shape) -> Limits {
    // A slot's writes, and its reads: bucket ids, or slot ids (10 bytes each).
    let slot = shape.max_slot_writes() * (16 + 8 + shape.bucket_len as usize)
        + (shape.path_len as usize + shape.max_slot_reads()) * 10;
    let round = shape.write_len as usize
        + shape.queries_per_round as usize * (8 + shape.query_len as usize);
    Limits {
        max_frame: slot.max(round).max(shape.key_len as usize) + 4096,
    }
}

/// True if `slot` has the shape's sizes and stays inside the store: in Path ORAM exactly
/// a path written and a path read; in Ring ORAM a path's slots read, and writes and
/// maintenance reads within the shape's bounds (their exact counts follow the client's
/// access count, which the proxy does not know).
fn slot_fits(slot: &Slot, shape: &Shape) -> bool {
    let n = shape.path_len as usize;
    let bucket = |b: u64| b < shape.buckets;
    let in_store = |s: &SlotRef| bucket(s.bucket) && u32::from(s.slot) < slots_per_bucket(shape);
    let writes_fit = slot
        .writes
        .iter()
        .all(|w| w.data.len() == shape.bucket_len as usize && bucket(w.bucket));
    writes_fit
        && match (&slot.reads, shape.mode) {
            (Reads::Buckets(reads), Mode::Path) => {
                slot.writes.len() == n && reads.len() == n && reads.iter().all(|&b| bucket(b))
            }
            (Reads::Slots { online, each }, Mode::Ring { .. }) => {
                slot.write != slot.writes.is_empty()
                    && slot.writes.len() <= shape.max_slot_writes()
                    && online.len() == n
                    && each.len() <= shape.max_slot_reads()
                    && online.iter().chain(each).all(in_store)
            }
            _ => false,
        }
}

/// Slots per Ring ORAM bucket, Z + S (0 in Path ORAM).
fn slots_per_bucket(shape: &Shape) -> u32 {
    match shape.mode {
        Mode::Ring { dummy_slots, .. } => shape.bucket_slots + dummy_slots,
        Mode::Path => 0,
    }
}

/// True if `round` has exactly the shape's counts and sizes.
fn round_fits(round: &RoundFrame, shape: &Shape) -> bool {
    shape.mail()
        && round.write.0.len() == shape.write_len as usize
        && round.queries.len() == shape.queries_per_round as usize
        && round
            .queries
            .iter()
            .all(|q| q.0.len() == shape.query_len as usize)
}

impl Session {
    /// A session that waits for its hello.
    pub fn new(shape: Shape) -> Self {
        Session {
            shape,
            limits: client_limits(&shape),
            phase: Phase::Hello,
            registered: None,
            registering: false,
            turn: Vec::new(),
            slot_epoch: None,
            slots_in_epoch: 0,
            key_sent: false,
            key_kept: false,
            outbox_sent: false,
            round_taken: None,
        }
    }

    /// The frame limit the driver's codec must enforce.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// True once a store is registered.
    pub fn is_registered(&self) -> bool {
        self.registered.is_some()
    }

    fn close<T>(&mut self, code: ErrorCode) -> Result<T, ErrorCode> {
        self.phase = Phase::Closed;
        Err(code)
    }

    /// The first frame: the proxy's hello (with its shape) to send, or the code to refuse
    /// with before closing.
    pub fn on_hello(
        &mut self,
        frame: &[u8],
        difficulty: Difficulty,
    ) -> Result<ProxyMsg, ErrorCode> {
        if self.phase != Phase::Hello {
            return self.close(ErrorCode::UnexpectedHello);
        }
        let checked = match decode::<ClientMsg>(frame, self.limits) {
            Ok(ClientMsg::Hello(h)) => h.check(),
            Ok(_) => Err(ErrorCode::HelloRequired),
            Err(_) => Err(ErrorCode::Malformed),
        };
        match checked {
            Ok(()) => {
                self.phase = Phase::Open;
                Ok(ProxyMsg::Hello(Hello::current(), self.shape, difficulty))
            }
            Err(code) => self.close(code),
        }
    }

    /// A frame the codec refused as larger than [`Session::limits`]: the code to close with.
    pub fn on_oversized(&mut self) -> ErrorCode {
        self.phase = Phase::Closed;
        ErrorCode::TooLarge
    }

    /// A frame after the hello: what to do with it, or the code to close the session with.
    pub fn on_frame(&mut self, frame: &[u8]) -> Result<Input, ErrorCode> {
        if self.phase != Phase::Open {
            let code = if self.phase == Phase::Hello {
                ErrorCode::HelloRequired
            } else {
                ErrorCode::Malformed
            };
            return self.close(code);
        }
        let Ok(msg) = decode::<ClientMsg>(frame, self.limits) else {
            return self.close(ErrorCode::Malformed);
        };
        match msg {
            ClientMsg::Hello(_) => self.close(ErrorCode::UnexpectedHello),
            ClientMsg::Stats => Ok(Input::Stats),
            ClientMsg::Register(..) if self.registering => self.close(ErrorCode::Unauthorized),
            ClientMsg::Register(grant, work) => {
                self.registering = true;
                Ok(Input::Register(
                    grant,
                    Geometry {
                        bucket_len: self.shape.bucket_len,
                        buckets: self.shape.buckets,
                    },
                    work,
                ))
            }
            ClientMsg::Slot(slot) => {
                if self.registered.as_ref() != Some(&slot.grant) {
                    return self.close(ErrorCode::Unauthorized);
                }
                if !slot_fits(&slot, &self.shape) {
                    return self.close(ErrorCode::WrongShape);
                }
                self.turn.push(slot);
                if self.turn.len() < self.shape.slots_per_epoch as usize {
                    return Ok(Input::Slots(Vec::new()));
                }
                Ok(Input::Slots(std::mem::take(&mut self.turn)))
            }
            ClientMsg::ReaderKey(key) => {
                if self.registered.is_none() || self.key_sent {
                    return self.close(ErrorCode::Unauthorized);
                }
                if !self.shape.mail() || key.0.len() != self.shape.key_len as usize {
                    return self.close(ErrorCode::WrongShape);
                }
                self.key_sent = true;
                Ok(Input::ReaderKey(key))
            }
            ClientMsg::Round(round) => {
                if self.registered.is_none() || !self.key_kept {
                    return self.close(ErrorCode::Unauthorized);
                }
                if !round_fits(&round, &self.shape) {
                    return self.close(ErrorCode::WrongShape);
                }
                Ok(Input::Round(round))
            }
            ClientMsg::Outbox(sealed) => {
                if self.outbox_sent {
                    return self.close(ErrorCode::Unauthorized);
                }
                if !self.shape.mail() || sealed.0.len() != OUTBOX_REQUEST_LEN {
                    return self.close(ErrorCode::WrongShape);
                }
                self.outbox_sent = true;
                Ok(Input::Outbox(sealed))
            }
        }
    }

    /// Storage keeps this connection's PIR key: the reply to send. Round frames are taken
    /// from now on.
    pub fn on_key_kept(&mut self) -> ProxyMsg {
        self.key_kept = true;
        ProxyMsg::ReaderKept
    }

    /// True once storage keeps this connection's PIR key (it must forget it when the
    /// connection ends).
    pub fn has_key(&self) -> bool {
        self.key_kept
    }

    /// Storage created (or confirmed) `grant`'s store: the reply to send. Returns also
    /// whether this is the session's first registration (a new client for the counters).
    pub fn on_registered(&mut self, grant: Grant) -> (ProxyMsg, bool) {
        let first = self.registered.is_none();
        self.registered = Some(grant);
        (ProxyMsg::Registered, first)
    }

    /// Admits `n` slots into epoch `epoch`, or refuses them if the epoch would hold more
    /// than K of this client's.
    pub fn admit_slots(&mut self, epoch: u64, n: usize) -> Result<(), ErrorCode> {
        if self.slot_epoch != Some(epoch) {
            (self.slot_epoch, self.slots_in_epoch) = (Some(epoch), 0);
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        if self.slots_in_epoch.saturating_add(n) > self.shape.slots_per_epoch {
            return self.close(ErrorCode::TooManySlots);
        }
        self.slots_in_epoch += n;
        Ok(())
    }

    /// Admits a round frame for `round` into epoch `epoch`: refused (the session stays open:
    /// a client that fell behind sends its frame late) outside that round's window or for a
    /// second frame in one round.
    pub fn admit_round(&mut self, epoch: u64, round: u64) -> Result<(), ErrorCode> {
        if self.shape.round_of(epoch) != Some(round) || self.round_taken == Some(round) {
            return Err(ErrorCode::OutOfRound);
        }
        self.round_taken = Some(round);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shroud_proto::proxy::SlotWrite;
    use shroud_proto::{Capability, StoreId, encode};

    const K: u32 = 2;

    fn shape(mail: bool) -> Shape {
        let s = Shape::new(64, 32, 1)
            .and_then(|s| s.with_schedule(K, 100))
            .expect("shape");
        if mail {
            s.with_board(256, 2).expect("board").with_mail(3, 2)
        } else {
            s.with_mail(0, 0)
        }
    }

    fn frame(msg: &ClientMsg) -> Vec<u8> {
        encode(msg, Limits::default()).expect("encode")
    }

    fn grant(n: u8) -> Grant {
        Grant {
            store: StoreId([n; 16]),
            capability: Capability([n; 32]),
        }
    }

    fn slot(shape: &Shape, grant: Grant) -> Slot {
        let n = shape.path_len as usize;
        Slot {
            seq: 0,
            grant,
            write: true,
            writes: vec![
                SlotWrite {
                    bucket: 0,
                    data: vec![0; shape.bucket_len as usize],
                };
                n
            ],
            reads: Reads::Buckets(vec![0; n]),
        }
    }

    fn round(shape: &Shape) -> RoundFrame {
        RoundFrame {
            seq: 0,
            round: 0,
            write: Sealed(vec![0; shape.write_len as usize]),
            queries: vec![
                PirBytes(vec![0; shape.query_len as usize]);
                shape.queries_per_round as usize
            ],
        }
    }

    fn key(shape: &Shape) -> ClientMsg {
        ClientMsg::ReaderKey(PirBytes(vec![0; shape.key_len as usize]))
    }

    /// A registered session whose key storage kept.
    fn keyed(shape: Shape) -> Session {
        let mut s = open(shape);
        assert_eq!(
            s.on_frame(&frame(&key(&shape))),
            Ok(Input::ReaderKey(PirBytes(vec![0; shape.key_len as usize])))
        );
        assert_eq!(s.on_key_kept(), ProxyMsg::ReaderKept);
        s
    }

    /// A session past its hello and registered with `grant(1)`.
    fn open(shape: Shape) -> Session {
        let mut s = Session::new(shape);
        s.on_hello(&frame(&ClientMsg::Hello(Hello::current())), Difficulty(3))
            .expect("hello");
        match s.on_frame(&frame(&ClientMsg::Register(grant(1), Work(5)))) {
            Ok(Input::Register(g, geometry, work)) => {
                assert_eq!(geometry.buckets, shape.buckets);
                assert_eq!(geometry.bucket_len, shape.bucket_len);
                assert_eq!(work, Work(5), "the client's work is forwarded as it came");
                assert_eq!(s.on_registered(g), (ProxyMsg::Registered, true));
            }
            other => panic!("register: {other:?}"),
        }
        s
    }

    #[test]
    fn hello_answers_with_the_shape() {
        let mut s = Session::new(shape(true));
        let reply = s.on_hello(&frame(&ClientMsg::Hello(Hello::current())), Difficulty(3));
        assert_eq!(
            reply,
            Ok(ProxyMsg::Hello(
                Hello::current(),
                shape(true),
                Difficulty(3)
            ))
        );
    }

    #[test]
    fn first_frame_must_be_a_hello() {
        let mut s = Session::new(shape(false));
        assert_eq!(
            s.on_hello(&frame(&ClientMsg::Stats), Difficulty(3)),
            Err(ErrorCode::HelloRequired)
        );
        let mut s = Session::new(shape(false));
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Stats)),
            Err(ErrorCode::HelloRequired)
        );
    }

    #[test]
    fn foreign_magic_and_other_versions_are_refused() {
        let mut h = Hello::current();
        h.magic[0] ^= 1;
        let mut s = Session::new(shape(false));
        assert_eq!(
            s.on_hello(&frame(&ClientMsg::Hello(h)), Difficulty(3)),
            Err(ErrorCode::UnexpectedHello)
        );
        let mut h = Hello::current();
        h.version += 1;
        let mut s = Session::new(shape(false));
        assert_eq!(
            s.on_hello(&frame(&ClientMsg::Hello(h)), Difficulty(3)),
            Err(ErrorCode::UnsupportedVersion)
        );
    }

    #[test]
    fn malformed_frames_close_the_session() {
        let mut s = Session::new(shape(false));
        assert_eq!(
            s.on_hello(&[0xff; 7], Difficulty(3)),
            Err(ErrorCode::Malformed)
        );
        let mut s = open(shape(false));
        assert_eq!(s.on_frame(&[1, 2, 3]), Err(ErrorCode::Malformed));
        // Closed for good: even a good frame is refused now.
        assert!(s.on_frame(&frame(&ClientMsg::Stats)).is_err());
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut s = open(shape(false));
        let mut f = frame(&ClientMsg::Stats);
        f.push(0);
        assert_eq!(s.on_frame(&f), Err(ErrorCode::Malformed));
    }

    #[test]
    fn oversized_frames_close_with_too_large() {
        let mut s = open(shape(false));
        assert_eq!(s.on_oversized(), ErrorCode::TooLarge);
        assert!(s.on_frame(&frame(&ClientMsg::Stats)).is_err());
    }

    #[test]
    fn a_second_hello_is_refused() {
        let mut s = open(shape(false));
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Hello(Hello::current()))),
            Err(ErrorCode::UnexpectedHello)
        );
        let mut s = open(shape(false));
        assert_eq!(
            s.on_hello(&frame(&ClientMsg::Hello(Hello::current())), Difficulty(3)),
            Err(ErrorCode::UnexpectedHello)
        );
    }

    #[test]
    fn stats_need_only_a_hello() {
        let mut s = Session::new(shape(false));
        s.on_hello(&frame(&ClientMsg::Hello(Hello::current())), Difficulty(3))
            .expect("hello");
        assert_eq!(s.on_frame(&frame(&ClientMsg::Stats)), Ok(Input::Stats));
        assert!(!s.is_registered());
    }

    #[test]
    fn slots_need_a_registration() {
        let sh = shape(false);
        let mut s = Session::new(sh);
        s.on_hello(&frame(&ClientMsg::Hello(Hello::current())), Difficulty(3))
            .expect("hello");
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Slot(slot(&sh, grant(1))))),
            Err(ErrorCode::Unauthorized)
        );
    }

    #[test]
    fn a_slot_must_carry_the_registered_grant() {
        let sh = shape(false);
        let mut s = open(sh);
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Slot(slot(&sh, grant(2))))),
            Err(ErrorCode::Unauthorized)
        );
    }

    #[test]
    fn one_registration_per_connection() {
        let mut s = open(shape(false));
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Register(grant(2), Work(5))))
                .err(),
            Some(ErrorCode::Unauthorized)
        );
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Stats)).err(),
            Some(ErrorCode::Malformed),
            "closed"
        );
    }

    #[test]
    fn a_slot_must_have_the_shape() {
        let sh = shape(false);
        let good = slot(&sh, grant(1));
        let n = sh.path_len as usize;
        let with_reads = |reads| Slot {
            reads,
            ..good.clone()
        };
        let short_path = with_reads(Reads::Buckets(vec![0; n - 1]));
        let mut short_bucket = good.clone();
        short_bucket.writes[0].data.pop();
        let past_the_end = with_reads(Reads::Buckets(vec![sh.buckets; n]));
        let mut write_past_the_end = good.clone();
        write_past_the_end.writes[0].bucket = sh.buckets;
        let ring_reads = with_reads(Reads::Slots {
            online: vec![SlotRef { bucket: 0, slot: 0 }; n],
            each: Vec::new(),
        });
        for bad in [
            short_path,
            short_bucket,
            past_the_end,
            write_past_the_end,
            ring_reads,
        ] {
            let mut s = open(sh);
            assert_eq!(
                s.on_frame(&frame(&ClientMsg::Slot(bad))),
                Err(ErrorCode::WrongShape)
            );
        }
        let mut s = open(sh);
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Slot(good.clone()))),
            Ok(Input::Slots(Vec::new()))
        );
    }

    #[test]
    fn a_ring_slot_must_have_the_shape() {
        let sh = Shape::ring(1 << 10, 64, 2)
            .and_then(|s| s.with_schedule(K, 100))
            .expect("ring shape")
            .with_mail(0, 0);
        let n = sh.path_len as usize;
        let slots = sh.ring_config().expect("ring").slots() as u16;
        let at = |bucket, slot| SlotRef { bucket, slot };
        let bucket = |b| SlotWrite {
            bucket: b,
            data: vec![0; sh.bucket_len as usize],
        };
        let ring = |writes: Vec<SlotWrite>, online: Vec<SlotRef>, each: Vec<SlotRef>| Slot {
            seq: 1,
            grant: grant(1),
            write: !writes.is_empty(),
            writes,
            reads: Reads::Slots { online, each },
        };
        let online = vec![at(3, 0); n];
        let most = sh.max_slot_writes();
        let z = sh.bucket_slots as usize;
        let good = [
            ring(Vec::new(), online.clone(), Vec::new()),
            ring(
                vec![bucket(1); most],
                online.clone(),
                vec![at(4, 1); most * z],
            ),
        ];
        let mut flagged = good[0].clone();
        flagged.write = true;
        let bad = [
            ring(Vec::new(), vec![at(3, 0); n + 1], Vec::new()),
            ring(Vec::new(), vec![at(3, slots); n], Vec::new()),
            ring(Vec::new(), vec![at(sh.buckets, 0); n], Vec::new()),
            ring(vec![bucket(1); most + 1], online.clone(), Vec::new()),
            ring(Vec::new(), online.clone(), vec![at(4, 1); most * z + 1]),
            ring(vec![bucket(sh.buckets)], online.clone(), Vec::new()),
            flagged,
            Slot {
                reads: Reads::Buckets(vec![0; n]),
                ..good[0].clone()
            },
        ];
        for slot in good {
            let mut s = open(sh);
            assert!(s.on_frame(&frame(&ClientMsg::Slot(slot))).is_ok());
        }
        for slot in bad {
            let mut s = open(sh);
            assert_eq!(
                s.on_frame(&frame(&ClientMsg::Slot(slot))),
                Err(ErrorCode::WrongShape)
            );
        }
        let biggest = ring(vec![bucket(1); most], online, vec![at(4, 1); most * z]);
        assert!(frame(&ClientMsg::Slot(biggest)).len() <= client_limits(&sh).max_frame);
    }

    #[test]
    fn a_turn_is_handed_over_whole() {
        let sh = shape(false);
        let mut s = open(sh);
        for round in 0..3u64 {
            for i in 0..u64::from(K) {
                let mut one = slot(&sh, grant(1));
                one.seq = round * 10 + i;
                let want = if i + 1 < u64::from(K) {
                    Vec::new()
                } else {
                    (0..u64::from(K))
                        .map(|j| {
                            let mut x = slot(&sh, grant(1));
                            x.seq = round * 10 + j;
                            x
                        })
                        .collect()
                };
                assert_eq!(
                    s.on_frame(&frame(&ClientMsg::Slot(one))),
                    Ok(Input::Slots(want))
                );
            }
        }
    }

    #[test]
    fn at_most_k_slots_per_epoch() {
        let mut s = open(shape(false));
        assert_eq!(s.admit_slots(7, K as usize), Ok(()));
        assert_eq!(s.admit_slots(7, 1), Err(ErrorCode::TooManySlots));
        let mut s = open(shape(false));
        assert_eq!(
            s.admit_slots(7, K as usize + 1),
            Err(ErrorCode::TooManySlots)
        );
    }

    #[test]
    fn the_count_starts_again_every_epoch() {
        let mut s = open(shape(false));
        for epoch in 0..5 {
            assert_eq!(s.admit_slots(epoch, K as usize), Ok(()));
        }
    }

    #[test]
    fn a_key_needs_a_registration_and_comes_once() {
        let sh = shape(true);
        let mut s = Session::new(sh);
        s.on_hello(&frame(&ClientMsg::Hello(Hello::current())), Difficulty(3))
            .expect("hello");
        assert_eq!(s.on_frame(&frame(&key(&sh))), Err(ErrorCode::Unauthorized));
        let mut s = keyed(sh);
        assert!(s.has_key());
        assert_eq!(s.on_frame(&frame(&key(&sh))), Err(ErrorCode::Unauthorized));
        let mut short = open(sh);
        assert_eq!(
            short.on_frame(&frame(&ClientMsg::ReaderKey(PirBytes(vec![0; 9])))),
            Err(ErrorCode::WrongShape)
        );
        let mut none = open(shape(false));
        assert_eq!(
            none.on_frame(&frame(&ClientMsg::ReaderKey(PirBytes(vec![0; 9])))),
            Err(ErrorCode::WrongShape),
            "no mail, no key"
        );
    }

    #[test]
    fn a_round_needs_a_kept_key() {
        let sh = shape(true);
        let mut s = open(sh);
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Round(round(&sh)))),
            Err(ErrorCode::Unauthorized)
        );
        let mut s = open(sh);
        s.on_frame(&frame(&key(&sh))).expect("key");
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Round(round(&sh)))),
            Err(ErrorCode::Unauthorized),
            "sent but not kept yet"
        );
    }

    #[test]
    fn a_round_must_have_the_shape() {
        let sh = shape(true);
        let mut too_many = round(&sh);
        too_many.queries.push(too_many.queries[0].clone());
        let mut short_query = round(&sh);
        short_query.queries[0].0.pop();
        let mut short_write = round(&sh);
        short_write.write.0.pop();
        for bad in [too_many, short_query, short_write] {
            let mut s = keyed(sh);
            assert_eq!(
                s.on_frame(&frame(&ClientMsg::Round(bad))),
                Err(ErrorCode::WrongShape)
            );
        }
        let mut s = keyed(sh);
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Round(round(&sh)))),
            Ok(Input::Round(round(&sh)))
        );
    }

    #[test]
    fn one_round_frame_per_round_and_only_in_its_window() {
        // Rounds of 3 epochs, frames taken in the first two.
        let mut s = keyed(shape(true));
        assert_eq!(s.admit_round(3, 1), Ok(()));
        assert_eq!(s.admit_round(4, 1), Err(ErrorCode::OutOfRound), "twice");
        assert_eq!(s.admit_round(5, 1), Err(ErrorCode::OutOfRound));
        assert_eq!(s.admit_round(7, 2), Ok(()), "an epoch late");
        assert_eq!(
            s.admit_round(9, 2),
            Err(ErrorCode::OutOfRound),
            "a round late"
        );
        assert_eq!(
            s.admit_round(9, 4),
            Err(ErrorCode::OutOfRound),
            "a round early"
        );
        assert_eq!(s.admit_round(9, 3), Ok(()));
        // Refused, not closed: the next frame is still taken.
        assert_eq!(s.on_frame(&frame(&ClientMsg::Stats)), Ok(Input::Stats));
    }

    #[test]
    fn one_outbox_request_per_connection_of_the_right_size() {
        let sh = shape(true);
        let mut s = Session::new(sh);
        s.on_hello(&frame(&ClientMsg::Hello(Hello::current())), Difficulty(3))
            .expect("hello");
        let req = Sealed(vec![1; OUTBOX_REQUEST_LEN]);
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Outbox(req.clone()))),
            Ok(Input::Outbox(req.clone())),
            "no registration needed"
        );
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Outbox(req))),
            Err(ErrorCode::Unauthorized)
        );
        let mut s = open(sh);
        assert_eq!(
            s.on_frame(&frame(&ClientMsg::Outbox(Sealed(vec![1; 3])))),
            Err(ErrorCode::WrongShape)
        );
    }

    #[test]
    fn the_frame_limit_fits_a_slot_a_key_and_a_round() {
        let sh = shape(true);
        let limits = client_limits(&sh);
        assert!(frame(&ClientMsg::Slot(slot(&sh, grant(1)))).len() <= limits.max_frame);
        assert!(frame(&ClientMsg::Round(round(&sh))).len() <= limits.max_frame);
        assert!(frame(&key(&sh)).len() <= limits.max_frame);
    }
}
