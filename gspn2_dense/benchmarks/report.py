"""The one writer of benchmark reports: markdown tables, the stamp line, ``<out>.json`` with
``<out>.md``, and the plots (``docs/benchmarks/``)."""
import json
from pathlib import Path
from typing import Dict, Iterable, Mapping, Sequence, Tuple, Union

PathLike = Union[str, Path]


def table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A markdown table; cells are written with ``str``."""
    lines = ['| ' + ' | '.join(map(str, header)) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(map(str, row)) + ' |' for row in rows]
    return '\n'.join(lines)


def records_table(records: Sequence[Mapping]) -> str:
    """A markdown table of dicts with the same keys, the keys as its header."""
    header = list(records[0])
    return table(header, ([r[k] for k in header] for r in records))


def stamp_line(stamp: Mapping) -> str:
    """One sentence of a :func:`~gspn2_dense.benchmarks.timing.run_stamp`: versions, the
    timing environment when set, date and commit (records older than a field lack it)."""
    parts = [f'{label} {stamp[key]}' for key, label in
             (('torch', 'torch'), ('cuda', 'CUDA'), ('timm', 'timm'), ('python', 'Python'))
             if key in stamp]
    if stamp.get('environment'):
        parts.append('environment ' + ' '.join(f'{k}={v}' for k, v in stamp['environment'].items()))
    return ', '.join(parts + [stamp['date'], f"commit {stamp['commit']}"])


def write(out: PathLike, record: Mapping, markdown: str) -> Tuple[Path, Path]:
    """``<out>.json`` (the record) and ``<out>.md`` (the report); returns both paths."""
    json_path, md_path = Path(f'{out}.json'), Path(f'{out}.md')
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=1) + '\n')
    md_path.write_text(markdown)
    return json_path, md_path


def read(json_path: PathLike) -> Dict:
    return json.loads(Path(json_path).read_text())


def _figure(size):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=size)


def _save(fig, ax, path: PathLike, ylabel: str, title: str) -> Path:
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=7)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return Path(path)


def plot_lines(path: PathLike, series: Mapping[str, Sequence[Tuple[float, float]]], xlabel: str,
               ylabel: str, title: str) -> Path:
    """Log-log lines, one per ``label: [(x, y), ...]``; a label starting with ``floor`` is
    drawn dashed."""
    fig, ax = _figure((6, 4.5))
    for label, points in series.items():
        if points:
            ax.loglog(*zip(*points), 'k--' if label.startswith('floor') else 'o-', label=label)
    ax.set_xlabel(xlabel)
    return _save(fig, ax, path, ylabel, title)


def plot_bars(path: PathLike, labels: Sequence[str], series: Mapping[str, Sequence[float]],
              ylabel: str, title: str) -> Path:
    """Grouped bars: one group per label, one bar per ``name: values`` in each group."""
    fig, ax = _figure((7, 4.5))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar([x + offset for x in range(len(labels))], values, width, label=name)
    ax.set_xticks(list(range(len(labels))))
    ax.set_xticklabels(labels, rotation=30, ha='right', fontsize=7)
    return _save(fig, ax, path, ylabel, title)
