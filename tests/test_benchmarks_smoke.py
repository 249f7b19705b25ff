"""The benchmark suite (benchmarks/suite.py) runs end to end for glassnet in a tiny configuration and writes
suite.json and RESULTS.md with the expected structure. Structure only: no timing assertions."""
import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_suite():
    spec = importlib.util.spec_from_file_location("bench_suite", os.path.join(ROOT, "benchmarks", "suite.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_suite_tiny_glassnet_only(tmp_path):
    suite = load_suite()
    suite.main(["--preset", "tiny", "--systems", "glassnet", "--in-process", "--out-dir", str(tmp_path)])

    report = json.loads((tmp_path / "suite.json").read_text())
    assert report["mode"] == "tiny" and report["config"]["reps"] == 1
    for key in ("cpu_model", "cpu_count", "python", "versions", "thread_env"):
        assert key in report["machine"]
    assert set(report["workloads"]) == {"W1", "W2", "W3", "W4", "W5"}
    for workload, systems in report["workloads"].items():
        run = systems["glassnet"]["runs"][0]
        assert "error" not in run, (workload, run)
        assert run["peak_rss_mib"] > 0
    assert report["workloads"]["W5"]["python"]["runs"][0]["wall_ms"] > 0
    summary = report["workloads"]["W2"]["glassnet"]["summary"]
    assert {"epoch1_s", "epoch2_s", "samples_per_s", "peak_rss_mib"} <= set(summary)
    assert summary["epoch2_s"]["n"] == 1
    w4 = report["workloads"]["W4"]["glassnet"]["summary"]
    assert {"w1_row_us", "w2_row_us", "w1_batch_rows_per_s", "w2_batch_rows_per_s"} <= set(w4)

    axes = report["scaling"]["axes"]
    assert set(axes) == {"batch", "width", "depth"}
    assert all(p["glassnet"]["step_ms"] > 0 for points in axes.values() for p in points)
    assert set(report["scaling"]["exponent"]) == {"batch", "width", "depth"}

    targets = report["targets"]
    assert len(targets) == len(suite.TARGETS)
    assert {t["status"] for t in targets} <= {"met", "NOT met", "n/a"}
    by_target = {t["target"]: t for t in targets}
    assert by_target[">=4x faster than PyTorch (warm fit)"]["status"] == "n/a"  # torch was not run
    assert by_target["1-row predict <= 10 us (W1 model)"]["status"] in ("met", "NOT met")

    md = (tmp_path / "RESULTS.md").read_text()
    assert md.startswith("# glassnet performance suite")
    for heading in ("## Targets", "## W1", "## W2", "## W3", "## W4", "## W5", "## Scaling sweep"):
        assert heading in md
    assert "| W5 | import glassnet <= 150 ms" in md
