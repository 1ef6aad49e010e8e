//! What storage decodes from the network: a request frame, and inside a proxy's mail batch
//! the routing headers and sealed drain requests it opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shroud_proto::mail::{DRAIN_INFO, DrainRequest};
use shroud_proto::routing::RoutingKey;
use shroud_proto::{Limits, Request, decode};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_frame: 1 << 20,
    };
    let _ = decode::<Request>(data, limits);
    let key = RoutingKey::from_secret(&[7u8; 32]).expect("key");
    let _ = key.open(data);
    if let Ok((plain, _)) = key.open_request(DRAIN_INFO, data) {
        let _ = DrainRequest::from_bytes(&plain);
    }
    let _ = DrainRequest::from_bytes(data);
});
