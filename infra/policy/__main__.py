"""Entry point the Pulumi CLI runs for `--policy-pack infra/policy`: builds the pack and serves it.

`PolicyPack(...)` starts the analyzer's gRPC server and never returns, so nothing else lives
here; the rules are in `infra.policy.validators` (importable from the project's virtualenv,
which PulumiPolicy.yaml names) and are unit-tested there.
"""

from pulumi_policy import EnforcementLevel, PolicyPack

from infra.policy.validators import policies

PolicyPack(
    name="llm-serving-policies",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=policies(),
)
