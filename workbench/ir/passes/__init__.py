"""Graph rewrites, one module each.  :func:`optimize` runs the default pipeline in order."""
from .constant_folding import fold_constants
from .dead_nodes import remove_dead_layers
from .identity import remove_identities
from .reshapes import tidy_reshapes
from .slices_as_split import slices_as_split
from .rejoin_splits import rejoin_splits
from .transpose_first import transpose_before_flatten
from .fold_batchnorm import fold_batchnorm
from .fuse_layernorm import fuse_layernorm
from .fuse_patterns import fuse_patterns
from .fold_affine import fold_affine
from .fuse_activation import fuse_activations
from .fuse_matmul_bias import fuse_matmul_bias
from .fuse_softmax_dot import fuse_softmax_dot
from .fuse_residual import fuse_residual_adds
from .fuse_post_affine import fuse_post_affine
from .fuse_eltwise_chain import fuse_eltwise_chains
from .fuse_upsample_read import fuse_upsample_reads
from .fuse_qdq import fuse_qdq
from .conv1d_as_2d import conv1d_as_2d
from .pow_as_mul import pow_as_mul

#: The default pipeline: (name, pass).  Each pass takes a Graph, edits it in place and returns
#: the names of the layers it removed or rewrote, for the report.
PIPELINE = (
    ("fold_constants", fold_constants),
    ("remove_identities", remove_identities),
    ("tidy_reshapes", tidy_reshapes),
    ("slices_as_split", slices_as_split),
    ("rejoin_splits", rejoin_splits),
    ("transpose_before_flatten", transpose_before_flatten),
    ("remove_dead_layers", remove_dead_layers),
    ("fold_batchnorm", fold_batchnorm),
    ("fuse_layernorm", fuse_layernorm),
    ("fuse_patterns", fuse_patterns),
    ("fold_affine", fold_affine),
    ("fuse_activations", fuse_activations),
    ("fuse_matmul_bias", fuse_matmul_bias),
    ("fuse_softmax_dot", fuse_softmax_dot),
    ("fuse_residual_adds", fuse_residual_adds),
    ("fuse_post_affine", fuse_post_affine),
    ("conv1d_as_2d", conv1d_as_2d),
    ("pow_as_mul", pow_as_mul),
    ("fuse_eltwise_chains", fuse_eltwise_chains),
    ("fuse_upsample_reads", fuse_upsample_reads),
    ("fuse_qdq", fuse_qdq),
)


def optimize(graph, passes=PIPELINE):
    """Run ``passes`` over ``graph`` in place; return ``{pass name: [layers touched]}``."""
    report = {}
    for name, run in passes:
        report[name] = run(graph)
    graph.meta["passes"] = report
    return report
