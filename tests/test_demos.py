"""Every demo runs end to end through main(argv) with tiny settings and writes its outputs."""
import json

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
                              "--tbar-max", "1.5", "--robustness-tbar", "0.3"],
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


@pytest.mark.parametrize("demo", list(TINY), ids=lambda m: m.NAME)
def test_demo_runs_end_to_end(demo, tmp_path, capsys):
    assert demo.main(TINY[demo] + ["--out", str(tmp_path), "--seed", "3"]) == 0
    for name in PNGS[demo]:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["seed"] == 3
    metrics = load_metrics(tmp_path)                       # allow_pickle=False
    # no NaN anywhere (inf is allowed: "never activated")
    assert metrics and not any(np.isnan(v).any() for v in metrics.values() if v.dtype.kind == "f")
    out = capsys.readouterr().out
    assert "saved" in out and str(tmp_path) in out


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
    argv = TINY[rank_growth] + ["--eta", "5", "--tbar-max", "20", "--out", str(tmp_path)]
    assert rank_growth.main(argv) == 1
    err = capsys.readouterr().err
    assert "diverged at step" in err and "eta=5.0" in err and "Warning" not in err
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
def test_replot_redraws_from_saved_metrics_without_training(demo, tmp_path, monkeypatch, capsys):
    assert demo.main(TINY[demo] + ["--out", str(tmp_path)]) == 0
    first = capsys.readouterr().out
    for name in PNGS[demo]:
        (tmp_path / f"{name}.png").unlink()
    monkeypatch.setattr(demo, "run", lambda *a, **k: pytest.fail("--replot must not train"))
    assert demo.main(["--replot", "--out", str(tmp_path)]) == 0
    again = capsys.readouterr().out
    for name in PNGS[demo]:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    # the printed report is the same, recomputed from the saved metrics
    report = lambda text: [line for line in text.splitlines()  # noqa: E731
                           if not line.startswith(("saved", "redrew", "timings"))]
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
]


@pytest.mark.parametrize("demo, argv, match", BAD_SETTINGS,
                         ids=[f"{d.NAME}:{' '.join(a)}" for d, a, _ in BAD_SETTINGS])
def test_bad_settings_exit_2_naming_the_parameter(demo, argv, match, capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(argv)
    assert info.value.code == 2 and match in capsys.readouterr().err
