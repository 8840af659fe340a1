"""Profile database: round trip, corruption handling, concurrent writers."""
import multiprocessing as mp

import pytest

import workbench
from workbench import zoo
from workbench.tuning.profiledb import ProfileDatabase, ProfileDatabaseError, Record, signature


def test_round_trip_and_fingerprint_isolation(tmp_path):
    db = ProfileDatabase(tmp_path / "p.sqlite", fingerprint_value="machine-a")
    db.put([Record("routine", "sig1", "cpu:float32:nchw/im2col", 1.5e-3, 1e-5, [1.4e-3, 1.5e-3, 1.6e-3], 0.01)])
    got = db.get("routine", "sig1", "cpu:float32:nchw/im2col")
    assert got.median == 1.5e-3 and got.samples == [1.4e-3, 1.5e-3, 1.6e-3] and got.prepare_s == 0.01
    other = ProfileDatabase(tmp_path / "p.sqlite", fingerprint_value="machine-b")
    assert other.get("routine", "sig1", "cpu:float32:nchw/im2col") is None and other.records() == []
    db.forget()
    assert db.records() == []


def test_identical_layers_share_a_signature():
    graph = workbench.load(zoo.build("resnet50", resolution=64))
    sigs = {}
    for layer in graph:
        sigs.setdefault(signature(layer, graph.input_specs(layer)), []).append(layer.name)
    # layer2.1.conv2 and layer2.2.conv2 (same op, attrs and shapes, other weights) are one signature
    assert any({"layer2.1.conv2", "layer2.2.conv2"} <= set(names) for names in sigs.values())
    assert len(sigs) < len(graph)


@pytest.mark.parametrize("content", [b"this is not sqlite at all" * 40, b"SQLite format 3\x00" + b"\x00\xff" * 300])
def test_corrupt_file_is_a_clear_error_and_can_be_rebuilt(tmp_path, content):
    path = tmp_path / "profiles.sqlite"
    path.write_bytes(content)
    neighbour = tmp_path / "my_notes.txt"
    neighbour.write_text("keep me")
    with pytest.raises(ProfileDatabaseError, match=r"profiles\.sqlite.*rebuild"):
        ProfileDatabase(path, fingerprint_value="m")
    moved = ProfileDatabase.rebuild(path)
    assert moved.read_bytes() == content and neighbour.read_text() == "keep me"
    db = ProfileDatabase(path, fingerprint_value="m")
    db.put([Record("adapt", "s", "float32:nchw->nhwc", 1.0, 0.0, [1.0])])
    assert len(db.records()) == 1


def _writer(path, worker, n):
    db = ProfileDatabase(path, fingerprint_value="shared")
    for i in range(n):
        db.put([Record("routine", f"sig{i}", f"r{worker}", float(i), 0.0, [float(i)] * 5)])
    db.close()


def test_concurrent_writers_do_not_corrupt(tmp_path):
    path = tmp_path / "profiles.sqlite"
    ProfileDatabase(path, fingerprint_value="shared").close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 60)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    records = ProfileDatabase(path, fingerprint_value="shared").records()
    assert len(records) == 3 * 60
    assert {(r.name, r.median) for r in records} == {(f"r{w}", float(i)) for w in range(3) for i in range(60)}


def test_fingerprint_includes_the_build_and_its_kernel_sources():
    """The build flags and the kernel sources' digest are part of the fingerprint: records of a
    kernel rebuilt from changed sources are not reused."""
    import json
    from pathlib import Path

    import workbench
    from workbench.tuning.profiledb import fingerprint_facts
    info = Path(workbench.__file__).parent / "_kernels" / "build_info.json"
    assert info.exists()
    facts = fingerprint_facts(2)
    assert facts["build"] == json.loads(info.read_text())
    assert facts["build"]["kernel_sources"] and "-O3" in facts["build"]["compile_args"]
