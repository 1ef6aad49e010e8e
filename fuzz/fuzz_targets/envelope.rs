//! Envelopes and addresses at the client: opening any 1 KiB (or other) bytes, parsing any
//! address string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shroud_client::mailbox::{Address, Identity, envelope};

fuzz_target!(|data: &[u8]| {
    let me = Identity::from_secret(&[5u8; 48]).expect("identity");
    let friend = Identity::from_secret(&[6u8; 48]).expect("identity").address();
    let _ = envelope::open(data, &me, &[friend]);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<Address>();
    }
});
