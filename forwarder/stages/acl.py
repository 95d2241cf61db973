"""Access control: only clients in `acl.allow` are answered; everyone else gets REFUSED."""

from __future__ import annotations

from forwarder.config import model
from forwarder.dns import netsets

_MEMO_LIMIT = 65_536


class Acl:
    """Answers whether a client address may query (IPv4-mapped and NAT64 addresses count
    as their IPv4 address); remembers recent verdicts by address."""

    __slots__ = ("_memo", "_networks")

    def __init__(self, networks: tuple[model.Network, ...]) -> None:
        self._networks = netsets.NetworkSet(networks)
        self._memo: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        verdict = self._memo.get(host)
        if verdict is None:
            verdict = netsets.in_networks(host, self._networks)
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[host] = verdict
        return verdict
