"""Read a service's ``/metrics`` in tests: one scrape, parsed by prometheus_client's own parser.

Every test that looks at a live process's metrics goes through :func:`scrape` (or
:func:`parse` for text already fetched), so label order, escaping, ``_total``/``_created``
samples and float formats are handled once, by the library that writes the format::

    metrics = await scrape(port)
    metrics.total("streamer_handler_invocations_total", action="echo")   # summed over outcomes
    metrics.by("streamer_handler_invocations_total", "outcome", action="echo")  # {"ok": 3.0, ...}
    "streamer_processor_leases_held" in metrics                          # declared, even if unset
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

__all__ = ["Metrics", "parse", "scrape"]


@dataclasses.dataclass(frozen=True)
class Metrics:
    """One scrape: every sample, and every declared name (families and their samples)."""

    samples: tuple[Sample, ...]
    names: frozenset[str]

    def __contains__(self, name: object) -> bool:
        """Whether the page declares ``name`` (a family, or a sample such as ``x_total``/``x_bucket``)."""
        return name in self.names

    def matching(self, name: str, **labels: str) -> Iterator[Sample]:
        """The samples named ``name`` whose labels include ``labels``."""
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                yield sample

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample with exactly these labels, or None when there is none."""
        for sample in self.matching(name, **labels):
            if sample.labels == labels:
                return float(sample.value)
        return None

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples whose labels include ``labels`` (0 when there are none)."""
        return sum(float(sample.value) for sample in self.matching(name, **labels))

    def by(self, name: str, *keys: str, **labels: str) -> dict[Any, float]:
        """The samples whose labels include ``labels``, summed by the values of ``keys``.

        One key: ``{value: total}``; several: ``{(value, ...): total}``; none: by the value of
        the samples' single label.
        """
        out: dict[Any, float] = {}
        for sample in self.matching(name, **labels):
            if keys:
                key: Any = (
                    sample.labels.get(keys[0], "")
                    if len(keys) == 1
                    else tuple(sample.labels.get(k, "") for k in keys)
                )
            else:
                (key,) = sample.labels.values()
            out[key] = out.get(key, 0.0) + float(sample.value)
        return out


def parse(text: str) -> Metrics:
    """The Prometheus text ``text`` as :class:`Metrics`."""
    samples: list[Sample] = []
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        for sample in family.samples:
            names.add(sample.name)
            samples.append(sample)
    return Metrics(samples=tuple(samples), names=frozenset(names))


async def scrape(
    port: int, *, host: str = "127.0.0.1", session: aiohttp.ClientSession | None = None
) -> Metrics:
    """``GET http://host:port/metrics`` (200 expected), parsed."""
    url = f"http://{host}:{port}/metrics"
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await scrape(port, host=host, session=own)
    async with session.get(url) as resp:
        assert resp.status == 200, f"GET {url}: HTTP {resp.status}"
        return parse(await resp.text())
