"""The command-line contract, through the installed ``tlfs`` entry point."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import folder_images, write_tar


def tlfs(*args, env=None, check=True):
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "tlfs.pipeline.cli", *args], capture_output=True, text=True, env=full_env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"tlfs {' '.join(args)} failed:\n{proc.stderr}")
    return proc


@pytest.mark.parametrize("command", ["export", "extract", "fit", "sweep", "ls", "describe", "history", "vacuum"])
def test_every_command_has_help(command):
    assert "usage: tlfs " + command in tlfs(command, "--help").stdout


def test_errors_are_one_line_and_exit_1(tmp_path):
    proc = tlfs("extract", "--dataset", "guitars", "--backbone", "efficientnet_lite0", "--store", str(tmp_path), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["tlfs extract: error: dataset 'guitars' needs --source URI (only cifar10 has a default source)"]
    proc = tlfs("describe", "--dataset", "x", "--backbone", "resnet50", "--store", str(tmp_path), check=False)
    assert proc.returncode == 1 and "no committed feature set" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


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
    fitted = json.loads(tlfs("fit", "--dataset", "colors", "--backbone", "efficientnet_lite0", "--layer", "head", env=env).stdout.strip().splitlines()[-1])
    assert fitted["test_accuracy"] >= 0.9
    swept = json.loads(tlfs("sweep", "--dataset", "colors", "--backbone", "efficientnet_lite0", env=env).stdout.strip().splitlines()[-1])
    assert set(swept["layers"]) == {"block15", "head"} and swept["best_layer"] in swept["layers"]


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
    assert "version       1" in tlfs("describe", *set_args, "--version", "1", env=env).stdout
    again = json.loads(tlfs(*extract, env=env).stdout.strip().splitlines()[-1])
    assert again["unchanged"] and again["images_extracted"] == 0
    report = json.loads(tlfs("vacuum", *set_args, "--keep", "1", "--keep-days", "0", env=env).stdout.strip())
    assert report["versions_vacuumed"] == [1] and report["files_removed"] == 0  # version 2 still uses its files
    gone = tlfs("describe", *set_args, "--version", "1", env=env, check=False)
    assert gone.returncode == 1 and "was vacuumed" in gone.stderr
