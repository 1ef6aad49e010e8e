//! The agent's Redis front: parsing any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = shroud_client::resp::parse(data);
});
