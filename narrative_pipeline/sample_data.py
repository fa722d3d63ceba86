"""Generate a small, realistic sample of sec-fetcher CSV files.

The real SEC files used in development are not shipped with the project, yet `dagster dev` and
`dagster asset materialize` must work out of the box. This module writes CSVs in the layouts
sec-fetcher produces (one file per ticker, US-GAAP concept columns holding `VALUE::UNIT` cells),
using real US-GAAP concept names and plausible magnitudes:
- `current` (the default, what sec-fetcher writes today): the metadata columns `canonical_order,
  fy, fp, period_end, filed, form, is_amendment, accn, filing_url` first, one row per (fy, fp)
  period, newest first; one period per company's file was last filed as an amendment;
- `older`: the concept columns, then `fy, fp, form, filed, accn`, one row per filing.
Output is deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import csv
import logging
import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from narrative_pipeline.readers.landing import landing_files
from narrative_pipeline.readers.sec_fetcher_layout import CURRENT_COLUMNS  # in sec-fetcher's order

log = logging.getLogger(__name__)

FILING_COLUMNS = ["fy", "fp", "form", "filed", "accn"]  # the older layout's, after the concepts
# CURRENT_COLUMNS (imported): the current layout's, before the concepts
LAYOUTS = ("current", "older")
PERIOD_END = {"Q1": (3, 31), "Q2": (6, 30), "Q3": (9, 30), "FY": (12, 31)}  # calendar fiscal year
AMENDMENT_DELAY_DAYS = 75


@dataclass(frozen=True)
class ConceptSpec:
    """A real US-GAAP concept, its unit, typical size (in units of the company's scale) and sign."""

    name: str
    unit: str
    magnitude: float  # typical value relative to the company's size (USD concepts) or absolute
    scaled: bool = True  # False: magnitude is absolute (ratios, per-share amounts)
    can_be_negative: bool = False
    fill_rate: float = 0.9  # share of filings reporting this concept


# Real US-GAAP 2025 concept names; the dei column is kept because sec-fetcher writes it too
# (readers drop it as a non-taxonomy column when a taxonomy is loaded).
CONCEPTS: tuple[ConceptSpec, ...] = (
    ConceptSpec("EntityCommonStockSharesOutstanding", "shares", 0.05),
    ConceptSpec("AccountsPayableCurrent", "USD", 0.18),
    ConceptSpec("AccountsReceivableNetCurrent", "USD", 0.1),
    ConceptSpec("AccruedLiabilitiesCurrent", "USD", 0.12, fill_rate=0.7),
    ConceptSpec(
        "AccumulatedOtherComprehensiveIncomeLossNetOfTax", "USD", 0.02, can_be_negative=True
    ),
    ConceptSpec("AdditionalPaidInCapital", "USD", 0.2, fill_rate=0.6),
    ConceptSpec("AllocatedShareBasedCompensationExpense", "USD", 0.015),
    ConceptSpec("AmortizationOfIntangibleAssets", "USD", 0.004, fill_rate=0.5),
    ConceptSpec("Assets", "USD", 1.0, fill_rate=1.0),
    ConceptSpec("AssetsCurrent", "USD", 0.4),
    ConceptSpec("AssetsNoncurrent", "USD", 0.6, fill_rate=0.6),
    ConceptSpec("CashAndCashEquivalentsAtCarryingValue", "USD", 0.08, fill_rate=1.0),
    ConceptSpec("CommercialPaper", "USD", 0.02, fill_rate=0.4),
    ConceptSpec("CommonStockDividendsPerShareDeclared", "USD/shares", 0.5, scaled=False),
    ConceptSpec(
        "CommonStockParOrStatedValuePerShare", "USD/shares", 0.00001, scaled=False, fill_rate=0.5
    ),
    ConceptSpec("CommonStockSharesAuthorized", "shares", 0.12, fill_rate=0.6),
    ConceptSpec("CommonStockSharesIssued", "shares", 0.04),
    ConceptSpec("CommonStockSharesOutstanding", "shares", 0.04),
    ConceptSpec("ComprehensiveIncomeNetOfTax", "USD", 0.06, can_be_negative=True),
    ConceptSpec("CostOfRevenue", "USD", 0.3),
    ConceptSpec("DeferredIncomeTaxExpenseBenefit", "USD", 0.005, can_be_negative=True),
    ConceptSpec("Depreciation", "USD", 0.02, fill_rate=0.6),
    ConceptSpec("EarningsPerShareBasic", "USD/shares", 2.5, scaled=False, can_be_negative=True),
    ConceptSpec("EarningsPerShareDiluted", "USD/shares", 2.4, scaled=False, can_be_negative=True),
    ConceptSpec("EffectiveIncomeTaxRateContinuingOperations", "pure", 0.18, scaled=False),
    ConceptSpec("Goodwill", "USD", 0.05, fill_rate=0.8),
    ConceptSpec("GrossProfit", "USD", 0.25),
    ConceptSpec("IncomeTaxesPaidNet", "USD", 0.02, fill_rate=0.6),
    ConceptSpec("IncomeTaxExpenseBenefit", "USD", 0.02, can_be_negative=True),
    ConceptSpec("InventoryNet", "USD", 0.03, fill_rate=0.6),
    ConceptSpec("Liabilities", "USD", 0.7, fill_rate=1.0),
    ConceptSpec("LiabilitiesAndStockholdersEquity", "USD", 1.0, fill_rate=1.0),
    ConceptSpec("LiabilitiesCurrent", "USD", 0.35),
    ConceptSpec("LongTermDebtNoncurrent", "USD", 0.25, fill_rate=0.8),
    ConceptSpec("NetCashProvidedByUsedInFinancingActivities", "USD", 0.1, can_be_negative=True),
    ConceptSpec("NetCashProvidedByUsedInInvestingActivities", "USD", 0.08, can_be_negative=True),
    ConceptSpec("NetCashProvidedByUsedInOperatingActivities", "USD", 0.12, can_be_negative=True),
    ConceptSpec("NetIncomeLoss", "USD", 0.06, can_be_negative=True, fill_rate=1.0),
    ConceptSpec("OperatingIncomeLoss", "USD", 0.08, can_be_negative=True),
    ConceptSpec("OperatingLeaseLiability", "USD", 0.03, fill_rate=0.7),
    ConceptSpec("PaymentsForRepurchaseOfCommonStock", "USD", 0.05, fill_rate=0.7),
    ConceptSpec("PaymentsOfDividends", "USD", 0.02, fill_rate=0.6),
    ConceptSpec("PropertyPlantAndEquipmentNet", "USD", 0.2),
    ConceptSpec("ResearchAndDevelopmentExpense", "USD", 0.05, fill_rate=0.8),
    ConceptSpec("RetainedEarningsAccumulatedDeficit", "USD", 0.1, can_be_negative=True),
    ConceptSpec("RevenueFromContractWithCustomerExcludingAssessedTax", "USD", 0.55, fill_rate=1.0),
    ConceptSpec("SellingGeneralAndAdministrativeExpense", "USD", 0.04),
    ConceptSpec("ShareBasedCompensation", "USD", 0.015),
    ConceptSpec("StockholdersEquity", "USD", 0.3, fill_rate=1.0),
    ConceptSpec("WeightedAverageNumberOfDilutedSharesOutstanding", "shares", 0.041),
    ConceptSpec("WeightedAverageNumberOfSharesOutstandingBasic", "shares", 0.04),
)


@dataclass(frozen=True)
class CompanySpec:
    """A sample company: ticker, SEC CIK (for accession numbers) and total assets in USD."""

    ticker: str
    cik: int
    assets_usd: float


# Real tickers and CIKs; sizes are round figures of the right order of magnitude.
COMPANIES: tuple[CompanySpec, ...] = (
    CompanySpec("AAPL", 320193, 3.6e11),
    CompanySpec("MSFT", 789019, 5.1e11),
    CompanySpec("NVDA", 1045810, 1.1e11),
    CompanySpec("KO", 21344, 1.0e11),
    CompanySpec("JNJ", 200406, 1.8e11),
    CompanySpec("XOM", 34088, 4.5e11),
)


def _filing_calendar(count: int, last_year: int) -> list[tuple[int, str, str, date]]:
    """(fy, fp, form, filed) for the most recent `count` filings, newest first (sec-fetcher order)."""
    periods: list[tuple[int, str, str, date]] = []
    year = last_year
    while len(periods) < count:
        periods.append((year, "Q3", "10-Q", date(year, 10, 30)))
        periods.append((year, "Q2", "10-Q", date(year, 7, 31)))
        periods.append((year, "Q1", "10-Q", date(year, 5, 1)))
        periods.append((year - 1, "FY", "10-K", date(year, 2, 1)))
        year -= 1
    return periods[:count]


def _cell_value(spec: ConceptSpec, company: CompanySpec, rng: random.Random) -> str:
    """A plausible value for one concept: company-scaled, jittered, integer for USD and shares."""
    base = spec.magnitude * (company.assets_usd if spec.scaled else 1.0)
    if spec.unit == "shares" and spec.scaled:
        base = spec.magnitude * company.assets_usd / 20.0
    value = base * rng.uniform(0.8, 1.2)
    if spec.can_be_negative and rng.random() < 0.15:
        value = -value
    if spec.unit in ("USD", "shares"):
        return str(int(round(value / 1000.0)) * 1000)
    return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.1g}"


def _company_rows(
    company: CompanySpec, filings: int, last_year: int, rng: random.Random
) -> list[dict[str, str]]:
    rows = []
    for index, (fy, fp, form, filed) in enumerate(_filing_calendar(filings, last_year)):
        filed = filed + timedelta(days=rng.randint(-3, 3))
        row = {
            spec.name: f"{_cell_value(spec, company, rng)}::{spec.unit}"
            for spec in CONCEPTS
            if rng.random() < spec.fill_rate
        }
        row.update(
            fy=str(fy),
            fp=fp,
            form=form,
            filed=filed.isoformat(),
            accn=_accn(company, filed, index + 1),
        )
        rows.append(row)
    return rows


def _accn(company: CompanySpec, filed: date, sequence: int) -> str:
    return f"{company.cik:010d}-{filed.year % 100:02d}-{sequence:06d}"


def _current_layout_rows(
    company: CompanySpec, rows: list[dict[str, str]], rng: random.Random
) -> list[dict[str, str]]:
    """The older rows as current-layout periods (already one per (fy, fp), newest first): one
    period, chosen by `rng`, was last filed as an amendment (later date, own accn)."""
    amended = rng.randrange(len(rows))
    for index, row in enumerate(rows):
        month, day = PERIOD_END[row["fp"]]
        row.update(canonical_order=str(index), is_amendment="false")
        row["period_end"] = date(int(row["fy"]), month, day).isoformat()
        if index == amended:
            filed = date.fromisoformat(row["filed"]) + timedelta(days=AMENDMENT_DELAY_DAYS)
            row.update(
                filed=filed.isoformat(),
                is_amendment="true",
                accn=_accn(company, filed, 900_000 + index),
            )
        accn = row["accn"]
        row["filing_url"] = (
            f"https://www.sec.gov/Archives/edgar/data/{company.cik}/"
            f"{accn.replace('-', '')}/{accn}-index.htm"
        )
    return rows


def generate_sample_csvs(
    out_dir: str | Path,
    *,
    tickers: list[str] | None = None,
    filings_per_ticker: int = 8,
    seed: int = 42,
    last_year: int = 2025,
    layout: str = "current",
) -> list[Path]:
    """Write one sec-fetcher CSV per ticker into `out_dir` in `layout` ("current" or "older");
    returns the paths written.

    Files are written to a temporary name and renamed, so a watcher never sees half a file.
    """
    if filings_per_ticker < 1:
        raise ValueError(f"filings_per_ticker must be >= 1, got {filings_per_ticker}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    wanted = [c for c in COMPANIES if tickers is None or c.ticker in tickers]
    unknown = set(tickers or []) - {c.ticker for c in COMPANIES}
    if unknown:
        known = ", ".join(c.ticker for c in COMPANIES)
        raise ValueError(f"unknown sample tickers {sorted(unknown)}; known: {known}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    concepts = [spec.name for spec in CONCEPTS]
    columns = [*CURRENT_COLUMNS, *concepts] if layout == "current" else concepts + FILING_COLUMNS
    paths = []
    for company in wanted:
        rng = random.Random(f"{seed}:{company.ticker}")
        rows = _company_rows(company, filings_per_ticker, last_year, rng)
        if layout == "current":
            rows = _current_layout_rows(company, rows, rng)
        path = out / f"{company.ticker}.csv"
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)
        paths.append(path)
    return paths


def csv_files_in(directory: str | Path) -> list[Path]:
    """CSV files under `directory` (recursive, sorted); empty when it does not exist."""
    return landing_files(directory).csv


def ensure_sample_csvs(csv_dir: str | Path, **kwargs) -> list[Path]:
    """Generate the sample into `csv_dir` only when it holds no landing file yet (a CSV or a
    companyfacts file: readers/landing.py, a file still waiting for its marker included);
    never overwrites data."""
    if len(landing_files(csv_dir, marker="")):
        return []
    paths = generate_sample_csvs(csv_dir, **kwargs)
    log.info("generated %d sample CSV files in %s", len(paths), csv_dir)
    return paths


def _run(args: argparse.Namespace) -> int:
    tickers = args.tickers.split(",") if args.tickers else None
    paths = generate_sample_csvs(
        args.out,
        tickers=tickers,
        filings_per_ticker=args.filings,
        seed=args.seed,
        layout=args.layout,
    )
    for path in paths:
        print(path)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `narrative-pipeline sample --out DIR`."""
    parser = subparsers.add_parser(
        "sample", help="write realistic sample sec-fetcher CSV files", description=__doc__
    )
    parser.add_argument("--out", required=True, help="folder to write the CSV files into")
    parser.add_argument(
        "--tickers",
        default="",
        help="comma-separated subset of " + ",".join(c.ticker for c in COMPANIES),
    )
    parser.add_argument("--filings", type=int, default=8, help="filings per ticker (default 8)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="current",
        help="sec-fetcher CSV layout: current (metadata columns first, one row per period; "
        "default) or older (one row per filing, fy/fp/form/filed/accn last)",
    )
    parser.set_defaults(func=_run)
