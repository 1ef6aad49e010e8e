//! Bucket decoding at the client: after a few honest accesses, the buckets of the next path
//! come from the fuzzer (and so does a snapshot to restore).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;
use shroud_oram::{Config, Key, MemoryStore, Op, Oram};

fuzz_target!(|data: &[u8]| {
    let mut rng = StdRng::seed_from_u64(1);
    let key = [3u8; 32];
    let config = Config::new(16, 16);
    let Ok(mut oram) = Oram::new(config, Key::from_bytes(key), &mut rng) else {
        return;
    };
    let mut store = MemoryStore::new();
    for a in 0..4u64 {
        let block = [a as u8; 16];
        let _ = oram.run(&mut store, &[Op::Write(a, &block)], &mut rng);
    }
    if oram.begin(&[Op::Read(1)], &mut rng).is_err() {
        return;
    }
    if let Some(mut fetch) = oram.fetch() {
        let n = fetch.ids().len();
        let len = data.len() / n.max(1);
        for i in 0..n {
            let chunk = &data[(i * len).min(data.len())..((i + 1) * len).min(data.len())];
            let bucket = (chunk.first() != Some(&0)).then_some(chunk);
            let _ = fetch.supply(i, bucket);
        }
    }
    if oram.advance().is_err() {
        oram.abort();
    }
    let _ = Oram::restore(data, Key::from_bytes(key));
});
