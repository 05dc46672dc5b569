"""Cost per million image-text pairs on a GPU, and where it breaks even with managed APIs.

self-hosted $ per 1M pairs = GPU $/h / (pairs/h x utilisation) x 1e6
break-even pairs per month = GPU $/h x hours per month / (API $ per pair)

A dedicated GPU costs the same whether busy or idle, so below the break-even volume the API is cheaper
and above it the GPU is. Prices come from `prices.json` (each with its source and the date it was read);
`--prices FILE` merges a file of the same shape over them, so any price can be replaced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRICES_FILE = Path(__file__).with_name("prices.json")


class CostError(ValueError):
    """A cost input is out of range or names an unknown GPU or API."""


@dataclass(frozen=True, kw_only=True)
class PairShape:
    """What one pair costs a managed API: one image and the tokens of its text."""

    text_tokens: int = 20
    image_width: int = 512
    image_height: int = 512


@dataclass(frozen=True, kw_only=True)
class ApiRow:
    name: str
    label: str
    usd_per_million_pairs: float
    break_even_pairs_per_month: float


@dataclass(frozen=True, kw_only=True)
class CostReport:
    gpu: str
    usd_per_hour: float
    pairs_per_hour: float
    utilization: float
    usd_per_million_pairs: float  # at the utilisation asked
    usd_per_million_pairs_full_use: float
    usd_per_month: float  # one dedicated GPU
    pairs_per_month_capacity: float  # at the utilisation asked
    apis: list[ApiRow]

    def lines(self) -> list[str]:
        rows = [
            f"{self.gpu} at ${self.usd_per_hour:.2f}/h, {self.pairs_per_hour:,.0f} pairs/h measured:",
            f"  ${self.usd_per_million_pairs_full_use:,.2f} per 1M pairs at full use; "
            f"${self.usd_per_million_pairs:,.2f} at {self.utilization:.0%} use",
            f"  one dedicated GPU: ${self.usd_per_month:,.2f}/month, serving up to "
            f"{self.pairs_per_month_capacity / 1e6:,.1f}M pairs/month at {self.utilization:.0%} use",
            "  break-even against managed APIs (pairs per month above which this GPU is cheaper):",
        ]
        for api in self.apis:
            if api.usd_per_million_pairs <= self.usd_per_million_pairs:
                verdict = f"cheaper than this GPU at {self.utilization:.0%} use at any volume"
            else:
                verdict = f"{api.break_even_pairs_per_month / 1e6:,.1f}M pairs/month"
                if api.break_even_pairs_per_month > self.pairs_per_month_capacity:
                    verdict += " (more than one GPU serves: add GPUs, the cost per pair stays)"
            rows.append(f"    {api.label}: ${api.usd_per_million_pairs:,.2f} per 1M pairs -> {verdict}")
        return rows


def load_prices(override: Path | None = None) -> dict[str, Any]:
    prices: dict[str, Any] = json.loads(PRICES_FILE.read_text())
    if override is not None:
        try:
            extra = json.loads(override.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CostError(f"cannot read prices file {override}: {e}") from None
        for section in ("gpus", "apis"):
            for name, entry in extra.get(section, {}).items():
                prices[section][name] = {**prices[section].get(name, {}), **entry}
        prices["hours_per_month"] = extra.get("hours_per_month", prices["hours_per_month"])
    return prices


def api_usd_per_pair(entry: dict[str, Any], pair: PairShape) -> float:
    """One pair's price on an API entry of prices.json: per pair, or text tokens + image tokens/pixels."""
    if "usd_per_million_pairs" in entry:
        return float(entry["usd_per_million_pairs"]) / 1e6
    text = pair.text_tokens * float(entry["usd_per_million_text_tokens"]) / 1e6
    if "usd_per_billion_pixels" in entry:
        pixels = pair.image_width * pair.image_height
        billed = min(max(float(pixels), float(entry["min_pixels_per_image"])), float(entry["max_pixels_per_image"]))
        return text + billed * float(entry["usd_per_billion_pixels"]) / 1e9
    scale = pair.image_width * pair.image_height / (512 * 512)  # image tokens grow with area
    tokens = float(entry["image_tokens_per_512px_image"]) * scale
    return text + tokens * float(entry["usd_per_million_image_tokens"]) / 1e6


def cost_report(
    *,
    pairs_per_hour: float,
    gpu: str | None = None,
    usd_per_hour: float | None = None,
    utilization: float = 1.0,
    pair: PairShape | None = None,
    prices: dict[str, Any] | None = None,
) -> CostReport:
    """The cost of PAIRS_PER_HOUR on GPU (a prices.json name) or at USD_PER_HOUR; errors say what is wrong."""
    prices = prices or load_prices()
    pair = pair or PairShape()
    if pairs_per_hour <= 0:
        raise CostError(f"throughput must be positive, got {pairs_per_hour} pairs/h")
    if not 0 < utilization <= 1:
        raise CostError(f"utilization is a fraction in (0, 1], got {utilization}")
    if usd_per_hour is None:
        if gpu is None:
            raise CostError("give a GPU price (--gpu-price-per-hour) or a GPU name (--gpu)")
        if gpu not in prices["gpus"]:
            raise CostError(f"unknown GPU {gpu!r}; known: {', '.join(prices['gpus'])} (or give --gpu-price-per-hour)")
        usd_per_hour = float(prices["gpus"][gpu]["usd_per_hour"])
    if usd_per_hour <= 0:
        raise CostError(f"GPU price must be positive, got ${usd_per_hour}/h")
    if pair.text_tokens < 0 or pair.image_width <= 0 or pair.image_height <= 0:
        raise CostError("text tokens must be >= 0 and the image size positive")
    month = usd_per_hour * float(prices["hours_per_month"])
    apis = []
    for name, entry in prices["apis"].items():
        per_pair = api_usd_per_pair(entry, pair)
        apis.append(
            ApiRow(
                name=name,
                label=entry.get("label", name),
                usd_per_million_pairs=per_pair * 1e6,
                break_even_pairs_per_month=month / per_pair,
            )
        )
    full_use = usd_per_hour / pairs_per_hour * 1e6
    return CostReport(
        gpu=gpu or "GPU",
        usd_per_hour=usd_per_hour,
        pairs_per_hour=pairs_per_hour,
        utilization=utilization,
        usd_per_million_pairs=full_use / utilization,
        usd_per_million_pairs_full_use=full_use,
        usd_per_month=month,
        pairs_per_month_capacity=pairs_per_hour * utilization * float(prices["hours_per_month"]),
        apis=apis,
    )
