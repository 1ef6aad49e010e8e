//! What storage decodes from the network: a request frame, and inside a round the sealed
//! outbox requests and writes it opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shroud_proto::board::{OUTBOX_INFO, OutboxRequest, OutboxWrite, WRITE_INFO};
use shroud_proto::routing::RoutingKey;
use shroud_proto::{Limits, Request, decode};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_frame: 1 << 20,
    };
    let _ = decode::<Request>(data, limits);
    let key = RoutingKey::from_secret(&[7u8; 32]).expect("key");
    if let Ok((plain, _)) = key.open_request(OUTBOX_INFO, data) {
        let _ = OutboxRequest::from_bytes(&plain);
    }
    if let Ok((plain, _)) = key.open_request(WRITE_INFO, data) {
        let _ = OutboxWrite::from_bytes(&plain, 2048);
    }
    let _ = OutboxRequest::from_bytes(data);
    let _ = OutboxWrite::from_bytes(data, data.len().saturating_sub(40));
});
