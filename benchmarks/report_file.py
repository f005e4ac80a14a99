"""The last step of a benchmark: print its Markdown report and write it atomically under reports/."""
from __future__ import annotations

from pathlib import Path


def publish(path: Path, lines: list[str]) -> int:
    """Print ``lines`` and write them to ``path`` (folders created, atomic replace); returns exit status 0."""
    from stlic.output_files import atomic_write_text

    text = "\n".join(lines) + "\n"
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return 0
