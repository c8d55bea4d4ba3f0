"""Safe rollouts: a new version earns its traffic with evidence, or is rolled back.

``spec`` reads ``<models>/<name>/rollout.yaml``; ``rule`` is the decision rule; ``ledger`` pools
every process's evidence; ``rollouts`` routes requests and ties them together (docs/service.md).
"""

from service.rollout.ledger import Ledger
from service.rollout.rollouts import Rollouts
from service.rollout.spec import RolloutSpec, SpecError, read_spec

__all__ = ["Ledger", "RolloutSpec", "Rollouts", "SpecError", "read_spec"]
