# cython: language_level=3
"""The thread pool every kernel module runs its parallel loops on (``wb_pool.h``): this module
holds the one implementation and hands its entry point to the others through a capsule."""
from cpython.pycapsule cimport PyCapsule_New

cdef extern from *:
    """
    #define WB_POOL_IMPL
    """

cdef extern from *:
    """
    #if defined(__x86_64__) || defined(__i386__)
    #include <xmmintrin.h>
    #define WB_FP_MODES 1
    /* MXCSR's flush-to-zero (results) and denormals-are-zero (inputs) bits. */
    #define WB_FTZ_DAZ 0x8040u
    static int wb_get_flush(void) { return (_mm_getcsr() & WB_FTZ_DAZ) == WB_FTZ_DAZ; }
    static void wb_set_flush(int on) {
        unsigned int c = _mm_getcsr();
        _mm_setcsr(on ? (c | WB_FTZ_DAZ) : (c & ~WB_FTZ_DAZ));
    }
    #else
    #define WB_FP_MODES 0
    static int wb_get_flush(void) { return 0; }
    static void wb_set_flush(int on) { (void)on; }
    #endif
    """
    int WB_FP_MODES
    int wb_get_flush() nogil
    void wb_set_flush(int on) nogil

cdef extern from "wb_pool.h" nogil:
    ctypedef void (*wb_chunk_fn)(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil
    void wb_pool_run_impl(wb_chunk_fn fn, void* ctx, Py_ssize_t n, int nt)
    void wb_pool_wake_impl()
    void wb_pool_init_impl()
    int wb_pool_cpu(int k)
    void wb_pool_caller_report_impl(long wall, long cpu)
    int wb_pool_workers "wb_pool.workers"
    long wb_pool_spin_ns
    long wb_pool_spin_contended_ns
    long wb_pool_contended_until
    long wb__now_ns()

wb_pool_init_impl()
_run = PyCapsule_New(<void*> wb_pool_run_impl, b"workbench._kernels._pool._run", NULL)


def caller_cpu():
    """The CPU a run's calling thread is pinned to (no worker is), or -1 when threads are not
    pinned (fewer than 2 CPUs, or ``WB_POOL_PIN=0``).  It moves to another CPU where
    :func:`caller_report` finds the caller's contended."""
    return wb_pool_cpu(0)


def worker_cpu(int k):
    """The CPU worker ``k`` (1, 2, ...) pins itself to at its next job, or -1 when not pinning."""
    return wb_pool_cpu(k)


def caller_report(long wall_ns, long cpu_ns):
    """Report a pinned run's wall-clock and CPU time of the calling thread (ns): a caller that
    waited for its CPU over a tenth of a window of runs moves to another (``wb_pool.h``)."""
    wb_pool_caller_report_impl(wall_ns, cpu_ns)


def wake():
    """Wake the sleeping workers ahead of a burst of parallel kernels (the executor calls this as
    a run starts, so that its first layers do not wait for threads an idle pause put to sleep)."""
    with nogil:
        wb_pool_wake_impl()


def set_spin_ns(long ns):
    """How long an idle worker spins before it sleeps (nanoseconds); returns the previous value."""
    global wb_pool_spin_ns
    old = wb_pool_spin_ns
    wb_pool_spin_ns = ns
    return old


def set_contended_spin_ns(long ns):
    """How long an idle worker spins before it sleeps while the CPUs are contended (see
    :func:`contended`); returns the previous value.  Set to the :func:`set_spin_ns` value,
    workers spin alike whatever the load."""
    global wb_pool_spin_contended_ns
    old = wb_pool_spin_contended_ns
    wb_pool_spin_contended_ns = ns
    return old


def contended():
    """Whether a worker, or a caller of the pool, spent over a tenth of a recent 50 ms of its awake
    time waiting for its CPU (another process taking it), in the last 3 s: the workers then spin
    only the :func:`set_contended_spin_ns` time (``wb_pool.h``)."""
    return wb__now_ns() < wb_pool_contended_until


#: True where :func:`set_flush_denormals` can change anything (x86).
flush_available = bool(WB_FP_MODES)


def set_flush_denormals(bint on):
    """Flush denormal floats to zero, as inputs and as results, in the calling thread (and in the
    pool workers while they run its kernels); returns the previous setting."""
    old = bool(wb_get_flush())
    wb_set_flush(on)
    return old


def workers():
    """How many pool threads exist (besides the callers)."""
    return wb_pool_workers


cdef struct _Probe:
    long* slots
    long* runs
    long spin


cdef void _probe_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _Probe* p = <_Probe*> ctx
    cdef long k
    cdef volatile long sink = 0
    for k in range(p.spin):
        sink = sink + k
    p.slots[i] = slot
    p.runs[i] += 1


def probe(long n, int nt, long spin=0):
    """Run ``n`` chunks on ``nt`` threads, each ``spin`` loop iterations long; returns
    ``(slot that ran each chunk, times each chunk ran)``, for tests of the scheduler itself."""
    import numpy as np
    slots = np.full(n, -1, dtype=np.int64)
    runs = np.zeros(n, dtype=np.int64)
    cdef long[::1] sv = slots
    cdef long[::1] rv = runs
    cdef _Probe p
    p.slots = &sv[0] if n > 0 else NULL
    p.runs = &rv[0] if n > 0 else NULL
    p.spin = spin
    with nogil:
        wb_pool_run_impl(_probe_chunk, &p, n, nt)
    return slots, runs
