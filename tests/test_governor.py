"""The thread governor (workbench/runtime/governor.py) on scripted run times: it keeps full threads on a
quiet machine, moves to one thread fewer when full threads turn slow and fewer threads are
faster, probes and returns when the load goes, backs off (doubling) when fewer threads do not
help; and a compiled model run on the reduced count computes what ONNX Runtime computes."""
import pytest

from workbench import Session, zoo
from workbench.onnx_io.ort import run_onnxruntime
from workbench.runtime.compiled import CompiledModel
from workbench.runtime.governor import ThreadGovernor

from test_session import assert_close


def drive(gov, times_of, runs, idle_of=lambda i: False):
    """Run ``runs`` scripted runs: ``times_of(i, threads)`` is each run's time, ``idle_of(i)``
    whether it came after an idle pause; the choices."""
    chosen = []
    for i in range(runs):
        t = gov.choose()
        chosen.append(t)
        gov.record(t, times_of(i, t), idle_of(i))
    return chosen


def test_quiet_machine_keeps_full_threads():
    gov = ThreadGovernor(2)
    assert drive(gov, lambda i, t: 0.010 * (1 + 0.05 * (i % 3)), 200) == [2] * 200
    assert gov.switches == 0 and gov.quiet == pytest.approx(0.0105)


def test_load_moves_to_fewer_threads_probes_and_returns():
    gov = ThreadGovernor(2, window=5, probe_every=12)
    loaded = range(10, 80)

    def times(i, t):
        if i in loaded:
            return 0.025 if t == 2 else 0.018   # a busy core: 2 threads stall, 1 thread fits
        return 0.010 if t == 2 else 0.017
    chosen = drive(gov, times, 120)
    assert chosen[:10] == [2] * 10
    first_one = chosen.index(1)
    assert 10 < first_one <= 15                          # a window of slow full-thread runs first
    during = chosen[first_one:80]
    probes = [k for k, t in enumerate(during) if t == 2]
    assert len(probes) == len(during) // 12 and all(p % 12 == 11 for p in probes)   # probes only
    after = chosen[80:]
    assert after.index(2) <= 12 and after[after.index(2):] == [2] * (len(after) - after.index(2))


def test_fewer_threads_that_do_not_help_back_off():
    gov = ThreadGovernor(2, window=5, backoff=16)

    def times(i, t):
        if i < 10:
            return 0.010
        return 0.020 if t == 2 else 0.030    # slow everywhere (a noisy host): fewer threads lose
    chosen = drive(gov, times, 200)
    tries = [k for k in range(1, len(chosen)) if chosen[k] == 1 and chosen[k - 1] == 2]
    assert len(tries) >= 2
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    assert all(g2 > g1 for g1, g2 in zip(gaps, gaps[1:]))   # each rejection waits longer
    assert chosen.count(1) <= 3 * len(tries)                 # three runs per try, no more


def test_runs_after_idle_are_judged_among_themselves():
    # A benchmark's rounds: a pause, a lead-in run (after idle, 1.9x slower by itself), a timed
    # one; then a stretch of first-run-after-idle repeats only.  A quiet machine: no switch.
    gov = ThreadGovernor(2, window=5)
    quiet = drive(gov, lambda i, t: 0.019 if i % 2 == 0 or i >= 100 else 0.010, 200, lambda i: i % 2 == 0 or i >= 100)
    assert quiet == [2] * 200 and gov.switches == 0
    assert gov.quiet_of == {False: pytest.approx(0.010), True: pytest.approx(0.019)}
    # Then a busy core: full threads slow down in both kinds of run, one thread does not.
    loaded = drive(gov, lambda i, t: (0.060 if t == 2 else 0.022) * (1.9 if i % 2 == 0 else 1), 60,
                   lambda i: i % 2 == 0)
    assert loaded.index(1) <= 12 and loaded[20:].count(1) >= 30


def test_one_thread_has_nothing_to_govern():
    gov = ThreadGovernor(1)
    assert not gov.active
    assert drive(gov, lambda i, t: 0.01 * (1 + 10 * (i > 5)), 50) == [1] * 50


def test_compiled_model_runs_on_the_reduced_count(tmp_path):
    model = zoo.build("mobilenet_v2", resolution=32)
    s = Session.from_onnx(model, num_threads=2, db=tmp_path / "p.sqlite")
    s.profile(repeats=1)
    s.tune()
    cm = CompiledModel(s.graph, s.assignment, num_threads=2, adaptive_threads=True)
    assert cm.governor is not None and cm.governor.full == 2
    cm.governor.current = cm.governor.reduced          # as after a load was seen
    cm.governor.since_probe = -10 ** 6                 # and no probe in this test
    feeds = s.random_inputs(seed=4)
    ref = run_onnxruntime(model, feeds)
    for _ in range(2):
        assert_close(cm.run(feeds), ref)
    assert CompiledModel(s.graph, s.assignment, num_threads=2).governor is None   # off by default
