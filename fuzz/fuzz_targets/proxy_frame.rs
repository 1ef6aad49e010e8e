//! What the proxy decodes: a client's frame, and storage's responses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shroud_proto::proxy::ClientMsg;
use shroud_proto::{Limits, Response, decode};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_frame: 1 << 20,
    };
    let _ = decode::<ClientMsg>(data, limits);
    let _ = decode::<Response>(data, limits);
});
