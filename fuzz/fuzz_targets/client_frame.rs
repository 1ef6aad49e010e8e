//! What the client decodes from the proxy: a frame, a sealed answer, a drain reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shroud_proto::mail::DrainReply;
use shroud_proto::proxy::ProxyMsg;
use shroud_proto::{Limits, decode};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_frame: 1 << 20,
    };
    let _ = decode::<ProxyMsg>(data, limits);
    if let Some((&max, rest)) = data.split_first() {
        let _ = DrainReply::from_bytes(rest, u32::from(max % 8), 16);
    }
});
