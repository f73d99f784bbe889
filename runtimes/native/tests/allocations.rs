//! The quantized products allocate nothing once their buffers have grown: a decode step runs ~200 of them, and each
//! used to allocate its task list, its quantized activations and its workers' buffers. Counted with a global
//! allocator; one test in this binary, so no other test allocates while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use nano_vllm_bundle::gguf::GgmlType;
use nano_vllm_native::kernels::quant::{self as quant_limits, Isa, QMatrix, Scratch, matmul_parts, synthetic};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's allocations (a const-initialized Cell: reading it allocates nothing).
    static MINE: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    MINE.with(|m| m.set(m.get() + 1));
}

// SAFETY: forwards to the system allocator, counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `calls` runs of `f`: on this thread only, or on every thread (`everywhere`).
fn allocations(calls: usize, everywhere: bool, mut f: impl FnMut()) -> usize {
    let read = || if everywhere { ALLOCATIONS.load(Ordering::SeqCst) } else { MINE.with(Cell::get) };
    let before = read();
    for _ in 0..calls {
        f();
    }
    read() - before
}

#[test]
fn quantized_products_allocate_nothing_once_warm() {
    const K: usize = 512;
    let isa = Isa::detect();
    // One pool for the whole test (a pool dropped while counting would count its threads' exit).
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    // Decode (1 token), batches of 8 and 64 (integer products up to 64 tokens; F16's f16-rounded f32 products up to
    // 8). Past those limits a product runs as dequantized tiles packed into panels (the prefill case below).
    for t in [1usize, 8, 64] {
        // Stacked parts of every path: 32-blocks (Q8_0 activations), super-blocks (Q8_K), and F16 up to its limit.
        let types: &[GgmlType] = if t <= quant_limits::MAX_DOT_TOKENS {
            &[GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K, GgmlType::F16]
        } else {
            &[GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K]
        };
        let parts: Vec<QMatrix> = types.iter().map(|&ty| synthetic(ty, 96, K)).collect();
        let width: usize = parts.iter().map(|p| p.rows).sum();
        let x: Vec<f32> = (0..t * K).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let mut y = vec![0.0f32; t * width];
        let mut scratch = Scratch::default();
        // One thread: every task on this thread, in order.
        matmul_parts(&parts, &x, t, &mut y, width, 1, isa, &mut scratch);
        let one = allocations(10, false, || matmul_parts(&parts, &x, t, &mut y, width, 1, isa, &mut scratch));
        assert_eq!(one, 0, "{t} tokens, 1 thread: {one} allocations in 10 warm products");
        // Two threads: a worker's buffers grow the first times it runs a task of a size; which worker runs which
        // task is up to the pool, so warm it several times and allow each worker a few growths (per call before
        // the workspace: the task list, 3 activation buffers and one buffer pair per rayon split).
        let two = pool.install(|| {
            for _ in 0..20 {
                matmul_parts(&parts, &x, t, &mut y, width, 2, isa, &mut scratch);
            }
            allocations(50, true, || matmul_parts(&parts, &x, t, &mut y, width, 2, isa, &mut scratch))
        });
        assert!(two <= 8, "{t} tokens, 2 threads: {two} allocations in 50 warm products");
        eprintln!("{t} tokens: {one} allocations in 10 products on 1 thread, {two} in 50 on 2");
    }
    // A prefill: dequantized tiles packed into a worker's buffer, rounded activations kept in the scratch.
    let t = 100;
    let parts: Vec<QMatrix> = [GgmlType::Q4K, GgmlType::F16].map(|ty| synthetic(ty, 96, K)).into();
    let x: Vec<f32> = (0..t * K).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let mut y = vec![0.0f32; t * 192];
    let mut scratch = Scratch::default();
    matmul_parts(&parts, &x, t, &mut y, 192, 1, isa, &mut scratch);
    let n = allocations(10, false, || matmul_parts(&parts, &x, t, &mut y, 192, 1, isa, &mut scratch));
    assert_eq!(n, 0, "{t} tokens, 1 thread: {n} allocations in 10 warm products (6 tiles a product)");
}
