"""Asking the user, without I/O: who may be asked now, who must wait, who is refused unasked.

The session asks the extension to show a prompt (in trusted extension UI, never page content)
for a destination no grant covers. This module decides the order and the limits:

- one prompt per tab at a time; later requests from that tab wait their turn, a few at most;
- a budget of prompts per tab and per site per minute, in which a prompt the page withdrew
  (it released the socket, or its frame went away) counts like an answered one: a page cannot
  flood the user with windows by asking and withdrawing, nor by re-creating frames that ask;
- an origin refused several times in a row is refused without a prompt for a cool-down period,
  so a page cannot pester the user into saying yes;
- a prompt not answered in time is a refusal.

It also names a port's well-known service for the prompt. Whether the addresses are this
device, the local network or the internet (the prompt's scope) is the decision core's
(`decision.py`: `most_sensitive`).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Callable

WELL_KNOWN_SERVICES = {
    7: "Echo", 21: "FTP", 22: "SSH", 23: "Telnet", 25: "SMTP", 53: "DNS", 80: "HTTP", 110: "POP3",
    123: "NTP", 143: "IMAP", 161: "SNMP", 194: "IRC", 389: "LDAP", 443: "HTTPS", 465: "SMTP over TLS",
    514: "Syslog", 515: "LPD printing", 554: "RTSP", 587: "SMTP submission", 631: "IPP printing",
    993: "IMAP over TLS", 995: "POP3 over TLS", 1883: "MQTT", 3306: "MySQL", 3389: "Remote Desktop",
    5060: "SIP", 5353: "mDNS", 5432: "PostgreSQL", 5683: "CoAP", 5900: "VNC", 6379: "Redis",
    6667: "IRC", 8883: "MQTT over TLS", 9100: "Raw printing (JetDirect)", 27017: "MongoDB",
}

ATTEMPTS_BURST = 64  # socket requests an origin may make at once...
ATTEMPTS_PER_SECOND = 16.0  # ...and after that, per second
DENIALS_BEFORE_COOLDOWN = 3
COOLDOWN_SECONDS = 300.0
PROMPT_TIMEOUT_SECONDS = 60.0
MAX_WAITING_PER_TAB = 8
# Prompts in any 60 s: per origin (each one that ended: answered, timed out or withdrawn) and per
# tab (each one admitted, shown or queued). The extension keeps the same budget for the windows it
# opens (extension/background/consent.js), so neither alone has to be right.
PROMPT_BUDGET_SECONDS = 60.0
PROMPTS_PER_ORIGIN = 6
PROMPTS_PER_TAB = 10

# What the budgets, cool-downs and rate limits count by: the origin and whether it asks from a
# private window. A site's normal windows and private windows never share a counter, so one
# cannot spend what the other sees refused (a timing bit linking the two; questionnaire 2.14).
Site = tuple[str, bool]


def service_name(port: int) -> str | None:
    return WELL_KNOWN_SERVICES.get(port)


@dataclass
class _OriginRecord:
    consecutive_denials: int = 0
    cooldown_until: float = 0.0
    prompts: collections.deque[float] = field(default_factory=collections.deque)  # when each ended


def _spent(times: collections.deque[float], now: float, window: float, budget: int) -> bool:
    """Drops the times older than the window; whether `budget` of them remain."""
    while times and times[0] <= now - window:
        times.popleft()
    return len(times) >= budget


@dataclass
class ConsentBroker:
    clock: Callable[[], float] = time.monotonic
    denials_before_cooldown: int = DENIALS_BEFORE_COOLDOWN
    cooldown_seconds: float = COOLDOWN_SECONDS
    timeout_seconds: float = PROMPT_TIMEOUT_SECONDS
    prompts_per_origin: int = PROMPTS_PER_ORIGIN
    prompts_per_tab: int = PROMPTS_PER_TAB
    budget_seconds: float = PROMPT_BUDGET_SECONDS
    _origins: dict[Site, _OriginRecord] = field(default_factory=dict)
    _showing: dict[object, int] = field(default_factory=dict)  # tab -> socket id of its prompt
    _waiting: dict[object, collections.deque[int]] = field(default_factory=dict)
    _tab_prompts: dict[object, collections.deque[float]] = field(default_factory=dict)  # when each was admitted

    def in_cooldown(self, site: Site) -> bool:
        """Whether the site is refused unasked: refused too often lately, or out of prompts."""
        record = self._origins.get(site)
        if record is None:
            return False
        now = self.clock()
        return now < record.cooldown_until or _spent(record.prompts, now, self.budget_seconds, self.prompts_per_origin)

    def answered(self, site: Site, allowed: bool | None) -> None:
        """Counts a prompt that ended: the user's answer (or a timeout, or a closed window) for
        the cool-down, and every ending, a withdrawn prompt's too (`allowed` None), for the budget."""
        record = self._origins.setdefault(site, _OriginRecord())
        record.prompts.append(self.clock())
        if len(record.prompts) > self.prompts_per_origin:
            record.prompts.popleft()  # only the last `budget` matter
        if allowed is None:
            return
        if allowed:
            record.consecutive_denials = 0
            return
        record.consecutive_denials += 1
        if record.consecutive_denials >= self.denials_before_cooldown:
            record.consecutive_denials = 0
            record.cooldown_until = self.clock() + self.cooldown_seconds

    def request(self, tab: object, socket_id: int) -> str:
        """'show' (the tab's prompt slot was free), 'wait' (queued), or 'refuse' (queue full, or
        the tab asked its budget of prompts in the last minute)."""
        if len(self._tab_prompts) > 256:  # tabs gone quiet are forgotten, so the table stays small
            cutoff = self.clock() - self.budget_seconds
            for quiet in [t for t, q in self._tab_prompts.items() if not q or q[-1] <= cutoff]:
                del self._tab_prompts[quiet]
        times = self._tab_prompts.setdefault(tab, collections.deque())
        if _spent(times, self.clock(), self.budget_seconds, self.prompts_per_tab):
            return "refuse"
        if tab not in self._showing:
            self._showing[tab] = socket_id
            times.append(self.clock())
            return "show"
        queue = self._waiting.setdefault(tab, collections.deque())
        if len(queue) >= MAX_WAITING_PER_TAB:
            return "refuse"
        queue.append(socket_id)
        times.append(self.clock())
        return "wait"

    def finished(self, tab: object, socket_id: int) -> int | None:
        """The prompt of `socket_id` is over (or it stopped waiting). Returns the socket whose
        prompt the tab shows next, if one was waiting."""
        queue = self._waiting.get(tab)
        if self._showing.get(tab) != socket_id:
            if queue is not None and socket_id in queue:
                queue.remove(socket_id)
            return None
        del self._showing[tab]
        if queue:
            following = queue.popleft()
            self._showing[tab] = following
            return following
        return None

    def forget_private(self) -> None:
        """The private session ended: its sites' counts go with it, so the next one starts afresh."""
        for site in [s for s in self._origins if s[1]]:
            del self._origins[site]


@dataclass
class RateLimiter:
    """A token bucket per site (origin, private window): a page cannot use sockets to sweep a network, even with a
    broad grant, faster than a person's apps plausibly need (security-model.md)."""

    clock: Callable[[], float] = time.monotonic
    burst: float = ATTEMPTS_BURST
    per_second: float = ATTEMPTS_PER_SECOND
    _buckets: dict[Site, tuple[float, float]] = field(default_factory=dict)  # site -> (tokens, when)

    def allow(self, site: Site) -> bool:
        now = self.clock()
        tokens, then = self._buckets.get(site, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.per_second)
        if tokens < 1:
            self._buckets[site] = (tokens, now)
            return False
        self._buckets[site] = (tokens - 1, now)
        return True
