"""Every demo runs end to end through main(argv) with tiny settings and writes its outputs."""
import contextlib
import io
import json
import shutil
import sys

import numpy as np
import pytest

from minitheory.demos import (bigram_scale, bigram_transfer, lowrank_sparse, rank_growth,
                              rank_growth_assumptions, rank_growth_full, softmax_vs_linear,
                              sparse_bigrams)
from minitheory.demos import _common
from minitheory.demos._common import load_metrics

TINY = {
    rank_growth: ["--n-seq", "16", "--n-tokens", "4", "--alphas", "1e-2", "1e-4",
                  "--detail-alpha", "1e-2", "--tbar-max", "1.0"],
    rank_growth_full: ["--n-seq", "8", "--n-tokens", "4", "--d", "3", "--alphas", "1", "1e-2",
                       "--detail-alpha", "1e-2", "--tbar-max", "0.5", "--steps-alpha-one", "20",
                       "--log-every", "5"],
    rank_growth_assumptions: ["--n-seq", "32", "--n-tokens", "4", "--alpha", "1e-2",
                              "--tbar-max", "1.5", "--epochs", "50"],
    lowrank_sparse: ["--steps", "6", "--n-train", "64", "--n-test", "32", "--m", "8",
                     "--ranks", "1", "2", "--spectra-steps", "1", "6", "--prune-rates", "0",
                     "0.5", "1", "--n-random", "2", "--seeds", "2"],
    sparse_bigrams: ["--N", "4", "--T", "6", "--steps", "60", "--tau", "20", "--log-every", "5",
                     "--seeds", "2", "--batch", "16"],
    bigram_transfer: ["--N", "4", "--T", "6", "--batch", "16", "--pretrain-steps", "40",
                      "--steps", "40", "--tau", "10", "--log-every", "5"],
    softmax_vs_linear: ["--N", "4", "--T", "6", "--steps", "40", "--log-every", "5"],
    bigram_scale: ["--quick", "--steps", "20", "--tau", "5", "--comparisons"],
}
PNGS = {bigram_transfer: ["bigram_transfer"], softmax_vs_linear: ["softmax_vs_linear"],
        bigram_scale: ["bigram_scale"],
        sparse_bigrams: ["sparse_bigrams_distances", "sparse_bigrams_signals",
                         "sparse_bigrams_normalization", "sparse_bigrams_attention"],
        rank_growth: ["rank_growth_loss", "rank_growth_entries"],
        lowrank_sparse: ["lowrank_sparse_rank", "lowrank_sparse_spectra",
                         "lowrank_sparse_pruning", "lowrank_sparse_training"],
        rank_growth_full: ["rank_growth_full"],
        rank_growth_assumptions: ["rank_growth_assumptions"]}


_COMPLETED = {}


@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    """``completed(demo) -> (folder, stdout)``: one full run per demo with TINY settings and
    seed 3, shared by the tests that only read it (each copies the folder before changing it)."""
    def get(demo):
        if demo not in _COMPLETED:
            out = tmp_path_factory.mktemp(demo.NAME)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                code = demo.main(TINY[demo] + ["--out", str(out), "--seed", "3"])
            assert code == 0
            _COMPLETED[demo] = (out, buf.getvalue())
        return _COMPLETED[demo]
    return get


def _copy(completed, demo, tmp_path):
    src, _ = completed(demo)
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("demo", list(TINY), ids=lambda m: m.NAME)
def test_demo_runs_end_to_end(demo, completed):
    tmp_path, out = completed(demo)
    for name in PNGS[demo]:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["seed"] == 3
    metrics = load_metrics(tmp_path)                       # allow_pickle=False
    # no NaN anywhere (inf is allowed: "never activated")
    assert metrics and not any(np.isnan(v).any() for v in metrics.values() if v.dtype.kind == "f")
    assert "saved" in out and str(tmp_path) in out
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]   # no leftovers


@pytest.mark.parametrize("demo", list(TINY), ids=lambda m: m.NAME)
def test_help_and_bad_arguments(demo, capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(["--help"])
    assert info.value.code == 0 and "--out" in capsys.readouterr().out
    flag, name = {lowrank_sparse: ("--lr", "lr"), sparse_bigrams: ("--eta1", "eta1"),
                  bigram_transfer: ("--batch", "batch"), softmax_vs_linear: ("--lr-W", "lr_W"),
                  bigram_scale: ("--T", "T")}.get(demo, ("--eta", "eta"))
    with pytest.raises(SystemExit) as info:
        demo.main([flag, "-1"])
    assert info.value.code == 2 and f"{name} must be in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        demo.main(["--seed", "many"])
    assert info.value.code == 2


def test_divergence_stops_with_a_message_and_keeps_metrics(tmp_path, capsys):
    argv = TINY[rank_growth] + ["--alphas", "1e-8", "1e-16", "--detail-alpha", "1e-8",
                                "--eta", "0.9", "--tbar-max", "3", "--out", str(tmp_path)]
    assert rank_growth.main(argv) == 1
    err = capsys.readouterr().err
    assert "diverged at step" in err and "eta=0.9" in err and "Warning" not in err
    m = load_metrics(tmp_path)
    assert int(m["stopped_step"]) == len(m["step"]) and np.all(np.isfinite(m["loss"]))
    assert str(m["stopped_reason"]) == "diverged"


@pytest.mark.parametrize("demo", list(TINY), ids=lambda m: m.NAME)
def test_same_seed_gives_bitwise_identical_metrics(demo, tmp_path):
    # run() twice with the CLI's config (no plotting needed: the metrics are what is saved)
    cfg, _, _, _ = _common.parse(demo.Config, TINY[demo], prog="t", description="",
                                 default_out=str(tmp_path))
    ma, _, err_a = demo.run(cfg)
    mb, _, err_b = demo.run(cfg)
    assert err_a is None and err_b is None and ma.keys() == mb.keys()
    for k in ma:
        if not k.startswith("timing/"):                     # wall-clock timings differ
            np.testing.assert_array_equal(np.asarray(ma[k]), np.asarray(mb[k]), err_msg=k)


class _CtrlC:
    """A progress callback that presses Ctrl-C on its third call (inside a training loop)."""

    calls = 0

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, step, total):
        _CtrlC.calls += 1
        if _CtrlC.calls == 3:
            raise KeyboardInterrupt


@pytest.mark.parametrize("demo", list(TINY), ids=lambda m: m.NAME)
def test_ctrl_c_saves_the_metrics_computed_so_far(demo, tmp_path, monkeypatch, capsys):
    _CtrlC.calls = 0
    monkeypatch.setattr(_common, "Progress", _CtrlC)
    assert demo.main(TINY[demo] + ["--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "interrupted by Ctrl-C" in err and str(tmp_path) in err
    m = load_metrics(tmp_path)
    assert str(m["stopped_reason"]) == "interrupted" and int(m["stopped_step"]) >= 0
    assert (tmp_path / "config.json").exists()


def test_out_folder_keeps_files_that_are_not_the_demos(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "figure.png").write_bytes(b"not a demo figure")
    assert rank_growth.main(TINY[rank_growth] + ["--out", str(tmp_path)]) == 0
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "figure.png").read_bytes() == b"not a demo figure"


def test_lowrank_sparse_divergence_keeps_metrics(tmp_path, capsys):
    assert lowrank_sparse.main(TINY[lowrank_sparse] + ["--lr", "1e200", "--out", str(tmp_path)]) == 1
    assert "diverged at step" in capsys.readouterr().err
    m = load_metrics(tmp_path)
    assert m["test_hinge"].shape[0] == int(m["stopped_step"])


def test_sparse_bigrams_divergence_keeps_metrics(tmp_path, capsys):
    argv = TINY[sparse_bigrams] + ["--eta1", "50", "--no-ablation", "--out", str(tmp_path)]
    assert sparse_bigrams.main(argv) == 1
    assert "diverged at step" in capsys.readouterr().err
    assert "proposed/dist_A" in load_metrics(tmp_path)


@pytest.mark.parametrize("demo", list(TINY), ids=lambda m: m.NAME)
def test_replot_redraws_from_saved_metrics_without_training(demo, completed, tmp_path,
                                                            monkeypatch, capsys):
    _, first = completed(demo)
    tmp_path = _copy(completed, demo, tmp_path)
    for name in PNGS[demo]:
        (tmp_path / f"{name}.png").unlink()
    monkeypatch.setattr(demo, "run", lambda *a, **k: pytest.fail("--replot must not train"))
    assert demo.main(["--replot", "--out", str(tmp_path)]) == 0
    again = capsys.readouterr().out
    for name in PNGS[demo]:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    # the printed report is the same, recomputed from the saved metrics
    report = lambda text: [line for line in text.splitlines()  # noqa: E731
                           if line and not line.startswith(("saved", "redrew", "timings"))]
    assert report(again) == report(first)


def test_replot_needs_a_completed_run(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        rank_growth.main(["--replot", "--out", str(tmp_path)])
    assert info.value.code == 2 and "run the demo with --out" in capsys.readouterr().err
    _CtrlC.calls = 0
    monkeypatch.setattr(_common, "Progress", _CtrlC)
    assert rank_growth.main(TINY[rank_growth] + ["--out", str(tmp_path)]) == 130
    assert rank_growth.main(["--replot", "--out", str(tmp_path)]) == 1
    assert "stopped early (interrupted" in capsys.readouterr().err


def test_demo_index_lists_every_demo_and_runs_them_all(tmp_path, monkeypatch, capsys):
    from minitheory.demos import __main__ as index
    assert index.main([]) == 0
    out = capsys.readouterr().out
    for name in index.DEMOS:
        assert name in out
    calls = []
    for name in index.DEMOS:
        module = __import__(f"minitheory.demos.{name}", fromlist=["main"])
        monkeypatch.setattr(module, "main", lambda argv, name=name: calls.append((name, argv)) or 0)
    assert index.main(["--all", "--out", str(tmp_path), "--skip", "bigram_scale"]) == 0
    assert [c[0] for c in calls] == [n for n in index.DEMOS if n != "bigram_scale"]
    assert calls[0][1] == ["--out", str(tmp_path / "rank_growth")]
    assert "[1/7] rank_growth" in capsys.readouterr().err
    # --out and --skip without --all would silently only list: refused
    for argv in (["--out", str(tmp_path)], ["--skip", "bigram_scale"]):
        with pytest.raises(SystemExit) as info:
            index.main(argv)
        assert info.value.code == 2 and "only with --all" in capsys.readouterr().err
    assert calls == [c for c in calls]                    # and nothing more was run
    assert len(calls) == len(index.DEMOS) - 1


BAD_SETTINGS = [
    (rank_growth, ["--alphas", "1e-2", "1.5"], "alphas[1] must be in"),
    (rank_growth, ["--alphas", "0"], "alphas[0] must be in"),
    (rank_growth, ["--d", "3"], "a_star must have shape"),
    (rank_growth, ["--detail-alpha", "1e-3"], "detail_alpha must be one of"),
    (lowrank_sparse, ["--M", "1"], "M must be in"),
    (lowrank_sparse, ["--M", "30"], "M must be in"),
    (lowrank_sparse, ["--n-rel", "15", "--n-conf", "6"], "n_rel + n_conf must be <= L"),
    (lowrank_sparse, ["--prune-rates", "0", "1.5"], "prune_rates[1] must be in"),
    (lowrank_sparse, ["--ranks", "21"], "ranks[0] must be in"),
    (lowrank_sparse, ["--sigma", "nan"], "sigma must be finite"),
    (sparse_bigrams, ["--Q", "60"], "Q must be in"),
    (sparse_bigrams, ["--N", "1"], "N must be in"),
    (sparse_bigrams, ["--normalize", "rows"], "normalize must be one of"),
    (sparse_bigrams, ["--sgd-etas", "-1"], "sgd_etas[0] must be in"),
    (sparse_bigrams, ["--lam", "nan"], "lam must be finite"),
    # options checked against each other, naming the option the user gave
    (lowrank_sparse, ["--ranks", "0"], "ranks[0] must be in [1, 20]"),
    (lowrank_sparse, ["--ranks", "0", "1", "2"], "ranks[0] must be in [1, 20]"),
    (lowrank_sparse, ["--ranks", "2", "1"], "ranks must be strictly increasing"),
    (lowrank_sparse, ["--steps", "0", "--spectra-steps", "1"], "steps must be in [1, inf)"),
    (lowrank_sparse, ["--steps", "0"], "steps must be in [1, inf)"),
    (lowrank_sparse, ["--steps", "5"], "spectra_steps[1] must be in [1, 5]"),
    (sparse_bigrams, ["--tau", "5000", "--steps", "4000"], "tau must be in [0, steps - 1]"),
    (sparse_bigrams, ["--tau", "4000", "--steps", "4000"], "tau must be in [0, steps - 1]"),
    (bigram_scale, ["--quick", "--Ns", "100"], "cannot be combined with --Ns 100"),
    (bigram_scale, ["--quick", "--T", "50"], "cannot be combined with --T 50"),
    (bigram_scale, ["--T", "1"], "T must be >= Q = 2"),
    (rank_growth, ["--eta", "20"], "the runs would take only 1-12 steps"),
    (rank_growth, ["--eta", "-1"], "eta must be in (0.0, inf)"),
    (rank_growth, ["--eta", "inf"], "eta must be finite and in (0.0, inf)"),
    (rank_growth, ["--et", "0.1"], "unrecognized arguments: --et"),     # no abbreviations
    (sparse_bigrams, ["--step", "10"], "unrecognized arguments: --step"),
]


@pytest.mark.parametrize("demo, argv, match", BAD_SETTINGS,
                         ids=[f"{d.NAME}:{' '.join(a)}" for d, a, _ in BAD_SETTINGS])
def test_bad_settings_exit_2_naming_the_parameter(demo, argv, match, tmp_path, monkeypatch,
                                                  capsys):
    monkeypatch.setattr(demo, "run", lambda *a, **k: pytest.fail("refused before training"))
    with pytest.raises(SystemExit) as info:
        demo.main(argv + ["--out", str(tmp_path / "out")])
    assert info.value.code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()                # refused before creating anything


def _no_training(monkeypatch, demo):
    monkeypatch.setattr(demo, "run", lambda *a, **k: pytest.fail("must be refused before training"))


def _refused(demo, argv, capsys) -> str:
    """Run ``demo.main(argv)``, assert exit 2, return its single stderr line."""
    with pytest.raises(SystemExit) as info:
        demo.main(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("demo", list(TINY), ids=lambda m: m.NAME)
def test_out_that_is_a_file_is_refused_before_training(demo, tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch, demo)
    afile = tmp_path / "results.txt"
    afile.write_text("mine")
    assert "is an existing file" in _refused(demo, ["--out", str(afile)], capsys)
    assert "which is a file" in _refused(demo, ["--out", str(afile / "sub")], capsys)
    assert afile.read_text() == "mine"


def test_empty_and_unwritable_out_are_refused_before_training(tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch, rank_growth)
    assert "empty path" in _refused(rank_growth, ["--out", ""], capsys)
    assert "empty path" in _refused(rank_growth, ["--out", "  "], capsys)
    # a folder that cannot be created (root may write anywhere else, so use /proc)
    assert "cannot be written" in _refused(rank_growth, ["--out", "/proc/minitheory/out"], capsys)
    monkeypatch.setattr(_common.os, "access", lambda *a: False)      # a read-only parent
    assert "is not writable" in _refused(rank_growth, ["--out", str(tmp_path / "new")], capsys)


def test_out_folder_is_created_before_training(tmp_path, monkeypatch):
    out = tmp_path / "a" / "b"

    def run(cfg, progress=None):
        assert out.is_dir()                               # exists when training starts
        raise KeyboardInterrupt
    monkeypatch.setattr(rank_growth, "run", run)
    assert rank_growth.main(TINY[rank_growth] + ["--out", str(out)]) == 130


def test_sizes_that_cannot_fit_are_refused_with_the_estimate(monkeypatch, capsys):
    monkeypatch.setattr(_common, "available_memory", lambda: 8 * 10**9)
    for demo, argv, option in ((rank_growth, ["--n-seq", "100000000000"], "--n-seq 100000000000"),
                               (bigram_scale, ["--Ns", "5000"], "--Ns 5000")):
        _no_training(monkeypatch, demo)
        err = _refused(demo, argv, capsys)
        assert "needs about" in err and option in err and "8 GB is available" in err
    # the defaults fit in that much memory
    _common.parse(bigram_scale.Config, [], prog="t", description="", default_out="x",
                  memory_estimate=bigram_scale.memory_estimate)


def test_help_shows_plain_defaults_and_distinct_metavars(capsys):
    for demo in TINY:
        with pytest.raises(SystemExit):
            demo.main(["--help"])
        text = capsys.readouterr().out
        assert "np.float64" not in text and "np.int" not in text, demo.NAME
        assert "(default: " in text
    with pytest.raises(SystemExit):
        lowrank_sparse.main(["--help"])
    text = capsys.readouterr().out
    assert "--M M " in text and "--m m " in text
    assert "(default: 0.0 0.1 0.2" in text                 # prune rates as typed


def test_replot_refuses_training_options_and_other_demos_runs(completed, tmp_path, capsys):
    tmp_path = _copy(completed, rank_growth, tmp_path)
    err = _refused(rank_growth, ["--replot", "--eta", "0.01", "--out", str(tmp_path)], capsys)
    assert "takes no training options (got --eta)" in err
    err = _refused(lowrank_sparse, ["--replot", "--out", str(tmp_path)], capsys)
    assert "holds a run of the rank_growth demo, not of lowrank_sparse" in err
    # an older folder without the demo's name: the foreign options are named
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["demo"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    err = _refused(sparse_bigrams, ["--replot", "--out", str(tmp_path)], capsys)
    assert "are not sparse_bigrams's" in err and "n_seq" in err


def test_replot_of_a_truncated_metrics_file_is_one_line(completed, tmp_path, capsys):
    tmp_path = _copy(completed, rank_growth, tmp_path)
    data = (tmp_path / "metrics.npz").read_bytes()
    (tmp_path / "metrics.npz").write_bytes(data[: len(data) // 2])
    assert rank_growth.main(["--replot", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be read" in err and "Traceback" not in err


def test_show_without_a_display_is_refused_before_training(monkeypatch, tmp_path, capsys):
    _no_training(monkeypatch, rank_growth)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("MPLBACKEND", "QtAgg")           # an interactive backend, but no display
    if sys.platform.startswith("linux"):
        assert "no display" in _refused(rank_growth, ["--show", "--out", str(tmp_path)], capsys)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    assert "only writes files" in _refused(rank_growth, ["--show", "--out", str(tmp_path)], capsys)


def test_results_are_written_atomically(completed, tmp_path, monkeypatch, capsys):
    tmp_path = _copy(completed, rank_growth, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def interrupted_save(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt
    monkeypatch.setattr(_common.np, "savez_compressed", interrupted_save)
    assert rank_growth.main(TINY[rank_growth] + ["--seed", "5", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "while saving" in err and "Traceback" not in err
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before                               # the earlier run intact, no temp file


PHASES = {"before training": lambda demo: (demo, "run"), "reporting": lambda demo: (demo, "report")}


@pytest.mark.parametrize("phase", list(PHASES))
@pytest.mark.parametrize("demo", list(TINY), ids=lambda m: m.NAME)
def test_ctrl_c_in_any_phase_exits_130_and_keeps_what_was_computed(demo, phase, tmp_path,
                                                                   monkeypatch, capsys):
    owner, name = PHASES[phase](demo)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(owner, name, interrupt)
    assert demo.main(TINY[demo] + ["--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "Ctrl-C" in err and "Traceback" not in err and str(tmp_path) in err
    m = load_metrics(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["demo"] == demo.NAME
    if phase == "before training":
        assert str(m["stopped_reason"]) == "interrupted"
    else:              # training finished: complete metrics, and --replot is offered
        assert "stopped_reason" not in m and "--replot" in err
        assert not (tmp_path / f"{PNGS[demo][0]}.png").exists()


def test_ctrl_c_during_algorithm_1_and_after_training(tmp_path, monkeypatch, capsys):
    from minitheory.rank_growth import incremental
    from minitheory.lowrank_sparse import analysis

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(incremental, "incremental_learning", interrupt)
    assert rank_growth.main(TINY[rank_growth] + ["--out", str(tmp_path / "rg")]) == 130
    assert "Traceback" not in capsys.readouterr().err
    assert str(load_metrics(tmp_path / "rg")["stopped_reason"]) == "interrupted"
    # lowrank_sparse: Ctrl-C while pruning keeps the training curves already computed
    monkeypatch.setattr(analysis, "pruning_curve", interrupt)
    assert lowrank_sparse.main(TINY[lowrank_sparse] + ["--out", str(tmp_path / "ls")]) == 130
    err = capsys.readouterr().err
    assert "while truncating, taking spectra and pruning" in err
    m = load_metrics(tmp_path / "ls")
    assert m["test_hinge"].shape[0] == 7 and "rank_all_hinge" in m and int(m["stopped_step"]) == 6


def test_ctrl_c_during_replot_exits_130(completed, tmp_path, monkeypatch, capsys):
    tmp_path = _copy(completed, rank_growth, tmp_path)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(rank_growth, "plot", interrupt)
    assert rank_growth.main(["--replot", "--out", str(tmp_path)]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_allocator_is_tuned_by_the_entry_point_not_by_argument_parsing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(_common, "tune_allocator", lambda: calls.append(1) or True)
    _common.parse(rank_growth.Config, TINY[rank_growth], prog="t", description="",
                  default_out=str(tmp_path))
    assert calls == []
    monkeypatch.setattr(rank_growth, "run", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert rank_growth.main(TINY[rank_growth] + ["--out", str(tmp_path)]) == 130
    assert calls == [1]
    with pytest.raises(SystemExit):                       # a refused option: not tuned
        rank_growth.main(["--eta", "-1"])
    assert calls == [1]
