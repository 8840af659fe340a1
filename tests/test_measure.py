"""Timing routines on a layer: several candidates are sampled in turns (each turn a lead-in run and
a timed one), each keeps its own samples."""
import time

import numpy as np
from onnx import helper

import workbench
from workbench import routines
from workbench.tuning.measure import time_routines
from onnx_helpers import make_model


def test_candidates_are_sampled_in_turns_and_keep_their_own_timings():
    calls = []

    class Slow(routines.Routine):
        op, algo = "Relu", "testslow"

        @classmethod
        def applies(cls, layer, specs):
            return True

        @classmethod
        def run(cls, layer, state, args, outs, num_threads):
            calls.append("slow")
            time.sleep(0.002)
            np.maximum(args[0], 0, out=outs[0])

    class Fast(Slow):
        algo = "testfast"

        @classmethod
        def run(cls, layer, state, args, outs, num_threads):
            calls.append("fast")
            np.maximum(args[0], 0, out=outs[0])

    class View(Slow):
        algo, view_of_input = "testview", 0

    try:
        graph = workbench.load(make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")],
                                          [("x", [1, 2, 3, 4])], [("y", None)]).SerializeToString())
        slow, view, fast = time_routines(graph, graph.layer("relu"), [Slow, View, Fast], repeats=5, warmup=1)
        assert len(slow.samples) == len(fast.samples) == len(view.samples) == 5
        assert slow.median >= 0.002 > fast.median and view.median == 0
        # warm-up of each, then a turn of each per round: an untimed run, then the timed one
        assert calls == ["slow", "fast"] + ["slow", "slow", "fast", "fast"] * 5
    finally:
        for r in (Slow, Fast, View):
            del routines._REGISTRY["Relu"][r.descriptor]
