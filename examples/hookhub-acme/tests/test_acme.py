"""acme-score through Hookhub's real subprocess sandbox (hub.testing)."""

from __future__ import annotations

import pytest
from hookhub_acme.plugin import AcmeScore

from hub.testing import ConfigInvalid, run_connector, run_inline

RULES = [{"field": "country", "equals": "DE", "points": 10}, {"field": "employees", "min": 50, "points": 25}]


def test_scores_the_input_in_the_sandbox():
    result = run_connector(AcmeScore, {"rules": RULES, "threshold": 30}, input={"country": "DE", "employees": 80})
    assert result.ok, result.error
    assert result.output == {"score": 35, "qualified": True, "matched": ["country", "employees"]}
    assert any("lead scored 35" in line for line in result.logs)


def test_lead_from_config_wins_over_input():
    out = run_inline(AcmeScore, {"rules": RULES, "lead": {"country": "FR", "employees": 10}}, input={"country": "DE"})
    assert out == {"score": 0, "qualified": False, "matched": []}


def test_a_lead_that_is_not_an_object_fails_the_node():
    result = run_connector(AcmeScore, {"rules": RULES}, input=[1, 2])
    assert not result.ok and not result.retryable
    assert "must be an object" in result.error


def test_rules_are_validated():
    with pytest.raises(ConfigInvalid, match="exactly one of equals or min"):
        run_inline(AcmeScore, {"rules": [{"field": "x", "points": 1}]})
