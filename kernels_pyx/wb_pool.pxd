# The shared thread pool (wb_pool.h): cimport wb_pool_run, and call wb_pool_import() once at
# module level before the first parallel loop.
cdef extern from "wb_pool.h" nogil:
    ctypedef void (*wb_chunk_fn)(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil
    void wb_pool_run(wb_chunk_fn fn, void* ctx, Py_ssize_t n, int nt)
    int wb_pool_import() except -1 with gil


cdef enum:
    WB_CHUNK_WORK = 16384   # elements of work a chunk aims at: a few microseconds, next to which handing it out costs little


cdef inline Py_ssize_t wb_jobs_per_chunk(Py_ssize_t jobs, Py_ssize_t work, int nt) noexcept nogil:
    """Jobs per chunk, for ``jobs`` jobs of about ``work`` elements each: enough to make
    WB_CHUNK_WORK, but few enough that every thread still starts with 4 chunks to even out with
    (one thread: all of them in one chunk)."""
    if nt <= 1:
        return jobs if jobs > 1 else 1
    cdef Py_ssize_t per = (WB_CHUNK_WORK + work - 1) // (work if work > 1 else 1)
    cdef Py_ssize_t cap = jobs // (4 * nt)
    if per > cap:
        per = cap
    return per if per > 1 else 1
