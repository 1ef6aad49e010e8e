//! The hot path allocates nothing: once every bucket exists on the store, an access through
//! the synchronous driver makes no heap allocation at all, in either position-map mode.

// The one place with unsafe code: counting allocations needs a global allocator, and
// GlobalAlloc is an unsafe trait. Every block forwards to the system allocator unchanged.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use shroud_oram::{Config, Op};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_accesses_do_not_allocate() {
    for (config, helper) in [
        (
            Config {
                cached_levels: 3,
                ..Config::new(1 << 12, 64)
            },
            false,
        ),
        (
            Config {
                max_batch: 4,
                position_map: common::tiny_recursive(),
                ..Config::new(1 << 10, 32)
            },
            false,
        ),
        // The helper thread's channels and groups are allocated when it starts and in the
        // first rounds, not per bucket (blocks of 1 KiB, so that buckets go to it).
        (Config::new(1 << 12, 1024), true),
        (
            Config {
                max_batch: 4,
                position_map: common::tiny_recursive(),
                ..Config::new(1 << 10, 1024)
            },
            true,
        ),
    ] {
        let (mut oram, mut store, mut rng) = common::oram(config, 31);
        oram.set_helper(helper).unwrap();
        oram.format(|id, b| {
            store.insert(id, b.to_vec());
            Ok::<(), Infallible>(())
        })
        .unwrap();
        let data = vec![7u8; config.block_size as usize];
        let k = config.max_batch as usize;
        let mut ops = vec![Op::Dummy; k];
        let mut run = |range: std::ops::Range<u64>| {
            for i in range {
                let a = i.wrapping_mul(2_654_435_761) % config.capacity;
                ops[0] = if i.is_multiple_of(2) {
                    Op::Write(a, &data)
                } else {
                    Op::Read(a)
                };
                oram.run(&mut store, &ops, &mut rng).unwrap();
            }
        };
        run(0..2_000);
        let before = ALLOCS.load(Ordering::Relaxed);
        run(2_000..4_000);
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(
            allocs, 0,
            "{allocs} allocations in 2000 accesses (helper {helper})"
        );
        assert_eq!(oram.helper_opened() > 0, helper);
    }
}
