"""Cohort processing: BIDS or manifest in, a resumable BIDS derivatives dataset out.

* :mod:`mrisr.batch.config`: the batch recipe (``configs/batch.yaml``): how inputs are found, options.
* :mod:`mrisr.batch.cohort`: the cohort types (subjects, series, their files) and the one validation error.
* :mod:`mrisr.batch.bids`, :mod:`mrisr.batch.manifest`: finding a cohort in a BIDS dataset or a CSV/TSV manifest.
* :mod:`mrisr.batch.discovery`: ``discover``, either source with up-front validation (every problem at once).
* :mod:`mrisr.batch.derivatives`: derivatives layout, ``dataset_description.json``, sidecars, ``summary.tsv``.
* :mod:`mrisr.batch.validation`: everything a run needs, checked before any work starts.
* :mod:`mrisr.batch.resume`: fingerprints of inputs, model and options; the up-to-date test.
* :mod:`mrisr.batch.runner`: the resumable, failure-isolated runner (``mrisr batch``, ``pipelines/Snakefile``).
* :mod:`mrisr.batch.subject`: one subject's series reconstructed, scored and recorded; failures isolated.
* :mod:`mrisr.batch.workers`: the worker processes of ``--jobs N``.
* :mod:`mrisr.batch.summary`: subject results and ``summary.tsv`` from disk.

Importing this package does not import torch (the Snakefile imports it to build its job graph).
"""

from mrisr.batch.cohort import BatchValidationError, Cohort, SeriesInputs, SubjectInputs
from mrisr.batch.config import BatchConfig, load_batch_config
from mrisr.batch.derivatives import SUMMARY_COLUMNS, SeriesOutputs, series_outputs, write_summary
from mrisr.batch.discovery import discover
from mrisr.batch.runner import run_batch
from mrisr.batch.summary import SubjectResult, collect_summary, write_collected_summary
from mrisr.batch.validation import RunSettings, validate_batch

__all__ = [
    "SUMMARY_COLUMNS",
    "BatchConfig",
    "BatchValidationError",
    "Cohort",
    "RunSettings",
    "SeriesInputs",
    "SeriesOutputs",
    "SubjectInputs",
    "SubjectResult",
    "collect_summary",
    "discover",
    "load_batch_config",
    "run_batch",
    "series_outputs",
    "validate_batch",
    "write_collected_summary",
    "write_summary",
]
