"""What every demo shares: a CLI generated from its config dataclass, saving, progress.

A demo module defines ``NAME``, a frozen dataclass ``Config`` (validated in ``__post_init__``),
``run(cfg, progress) -> (metrics, context, error)``, ``report(cfg, metrics, context) -> str`` and
``plot(cfg, metrics, context, out, show) -> [paths]``; its ``main(argv)`` is
:func:`demo_main`. Results go to ``--out``: ``config.json``,
``metrics.npz`` (loads with ``allow_pickle=False``) and PNG figures. Figures are drawn with
the Agg backend unless ``--show`` asks for windows.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import dataclasses
import json
import sys
import time
import typing
from pathlib import Path

import numpy as np

from ..validation import Interrupted


def _field_type(tp):
    """argparse ``type``/``nargs`` for a config field annotation."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        return {"type": typing.get_args(tp)[0], "nargs": "+"}
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": tp}


def parse(config_cls, argv, *, prog: str, description: str, default_out: str):
    """Build the CLI from ``config_cls`` and parse ``argv``.

    Every dataclass field becomes ``--field-name`` with its default shown in ``--help``; a
    config that fails validation exits with status 2 and the validator's message.

    Returns ``(config, out: Path, show: bool, replot: bool)``; with ``--replot`` the config is
    the one saved in ``out/config.json``. Also calls :func:`tune_allocator`.
    """
    tune_allocator()
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        help_text = f.metadata.get("help", "")
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=f.default,
                            help=help_text, **_field_type(hints[f.name]))
    parser.add_argument("--out", type=Path, default=Path(default_out),
                        help="folder for config.json, metrics.npz and the figures")
    parser.add_argument("--show", action="store_true", help="also open the figures in windows")
    parser.add_argument("--replot", action="store_true",
                        help="redraw the figures from config.json and metrics.npz in --out, "
                             "without training")
    ns = vars(parser.parse_args(argv))
    out, show, replot = ns.pop("out"), ns.pop("show"), ns.pop("replot")
    if replot:
        path = Path(out) / "config.json"
        if not path.exists() or not (Path(out) / "metrics.npz").exists():
            parser.error(f"--replot needs config.json and metrics.npz in --out {out}; run the "
                         f"demo with --out {out} first")
        ns = json.loads(path.read_text())
    ns = {k: tuple(v) if isinstance(v, list) else v for k, v in ns.items()}
    try:
        config = config_cls(**ns)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    return config, out, show, replot


def tune_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the OS (glibc only).

    The training loops allocate a few arrays of 0.1-1 MB per step. glibc serves those with
    ``mmap`` or trims them off the heap top after each free, so every step page-faults fresh
    zeroed memory: on the rank-growth demo that was 3.5 s of system time out of 8.6 s. Raising
    the mmap and trim thresholds (``mallopt``) makes the allocator reuse the same pages. This
    changes no result, only where memory comes from; demos call it, the library never does.
    Returns whether it applied (False off glibc).
    """
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 256 << 20)
                    and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


def pyplot(show: bool):
    """``matplotlib.pyplot`` with the Agg backend unless windows were asked for."""
    import matplotlib
    if not show:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, out: Path, name: str, show: bool) -> Path:
    """Save ``fig`` as ``out/name.png``; close it unless it is to be shown."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    if not show:
        import matplotlib.pyplot as plt
        plt.close(fig)
    return path


def save_results(out: Path, config, metrics: dict, extra: dict | None = None) -> None:
    """Write ``config.json`` (the config plus ``extra``) and ``metrics.npz`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.asdict(config)
    if extra:
        cfg.update(extra)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=float) + "\n")
    np.savez_compressed(out / "metrics.npz",
                        **{k: np.asarray(v) for k, v in metrics.items()})


def load_metrics(out: Path) -> dict:
    """Load ``metrics.npz`` from ``out`` (no pickles)."""
    with np.load(Path(out) / "metrics.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


class Progress:
    """A progress line on stderr: rewritten in place on a terminal (every 0.5 s), one line
    every 5 s otherwise (logs, pipes), and always a last line at the end."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.every = 0.5 if self.tty else 5.0
        self.t0 = self.last = time.perf_counter()

    def __call__(self, step: int, total: int) -> None:
        now = time.perf_counter()
        done = step >= total
        if done or now - self.last >= self.every:
            self.last = now
            pct = 100.0 * step / max(total, 1)
            line = f"{self.label}: step {step}/{total} ({pct:5.1f}%) {now - self.t0:6.1f}s"
            self.stream.write(("\r" + line + ("\n" if done else "")) if self.tty else line + "\n")
            self.stream.flush()


def format_table(headers: list[str], rows: list[list]) -> str:
    """A plain-text table with right-aligned columns."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_spread(x) -> str:
    """A value over runs: ``value`` when there is one run (or all agree), else
    ``mean [min, max]``; integer arrays print as integers."""
    x = np.asarray(x)
    fmt = (lambda v: str(int(v))) if x.dtype.kind in "iu" else (lambda v: _fmt(float(v)))  # noqa: E731
    if x.size == 1 or np.all(x == x.flat[0]):
        return fmt(x.flat[0])
    return f"{fmt(x.mean())} [{fmt(x.min())}, {fmt(x.max())}]"


def plot_band(ax, x, Y, **kw):
    """Plot the mean of ``Y`` over runs (its last axis) against ``x``, with a min-max band
    when there are several runs. Returns the line."""
    line, = ax.plot(x, Y.mean(-1), **kw)
    if Y.shape[-1] > 1:
        ax.fill_between(x, Y.min(-1), Y.max(-1), color=line.get_color(), alpha=0.2, lw=0)
    return line


def _fmt(c) -> str:
    if isinstance(c, (float, np.floating)):
        if not np.isfinite(c):
            return "never" if c > 0 else str(c)
        if c == int(c) and abs(c) < 1e6:
            return str(int(c))
        return f"{c:.3f}" if 1e-3 <= abs(c) < 1e4 else f"{c:.2e}" if c != 0 else "0"
    return str(c)


def _replot(demo, cfg, out: Path, show: bool) -> int:
    """Print the report and redraw the figures from the metrics saved in ``out``."""
    metrics = load_metrics(out)
    if "stopped_reason" in metrics:
        print(f"error: the run saved in {out} stopped early ({metrics['stopped_reason']} at step "
              f"{int(metrics['stopped_step'])}); --replot needs a completed run", file=sys.stderr)
        return 1
    context = demo.context(metrics) if hasattr(demo, "context") else None
    print(demo.report(cfg, metrics, context))
    paths = demo.plot(cfg, metrics, context, out, show)
    print(f"redrew {', '.join(p.name for p in paths)} in {out} from metrics.npz")
    if show:
        pyplot(show).show()
    return 0


def demo_main(demo, argv) -> int:
    """Parse the CLI of ``demo`` (a module, see above), run it, save, print, plot.

    Returns 0; 1 when training diverged (the message names the step and learning rate); 130
    when Ctrl-C stopped it. In both cases the metrics computed before are saved, with
    ``stopped_step`` and ``stopped_reason``.
    """
    cfg, out, show, replot = parse(demo.Config, argv,
                                   prog=f"python -m minitheory.demos.{demo.NAME}",
                                   description=demo.__doc__.split("\n\n")[0],
                                   default_out=f"out/{demo.NAME}")
    if replot:
        return _replot(demo, cfg, out, show)
    t0 = time.perf_counter()
    metrics, context, error = demo.run(cfg, progress=Progress("training"))
    if error is not None:
        metrics = dict(metrics, stopped_step=error.step,
                       stopped_reason="interrupted" if isinstance(error, Interrupted) else "diverged")
    save_results(out, cfg, metrics)
    if error is not None:
        print(f"\n{'stopped' if isinstance(error, Interrupted) else 'error'}: {error}\n"
              f"metrics computed before step {error.step} saved in {out}", file=sys.stderr)
        return 130 if isinstance(error, Interrupted) else 1
    print(demo.report(cfg, metrics, context))
    paths = demo.plot(cfg, metrics, context, out, show)
    print(f"saved {', '.join(p.name for p in paths)}, config.json, metrics.npz to {out} "
          f"({time.perf_counter() - t0:.1f} s)")
    if show:
        pyplot(show).show()
    return 0
