"""Network sysctls writable for the CNI plugins the agent runs, in an unprivileged container.

CNI plugins write sysctls under /proc/sys/net: in the host's namespace (the bridge
plugin with `isGateway` turns forwarding on, IPv6's included) and, after setns(2),
in the pod's. A container that is not privileged sees /proc/sys read-only (the
runtime mounts it so), and such an ADD fails with "read-only file system". The
agent holds CAP_SYS_ADMIN anyway — setns(2) into a pod's network namespace needs
it — so at start-up it bind-mounts /proc/sys/net onto itself and makes that one
mount writable, in its own container's mount namespace. Every process of the
container (the plugins it runs) then sees the network sysctls of whatever network
namespace it is in as writable; the rest of /proc/sys (kernel.*, vm.*, fs.*)
stays read-only. Where /proc/sys/net is writable already (a privileged container,
a process on the host) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Final

NET_SYSCTLS: Final = "/proc/sys/net"

_MS_RDONLY: Final = 0x1
_MS_NOSUID: Final = 0x2
_MS_NODEV: Final = 0x4
_MS_NOEXEC: Final = 0x8
_MS_REMOUNT: Final = 0x20
_MS_BIND: Final = 0x1000


def writable(path: str = NET_SYSCTLS) -> bool:
    return not os.statvfs(path).f_flag & os.ST_RDONLY


def make_net_sysctls_writable(path: str = NET_SYSCTLS) -> bool:
    """Make `path` a writable mount of itself; True when it had to (False: writable already).

    Raises OSError naming what is missing when the mount is refused: CAP_SYS_ADMIN, or a
    seccomp or AppArmor profile that forbids mount(2).
    """
    if writable(path):
        return False
    flags = os.statvfs(path).f_flag
    keep = (
        (_MS_NOSUID if flags & os.ST_NOSUID else 0)
        | (_MS_NODEV if flags & os.ST_NODEV else 0)
        | (_MS_NOEXEC if flags & os.ST_NOEXEC else 0)
    )
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    target = path.encode()
    # A mount of its own first: remounting /proc/sys itself would open kernel.* as well.
    for source, mode in ((target, _MS_BIND), (None, _MS_REMOUNT | _MS_BIND | keep)):
        if libc.mount(source, target, None, mode, None) != 0:
            code = ctypes.get_errno()
            raise OSError(
                code,
                f"cannot make {path} writable for the CNI plugins ({os.strerror(code)}): the "
                "agent's container needs CAP_SYS_ADMIN and a seccomp/AppArmor profile that "
                "allows mount(2) (RuntimeDefault seccomp does with CAP_SYS_ADMIN; AppArmor's "
                "runtime default does not: appArmorProfile Unconfined)",
                path,
            )
    return True
