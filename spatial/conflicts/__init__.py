"""Multi-plan conflict detection: the rules file, feature selection and rule evaluation."""

from spatial.conflicts.evaluate import evaluate_rule
from spatial.conflicts.rules import (
    Compare,
    PriorityEntry,
    Rule,
    RulesError,
    RuleSet,
    Scheme,
    Side,
    harmonise,
    load_rules,
    parse_rules,
    select,
)

__all__ = [
    "Compare",
    "PriorityEntry",
    "Rule",
    "RuleSet",
    "RulesError",
    "Scheme",
    "Side",
    "evaluate_rule",
    "harmonise",
    "load_rules",
    "parse_rules",
    "select",
]
