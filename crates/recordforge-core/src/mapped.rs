//! [`Mapped`]: a read-only memory map of a file that survives the file being cut short
//! underneath it.
//!
//! A page of a file map that lies wholly past the file's end cannot be read: the kernel
//! sends `SIGBUS`, and a process that does not handle it dies (a training job killed
//! without a message because another program truncated or rewrote a shard in place: `cp`
//! over it, `rsync --inplace`, `truncate`). Every map made here is listed in a fixed
//! table; one `SIGBUS` handler, installed with the first map, looks the faulting address
//! up there. In one of these maps, it maps zero pages (anonymous, read-only) from the
//! faulting page to the map's end (every page past it is past the file's end too), marks
//! the map [`cut`](Mapped::cut) and returns: the read goes on with zeros, which no record
//! frame passes (its length CRC is not the CRC of zeros), and the readers check
//! [`Mapped::cut`] after reading, so a cut file is an error naming it, whatever the CRC
//! options. A fault anywhere else goes to the handler that was there before (Python's
//! `faulthandler`, or the default action: the process dies as it would have).
//!
//! Only what is async-signal-safe runs in the handler: atomic loads and stores, `mmap`,
//! `sigaction` and `raise`. A map that finds the table full (more than [`SLOTS`] maps
//! alive at once) is made without this protection, as every map was before.

use std::fs::File;
use std::io;
use std::ops::Deref;

/// Maps alive at once that the `SIGBUS` handler covers.
pub const SLOTS: usize = 16384;

/// A read-only map of a whole file (as long as the file was when mapped).
pub struct Mapped {
    map: memmap2::Mmap,
    slot: Option<usize>,
}

impl Mapped {
    /// Maps `file`, which must not be empty (a map of 0 bytes is refused by the system).
    pub fn map(file: &File) -> io::Result<Mapped> {
        // SAFETY: a read-only map. Its bytes may change if another program writes the
        // file (the CRCs catch that); a cut is handled below (module docs).
        let map = unsafe { memmap2::Mmap::map(file)? };
        let slot = guard::register(map.as_ptr() as usize, map.len());
        Ok(Mapped { map, slot })
    }

    /// Whether a page past the file's end was read (the file was cut short after it was
    /// mapped): the bytes from there read as zeros.
    pub fn cut(&self) -> bool {
        self.slot.is_some_and(guard::is_cut)
    }

    /// Advice to the kernel on how the map is read (see `madvise`).
    pub fn advise(&self, advice: memmap2::Advice) -> io::Result<()> {
        self.map.advise(advice)
    }
}

impl Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // Off the table before the field's own drop unmaps it.
        if let Some(slot) = self.slot {
            guard::release(slot);
        }
    }
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped({} bytes, cut: {})", self.map.len(), self.cut())
    }
}

#[cfg(target_os = "linux")]
mod guard {
    use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
    use std::sync::OnceLock;

    use super::SLOTS;

    const FREE: u8 = 0;
    const CLAIMED: u8 = 1;
    const LIVE: u8 = 2;

    struct Slot {
        state: AtomicU8,
        start: AtomicUsize,
        len: AtomicUsize,
        cut: AtomicBool,
    }

    #[allow(clippy::declare_interior_mutable_const)] // a template for the table's slots
    const EMPTY: Slot = Slot {
        state: AtomicU8::new(FREE),
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        cut: AtomicBool::new(false),
    };
    static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
    /// Where the search for a free slot starts (the slot after the last one taken).
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    /// The `SIGBUS` action before ours (set once, before ours is installed).
    static PREVIOUS: OnceLock<Option<libc::sigaction>> = OnceLock::new();
    static PAGE: AtomicUsize = AtomicUsize::new(4096);

    fn install() -> bool {
        PREVIOUS
            .get_or_init(|| {
                // SAFETY: plain libc calls on zeroed, then filled, sigaction structs.
                unsafe {
                    let page = libc::sysconf(libc::_SC_PAGESIZE);
                    if page > 0 {
                        PAGE.store(page as usize, Ordering::Relaxed);
                    }
                    let mut ours: libc::sigaction = std::mem::zeroed();
                    ours.sa_sigaction = on_sigbus as *const () as usize;
                    ours.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                    libc::sigemptyset(&mut ours.sa_mask);
                    let mut before: libc::sigaction = std::mem::zeroed();
                    (libc::sigaction(libc::SIGBUS, &ours, &mut before) == 0).then_some(before)
                }
            })
            .is_some()
    }

    pub(super) fn register(start: usize, len: usize) -> Option<usize> {
        if !install() {
            return None;
        }
        let first = NEXT.load(Ordering::Relaxed);
        for k in 0..SLOTS {
            let i = (first + k) % SLOTS;
            let slot = &TABLE[i];
            if slot
                .state
                .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                slot.start.store(start, Ordering::Relaxed);
                slot.len.store(len, Ordering::Relaxed);
                slot.cut.store(false, Ordering::Relaxed);
                slot.state.store(LIVE, Ordering::Release);
                NEXT.store((i + 1) % SLOTS, Ordering::Relaxed);
                return Some(i);
            }
        }
        None
    }

    pub(super) fn is_cut(slot: usize) -> bool {
        TABLE[slot].cut.load(Ordering::Acquire)
    }

    pub(super) fn release(slot: usize) {
        TABLE[slot].state.store(FREE, Ordering::Release);
    }

    /// The live slot whose map holds `addr`.
    fn find(addr: usize) -> Option<&'static Slot> {
        TABLE.iter().find(|slot| {
            slot.state.load(Ordering::Acquire) == LIVE && {
                let start = slot.start.load(Ordering::Relaxed);
                addr >= start && addr - start < slot.len.load(Ordering::Relaxed)
            }
        })
    }

    extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; what runs
        // here is async-signal-safe (atomics, mmap, sigaction, raise).
        unsafe {
            // A fault the kernel reports (si_code > 0), not a signal some process sent.
            if (*info).si_code > 0 {
                let addr = (*info).si_addr() as usize;
                if let Some(slot) = find(addr) {
                    let page = PAGE.load(Ordering::Relaxed);
                    let from = addr & !(page - 1);
                    let end = slot.start.load(Ordering::Relaxed) + slot.len.load(Ordering::Relaxed);
                    let to = end.div_ceil(page) * page;
                    let zeros = libc::mmap(
                        from as *mut libc::c_void,
                        to - from,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    );
                    if zeros != libc::MAP_FAILED {
                        slot.cut.store(true, Ordering::Release);
                        return; // the read is done again, on zeros
                    }
                }
            }
            match PREVIOUS.get() {
                Some(Some(before))
                    if before.sa_sigaction != libc::SIG_DFL
                        && before.sa_sigaction != libc::SIG_IGN =>
                {
                    if before.sa_flags & libc::SA_SIGINFO != 0 {
                        let handler: extern "C" fn(
                            libc::c_int,
                            *mut libc::siginfo_t,
                            *mut libc::c_void,
                        ) = std::mem::transmute(before.sa_sigaction);
                        handler(sig, info, ctx);
                    } else {
                        let handler: extern "C" fn(libc::c_int) =
                            std::mem::transmute(before.sa_sigaction);
                        handler(sig);
                    }
                }
                _ => {
                    // The default action, as without this handler: the process dies of
                    // SIGBUS once this handler returns (the signal is blocked until then).
                    let mut default: libc::sigaction = std::mem::zeroed();
                    default.sa_sigaction = libc::SIG_DFL;
                    libc::sigemptyset(&mut default.sa_mask);
                    libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
                    libc::raise(sig);
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod guard {
    pub(super) fn register(_start: usize, _len: usize) -> Option<usize> {
        None
    }
    pub(super) fn is_cut(_slot: usize) -> bool {
        false
    }
    pub(super) fn release(_slot: usize) {}
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_cut_while_mapped_reads_as_zeros_and_is_marked_cut() {
        let path = std::env::temp_dir().join(format!("rf-mapped-{}", std::process::id()));
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 16]).unwrap();
        drop(f);
        let file = File::open(&path).unwrap();
        let map = Mapped::map(&file).unwrap();
        assert_eq!(map[40_000], 7);
        assert!(!map.cut());
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        // Past the new end: zeros (SIGBUS without the handler), the map marked cut.
        assert_eq!(map[40_000], 0);
        assert!(map[8192..].iter().all(|&b| b == 0));
        assert!(map.cut());
        assert_eq!(map[100], 7); // the pages before the cut are the file's
        drop(map);
        let again = Mapped::map(&file).unwrap();
        assert_eq!(again.len(), 4096);
        assert!(!again.cut());
        std::fs::remove_file(&path).unwrap();
    }
}
