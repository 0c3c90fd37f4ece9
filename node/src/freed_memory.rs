//! Memory the process freed goes back to the system.
//!
//! The binary allocates with mimalloc (`main.rs`), which keeps freed pages for later allocations
//! and returns them only after a delay that later allocator activity triggers. The PIN's key
//! derivation fills 128 MiB at once and frees it: kept, that was most of an idle node's memory
//! for its whole life, and counted against its memory bound.

/// Returns the pages the allocator holds free to the system (a no-op for what is in use).
#[allow(unsafe_code)]
pub fn give_back() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn giving_back_keeps_what_is_in_use() {
        let kept = vec![7u8; 1 << 20];
        drop(vec![1u8; 64 << 20]);
        super::give_back();
        assert!(kept.iter().all(|&b| b == 7));
    }
}
