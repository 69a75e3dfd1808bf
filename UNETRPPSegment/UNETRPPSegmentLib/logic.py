"""Qt-free logic of the UNETRPPSegment module: volume nodes -> ``unetrpp segment`` child -> segmentation node.

One run (:meth:`SegmentationLogic.start`):

1. each input volume is written to a temporary uncompressed NRRD through a standalone storage node
   (the user's node gets no storage node and is never modified);
2. ``<python> -m unetrpp segment IN... OUT.seg.nrrd --model M --progress json`` runs in the background
   (:class:`~UNETRPPSegmentLib.process.ProcessRunner`); its JSON events become :class:`Progress`
   callbacks with a percentage that never goes backwards;
3. the ``.seg.nrrd`` is read into a NEW segmentation node (an existing one is replaced only with
   ``replace_confirmed=True``), with names, colours and terminology from the file, the input volume as
   reference geometry, the input's parent transform carried over, placed in the input's study;
4. the temporary folder is removed after success, failure and cancel alike.

A parent transform of the input is carried over to the result rather than hardened: the child sees the
volume's own (scanner) geometry, so left and right stay those of the acquisition, the result sits on
the volume's exact voxel grid, and it follows the volume wherever the transform moves it. This works
for non-linear transforms too, which hardening could only do by resampling.

Only slicer, vtk, numpy and the Qt-free ``unetrpp.events``/``unetrpp.errors`` are imported; the
widget drives :meth:`SegmentationJob.poll` from a QTimer, scripts and tests use
``wait_for_completion=True``.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import slicer
from unetrpp.errors import InputImageError, UnetrppError
from unetrpp.events import Event, ProgressEvent, StageEvent

from .nodes import SegmentationError, check_inputs, import_segmentation, write_volume
from .process import ProcessRunner, RunState
from .review import SegmentSummary, review_segmentation_node

__all__ = [
    "CORE_DIR",
    "Device",
    "JobStatus",
    "Progress",
    "SegmentationError",
    "SegmentationRequest",
    "SegmentationJob",
    "SegmentationLogic",
    "QUALITIES",
    "child_environment",
    "modality_warning",
    "volume_dicom_modality",
]

logger = logging.getLogger(__name__)

CORE_DIR = Path(__file__).resolve().parents[1]
"""The folder that holds the ``unetrpp`` package; put on the child's PYTHONPATH."""

# The values of unetrpp.pipeline.segment_types.Quality, which is not imported here: it needs SimpleITK and
# torch, and the panel must open before they are installed (a test keeps the two equal).
QUALITIES = ("fast", "paper")

# Where each stage of the child (``unetrpp segment --progress json``) sits on the overall progress bar
# (percent). ``load_model`` may come before ``read``; the percentage never goes back anyway.
_STAGE_SPANS: dict[str, tuple[float, float]] = {
    "read": (0.0, 3.0),
    "load_model": (3.0, 6.0),
    "preprocess": (6.0, 15.0),
    "inference": (15.0, 90.0),
    "resample": (90.0, 96.0),
    "write": (96.0, 98.0),
    "importing": (98.0, 100.0),
}


class Device(str, enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class JobStatus(enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Progress:
    """What the progress bar shows: stage, overall percent (never decreasing), message, time left."""

    stage: str
    percent: float
    message: str = ""
    eta_seconds: float | None = None


@dataclass(frozen=True)
class SegmentationRequest:
    """One segmentation run.

    Attributes:
        input_volumes: scalar volume nodes, one per model input channel (four for ``tumor``); they must
            share one voxel grid and parent transform.
        model: registry name (``synapse``) or path to a model file.
        device: ``auto`` (GPU if present), ``cpu`` (forced: the child sees no GPU) or ``cuda``.
        overlap: sliding-window overlap between neighbouring tiles (0 to <1).
        use_tta: mirroring test-time augmentation (slower, slightly better).
        quality: ``fast`` (default), or ``paper``: what the paper's numbers used (``unetrpp segment
            --quality paper``), which decides the overlap and the mirroring itself, so ``overlap`` and
            ``use_tta`` are not sent then.
        output_segmentation: an existing segmentation node to fill; only used with ``replace_confirmed``,
            otherwise a new node is created and the existing one keeps the user's edits.
        replace_confirmed: the user agreed to replace the segments of ``output_segmentation``.
        create_surfaces: also build closed-surface (3D) representations.
        check_modality: let the child warn when an input does not look like the model's modality;
            False (``--force-modality``) once the user saw :func:`modality_warning` and went on.
    """

    input_volumes: tuple
    model: str
    device: Device = Device.AUTO
    overlap: float = 0.5
    use_tta: bool = False
    quality: str = "fast"
    output_segmentation: object | None = None
    replace_confirmed: bool = False
    create_surfaces: bool = False
    check_modality: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_volumes", tuple(self.input_volumes))
        object.__setattr__(self, "device", Device(self.device))
        if not self.input_volumes:
            raise InputImageError("select an input volume")
        if not 0.0 <= self.overlap < 1.0:
            raise InputImageError(f"overlap must be in [0, 1), got {self.overlap}")
        if not str(self.model).strip():
            raise InputImageError("select a model")
        if self.quality not in QUALITIES:
            raise InputImageError(f"quality must be one of {', '.join(QUALITIES)}, got {self.quality!r}")


def child_environment(
    device: Device | str = Device.AUTO,
    base: Mapping[str, str] | None = None,
    core_dir: Path = CORE_DIR,
) -> dict[str, str]:
    """Environment of the ``unetrpp`` child: core on PYTHONPATH, UTF-8 I/O, GPU hidden when forced CPU."""
    if base is None:
        base = _startup_environment()
    env = dict(base)
    paths = [str(core_dir)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUTF8"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if Device(device) is Device.CPU:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _startup_environment() -> dict[str, str]:
    """Inside Slicer: the environment before the launcher changed it (PythonSlicer sets its own)."""
    try:
        return dict(slicer.util.startupEnvironment())
    except (AttributeError, ImportError, TypeError):
        return dict(os.environ)


class SegmentationJob:
    """One running segmentation; created by :meth:`SegmentationLogic.start`.

    Attributes:
        status: RUNNING until the job ended as SUCCEEDED, FAILED or CANCELLED.
        segmentation_node: the node holding the result (after success).
        error_message: one line saying why it failed.
        review: per-segment volume and flags (after success).
    """

    def __init__(
        self,
        logic: SegmentationLogic,
        request: SegmentationRequest,
        runner: ProcessRunner,
        temp_dir: Path,
        output_path: Path,
        on_progress: Callable[[Progress], None] | None,
        on_done: Callable[[SegmentationJob], None] | None,
    ) -> None:
        self.logic = logic
        self.request = request
        self.runner = runner
        self.temp_dir = temp_dir
        self.output_path = output_path
        self.on_progress = on_progress
        self.on_done = on_done
        self.status = JobStatus.RUNNING
        self.segmentation_node = None
        self.error_message = ""
        self.review: tuple[SegmentSummary, ...] = ()
        self.started_at = time.monotonic()
        self.elapsed_seconds = 0.0
        self._percent = 0.0
        self._stage = ""

    @property
    def state(self) -> RunState:
        return self.runner.state

    def handle_event(self, event: Event) -> None:
        """Turn a child event into a :class:`Progress` callback (percent never decreases)."""
        if isinstance(event, ProgressEvent):
            start, end = _STAGE_SPANS.get(event.stage, (self._percent, self._percent))
            fraction = min(max(event.fraction, 0.0), 1.0)
            self._report(event.stage, start + (end - start) * fraction, "", event.eta_seconds)
        elif isinstance(event, StageEvent):
            start, _ = _STAGE_SPANS.get(event.stage, (self._percent, self._percent))
            self._report(event.stage, start, event.message)

    def _report(self, stage: str, percent: float, message: str, eta_seconds: float | None = None) -> None:
        if percent < self._percent:
            percent = self._percent
        if percent == self._percent and stage == self._stage and not message and eta_seconds is None:
            return
        self._percent, self._stage = percent, stage
        if self.on_progress is not None:
            self.on_progress(Progress(stage, round(percent, 2), message, eta_seconds))

    def poll(self) -> bool:
        """Advance the job (call from the main thread); True while it is still running."""
        if self.status is not JobStatus.RUNNING:
            return False
        removed = [volume for volume in self.request.input_volumes if volume.GetScene() is None]
        if removed:  # the user deleted an input while it ran: there is nothing to put the result on
            self.runner.cancel()
            name = removed[0].GetName()
            self._end(JobStatus.CANCELLED, f"input volume '{name}' was removed from the scene")
            return False
        state = self.runner.poll()
        if state is RunState.IMPORTING:
            self._report("importing", _STAGE_SPANS["importing"][0], "Loading the segmentation")
            try:
                self.segmentation_node = self.logic.import_result(self.output_path, self.request)
            except Exception as error:  # any failure ends the job: the panel must not stay on "Cancel"
                self.runner.finish()
                self._end(JobStatus.FAILED, _import_failure_message(error))
                return False
            try:
                self.review = review_segmentation_node(self.segmentation_node)
            except Exception:  # the review table is a help; a result without it is still a result
                logger.warning("Could not compute the review of the segmentation", exc_info=True)
            self.runner.finish()
            self._report("importing", 100.0, "Done")
            self._end(JobStatus.SUCCEEDED)
        elif state is RunState.FAILED:
            self._end(JobStatus.FAILED, self._with_volume_names(self.runner.error_message))
        elif state is RunState.CANCELLED:
            self._end(JobStatus.CANCELLED)
        return self.status is JobStatus.RUNNING

    def _with_volume_names(self, message: str) -> str:
        """The child names its temporary input files; the user knows the volumes by their names."""
        for index, volume in enumerate(self.request.input_volumes):
            path = self.temp_dir / _input_file_name(index)
            for text in (str(path), path.name):
                message = message.replace(text, f"volume '{volume.GetName()}'")
        return message

    def cancel(self) -> None:
        """Kill the child's whole process tree; no node is created, temporary files are removed."""
        if self.status is JobStatus.RUNNING:
            self.runner.cancel()
            self.poll()

    def wait(self, timeout_seconds: float | None = None, interval_seconds: float = 0.05) -> SegmentationJob:
        """Block until the job ended; raises :class:`SegmentationError` when it failed.

        Between polls it calls the logic's ``keep_alive`` (in Slicer: ``slicer.app.processEvents``), so a
        script that blocks does not freeze the application's window.
        """
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise SegmentationError(f"segmentation did not finish within {timeout_seconds} s")
            if self.logic.keep_alive is not None:
                self.logic.keep_alive()
            time.sleep(interval_seconds)
        if self.status is JobStatus.FAILED:
            raise SegmentationError(self.error_message)
        return self

    def _end(self, status: JobStatus, message: str = "") -> None:
        self.status = status
        self.error_message = message
        self.elapsed_seconds = time.monotonic() - self.started_at
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        if status is JobStatus.FAILED:
            logger.error("UNETR++ segmentation failed: %s", message)
        if self.on_done is not None:
            self.on_done(self)


class SegmentationLogic:
    """Runs segmentations in a background process and imports the results (no Qt).

    Args:
        python_executable: interpreter of the child; inside Slicer ``sys.executable`` is PythonSlicer.
        temp_root: folder for the per-run temporary folders (Slicer's temporary path by default).
        base_environment: environment the child's is derived from (Slicer's startup one by default).
        keep_alive: called while a blocking :meth:`SegmentationJob.wait` waits (keeps a GUI responsive).
    """

    def __init__(
        self,
        *,
        python_executable: str | Path | None = None,
        temp_root: str | Path | None = None,
        base_environment: Mapping[str, str] | None = None,
        keep_alive: Callable[[], object] | None = None,
    ) -> None:
        self.keep_alive = keep_alive
        self.python_executable = str(python_executable or sys.executable)
        self.temp_root = Path(temp_root) if temp_root is not None else _slicer_temp_dir()
        self.base_environment = dict(base_environment) if base_environment is not None else None

    # ---- child command -------------------------------------------------------------------------
    def core_command(self, *arguments: str) -> list[str]:
        """``[python, -m, unetrpp, *arguments]``."""
        return [self.python_executable, "-m", "unetrpp", *arguments]

    def segment_command(
        self, input_paths: Sequence[Path], output_path: Path, request: SegmentationRequest
    ) -> list[str]:
        arguments = [
            "segment",
            *(str(p) for p in input_paths),
            str(output_path),
            "--model",
            str(request.model),
        ]
        arguments += ["--device", request.device.value]
        if request.quality == "paper":
            arguments += ["--quality", "paper"]  # it fixes the overlap and the mirroring itself
        else:
            arguments += ["--overlap", repr(float(request.overlap))]
            if request.use_tta:
                arguments.append("--tta")
        if not request.check_modality:
            arguments.append("--force-modality")
        return self.core_command(*arguments, "--progress", "json")

    def run_core(
        self,
        arguments: Sequence[str],
        *,
        device: Device = Device.AUTO,
        on_event: Callable[[Event], None] | None = None,
        on_log: Callable[[str], None] | None = None,
    ) -> ProcessRunner:
        """Start any ``unetrpp`` subcommand in the background (weights download, import)."""
        runner = ProcessRunner(
            self.core_command(*arguments),
            env=child_environment(device, self.base_environment),
            on_event=on_event,
            on_log=on_log,
        )
        runner.start()
        return runner

    # ---- one segmentation ----------------------------------------------------------------------
    def start(
        self,
        request: SegmentationRequest,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_done: Callable[[SegmentationJob], None] | None = None,
        wait_for_completion: bool = False,
    ) -> SegmentationJob:
        """Write the inputs, start the child and return the job (finished already when blocking).

        Raises:
            InputImageError: an input volume is empty or the inputs do not share one grid.
            SegmentationError: (blocking mode) the child failed; the message is its one-line error.
        """
        check_inputs(request.input_volumes)
        if self.temp_root is not None:
            self.temp_root.mkdir(parents=True, exist_ok=True)
        temp_dir = Path(tempfile.mkdtemp(prefix="UNETRPP-", dir=self.temp_root))
        try:
            input_paths = [
                write_volume(volume, temp_dir / _input_file_name(index))
                for index, volume in enumerate(request.input_volumes)
            ]
        except BaseException:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        output_path = temp_dir / "result.seg.nrrd"
        job: SegmentationJob

        def forward(event: Event) -> None:
            job.handle_event(event)
            if on_event is not None:
                on_event(event)

        runner = ProcessRunner(
            self.segment_command(input_paths, output_path, request),
            env=child_environment(request.device, self.base_environment),
            on_event=forward,
            on_log=on_log,
        )
        job = SegmentationJob(self, request, runner, temp_dir, output_path, on_progress, on_done)
        runner.start()
        if wait_for_completion:
            job.wait()
        return job

    # ---- result import -------------------------------------------------------------------------
    def import_result(self, path: str | Path, request: SegmentationRequest):
        """Load a ``.seg.nrrd`` for ``request``: into a new node, or replace the chosen node's segments
        only when ``replace_confirmed``. Returns the segmentation node."""
        reference = request.input_volumes[0]
        replace = request.output_segmentation if request.replace_confirmed else None
        name = f"{reference.GetName()} {Path(str(request.model)).stem} segmentation"
        return import_segmentation(
            path, reference, name, replace=replace, create_surfaces=request.create_surfaces
        )


def volume_dicom_modality(volume) -> str | None:
    """The DICOM Modality (0008,0060) of the series ``volume`` was loaded from, upper case; None when it
    did not come from DICOM or the DICOM database is not there (a bare Slicer core, a scene file).

    Slicer's DICOM scalar volume plugin stores the SOP Instance UIDs of the loaded files, space-separated,
    in the node attribute ``DICOM.instanceUIDs``, and reads tags back per instance with
    ``slicer.dicomDatabase.instanceValue(uid, "gggg,eeee")`` (Slicer v5.8.1,
    ``Modules/Scripted/DICOMPlugins/DICOMScalarVolumePlugin.py``; the slice view annotations read tags
    the same way, ``Modules/Scripted/DataProbe/DataProbeLib/SliceViewAnnotations.py``).
    """
    uids = (volume.GetAttribute("DICOM.instanceUIDs") or "").split()
    database = getattr(slicer, "dicomDatabase", None)
    if not uids or database is None:
        return None
    try:
        value = database.instanceValue(uids[0], "0008,0060")
    except Exception:  # a closed or broken database: the voxel check still runs
        logger.info("could not read the DICOM Modality of '%s'", volume.GetName(), exc_info=True)
        return None
    return str(value or "").strip().upper() or None


def modality_warning(volumes: Sequence, card) -> str | None:
    """The core's one-line modality warning for these input volume nodes and model card, or None.

    The same rules as ``unetrpp segment`` (:mod:`unetrpp.pipeline.modality`) on the nodes' voxels, plus
    the DICOM Modality where a volume came from DICOM (the child only sees NRRD files, so it cannot).
    Imports the core (numpy, SimpleITK, scipy) when called, not when this module is imported.
    """
    from unetrpp.pipeline.modality import modality_warning as core_warning

    check_inputs(volumes)  # the error start() would give, before reading voxels that are not there
    arrays = [slicer.util.arrayFromVolume(volume) for volume in volumes]
    return core_warning(arrays, card, dicom_modalities=[volume_dicom_modality(v) for v in volumes])


def _import_failure_message(error: Exception) -> str:
    """Ours are one line already; anything else gets one line that says what failed."""
    if isinstance(error, UnetrppError):
        return str(error)
    detail = (str(error) or type(error).__name__).splitlines()[0]
    return f"the result could not be loaded: {detail}"


def _input_file_name(index: int) -> str:
    return f"input_{index}.nrrd"


def _slicer_temp_dir() -> Path | None:
    try:
        return Path(slicer.app.temporaryPath) / "UNETRPP"
    except AttributeError:
        return None
