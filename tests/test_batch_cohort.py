"""Cohort discovery and up-front validation (BIDS and manifests), plus the tiny cohort the batch
and pipeline tests share.

The cohort: 3 subjects, each a dynamic phantom (:func:`mrisr.phantom.make_dynamic`) made from a
24x24x8 crop of the bundled Colin27 slab, 3 frames, 25 % of k-space (LR 12x12x8), written once as
phantom folders (planning.nii.gz, dynamic_lr.nii.gz, dynamic_hr.nii.gz) and as a BIDS dataset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mrisr.batch import BatchConfig, BatchValidationError, discover, load_batch_config
from mrisr.batch.bids import parse_bids_name

LABELS = ("01", "02", "03")
CROP = (slice(52, 76), slice(60, 84), slice(12, 20))
FRAMES = 3
KEEP = 25.0
REPO = Path(__file__).resolve().parents[1]


def bids_names(label: str) -> dict[str, str]:
    """Paths of a subject's files inside the BIDS dataset."""
    return {
        "planning": f"sub-{label}/anat/sub-{label}_acq-planning_T1w.nii.gz",
        "lr": f"sub-{label}/func/sub-{label}_task-dynamic_bold.nii.gz",
        "hr": f"sub-{label}/func/sub-{label}_task-dynamic_acq-groundtruth_bold.nii.gz",
    }


def tiny_static():
    """The 24x24x8 crop of the bundled Colin27 slab every subject's phantom is made from."""
    from mrisr.data import load_sample

    sample = load_sample()
    offset = np.array([s.start for s in CROP], dtype=np.float64)
    affine = sample.affine.copy()
    affine[:3, 3] = sample.affine[:3, :3] @ offset + sample.affine[:3, 3]
    return sample.with_data(np.ascontiguousarray(sample.data[CROP]), affine=affine)


def build_cohort(root: Path, labels: tuple[str, ...] = LABELS) -> dict[str, Path]:
    """Write the tiny cohort under ``root``.

    Returns:
        ``{"phantoms": root/phantoms (one folder s<label> per subject), "bids": root/bids,
        "manifest": root/cohort.csv (relative paths into phantoms/), "model": root/tiny.safetensors}``.
    """
    from mrisr.models import make_tiny_checkpoint
    from mrisr.phantom import make_dynamic

    static = tiny_static()
    bids = root / "bids"
    bids.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "tiny phantom cohort", "BIDSVersion": "1.10.0"}))
    (bids / "participants.tsv").write_text("participant_id\n" + "".join(f"sub-{label}\n" for label in labels))
    rows = ["subject,dynamic,planning,ground_truth"]
    for index, label in enumerate(labels):
        phantom = make_dynamic(static, frames=FRAMES, keep=KEEP, seed=index, motion_mm=2.0)
        folder = root / "phantoms" / f"s{label}"
        paths = phantom.save(folder)
        for role, name in bids_names(label).items():
            (bids / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(paths[role], bids / name)
        rows.append(
            f"{label},phantoms/s{label}/dynamic_lr.nii.gz,phantoms/s{label}/planning.nii.gz,"
            f"phantoms/s{label}/dynamic_hr.nii.gz"
        )
    manifest = root / "cohort.csv"
    manifest.write_text("\n".join(rows) + "\n")
    model = make_tiny_checkpoint(root / "tiny.safetensors", prior=True, seed=0)
    return {"phantoms": root / "phantoms", "bids": bids, "manifest": manifest, "model": model}


def truncate(path: Path, keep_bytes: int = 3000) -> None:
    """Cut a .nii.gz short, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    return build_cohort(tmp_path_factory.mktemp("cohort"))


# --------------------------------------------------------------------------- config


def test_configs_batch_yaml_equals_the_built_in_defaults():
    assert load_batch_config(REPO / "configs" / "batch.yaml") == BatchConfig()


def test_config_errors_name_key_and_value(tmp_path):
    bad = tmp_path / "batch.yaml"
    bad.write_text("reconstruct:\n  prior_mode: sideways\n  factr: 2\n")
    with pytest.raises(Exception) as info:
        load_batch_config(bad)
    message = str(info.value)
    assert str(bad) in message and "reconstruct.prior_mode = 'sideways'" in message and "reconstruct.factr" in message


def test_parse_bids_name():
    assert parse_bids_name("sub-01_ses-2_task-rest_run-1_bold.nii.gz") == (
        [("sub", "01"), ("ses", "2"), ("task", "rest"), ("run", "1")],
        "bold",
        ".nii.gz",
    )
    assert parse_bids_name("dynamic_lr.nii.gz") is None
    assert parse_bids_name("sub-01_T1w.nii") == ([("sub", "01")], "T1w", ".nii")


# --------------------------------------------------------------------------- BIDS discovery


def test_bids_discovery_pairs_planning_and_ground_truth(cohort):
    found = discover(cohort["bids"])
    assert found.kind == "bids" and found.labels == list(LABELS) and found.name == "tiny phantom cohort"
    for label in LABELS:
        (series,) = found.subjects[label].series
        names = bids_names(label)
        assert series.dynamic == cohort["bids"] / names["lr"]
        assert series.planning == cohort["bids"] / names["planning"]
        assert series.ground_truth == cohort["bids"] / names["hr"]
        assert series.datatype == "func" and series.suffix == "bold"
        assert series.entities == (("sub", label), ("task", "dynamic"))


def test_bids_participant_labels_select_and_accept_sub_prefix(cohort):
    found = discover(cohort["bids"], participant_labels=["sub-03", "01"])
    assert found.labels == ["01", "03"]
    # 1 for 01: YAML and Snakemake's --config read 01 as a number
    assert discover(cohort["bids"], participant_labels=["1"]).labels == ["01"]


def test_bids_sessions_and_ignored_derivatives(tmp_path, cohort):
    bids = tmp_path / "bids"
    src = cohort["bids"]
    for session in ("1", "2"):
        for name in bids_names("01").values():
            target = (
                bids
                / "sub-01"
                / f"ses-{session}"
                / Path(name).parent.name
                / Path(name).name.replace("sub-01_", f"sub-01_ses-{session}_")
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, target)
    # derivatives and hidden files inside the dataset are never inputs
    (bids / "derivatives" / "mrisr" / "sub-01" / "func").mkdir(parents=True)
    shutil.copyfile(
        src / bids_names("01")["lr"],
        bids / "derivatives" / "mrisr" / "sub-01" / "func" / "sub-01_task-dynamic_desc-sr_bold.nii.gz",
    )
    shutil.copyfile(
        src / bids_names("01")["lr"],
        bids / "sub-01" / "ses-1" / "func" / ".sub-01_ses-1_task-dynamic_bold.nii.gz.partial",
    )
    found = discover(bids)
    series = found.subjects["01"].series
    assert [s.session for s in series] == ["1", "2"]
    for s in series:
        assert s.planning.parent.parent.name == f"ses-{s.session}"
        assert s.ground_truth.name == f"sub-01_ses-{s.session}_task-dynamic_acq-groundtruth_bold.nii.gz"
        assert s.entities == (("sub", "01"), ("ses", s.session), ("task", "dynamic"))


def test_bids_validation_lists_every_problem(tmp_path, cohort):
    bids = tmp_path / "bids"
    shutil.copytree(cohort["bids"], bids)
    # sub-01: no planning scan; sub-02: two planning scans; sub-03: no dynamic series
    (bids / bids_names("01")["planning"]).unlink()
    shutil.copyfile(bids / bids_names("02")["planning"], bids / "sub-02/anat/sub-02_acq-planning_run-2_T1w.nii.gz")
    (bids / bids_names("03")["lr"]).unlink()
    with pytest.raises(BatchValidationError) as info:
        discover(bids, participant_labels=["01", "02", "03", "07"])
    problems = info.value.problems
    assert len(problems) == 4, problems
    message = str(info.value)
    assert "4 problems found, nothing was run" in message
    assert "sub-01: no planning scan matches" in message
    assert "sub-02: 2 planning scans match" in message and "sub-02_acq-planning_run-2_T1w.nii.gz" in message
    assert "sub-03: no dynamic series matches" in message
    assert "--participant-label 07: no participant '07'" in message and "available: 01, 02, 03" in message


def test_not_a_bids_folder(tmp_path):
    with pytest.raises(BatchValidationError, match="no sub-<label> folders"):
        discover(tmp_path)


# --------------------------------------------------------------------------- manifests


def test_manifest_discovery_relative_paths_and_naming(cohort):
    found = discover(cohort["manifest"])
    assert found.kind == "manifest" and found.labels == list(LABELS)
    series = found.subjects["02"].series[0]
    assert series.dynamic == cohort["phantoms"] / "s02" / "dynamic_lr.nii.gz"
    assert series.planning == cohort["phantoms"] / "s02" / "planning.nii.gz"
    assert series.ground_truth == cohort["phantoms"] / "s02" / "dynamic_hr.nii.gz"
    assert series.entities == (("sub", "02"),) and series.datatype == "func" and series.suffix == "bold"


def test_manifest_tsv_with_sessions_and_bids_named_files(tmp_path, cohort):
    manifest = tmp_path / "cohort.tsv"
    bids = cohort["bids"]
    manifest.write_text(
        "subject\tsession\tdynamic\tplanning\n"
        f"sub-01\tses-a\t{bids / bids_names('01')['lr']}\t{bids / bids_names('01')['planning']}\n"
        f"01\tb\t{bids / bids_names('02')['lr']}\t{bids / bids_names('02')['planning']}\n"
    )
    found = discover(manifest)
    a, b = found.subjects["01"].series
    assert (a.session, b.session) == ("a", "b")
    # BIDS-named inputs keep their entities; sub/ses come from the manifest
    assert a.entities == (("sub", "01"), ("ses", "a"), ("task", "dynamic"))
    assert b.entities == (("sub", "01"), ("ses", "b"), ("task", "dynamic")) and b.ground_truth is None


def test_manifest_validation_lists_every_problem(tmp_path, cohort):
    phantoms = cohort["phantoms"]
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(
        "subject,dynamic,planning,ground_truth\n"
        f"01,{phantoms}/s01/dynamic_lr.nii.gz,{phantoms}/s01/planning.nii.gz,\n"
        f"01,{phantoms}/s02/dynamic_lr.nii.gz,{phantoms}/s02/planning.nii.gz,\n"  # duplicate subject
        f"02,missing/dynamic.nii.gz,{phantoms}/s02/planning.nii.gz,nowhere/gt.nii.gz\n"  # two missing files
        f"0_3,{phantoms}/s03/dynamic_lr.nii.gz,{phantoms}/s03/planning.nii.gz,\n"  # bad label
        f"04,{phantoms}/s03/dynamic_lr.nii.gz,,\n"  # no planning
        "05,only-two-fields\n"
    )
    with pytest.raises(BatchValidationError) as info:
        discover(manifest, participant_labels=["01", "09"])
    message = str(info.value)
    for expected in (
        "line 3: duplicate subject 01 (also on line 2)",
        "line 5: subject '0_3' is not a BIDS label",
        "line 7 has 2 fields, the header has 4",
        "--participant-label 09: no participant '09'",
    ):
        assert expected in message, message
    assert len(info.value.problems) == 4
    # without a selection every row's files are checked
    with pytest.raises(BatchValidationError) as info:
        discover(manifest)
    message = str(info.value)
    assert "line 4 (subject 02): dynamic missing/dynamic.nii.gz not found" in message
    assert "line 4 (subject 02): ground_truth nowhere/gt.nii.gz not found" in message
    assert "line 6 (subject 04): empty planning" in message
    assert len(info.value.problems) == 6


def test_manifest_bad_columns(tmp_path):
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("subject,dynamics,planning,grond_truth\n01,a.nii.gz,b.nii.gz,c.nii.gz\n")
    with pytest.raises(BatchValidationError) as info:
        discover(manifest)
    assert info.value.problems == [
        f"{manifest}: missing column(s) dynamic; the header needs subject, dynamic, planning",
        f"{manifest}: unknown column(s) dynamics, grond_truth; allowed: subject, dynamic, planning, ground_truth, session",
    ]
    tsv_named_csv = tmp_path / "tabs.csv"
    tsv_named_csv.write_text("subject\tdynamic\tplanning\n01\ta\tb\n")
    with pytest.raises(BatchValidationError, match="looks tab-separated; name the file .tsv"):
        discover(tsv_named_csv)


def test_command_line_overrides_go_through_the_option_rules(tmp_path):
    """``--finetune`` over a keyhole recipe is refused at validation, naming the flag and the rule,
    not per subject once the run has started."""
    from mrisr.batch import validate_batch
    from mrisr.batch.config import ReconstructSettings
    from mrisr.io import MrisrInputError

    keyhole = BatchConfig(reconstruct=ReconstructSettings(method="keyhole"))
    with pytest.raises(MrisrInputError, match=r"^--finetune: method = 'keyhole': a keyhole method has no model"):
        validate_batch(tmp_path / "bids", tmp_path / "out", keyhole, finetune=True)
    assert not (tmp_path / "out").exists()
