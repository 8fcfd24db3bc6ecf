"""The one-time CI setup in docs/ci.md grants what the program does: a grant the program makes
that the deploy account may not make fails `pulumi up` with a permission error."""

from __future__ import annotations

import re

from infra.components.cluster import NODE_SERVICE_ACCOUNT_ROLES
from serve.paths import REPO_ROOT

CI_DOC = REPO_ROOT / "docs" / "ci.md"


def test_the_deploy_account_may_grant_exactly_the_node_roles() -> None:
    text = CI_DOC.read_text()
    (granted,) = re.findall(r"\.hasOnly\(\[([^\]]*)\]\)", text)
    assert re.findall(r"'([^']+)'", granted) == list(NODE_SERVICE_ACCOUNT_ROLES)


def test_the_deploy_account_may_create_the_network() -> None:
    loop = re.search(
        r"for role in (roles/[^;]*?); do\s+gcloud projects add-iam-policy-binding \S+ "
        r"--member=\"serviceAccount:\$DEPLOY_SA\"",
        CI_DOC.read_text(),
    )
    assert loop, "the deploy account's role loop is missing"
    assert "roles/compute.networkAdmin" in loop.group(1).split()
