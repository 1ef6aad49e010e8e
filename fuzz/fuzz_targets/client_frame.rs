//! What the client decodes from the proxy: a frame, and a PIR answer of any bytes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use shroud_pir::{Geometry, Reader};
use shroud_proto::proxy::ProxyMsg;
use shroud_proto::{Limits, decode};

fn reader() -> &'static Reader {
    static READER: OnceLock<Reader> = OnceLock::new();
    READER.get_or_init(|| {
        let g = Geometry::new(256).expect("geometry");
        Reader::new(g, &mut rand::rngs::StdRng::seed_from_u64(1))
    })
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_frame: 1 << 20,
    };
    let _ = decode::<ProxyMsg>(data, limits);
    let r = reader();
    let _ = r.decode_rows(0, 2, data);
    let mut answer = vec![0u8; r.geometry().answer_len()];
    for (a, d) in answer.iter_mut().zip(data.iter().cycle()) {
        *a = *d;
    }
    let _ = r.decode_rows(2, 2, &answer);
});
