"""The widgets' precision controls: the cosine budget field, pinning a layer's data type, and the
plan table's precision and sensitivity columns, checked against the Session."""
import pytest

from workbench import Session, zoo
from workbench.ui import views
from workbench.ui.widgets import Workbench


@pytest.fixture
def bench(tmp_path):
    session = Session.from_onnx(zoo.build("mobilenet_v2", resolution=32), num_threads=2, db=tmp_path / "db.sqlite")
    return Workbench(session, export_path=str(tmp_path / "tuned.onnx"))


def test_precision_pins_and_sensitivity(bench):
    from workbench.routines.qint8 import kernels
    s = bench.session
    if kernels() is None:
        pytest.skip("no qint8 routine on this CPU")
    s.calibrate([s.random_inputs(seed=100 + i) for i in range(3)])
    c = bench.controls
    c.precision.value = "float32,qint8"
    c.min_cosine.value = "two nines"
    c.buttons["precision"].click()
    assert "min cosine: expected a number" in c.status.value
    c.min_cosine.value = "0.9"
    c.buttons["precision"].click()
    assert s.min_cosine == 0.9 and "qint8" in s.low_precision
    layer = next(n for n, d in s.plan.choice.items() if ":qint8:" in d)
    c.layer.value = layer
    c.layer_precision.value = "float32"
    c.buttons["pin_precision"].click()
    assert s.precision_pins == {layer: "float32"} and "Retune to apply" in c.status.value
    c.buttons["retune"].click()
    assert ":float32:" in s.plan.choice[layer]
    c.buttons["sensitivity"].click()
    rows = {r["name"]: r for r in views.plan_rows(s)}
    sens = s.sensitivities
    assert sens and all(rows[n]["sensitivity"] == f"{e.cosine:.6f}" for n, e in sens.items())
    assert all(rows[n]["precision"] == s.plan.choice[n].split(":")[1] for n in rows)
    first = next(iter(sens))
    assert f"{sens[first].cosine:.6f}" in bench.plan_table.html.value and "most sensitive" in c.status.value
