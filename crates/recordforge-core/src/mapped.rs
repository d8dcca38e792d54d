//! [`Mapped`]: a read-only memory map of a file that survives the file being cut short
//! underneath it.
//!
//! A page of a file map that lies wholly past the file's end cannot be read: the kernel
//! sends `SIGBUS`, and a process that does not handle it dies (a training job killed
//! without a message because another program truncated or rewrote a shard in place: `cp`
//! over it, `rsync --inplace`, `truncate`). Every map made here is listed in a fixed
//! table; one `SIGBUS` handler, installed with the first map (and again when a map is
//! made or a reader starts, where another handler took its place since: a PyTorch
//! DataLoader worker's, `faulthandler.enable()`), looks the faulting address up there.
//! For a page past the file's end (`BUS_ADRERR`) in one of these maps, it marks the map
//! [`cut`](Mapped::cut), maps zero pages (anonymous, read-only) from the faulting page to
//! the map's end (every page past it is past the file's end too) and returns: the read
//! goes on with zeros. The part of the last page past the new end reads as zeros with no
//! fault at all. So the readers, where a read failed, met a cut, or used bytes after
//! their CRC was checked, ask [`Mapped::cut_error`] (one `fstat`) whether the record
//! reaches past the file's end now: a cut file is a `CorruptRecordError` naming the file,
//! the record and the new size, whatever the CRC options. Any other `SIGBUS` (sent by a
//! process, a hardware error, a map not listed) goes to the action that was there before
//! ours, as the kernel would have run it (its mask and flags; ignored stays ignored, a
//! fault cannot be), or the default action: the process dies as it would have.
//!
//! Only what is async-signal-safe runs in the handler: atomic loads and stores, `mmap`,
//! `sigaction`, `pthread_sigmask` and `raise`; `errno` is kept. A map that finds the
//! table full (more than [`SLOTS`] maps alive at once) is made without this protection,
//! as every map was before.

use std::fs::File;
use std::io;
use std::ops::Deref;

/// Maps alive at once that the `SIGBUS` handler covers.
pub const SLOTS: usize = 16384;

/// A read-only map of a whole file (as long as the file was when mapped), with the file.
pub struct Mapped {
    map: memmap2::Mmap,
    file: File,
    slot: Option<usize>,
}

impl Mapped {
    /// Maps `file`, which must not be empty (a map of 0 bytes is refused by the system).
    pub fn map(file: File) -> io::Result<Mapped> {
        // SAFETY: a read-only map. Its bytes may change if another program writes the
        // file (the CRCs catch that); a cut is handled below (module docs).
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let slot = guard::register(map.as_ptr() as usize, map.len());
        Ok(Mapped { map, file, slot })
    }

    /// The file mapped.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Whether a page past the file's end was read (the file was cut short after it was
    /// mapped): the bytes from there read as zeros.
    pub fn cut(&self) -> bool {
        self.slot.is_some_and(guard::is_cut)
    }

    /// Whether bytes before `end` are past the file's end now (it was cut short since
    /// it was mapped: they read as zeros, a fault or not; see [`Mapped::cut`]). One
    /// `fstat`; a file that cannot be looked at is taken as not cut.
    pub fn lost(&self, end: u64) -> bool {
        self.file.metadata().is_ok_and(|m| m.len() < end)
    }

    /// The error of the record at byte `offset` where it reaches past the file's end now
    /// (its header, or its payload by the length in its header): the file was cut short
    /// since it was mapped. None where it does not, or the file is not shorter.
    ///
    /// Where a page of the map was read past the file's end, the map holds zero pages
    /// from that page on for its life, whatever the file holds since (written back in
    /// place: as long again): a record that reaches them is cut too.
    pub fn cut_error(&self, offset: u64) -> Option<crate::Error> {
        let now = self.end_now()?;
        let cut = offset.saturating_add(12) > now || {
            // The header is before the new end: the file's bytes, no fault.
            let at = offset as usize; // (offset + 12 <= now < the map's length)
            let length = u64::from_le_bytes(self.map[at..at + 8].try_into().expect("8 bytes"));
            offset.saturating_add(16).saturating_add(length) > now
        };
        cut.then(|| crate::framing::cut_at(offset, now))
    }

    /// The error of the first record that reaches past the file's end, where the file is
    /// shorter now than when it was mapped (a walk of the record headers before it).
    pub fn first_cut(&self) -> Option<crate::Error> {
        self.end_now()?;
        let mut pos = 0u64;
        loop {
            if let Some(e) = self.cut_error(pos) {
                return Some(e);
            }
            // (its header was before the new end when cut_error read it; the file may
            // have grown again since, past the map: the walk then ends here)
            let at = usize::try_from(pos).ok()?;
            let length = u64::from_le_bytes(self.map.get(at..at.checked_add(8)?)?.try_into().ok()?);
            pos = pos.checked_add(16)?.checked_add(length)?;
        }
    }

    /// Where the map's bytes stop being the file's now, where they do before the map's
    /// end: the file's length now, or the first zero page the map holds (see
    /// [`Mapped::cut_error`]), whichever is first. None where all of them are.
    fn end_now(&self) -> Option<u64> {
        let zeros = self.slot.and_then(guard::zeros_from).map(|z| z as u64);
        let end = match (self.len_now(), zeros) {
            (Some(now), Some(z)) => now.min(z),
            (Some(now), None) => now,
            (None, z) => z?,
        };
        (end < self.map.len() as u64).then_some(end)
    }

    /// The file's length now (see [`Mapped::lost`]).
    pub fn len_now(&self) -> Option<u64> {
        self.file.metadata().ok().map(|m| m.len())
    }

    /// Advice to the kernel on how the map is read (see `madvise`).
    pub fn advise(&self, advice: memmap2::Advice) -> io::Result<()> {
        self.map.advise(advice)
    }
}

/// Installs recordforge's `SIGBUS` handler again where another took its place since (a
/// PyTorch DataLoader worker's, `faulthandler.enable()`): chained to that one. Called
/// when a map is made and when a reader starts.
pub fn guard_again() {
    guard::reinstall();
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
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering};

    use super::SLOTS;

    const FREE: u8 = 0;
    const CLAIMED: u8 = 1;
    const LIVE: u8 = 2;
    /// `si_code` of a fault on a page the file does not reach (`BUS_ADRERR`).
    const BUS_ADRERR: libc::c_int = 2;

    struct Slot {
        state: AtomicU8,
        /// Changed at every registration and release: the handler's reads of `start`
        /// and `len` are of one map when it is the same before and after them.
        generation: AtomicUsize,
        start: AtomicUsize,
        len: AtomicUsize,
        cut: AtomicBool,
        /// Offset in the map of the first page made zeros (`usize::MAX`: none).
        zeros: AtomicUsize,
    }

    #[allow(clippy::declare_interior_mutable_const)] // a template for the table's slots
    const EMPTY: Slot = Slot {
        state: AtomicU8::new(FREE),
        generation: AtomicUsize::new(0),
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        cut: AtomicBool::new(false),
        zeros: AtomicUsize::new(usize::MAX),
    };
    static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
    /// Where the search for a free slot starts (the slot after the last one taken).
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    /// The `SIGBUS` action ours took the place of (null until installed); each one
    /// leaked, as a handler may read it at any time.
    static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
    /// The process (its id) that is (re)installing, 0 for none: a try-lock, never waited
    /// on, and one left taken by a parent that forked meanwhile is taken over by the
    /// child (a mutex would stay locked in the child for ever).
    static INSTALLING: AtomicU32 = AtomicU32::new(0);
    /// Set where the action before ours ran with `SA_RESETHAND`: it is the default now.
    static RESET: AtomicBool = AtomicBool::new(false);
    static PAGE: AtomicUsize = AtomicUsize::new(4096);
    thread_local! {
        /// Set on a thread while the action before ours runs: a SIGBUS that comes back
        /// to ours meanwhile (a handler such as faulthandler's raises it again once it
        /// has put back the action it replaced, which may be ours; ours runs with
        /// `SA_NODEFER`, so it comes at once; or one that chains by calling ours) takes
        /// the default action, as it would have without ours, instead of going round the
        /// two handlers for ever.
        static CHAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn ours() -> usize {
        on_sigbus as *const () as usize
    }

    /// Installs the handler where it is not the current one (the first time, or after
    /// another took its place); false if the system refuses.
    pub(super) fn reinstall() -> bool {
        let me = std::process::id();
        let holder = INSTALLING.load(Ordering::Acquire); // 0, or a parent's before a fork
        if holder == me {
            return true; // another thread of this process is installing it
        }
        if INSTALLING
            .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return true; // another thread is installing it
        }
        let done = install();
        INSTALLING.store(0, Ordering::Release);
        done
    }

    fn install() -> bool {
        // SAFETY: plain libc calls on zeroed, then filled, sigaction structs.
        unsafe {
            let mut now: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut now) != 0 {
                return false;
            }
            if now.sa_sigaction == ours() {
                return true;
            }
            let page = libc::sysconf(libc::_SC_PAGESIZE);
            if page > 0 {
                PAGE.store(page as usize, Ordering::Relaxed);
            }
            // The action before ours, stored before ours can run.
            PREVIOUS.store(Box::into_raw(Box::new(now)), Ordering::Release);
            RESET.store(false, Ordering::Release);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ours();
            action.sa_flags =
                libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) == 0
        }
    }

    pub(super) fn register(start: usize, len: usize) -> Option<usize> {
        if !reinstall() {
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
                slot.zeros.store(usize::MAX, Ordering::Relaxed);
                slot.generation.fetch_add(1, Ordering::Release);
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

    pub(super) fn zeros_from(slot: usize) -> Option<usize> {
        let at = TABLE[slot].zeros.load(Ordering::Acquire);
        (at != usize::MAX).then_some(at)
    }

    pub(super) fn release(slot: usize) {
        let slot = &TABLE[slot];
        slot.state.store(CLAIMED, Ordering::Release);
        slot.generation.fetch_add(1, Ordering::Release);
        slot.state.store(FREE, Ordering::Release);
    }

    /// The live slot whose map holds `addr`, and that map's start and length, read
    /// consistently (the same generation before and after).
    fn find(addr: usize) -> Option<(&'static Slot, usize, usize)> {
        TABLE.iter().find_map(|slot| {
            if slot.state.load(Ordering::Acquire) != LIVE {
                return None;
            }
            let generation = slot.generation.load(Ordering::Acquire);
            let start = slot.start.load(Ordering::Acquire);
            let len = slot.len.load(Ordering::Acquire);
            let same = slot.generation.load(Ordering::Acquire) == generation
                && slot.state.load(Ordering::Acquire) == LIVE;
            (same && addr >= start && addr - start < len).then_some((slot, start, len))
        })
    }

    extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; what runs
        // here is async-signal-safe (atomics, mmap, sigaction, sigprocmask, raise).
        unsafe {
            let errno = *libc::__errno_location();
            let code = (*info).si_code;
            if code == BUS_ADRERR {
                let addr = (*info).si_addr() as usize;
                if let Some((slot, start, len)) = find(addr) {
                    let page = PAGE.load(Ordering::Relaxed);
                    let from = addr & !(page - 1);
                    let to = (start + len).div_ceil(page) * page;
                    // Marked first: a thread that reads the zeros finds the map cut.
                    slot.zeros
                        .fetch_min(from.max(start) - start, Ordering::AcqRel);
                    slot.cut.store(true, Ordering::Release);
                    let zeros = libc::mmap(
                        from as *mut libc::c_void,
                        to - from,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    );
                    if zeros != libc::MAP_FAILED {
                        *libc::__errno_location() = errno;
                        return; // the read is done again, on zeros
                    }
                }
            }
            chain(sig, info, ctx, code > 0);
            *libc::__errno_location() = errno;
        }
    }

    /// The signal to the action before ours, as the kernel would have run it.
    unsafe fn chain(
        sig: libc::c_int,
        info: *mut libc::siginfo_t,
        ctx: *mut libc::c_void,
        fault: bool,
    ) {
        if CHAINING.with(std::cell::Cell::get) {
            default_action(); // (back from the handler before ours: see CHAINING)
            libc::raise(sig);
            return;
        }
        let before = PREVIOUS.load(Ordering::Acquire);
        let before = if before.is_null() || RESET.load(Ordering::Acquire) {
            None
        } else {
            Some(&*before)
        };
        match before {
            // Ignored: a signal sent stays ignored; a fault cannot be (the kernel kills).
            Some(b) if b.sa_sigaction == libc::SIG_IGN && !fault => {}
            Some(b) if b.sa_sigaction != libc::SIG_DFL && b.sa_sigaction != libc::SIG_IGN => {
                let mut mask: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, &b.sa_mask, &mut mask);
                if b.sa_flags & libc::SA_RESETHAND as libc::c_int != 0 {
                    RESET.store(true, Ordering::Release); // its action is the default now
                }
                CHAINING.with(|c| c.set(true));
                if b.sa_flags & libc::SA_SIGINFO != 0 {
                    let handler: extern "C" fn(
                        libc::c_int,
                        *mut libc::siginfo_t,
                        *mut libc::c_void,
                    ) = std::mem::transmute(b.sa_sigaction);
                    handler(sig, info, ctx);
                } else {
                    let handler: extern "C" fn(libc::c_int) = std::mem::transmute(b.sa_sigaction);
                    handler(sig);
                }
                CHAINING.with(|c| c.set(false));
                libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
            }
            _ => {
                // The default action, as without this handler: the process dies of
                // SIGBUS once this handler returns (the signal is blocked until then).
                default_action();
                libc::raise(sig);
            }
        }
    }

    unsafe fn default_action() {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut default.sa_mask);
        libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
    }
}

#[cfg(not(target_os = "linux"))]
mod guard {
    pub(super) fn reinstall() -> bool {
        false
    }
    pub(super) fn register(_start: usize, _len: usize) -> Option<usize> {
        None
    }
    pub(super) fn zeros_from(_slot: usize) -> Option<usize> {
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
        let map = Mapped::map(File::open(&path).unwrap()).unwrap();
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
        assert!(map.lost(5000) && !map.lost(4096));
        drop(map);
        let again = Mapped::map(File::open(&path).unwrap()).unwrap();
        assert_eq!(again.len(), 4096);
        assert!(!again.cut());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn zero_pages_stay_a_cut_after_the_file_is_written_back() {
        // Two records of 20,000 bytes; the file cut inside the second, a page of it read
        // (zeros from that page on), then written back whole: the second record is still
        // a cut (the map reads zeros there), the first is not.
        let mut framed = Vec::new();
        for fill in [1u8, 2] {
            crate::framing::frame_record(&mut framed, &vec![fill; 20_000]);
        }
        let second = 20_016u64;
        let path = std::env::temp_dir().join(format!("rf-mapped-back-{}", std::process::id()));
        std::fs::write(&path, &framed).unwrap();
        let map = Mapped::map(File::open(&path).unwrap()).unwrap();
        assert!(map.cut_error(second).is_none() && map.first_cut().is_none());
        let cut = 24_576; // a page boundary inside the second record's payload
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        assert_eq!(map[36_000], 0); // a page past the end: made zeros
        assert!(map.cut());
        std::fs::write(&path, &framed).unwrap(); // the same bytes, in place
        assert_eq!(map.len_now(), Some(framed.len() as u64));
        assert_eq!(map[36_000], 0, "the map's zero pages stay");
        assert!(map.cut_error(0).is_none());
        let e = map
            .cut_error(second)
            .expect("the second record reaches the zeros");
        assert!(e.to_string().contains("cut short"), "{e}");
        assert!(map
            .first_cut()
            .is_some_and(|e| e.to_string().contains("offset 20016")));
        drop(map);
        let again = Mapped::map(File::open(&path).unwrap()).unwrap();
        assert!(again.cut_error(second).is_none() && again[36_000] == 2);
        std::fs::remove_file(&path).unwrap();
    }
}
