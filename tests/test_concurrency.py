"""Sessions, compiled models and loaded tuned files called from several threads at once: every
caller gets the output of its own input (checked against single-threaded runs of the same
inputs), executors are created only as concurrency needs them and never beyond
``max_concurrency``, and no caller's input is kept after its run."""
import gc
import threading
import weakref

import numpy as np
import pytest

import workbench
from workbench import zoo
from workbench.tuning.filters import assign
from workbench.runtime.blas import blas_limit, libraries
from workbench.runtime.compiled import CompiledModel
from workbench.session import Session

THREADS = 4


def _inputs(session_or_graph, n, seed0):
    if isinstance(session_or_graph, Session):
        return [session_or_graph.random_inputs(seed=seed0 + i) for i in range(n)]
    return [workbench.random_inputs(session_or_graph, seed=seed0 + i) for i in range(n)]


def hammer(run, feeds_per_thread, rounds):
    """Each thread runs its own inputs ``rounds`` times over, all threads released together;
    returns ``{(thread, input index): [outputs of each round]}`` and any exception raised."""
    results, errors = {}, []
    barrier = threading.Barrier(len(feeds_per_thread))

    def work(t):
        try:
            barrier.wait()
            for _ in range(rounds):
                for i, feeds in enumerate(feeds_per_thread[t]):
                    results.setdefault((t, i), []).append(run(feeds))
        except Exception as e:   # reported by the test, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(len(feeds_per_thread))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    return results


def check_against_serial(run, feeds_per_thread, rounds):
    """Every concurrent output equals (1e-6 of its scale) the single-threaded output of its
    own input; distinct inputs' outputs differ by far more, so a mix-up could not pass."""
    expected = {(t, i): run(f) for t, fs in enumerate(feeds_per_thread) for i, f in enumerate(fs)}
    name = next(iter(next(iter(expected.values()))))
    flat = [v[name] for v in expected.values()]
    scale = max(float(np.abs(v).max()) for v in flat)
    closest = min(float(np.abs(a - b).max()) for k, a in enumerate(flat) for b in flat[k + 1:])
    assert closest > 1e-3 * scale
    got = hammer(run, feeds_per_thread, rounds)
    runs = 0
    for key, outs in got.items():
        for out in outs:
            assert set(out) == set(expected[key])
            for o, ref in expected[key].items():
                np.testing.assert_allclose(out[o], ref, rtol=0, atol=1e-6 * scale, err_msg=f"{key} {o}")
                runs += 1
    return runs


@pytest.fixture(scope="module")
def tiny_session(tmp_path_factory):
    s = Session.from_onnx(zoo.build("tiny", resolution=32), num_threads=2,
                          db=tmp_path_factory.mktemp("db") / "p.sqlite")
    s.profile(repeats=2)
    s.tune()
    return s


@pytest.mark.parametrize("max_concurrency", [1, THREADS])
def test_session_run_from_four_threads(tiny_session, max_concurrency):
    s = tiny_session
    s.max_concurrency, s._compiled = max_concurrency, None
    feeds = [_inputs(s, 5, 100 * t) for t in range(THREADS)]
    assert check_against_serial(s.run, feeds, rounds=15) == THREADS * 5 * 15
    assert 1 <= s.compile().executors <= max_concurrency


@pytest.mark.parametrize("family", ["cpu:float32:nchw/*", "cpu:float32:nhwc/*"])
def test_compiled_mobilenet_from_four_threads(family):
    graph = workbench.load(zoo.build("mobilenet_v2", resolution=32))
    compiled = CompiledModel(graph, assign(graph, [family])[0], num_threads=2, max_concurrency=THREADS)
    feeds = [_inputs(graph, 3, 10 * t) for t in range(THREADS)]
    assert check_against_serial(compiled.run, feeds, rounds=10) == THREADS * 3 * 10
    assert compiled.executors <= THREADS


def test_loaded_tuned_file_from_four_threads(tiny_session, tmp_path):
    path = tiny_session.export(tmp_path / "tiny.tuned.onnx", measure_runs=3)
    loaded = workbench.load(str(path))
    loaded.max_concurrency = 2
    feeds = [_inputs(loaded, 5, 1000 + 100 * t) for t in range(THREADS)]
    assert check_against_serial(loaded.run, feeds, rounds=15) == THREADS * 5 * 15


def test_timed_runs_beside_runs(tiny_session):
    """run_timed (measure, traces, per-op tables) shares the pool with run: both stay correct."""
    # Bit-for-bit below: no thread governor, which may move runs to one thread fewer when the
    # two concurrent executors slow each other down (and the last bits of outputs with them).
    model = CompiledModel(tiny_session.graph, tiny_session.assignment, num_threads=2, max_concurrency=2,
                          adaptive_threads=False)
    feeds = _inputs(tiny_session, 4, 7)
    expected = [model.run(f) for f in feeds]
    names = [st.name for st in model.steps]

    def timed(f):
        out, times = model.run_timed(f)
        assert [st.name for st, _, _ in times] == names and all(d >= 0 for _, _, d in times)
        return out
    got = hammer(lambda f: (timed if threading.current_thread().name.endswith("0)") else model.run)(f),
                 [feeds[:2], feeds[2:]], rounds=20)
    for (t, i), outs in got.items():
        for out in outs:
            np.testing.assert_array_equal(out["logits"], expected[2 * t + i]["logits"])


def test_waiting_callers_and_no_input_kept(tiny_session):
    model = CompiledModel(tiny_session.graph, tiny_session.assignment, num_threads=2, max_concurrency=1)
    feeds = _inputs(tiny_session, THREADS, 3)
    hammer(model.run, [[f] for f in feeds], rounds=10)
    assert model.executors == 1   # the others waited their turn
    x = np.array(feeds[0]["input"] if "input" in feeds[0] else next(iter(feeds[0].values())))
    ref = weakref.ref(x)
    out = model.run({next(iter(feeds[0])): x})
    del x
    gc.collect()
    assert ref() is None and all(not ex.fed for ex in model._idle)
    out[next(iter(out))][...] = 0   # outputs are the caller's own arrays
    assert np.abs(model.run(feeds[0])[next(iter(out))]).max() > 0


def test_blas_limit_applies_in_worker_threads():
    """threadpoolctl ignores limits set from any thread but the first that set one; ours do not,
    so a run from a worker thread keeps BLAS single-threaded as in the main thread."""
    from threadpoolctl import ThreadpoolController
    from workbench import routines
    routines.load_all()   # the kernels load SciPy's BLAS
    libs = libraries()
    assert libs
    taken = ThreadpoolController().limit(limits=2, user_api="blas")   # this thread takes control
    seen = []

    def worker():
        with blas_limit(1):
            seen.append([lib.get_num_threads() for lib in libs])
    try:
        th = threading.Thread(target=worker)
        th.start()
        th.join()
    finally:
        taken.restore_original_limits()
    assert seen == [[1] * len(libs)]
