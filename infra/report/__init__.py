"""The offline report: the plan's tables, and every object the real Pulumi program registers
(run under Pulumi's mock engine), written as YAML. `python -m infra.report STACK --out DIR`.

`tables` is pure; `mock_engine` and `manifests` run and read the Pulumi program, which is why
they live here and not in the pure `infra.plan`.
"""
