"""The command-line contract, through the installed ``tlfs`` entry point."""

import argparse
import json
import os
import re
import subprocess
import sys

import pytest

from tlfs.pipeline.cli import build_parser, main
from tests.conftest import folder_images, write_tar


def tlfs(*args, env=None, check=True):
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "tlfs.pipeline.cli", *args], capture_output=True, text=True, env=full_env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"tlfs {' '.join(args)} failed:\n{proc.stderr}")
    return proc


COMMANDS = ["backbones", "export", "extract", "fit", "predict", "export-classifier", "duplicates", "similar", "label-issues", "label-next", "learning-curve", "map", "heads", "sweep", "finetune", "bench", "verify", "advise", "report", "ls", "describe", "history", "vacuum", "rm"]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_the_command_list_is_every_command():
    assert sorted(_subcommands()) == sorted(COMMANDS)


def test_the_installed_command_answers_help():
    assert "usage: tlfs [-h] [--version] COMMAND" in tlfs("--help").stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit:  # argparse exits after the help, with status 0
        main([command, "--help"])
    assert exit.value.code == 0 and "usage: tlfs " + command in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_says_what_it_is(command):
    unexplained = [action.option_strings[0] if action.option_strings else action.dest
                   for action in _subcommands()[command]._actions
                   if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()]
    assert unexplained == [], f"tlfs {command}: options without help: {unexplained}"


# argv -> what the one line must name
BAD_ARGUMENTS = {
    "limit_text": (["extract", "--limit", "abc"], "argument --limit: expected a whole number, got 'abc'"),
    "limit_zero": (["extract", "--dataset", "x", "--limit", "0"], "argument --limit: expected a positive number, got 0"),
    "batch_negative": (["extract", "--dataset", "x", "--batch-size", "-3"], "argument --batch-size"),
    "threads_negative": (["extract", "--dataset", "x", "--threads", "-1"], "argument --threads: expected 0 or more"),
    "device": (["bench", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    "missing_layer": (["fit", "--dataset", "x"], "the following arguments are required: --layer"),
    "keep_days": (["vacuum", "--dataset", "x", "--keep-days", "-1"], "argument --keep-days: expected 0 or more, got -1"),
    "lr_zero": (["finetune", "--dataset", "x", "--lr", "0"], "argument --lr: expected a number above 0, got 0"),
    "lr_nan": (["finetune", "--dataset", "x", "--lr", "nan"], "argument --lr: expected a finite number"),
    "momentum": (["finetune", "--dataset", "x", "--momentum", "-0.5"], "argument --momentum: expected 0 or more"),
    "freeze": (["finetune", "--dataset", "x", "--freeze", "abc"], "argument --freeze: expected tap blocks kept frozen"),
    "similar_score": (["advise", "--dataset", "x", "--similar-score", "2"], "argument --similar-score: expected a number in (0, 1]"),
    "head": (["fit", "--dataset", "x", "--layer", "head", "--head", "svm"], "argument --head: invalid choice: 'svm'"),
    "folds": (["label-issues", "--dataset", "x", "--folds", "0"], "argument --folds: expected a positive number, got 0"),
    "min_probability": (["predict", "--dataset", "x", "--min-probability", "1.5", "a.jpg"],
                        "argument --min-probability: expected a number in (0, 1], got 1.5"),
    "shares": (["learning-curve", "--dataset", "x", "--shares", "0.5,2"], "argument --shares: expected a number in (0, 1], got 2"),
    "command": (["extrct"], "argument COMMAND: invalid choice: 'extrct'"),
    "unknown_flag": (["fit", "--dataset", "x", "--layer", "head", "--no-progress"],
                     "tlfs fit: error: unrecognized arguments: --no-progress (see tlfs fit --help)"),
    "table_output": (["map", "--dataset", "x", "--output", "places.png"],
                     "argument --output: places.png: write the table to a .csv, .parquet or .jsonl file"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_a_bad_argument_is_one_line_naming_the_flag_and_exit_1(case, capsys):
    argv, message = BAD_ARGUMENTS[case]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's error, as the installed command ends it
        code = exit.code
    stderr = capsys.readouterr().err
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlfs") and message in lines[0], stderr


def test_the_installed_command_ends_a_bad_argument_with_one_line_and_status_1():
    proc = tlfs("extract", "--limit", "abc", check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "tlfs extract: error: argument --limit: expected a whole number, got 'abc' (see tlfs extract --help)"]


@pytest.mark.parametrize("command, images", [("predict", ["a.jpg"]), ("duplicates", []), ("similar", ["a.jpg"]),
                                             ("label-issues", []), ("label-next", ["a.jpg"]), ("map", [])])
def test_a_table_in_a_format_it_cannot_be_written_in_is_refused_before_any_work(command, images, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--dataset", "nowhere", "--store", str(tmp_path), "--output", "table.xlsx", *images])
    assert exited.value.code == 1
    said = capsys.readouterr().err
    assert "argument --output: table.xlsx: write the table to a .csv, .parquet or .jsonl file" in said
    assert "no committed feature set" not in said  # the set was never looked for


@pytest.mark.parametrize("command", ["export", "extract", "fit", "predict", "export-classifier", "duplicates", "sweep",
                                     "finetune", "bench", "verify", "advise",
                                     "describe", "history", "vacuum", "rm"])
def test_backbone_defaults_to_the_embedded_default(command):
    from tlfs.models.names import DEFAULT_BACKBONE
    from tlfs.pipeline.cli import build_parser

    needs = {"fit": ["--layer", "head"], "predict": ["photo.jpg"]}.get(command, [])
    dataset = [] if command in ("export", "bench") else ["--dataset", "x"]
    assert build_parser().parse_args([command, *dataset, *needs]).backbone == DEFAULT_BACKBONE


def test_an_unknown_view_is_refused_before_any_work(tmp_path):
    proc = tlfs("extract", "--dataset", "colors", "--source", str(tmp_path / "none.tar"), "--views", "rotate",
                "--store", str(tmp_path / "store"), check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == ["tlfs extract: error: unknown view 'rotate': use flip"]
    assert not (tmp_path / "store").exists()


def test_errors_are_one_line_and_exit_1(tmp_path):
    proc = tlfs("extract", "--dataset", "guitars", "--backbone", "efficientnet_lite0", "--store", str(tmp_path), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["tlfs extract: error: dataset 'guitars' needs --source URI (only cifar10 has a default source)"]
    proc = tlfs("describe", "--dataset", "x", "--backbone", "resnet50", "--store", str(tmp_path), check=False)
    assert proc.returncode == 1 and "no committed feature set" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_version_names_the_package_its_commit_and_libraries():
    proc = tlfs("--version")
    assert re.fullmatch(r"tlfs \S+( \(git [0-9a-f]{12}\))?; Python 3\.1[12]\.\d+; .*onnxruntime(-gpu)? [\d.]+; torch [\d.]+; "
                        r"pyarrow [\d.]+.*\n", proc.stdout), proc.stdout


def test_output_its_reader_stops_taking_ends_quietly_with_sigpipes_status(tmp_path):
    """``tlfs backbones | head -1``: no traceback, and the status a shell tool killed by SIGPIPE has."""
    proc = subprocess.Popen([sys.executable, "-m", "tlfs.pipeline.cli", "backbones"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader gone before anything is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and stderr == ""


def test_shell_workflow_extract_ls_describe_fit(tmp_path, lite0, models_root):
    source = write_tar(tmp_path / "colors.tar.gz", folder_images(per_class=5))
    env = {"TLFS_STORE": str(tmp_path / "store"), "TLFS_MODELS": models_root}
    out = tlfs("extract", "--dataset", "colors", "--source", str(source), "--backbone", "efficientnet_lite0",
               "--layers", "block15,head", "--no-progress", env=env)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 30 and summary["images_per_second"] > 0
    assert "colors" in tlfs("ls", env=env).stdout
    described = tlfs("describe", "--dataset", "colors", "--backbone", "efficientnet_lite0", env=env).stdout
    assert "read 15  written 15  rejected 0" in described
    assert "\ncomputed      on cpu, fp32\n" in described
    fitted = json.loads(tlfs("fit", "--dataset", "colors", "--backbone", "efficientnet_lite0", "--layer", "head", env=env).stdout.strip().splitlines()[-1])
    assert fitted["test_accuracy"] >= 0.9
    swept = json.loads(tlfs("sweep", "--dataset", "colors", "--backbone", "efficientnet_lite0", env=env).stdout.strip().splitlines()[-1])
    assert set(swept["layers"]) == {"block15", "head"} and swept["best_layer"] in swept["layers"]
    missing_view = tlfs("fit", "--dataset", "colors", "--layer", "head", "--views", "flip", env=env, check=False)
    assert missing_view.returncode == 1 and len(missing_view.stderr.strip().splitlines()) == 1
    assert "has no 'flip' view; it has original" in missing_view.stderr


def test_extract_in_int8_on_the_cpu_and_describe_names_its_graph(tmp_path, int8_models):
    source = write_tar(tmp_path / "colors.tar.gz", folder_images(per_class=2))
    env = {"TLFS_STORE": str(tmp_path / "store"), "TLFS_MODELS": int8_models}
    out = tlfs("extract", "--dataset", "colors", "--source", str(source), "--precision", "int8", "--layers", "head",
               "--no-progress", env=env)
    assert json.loads(out.stdout.strip().splitlines()[-1])["rows"] == 12
    described = tlfs("describe", "--dataset", "colors", env=env).stdout
    assert "\ncomputed      on cpu, int8  (its int8 graph, sha256 " in described
    refused = tlfs("extract", "--dataset", "colors", "--source", str(source), "--precision", "int8", "--device", "cuda",
                   env=env, check=False)
    assert refused.returncode == 1 and "int8 runs on the CPU (--device cpu); on cuda use fp16" in refused.stderr


def test_verify_exit_status_names_the_bad_shard(tmp_path, lite0, models_root):
    source = write_tar(tmp_path / "colors.tar.gz", folder_images(per_class=2))
    env = {"TLFS_STORE": str(tmp_path / "store"), "TLFS_MODELS": models_root}
    tlfs("extract", "--dataset", "colors", "--source", str(source), "--backbone", "efficientnet_lite0",
         "--layers", "head", "--no-progress", env=env)
    ok = tlfs("verify", "--dataset", "colors", "--backbone", "efficientnet_lite0", env=env)
    assert "ok: 0 of 2 shard files bad" in ok.stdout
    shard = sorted((tmp_path / "store").rglob("part-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    bad = tlfs("verify", "--dataset", "colors", "--backbone", "efficientnet_lite0", env=env, check=False)
    assert bad.returncode == 1
    assert f"BAD  layer=head/split={shard.parent.name.split('=')[1]}/{shard.name}" in bad.stdout
    fixed = tlfs("verify", "--dataset", "colors", "--backbone", "efficientnet_lite0", "--repair", env=env)
    assert "repaired: 1 of 2" in fixed.stdout


@pytest.mark.slow
def test_shell_workflow_a_grown_archive_history_an_older_version_and_vacuum(tmp_path, lite0, models_root):
    """Content-hashed tar members: a rebuilt archive with one more image extracts that image alone."""
    files = folder_images(per_class=2)
    env = {"TLFS_STORE": str(tmp_path / "store"), "TLFS_MODELS": models_root}
    extract = ["extract", "--dataset", "colors", "--source", str(tmp_path / "colors.tar.gz"), "--backbone",
               "efficientnet_lite0", "--layers", "head", "--no-progress"]
    set_args = ["--dataset", "colors", "--backbone", "efficientnet_lite0"]
    write_tar(tmp_path / "colors.tar.gz", files)
    tlfs(*extract, env=env)
    write_tar(tmp_path / "colors.tar.gz", {**files, "train/red/new.png": folder_images(per_class=3)["train/red/002.png"]})
    second = json.loads(tlfs(*extract, env=env).stdout.strip().splitlines()[-1])
    assert second["version"] == 2 and second["images_extracted"] == 1 and second["changes"]["reused"] == 12
    history = tlfs("history", *set_args, env=env).stdout.splitlines()
    assert len(history) == 2 and "added 1  changed 0  removed 0  reused 12" in history[1]
    assert "from scratch" in history[0] and "on version 1" in history[1]  # what each version was built against
    assert "version       1" in tlfs("describe", *set_args, "--version", "1", env=env).stdout
    manifests = [json.loads(tlfs("describe", *set_args, "--version", v, "--json", env=env).stdout) for v in ("1", "2")]
    assert [m["version"] for m in manifests] == [1, 2] and manifests[1]["changes"]["added"] == 1
    assert manifests[1]["counts"]["train"] == {"read": 7, "written": 7, "rejected": 0}
    for manifest in manifests:  # the version that was newest at the moment each was committed
        as_of = json.loads(tlfs("describe", *set_args, "--as-of", manifest["committed_at"], "--json", env=env).stdout)
        assert as_of["version"] == manifest["version"]
    too_early = tlfs("describe", *set_args, "--as-of", "2000-01-01T00:00:00Z", env=env, check=False)
    assert too_early.returncode == 1 and len(too_early.stderr.strip().splitlines()) == 1
    not_a_time = tlfs("describe", *set_args, "--as-of", "yesterday", env=env, check=False)
    assert not_a_time.returncode == 1 and "is not a time" in not_a_time.stderr
    set_root = next((tmp_path / "store" / "colors").iterdir())
    assert len(list((set_root / "_superseded").iterdir())) == 1  # the first plan's staging, set aside by the second commit
    again = json.loads(tlfs(*extract, env=env).stdout.strip().splitlines()[-1])
    assert again["unchanged"] and again["images_extracted"] == 0
    assert not (set_root / "_superseded").exists()  # deleted by that run's planning
    (set_root / "_superseded" / "0123456789abcdef.0a1b2c3d").mkdir(parents=True)  # as a commit leaves it
    report = json.loads(tlfs("vacuum", *set_args, "--keep", "1", "--keep-days", "0", env=env).stdout.strip())
    assert report["versions_vacuumed"] == [1] and report["files_removed"] == 0  # version 2 still uses its files
    assert report["superseded_plans_removed"] == 1 and not (set_root / "_superseded").exists()
    gone = tlfs("describe", *set_args, "--version", "1", env=env, check=False)
    assert gone.returncode == 1 and "was vacuumed" in gone.stderr


def test_fit_prints_each_class_or_of_many_classes_the_worst(capsys):
    from tlfs.pipeline.cli.head_commands import _print_per_class

    _print_per_class({"cat": 0.5, "dog": 1.0, "gone": None}, "H")
    assert capsys.readouterr().out.splitlines() == ["             cat  0.500", "             dog  1.000",
                                                    "            gone  None"]  # in the classes' order
    many = {f"c{k:03d}": 1.0 for k in range(200)} | {"c150": 0.25, "c007": 0.5}
    _print_per_class(many, "H", shown=3)
    assert capsys.readouterr().out.splitlines() == [
        "            c150  0.250", "            c007  0.500", "            c000  1.000",
        "  ... the 3 worst of 200 classes; the other 197 each test image right (H/metrics.json holds every class's)"]


def test_ls_of_a_relative_store_that_is_not_there_names_the_folder_it_looked_in(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["ls", "--store", "tlfs-data/store"]) == 0
    assert capsys.readouterr().out == (f"no committed feature sets in tlfs-data/store (no such folder in {tmp_path}: "
                                       "--store or TLFS_STORE names the store)\n")
    (tmp_path / "empty").mkdir()
    assert main(["ls", "--store", "empty"]) == 0 and capsys.readouterr().out == "no committed feature sets in empty\n"


def test_a_store_whose_protocol_needs_a_package_not_installed_is_one_line_saying_so(capsys):
    """fsspec names the package a protocol needs (gcsfs for gs://); dropbox's is surely not installed here."""
    assert main(["ls", "--store", "dropbox://bucket/store"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tlfs ls: error: ") and "dropbox" in err[0].lower()
    assert err[0].endswith("(pip install it into this environment)")
