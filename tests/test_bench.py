"""``python benchmarks/bench.py``: the side-by-side benchmark, on a tiny schedule (patch features,
quick preset, 64-texel textures, 2 + 2 steps) so that it runs in seconds."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys

import pytest
import torch
from PIL import Image

from conftest import FACES, REPO, need

sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark scripts import each other by name
import bench  # noqa: E402  (benchmarks/bench.py)

PHOTOS = ("ffhq_00128.png", "deca_exp_1.jpg")
METHODS = "sampled,initial,strotss,facerefiner-patches,initial-blurred"
TINY = ["--preset", "quick", "--size", "64", "--steps", "2,2", "--features", "patches", "--threads", "1"]


def run_bench(*args) -> tuple[int, str]:
    """``bench.main`` in this process; (exit status, stderr). Restores torch's thread count."""
    threads = torch.get_num_threads()
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            code = bench.main([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)
    return code, buf.getvalue()


def photos() -> list:
    return [need(FACES / p) for p in PHOTOS]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    ph = photos()
    d = tmp_path_factory.mktemp("bench")
    bad = d / "bad.jpg"
    bad.write_text("this is not a photo\n")
    out = d / "out"
    args = [*ph, bad, "-o", out, "--methods", METHODS, *TINY]
    code, err = run_bench(*args)
    return {"out": out, "args": args, "code": code, "err": err, "bad": bad}


def test_bench_writes_every_pair_and_the_results(first_run):
    out, err = first_run["out"], first_run["err"]
    assert first_run["code"] == 2, err  # the bad photo failed, the others finished
    for name in ("results.json", "results.md", "grid.png", "metrics.png"):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    methods = METHODS.split(",")
    assert res["settings"]["methods"] == methods
    assert res["machine"]["cpu_count"] >= 1 and res["machine"]["torch_threads"] == 1 and res["machine"]["device"] == "cpu"
    runs = {(r["photo"], r["method"]): r for r in res["runs"]}
    for stem in ("ffhq_00128", "deca_exp_1"):
        for m in methods:
            r = runs[(stem, m)]
            assert r["status"] == "ok", r
            v = r["values"]
            assert v["psnr"] is not None and 20 < v["psnr"] < 60, (stem, m, v)
            assert 0 < v["ssim"] <= 1 and v["time_s"] > 0 and v["rss_mb"] > 50
            assert (v["seam"] is None) == (m == "sampled")
            assert v["fill_psnr"] is None and "skipped" in r["metrics"]["completion"]
            if m != "sampled":
                assert "--completion" in r["metrics"]["completion"]["skipped"]
            idn = r["metrics"]["identity"]
            if "skipped" not in idn:  # dlib installed
                assert v["id"] is not None and (v["id+30"] is None) == (m == "sampled")
            folder = out / r["folder"]
            assert folder == out / "runs" / m / stem
            for f in ("texture.png", "views.png", "report.json"):
                assert (folder / f).is_file(), folder / f
            assert Image.open(folder / "texture.png").size == (64, 64)
            rep = json.loads((folder / "report.json").read_text())
            assert rep["bench"]["method"] == m and rep["metrics"]["cost"]["wall_s"] > 0
    # the bad photo: one failure line, every pair of it failed, the rest unaffected
    fails = [ln for ln in err.splitlines() if ln.startswith("failed")]
    assert len(fails) == 1 and "bad.jpg" in fails[0], err
    assert all(runs[("bad", m)]["status"] == "failed" for m in methods)
    assert res["counts"] == {"ok": 10, "computed": 10, "reused": 0, "failed": 5, "not_run": 0}
    # the blurred stand-in loses visible detail; the sampled texture is the visible reference
    assert runs[("ffhq_00128", "initial-blurred")]["values"]["psnr"] < runs[("ffhq_00128", "initial")]["values"]["psnr"]
    md = (out / "results.md").read_text()
    assert "## Medians" in md and "## Wins" in md and "## Failures" in md
    assert all(f"### {m}" in md for m in methods)
    assert "| facerefiner-patches | strotss |" in md  # the pair compares like with like
    pairs = {(p["a"], p["b"]) for p in res["comparisons"]}
    assert ("facerefiner-patches", "strotss") in pairs and ("facerefiner-patches", "initial") in pairs
    assert all(p["wins"]["psnr"]["n"] == 2 for p in res["comparisons"])
    grid = out / "grid.png"
    assert grid.stat().st_size < 1_000_000
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.width > im.height
    with Image.open(out / "metrics.png") as im:
        assert im.format == "PNG"


def test_bench_rerun_recomputes_nothing(first_run):
    out = first_run["out"]
    files = sorted(out.glob("runs/*/*/*"))
    assert files
    before = {f: f.stat().st_mtime_ns for f in files}
    code, err = run_bench(*first_run["args"])
    assert code == 2, err
    assert "0 computed, 10 reused" in err, err
    assert {f: f.stat().st_mtime_ns for f in sorted(out.glob("runs/*/*/*"))} == before
    res = json.loads((out / "results.json").read_text())
    assert res["counts"]["computed"] == 0 and res["counts"]["reused"] == 10


def test_bench_redoes_only_pairs_whose_settings_changed(first_run):
    out = first_run["out"]
    ph = photos()
    code, err = run_bench(ph[0], "-o", out, "--methods", "initial,strotss", *TINY[:5], "3,2", *TINY[6:])
    assert code == 0, err
    assert "1 computed, 1 reused" in err, err  # --steps changes strotss, not the initial texture
    rep = json.loads((out / "runs" / "strotss" / "ffhq_00128" / "report.json").read_text())
    assert rep["refine"]["config"]["steps"] == [3, 2]


def test_bench_completion_and_paper_subset(tmp_path):
    ph = photos()
    out = tmp_path / "out"
    code, err = run_bench(ph[1], "-o", out, "--methods", "sampled,initial,strotss,paper", "--completion",
                          "--no-identity", "--paper-subset", "0", *TINY)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    runs = {r["method"]: r for r in res["runs"]}
    assert runs["paper"]["status"] == "not run" and "VGG" not in err  # no VGG16 built for nothing
    assert not (out / "runs" / "paper").exists()
    assert "skipped" in runs["sampled"]["metrics"]["completion"]
    for m in ("initial", "strotss"):
        c = runs[m]["metrics"]["completion"]
        assert c["texels"] > 0 and 10 < c["psnr"] < 60, c
        assert (out / "runs" / m / "deca_exp_1" / "texture_masked.png").is_file()
        assert runs[m]["metrics"]["identity"] == {"skipped": "disabled (--no-identity)"}
    assert "not run (--paper-subset 0)" in (out / "results.md").read_text()
    # a pair made with the completion probe serves a run without it (its other metrics are the same)
    code, err = run_bench(ph[1], "-o", out, "--methods", "initial,strotss", "--no-identity", *TINY)
    assert code == 0 and "0 computed, 2 reused" in err, err
    # not the other way round
    code, err = run_bench(ph[1], "-o", tmp_path / "other", "--methods", "initial", "--no-identity", *TINY)
    assert code == 0, err
    code, err = run_bench(ph[1], "-o", tmp_path / "other", "--methods", "initial", "--no-identity", "--completion",
                          *TINY)
    assert code == 0 and "1 computed, 0 reused" in err, err


def test_bench_completion_probes(tmp_path):
    """--probes: one masked run per kind, per-kind columns and files; a pair made with more probes
    serves a run with fewer; the probe sheet shows them."""
    ph = photos()
    out = tmp_path / "out"
    code, err = run_bench(ph[1], "-o", out, "--methods", "initial,strotss", "--completion", "--probes",
                          "hand,cheek", "--no-identity", *TINY)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["probes"] == ["cheek", "hand"]  # one order, whatever the command's
    for m in ("initial", "strotss"):
        folder = out / "runs" / m / "deca_exp_1"
        rep = json.loads((folder / "report.json").read_text())
        assert rep["bench"]["settings"]["probes"] == ["cheek", "hand"]
        c = rep["metrics"]["completion"]
        assert sorted(c["probes"]) == ["cheek", "hand"]
        assert c["psnr"] == c["probes"]["cheek"]["psnr"] and c["kind"] == "cheek"  # the block as before
        for kind in ("cheek", "hand"):
            pc = c["probes"][kind]
            assert pc["kind"] == kind and pc["texels"] > 0 and 10 < pc["psnr"] < 60 and pc["detail"] >= 0, pc
            assert pc["identity"] == {"skipped": "disabled (--no-identity)"}
            assert (folder / f"mask_{kind}.png").is_file()
            with Image.open(folder / f"mask_{kind}.png") as im:
                assert im.size == tuple(rep["image_size"])
        assert (folder / "texture_masked.png").is_file() and (folder / "texture_masked_hand.png").is_file()
        v = next(r for r in res["runs"] if r["method"] == m)["values"]
        assert v["fill_detail"] == c["probes"]["cheek"]["detail"] and v["hand:psnr"] == c["probes"]["hand"]["psnr"]
    assert {"hand:psnr", "hand:detail", "hand:id+30", "cheek:ssim"} <= set(res["metric_columns"])
    assert res["summary"]["initial"]["hand:detail"]["n"] == 1
    md = (out / "results.md").read_text()
    assert "## Completion probes" in md and "### Probe: hand" in md and "### Probe: cheek" in md
    assert "fill detail" in md and "| deca_exp_1 | strotss |" in md
    # fewer probes: reused; another probe: redone
    code, err = run_bench(ph[1], "-o", out, "--methods", "initial", "--completion", "--probes", "hand",
                          "--no-identity", *TINY)
    assert code == 0 and "0 computed, 1 reused" in err, err
    code, err = run_bench(ph[1], "-o", out, "--methods", "initial", "--completion", "--probes", "fringe",
                          "--no-identity", *TINY)
    assert code == 0 and "1 computed, 0 reused" in err, err
    assert (out / "runs" / "initial" / "deca_exp_1" / "mask_fringe.png").is_file()
    # the sheet: one row per photo and probe of results.json (fringe now), columns photo, methods, truth
    img = bench.probe_sheet(out, tile=64)
    assert img.width == 3 * (64 + 6) + 6 and img.height > 64
    from facerefiner.errors import InputError

    with pytest.raises(InputError, match="no probe"):
        bench.probe_sheet(out, kinds=["sunglasses"])


def test_probe_sheet_script(tmp_path):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("probe_sheet", REPO / "benchmarks" / "probe_sheet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        assert mod.main([str(tmp_path), "-o", str(tmp_path / "s.png")]) == 1
    assert buf.getvalue().startswith("error:") and "results.json" in buf.getvalue()
    assert len(buf.getvalue().strip().splitlines()) == 1


def test_bench_unknown_probe_is_a_usage_error(tmp_path):
    code, err = run_bench(tmp_path / "p.jpg", "-o", tmp_path / "out", "--completion", "--probes", "cheek,scarf")
    assert code == 1 and "--probes" in err and "'scarf'" in err and "sunglasses" in err


def test_bench_unknown_method_is_a_usage_error(tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"")
    code, err = run_bench(photo, "-o", tmp_path / "out", "--methods", "sampled,nonsense")
    assert code == 1
    assert "--methods" in err and "nonsense" in err and "facerefiner-vgg16" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["--steps", "2,x"], ["--preset", "fast"], ["--size", "8"], ["--paper-subset", "-1"]])
def test_bench_bad_options_exit_1(tmp_path, args):
    code, err = run_bench(tmp_path / "p.jpg", "-o", tmp_path / "out", *args)
    assert code == 1 and "error" in err


def test_wins_and_comparison_rules():
    vals = {"a": {"p1": {"psnr": 30.0, "id": 0.3, "seam": 1.1}, "p2": {"psnr": 25.0, "id": 0.5, "seam": 0.95},
                  "p3": {"psnr": 20.0, "id": None, "seam": None}},
            "b": {"p1": {"psnr": 29.0, "id": 0.4, "seam": 0.8}, "p2": {"psnr": 25.001, "id": 0.2, "seam": 1.0},
                  "p3": {"psnr": 21.0, "id": 0.1, "seam": 1.0}}}
    w = bench.wins(vals, "a", "b", ["p1", "p2", "p3"])
    assert w["psnr"] == {"a": 1, "b": 1, "ties": 1, "n": 3}  # 0.001 dB is a tie
    assert w["id"] == {"a": 1, "b": 1, "ties": 0, "n": 2}     # lower is better; p3 lacks a's value
    assert w["seam"] == {"a": 1, "b": 1, "ties": 0, "n": 2}   # closest to 1 wins (1.1 beats 0.8)
    assert "rss_mb" not in w
    # the detail ratio: closest to 1 wins, and a flat texture's 0 is the farthest from 1
    detail = bench.probe_metrics("hand")[2]
    assert detail.key == "hand:detail" and detail.better == "one"
    assert bench.compare(detail, 0.0, 0.3) == -1 and bench.compare(detail, 0.3, 0.0) == 1
    assert bench.compare(detail, 0.0, 0.0) == 0 and bench.compare(detail, 0.8, 1.3) == 1
    cols = bench.metric_columns(["hand"])
    w2 = bench.wins({"a": {"p": {"hand:detail": 0.9}}, "b": {"p": {"hand:detail": 0.5}}}, "a", "b", ["p"], cols)
    assert w2["hand:detail"] == {"a": 1, "b": 0, "ties": 0, "n": 1} and w2["psnr"]["n"] == 0
    flat = bench.flat_metrics({"fidelity": {"psnr": float("inf"), "ssim": 0.9}, "identity": {"skipped": "x"},
                               "seam": {"local_ratio": 1.2}, "completion": {"skipped": "y"},
                               "cost": {"wall_s": 3.0, "peak_rss_mb": 400.0}})
    assert flat["psnr"] is None and flat["ssim"] == 0.9 and flat["id"] is None and flat["seam"] == 1.2
    assert flat["time_s"] == 3.0 and flat["fill_psnr"] is None
    assert bench.median([None, 3.0, 1.0, 2.0]) == 2.0 and bench.median([None]) is None


def test_png_budget_and_blur():
    g = torch.Generator().manual_seed(0)
    noise = (torch.rand(3, 900, 900, generator=g) * 255).byte().permute(1, 2, 0).numpy()
    data = bench._png_under(Image.fromarray(noise), 400_000)
    assert len(data) <= 400_000
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
    tex = torch.zeros(3, 64, 64)
    tex[:, :, 32:] = 1.0
    b = bench.blur_texture(tex, 64 / bench.BLUR_DIVISOR)
    assert b.shape == tex.shape and 0.3 < float(b[0, 10, 32]) < 0.7 and float(b[0, 10, 0]) < 0.01
    assert math.isclose(float(b.mean()), 0.5, abs_tol=0.01)
