//! Outbox rows, chunks and addresses at the client: checking and opening any bytes as a
//! row, parsing any bytes as a chunk or as a chunk's decrypted content, any string as an
//! address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shroud_client::mailbox::chunk::{Chunk, Content};
use shroud_client::mailbox::row::{self, OutboxKey, PairKey, Place};
use shroud_client::mailbox::Address;

fuzz_target!(|data: &[u8]| {
    let place = Place { round: 3, row: 8 };
    let _ = row::open(
        &OutboxKey::from_bytes([5; 32]),
        &PairKey::from_bytes([6; 32]),
        place,
        data,
    );
    let _ = Chunk::from_bytes(data);
    let _ = Content::from_bytes(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<Address>();
    }
});
