"""The low-rank/sparse demo draws the paper's figures (arXiv:2406.17167v1, Figs. 1-3): all trained
matrices truncated in Fig. 1, four panels t = 1, 10, 20, 30 in Fig. 2, the paper named everywhere."""
from pathlib import Path

import numpy as np
import pytest

from minitheory.demos import _common
from minitheory.demos import lowrank_sparse as demo
from minitheory.lowrank_sparse import analysis

PAPER = "arXiv:2406.17167v1"
SMALL = dict(d=8, M=5, L=6, n_rel=3, n_conf=1, m=8, steps=30, n_train=64, n_test=32, seeds=2,
             ranks=(1, 2, 8), prune_rates=(0.0, 0.5), n_random=1)


@pytest.fixture(scope="module")
def small_run():
    cfg = demo.Config(**SMALL)
    m, _, err = demo.run(cfg)
    assert err is None
    return cfg, m


def test_defaults_are_the_papers_ranks_and_steps():
    cfg = demo.Config()
    assert cfg.ranks == (1, 2, 5, 10, 20) and cfg.ranks[-1] == cfg.d     # 20 = full rank
    assert cfg.spectra_steps == (1, 10, 20, 30)
    assert cfg.pattern_set == "standard"


def test_metrics_hold_both_truncations_and_four_spectra(small_run):
    cfg, m = small_run
    np.testing.assert_array_equal(m["spectra_steps"], [1, 10, 20, 30])
    assert m["sv_dWK_t"].shape == (4, 2, cfg.d)
    for key in ("rank_all_hinge", "rank_all_att", "rank_qkv_hinge", "rank_qkv_att"):
        assert m[key].shape == (3, 2)
    # at full rank (r = d) both truncations are the trained model, exactly
    for key, full in (("rank_all_hinge", "full_hinge"), ("rank_qkv_hinge", "full_hinge"),
                      ("rank_all_att", "full_att")):
        np.testing.assert_array_equal(m[key][-1], m[full])
    assert np.all(m["rank_all_hinge"][0] != m["rank_qkv_hinge"][0])     # W_O truncated only in one
    for k in analysis.QKV:
        assert np.all((0 <= m[f"relevant_share_d{k}"]) & (m[f"relevant_share_d{k}"] <= 1))


def test_figures_and_report_name_the_paper_figure(small_run, monkeypatch, tmp_path):
    cfg, m = small_run
    figs = {}

    def keep(fig, out, name, show):
        figs[name] = fig
        return Path(out) / f"{name}.png"
    monkeypatch.setattr(_common, "save_figure", keep)
    demo.plot(cfg, m, None, tmp_path, False)
    for name, number in (("lowrank_sparse_rank", 1), ("lowrank_sparse_spectra", 2),
                         ("lowrank_sparse_pruning", 3)):
        assert f"{PAPER}, Fig. {number}" in figs[name]._suptitle.get_text()
    assert f"no figure of {PAPER}" in figs["lowrank_sparse_training"]._suptitle.get_text()
    panels = figs["lowrank_sparse_spectra"].axes
    assert [ax.get_title() for ax in panels] == ["(A) t = 1", "(B) t = 10", "(C) t = 20",
                                                 "(D) t = 30"]
    assert all(ax.get_yscale() == "log" for ax in panels)
    labels = [line.get_label() for line in figs["lowrank_sparse_rank"].axes[0].get_lines()]
    assert any("all of W_Q, W_K, W_V, W_O" in s and "(paper)" in s for s in labels)
    assert any("W_Q, W_K, W_V only (ours)" in s for s in labels)
    text = demo.report(cfg, m)
    for number in (1, 2, 3):
        assert f"{PAPER}, Fig. {number}" in text
    assert "all of W_Q, W_K, W_V, W_O" in text and "W_Q, W_K, W_V only; ours" in text
    plt = _common.pyplot(False)
    for fig in figs.values():
        plt.close(fig)


def test_random_patterns_option(capsys):
    cfg = demo.Config(**dict(SMALL, steps=10, spectra_steps=(1, 10), seeds=1),
                      pattern_set="random", pattern_seed=4)
    assert cfg.data_config().pattern_set == "random" and cfg.data_config().pattern_seed == 4
    m, _, err = demo.run(cfg)
    assert err is None and np.all(np.isfinite(m["rank_all_hinge"]))
    with pytest.raises(SystemExit) as info:
        demo.main(["--pattern-set", "basis"])
    assert info.value.code == 2 and "pattern_set must be one of" in capsys.readouterr().err
