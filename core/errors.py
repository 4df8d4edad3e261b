"""Every error a user can fix, in one place.

Each message is one line that names the value, file or path at fault and the fix. The command line
(`hairdiff.cli.main`) is the one place that turns a `HairdiffError` into that line on stderr and the
error's `exit_code`; anything else that escapes is a bug and keeps its traceback.
"""
from __future__ import annotations


class HairdiffError(Exception):
    """A problem the user can fix. `exit_code`: 2 for a wrong input, 1 for a stopped run, 3 for divergence."""

    exit_code = 2


class UsageError(HairdiffError):
    """An option's value is invalid; found before any model, dataset or store is touched."""


# ------------------------------------------------------------------------------------------ datasets
class DatasetError(HairdiffError):
    """Wrong root, unknown split, an empty split or unknown ids."""


class BadSampleError(HairdiffError):
    """One image or mask file cannot be used; names the file, the reason and the fix."""

    def __init__(self, path, reason: str, fix: str):
        self.path, self.reason, self.fix = str(path), reason, fix
        super().__init__(f"{path}: {reason}. Fix: {fix}")

    def __reduce__(self):  # raised in DataLoader workers: must survive pickling
        return (BadSampleError, (self.path, self.reason, self.fix))


class BadInputStop(HairdiffError):
    """--on-error stop met a bad file: everything already written is kept."""

    exit_code = 1


# --------------------------------------------------------------------------------------------- model
class ModelNotFoundError(HairdiffError):
    """The backbone could not be found or loaded; the message says how to pass a local path."""


class ClusterError(HairdiffError):
    """The Dask scheduler of --scheduler cannot be reached (exit 2), or was lost mid-run (exit 1: what the
    workers wrote is kept); the message names the address and how long it was waited for."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self):
        return (ClusterError, (str(self), self.exit_code))


# --------------------------------------------------------------------------------------------- cache
class CacheError(HairdiffError):
    """A feature-store problem the user can act on; the message names the store."""


class StoreNotFoundError(CacheError):
    pass


class StoreAccessError(CacheError):
    """A store or cache root at a URL cannot be reached or read (credentials, network, permissions): never called
    missing or damaged; the message names the URL and the client's own reason."""


class StoreMismatchError(CacheError):
    """Stores or runs that must share feature settings do not."""


class SchemaVersionError(CacheError):
    pass


class ReadOnlyStoreError(CacheError):
    pass


class CorruptSampleError(CacheError):
    """A sample flagged done reads back absent or fails its checksum; `part` says which of its data."""

    def __init__(self, message: str, part: str = ""):
        super().__init__(message)
        self.part = part


class VerifyError(CacheError):
    """`cache verify` (or the check after `push`/`pull`) found corrupt samples, or, with --complete,
    samples not extracted yet; the report printed before the error names them."""

    exit_code = 1


class NotAsStoredError(CacheError):
    """`cache views` drew some panels without their photo: the photo could not be shown as the store holds it
    (the dataset changed or is unreachable, another view rule, a label that differs); the pictures and
    views.json are written and say which."""

    exit_code = 1


class StoreWriteError(CacheError):
    """Writing failed (disk full, quota, permissions); what was written before stays consistent."""

    exit_code = 1


# --------------------------------------------------------------------------------------- train, eval
class EmptyDataError(HairdiffError):
    """No sample of the given stores is finished."""


class CheckpointError(HairdiffError):
    """A run folder has no usable weights, or a checkpoint does not fit the model."""


class RunDirError(HairdiffError):
    """The output folder already holds a run (or --resume does not match it)."""


class RunMismatchError(HairdiffError):
    """A run's recorded backbone or settings cannot be reproduced here."""


class Interrupted(HairdiffError):
    """Ctrl-C during a long command; the message says what was kept and how to continue."""

    exit_code = 130


class TrainingProcessFailed(HairdiffError):
    """A process of a data-parallel training failed; it printed its own error first."""

    exit_code = 1


class TrainingDiverged(HairdiffError):
    """The loss or the gradient became NaN/inf; the last good checkpoint is kept."""

    exit_code = 3


# ------------------------------------------------------------------------- damaged files (issue 18)
class StoreMetadataError(CacheError):
    """A store's metadata (its group's or an array's zarr.json, or the attributes in it) is missing or does
    not decode: the store cannot be read at all. `problems`: [(file, what is wrong)], each file named."""

    def __init__(self, url: str, problems: list[tuple[str, str]]):
        self.url, self.problems = str(url), list(problems)
        listed = "; ".join(f"{f}: {why}" for f, why in self.problems[:4])
        more = f" (and {len(self.problems) - 4} more)" if len(self.problems) > 4 else ""
        super().__init__(f"{listed}{more}: the store's metadata is damaged, so none of its samples can be read. "
                         f"Fix: delete {self.url} and run the `pipeline extract` command that made it again, or copy "
                         f"a good copy back (`pipeline cache pull`)")

    def __reduce__(self):
        return (StoreMetadataError, (self.url, self.problems))


class NonFiniteHeadError(CheckpointError):
    """A head's weights hold NaN or infinite values (a diverged training): never scored, used or exported."""


class RunFileError(CheckpointError):
    """A file a run folder points to (run.json, config.json, head.safetensors, best/, a checkpoint) is missing
    or damaged; the message names it and how to get a usable head back."""


class OutputMismatchError(HairdiffError):
    """An output folder was made with other settings or inputs than the command that picks it up now
    (core/manifest.py); the message names what differs and how to start afresh."""
    exit_code = 2


class PathClashError(HairdiffError):
    """Paths or inputs that must differ do not: an output inside a feature store, a held-out store that shares
    the training images, train and test ids that overlap (cache/distinct.py); names both sides."""


# ---------------------------------------------------------------------- model folders, the hub (issue 24)
class ModelFolderError(CheckpointError):
    """A folder given as a model is neither a model folder (config.json + model.safetensors, as `pipeline export` and
    `save_pretrained` write them) nor a run folder, or one of its files is missing, damaged or does not fit the
    other; the message names the file and the fix."""


class HubError(HairdiffError):
    """A Hugging Face Hub id cannot be reached (no network, offline mode, an unknown repository); one line naming
    the id and what to pass instead."""


class HubPushError(HubError):
    """Publishing a model folder to the Hub failed; the local folder is kept."""

    exit_code = 1


class EvaluationError(HairdiffError):
    """An evaluation given to `pipeline compare` cannot be found or read (no metrics.json / per_image.json, or
    one written before per-image confusion matrices were kept); the message names it and how to get one."""


class EvaluationMismatchError(HairdiffError):
    """Two evaluations given to `pipeline compare` did not score the same images at the same annotation
    resolution, so their differences cannot be paired; names both and the first difference."""
