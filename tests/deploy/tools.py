"""Where the deployment checks' tools are: the npm packages and kubectl that scripts/setup puts
in build/deploy-tools (DANET_DEPLOY_TOOLS), yamllint from Debian. A check whose tool is missing
is skipped with a message, unless DANET_REQUIRE_DEPLOY_TOOLS=1 (scripts/test sets it, since
its setup installs them), where it fails instead: CI never passes a check it did not run."""
import os
import shutil
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TOOLS = os.environ.get("DANET_DEPLOY_TOOLS", os.path.join(ROOT, "build", "deploy-tools"))
NODE_MODULES = os.path.join(TOOLS, "node_modules")
REQUIRED = os.environ.get("DANET_REQUIRE_DEPLOY_TOOLS") == "1"


def _pinned_kubectl():
    path = os.path.join(TOOLS, "bin", "kubectl")
    return path if os.access(path, os.X_OK) else None


KUBECTL = _pinned_kubectl() or shutil.which("kubectl")
YAMLLINT = shutil.which("yamllint")
NODE = shutil.which("node") or shutil.which("nodejs")
TSC = os.path.join(NODE_MODULES, "typescript", "bin", "tsc")


def has_node_module(name):
    return NODE is not None and os.path.isfile(os.path.join(NODE_MODULES, name, "package.json"))


def needs(available, what):
    """A class/method decorator: run when `available`, else skip (or fail when required)."""
    if available:
        return lambda obj: obj
    message = "%s is not installed (scripts/setup installs it into %s)" % (what, TOOLS)
    if REQUIRED:
        def fail(obj):
            def test_tool_is_installed(self):
                self.fail(message)
            if isinstance(obj, type):
                return type(obj.__name__, (unittest.TestCase,),
                            {"test_tool_is_installed": test_tool_is_installed})
            return test_tool_is_installed
        return fail
    return unittest.skip(message)
