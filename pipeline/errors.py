"""Errors of the pipeline layer; the CLI prints them as one line and exits 1."""


class PipelineError(Exception):
    """A step cannot run as asked (bad arguments, bad source, failed check)."""


class SourceError(PipelineError):
    """A dataset source cannot be read: names the source and the reason."""
