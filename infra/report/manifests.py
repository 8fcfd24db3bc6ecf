"""What the Pulumi program registers, rendered as one YAML document per object.

The documents are built from the resources `infra.report.mock_engine.run_program` records
while the real program runs under Pulumi's mock engine, not re-derived from the plan: the report
shows what `pulumi up` would send. Kubernetes objects become manifests (apiVersion, kind,
metadata, ...); the Helm release and the GCP resources become their Pulumi inputs
(camelCase), labelled as such.

Three kinds of values are not written as the engine holds them:
- secrets (every value the program marked secret, at the paths the mock run recorded while
  unwrapping them, e.g. the HF token): `<redacted: ...>`;
- outputs of another resource (the cluster id a node pool points at, the node service
  account's email): under the mock engine they are made-up values, so they are written as
  `${resource.property}`, known only once that resource exists;
- the test GCP project the mock run injects when the stack sets no `gcp:project`:
  `<gcp:project>`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from configcheck.problems import Path_
from infra import resource_types
from infra.report.mock_engine import ProgramRun, RegisteredResource
from infra.settings import HF_TOKEN_KEY

HF_TOKEN_REDACTED: Final = f"<redacted: pulumi config {HF_TOKEN_KEY}>"
SECRET_REDACTED: Final = "<redacted: secret>"
GCP_PROJECT_PLACEHOLDER: Final = "<gcp:project>"

KUBERNETES_DIR: Final = "."
GCP_DIR: Final = "gcp"
_FILE_SLUGS: Final = {"Account": "serviceaccount"}
_PREFIXED_FILE: Final = re.compile(r"^\d{2,}-.+\.yaml$")


class SecretLeakError(RuntimeError):
    """A secret value would have been written to disk; nothing was written."""


@dataclass
class Manifest:
    """One YAML document: its file (relative to the output directory) and what it comes from."""

    group: str  # "kubernetes" or "gcp"
    kind: str
    name: str
    resource: RegisteredResource
    document: dict[str, Any]
    comments: list[str] = field(default_factory=list)
    path: Path = Path()

    def text(self) -> str:
        header = "".join(f"# {line}\n" for line in self.comments)
        return header + dump_yaml(self.document)


# --- YAML -------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (serveConfigV2, kubeconfig) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


# --- secrets and outputs of other resources ---------------------------------------------


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _redact(value: Any, label: str) -> Any:
    """Keep a secret's shape (map keys stay readable), replace every leaf."""
    if isinstance(value, Mapping):
        return {key: _redact(item, label) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item, label) for item in value]
    return label


def redact_secrets(
    inputs: Mapping[str, Any], secret_paths: Iterable[Path_], hf_tokens: frozenset[str]
) -> Any:
    """`inputs` with the value at each secret path redacted; an HF token's label says where it comes from."""

    def at(value: Any, path: Path_) -> Any:
        if not path:
            label = (
                HF_TOKEN_REDACTED if any(leaf in hf_tokens for leaf in _leaves(value)) else SECRET_REDACTED
            )
            return _redact(value, label)
        head, rest = path[0], path[1:]
        if isinstance(value, Mapping) and head in value:
            return {key: at(item, rest) if key == head else item for key, item in value.items()}
        if isinstance(value, list) and isinstance(head, int) and head < len(value):
            return [at(item, rest) if index == head else item for index, item in enumerate(value)]
        return value

    redacted: Any = dict(inputs)
    for path in secret_paths:
        redacted = at(redacted, tuple(path))
    return redacted


def _whole_numbers(value: Any) -> Any:
    """Protobuf Structs carry every number as a double; the program wrote integers."""
    if isinstance(value, Mapping):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _computed_outputs(resource: RegisteredResource) -> dict[str, str]:
    """The id and the outputs the mock engine made up for `resource` (never real values)."""
    computed = {
        key: value
        for key, value in resource.outputs.items()
        if isinstance(value, str) and value and resource.inputs.get(key) != value
    }
    if resource.resource_id:
        computed["id"] = resource.resource_id
    return computed


def _output_placeholders(
    resource: RegisteredResource, by_urn: Mapping[str, RegisteredResource]
) -> dict[str, str]:
    """Value -> `${dependency.property}` for the outputs of the resources `resource` depends on."""
    placeholders: dict[str, str] = {}
    for urn in resource.dependencies:
        dependency = by_urn.get(urn)
        if dependency is None or not dependency.custom:
            continue
        for key, value in _computed_outputs(dependency).items():
            placeholders.setdefault(value, f"${{{dependency.name}.{key}}}")
    return placeholders


def _substitute(value: Any, placeholders: Mapping[str, str], project: str | None) -> Any:
    if isinstance(value, Mapping):
        return {key: _substitute(item, placeholders, project) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, placeholders, project) for item in value]
    if isinstance(value, str):
        if value in placeholders:
            return placeholders[value]
        if project and project in value:
            return value.replace(project, GCP_PROJECT_PLACEHOLDER)
    return value


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


# --- documents --------------------------------------------------------------------------


def _describe(resource: RegisteredResource, by_urn: Mapping[str, RegisteredResource]) -> list[str]:
    def label(urn: str) -> str:
        found = by_urn.get(urn)
        return f"{found.type_} {found.name}" if found else urn

    lines = [f"Pulumi resource {resource.type_} {resource.name!r}"]
    if resource.parent in by_urn:
        lines.append(f"  parent: {label(resource.parent)}")
    provider = resource.provider.rsplit("::", 1)[0]
    if provider in by_urn:
        lines.append(f"  provider: {label(provider)}")
    if resource.dependencies:
        lines.append("  depends on: " + ", ".join(sorted(label(urn) for urn in resource.dependencies)))
    return lines


def _kubernetes_document(inputs: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {
        key: inputs[key] for key in ("apiVersion", "kind", "metadata") if key in inputs
    }
    for key in sorted(inputs):
        if key not in document:
            document[key] = inputs[key]
    return document


def _helm_release_document(resource: RegisteredResource, inputs: dict[str, Any]) -> dict[str, Any]:
    release_name = inputs.get("name") or f"<autonamed by Pulumi: {resource.name}-<random suffix>>"
    spec: dict[str, Any] = {
        "chart": inputs.get("chart"),
        "version": inputs.get("version"),
        "repo": (inputs.get("repositoryOpts") or {}).get("repo"),
        "namespace": inputs.get("namespace"),
        "values": inputs.get("values", {}),
    }
    rest = {key: inputs[key] for key in sorted(inputs) if key not in {*spec, "name", "repositoryOpts"}}
    repository = {key: value for key, value in (inputs.get("repositoryOpts") or {}).items() if key != "repo"}
    if repository:
        rest["repositoryOpts"] = repository
    return {
        "apiVersion": resource.type_.rsplit(":", 1)[0],
        "kind": "HelmRelease",
        "metadata": {"name": release_name, "namespace": inputs.get("namespace")},
        "spec": {**spec, **rest},
    }


def _gcp_document(
    resource: RegisteredResource, inputs: dict[str, Any], by_urn: Mapping[str, RegisteredResource]
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    parent = by_urn.get(resource.parent)
    if parent is not None:
        options["parent"] = f"{parent.type_} {parent.name}"
    depends = sorted(f"{by_urn[u].type_} {by_urn[u].name}" for u in resource.dependencies if u in by_urn)
    if depends:
        options["dependencies"] = depends
    document: dict[str, Any] = {"type": resource.type_, "name": resource.name, "properties": inputs}
    if options:
        document["options"] = options
    return document


def _level(resource: RegisteredResource, group: set[str], by_urn: Mapping[str, RegisteredResource]) -> int:
    """1 + the deepest dependency inside the same group (1 for none): objects apply level by level."""
    seen: dict[str, int] = {}

    def depth(urn: str, trail: frozenset[str]) -> int:
        if urn in seen:
            return seen[urn]
        deps = [d for d in by_urn[urn].dependencies if d in group and d not in trail]
        seen[urn] = 1 + max((depth(d, trail | {urn}) for d in deps), default=0)
        return seen[urn]

    return depth(resource.urn, frozenset())


def build_manifests(
    run: ProgramRun, *, hf_tokens: Iterable[str] = (), gcp_project_placeholder: str | None = None
) -> list[Manifest]:
    """Every custom resource of the run (providers aside) as a document, in apply order.

    `hf_tokens`: the token values the run was given, so that their redaction says where the
    real one comes from. `gcp_project_placeholder`: the injected project id to write as
    `<gcp:project>` (the stack file sets none).
    """
    tokens = frozenset(hf_tokens)
    by_urn = run.by_urn()
    manifests: list[Manifest] = []
    for resource in run.resources:
        if not resource.custom or resource.type_.startswith(resource_types.PROVIDER_PREFIX):
            continue
        inputs = redact_secrets(_whole_numbers(resource.inputs), resource.secret_paths, tokens)
        inputs = _sorted(_substitute(inputs, _output_placeholders(resource, by_urn), gcp_project_placeholder))
        comments = _describe(resource, by_urn)
        if resource.type_ == resource_types.HELM_RELEASE:
            document = _helm_release_document(resource, inputs)
            comments = [
                "Not a Kubernetes object: the inputs of the Pulumi resource",
                f"{resource.type_} {resource.name!r}, which installs the chart with Helm",
                "(`helm upgrade --install`); the chart's own objects are rendered by Helm at apply time.",
                *comments[1:],
            ]
            # Named by the Pulumi resource: the release name itself is chosen by Pulumi when unset.
            manifests.append(
                Manifest("kubernetes", "HelmRelease", resource.name, resource, document, comments)
            )
        elif resource.type_.startswith("kubernetes:"):
            document = _kubernetes_document(inputs)
            kind = str(document.get("kind") or resource.type_.rsplit(":", 1)[-1])
            metadata = document.get("metadata") or {}
            name = str(metadata.get("name") or f"<autonamed by Pulumi: {resource.name}-<random suffix>>")
            manifests.append(Manifest("kubernetes", kind, name, resource, document, comments))
        else:
            kind = resource.type_.rsplit(":", 1)[-1]
            comments = [
                f"Pulumi inputs (camelCase) of {resource.type_} {resource.name!r}; not a Kubernetes object."
            ]
            document = _gcp_document(resource, inputs, by_urn)
            manifests.append(Manifest("gcp", kind, resource.name, resource, document, comments))
    _assign_paths(manifests, by_urn)
    return sorted(manifests, key=lambda m: (m.group != "kubernetes", str(m.path)))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-")


def _assign_paths(manifests: Sequence[Manifest], by_urn: Mapping[str, RegisteredResource]) -> None:
    by_group: dict[str, list[Manifest]] = defaultdict(list)
    for manifest in manifests:
        by_group[manifest.group].append(manifest)
    for group, members in by_group.items():
        urns = {m.resource.urn for m in members}
        directory = Path(KUBERNETES_DIR if group == "kubernetes" else GCP_DIR)
        used: set[Path] = set()
        for manifest in members:
            level = _level(manifest.resource, urns, by_urn)
            kind = _FILE_SLUGS.get(manifest.kind, manifest.kind.lower())
            stem = f"{level * 10:02d}-{_slug(kind)}-{_slug(manifest.name)}"
            path = directory / f"{stem}.yaml"
            counter = 2
            while path in used:
                path = directory / f"{stem}-{counter}.yaml"
                counter += 1
            used.add(path)
            manifest.path = path


def write_manifests(
    manifests: Sequence[Manifest], out_dir: Path, *, secrets: Iterable[str] = ()
) -> list[Path]:
    """Write every document under `out_dir`, replacing the files a previous report wrote there.

    Refuses (SecretLeakError, nothing written) if any text contains one of `secrets`.
    """
    texts = {manifest.path: manifest.text() for manifest in manifests}
    for secret in secrets:
        if secret:
            for path, text in texts.items():
                if secret in text:
                    raise SecretLeakError(f"{path}: would contain a secret value; nothing was written")
    for directory in {out_dir, out_dir / GCP_DIR}:
        if directory.is_dir():
            for stale in directory.glob("*.yaml"):
                if _PREFIXED_FILE.match(stale.name):
                    stale.unlink()
    written: list[Path] = []
    for path, text in texts.items():
        target = out_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return sorted(written)
