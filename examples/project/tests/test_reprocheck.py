"""The numpy builds must agree: every output within the tolerances of reprocheck.toml, no
predicted class changed, and the accuracy within one percentage point.

`pytest` runs the environments once per session (the `reprocheck_report` fixture; results
reprocheck has already computed are reused); `pytest --reprocheck-run latest` checks the
last stored run without starting a container."""

from reprocheck.pytest_plugin import (
    assert_consistent,
    assert_metric_within,
    assert_no_decision_changes,
)


def test_outputs_agree(reprocheck_report):
    assert_consistent(reprocheck_report)


def test_no_predicted_class_changes(reprocheck_report):
    assert_no_decision_changes(reprocheck_report, "*/probabilities")


def test_accuracy_within_its_tolerance(reprocheck_report):
    assert_metric_within(reprocheck_report, "*/accuracy")  # [metrics] in reprocheck.toml
