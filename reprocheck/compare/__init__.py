"""Pure numeric comparison of one output between a baseline (a) and a candidate (b).

Everything here returns data; nothing formats text or prints. Large arrays are streamed
in chunks over flat views so that the extra memory is a small multiple of one chunk
(``Chunking`` sets the sizes); chunks where many elements differ go block by block
through buffers allocated once.

One module per stage, in the order data flows through them:

* ``rules``: Tolerance and DecisionRule, and which rule applies to an output;
* ``results``: the frozen results (ArrayComparison, RowMatch, DecisionComparison);
* ``dtypes``: which dtypes compare, and the flat views the stream walks;
* ``values``: element-wise facts of gathered elements (the general path);
* ``totals``: the running sums a stream folds chunks into;
* ``dense``: float chunks where most elements differ, block by block;
* ``integers``: integer chunks, block by block (dense) or gathered (sparse);
* ``stream``: the chunk loop; ``chunking``: the chunk and block sizes;
* ``elements``: element-wise comparison of same-shaped arrays, and its verdict;
* ``rows``: row matching; ``decisions``: argmax, labels and boxes;
* ``api``: compare_arrays and agreement_classes.

Notes on the metrics, in the user's words:

* An element is *mismatched* when its values differ: NaN vs NaN at the same place is
  equal, +0.0 vs -0.0 is equal, NaN vs a number is a mismatch.
* ULP distance counts the representable values of the array's own dtype between the two
  values, through zero across signs (``ulp(-0.0, +0.0) == 0``); for integer and bool
  arrays it is ``|a - b|``, computed without overflow.
* Complex arrays are compared as their real and imaginary parts: the element metrics
  and ``worst_indices`` refer to the real view with a trailing axis of 2.
* An element is within tolerance when equal in value, or ``|a - b| <= atol + rtol*|a|``,
  or its ULP distance is <= ``ulp``. NaN vs a number and Inf vs a different value never
  are. Integers and bools are exact unless ``atol`` is given (``rtol`` and ``ulp`` do not
  apply to them).
* ``worst_indices`` rank NaN vs a number as an infinite error; ties keep the lower index.
* With ``match="rows"`` the element metrics (total, mismatched, max_abs, ...) describe the
  matched row pairs, cast to the common dtype; their indices name baseline rows.
* Decisions never change the verdict. A boxes decision is reported even when the box
  counts differ (verdict "incomparable" unless the output also uses ``match="rows"``).
* ``compare_arrays`` never returns "missing", "error" or "nondeterministic": those are
  verdicts of the runner, which knows whether an output exists and repeats agree.
"""

from __future__ import annotations

from reprocheck.compare.api import agreement_classes, compare_arrays
from reprocheck.compare.batch import compare_batch as compare_batch
from reprocheck.compare.chunking import Chunking
from reprocheck.compare.results import ArrayComparison, DecisionComparison, RowMatch, Verdict
from reprocheck.compare.rules import DecisionRule, DecisionRules, Tolerance, ToleranceRules

__all__ = [
    "ArrayComparison",
    "Chunking",
    "DecisionComparison",
    "DecisionRule",
    "DecisionRules",
    "RowMatch",
    "Tolerance",
    "ToleranceRules",
    "Verdict",
    "agreement_classes",
    "compare_arrays",
]
