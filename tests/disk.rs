//! Issue 14, "The client's own disk": a `shroud agent` process writes at most 64 KiB to its
//! disk per epoch at the default store (N = 2^14 blocks of 1 KiB, 8 cached levels), in
//! Path ORAM and in Ring ORAM, idle or
//! with every slot busy with SETs, as [`shroud_lab::bench::disk`] measures it from
//! `/proc/PID/io` (everything the process made the kernel write), over 100 epochs each.
//! Rewriting the whole engine state every epoch, as the client did before, wrote about
//! 1.2 MB an epoch.

use shroud_proto::Shape;

/// The budget: bytes written to the client's disk per epoch.
const BUDGET: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_writes_at_most_64_kib_an_epoch() {
    for shape in [
        Shape::default(),
        Shape::ring(1 << 14, 1024, 8).expect("the Ring ORAM store"),
    ] {
        // On the target directory's file system, not a tmpfs that would count nothing.
        let d = shroud_lab::bench::disk::measure(
            std::path::Path::new(env!("CARGO_BIN_EXE_shroud")),
            shape,
            100,
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        )
        .await
        .expect("measured");
        println!("{d:?}");
        assert!(d.sets >= 25, "not busy: {} SETs", d.sets);
        assert!(d.idle_per_epoch <= BUDGET, "idle: {d:?}");
        assert!(d.busy_per_epoch <= BUDGET, "busy: {d:?}");
    }
}
