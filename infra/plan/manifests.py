"""What the Pulumi program registers, rendered as one YAML document per object.

The documents are built from the resources `infra.testing.run_program` records while the
real program runs under Pulumi's mock engine, not re-derived from the plan: the report
shows what `pulumi up` would send. Kubernetes objects become manifests (apiVersion, kind,
metadata, ...); the Helm release and the GCP resources become their Pulumi inputs
(camelCase), labelled as such.

Three kinds of values are not written as the engine holds them:
- secrets (anything the program marks secret, e.g. the HF token): `<redacted: ...>`;
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
from pulumi.runtime import mocks
from pulumi.runtime.rpc import UNKNOWN

from infra.settings import HF_TOKEN_KEY
from infra.testing import SECRET_SIG, SIG_KEY, ProgramRun, RegisteredResource

# Pulumi's wire signatures besides secrets (pulumi.runtime.rpc keeps them private).
RESOURCE_REF_SIG: Final = "5cf8f73096256a8f31e491e813e4eb8e"
OUTPUT_VALUE_SIG: Final = "d0e6a833031e9bbcd3f4e8bde6ca49a4"

HF_TOKEN_REDACTED: Final = f"<redacted: pulumi config {HF_TOKEN_KEY}>"
SECRET_REDACTED: Final = "<redacted: secret>"
UNKNOWN_PLACEHOLDER: Final = "<unknown until apply>"
GCP_PROJECT_PLACEHOLDER: Final = "<gcp:project>"

HELM_RELEASE_TYPE: Final = "kubernetes:helm.sh/v3:Release"
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

    @property
    def pulumi_type(self) -> str:
        return self.resource.type_

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


# --- decoding the wire inputs -----------------------------------------------------------


def _number(value: float) -> int | float:
    """Protobuf Structs carry every number as a double; the program wrote integers."""
    return int(value) if value.is_integer() else value


def _redact(value: Any, label: str) -> Any:
    """Keep a secret's shape (map keys stay readable), replace every leaf."""
    if isinstance(value, Mapping):
        return {key: _redact(item, label) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item, label) for item in value]
    return label


def _secret_label(value: Any, hf_tokens: frozenset[str]) -> str:
    leaves = _leaves(value)
    if any(leaf in hf_tokens for leaf in leaves):
        return HF_TOKEN_REDACTED
    return SECRET_REDACTED


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def decode_wire(value: Any, *, hf_tokens: frozenset[str], names: Mapping[str, str]) -> Any:
    """Wire inputs (secrets still wrapped) to plain data with readable placeholders.

    `names` maps a resource URN to its logical name, for resource references.
    """
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str):
        return UNKNOWN_PLACEHOLDER if value == UNKNOWN else value
    if isinstance(value, list):
        return [decode_wire(item, hf_tokens=hf_tokens, names=names) for item in value]
    if isinstance(value, Mapping):
        signature = value.get(SIG_KEY)
        if signature == SECRET_SIG:
            inner = value.get("value")
            return _redact(
                decode_wire(inner, hf_tokens=frozenset(), names=names), _secret_label(inner, hf_tokens)
            )
        if signature == RESOURCE_REF_SIG:
            urn = str(value.get("urn", ""))
            return f"${{{names.get(urn, urn.rsplit('::', 1)[-1])}}}"
        if signature == OUTPUT_VALUE_SIG:
            if value.get("secret"):
                inner = value.get("value")
                return _redact(inner, _secret_label(inner, hf_tokens))
            if "value" not in value:
                return UNKNOWN_PLACEHOLDER
            return decode_wire(value["value"], hf_tokens=hf_tokens, names=names)
        if signature is not None:
            return f"<pulumi value {signature}>"
        return {key: decode_wire(item, hf_tokens=hf_tokens, names=names) for key, item in value.items()}
    return value


# --- outputs of other resources ---------------------------------------------------------


def _mock_outputs(resource: RegisteredResource) -> dict[str, Any]:
    """The id and the computed outputs the mock engine gave `resource` (made up, never real)."""
    from infra.testing import _Mocks  # the same mocks run_program used

    args = mocks.MockResourceArgs(
        typ=resource.type_, name=resource.name, inputs=dict(resource.inputs), custom=resource.custom
    )
    resource_id, state = _Mocks().new_resource(args)
    computed = {
        key: value
        for key, value in state.items()
        if isinstance(value, str) and value and resource.inputs.get(key) != value
    }
    if resource_id:
        computed["id"] = resource_id
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
        for key, value in _mock_outputs(dependency).items():
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
    names = {urn: resource.name for urn, resource in by_urn.items()}
    manifests: list[Manifest] = []
    for resource in run.resources:
        if not resource.custom or resource.type_.startswith("pulumi:providers:"):
            continue
        inputs = decode_wire(resource.wire_inputs, hf_tokens=tokens, names=names)
        inputs = _sorted(_substitute(inputs, _output_placeholders(resource, by_urn), gcp_project_placeholder))
        comments = _describe(resource, by_urn)
        if resource.type_ == HELM_RELEASE_TYPE:
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
