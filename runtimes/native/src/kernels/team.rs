//! A team of threads for the many small parallel loops of one model step.
//!
//! A decode step runs ~200 products of a few hundred microseconds or less, with a little serial work (norms, RoPE)
//! between them. On rayon's pool each of those loops wakes a worker that went to sleep after the previous one, and the
//! hand-offs (`sched_yield`, futex wake-ups) cost several percent of a step. A team keeps its helpers spinning for a
//! short while after each loop ([`SPIN`]), as llama.cpp's thread pool does, so the next loop starts on them at once;
//! past that they sleep on a condition variable until the next loop, so an idle runtime costs nothing.
//!
//! The calling thread is one of the team: [`Team::run`] publishes a loop, takes tasks beside the helpers, and returns
//! once every task has run. Tasks are claimed one at a time from a shared counter, so a helper that is late (or
//! descheduled on a busy machine) leaves its share to the others instead of holding the loop up.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a helper waits for the next loop by spinning before it sleeps: longer than the serial work between two
/// loops of a step (tens of microseconds), shorter than an idle runtime should keep a core busy.
pub const SPIN: Duration = Duration::from_micros(200);

/// Most claims one loop is split into (the claim counter's width); a loop of more tasks hands them out in runs.
const MAX_CLAIMS: usize = 1 << 12;

/// A loop being run: `f` over `0..n`, claimed in runs of `per` tasks.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    per: usize,
}

impl Job<'_> {
    fn run_claim(&self, claim: usize) {
        (claim * self.per..((claim + 1) * self.per).min(self.n)).for_each(self.f);
    }
}

struct Shared {
    /// The loop's sequence number (high 32 bits), its number of claims (16 bits) and the next claim (low 16 bits):
    /// one word, so that a claim is taken only on the loop it was meant for.
    state: AtomicU64,
    /// The current loop's [`Job`] (on the stack of the thread in [`Team::run`]); read only by a thread holding an
    /// unfinished claim of that loop, so it outlives every read.
    job: AtomicPtr<()>,
    /// Claims finished in the current loop.
    done: AtomicUsize,
    /// Whether a task of the current loop panicked, and the first panic's payload (raised again by the loop's owner).
    panicked: AtomicBool,
    payload: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    /// Whether a loop is being run: a second [`Team::run`] meanwhile (from a task of the loop, or from another
    /// thread) runs its tasks on its own thread instead of publishing over the first.
    busy: AtomicBool,
    /// Helpers asleep on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

const SEQ_SHIFT: u32 = 32;
const CLAIMS_SHIFT: u32 = 16;
const FIELD: u64 = 0xffff;

impl Shared {
    /// The next claim of loop `seq`, if it has one left.
    fn claim(&self, seq: u64) -> Option<usize> {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let (claims, next) = ((cur >> CLAIMS_SHIFT) & FIELD, cur & FIELD);
            if cur >> SEQ_SHIFT != seq || next >= claims {
                return None;
            }
            match self.state.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(next as usize),
                Err(now) => cur = now,
            }
        }
    }

    /// Runs claims of loop `seq` until none is left; a panic in a task is recorded, not propagated (the loop's owner
    /// re-raises it once every claim is finished).
    fn work(&self, seq: u64) {
        while let Some(claim) = self.claim(seq) {
            // SAFETY: the claim was taken on loop `seq` (the word held `seq` when it was taken), whose owner stored its
            // job before publishing `seq` and keeps it alive until every claim of the loop is counted in `done`,
            // which this one is not yet.
            let job = unsafe { &*(self.job.load(Ordering::Acquire) as *const Job<'_>) };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| job.run_claim(claim))) {
                self.payload.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(payload);
                self.panicked.store(true, Ordering::Relaxed);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    /// A helper's life: wait for a loop (spinning, then asleep), take its claims, wait for the next.
    fn helper(&self) {
        // The team's first loop is 1: a loop published before this thread got here is still new to it.
        let mut seen = 0;
        loop {
            let started = Instant::now();
            let mut spins = 0u32;
            let seq = loop {
                let cur = self.state.load(Ordering::Acquire) >> SEQ_SHIFT;
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                if cur != seen {
                    break cur;
                }
                spins = spins.wrapping_add(1);
                if !spins.is_multiple_of(256) || started.elapsed() < SPIN {
                    std::hint::spin_loop();
                    continue;
                }
                let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                while self.state.load(Ordering::SeqCst) >> SEQ_SHIFT == seen && !self.stop.load(Ordering::SeqCst) {
                    guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
            };
            seen = seq;
            self.work(seq);
        }
    }
}

/// The calling thread and `threads - 1` helper threads, running one loop at a time ([`Team::run`]).
pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Team {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Team({} threads)", self.threads())
    }
}

thread_local! {
    /// The team [`Team::install`] made current on this thread.
    static CURRENT: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

impl Team {
    /// A team of `threads` threads in all (the caller of [`Team::run`] and `threads - 1` helpers named
    /// `{name}-{i}`).
    pub fn new(threads: usize, name: &str) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            payload: Mutex::new(None),
            busy: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut team = Self { shared, helpers: Vec::new() };
        for i in 1..threads.max(1) {
            let shared = Arc::clone(&team.shared);
            // On an error the helpers made so far are stopped by the team's Drop.
            team.helpers.push(std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || shared.helper())?);
        }
        Ok(team)
    }

    /// Threads that run a loop: the caller and the helpers.
    pub fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// `f(i)` for every `i` in `0..n`, on this thread and the helpers; returns when all have run. A panic in a task
    /// is raised here, after every task has finished.
    pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let s = &*self.shared;
        if self.helpers.is_empty() || n <= 1 || s.busy.swap(true, Ordering::Acquire) {
            (0..n).for_each(f);
            return;
        }
        struct Free<'a>(&'a AtomicBool);
        impl Drop for Free<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _free = Free(&s.busy);
        let per = n.div_ceil(MAX_CLAIMS);
        let claims = n.div_ceil(per);
        let job = Job { f, n, per };
        s.job.store(&job as *const Job<'_> as *mut (), Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        let seq = ((s.state.load(Ordering::Relaxed) >> SEQ_SHIFT) + 1) & 0xffff_ffff;
        // SeqCst: a helper going to sleep either sees this loop or is counted in `sleepers` (below).
        s.state.store(seq << SEQ_SHIFT | (claims as u64) << CLAIMS_SHIFT, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        s.work(seq);
        // Every claim is taken; wait for the helpers' last ones. Spin first (they are short), then yield the core, so
        // a helper descheduled on a busy machine gets it back.
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < claims {
            if spins < 1 << 12 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if s.panicked.load(Ordering::Relaxed) {
            let payload = s.payload.lock().unwrap_or_else(|e| e.into_inner()).take();
            resume_unwind(payload.unwrap_or_else(|| Box::new("a task of a native runtime's parallel loop panicked")));
        }
    }

    /// Runs `f` with this team current on this thread ([`Team::with_current`]), as rayon's `install` does for a pool.
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(*const Team);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(self)));
        f()
    }

    /// Runs `f` with the team installed on this thread, if any.
    pub fn with_current<R>(f: impl FnOnce(Option<&Team>) -> R) -> R {
        let team = CURRENT.with(Cell::get);
        // SAFETY: a non-null pointer was set by `install`, whose borrow of the team lasts until it restores the
        // previous value, after `f` below has returned (this runs inside that `install`'s closure).
        f(unsafe { team.as_ref() })
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for helper in self.helpers.drain(..) {
            let _ = helper.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_on_every_loop_size() {
        let team = Team::new(3, "test").unwrap();
        for n in [0, 1, 2, 5, 64, 1000, MAX_CLAIMS + 7, 3 * MAX_CLAIMS] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            team.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{n} tasks");
        }
    }

    #[test]
    fn helpers_take_tasks_and_wake_after_sleeping() {
        let team = Team::new(2, "test").unwrap();
        let main = std::thread::current().id();
        // A task that waits (with a deadline) until another thread has run one: passes only if a helper joins.
        let helped = |label: &str| {
            let other = AtomicBool::new(false);
            team.run(2, &|_| {
                if std::thread::current().id() != main {
                    other.store(true, Ordering::SeqCst);
                } else {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !other.load(Ordering::SeqCst) && Instant::now() < deadline {
                        std::thread::yield_now();
                    }
                }
            });
            assert!(other.load(Ordering::SeqCst), "{label}: no helper took a task");
        };
        helped("spinning helper");
        // Wait until the helper has gone to sleep (a condition with a deadline, not a sleep of a guessed length).
        let deadline = Instant::now() + Duration::from_secs(30);
        while team.shared.sleepers.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(team.shared.sleepers.load(Ordering::SeqCst), 1, "the idle helper went to sleep");
        helped("woken helper");
    }

    #[test]
    fn a_panicking_task_is_raised_after_the_loop_and_the_team_goes_on() {
        let team = Team::new(2, "test").unwrap();
        let ran = AtomicUsize::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            team.run(8, &|i| {
                ran.fetch_add(1, Ordering::SeqCst);
                assert_ne!(i, 5, "task 5 fails");
            })
        }));
        let payload = result.expect_err("the task's panic is raised");
        let message = payload.downcast_ref::<String>().map(String::as_str).unwrap_or_default();
        assert!(message.contains("task 5 fails"), "the task's own panic is raised: {message:?}");
        assert_eq!(ran.load(Ordering::SeqCst), 8, "every task ran before the panic was raised");
        let sum = AtomicUsize::new(0);
        team.run(100, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }

    #[test]
    fn a_loop_run_from_inside_a_loop_runs_on_its_own_thread() {
        let team = Team::new(2, "test").unwrap();
        let hits: Vec<AtomicUsize> = (0..16).map(|_| AtomicUsize::new(0)).collect();
        team.run(4, &|i| {
            team.run(4, &|j| {
                hits[4 * i + j].fetch_add(1, Ordering::Relaxed);
            })
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn install_makes_the_team_current_and_restores_the_previous() {
        let team = Team::new(2, "test").unwrap();
        assert!(Team::with_current(|t| t.is_none()));
        let threads = team.install(|| Team::with_current(|t| t.map(Team::threads)));
        assert_eq!(threads, Some(2));
        assert!(Team::with_current(|t| t.is_none()));
    }
}
