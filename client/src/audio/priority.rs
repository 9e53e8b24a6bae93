//! Scheduling priority for the threads a call's timing depends on (network, playout,
//! capture), as voice and audio software does (PipeWire, JACK, browsers' audio threads):
//! on a busy machine a frame that waits for a core arrives late and is concealed, however
//! good the network. Each such thread asks for a low real-time priority (`SCHED_FIFO` 10)
//! when it starts; where that is not allowed (no `CAP_SYS_NICE`, `RLIMIT_RTPRIO` 0) it
//! asks for a higher nice level (-10) instead, and failing that it runs as it is. The
//! threads block between packets and blocks, so they use little CPU, and the kernel's
//! real-time throttling (95 % by default) bounds them even if one misbehaved.
//!
//! `KV_REALTIME=0` in the environment turns it off.

/// What the current thread got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// `SCHED_FIFO` at [`FIFO_PRIORITY`].
    RealTime,
    /// Normal scheduling at nice [`NICE`].
    Raised,
    /// Unchanged (not allowed, or turned off).
    Unchanged,
}

/// The real-time priority asked for: low, below the sound server's own threads (PipeWire
/// uses 20 to 88), above every normal thread.
pub const FIFO_PRIORITY: libc::c_int = 10;
/// The nice level asked for when real time is not allowed.
pub const NICE: libc::c_int = -10;

/// Raises the calling thread's priority as far as allowed (see the module docs).
pub fn raise_current_thread() -> Priority {
    if std::env::var("KV_REALTIME").is_ok_and(|v| v == "0") {
        return Priority::Unchanged;
    }
    let param = libc::sched_param {
        sched_priority: FIFO_PRIORITY,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param we own.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        return Priority::RealTime;
    }
    // SAFETY: gettid has no preconditions. On Linux setpriority(PRIO_PROCESS, tid) sets
    // the nice level of that one thread.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    // SAFETY: plain system call on our own thread id.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, NICE) } == 0 {
        return Priority::Raised;
    }
    Priority::Unchanged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_gets_what_it_may_and_others_are_untouched() {
        let got = std::thread::spawn(raise_current_thread).join().unwrap();
        // Whatever this machine allows, the answer says what the thread has now.
        let policy = std::thread::spawn(move || {
            let p = raise_current_thread();
            // SAFETY: querying the calling thread's policy.
            (p, unsafe { libc::sched_getscheduler(0) })
        })
        .join()
        .unwrap();
        assert_eq!(got, policy.0);
        match policy.0 {
            Priority::RealTime => assert_eq!(policy.1, libc::SCHED_FIFO),
            Priority::Raised | Priority::Unchanged => assert_eq!(policy.1, libc::SCHED_OTHER),
        }
        // The test thread itself was not changed.
        // SAFETY: querying the calling thread's policy.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }
}
