"""The transformer rank-growth demo end to end with tiny settings; its options refused early."""
import json

import numpy as np
import pytest

from minitheory.demos import rank_growth_transformer as demo
from minitheory.demos._common import load_metrics
from minitheory.transformer import data

SMALL = ["--d", "8", "--heads", "2", "--d-h", "4", "--depth", "2", "--d-mlp", "16",
         "--n-log", "5", "--warmup", "2"]
VISION = SMALL + ["--quick", "--steps", "6", "--batch", "16", "--patch", "4", "--n-test", "40"]
LANGUAGE = SMALL + ["--task", "language", "--quick", "--steps", "5", "--batch", "4",
                    "--context", "8"]


def _no_nan(metrics):
    return not any(np.isnan(v).any() for v in metrics.values() if v.dtype.kind == "f")


def test_vision_init_scale_study_end_to_end_and_replot(tmp_path, capsys):
    argv = VISION + ["--scales", "0.3", "1", "--out", str(tmp_path), "--seed", "2"]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "Claims 1-2" in out and "Claim 4" in out and "test acc" in out
    names = ["vision_srank", "vision_spectrum", "vision_evolution", "vision_scales",
             "vision_training"]
    for name in names:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["seed"] == 2 and cfg["scales"] == [0.3, 1.0] and cfg["task"] == "vision"
    # the options as given, and what the defaults among them resolved to
    assert cfg["lr"] == 0.0 and cfg["resolved"] == {"steps": 6, "batch": 16,
                                                     "lr": demo.DEFAULT_LR["vision"]}
    m = load_metrics(tmp_path)
    assert _no_nan(m)
    S, K = 2, len(m["log_step"])
    assert m["log_step"][0] == 0 and m["log_step"][-1] == 6
    assert m["sv_KQ"].shape == (S, K, 2, 2, 8) and m["srank_VO"].shape == (S, K, 2, 2)
    assert m["loss"].shape == (S, 7) and m["test_acc"].shape == (S, K)
    assert np.all(m["sv_KQ"][:, 0] == 0)                      # no perturbation at step 0
    assert np.all(m["srank_KQ_init"] >= 1) and np.all(m["srank_KQ_init"] <= 4)
    for name in names:
        (tmp_path / f"{name}.png").unlink()
    assert demo.main(["--replot", "--out", str(tmp_path)]) == 0
    assert "redrew" in capsys.readouterr().out
    assert all((tmp_path / f"{name}.png").exists() for name in names)


def test_language_end_to_end(tmp_path, capsys):
    assert demo.main(LANGUAGE + ["--out", str(tmp_path), "--lr", "0.002"]) == 0
    out = capsys.readouterr().out
    resolved = json.loads((tmp_path / "config.json").read_text())["resolved"]
    assert resolved == {"steps": 5, "batch": 4, "lr": 0.002}
    assert "held-out nats/char" in out and "unigram entropy" in out and "Claim 4" not in out
    m = load_metrics(tmp_path)
    assert _no_nan(m) and m["sv_VO"].shape[:2] == (1, len(m["log_step"]))
    corpus = data.char_corpus()
    assert int(m["vocab"]) == len(corpus.vocab) and str(m["data_sha256"]) == corpus.sha256
    assert np.isclose(float(m["unigram_entropy"]), data.unigram_entropy(corpus.test,
                                                                        len(corpus.vocab)))
    # an untrained model is near log|V|; five steps barely move it
    assert abs(float(m["final_test_loss"][0]) - np.log(len(corpus.vocab))) < 2.0
    for name in ("language_srank", "language_spectrum", "language_evolution",
                 "language_training"):
        assert (tmp_path / f"{name}.png").exists()
    assert not (tmp_path / "language_scales.png").exists()


def test_same_seed_same_run_other_seed_other_run():
    cfg = demo.Config(quick=True, steps=4, batch=8, d=8, heads=2, d_h=4, depth=2, d_mlp=16,
                      n_log=3, n_test=20, patch=4)
    a, _, err_a = demo.run(cfg)
    b, _, err_b = demo.run(cfg)
    c, _, _ = demo.run(demo.Config(**{**cfg.__dict__, "seed": 1}))
    assert err_a is None and err_b is None and a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(a["loss"], c["loss"])


@pytest.mark.parametrize("argv, message", [
    (["--patch", "3"], "patch must divide 8"),
    (["--task", "audio"], "task must be one of"),
    (["--task", "language", "--context", "10000000"], "context must be at most"),
    (["--lr", "nan"], "lr must be finite"),
    (["--lr", "-1"], "lr must be in [0.0, inf)"),
    (["--optimizer", "rmsprop"], "optimizer must be one of"),
    (["--scales", "0"], "scales[0] must be in"),
    (["--scales", "1", "1"], "scales must be distinct"),
    (["--detail-layer", "4"], "detail_layer must be in"),
    (["--heads", "0"], "heads must be in"),
    (["--steps", "-1"], "steps must be in"),
])
def test_bad_options_are_refused_before_training(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(["--help"])
    text = capsys.readouterr().out
    assert info.value.code == 0
    for flag in ("--task", "--scales", "--quick", "--steps", "--seed", "--out", "--show",
                 "--replot"):
        assert flag in text


def test_divergence_stops_names_step_and_lr_and_keeps_metrics(tmp_path, capsys):
    argv = VISION + ["--optimizer", "sgd", "--lr", "1e150", "--warmup", "0", "--out",
                     str(tmp_path)]
    assert demo.main(argv) == 1
    err = capsys.readouterr().err
    # the rate of the diverging update: step 1 of a cosine over 6 steps, 1e150 (1 + cos(pi/6)) / 2
    assert "diverged at step 1:" in err and "learning rate lr=9.33012701" in err
    assert "Warning" not in err
    m = load_metrics(tmp_path)
    assert str(m["stopped_reason"]) == "diverged"
    assert len(m["step"]) == m["loss"].shape[1] == int(m["stopped_step"])
    assert np.all(np.isfinite(m["loss"]))
    assert demo.main(["--replot", "--out", str(tmp_path)]) == 1     # no figures of a stopped run


def test_ctrl_c_keeps_metrics(tmp_path, capsys, monkeypatch):
    calls = []
    windows = data.char_windows

    def interrupt_at_4(ids, starts, context):
        calls.append(1)
        if len(calls) == 3 + 5:     # 3 calls build the evaluation windows, then step 0, 1, ...
            raise KeyboardInterrupt
        return windows(ids, starts, context)

    monkeypatch.setattr(data, "char_windows", interrupt_at_4)
    assert demo.main(LANGUAGE + ["--out", str(tmp_path)]) == 130
    assert "interrupted by Ctrl-C at step 4" in capsys.readouterr().err
    m = load_metrics(tmp_path)
    assert str(m["stopped_reason"]) == "interrupted" and m["loss"].shape == (1, 4)
    assert m["log_step"].tolist() == [0, 1, 2, 3][:m["srank_KQ"].shape[1]]
