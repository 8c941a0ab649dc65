"""How each energy domain of this machine is measured, and why nothing better: what
``carbonbench sensors`` shows. A domain measured worse than by a counter is explained by the
diagnostics of the better sources that could not run; a component nothing measures is listed
too, with its reasons."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from carbonbench.energy.sensors import COMPONENTS, Detection, Diagnostic


@dataclass
class DomainReport:
    domain: str  # or, for a component nothing measures, the component's name
    component: str
    source: str | None
    method: str | None
    power_w: float | None
    added_to_total: bool
    why_not_better: list[Diagnostic] = field(default_factory=list)
    basis: str = ""  # what a modelled figure rests on
    constants: dict[str, object] = field(default_factory=dict)


def diagnose(
    detection: Detection, power_w: Mapping[str, float], components: tuple[str, ...] = COMPONENTS
) -> tuple[list[DomainReport], list[Diagnostic]]:
    """One report per domain (and per component left uncovered), with every diagnostic met."""
    diagnostics = detection.diagnostics + [d for s in detection.sensors for d in s.diagnostics]
    reports = []
    for sensor in detection.sensors:
        for domain, method, component, additive in zip(
            sensor.domains, sensor.methods, sensor.components, sensor.additive, strict=True
        ):
            why = []
            if method != "counter":
                why = [
                    d
                    for d in diagnostics
                    if domain in d.domains or (not d.domains and component in d.components)
                ]
            reports.append(
                DomainReport(
                    domain,
                    component,
                    sensor.source,
                    method,
                    power_w.get(domain),
                    additive,
                    why,
                    sensor.basis(),
                    sensor.constants(),
                )
            )
    for component in components:
        if component not in detection.covered:
            why = [d for d in diagnostics if component in d.components]
            reports.append(DomainReport(component, component, None, None, None, False, why))
    return reports, diagnostics
