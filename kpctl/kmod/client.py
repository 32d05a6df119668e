"""A client of kpctl_kmod's generic netlink family, on pyroute2's GenericNetlinkSocket.

pyroute2 is imported here and in messages.py only, and only when a module probe is
asked for: it alone costs more start-up time than all of kpctl.
"""
from __future__ import annotations

import errno
import time
from types import TracebackType

from kpctl.errors import KpctlError
from kpctl.kmod.messages import (
    FAMILY,
    Cmd,
    Kind,
    KmodProbe,
    KpctlMsg,
    add_request,
    id_request,
    probe_from_msg,
    request,
)


class KmodError(KpctlError):
    """kpctl_kmod refused a request; the message is the module's own (netlink extack)."""

    def __init__(self, message: str, code: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.errno = code


class KmodNotLoadedError(KpctlError):
    """The generic netlink family of kpctl_kmod does not exist: the module is not loaded."""


_DUMP_ATTEMPTS = 20
_HINTS = {
    errno.EPERM: "kpctl_kmod needs root (CAP_SYS_ADMIN)",
    errno.ENOSPC: "remove probes, or reload the module with a larger max_probes",
}


class KmodClient:
    """Add, remove, enable, disable, get and list kpctl_kmod's probes.

    Use it as a context manager; every method raises KmodError on a refusal.
    """

    def __init__(self) -> None:
        from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError
        from pyroute2.netlink.generic import GenericNetlinkSocket

        self._netlink_error = NetlinkError
        self._dump_interrupted = NetlinkDumpInterrupted
        # ext_ack: the kernel then sends the module's NL_SET_ERR_MSG text with each error.
        self._sock = GenericNetlinkSocket(ext_ack=True)
        try:
            self._sock.bind(FAMILY, KpctlMsg)
        except NetlinkError as e:
            self._sock.close()
            if e.code == errno.ENOENT:
                raise KmodNotLoadedError(
                    "the kpctl_kmod kernel module is not loaded", "load it: kpctl kmod load"
                ) from None
            raise KmodError(f"cannot reach kpctl_kmod: {e.args[1]}", e.code) from None

    def __enter__(self) -> KmodClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    @property
    def family_id(self) -> int:
        """The netlink message type the kernel gave the family when the module loaded."""
        return int(self._sock.prid)

    def _request(self, what: str, msg: KpctlMsg, *, dump: bool = False) -> list[KpctlMsg]:
        from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST

        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        try:
            replies = self._sock.nlm_request(msg, msg_type=self.family_id, msg_flags=flags)
            return [r for r in replies if isinstance(r, KpctlMsg)]
        except self._dump_interrupted:
            raise
        except self._netlink_error as e:
            raise KmodError(f"{what}: {e.args[1]}", e.code, _HINTS.get(e.code)) from None

    def add(
        self,
        symbol: str,
        name: str,
        *,
        offset: int = 0,
        kind: Kind = Kind.ENTRY,
        maxactive: int | None = None,
        enabled: bool = True,
    ) -> KmodProbe:
        msg = add_request(symbol, name, offset=offset, kind=kind, maxactive=maxactive, enabled=enabled)
        where = f"{symbol}+{offset}" if offset else symbol
        (reply,) = self._request(f"cannot add {name} at {where}", msg)
        return probe_from_msg(reply)

    def remove(self, probe_id: int) -> None:
        self._request(f"cannot remove probe {probe_id}", id_request(Cmd.REMOVE, probe_id))

    def enable(self, probe_id: int) -> None:
        self._request(f"cannot enable probe {probe_id}", id_request(Cmd.ENABLE, probe_id))

    def disable(self, probe_id: int) -> None:
        self._request(f"cannot disable probe {probe_id}", id_request(Cmd.DISABLE, probe_id))

    def bench(self, iterations: int, depth: int = 0) -> int:
        """Nanoseconds the module took to call its bench target iterations times; with a
        depth, its recursive target instead: depth + 1 nested calls each time."""
        attrs: list[tuple[str, object]] = [("KPCTL_A_ITERATIONS", iterations)]
        if depth:
            attrs.append(("KPCTL_A_DEPTH", depth))
        (reply,) = self._request("cannot run the bench driver", request(Cmd.BENCH, attrs))
        return int(reply.get_attr("KPCTL_A_ELAPSED_NS"))

    def get(self, probe_id: int) -> KmodProbe:
        (reply,) = self._request(f"cannot get probe {probe_id}", id_request(Cmd.GET, probe_id))
        return probe_from_msg(reply)

    def dump(self) -> list[KmodProbe]:
        """Every probe the module holds, by id, as one consistent view: a dump during
        which other clients added or removed probes (NLM_F_DUMP_INTR) is taken again."""
        for attempt in range(_DUMP_ATTEMPTS):
            try:
                return [probe_from_msg(m) for m in self._request("cannot list probes", request(Cmd.GET), dump=True)]
            except self._dump_interrupted:
                time.sleep(0.02 * attempt)  # give a burst of changes time to end
        raise KmodError(f"cannot list probes: they changed during each of {_DUMP_ATTEMPTS} dumps", errno.EAGAIN)
