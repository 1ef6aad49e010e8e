//! States of earlier formats this one still opens, converted in place when they open.
//!
//! Version 5 differs from 6 only in `meta`: its shape predates Ring ORAM (no `mode`, no
//! `slot_len`), so it is read with the old layout and becomes a Path ORAM shape of the
//! same values. Every other record and page is unchanged.

use serde::Deserialize;
use shroud_proto::shape::Mode;
use shroud_proto::{Grant, Shape};
use zeroize::Zeroize;

use super::{Meta, VERSION};

/// The shape as version 5 saved it.
#[derive(Deserialize)]
struct ShapeV5 {
    capacity: u64,
    block_size: u32,
    bucket_slots: u32,
    cached_levels: u32,
    path_len: u32,
    bucket_len: u32,
    buckets: u64,
    slots_per_epoch: u32,
    epoch_ms: u32,
    round_epochs: u32,
    queries_per_round: u32,
    board_rows: u64,
    outbox_rows: u32,
    key_len: u32,
    query_len: u32,
    answer_len: u32,
    write_len: u32,
}

/// `meta` as version 5 saved it.
#[derive(Deserialize)]
pub(super) struct MetaV5 {
    version: u32,
    shape: ShapeV5,
    grant: Grant,
    oram_key: [u8; 32],
}

impl Drop for MetaV5 {
    fn drop(&mut self) {
        self.oram_key.zeroize();
    }
}

impl MetaV5 {
    /// Today's `meta` of the same store, if this one is a version 5 record.
    pub(super) fn upgrade(&self) -> Option<Meta> {
        let s = &self.shape;
        (self.version == 5).then(|| Meta {
            version: VERSION,
            shape: Shape {
                mode: Mode::Path,
                capacity: s.capacity,
                block_size: s.block_size,
                bucket_slots: s.bucket_slots,
                cached_levels: s.cached_levels,
                path_len: s.path_len,
                bucket_len: s.bucket_len,
                slot_len: 0,
                buckets: s.buckets,
                slots_per_epoch: s.slots_per_epoch,
                epoch_ms: s.epoch_ms,
                round_epochs: s.round_epochs,
                queries_per_round: s.queries_per_round,
                board_rows: s.board_rows,
                outbox_rows: s.outbox_rows,
                key_len: s.key_len,
                query_len: s.query_len,
                answer_len: s.answer_len,
                write_len: s.write_len,
            },
            grant: self.grant.clone(),
            oram_key: self.oram_key,
        })
    }
}
