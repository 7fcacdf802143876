"""A CSV of labels beside a folder of images, as Kaggle keeps a dataset: each row names an
image file and its label; the split comes from a column, the source, or the file's name.
A row that cannot be an image of the dataset is a reject with its line and its reason,
and the counts reconcile."""

import pytest

from tests.conftest import folder_images
from tests.extraction import run_extract
from tests.pipeline.sources.helpers import flattened, write_labels_csv
from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.indexing import build_index, check_sources, iter_payloads


def kaggle(tmp_path, lines: list[str], files: dict[str, bytes]):
    """``train.csv`` (``id_code,diagnosis``) and ``train_images/`` holding ``files`` by name."""
    (tmp_path / "train_images").mkdir(exist_ok=True)
    for name, data in files.items():
        (tmp_path / "train_images" / name).write_bytes(data)
    (tmp_path / "train.csv").write_text("\n".join(["id_code,diagnosis", *lines]) + "\n")
    return str(tmp_path / "train.csv")


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])  # as Excel saves a CSV: with a byte-order mark
def test_a_csv_of_labels_indexes_its_images_with_the_split_column_and_reads_their_bytes(tmp_path, bom):
    files = folder_images(per_class=3)
    csv = write_labels_csv(tmp_path, files)
    csv.write_bytes(bom + csv.read_bytes())
    index = build_index("csv", [str(csv)])
    assert index.sources[0].format == "labels-csv" and index.classes == ["blue", "green", "red"]
    assert sorted(e.image_id for e in index.entries) == sorted(flattened(i) for i in files) and not index.rejects
    assert index.splits() == ["test", "train"]
    got = {e.image_id: payload for e, payload in iter_payloads(index.sources, index.entries[2:7])}
    assert got == {flattened(i): files[i] for i in files if flattened(i) in got} and len(got) == 5


def test_kaggles_layout_ids_with_a_suffix_the_split_from_the_files_name_and_integer_labels(tmp_path):
    images = {f"{name}.png": data for name, data in zip(("a1", "b2", "c3"), folder_images(per_class=1).values())}
    uri = kaggle(tmp_path, ["a1,0", "b2,2", "c3,0"], images)
    index = build_index("k", [f"{uri}#image=id_code&label=diagnosis&root=train_images&suffix=.png"])  # beside the CSV
    assert index.sources[0].options["root"] == f"{tmp_path}/train_images"
    assert [e.image_id for e in index.entries] == ["train/0/a1.png", "train/2/b2.png", "train/0/c3.png"]
    assert index.classes == ["0", "1", "2"]  # integer labels are their own class order
    assert {e.image_id: p for e, p in iter_payloads(index.sources, index.entries)}["train/2/b2.png"] == images["b2.png"]


def test_a_row_that_cannot_be_an_image_is_a_reject_naming_its_line_and_the_rest_are_read(tmp_path):
    images = {f"{name}.png": data for name, data in zip(("a1", "b2", "c3"), folder_images(per_class=1).values())}
    lines = ["a1,red", "gone,red", "a1,red", "a1,blue", "../outside,red", "b2,", ",red", "c3,blue"]
    uri = kaggle(tmp_path, lines, images)
    index = build_index("k", [f"{uri}#image=id_code&label=diagnosis&root={tmp_path}/train_images&suffix=.png"])
    assert [e.image_id for e in index.entries] == ["train/red/a1.png", "train/blue/c3.png"]
    reasons = [r.reason for r in index.rejects]
    assert reasons == [f"line 3: no file {tmp_path}/train_images/gone.png",
                       "line 5 lists a1.png again as train/blue, line 2 as train/red: an image has one label, and the "
                       "first row's is kept",
                       f"line 6: ../outside.png is not a path within {tmp_path}/train_images",
                       "line 7 (b2.png) has no label", "line 8 names no image"]
    assert index.repeated_rows == 1  # line 4: a1.png with its label again, the same image
    assert len(index.entries) + len(index.rejects) + index.repeated_rows == len(lines)  # every row accounted for
    assert "train/red/a1.png" not in {r.image_id for r in index.rejects}  # the repeat is named apart from the image


def test_a_row_a_box_lists_an_image_once_a_box_and_the_image_is_counted_once_and_told(tmp_path, lite0, models_root):
    """A detection dataset's labels (RSNA's pneumonia CSV: a row a box, each with the image's
    label) list an image as often as it has boxes: one image, no rejects, and planning says so."""
    images = {f"{name}.png": data for name, data in zip(("p1", "p2", "p3", "p4"), folder_images(per_class=2).values())}
    lines = ["p1,0", "p2,1", "p2,1", "p2,1", "p3,0", "p4,1", "p4,1"]
    uri = kaggle(tmp_path, lines, images)
    said = []
    summary = run_extract("boxes", [f"{uri}#image=id_code&label=diagnosis&root=train_images&suffix=.png&holdout=0.5"],
                          "efficientnet_lite0", str(tmp_path / "store"), models_root, layers=["head"], log=said.append,
                          show_progress=False)
    assert summary["rows"] == 4 and summary["rejected"] == 0
    assert any(line.startswith("indexed 4 images of boxes") and line.endswith(
        "; 3 rows list an image again with the same label (a row a box or an annotation?): each image counted once")
        for line in said), said


def test_a_test_split_is_held_out_of_a_csv_that_names_none_and_its_columns_are_told(tmp_path):
    files = folder_images(per_class=10, splits=("train",))
    lines = ["image,label", *[f"images/train-{i.split('/')[1]}-{i.split('/')[2]},{i.split('/')[1]}" for i in files]]
    write_labels_csv(tmp_path, files)
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")  # no split column, and a name that is no split
    uri = str(tmp_path / "labels.csv")
    with pytest.raises(SourceError, match=r"no split: give it with the source .*#split=NAME"):
        build_index("h", [uri])
    held = build_index("h", [f"{uri}#holdout=0.3"])
    assert held.splits() == ["test", "train"] and len(held.entries) == 30
    assert build_index("h", [f"{uri}#split=train"]).splits() == ["train"]
    with pytest.raises(SourceError, match="no label column 'kind' \\(columns: image, label\\)"):
        build_index("h", [f"{uri}#split=train&label=kind"])
    with pytest.raises(SourceError, match="options id do not apply to a CSV of labels"):
        build_index("h", [f"{uri}#split=train&id=name"])


def test_an_incremental_run_extracts_only_the_images_whose_files_changed(tmp_path, lite0, models_root):
    files = folder_images(per_class=4)
    uri = str(write_labels_csv(tmp_path / "csv", files))
    store, quiet = str(tmp_path / "store"), {"show_progress": False, "log": lambda *_: None}
    first = run_extract("csv", [uri], "efficientnet_lite0", store, models_root, layers=["head"], **quiet)
    changed = tmp_path / "csv" / "images" / "train-red-001.png"
    changed.write_bytes(files["train/green/000.png"])
    second = run_extract("csv", [uri], "efficientnet_lite0", store, models_root, layers=["head"], **quiet)
    assert first["images_extracted"] == 24 and second["version"] == 2
    assert (second["changes"]["changed"], second["changes"]["added"], second["images_extracted"]) == (1, 0, 1)


@pytest.mark.parametrize("content, why", [(b"", "EmptyDataError"),
                                          (b"image,label\na.png,red\nb.png,red,extra,more\n", "ParserError")])
def test_a_file_that_is_no_csv_is_one_line_naming_it_and_why(tmp_path, content, why):
    (tmp_path / "train.csv").write_bytes(content)
    with pytest.raises(SourceError, match=f"train.csv: not a CSV of labels \\({why}: "):
        build_index("bad", [str(tmp_path / "train.csv")])


@pytest.mark.parametrize("name, sep", [("train.csv", ";"), ("train.tsv", "\t"), ("train.csv", ",")])
def test_a_semicolon_or_tab_separated_file_is_read_by_the_delimiter_its_header_shows(tmp_path, name, sep):
    """A spreadsheet saves semicolons where the comma is the decimal mark; a .tsv has tabs.
    The header decides, so a comma in an image's name does not."""
    images = {f"{stem}.png": data for stem, data in zip(("a,1", "b 2", "c3"), folder_images(per_class=1).values())}
    rows = [("a,1.png", "red"), ("b 2.png", "blue"), ("c3.png", "red")]
    quote = (lambda field: f'"{field}"' if "," in field else field) if sep == "," else (lambda field: field)
    (tmp_path / "train_images").mkdir()
    for file, data in images.items():
        (tmp_path / "train_images" / file).write_bytes(data)
    lines = [sep.join(("image", "label")), *[sep.join((quote(f), label)) for f, label in rows]]
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    index = build_index("s", [f"{tmp_path / name}#root=train_images"])
    assert [e.image_id for e in index.entries] == ["train/red/a,1.png", "train/blue/b 2.png", "train/red/c3.png"]
    assert not index.rejects and index.classes == ["blue", "red"]


def test_a_csv_saved_in_a_windows_code_page_is_refused_naming_its_line_and_read_with_its_encoding_given(tmp_path):
    """Excel's 'CSV (Comma delimited)' on Windows writes cp1252: never guessed (a class name
    would be misread in silence), told with the line and the fix, and read as given."""
    images = dict(zip(("a.png", "b.png", "c.png"), folder_images(per_class=1).values()))
    (tmp_path / "train_images").mkdir()
    for file, data in images.items():
        (tmp_path / "train_images" / file).write_bytes(data)
    rows = ["image,label", "a.png,thé", "b.png,café", "c.png,thé"]
    (tmp_path / "train.csv").write_bytes("\r\n".join(rows).encode("cp1252") + b"\r\n")
    with pytest.raises(SourceError, match=r"train.csv: line 2 is not UTF-8 text \(byte 0xe9\): .*#encoding=cp1252"):
        build_index("w", [f"{tmp_path / 'train.csv'}#root=train_images"])
    index = build_index("w", [f"{tmp_path / 'train.csv'}#root=train_images&encoding=cp1252"])
    assert index.classes == ["café", "thé"] and not index.rejects and len(index.entries) == 3
    # Excel's 'Unicode Text': UTF-16 with tabs
    (tmp_path / "train.txt.tsv").write_bytes("\r\n".join(row.replace(",", "\t") for row in rows).encode("utf-16"))
    index = build_index("u", [f"{tmp_path / 'train.txt.tsv'}#root=train_images&encoding=utf-16&split=train"])
    assert index.classes == ["café", "thé"] and len(index.entries) == 3
    with pytest.raises(SourceError, match=r"unknown encoding 'klingon'"):
        build_index("k", [f"{tmp_path / 'train.csv'}#encoding=klingon"])
    with pytest.raises(SourceError, match=r"unknown encoding 'klingon'"):  # before the backbone is exported
        check_sources("k", [f"{tmp_path / 'train.csv'}#encoding=klingon"])
    (tmp_path / "junk.csv").write_bytes(b"\xff\xfe\x00junk\n\x80\x81,\x82\n")
    with pytest.raises(SourceError, match=r"junk.csv: line 1 is not UTF-8 text \(byte 0xff\)"):
        build_index("j", [str(tmp_path / "junk.csv")])
