"""The Ansible playbooks and role pass ansible-lint's production profile."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.tools import ANSIBLE_DIR, run, tool, tool_env


def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    output = run(
        [tool("ansible-lint"), "--profile", "production", "--offline", "--nocolor"],
        tool_env(tmp_path),
        cwd=ANSIBLE_DIR,
        timeout=600,
    )
    assert "Profile 'production' was required, and it passed" in output, output


def test_playbooks_pass_the_syntax_check(tmp_path: Path) -> None:
    for playbook in ("site.yml", "render.yml"):
        for inventory in ("inventories/demo", "inventories/example"):
            run(
                [tool("ansible-playbook"), "--syntax-check", "-i", inventory, playbook],
                tool_env(tmp_path),
                cwd=ANSIBLE_DIR,
            )
