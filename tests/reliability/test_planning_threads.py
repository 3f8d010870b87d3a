"""The header-reading threads of planning share one copy of each built-in camera: built once
per process, however many threads ask for it at the same moment (each build of the five
cameras costs ~0.1 s of CPU; eight threads used to build eight copies)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from ampoffset_dask.cameras import camera as camera_module
from ampoffset_dask.cameras import get_camera
from ampoffset_dask.pipeline.inputs import InputItem, _plan_one


def test_threads_asking_at_once_get_one_camera_built_once():
    camera_module._build_builtin.cache_clear()
    n = 8
    barrier = threading.Barrier(n)
    got = [None] * n

    def ask(i):
        barrier.wait()
        got[i] = get_camera("lsstcam")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(cam is got[0] for cam in got)
    info = camera_module._build_builtin.cache_info()
    assert info.misses == 1 and info.hits == n - 1


def test_planning_in_threads_builds_each_camera_once(sim4):
    # as planning's threads read remote headers: four files at the same moment
    camera_module._build_builtin.cache_clear()
    barrier = threading.Barrier(len(sim4))

    def plan(item):
        barrier.wait()
        return _plan_one(item, None)

    with ThreadPoolExecutor(len(sim4)) as pool:
        planned = [t for tasks in pool.map(plan, [InputItem(str(p)) for p in sim4])
                   for t in tasks]
    assert sorted(t.name for t in planned) == ["R22_S11", "R22_S12", "R22_S21", "R22_S22"]
    assert all(not t.error and t.detector is not None for t in planned)
    # every built-in camera was looked at (the detector's camera is guessed), each built once
    info = camera_module._build_builtin.cache_info()
    assert info.misses == info.currsize == len(camera_module.list_cameras())


def test_shared_amp_layouts_give_each_detector_its_own_geometry():
    # a camera parses each amp layout once and its detectors share the amps: every detector
    # of every built-in camera equals the one of a camera describing only that detector
    import json

    for name in camera_module.list_cameras():
        cam = get_camera(name)
        doc = json.loads((camera_module._DATA_DIR / camera_module._BUILTIN[name]).read_text())
        for k, det in enumerate(doc["detectors"]):
            alone = camera_module.Camera({**doc, "detectors": [{"id": k, **det}]}, name=name)
            key = str(det["name"])
            assert alone[key] == cam[key], (name, key)
            assert alone.raw_amps(key) == cam.raw_amps(key), (name, key)
            assert alone.info(key) == cam.info(key), (name, key)
