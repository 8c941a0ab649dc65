"""Joules to kWh to grams of CO2e, with the carbon intensity's source on every figure.

Intensity, first that applies: a number the user gives; a country (ISO 3166 alpha-3) or a cloud
region looked up in codecarbon's bundled data (offline); else the world average from the same
data. co2e_g = kWh x PUE x intensity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from carbonbench.energy.codecarbon_data import csv_rows, json_table
from carbonbench.errors import InputError

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Intensity:
    g_per_kwh: float
    source: str  # where the figure comes from, in words
    year: int | None = None
    region: str | None = None  # ISO3 country, or provider:region


@dataclass(frozen=True)
class CarbonSettings:
    intensity: Intensity
    pue: float = 1.0
    pue_source: str = "default 1.0 (no data-centre overhead counted)"

    def kwh(self, joules: float) -> float:
        return joules / J_PER_KWH

    def co2e_g(self, joules: float) -> float:
        return self.kwh(joules) * self.pue * self.intensity.g_per_kwh

    def to_dict(self) -> dict[str, Any]:
        """The settings as stored with a run (and read back by ``from_dict``)."""
        return {
            "intensity_g_per_kwh": self.intensity.g_per_kwh,
            "source": self.intensity.source,
            "year": self.intensity.year,
            "region": self.intensity.region,
            "pue": self.pue,
            "pue_source": self.pue_source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CarbonSettings:
        intensity = Intensity(
            float(data["intensity_g_per_kwh"]),
            str(data["source"]),
            data.get("year"),
            data.get("region"),
        )
        return cls(intensity, float(data["pue"]), str(data.get("pue_source") or ""))

    def describe(self) -> str:
        """One line: what a reader needs to compare CO2e figures."""
        return f"{self.intensity.g_per_kwh:g} g/kWh ({self.intensity.source}), PUE {self.pue:g}"


def world_average() -> Intensity:
    data = json_table("private_infra", "carbon_intensity_per_source.json")
    return Intensity(
        float(data["world_average"]),
        f"world average, codecarbon data ({data['world_average_source']})",
        region="WORLD",
    )


def country_intensity(iso3: str) -> Intensity:
    mix = json_table("private_infra", "global_energy_mix.json")
    code = iso3.upper()
    if code not in mix:
        raise InputError(
            f"unknown country {iso3!r}: give an ISO 3166 alpha-3 code such as USA, FRA, DEU "
            "(codecarbon's energy-mix table)"
        )
    entry = mix[code]
    return Intensity(
        float(entry["carbon_intensity"]),
        f"{entry['country_name']} grid average, codecarbon global_energy_mix ({entry['year']})",
        year=int(entry["year"]),
        region=code,
    )


def cloud_intensity(spec: str) -> Intensity:
    provider, sep, region = spec.partition(":")
    if not sep or not provider or not region:
        raise InputError(f"cloud must be PROVIDER:REGION (e.g. gcp:us-central1), got {spec!r}")
    table = csv_rows("cloud", "impact.csv")
    rows = [r for r in table if r["provider"] == provider.lower() and r["region"] == region]
    if not rows:
        known = sorted(f"{r['provider']}:{r['region']}" for r in table)
        raise InputError(
            f"no carbon data for cloud region {spec!r}; codecarbon's table covers "
            f"{', '.join(known[:6])}, ... ({len(known)} regions); for another provider give "
            "--country with the region's country, or --carbon-intensity"
        )
    row = rows[0]
    return Intensity(
        float(row["impact"]),
        f"{spec} region average, codecarbon cloud table ({row['source']})",
        region=spec,
    )


def resolve(
    *,
    intensity: float | None = None,
    country: str | None = None,
    cloud: str | None = None,
    pue: float | None = None,
) -> CarbonSettings:
    """Carbon settings from what the user gave, first that applies."""
    if sum(x is not None for x in (intensity, country, cloud)) > 1:
        raise InputError("give at most one of carbon intensity, country and cloud region")
    if intensity is not None:
        if not math.isfinite(intensity) or intensity < 0:
            raise InputError(f"carbon intensity must be >= 0 g/kWh, got {intensity}")
        chosen = Intensity(float(intensity), "given by the user (g CO2e/kWh)")
    elif country is not None:
        chosen = country_intensity(country)
    elif cloud is not None:
        chosen = cloud_intensity(cloud)
    else:
        chosen = world_average()
    if pue is None:
        return CarbonSettings(chosen)
    if not math.isfinite(pue) or pue < 1.0:
        raise InputError(f"PUE must be >= 1.0 (facility energy / IT energy), got {pue}")
    return CarbonSettings(chosen, float(pue), "given by the user")


# Equivalents for reports. Each factor is stated with its source.
EQUIVALENTS = {
    "km driven by an average passenger car": (
        400.0 / 1.609344,
        "US EPA, Greenhouse Gas Emissions from a Typical Passenger Vehicle: 400 g CO2 per mile",
    ),
    "smartphones charged": (
        12.4,
        "US EPA Greenhouse Gas Equivalencies Calculator: 0.0124 kg CO2 per smartphone charge",
    ),
}


def equivalents(co2e_g: float) -> dict[str, tuple[float, str]]:
    """{description: (amount, source)} for an amount of CO2e in grams."""
    return {name: (co2e_g / grams, source) for name, (grams, source) in EQUIVALENTS.items()}
