//! Processes that hold keys (the agent's state key and ORAM key, storage's routing key, the
//! TLS keys) never write them to a core file: core dumps are off (RLIMIT_CORE 0) and the
//! process is not dumpable (PR_SET_DUMPABLE 0, which also keeps other processes of the same
//! user from attaching a debugger to read its memory). Issue 12, finding 8.

/// Turns core dumps off for this process; logs (does not fail) where the OS refuses.
pub fn no_core_dumps() {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    let off = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = setrlimit(Resource::Core, off) {
        tracing::warn!("could not turn core dumps off (RLIMIT_CORE): {e}");
    }
    if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        tracing::warn!("could not make the process undumpable (PR_SET_DUMPABLE): {e}");
    }
}
