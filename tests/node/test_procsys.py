"""The agent makes /proc/sys/net writable where the container runtime mounted /proc/sys
read-only, and nothing else under /proc/sys.

Each case runs in a process of its own with a private mount namespace (where /proc/sys
is made read-only as a runtime does for an unprivileged container) and a network
namespace of its own, so that every sysctl written belongs to a namespace the test
made and throws away.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

from support.require import needs_node_host, require

# In the private namespaces: /proc/sys read-only, then the agent's start-up step, then writes.
SCRIPT = """
import os, sys
from agent.procsys import make_net_sysctls_writable, writable
print("before", writable())
try:
    print("remounted", make_net_sysctls_writable())
except OSError as err:
    print("refused", err.strerror)
    sys.exit(0)
with open("/proc/sys/net/ipv6/conf/all/forwarding", "w") as f:
    f.write("1")
print("forwarding", open("/proc/sys/net/ipv6/conf/all/forwarding").read().strip())
try:
    open("/proc/sys/kernel/hostname", "w").write(open("/proc/sys/kernel/hostname").read())
    print("kernel writable")
except OSError as err:
    print("kernel", err.strerror)
print("again", make_net_sysctls_writable())
"""


def run(*prefix: str) -> list[str]:
    setup = 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"'
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--net",
            "--propagation",
            "private",
            "sh",
            "-c",
            setup,
            "sh",
            *prefix,
            sys.executable,
            "-c",
            SCRIPT,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@needs_node_host
def test_only_the_network_sysctls_become_writable() -> None:
    out = run()
    assert out == [
        "before False",
        "remounted True",
        "forwarding 1",
        "kernel Read-only file system",
        "again False",  # writable already: nothing mounted twice
    ]


@needs_node_host
def test_without_cap_sys_admin_the_refusal_names_what_is_missing() -> None:
    require(shutil.which("setpriv") is not None, "needs setpriv (util-linux)")
    out = run("setpriv", "--bounding-set=-sys_admin")
    assert out[0] == "before False"
    assert out[1].startswith("refused cannot make /proc/sys/net writable for the CNI plugins")
    assert "needs CAP_SYS_ADMIN" in out[1]
