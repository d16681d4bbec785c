"""Explain drift: attribute each drifting output to a pipeline stage and a cause, by experiment.

For every drifting pair of environments (baseline A, candidate B):

1. ``stages``: the probes recorded inside the container locate the first stage whose value
   differs between A and B, per fixture (a command's one set of probes for every output);
2. ``suspects``: the version changes between A's and B's fingerprints (Debian packages owning
   libraries the pipeline loaded, the interpreter, pip distributions), ranked by how well they
   fit the drifting outputs and stages;
3. experiments in ``explainer``'s phases, run by ``runner`` (cached by content): a
   *transplant* (``transplants``) builds a hybrid image of B with one package's libraries
   taken from A's image; a *knob* (``knobs``) sets one variable that steers numerics on both
   sides; ``effects`` measures what each did to each output;
4. ``attribute``: causes with named confidences, what was ruled out, and one sentence of
   advice per output, from the winning experiment.
"""

from __future__ import annotations

from reprocheck.explain.advice import FamilyAdvice, advice_by_family
from reprocheck.explain.attribute import attribute, experiment_cause, version_causes
from reprocheck.explain.explainer import Explainer
from reprocheck.explain.knobs import knobs, pair_knobs
from reprocheck.explain.model import (
    Attribution,
    Cause,
    CauseKind,
    Effect,
    Experiment,
    ExperimentKind,
    Explanation,
    Sides,
    Status,
    Suspect,
    SuspectKind,
)
from reprocheck.explain.serialise import attributions_json, experiments_json
from reprocheck.explain.stages import COMMAND_PROBES, first_divergent_stage
from reprocheck.explain.suspects import soname, suspects
from reprocheck.explain.transplants import elf_soname, hybrid_image, transplant_files

__all__ = [
    "COMMAND_PROBES",
    "Attribution",
    "Cause",
    "CauseKind",
    "Effect",
    "Experiment",
    "ExperimentKind",
    "Explainer",
    "Explanation",
    "FamilyAdvice",
    "Sides",
    "Status",
    "Suspect",
    "SuspectKind",
    "advice_by_family",
    "attribute",
    "attributions_json",
    "elf_soname",
    "experiment_cause",
    "experiments_json",
    "first_divergent_stage",
    "hybrid_image",
    "knobs",
    "pair_knobs",
    "soname",
    "suspects",
    "transplant_files",
    "version_causes",
]
