"""Source URIs: the checksums and options given in a URI's fragment, and the files a
glob or a brace list names."""

from __future__ import annotations

import re

import fsspec

from tlfs.pipeline.errors import SourceError

CHECKSUMS = ("md5", "sha256")
OPTIONS = {
    "split": "the split of every image in the source (WebDataset archives, Parquet tables without a split column, "
             "image-folder trees of <class>/<image>)",
    "holdout": "a fraction of the source's train images held out as its test split (0.2 or 20%); an image-folder "
               "tree given with it is <class>/<image>",
    "image": "a Parquet table's image column (binary, or a struct with bytes/path), or a CSV's column of image paths",
    "label": "a Parquet table's or a CSV's label column (int with class names in the schema, or string)",
    "split_column": "a Parquet table's or a CSV's split column",
    "id": "a Parquet table's image id column",
    "root": "the folder a CSV's image paths are relative to (default: the CSV's folder)",
    "suffix": "added to a CSV's image names that have no image suffix (.png for Kaggle's ids)",
    "encoding": "a CSV's text encoding where it is not UTF-8 (cp1252, as Excel saves a CSV on Windows)",
}
def parse_uri(uri: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """A source URI's fragment: expected checksums (``#md5=HEX``, ``#sha256=HEX``) and
    options (``#split=train&label=fine_label``, see :data:`OPTIONS`)."""
    if "#" not in uri:
        return uri, {}, {}
    base, fragment = uri.rsplit("#", 1)
    expected, options = {}, {}
    for part in fragment.split("&"):
        key, _, value = part.partition("=")
        if not value or (key not in CHECKSUMS and key not in OPTIONS):
            known = ", ".join([f"{k}=HEX" for k in CHECKSUMS] + [f"{k}={'FRACTION' if k == 'holdout' else 'NAME'}"
                                                                  for k in OPTIONS])
            raise SourceError(f"{uri}: unknown fragment {part!r} (known: {known})")
        if key in CHECKSUMS:
            expected[key] = value.lower()
        else:
            options[key] = value
    return base, expected, options


def given_uri(uri: str, options: dict[str, str] | None) -> str:
    """``uri`` with its ``options`` as a fragment, as a user gives it (``photos#holdout=0.2``):
    the inverse of :func:`parse_uri` for options."""
    return uri + ("#" + "&".join(f"{k}={v}" for k, v in options.items()) if options else "")


def recorded_uris(sources: list[dict]) -> list[str]:
    """Each file of a set's lineage ``sources`` as a URI that reads it again, its options kept."""
    return [given_uri(source["uri"], source.get("options")) for source in sources]


def expand_uri(uri: str) -> list[str]:
    """The files a URI names: itself, or for a glob (``*.tar``) or a brace list
    (``train-{0000..0099}.tar``, ``{a,b}.tar``) every match, sorted. A pattern that
    matches nothing is an error."""
    names = _expand_braces(uri)
    if len(names) == 1 and not any(c in uri for c in "*?["):
        return names
    fs, _ = fsspec.core.url_to_fs(names[0])
    found: list[str] = []
    for name in names:
        protocol, path = fsspec.core.split_protocol(name)
        if any(c in path for c in "*?["):
            matches = sorted(fs.glob(fs._strip_protocol(name)))
            found.extend(m if protocol in (None, "file") else f"{protocol}://{m}" for m in matches)
        else:
            found.append(name)
    if not found:
        raise SourceError(f"{uri}: matches no file")
    return found


_BRACE = re.compile(r"\{([^{}]*)\}")


def _expand_braces(text: str) -> list[str]:
    """``{0000..0099}`` (zero-padded ranges) and ``{a,b,c}`` lists, as in a shell."""
    match = _BRACE.search(text)
    if match is None:
        return [text]
    body = match.group(1)
    if ".." in body:
        low, _, high = body.partition("..")
        if not (low.isdigit() and high.isdigit()):
            raise SourceError(f"{text}: a brace range needs numbers, as in {{0000..0099}}")
        width = len(low) if low.startswith("0") else 0
        options = [str(n).zfill(width) for n in range(int(low), int(high) + 1)]
    else:
        options = body.split(",")
    head, tail = text[: match.start()], text[match.end():]
    return [expanded for option in options for expanded in _expand_braces(head + option + tail)]
