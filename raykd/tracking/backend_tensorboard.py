"""The TensorBoard backend: event files in ``RUN/<stage>/tensorboard/<run>`` (tensorboardX writes them;
nothing to start). Reading the run's earlier files tells a resumed stage which points it already holds."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

from raykd.tracking.runs import TrackedRun

TEXT_CONFIG = "config/text_summary"  # the tag tensorboardX gives the config's text


def event_steps(directory: Path) -> dict[str, int]:
    """``{tag: last step}`` of the summaries (scalars, text, images) in a TensorBoard run directory's event
    files (TFRecord frames: length, its CRC, an ``Event`` proto, its CRC). A frame cut short by a killed
    writer ends the file."""
    from google.protobuf.message import DecodeError
    from tensorboardX.proto.event_pb2 import Event

    steps: dict[str, int] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            start, offset = offset + 12, offset + 12 + length + 4
            if offset > len(data):
                break
            try:
                event = Event.FromString(data[start:start + length])
            except DecodeError:  # a damaged frame: what follows it cannot be trusted either
                break
            for value in event.summary.value:
                steps[value.tag] = max(steps.get(value.tag, -1), event.step)
    return steps


class TensorBoardBackend:
    """Scalars per step; the config as a text summary; ``.md`` artifacts as text, ``.png`` as images.

    Events are written and flushed synchronously (tensorboardX's ``EventsWriter``): ``SummaryWriter``
    queues them for a thread, and a process killed meanwhile would lose points its run's other
    backends hold."""

    name = "tensorboard"

    def __init__(self, run: TrackedRun, settings) -> None:
        from tensorboardX.event_file_writer import EventsWriter

        self.where = str(run.tensorboard_dir)
        run.tensorboard_dir.mkdir(parents=True, exist_ok=True)
        self.logged = event_steps(run.tensorboard_dir)
        self.params: set[str] = set()
        # tensorboardX names a file by the second and the host: two writers in one second would share one
        self._writer = EventsWriter(str(run.tensorboard_dir / "events"), f".{time.time_ns()}.{os.getpid()}")

    def _write(self, summary, step: int) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self._writer.write_event(Event(wall_time=time.time(), step=step, summary=summary))
        self._writer.flush()

    def log_params(self, params: dict[str, str]) -> None:
        """The config as one text table, once per run (a resumed run's config is the same run's)."""
        from tensorboardX.summary import text

        if TEXT_CONFIG in self.logged:
            return
        self.logged[TEXT_CONFIG] = 0
        table = "\n".join(["| key | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in sorted(params.items())])
        self._write(text("config", table), 0)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import scalar

        self._write(Summary(value=[v for key, value in metrics.items() for v in scalar(key, value).value]), step)

    def log_artifact(self, path: Path, folder: str) -> None:
        from tensorboardX.summary import image, text

        tag = f"{folder}/{path.name}" if folder else path.name
        if path.suffix == ".md" and f"{tag}/text_summary" not in self.logged:
            self.logged[f"{tag}/text_summary"] = 0
            self._write(text(tag, path.read_text()), 0)
        elif path.suffix == ".png" and tag not in self.logged:
            import matplotlib.image

            self.logged[tag] = 0
            self._write(image(tag, matplotlib.image.imread(str(path))[..., :3], dataformats="HWC"), 0)

    def finish(self, failed: bool | None) -> None:
        self._writer.close()
