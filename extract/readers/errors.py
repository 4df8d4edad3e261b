"""Errors about datasets and their files; each names the path and the fix."""


class DatasetError(Exception):
    """Wrong root, unknown split, an empty split or unknown ids."""


class BadSampleError(Exception):
    def __init__(self, path, reason: str, fix: str):
        self.path, self.reason, self.fix = str(path), reason, fix
        super().__init__(f"{path}: {reason}. Fix: {fix}")

    def __reduce__(self):  # raised in DataLoader workers: must survive pickling
        return (BadSampleError, (self.path, self.reason, self.fix))
