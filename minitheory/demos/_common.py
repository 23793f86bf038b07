"""What every demo shares: a CLI generated from its config dataclass, saving, progress.

A demo module defines ``NAME``, a frozen dataclass ``Config`` (validated in ``__post_init__``),
``run(cfg, progress) -> (metrics, context, error)``, ``report(cfg, metrics, context) -> str`` and
``plot(cfg, metrics, context, out, show) -> [paths]``; optionally ``context(metrics)`` (rebuilds
``context`` for ``--replot``), ``memory_estimate(cfg) -> (bytes, what)`` (the memory the run
needs and the options that set it) and ``resolved(cfg) -> dict`` (the values that options left
at "0 = default" resolved to, saved under ``"resolved"`` in ``config.json`` for the reader;
``--replot`` ignores them). Its ``main(argv)`` is :func:`demo_main`.

Every option is checked before any training starts: the config's own validation, ``--out``
(refused if it is a file, lies under a file, is empty or cannot be written; created otherwise),
``--replot`` given with training options, ``--show`` without a display, and a run whose memory
estimate exceeds the memory available. Each refusal is one line on stderr and exit status 2.

Results go to ``--out``: ``config.json``, ``metrics.npz`` (loads with ``allow_pickle=False``)
and PNG figures, each written to a temporary file first and renamed into place, so an
interrupted save never leaves a corrupt file. Ctrl-C in any phase (preparation, training,
analysis, saving, drawing) saves what was computed and exits with status 130, without a
traceback. Figures are drawn with the Agg backend unless ``--show`` asks for windows.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
import typing
import zipfile
from pathlib import Path

import numpy as np

from ..allocator import tune_allocator
from ..validation import Interrupted, TrainingStopped

#: matplotlib backends that draw to files only: ``--show`` with one of them would open nothing.
NON_INTERACTIVE = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


def _field_type(tp):
    """argparse ``type``/``nargs`` for a config field annotation."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        return {"type": typing.get_args(tp)[0], "nargs": "+"}
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": tp}


def _plain(value) -> str:
    """A default as the user would type it: ``0.1`` (not ``np.float64(0.1)``), tuples as
    space-separated values."""
    if isinstance(value, (tuple, list)):
        return " ".join(_plain(v) for v in value)
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def _metavars(fields) -> dict:
    """``NAME`` per field, except where two fields differ only in case (``M`` and ``m``): those
    keep their own spelling, so ``--M M`` and ``--m m`` stay distinguishable in ``--help``."""
    upper = [f.name.upper() for f in fields]
    return {f.name: f.name if upper.count(f.name.upper()) > 1 else f.name.upper() for f in fields}


def usage_error(prog: str, message: str) -> typing.NoReturn:
    """One line on stderr in argparse's form, then exit status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def display_available() -> tuple[bool, str]:
    """Whether ``--show`` can open windows: ``(ok, reason)``. Looks at the matplotlib backend
    (``MPLBACKEND`` or the automatic choice) and, on Linux, at ``DISPLAY``/``WAYLAND_DISPLAY``."""
    import matplotlib
    backend = os.environ.get("MPLBACKEND") or matplotlib.get_backend()
    if backend.lower() in NON_INTERACTIVE:
        return False, f"the matplotlib backend is {backend!r}, which only writes files"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY and WAYLAND_DISPLAY are not set)"
    return True, ""


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable`` on Linux), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``n`` bytes as ``1.2 GB`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} PB"


def check_out(out: str, *, replot: bool) -> str:
    """The message refusing ``--out out``, or ``""`` if it can be used. Nothing is created.

    Refused: an empty path, an existing file, a path under a file, a folder (or the nearest
    existing parent of a new one) that cannot be written; with ``--replot``, a folder without
    ``config.json`` and ``metrics.npz``.
    """
    if not str(out).strip():
        return "--out must name a folder, got an empty path"
    path = Path(out)
    if replot:
        if not (path / "config.json").is_file() or not (path / "metrics.npz").is_file():
            return (f"--replot needs config.json and metrics.npz in --out {out}; run the demo "
                    f"with --out {out} first")
        return ""
    if path.exists() and not path.is_dir():
        return f"--out {out} is an existing file, not a folder"
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"--out {out} lies under {parent}, which is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--out {out}: {parent} is not writable"
    return ""


def make_out(out: Path, prog: str) -> None:
    """Create ``out`` and prove it writable (a temporary file), or refuse with exit 2."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        usage_error(prog, f"--out {out} cannot be written: {exc.strerror or exc}")


def parse(config_cls, argv, *, prog: str, description: str, default_out: str,
          memory_estimate=None):
    """Build the CLI from ``config_cls``, parse ``argv`` and check every option.

    Every dataclass field becomes ``--field-name`` with its default shown in ``--help``
    (abbreviations of option names are not accepted: ``--et`` is not ``--eta``). A config that
    fails validation, an unusable ``--out``, ``--replot`` with training options, ``--show``
    without a display, or a ``memory_estimate(cfg) -> (bytes, what)`` above the available
    memory exits with status 2 and a one-line message.

    Returns ``(config, out: Path, show: bool, replot: bool)``; with ``--replot`` the config is
    the one saved in ``out/config.json``. Creates nothing (see :func:`make_out`).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    hints = typing.get_type_hints(config_cls)
    fields = dataclasses.fields(config_cls)
    metavars = _metavars(fields)
    for f in fields:
        help_text = f.metadata.get("help", "").replace("%", "%%")
        kw = _field_type(hints[f.name])
        if "action" not in kw:
            kw["metavar"] = metavars[f.name]
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=argparse.SUPPRESS,
                            help=f"{help_text} (default: {_plain(f.default)})".lstrip(), **kw)
    parser.add_argument("--out", default=default_out, metavar="DIR",
                        help=f"folder for config.json, metrics.npz and the figures; created if "
                             f"missing (default: {default_out})")
    parser.add_argument("--show", action="store_true", help="also open the figures in windows")
    parser.add_argument("--replot", action="store_true",
                        help="redraw the figures from config.json and metrics.npz in --out, "
                             "without training (takes no other option but --show)")
    ns = vars(parser.parse_args(argv))
    out, show, replot = ns.pop("out"), ns.pop("show"), ns.pop("replot")

    def fail(message):                  # one line, no usage block: the option is named
        usage_error(prog, message)
    parser.error = fail
    problem = check_out(out, replot=replot)
    if problem:
        parser.error(problem)
    if show:
        ok, why = display_available()
        if not ok:
            parser.error(f"--show cannot open windows: {why}; the figures are saved in --out "
                         f"anyway")
    if replot:
        if ns:
            given = " ".join("--" + k.replace("_", "-") for k in ns)
            parser.error(f"--replot redraws the run saved in --out {out} with its own settings; "
                         f"it takes no training options (got {given})")
        ns = read_config(Path(out), config_cls, prog, parser.error)
    ns = {k: tuple(v) if isinstance(v, list) else v for k, v in ns.items()}
    try:
        config = config_cls(**ns)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if memory_estimate is not None and not replot:
        need, what = memory_estimate(config)
        have = available_memory()
        if have is not None and need > 0.9 * have:
            parser.error(f"this run needs about {format_bytes(need)} of memory for {what}; "
                         f"{format_bytes(have)} is available")
    return config, Path(out), show, replot


def read_config(out: Path, config_cls, prog: str, error) -> dict:
    """The settings saved in ``out/config.json`` by the demo named ``prog`` (``error(msg)`` on
    an unreadable file or one written by another demo)."""
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, ValueError) as exc:
        error(f"cannot read {out / 'config.json'}: {exc}")
    if not isinstance(saved, dict):
        error(f"{out / 'config.json'} does not hold a demo's settings")
    demo = saved.pop("demo", None)
    saved.pop("resolved", None)                     # for the reader; the options rebuild it
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(saved) - names)
    own = prog.rsplit(".", 1)[-1]
    if (demo is not None and demo != own) or unknown:
        by = f"the {demo} demo" if demo else "another demo"
        error(f"{out} holds a run of {by}, not of {own}"
              + (f" (options {', '.join(unknown)} are not {own}'s)" if unknown else "")
              + f"; use that demo's --replot, or another --out")
    return saved


def pyplot(show: bool):
    """``matplotlib.pyplot`` with the Agg backend unless windows were asked for."""
    import matplotlib
    if not show:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success rename it to ``path``
    (``os.replace``, atomic on one file system), on any exception (Ctrl-C too) delete it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_figure(fig, out: Path, name: str, show: bool) -> Path:
    """Save ``fig`` as ``out/name.png`` (atomically); close it unless it is to be shown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    if not show:
        import matplotlib.pyplot as plt
        plt.close(fig)
    return path


def save_results(out: Path, config, metrics: dict, extra: dict | None = None) -> None:
    """Write ``config.json`` (the config, the demo's name if ``extra`` gives it, and ``extra``)
    and ``metrics.npz`` to ``out``, each atomically (temporary file, then rename)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.asdict(config)
    if extra:
        cfg.update(extra)
    with atomic_path(out / "metrics.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{k: np.asarray(v) for k, v in metrics.items()})
    with atomic_path(out / "config.json") as tmp:
        tmp.write_text(json.dumps(cfg, indent=2, default=float) + "\n")


def load_metrics(out: Path) -> dict:
    """Load ``metrics.npz`` from ``out`` (no pickles)."""
    with np.load(Path(out) / "metrics.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@contextlib.contextmanager
def keep_on_interrupt(metrics: dict, during: str, step: int = 0):
    """Turn Ctrl-C inside the block into :class:`Interrupted` at ``step`` carrying ``metrics``
    (the dict the block fills as it goes), so :func:`demo_main` saves what was computed."""
    try:
        yield metrics
    except KeyboardInterrupt:
        exc = Interrupted(step=step, partial=metrics)
        exc.args = (f"interrupted by Ctrl-C while {during}",)
        raise exc from None


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


def legend_below(fig, ax, ncol: int | None = None, fontsize: float = 8) -> None:
    """One legend for the whole figure, under its panels, so no legend box covers data; takes
    the entries of ``ax`` and lays out the panels (``tight_layout``) above it."""
    handles, labels = ax.get_legend_handles_labels()
    rows = -(-len(labels) // (ncol or len(labels)))
    fig.tight_layout(rect=(0, 0.035 + 0.045 * rows, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=ncol or len(labels), fontsize=fontsize,
               frameon=False)


def integer_ticks(axis) -> None:
    """Only whole numbers as tick labels on ``axis`` (``ax.xaxis``/``ax.yaxis``): for ranks,
    counts and indices."""
    from matplotlib.ticker import MaxNLocator
    axis.set_major_locator(MaxNLocator(integer=True))


def _fmt(c) -> str:
    if isinstance(c, (float, np.floating)):
        if not np.isfinite(c):
            return "never" if c > 0 else str(c)
        if c == int(c) and abs(c) < 1e6:
            return str(int(c))
        return f"{c:.3f}" if 1e-3 <= abs(c) < 1e4 else f"{c:.2e}" if c != 0 else "0"
    return str(c)


def _replot(demo, cfg, out: Path, show: bool, prog: str) -> int:
    """Print the report and redraw the figures from the metrics saved in ``out``."""
    try:
        metrics = load_metrics(out)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        print(f"{prog}: error: {out / 'metrics.npz'} cannot be read ({type(exc).__name__}: "
              f"{exc}); it is incomplete or not a demo's metrics: run the demo again",
              file=sys.stderr)
        return 2
    if "stopped_reason" in metrics:
        print(f"error: the run saved in {out} stopped early ({metrics['stopped_reason']} at step "
              f"{int(metrics['stopped_step'])}); --replot needs a completed run", file=sys.stderr)
        return 1
    try:
        context = demo.context(metrics) if hasattr(demo, "context") else None
        text = demo.report(cfg, metrics, context)
    except (KeyError, ValueError, IndexError) as exc:
        print(f"{prog}: error: {out / 'metrics.npz'} does not hold the metrics of this demo "
              f"with the settings in config.json ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    print(text)
    paths = demo.plot(cfg, metrics, context, out, show)
    print(f"redrew {', '.join(p.name for p in paths)} in {out} from metrics.npz")
    if show:
        pyplot(show).show()
    return 0


def _stopped(exc: TrainingStopped, out: Path, computed: bool) -> int:
    """Print why a run stopped and what was kept; returns its exit status (130 or 1)."""
    interrupted = isinstance(exc, Interrupted)
    kept = (f"what was computed before it is saved in {out}" if computed
            else f"nothing was computed yet; config.json and the stop are saved in {out}")
    print(f"\n{'stopped' if interrupted else 'error'}: {exc}; {kept}", file=sys.stderr)
    return 130 if interrupted else 1


def demo_main(demo, argv) -> int:
    """Parse and check the CLI of ``demo`` (a module, see above), then run, save, print, plot.

    Returns 0; 2 for a refused option (before anything runs); 1 when training diverged (the
    message names the step and learning rate) or the demo's ``run`` reports another failure;
    130 when Ctrl-C stopped it, in any phase. When training stops early the metrics computed
    before are saved, with ``stopped_step`` and ``stopped_reason``.
    """
    prog = f"python -m minitheory.demos.{demo.NAME}"
    cfg, out, show, replot = parse(demo.Config, argv, prog=prog,
                                   description=demo.__doc__.split("\n\n")[0],
                                   default_out=f"out/{demo.NAME}",
                                   memory_estimate=getattr(demo, "memory_estimate", None))
    tune_allocator()                    # the entry point, once the options are accepted
    try:
        if replot:
            return _replot(demo, cfg, out, show, prog)
        return _train(demo, cfg, out, show, prog)
    except KeyboardInterrupt:
        print(f"\nstopped: interrupted by Ctrl-C; files already in {out} are complete",
              file=sys.stderr)
        return 130


def _train(demo, cfg, out: Path, show: bool, prog: str) -> int:
    make_out(out, prog)
    t0 = time.perf_counter()
    try:
        metrics, context, error = demo.run(cfg, progress=Progress("training"))
    except TrainingStopped as exc:                  # raised by a phase, not returned
        part = exc.partial if isinstance(exc.partial, dict) else {}
        metrics, context, error = part, None, exc
    except KeyboardInterrupt:                       # a phase that keeps nothing
        error = Interrupted(step=0, partial={})
        error.args = ("interrupted by Ctrl-C before the first training step",)
        metrics, context = {}, None
    computed = bool(metrics)
    if error is not None:
        metrics = dict(metrics, stopped_step=error.step,
                       stopped_reason="interrupted" if isinstance(error, Interrupted) else "diverged")
    try:
        extra = {"demo": demo.NAME}
        if hasattr(demo, "resolved"):
            extra["resolved"] = demo.resolved(cfg)
        save_results(out, cfg, metrics, extra)
    except KeyboardInterrupt:
        print(f"\nstopped: interrupted by Ctrl-C while saving; {out} keeps the files of any "
              f"earlier run, none half-written", file=sys.stderr)
        return 130
    if error is not None:
        return _stopped(error, out, computed)
    try:
        print(demo.report(cfg, metrics, context))
        paths = demo.plot(cfg, metrics, context, out, show)
    except KeyboardInterrupt:
        print(f"\nstopped: interrupted by Ctrl-C while drawing the figures; config.json and "
              f"metrics.npz are saved in {out}: redraw with --replot --out {out}", file=sys.stderr)
        return 130
    print(f"saved {', '.join(p.name for p in paths)}, config.json, metrics.npz to {out} "
          f"({time.perf_counter() - t0:.1f} s)")
    if show:
        pyplot(show).show()
    return 0
