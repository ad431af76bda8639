"""Path confinement: every way out of the workspace is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentry.sandbox.adapters.workspace import Workspace
from agentry.sandbox.errors import InvalidSandboxRequest, PathOutsideSandbox


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("host secret")
    os.symlink(tmp_path / "secret.txt", root / "out-link")
    os.symlink(tmp_path, root / "out-dir")
    os.symlink("sub", root / "in-link")
    return Workspace(root)


@pytest.mark.parametrize(
    "path", ["a.txt", "sub/a.txt", "./sub/../a.txt", "", ".", "/workspace/sub/a.txt", "/workspace"]
)
def test_paths_inside_resolve_under_the_root(workspace: Workspace, path: str) -> None:
    resolved = workspace.resolve(path)
    assert resolved == workspace.root or workspace.root in resolved.parents


def test_absolute_host_path_inside_the_root_is_allowed(workspace: Workspace) -> None:
    assert workspace.resolve(str(workspace.root / "sub" / "x")) == workspace.root / "sub" / "x"


def test_symlink_inside_the_workspace_is_followed(workspace: Workspace) -> None:
    assert workspace.resolve("in-link/x") == workspace.root / "sub" / "x"


@pytest.mark.parametrize(
    "path",
    [
        "..",
        "../secret.txt",
        "sub/../../secret.txt",
        "/etc/passwd",
        "/root",
        "/workspace/../etc/passwd",
        "out-link",
        "out-dir/secret.txt",
        "out-dir",
        "in-link/../../secret.txt",
    ],
)
def test_paths_that_escape_are_refused(workspace: Workspace, path: str) -> None:
    with pytest.raises(PathOutsideSandbox) as err:
        workspace.resolve(path)
    assert str(workspace.root) not in err.value.message, "the host layout must not leak"


def test_final_symlink_can_be_named_without_following_it(workspace: Workspace) -> None:
    # Deleting a link that points outside removes the link, which itself lives inside.
    assert workspace.resolve("out-link", follow_final=False) == workspace.root / "out-link"
    with pytest.raises(PathOutsideSandbox):
        workspace.resolve("out-dir/secret.txt", follow_final=False)


def test_nul_bytes_are_invalid(workspace: Workspace) -> None:
    with pytest.raises(InvalidSandboxRequest):
        workspace.resolve("a\x00b")


def test_relative_form(workspace: Workspace) -> None:
    assert workspace.relative(workspace.root) == ""
    assert workspace.relative(workspace.root / "sub" / "a") == "sub/a"
