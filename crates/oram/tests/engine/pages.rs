//! Pages ([`shroud_oram::pages`]): the latest bytes of every page a run of batches changed
//! rebuild exactly the engine's state, and a batch changes only the pages on its paths.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rand::RngExt;
use shroud_oram::pages::{Pages, TOP_PAGE};
use shroud_oram::{Config, Key, Op, Oram};

fn rebuild(saved: &Pages, key: &Key) -> Result<Oram, shroud_oram::Error> {
    Oram::from_pages(|name| saved.get(name).map(|p| &p[..]), key.clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// After any run of batches, the pages taken after each (merged, latest wins) rebuild an
    /// engine whose snapshot is the original's, byte for byte, in flat and recursive modes.
    #[test]
    fn pages_rebuild_the_state(
        seed in any::<u64>(),
        recursive in any::<bool>(),
        cached in 0u32..4,
        batches in 1usize..40,
        k in 1u32..4,
    ) {
        let config = Config {
            position_map: if recursive {
                crate::common::tiny_recursive()
            } else {
                shroud_oram::PositionMap::Flat
            },
            cached_levels: cached,
            max_batch: k,
            ..Config::new(600, 16)
        };
        let key = Key::generate(&mut crate::common::rng(seed));
        let mut rng = crate::common::rng(seed ^ 1);
        let mut oram = Oram::new(config, key.clone(), &mut rng).unwrap();
        let mut store = shroud_oram::MemoryStore::new();
        let mut saved: Pages = oram.changed_pages().unwrap();
        let all = saved.len();
        let mut model = BTreeMap::new();
        for v in 0..batches as u64 {
            let addrs: Vec<u64> = (0..k).map(|_| rng.random_range(0..600)).collect();
            let data: Vec<Vec<u8>> = addrs.iter().map(|&a| crate::common::block(16, a, v)).collect();
            let ops: Vec<Op<'_>> = addrs.iter().zip(&data).map(|(&a, d)| Op::Write(a, d)).collect();
            oram.run(&mut store, &ops, &mut rng).unwrap();
            for (a, d) in addrs.iter().zip(data) {
                model.insert(*a, d);
            }
            let changed = oram.changed_pages().unwrap();
            // The core, at most the regions of one bucket per cached level per access, and
            // at most one position-map page per access (per tree, in recursive mode).
            let bound = 1 + (k as usize) * (cached as usize * 5 + 1) * oram.trees().count();
            prop_assert!(changed.len() <= bound.min(all), "{} pages changed", changed.len());
            saved.extend(changed);
            if v % 7 == 3 {
                let back = rebuild(&saved, &key).unwrap();
                prop_assert_eq!(&*back.snapshot().unwrap(), &*oram.snapshot().unwrap());
            }
        }
        let mut back = rebuild(&saved, &key).unwrap();
        prop_assert_eq!(&*back.snapshot().unwrap(), &*oram.snapshot().unwrap());
        prop_assert!(back.changed_pages().unwrap().len() == 1, "nothing but the core to save");
        for (a, d) in model {
            back.run(&mut store, &[Op::Read(a)], &mut rng).unwrap();
            prop_assert_eq!(back.result(0), Some(&d[..]));
        }
    }
}

/// A missing page, a page of the wrong length, and a core that does not decode are refused.
#[test]
fn incomplete_or_altered_pages_are_refused() {
    let config = Config {
        cached_levels: 3,
        ..Config::new(4 * TOP_PAGE as u64, 16)
    };
    let key = Key::generate(&mut crate::common::rng(5));
    let mut oram = Oram::new(config, key.clone(), &mut crate::common::rng(6)).unwrap();
    let saved = oram.changed_pages().unwrap();
    assert!(saved.contains_key("top/3") && saved.contains_key("cache/0/6/4"));
    assert!(rebuild(&saved, &key).is_ok());
    for name in ["core", "top/3", "cache/0/6/4"] {
        let mut less = saved.clone();
        less.remove(name);
        assert!(rebuild(&less, &key).is_err(), "without {name}");
        let mut longer = saved.clone();
        longer.get_mut(name).unwrap().push(0);
        assert!(rebuild(&longer, &key).is_err(), "{name} longer");
    }
    let mut junk = saved.clone();
    junk.insert("core".into(), vec![0xff; 64].into());
    assert!(rebuild(&junk, &key).is_err());
}
