# Row-major SGEMM on top of scipy.linalg.cython_blas (no BLAS linking of our own).
from scipy.linalg.cython_blas cimport sgemm


cdef inline void gemm_rm(bint trans_a, bint trans_b, int m, int n, int k, float alpha,
                         const float* a, int lda, const float* b, int ldb, float beta,
                         float* c, int ldc) noexcept nogil:
    """Row-major ``C(m, n) = alpha * op(A) @ op(B) + beta * C``.

    BLAS is column-major; a row-major matrix read column-major is its transpose, so this computes
    ``C^T = op(B)^T @ op(A)^T`` with the operands swapped.
    """
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    if m <= 0 or n <= 0:
        return
    sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda, &beta, c, &ldc)
