"""Run logs: TensorBoard scalars plus a JSON-lines file (always written, read by plot-dynamics).

``RUN/train_log.jsonl`` holds one :meth:`StepOutput.record` per logged step, plus the wall-clock
``time`` (Unix seconds) it was written and whatever the caller adds (the solver: ``elapsed_s``,
training seconds since the run began, carried across resumes). On resume the
records after the resumed step (written after the last checkpoint, before a crash) are dropped,
so the file reads as one uninterrupted run; TensorBoard gets ``purge_step = resumed step + 1``
(its events from that step on are dropped, the resumed step itself is kept, as in the JSONL).
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

from stlic.training.outputs import StepOutput

#: file name of the JSON-lines training log inside a run folder
LOG_NAME = "train_log.jsonl"


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """Records of ``RUN/train_log.jsonl`` (or of the given .jsonl file), in order."""
    path = Path(run_dir)
    path = path / LOG_NAME if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {str(path)!r}")
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [(number, line) for number, line in enumerate(handle, 1) if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise OSError(f"cannot read training log {str(path)!r}: {error}") from None
    records = []
    for index, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if index == len(lines) - 1 and not line.endswith("\n"):  # a write cut by a kill
                warnings.warn(f"{str(path)!r}: ignoring its last line {number}, cut mid-write", stacklevel=2)
                break
            raise ValueError(f"{str(path)!r} line {number} is not a JSON record") from None
    return records


class RunLogger:
    """Writes step records to TensorBoard (``RUN/tensorboard``) and ``RUN/train_log.jsonl``.

    Args:
        out_dir: the run folder.
        resume_step: keep only existing records with ``step <= resume_step`` (None: start anew).
        tensorboard: also write TensorBoard event files.
    """

    def __init__(self, out_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / LOG_NAME
        kept = []
        if resume_step is not None and self.path.is_file():
            kept = [record for record in read_log(self.path) if record["step"] <= resume_step]
        with open(self.path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in kept)
        self._file = open(self.path, "a", encoding="utf-8")
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge_step = None if resume_step is None else resume_step + 1  # step resume_step is logged already
            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=purge_step)

    def log(self, output: StepOutput, **extra: float) -> None:
        """Append ``output.record()`` plus ``time`` and ``extra`` (JSONL; TensorBoard gets ``extra``)."""
        record = {**output.record(), **extra}
        self._file.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and value is not None:
                    self._writer.add_scalar(key if "/" in key else f"train/{key}", value, output.step)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
