"""The baseline of `replay_vs_reference_engine` (benches/remediator.rs, BENCHMARKS.md).

`SimpleRemediationEngine` is the reference engine of the auto-remediation module of the AIOps
course this project implements: match a runbook by root cause, check confidence, circuit breaker,
rate limit and cooldown, ask approval for HIGH risk, else "execute" (simulated, 90 % success) and
trip the circuit after three failures. Its decision logic is kept as the module writes it. Three
changes make it measurable: no print per step (the benchmark measures deciding, not a
terminal), a seeded random source (two runs decide alike), and a main that reads one JSON
incident per line and writes one JSON result per line, as `remediator replay` does.

    python3 benches/reference_engine.py RUNBOOKS.yaml INCIDENTS.jsonl > results.jsonl
"""

import json
import random
import sys
from collections import defaultdict
from datetime import datetime, timedelta

import yaml


class SimpleRemediationEngine:
    """Simplified remediation engine (the course module's exercise)."""

    def __init__(self, runbooks_file):
        with open(runbooks_file) as f:
            self.config = yaml.safe_load(f)
        self.runbooks = self.config["runbooks"]
        # Tracking
        self.executions = defaultdict(list)  # runbook -> [timestamps]
        self.failures = defaultdict(int)
        self.circuit_open = set()
        self.random = random.Random(42)

    def handle_incident(self, incident):
        """Process incident and decide on remediation."""
        runbook = self._find_runbook(incident["root_cause"])
        if not runbook:
            return {"action": "manual", "reason": "No matching runbook"}
        runbook_id = runbook["id"]
        if incident["confidence"] < runbook["min_confidence"]:
            return {"action": "manual", "reason": "Confidence too low"}
        if runbook_id in self.circuit_open:
            return {"action": "blocked", "reason": "Circuit breaker open"}
        if not self._check_rate_limit(runbook_id, runbook):
            return {"action": "blocked", "reason": "Rate limit exceeded"}
        risk = runbook.get("risk", "HIGH")
        if risk == "HIGH":
            return {
                "action": "approval_required",
                "runbook": runbook_id,
                "suggested_action": runbook["action"],
            }
        return self._execute(incident, runbook)

    def _find_runbook(self, root_cause):
        """Find runbook matching root cause."""
        for runbook_id, config in self.runbooks.items():
            if root_cause in config.get("triggers", []):
                return {**config, "id": runbook_id}
        return None

    def _check_rate_limit(self, runbook_id, runbook):
        """Check if within rate limits."""
        max_per_hour = runbook.get("max_per_hour", 3)
        cooldown = runbook.get("cooldown_minutes", 10)
        cutoff = datetime.now() - timedelta(hours=1)
        self.executions[runbook_id] = [ts for ts in self.executions[runbook_id] if ts > cutoff]
        if len(self.executions[runbook_id]) >= max_per_hour:
            return False
        if self.executions[runbook_id]:
            last = max(self.executions[runbook_id])
            if (datetime.now() - last).seconds < cooldown * 60:
                return False
        return True

    def _execute(self, incident, runbook):
        """Execute remediation (simulated)."""
        runbook_id = runbook["id"]
        for _check in runbook.get("pre_checks", []):
            pass
        action = runbook["action"].format(**incident.get("context", {}))
        success = self.random.random() < 0.9
        if success:
            for _check in runbook.get("post_checks", []):
                pass
        self.executions[runbook_id].append(datetime.now())
        if success:
            self.failures[runbook_id] = 0
            return {"action": "executed", "success": True, "command": action}
        self.failures[runbook_id] += 1
        if self.failures[runbook_id] >= 3:
            self.circuit_open.add(runbook_id)
        return {"action": "executed", "success": False, "command": action}


def main():
    engine = SimpleRemediationEngine(sys.argv[1])
    out = sys.stdout
    with open(sys.argv[2]) as f:
        for line in f:
            out.write(json.dumps(engine.handle_incident(json.loads(line))))
            out.write("\n")


if __name__ == "__main__":
    main()
