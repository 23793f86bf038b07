"""The training loop's contract: what it logs, when it stops, what a stopped run keeps."""
import numpy as np
import pytest

from minitheory import loop
from minitheory.validation import DivergenceError, Interrupted, TrainingStopped


def doubling(state, step):
    """x <- 2 x, reporting the old x as the step's 'loss'."""
    return {"x": 2.0 * state["x"]}, {"loss": state["x"].copy()}


def observe_x(step, state, new, out):
    return {"x": state["x"].copy(), "had_update": np.array(out is not None)}


def test_history_logs_every_log_every_steps_and_the_last():
    for steps, log_every, expect in [(10, 4, [0, 4, 8, 10]), (8, 4, [0, 4, 8]), (3, 1, [0, 1, 2, 3]),
                                     (0, 5, [0])]:
        state, hist = loop.run(doubling, {"x": np.ones(2)}, steps=steps, observe=observe_x,
                               lr=1.0, log_every=log_every)
        assert hist["step"].tolist() == expect
        np.testing.assert_array_equal(hist["x"], 2.0 ** np.array(expect)[:, None] * np.ones(2))
        # observe sees the update of a logged step, except at the last step (none follows)
        assert hist["had_update"].tolist() == [s != steps for s in expect]
        np.testing.assert_array_equal(state["x"], 2.0 ** steps * np.ones(2))


def test_observe_gets_the_state_its_update_and_the_new_state():
    seen = []

    def observe(step, state, new, out):
        seen.append((step, state["x"][0], None if new is None else new["x"][0],
                     None if out is None else out["loss"][0]))
        return {}

    loop.run(doubling, {"x": np.ones(1)}, steps=2, observe=observe, lr=1.0)
    assert seen == [(0, 1.0, 2.0, 1.0), (1, 2.0, 4.0, 2.0), (2, 4.0, None, None)]


def test_progress_is_called_once_per_update():
    calls = []
    loop.run(doubling, {"x": np.ones(1)}, steps=4, observe=observe_x, lr=1.0, log_every=3,
             progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_early_stop_ends_the_run_at_that_step_and_logs_it():
    state, hist = loop.run(doubling, {"x": np.ones(1)}, steps=100, observe=observe_x, lr=1.0,
                           log_every=10, stop=lambda step, s: s["x"][0] >= 40)
    assert state["x"][0] == 64.0                               # 2^6: first state >= 40
    assert hist["step"].tolist() == [0, 6] and hist["x"][-1, 0] == 64.0
    assert hist["had_update"].tolist() == [True, False]


def test_divergence_names_step_and_rate_and_keeps_the_last_finite_state():
    # 1e300 * 2^27 ~ 1.3e308 is finite, * 2^28 overflows: the update at step 27 diverges
    with pytest.raises(DivergenceError) as info:
        loop.run(doubling, {"x": np.array([1e300, 1.0])}, steps=100, observe=observe_x,
                 lr=0.5, lr_name="eta", log_every=5, label="doubling")
    err = info.value
    assert err.step == 27 and err.lr == 0.5 and isinstance(err, FloatingPointError)
    assert "doubling diverged at step 27: x became non-finite" in str(err) and "eta=0.5" in str(err)
    assert "loss" not in str(err)                               # names only what went non-finite
    state, hist = err.partial
    np.testing.assert_array_equal(state["x"], [1e300 * 2.0**27, 2.0**27])
    assert hist["step"].tolist() == [0, 5, 10, 15, 20, 25]      # logged before step 27
    assert all(len(v) == 6 for v in hist.values()) and np.all(np.isfinite(hist["x"]))


def test_divergence_reports_the_rate_of_a_schedule_at_that_step():
    with pytest.raises(DivergenceError) as info:
        loop.run(doubling, {"x": np.array([1e300])}, steps=100, observe=observe_x,
                 lr=lambda step: 0.1 if step < 20 else 0.2)
    assert info.value.lr == 0.2 and "lr=0.2" in str(info.value)


def test_a_custom_check_decides_what_counts_as_diverged():
    def check(new, out):
        return "x above 10" if new["x"][0] > 10 else ""

    with pytest.raises(DivergenceError, match="x above 10") as info:
        loop.run(doubling, {"x": np.ones(1)}, steps=100, observe=observe_x, lr=1.0, check=check)
    assert info.value.step == 3 and info.value.partial[0]["x"][0] == 8.0


@pytest.mark.parametrize("where", ["update", "observe", "progress"])
def test_ctrl_c_keeps_the_state_and_a_history_of_equal_length_arrays(where):
    def update(state, step):
        if where == "update" and step == 7:
            raise KeyboardInterrupt
        return doubling(state, step)

    def observe(step, state, new, out):
        if where == "observe" and step == 7:
            raise KeyboardInterrupt                            # half-way through a logged step
        return {"x": state["x"].copy(), "y": -state["x"]}

    def progress(done, total):
        if where == "progress" and done == 8:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        loop.run(update, {"x": np.ones(1)}, steps=20, observe=observe, lr=0.3,
                 progress=progress)
    err = info.value
    assert isinstance(err, TrainingStopped) and err.step == 7 and err.lr == 0.3
    state, hist = err.partial
    assert state["x"][0] == 2.0**7                              # the input of step 7
    assert hist["step"].tolist() == list(range(8 if where == "progress" else 7))
    assert len({len(v) for v in hist.values()}) == 1
    np.testing.assert_array_equal(hist["x"][:, 0], 2.0 ** hist["step"])


def test_outcome_returns_the_result_or_the_partial_and_the_error():
    result, err = loop.outcome(loop.run, doubling, {"x": np.ones(1)}, steps=2,
                               observe=observe_x, lr=1.0)
    assert err is None and result[0]["x"][0] == 4.0
    partial, err = loop.outcome(loop.run, doubling, {"x": np.array([1e308])}, steps=2,
                                observe=observe_x, lr=1.0)
    assert isinstance(err, DivergenceError) and partial is err.partial


@pytest.mark.parametrize("kw, match", [(dict(steps=-1), "steps"), (dict(log_every=0), "log_every"),
                                       (dict(steps=1.5), "steps")])
def test_bad_loop_arguments(kw, match):
    args = dict(steps=3, observe=observe_x, lr=1.0) | kw
    with pytest.raises((ValueError, TypeError), match=match):
        loop.run(doubling, {"x": np.ones(1)}, **args)
