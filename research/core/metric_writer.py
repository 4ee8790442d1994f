"""Metrics to JSON lines (`metrics.jsonl`) and TensorBoard event files, written by process 0 only.

TensorBoard files are written with the `tensorboard` package's own event writer, so no TensorFlow is needed.
"""

import json
import os
import time

import jax
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def read_log(workdir: str) -> list[dict]:
    """The rows of a run's metrics.jsonl, in the order written."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            self._events = EventFileWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **scalars}) + "\n")
        self._jsonl.flush()
        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()])
        self._events.add_event(Event(step=step, wall_time=time.time(), summary=summary))

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._events.close()
