"""Errors of the pipeline layer; the CLI prints them as one line and exits 1."""


class PipelineError(Exception):
    """A step cannot run as asked (bad arguments, bad source, failed check)."""


class SourceError(PipelineError):
    """A dataset source cannot be read: names the source and the reason."""


class CannotCheck(PipelineError):
    """A set a check cannot run on: a split it lacks, too few images of a class. The
    fit_heads DAG skips that check then, saying why, where a user's command fails."""


class CannotFit(PipelineError):
    """A set whose images cannot fit a head (nor fine-tune a backbone): a split missing or
    with no image, training images of one class or too few to hold validation images out.
    Only other images cure it, not a retry."""


class SampleShrinksSet(PipelineError):
    """A limited run (``--limit``) would commit a version without images that the set holds
    and its source still holds: a sample is no reason to remove them."""


class NothingReadable(PipelineError):
    """Every image a run read was rejected: a set with no row is not committed (the source
    is of a kind the reader takes for images it cannot decode, or all of it is damaged)."""
