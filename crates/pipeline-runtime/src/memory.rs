//! The C allocator's arenas.
//!
//! glibc's malloc gives each thread that meets contention an arena of its own, up to eight per
//! core. librdkafka's threads allocate fetched messages that the consume loop frees on another
//! thread, and memory freed into an arena other threads no longer use is seldom returned: the
//! stream-reader's resident set grew from 24 to 48 MB over 23 minutes at 3,000 logs/s while its
//! live heap stayed near 8–10 MB (heaptrack). With two arenas it stays flat (RELIABILITY.md,
//! "Memory over time").

/// Arenas when `MALLOC_ARENA_MAX` is not set.
pub const DEFAULT_ARENAS: i32 = 2;

/// Limits glibc's malloc to [`DEFAULT_ARENAS`] arenas, unless the environment sets
/// `MALLOC_ARENA_MAX` (glibc then applies the user's value itself). Call it first in `main`,
/// before any thread starts. Elsewhere than glibc it does nothing.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        #[allow(
            unsafe_code,
            reason = "mallopt is glibc's interface for M_ARENA_MAX: two integers in, no Rust memory touched"
        )]
        // SAFETY: mallopt only reads its two integer arguments; it is called before any other
        // thread of this process exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, DEFAULT_ARENAS);
        }
    }
}
