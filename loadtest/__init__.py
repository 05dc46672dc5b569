"""Load tests: Locust users on the typed client, a report with Triton's own metrics, and what it costs.

`mmembed loadtest` runs `locustfile.py` headless (optionally as a master with local workers) while
sampling Triton's Prometheus endpoint, then writes the report; `mmembed cost` turns a throughput and a GPU
price into a cost per million pairs and a break-even against managed APIs (prices in `prices.json`).
"""

from __future__ import annotations

from pathlib import Path

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
MIXES = ("images", "texts", "pairs")  # what each Locust task sends; "pairs" is one image and one text request
