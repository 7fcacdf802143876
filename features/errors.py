"""Errors of the feature store; the CLI prints them as one line."""


class StoreError(Exception):
    """The store or a feature set in it cannot be used as asked."""


class WriteFailed(StoreError, OSError):
    """A file could not be written (the disk full, a quota, a read-only disk, an object store
    that refused it); nothing of it is left behind, and what was written before it stays.
    An OSError too, so that what tolerates a failed write (a lease's renewal, retried at its
    next tick) still does."""

    @classmethod
    def of(cls, path: str, exc: OSError) -> "WriteFailed":
        """The failure to write ``path`` that the operating system's ``exc`` reports."""
        return cls(f"could not write {path}: {exc.strerror or exc}")


class NotCommitted(StoreError):
    """No committed feature set matches (none extracted yet, or not finished)."""


class PlanReplaced(StoreError):
    """Another run's commit removed the plan this run was working on."""


class FilesMissing(StoreError):
    """Files a manifest lists are not in the set with their sizes (``bad``: each file's
    manifest row, with its ``reason``)."""

    def __init__(self, message: str, bad: list[dict]) -> None:
        super().__init__(message)
        self.bad = bad
