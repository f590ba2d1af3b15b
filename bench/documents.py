"""Invoice PDF and email benchmark (docs/performance.md): run by hand.

    .venv/bin/python bench/documents.py [--invoices 100] [--workers 1 2]

It works on a SQLite file of its own by default (in a scratch DATA_DIR, which also holds the kept
PDFs; both removed at the end unless --keep), or on PostgreSQL when BENCH_DATABASE_URL or
DATABASE_URL names a database called billable_bench* (recreated, and dropped at the end unless
--keep). In one run it:

1. sets up one project with full branding (logo, company address, footer, payment instructions)
   and, for each worker count, N customers with an email address and a subscription, each with
   an invoice of 20 lines (base fee, fixed fee, 16 usage lines, most with a tier breakdown, a
   late usage line naming an earlier invoice, a manual adjustment) issued by `invoice_issue`,
   which creates its queued InvoiceEmail row (setup, not measured);
2. starts a local SMTP server (aiosmtpd, 127.0.0.1, a free port) that keeps every message, and
   points Django's SMTP backend at it;
3. for each worker count W: W processes (spawned, each with its own database connection, warmed
   up by one rendering of the sample invoice) run `invoicing.tasks.deliver_invoice` — render and
   keep the PDF, then claim and send the email — for their share of N invoices; per invoice it
   times the WeasyPrint rendering, the Django template, the SMTP sending, the storage write and
   every database query;
4. renders K of those invoices again in this process, the PDF alone (WeasyPrint with the reused
   FontConfiguration, split into layout and PDF output; with a fresh FontConfiguration; and the
   2-line sample invoice for comparison);
5. checks that every invoice has exactly one Document row and one sent InvoiceEmail row, and that
   the SMTP server received exactly one message for it, to its customer, with its kept PDF (same
   SHA-256) attached.

Target (the documents issue): ≥ 20 invoices/s per worker process.
"""

import argparse
import email
import email.policy
import hashlib
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from support import drop_database, fresh_django  # noqa: E402

TARGET_PER_WORKER = 20  # invoices/s
CENT = Decimal("0.01")
# (description, unit, tiers as (up_to, unit_price, flat_fee)): 16 usage charges, most graduated
# (their lines show a tier breakdown), a few per-unit (a single tier, no breakdown).
USAGE_CHARGES = [
    ("API requests", 1000, [(20_000, "0", "0"), (500_000, "0.0008", "0"), (None, "0.0005", "0")]),
    ("Webhook deliveries", 500, [(10_000, "0", "0"), (None, "0.0002", "0")]),
    ("Storage (GB-months)", 3, [(50, "0", "0"), (1_000, "0.023", "0"), (None, "0.018", "0")]),
    ("Egress (GB)", 7, [(100, "0", "0"), (10_000, "0.09", "0"), (None, "0.05", "0")]),
    ("Build minutes", 40, [(2_000, "0", "0"), (None, "0.008", "0")]),
    ("Seats", 1, [(None, "12", "0")]),
    ("Compute (vCPU-hours)", 20, [(750, "0", "0"), (10_000, "0.042", "0"), (None, "0.035", "0")]),
    ("Memory (GB-hours)", 60, [(1_500, "0", "0"), (None, "0.005", "0")]),
    ("Database rows read (M)", 2, [(10, "0", "0"), (500, "0.25", "0"), (None, "0.2", "0")]),
    ("Database rows written (M)", 1, [(5, "0", "5"), (None, "1.1", "0")]),
    ("Emails sent", 300, [(3_000, "0", "0"), (50_000, "0.001", "0"), (None, "0.0008", "0")]),
    ("SMS sent", 2, [(None, "0.0075", "0")]),
    ("Log ingestion (GB)", 5, [(10, "0", "0"), (None, "0.5", "0")]),
    ("Monitored hosts", 1, [(None, "15", "0")]),
    ("Function invocations", 5000,
     [(100_000, "0", "0"), (5_000_000, "0.0000004", "0"), (None, "0.0000002", "0")]),
    ("Support tickets", 1, [(None, "2.5", "0")]),
]  # fmt: skip


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=100, help="invoices delivered per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes, each run")
    parser.add_argument("--render-samples", type=int, default=20, help="invoices rendered alone (step 4)")
    parser.add_argument("--keep", action="store_true", help="keep the database and DATA_DIR afterwards")
    return parser.parse_args()


# --- figures --------------------------------------------------------------------------------------


def _ms(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def _p50_p95(values: list[float]) -> str:
    return f"p50 {_ms(values, 0.5):6.1f} ms, p95 {_ms(values, 0.95):6.1f} ms"


# --- seeding --------------------------------------------------------------------------------------


def _graduated(units: int, tiers: list[tuple]) -> tuple[list[dict], Decimal]:
    """A graduated charge's tier breakdown as InvoiceLine.tiers holds it, and its amount."""
    rows, below, amount = [], 0, Decimal(0)
    for number, (up_to, unit_price, flat_fee) in enumerate(tiers, start=1):
        top = units if up_to is None else min(units, up_to)
        if top <= below:
            break
        tier_amount = (top - below) * Decimal(unit_price) + Decimal(flat_fee)
        rows.append(
            {
                "tier": number,
                "units": str(top - below),
                "unit_price": unit_price,
                "flat_fee": flat_fee,
                "amount": str(tier_amount),
            }
        )
        amount += tier_amount
        below = top
    return rows, amount.quantize(CENT)


def _logo() -> bytes:
    """A 600 × 160 PNG, the size of a typical company logo."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (600, 160), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 150, 150), fill="#1f6feb")
    draw.rectangle((180, 50, 580, 110), fill="#111827")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _project():
    from django.core.files.base import ContentFile

    from accounts.services import project_bootstrap

    project, _, _ = project_bootstrap(name="Bench documents", currency="EUR", timezone_name="Europe/Berlin")
    project.company_name = "Example Cloud GmbH"
    project.company_address = "Friedrichstraße 123\n10117 Berlin\nGermany"
    project.company_tax_id = "DE811234567"
    project.sender_name, project.sender_email = "Example Cloud Billing", "billing@example.com"
    project.reply_to_email = "accounts@example.com"
    project.footer_text = "Amtsgericht Charlottenburg HRB 123456 · Managing director: Jane Doe"
    project.payment_instructions = (
        "Bank transfer to IBAN DE89 3704 0044 0532 0130 00, BIC COBADEFFXXX\n"
        "Please quote the invoice number as the reference."
    )
    project.locale, project.email_invoices = "de_DE", True
    project.logo.save("logo.png", ContentFile(_logo()), save=False)
    project.save()
    return project


def _seed(project, count: int, offset: int, start: datetime, end: datetime) -> list[int]:
    """`count` customers, each subscribed and with one issued 20-line invoice for [start, end);
    the invoices' IDs."""
    from django.db import transaction

    from catalog.services import customer_create, plan_create, product_create
    from invoicing.models import BillingReason, Invoice, InvoiceLine, InvoiceStatus, LineType
    from invoicing.services import invoice_issue
    from subscriptions.services import subscription_create

    product = product_create(project=project, code=f"cloud-{offset}", name="Cloud", actor=None)
    plan = plan_create(
        project=project, product=product, code=f"pro-{offset}", name="Pro", base_fee=Decimal(49), actor=None
    )
    next_start, next_end = end, end + (end - start)
    ids = []
    for number in range(offset, offset + count):
        customer = customer_create(
            project=project, external_id=f"c{number}", name=f"Customer {number} Ltd", actor=None,
            email=f"billing+{number}@customer{number}.example",
            billing_address={
                "line1": f"{number} Market Street", "line2": "Suite 400", "postal_code": "94105",
                "city": "San Francisco", "state": "CA", "country": "US",
            },
            tax_id=f"US{number:09d}",
        )  # fmt: skip
        subscription = subscription_create(
            project=project, customer=customer, plan=plan, starts_at=start - timedelta(days=31), actor=None
        )
        with transaction.atomic():
            # The earlier invoice the late usage line names (issued last period, not emailed now).
            earlier = Invoice.objects.create(
                project=project, customer=customer, subscription=subscription,
                billing_reason=BillingReason.SUBSCRIPTION_START, currency=project.currency,
                period_start=start - timedelta(days=31), period_end=start - timedelta(days=31),
                status=InvoiceStatus.OPEN, number=f"EARLIER-{number:06d}", total=Decimal(49),
                issued_at=start, due_at=start + timedelta(days=14),
            )  # fmt: skip
            invoice = Invoice.objects.create(
                project=project, customer=customer, subscription=subscription,
                billing_reason=BillingReason.SUBSCRIPTION_CYCLE, currency=project.currency,
                period_start=start, period_end=end, status=InvoiceStatus.DRAFT,
            )  # fmt: skip
            lines = [
                InvoiceLine(
                    type=LineType.BASE_FEE, description="Pro plan", quantity=Decimal(1),
                    unit_price=Decimal(49), amount=Decimal(49), period_start=next_start, period_end=next_end,
                ),
                InvoiceLine(
                    type=LineType.FIXED_FEE, description="Premium support", quantity=Decimal(1),
                    unit_price=Decimal(150), amount=Decimal(150),
                    period_start=next_start, period_end=next_end,
                ),
            ]  # fmt: skip
            for index, (description, unit, tiers) in enumerate(USAGE_CHARGES):
                units = unit * (1 + (number * 7 + index * 13) % 997)
                breakdown, amount = _graduated(units, tiers)
                lines.append(
                    InvoiceLine(
                        type=LineType.USAGE, description=description, quantity=Decimal(units),
                        unit_price=Decimal(tiers[0][1]) if len(tiers) == 1 else None, amount=amount,
                        tiers=breakdown, cumulative_quantity=Decimal(units),
                        period_start=start, period_end=end,
                    )
                )  # fmt: skip
            late = 25_000 + number
            breakdown, amount = _graduated(late, USAGE_CHARGES[0][2])
            lines.append(
                InvoiceLine(
                    type=LineType.LATE_USAGE, description="API requests (reported late)",
                    quantity=Decimal(late), amount=amount, tiers=breakdown, original_invoice=earlier,
                    period_start=start - timedelta(days=31), period_end=start,
                )
            )  # fmt: skip
            lines.append(
                InvoiceLine(
                    type=LineType.ADJUSTMENT, description="Service credit", quantity=Decimal(1),
                    amount=Decimal("-25.00"), is_manual=True,
                    reason="Goodwill credit for the API outage of the 12th (incident 2026-114).",
                    period_start=start, period_end=end,
                )
            )  # fmt: skip
            for position, line in enumerate(lines):
                line.invoice, line.position = invoice, position
            InvoiceLine.objects.bulk_create(lines)
            invoice.total = sum((line.amount for line in lines), Decimal(0))
            invoice_issue(invoice=invoice, actor=None)
        ids.append(invoice.pk)
    return ids


# --- the SMTP server --------------------------------------------------------------------------------


class Inbox:
    """An aiosmtpd handler keeping every message it accepts, checked after the run (parsing them
    here would put the checking's CPU into the measured window)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the workers ----------------------------------------------------------------------------------


def _timed(module, name: str, phases: dict, phase: str) -> None:
    """Replace module.name by a wrapper adding its duration to phases[phase]."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            phases[phase] += time.perf_counter() - began

    setattr(module, name, wrapper)


def _worker(invoice_ids: list[int], barrier, results) -> None:
    """One worker process: deliver its invoices one after the other, as a django-q worker runs
    deliver_invoice tasks, timing each phase of each."""
    try:
        import django

        django.setup()
        from django.db import connection

        from invoicing import documents, emails
        from invoicing.models import Document, Invoice
        from invoicing.tasks import deliver_invoice

        phases: dict[str, float] = defaultdict(float)
        _timed(documents, "pdf_from_html", phases, "render")
        _timed(documents, "_html", phases, "template")
        _timed(emails, "_deliver", phases, "send")
        storage = Document._meta.get_field("file").storage
        _timed(storage, "save", phases, "store")
        database = [0.0, 0]

        def timed_query(execute, sql, params, many, context):
            began = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                database[0] += time.perf_counter() - began
                database[1] += 1

        # Warm up as a long-running worker is: templates compiled, fonts loaded, connection open.
        project = Invoice.objects.select_related("project").get(pk=invoice_ids[0]).project
        documents.pdf_from_html(documents.sample_html(project))
        barrier.wait()
        cpu_before, began_all = os.times(), time.perf_counter()
        rows = []
        for pk in invoice_ids:
            phases.clear()
            database[:] = [0.0, 0]
            with connection.execute_wrapper(timed_query):
                began = time.perf_counter()
                deliver_invoice(pk)
                total = time.perf_counter() - began
            rows.append({"total": total, **phases, "db": database[0], "queries": database[1]})
        wall = time.perf_counter() - began_all
        cpu_after = os.times()
        cpu = cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system
        results.put((os.getpid(), wall, cpu, time.time(), rows, None))
    except BaseException as exc:  # report instead of leaving the parent waiting
        import traceback

        try:
            barrier.abort()
        finally:
            results.put((os.getpid(), 0, 0, 0, [], traceback.format_exception(exc)))


def _deliver_all(invoice_ids: list[int], workers: int) -> dict:
    from django.db import connections

    connections.close_all()
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(workers + 1), context.Queue()
    shares = [invoice_ids[k::workers] for k in range(workers)]
    processes = [context.Process(target=_worker, args=(share, barrier, results)) for share in shares]
    for process in processes:
        process.start()
    barrier.wait(timeout=120)
    cpu_before, began = os.times(), time.time()
    outcomes = [results.get(timeout=3600) for _ in processes]
    cpu_after = os.times()
    for process in processes:
        process.join()
    errors = [outcome[5] for outcome in outcomes if outcome[5]]
    if errors:
        raise SystemExit("a worker failed:\n" + "".join(errors[0]))
    return {
        "wall": max(outcome[3] for outcome in outcomes) - began,
        "per_process": [(len(outcome[4]) / outcome[1], outcome[2] / outcome[1]) for outcome in outcomes],
        "rows": [row for outcome in outcomes for row in outcome[4]],
        # This process did nothing but run the SMTP server meanwhile.
        "smtp_cpu": cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system,
    }


def _describe(run: dict, invoices: int, workers: int) -> None:
    rows = run["rows"]
    rate = invoices / run["wall"]
    per = rate / workers
    print(f"   {invoices} invoices in {run['wall']:.2f} s: {rate:.1f} invoices/s, {per:.1f} a process")
    for number, (own_rate, busy) in enumerate(run["per_process"], start=1):
        print(f"   process {number}: {own_rate:.1f} invoices/s on its own clock, CPU {busy:.0%} of a core")
    print(f"   SMTP server (this process): {run['smtp_cpu']:.1f} CPU s")
    print("   per invoice:")
    timed = ("render", "template", "send", "store", "db")
    column = {phase: [row.get(phase, 0.0) for row in rows] for phase in timed}
    column["total"] = [row["total"] for row in rows]
    column["other"] = [row["total"] - sum(row.get(phase, 0.0) for phase in timed) for row in rows]
    labels = {
        "total": "deliver_invoice",
        "render": "WeasyPrint render",
        "template": "Django template",
        "send": "SMTP send",
        "store": "storage write",
        "db": f"database ({Counter(row['queries'] for row in rows).most_common(1)[0][0]} queries)",
        "other": "the rest (Python)",
    }
    mean_total = sum(column["total"]) / len(rows)
    for phase, label in labels.items():
        mean = sum(column[phase]) / len(rows)
        share = f"{mean / mean_total:4.0%}"
        print(f"     {label:<24} {_p50_p95(column[phase])}, mean {mean * 1000:6.1f} ms ({share})")
    run["figures"] = {phase: (_ms(values, 0.5), _ms(values, 0.95)) for phase, values in column.items()}
    run["rate"] = rate


# --- rendering alone ------------------------------------------------------------------------------


def _render_alone(invoice_ids: list[int], project) -> dict:
    from weasyprint import HTML
    from weasyprint.text.fonts import FontConfiguration
    from weasyprint.urls import URLFetcher

    from invoicing.documents import _font_config, invoice_html, pdf_from_html, sample_html
    from invoicing.models import Invoice

    def fetcher():
        return URLFetcher(allowed_protocols=("data",), fail_on_errors=True)

    invoices = list(Invoice.objects.select_related("project", "customer").filter(pk__in=invoice_ids))
    pdf_from_html(sample_html(project))  # warm-up
    timings = defaultdict(list)
    for invoice in invoices:
        began = time.perf_counter()
        html = invoice_html(invoice, draft=False)
        timings["html"].append(time.perf_counter() - began)
        began = time.perf_counter()
        pdf_from_html(html)
        timings["pdf"].append(time.perf_counter() - began)
        began = time.perf_counter()
        document = HTML(string=html, url_fetcher=fetcher()).render(font_config=_font_config())
        middle = time.perf_counter()
        document.write_pdf()
        timings["layout"].append(middle - began)
        timings["write"].append(time.perf_counter() - middle)
        began = time.perf_counter()
        HTML(string=html, url_fetcher=fetcher()).write_pdf(font_config=FontConfiguration())
        timings["fresh"].append(time.perf_counter() - began)
        timings["pages"].append(len(document.pages))
    sample = sample_html(project)
    for _ in range(len(invoices)):
        began = time.perf_counter()
        pdf_from_html(sample)
        timings["sample"].append(time.perf_counter() - began)
    return timings


# --- the run --------------------------------------------------------------------------------------


def main() -> None:
    args = _arguments()
    data_dir = Path(tempfile.mkdtemp(prefix="billable-bench-documents-"))
    url = (
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or f"sqlite:///{data_dir / 'billable_bench_documents.sqlite3'}"
    )
    smtp_port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DATA_DIR": str(data_dir),
        "LOG_LEVEL": "WARNING",
        "Q_SYNC": "false",
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_port),
        "EMAIL_USE_TLS": "false",
    }
    for name in ("EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD", "MEDIA_ROOT", "BILLABLE_DOCUMENTS_STORAGE"):
        env.pop(name, None)
        os.environ.pop(name, None)
    fresh_django(url, env)
    from aiosmtpd.controller import Controller
    from django.db import connection, connections
    from django.utils import timezone

    from invoicing.models import Document, EmailStatus, Invoice, InvoiceEmail

    engine = "SQLite" if connection.vendor == "sqlite" else f"PostgreSQL {connection.pg_version // 10000}"
    print(f"database: {engine}; WeasyPrint {__import__('weasyprint').__version__}; DATA_DIR {data_dir}")

    total = args.invoices * len(args.workers)
    print(f"\n1. {total:,} customers, each with an issued 20-line invoice")
    began = time.perf_counter()
    project = _project()
    end = timezone.now().astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (end - timedelta(days=1)).replace(day=1)
    groups = [
        _seed(project, args.invoices, index * args.invoices, start, end) for index in range(len(args.workers))
    ]
    every = [pk for group in groups for pk in group]
    queued = InvoiceEmail.objects.filter(status=EmailStatus.QUEUED, invoice__in=every).count()
    assert queued == total, f"{queued} queued emails for {total} invoices"
    print(f"   {time.perf_counter() - began:.1f} s (setup, not measured); {queued:,} emails queued")

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    print(f"\n2. SMTP server (aiosmtpd) on 127.0.0.1:{smtp_port}")

    runs = {}
    try:
        for step, (workers, ids) in enumerate(zip(args.workers, groups, strict=True), start=3):
            print(f"\n{step}. deliver_invoice × {len(ids)} in {workers} worker process(es)")
            runs[workers] = _deliver_all(ids, workers)
            _describe(runs[workers], len(ids), workers)
    finally:
        controller.stop()

    samples = groups[0][: args.render_samples]
    step = 3 + len(args.workers)
    print(f"\n{step}. rendering alone, {len(samples)} of the invoices, in this process")
    timings = _render_alone(samples, project)
    pages = Counter(timings["pages"])
    print(f"   pages per invoice: {dict(pages)}")
    print(f"   context + Django template       {_p50_p95(timings['html'])}")
    print(f"   pdf_from_html (reused fonts)    {_p50_p95(timings['pdf'])}")
    print(f"     of which layout (render())    {_p50_p95(timings['layout'])}")
    print(f"     and PDF output (write_pdf())  {_p50_p95(timings['write'])}")
    print(f"   with a fresh FontConfiguration  {_p50_p95(timings['fresh'])}")
    print(f"   the 2-line sample invoice       {_p50_p95(timings['sample'])}")

    print(f"\n{step + 1}. checks")
    kept = Document.objects.filter(invoice__in=every)
    documents = dict(kept.values_list("invoice_id", "sha256"))
    assert kept.count() == total, f"{kept.count()} documents for {total} invoices"
    assert set(documents) == set(every), "an invoice has no document"
    emails = Counter(InvoiceEmail.objects.filter(invoice__in=every).values_list("invoice_id", "status"))
    assert emails == Counter({(pk, EmailStatus.SENT): 1 for pk in every}), "not one sent email per invoice"
    issued = Invoice.objects.filter(pk__in=every).values_list("pk", "number", "customer__email")
    invoices = {number: (pk, address) for pk, number, address in issued}
    received = Counter()
    for raw in inbox.messages:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        pdfs = [part for part in message.iter_attachments() if part.get_content_type() == "application/pdf"]
        assert len(pdfs) == 1, f"{len(pdfs)} PDF attachments in {message['Subject']!r}"
        number = pdfs[0].get_filename().removesuffix(".pdf")
        pk, address = invoices[number]
        content = pdfs[0].get_content()
        assert content.startswith(b"%PDF-"), f"{number}: the attachment is not a PDF"
        assert hashlib.sha256(content).hexdigest() == documents[pk], f"{number}: not the kept PDF"
        assert message["To"].addresses[0].addr_spec == address, f"{number}: sent to {message['To']}"
        received[number] += 1
    assert len(inbox.messages) == total, f"{len(inbox.messages)} messages for {total} invoices"
    assert received == Counter(dict.fromkeys(invoices, 1)), "not one message per invoice"
    sizes = sorted(kept.values_list("size", flat=True))
    print(
        f"   {total:,} invoices: one Document each, one sent InvoiceEmail each, one message each at the "
        f"SMTP server to the customer with the kept PDF attached (SHA-256 equal)"
    )
    print(f"   PDF size: median {sizes[len(sizes) // 2] / 1024:.1f} KiB ({sizes[0]:,}–{sizes[-1]:,} bytes)")

    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    table = [("", "invoices/s", "per process", "target per process", "")]
    for workers, run in runs.items():
        per = run["rate"] / workers
        verdict = "met" if per >= TARGET_PER_WORKER else "MISSED"
        table.append(
            (f"{workers} worker(s)", f"{run['rate']:.1f}", f"{per:.1f}", f"≥ {TARGET_PER_WORKER}", verdict)
        )
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    print()
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    first = runs[args.workers[0]]["figures"]
    print(
        f"\nper invoice ({args.workers[0]} worker): deliver p50 {first['total'][0]:.1f} ms = render "
        f"{first['render'][0]:.1f} + template {first['template'][0]:.1f} + send {first['send'][0]:.1f} + "
        f"database {first['db'][0]:.1f} + rest; render alone p50 {_ms(timings['pdf'], 0.5):.1f} ms"
    )
    print(f"{engine}; {args.invoices} invoices per run; run at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    if not args.keep:
        connections.close_all()
        drop_database(url)
        shutil.rmtree(data_dir, ignore_errors=True)
    else:
        print(f"kept: {url}, {data_dir}")


if __name__ == "__main__":
    main()
